"""`overlayctl topology`: the mesh as one node sees it, as text or as a Graphviz graph.

The input is the reply to the status command `topology` (status/facts.py):
this node, its BGP sessions with their state, and every VTEP it knows with
the networks it floods to there, the MACs and subnets behind it. Pure: the
`svg` format is `dot -Tsvg` of `dot()`, run by overlayctl.

In the graph every VTEP is a node named by its address (this node in bold);
a BGP session is a solid edge labelled with its state (green when
Established, red otherwise), a VXLAN tunnel a dashed edge labelled with the
networks (VNIs) it carries. A neighbor that is no VTEP (a route reflector)
is a node of its own, with only its session.
"""

from __future__ import annotations

from typing import Any

from overlayd.status.text import duration, table


def text(t: dict[str, Any]) -> str:
    node = t["node"]
    head = f"node {node['name']}  vtep {node['vtep']}"
    if node["asn"] is not None:
        head += f"  AS {node['asn']}  router ID {node['router_id']}"
    lines = [head]
    for n in t["networks"]:
        lines.append(f"network {n['name']}: vni {n['vni']} on {n['device']} ({n['backend']})"
                     + (f", {n['address']}" if n["address"] else "")
                     + f"; floods to {', '.join(n['flood_list']) or 'nobody'}")
    r = t["routing"]
    if r is not None:
        lines.append(f"routing: vni {r['vni']} ({r['backend']}), subnets {', '.join(r['subnets']) or 'none'} "
                     f"of {r['network']}")
    out = "\n".join(lines)
    if t["sessions"]:
        out += "\n\n" + table(
            ("SESSION", "AS", "STATE", "UPTIME", "FAMILIES", "LAST ERROR"),
            [(s["neighbor"], s["asn"], s["state"], duration(s["uptime_s"]), ",".join(s["families"]) or "-",
              s["last_error"] or "-") for s in t["sessions"]])
    state = {s["neighbor"]: s["state"] for s in t["sessions"]}
    if t["vteps"]:
        out += "\n\n" + table(
            ("VTEP", "ROUTER ID", "NETWORKS", "MACS", "SUBNETS", "SESSION"),
            [(v["vtep"], v["router_id"], ",".join(v["networks"]) or "-", v["macs"], ",".join(v["subnets"]) or "-",
              state.get(v["vtep"], "-")) for v in t["vteps"]])
    else:
        out += "\n\n(no other VTEP known)"
    return out


def _q(value: str) -> str:
    """A DOT quoted string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _label(lines: list[str]) -> str:
    return _q("\n".join(lines)).replace("\n", "\\n")


def dot(t: dict[str, Any]) -> str:
    node = t["node"]
    me = node["vtep"]
    vni = {n["name"]: n["vni"] for n in t["networks"]}
    own = [node["name"], f"vtep {me}"]
    if node["asn"] is not None:
        own.append(f"AS {node['asn']}, router ID {node['router_id']}")
    own += [f"{n['name']}: {n['device']}, vni {n['vni']} ({n['backend']})" for n in t["networks"]]
    if t["routing"] is not None:
        own.append(f"subnets {', '.join(t['routing']['subnets']) or 'none'}")
    out = [
        f"graph {_q('overlay seen from ' + node['name'])} {{",
        f"    graph [label={_q('overlay as node ' + node['name'] + ' sees it')}, labelloc=t, "
        + 'fontname="sans-serif", rankdir=LR];',
        '    node [shape=box, style=rounded, fontname="sans-serif", fontsize=11];',
        '    edge [fontname="sans-serif", fontsize=10];',
        f'    {_q(me)} [label={_label(own)}, style="rounded,bold"];',
    ]
    vteps = {v["vtep"]: v for v in t["vteps"]}
    for v in t["vteps"]:
        lines = [v["vtep"]]
        if v["router_id"] and v["router_id"] != v["vtep"]:
            lines.append(f"router ID {v['router_id']}")
        if v["macs"]:
            lines.append(f"{v['macs']} MAC{'s' if v['macs'] != 1 else ''}")
        lines += [f"subnet {s}" for s in v["subnets"]]
        out.append(f"    {_q(v['vtep'])} [label={_label(lines)}];")
    for s in t["sessions"]:
        if s["neighbor"] not in vteps and s["neighbor"] != me:
            label = _label([s["neighbor"], f"AS {s['asn']}"])
            out.append(f"    {_q(s['neighbor'])} [label={label}, shape=ellipse];")
    for s in t["sessions"]:
        up = s["state"] == "Established"
        out.append(f"    {_q(me)} -- {_q(s['neighbor'])} [label={_q('BGP ' + s['state'])}, "
                   f"color={'darkgreen' if up else 'red'}, fontcolor={'darkgreen' if up else 'red'}"
                   f"{'' if up else ', penwidth=2'}];")
    for v in t["vteps"]:
        if v["networks"]:
            carried = ", ".join(f"{name} (vni {vni[name]})" for name in v["networks"])
            out.append(f"    {_q(me)} -- {_q(v['vtep'])} [label={_q('VXLAN ' + carried)}, style=dashed];")
        elif v["subnets"]:
            out.append(f"    {_q(me)} -- {_q(v['vtep'])} [label={_q('routed ' + ', '.join(v['subnets']))}, "
                       "style=dashed];")
    out.append("}")
    return "\n".join(out) + "\n"
