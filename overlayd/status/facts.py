"""The daemon's view for `overlayctl doctor` and `overlayctl topology`: plain dicts, stable keys.

`doctor_facts` is what only the daemon knows and the doctor's checks need
(status/doctor.py): the devices it made and the encapsulation each carries,
every VTEP it knows, its BGP sessions (ever Established? flapping?), routes
whose best path keeps changing, subnets claimed twice, and what the kernel
backends should hold but do not. `topology_facts` is the mesh as this node
sees it: itself, its sessions, the VTEPs with what lives behind each.
"""

from __future__ import annotations

from typing import Any

from overlayd.config import ENCAP_OVERHEAD, IPIP_OVERHEAD
from overlayd.fabric.flaps import FLAP_WINDOW_S, ROUTE_FLAP_CHANGES, SESSION_FLAP_DOWNS
from overlayd.fabric.prefixes import ConflictReason, conflicts
from overlayd.status.bgp_view import path_row, peer_rows
from overlayd.wire.ethernet import mac_str


def devices(view: Any) -> list[dict[str, Any]]:
    """Every device overlayd made, with the encapsulation its packets get on the underlay."""
    cfg = view.config
    family = cfg.node.vtep.version
    vxlan = {"encap": "VXLAN", "overhead": ENCAP_OVERHEAD[family]}
    out = []
    for i, net in enumerate(cfg.networks):
        base = {"role": f"network {net.name}", "mtu": view.mtus.get(net.vni),
                "config": f"networks[{i}].mtu" if net.mtu else None, **vxlan}
        if net.backend == "kernel":
            out.append({"name": net.device, "kind": "bridge", **base})
            out.append({"name": net.vxlan_device, "kind": "vxlan", **base})
        else:
            out.append({"name": net.device, "kind": "tap", **base})
    r = cfg.routing
    if r is not None and r.has_device:
        mtu = view.routed.mtu if view.routed is not None else (view.kernel.routed_mtu if view.kernel else None)
        base = {"name": r.device, "role": "routing", "mtu": mtu, "config": "routing.mtu" if r.mtu else None}
        if r.backend == "ipip":
            out.append({**base, "kind": "ipip" if family == 4 else "ip6tnl", "encap": "IP in IP",
                        "overhead": IPIP_OVERHEAD[family]})
        else:
            out.append({**base, "kind": r.device_type if r.backend == "userspace" else "vxlan", **vxlan})
    return out


def known_vteps(view: Any) -> list[str]:
    """Every remote VTEP the daemon knows: flood lists, FDB, subnet table, static config."""
    cfg = view.config
    own = str(cfg.node.vtep)
    found: set[str] = set()
    for net in cfg.networks:
        found.update(view.switch.flood.targets(net.vni))
        found.update(str(v) for v in net.vteps)
    found.update(e.vtep for e in view.switch.fdb if e.vtep is not None)
    sp = view.speaker
    if sp is not None and sp.routed is not None:
        found.update(sp.routed.table.vteps())
    version = cfg.node.vtep.version
    return sorted((v for v in found if v != own and (":" in v) == (version == 6)), key=_address_key)


def _address_key(text: str) -> tuple:
    return tuple(int(p, 16) if ":" in text else int(p) for p in text.replace(":", ".").split(".") if p)


def _route_text(path: Any, vni: int | None) -> str:
    row = path_row(path, True, vni)
    what = " ".join(x for x in (row["mac"], row["ip"], row["prefix"]) if x)
    return f"{row['type']} {what}".strip() + (f" vni {row['vni']}" if row["vni"] is not None else "") + (
        f" rd {row['rd']}" if row["rd"] else "")


def doctor_facts(view: Any, now: float) -> dict[str, Any]:
    cfg = view.config
    node = cfg.node
    sp = view.speaker
    facts: dict[str, Any] = {
        "node": node.name,
        "vtep": str(node.vtep),
        "family": node.vtep.version,
        "vxlan_port": node.vxlan_port,
        "vxlan_overhead": ENCAP_OVERHEAD[node.vtep.version],
        "underlay_mtu": node.underlay_mtu,
        "uptime_s": round(now - view.started, 1),
        "devices": devices(view),
        "vteps": known_vteps(view),
        "peers": [],
        "route_flaps": None,
        "flap_window_s": FLAP_WINDOW_S,
        "flap_changes": ROUTE_FLAP_CHANGES,
        "routing": None,
        "subnets": [],
        "subnet_conflicts": [],
        "kernel": None,
    }
    if sp is not None:
        assert cfg.bgp is not None
        passive = {str(nb.address): nb.passive for nb in cfg.bgp.neighbors}
        downs = {f.key: f for f in sp.session_flaps.flapping(now)}
        for row in peer_rows(sp, now):
            address = row["neighbor"]
            flap = downs.get(address)
            facts["peers"].append({
                "neighbor": address, "state": row["state"], "uptime_s": row["uptime_s"],
                "last_error": row["last_error"], "established_count": sp.stats[address].established_count,
                "passive": passive.get(address, False), "hold_time_s": cfg.bgp.hold_time,
                "recent_downs": flap.changes if flap else 0, "flap_downs": SESSION_FLAP_DOWNS,
                "last_down_reason": flap.what if flap else None,
            })
        facts["route_flaps"] = [
            {"route": _route_text(f.what, sp.importer.domain_of(f.what)), "changes": f.changes,
             "peer": f.what.peer, "next_hop": str(f.what.next_hop) if f.what.next_hop is not None else None,
             "since_s": round(now - f.first, 1)}
            for f in sp.route_flaps.flapping(now)
        ]
    r = cfg.routing
    if r is not None:
        networks = [n for n in (r.network, r.network6) if n is not None]
        facts["routing"] = {"backend": r.backend, "device": r.device if r.has_device else None,
                            "network": ", ".join(map(str, networks)),
                            "families": sorted({n.version for n in networks})}
    if sp is not None and sp.routed is not None:
        table = sp.routed.table
        candidates = table.candidates()
        facts["subnets"] = [{"prefix": str(e.prefix), "node": e.node, "vtep": e.vtep, "peer": e.peer,
                             "local": e.is_local} for e in candidates]
        seen = set()
        for e in candidates:
            for c in conflicts(table, e, None):
                other = c.other
                pair = (c.reason, frozenset({(e.prefix, e.node), (other.prefix, other.node)}))
                if pair in seen or c.reason is ConflictReason.OUTSIDE_NETWORK:
                    continue
                seen.add(pair)
                facts["subnet_conflicts"].append({"reason": c.reason.value, "prefix": str(e.prefix),
                                                  "text": str(c)})
    if view.kernel is not None:
        facts["kernel"] = _kernel_facts(view)
    return facts


def _kernel_facts(view: Any) -> dict[str, Any]:
    """What the tables want in the kernel and the kernel does not hold (or refused)."""
    out = []
    sp = view.speaker
    if sp is not None and sp.routed is not None:
        for e in sp.routed.table:
            way = view._way(e.prefix)
            if way["kernel"] not in (None, "yes"):
                out.append({"entry": f"route {e.prefix}" + (f" {way['kernel_route']}" if way["kernel_route"] else ""),
                            "state": way["kernel"]})
    kernel_nets = {net.vni: net for net in view.config.networks if net.backend == "kernel"}
    for e in view.switch.fdb:
        net = kernel_nets.get(e.vni)
        if net is None:
            continue
        state = view._fdb_programmed(net, e)
        if state not in (None, "yes", "bridge"):
            out.append({"entry": f"fdb {mac_str(e.mac)} dst {e.vtep} dev {net.vxlan_device}", "state": state})
    summary = view.kernel.summary()
    return {"out_of_step": out, "drift_repairs": summary["drift_repairs"], "failing": summary["failing"],
            "last_errors": summary["last_errors"]}


def topology_facts(view: Any, now: float) -> dict[str, Any]:
    cfg = view.config
    sp = view.speaker
    node = {"name": cfg.node.name, "vtep": str(cfg.node.vtep), "asn": sp.asn if sp else None,
            "router_id": str(sp.router_id) if sp else None}
    networks = [{"name": net.name, "vni": net.vni, "device": net.device, "backend": net.backend,
                 "address": str(net.address) if net.address else None,
                 "flood_list": list(view.switch.flood.targets(net.vni))} for net in cfg.networks]
    routing = None
    if cfg.routing is not None:
        subnets = [str(s) for s in sp.routed.subnets] if sp is not None and sp.routed is not None else (
            [str(cfg.routing.subnet)] if cfg.routing.subnet != "auto" else [])
        routing = {"vni": cfg.routing.vni, "backend": cfg.routing.backend, "network": str(cfg.routing.network),
                   "subnets": subnets}
    sessions = [{"neighbor": r["neighbor"], "asn": r["asn"], "state": r["state"], "uptime_s": r["uptime_s"],
                 "families": r["families"], "last_error": r["last_error"]}
                for r in (peer_rows(sp, now) if sp is not None else [])]
    router_ids: dict[str, str] = {}
    if sp is not None:
        for e in sp.rib:
            if e.best and e.path.next_hop is not None and not e.path.is_local:
                router_ids.setdefault(str(e.path.next_hop), str(e.path.router_id))
    vteps = []
    neighbors = {s["neighbor"] for s in sessions}
    subnets: dict[str, list[str]] = {}
    if sp is not None and sp.routed is not None:
        for e in sp.routed.table.candidates():
            if e.vtep is not None:
                subnets.setdefault(e.vtep, []).append(str(e.prefix))
                router_ids.setdefault(e.vtep, e.node)
    for vtep in known_vteps(view):
        vteps.append({
            "vtep": vtep,
            "router_id": router_ids.get(vtep),
            "networks": [n["name"] for n in networks if vtep in n["flood_list"]],
            "macs": sum(1 for e in view.switch.fdb if e.vtep == vtep),
            "subnets": subnets.get(vtep, []),
            "neighbor": vtep in neighbors,
        })
    return {"node": node, "networks": networks, "routing": routing, "sessions": sessions, "vteps": vteps}
