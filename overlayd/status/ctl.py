"""`overlayctl`: query a running overlayd through its status socket."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from typing import Any

from overlayd import __version__
from overlayd.status.client import Watch, request
from overlayd.status.completion import SHELLS
from overlayd.status.doctor import render as render_doctor
from overlayd.status.doctor import report as doctor_report
from overlayd.status.doctor import run_checks
from overlayd.status.protocol import COMMANDS, DEFAULT_STATUS_SOCKET, StatusError
from overlayd.status.text import duration as _duration
from overlayd.status.text import table
from overlayd.status.topology import dot as topology_dot
from overlayd.status.topology import text as topology_text

EXIT_UNREACHABLE = 2
EXIT_REFUSED = 3
EXIT_NO_PICTURE = 1  # topology --format svg without a working Graphviz


def render_status(s: dict[str, Any]) -> str:
    vtep = s["vtep"] + (f" (on {s['vtep_interface']})" if s.get("vtep_interface") else "")
    head = (
        f"node {s['node']}  vtep {vtep} port {s['vxlan_port']}  "
        f"uptime {s['uptime_s']}s  fdb entries {s['fdb_entries']}"
    )
    if s.get("vtep_interface_now") is not None:
        now = ", ".join(s["vtep_interface_now"]) or "none"
        head += (f"\nWARNING: {s['vtep_interface']}'s addresses are now {now}; overlayd goes on with "
                 f"{s['vtep']} until a restart")
    rows = [
        (n["name"], n["vni"], n.get("backend", "userspace"),
         n["device"] + (f" + {n['vxlan_device']}" if n.get("vxlan_device") else ""),
         n["mtu"], n["mac"] and n["mac"] + (f" ({n['mac_source']})" if n.get("mac_source") else ""), n["address"],
         ", ".join(n["flood_list"]) or "(none)")
        for n in s["networks"]
    ]
    offloads = s.get("offloads")
    if offloads:
        on = [name for name, value in offloads.items() if value and name != "vnet_hdr"]
        head += "\noffloads: " + (" ".join(on) if on else "none")
    bgp = s.get("bgp")
    if bgp:
        head += (
            f"\nbgp: AS {bgp['asn']}  router ID {bgp['router_id']}  "
            f"peers {bgp['peers_established']}/{bgp['peers']} established  rib paths {bgp['rib_paths']}"
        )
        caps = [f"{m['neighbor']} {m['routes_received']}/{m['max_prefixes']} {m['max_prefixes_action']}"
                + (f" ({m['prefixes_refused']} refused, {m['max_prefix_teardowns']} teardowns)"
                   if m["prefixes_refused"] else "") for m in bgp.get("max_prefixes", ())]
        if caps:
            head += "\nbgp max prefixes: " + ", ".join(caps)
        if "pending_connections" in bgp:
            gr = bgp.get("graceful_restart_s")
            gr_text = f"{gr} s" if gr else "off"
            head += (
                f"\nbgp limits: connections in the OPEN exchange {bgp['pending_connections']}/"
                f"{bgp['max_pending_connections']} ({bgp['refused_pending']} refused)  "
                f"graceful restart {gr_text}"
            )
        for d in bgp["duplicate_macs"]:
            head += f"\nALARM: duplicate MAC {d['mac']} on vni {d['vni']}: {d['moves']} moves, frozen"
    routing = s.get("routing")
    if routing:
        where = f"on {routing['device']} ({routing['device_type']}, mtu {routing['mtu']})" if routing.get(
            "device") else f"(mtu {routing['mtu']})"
        head += (
            f"\nrouting: backend {routing.get('backend', 'userspace')}"
            f"{' + direct routing' if routing.get('direct_routing') else ''}, vni {routing['vni']} {where}"
            f"  subnets {', '.join(routing['subnets']) or 'none'} of {routing['network']}"
            f"  router MAC {routing['router_mac']}"
        )
        for alarm in routing["alarms"]:
            head += f"\nALARM: {alarm}"
    svc = s.get("services")
    if svc:
        head += (
            f"\nservices: {svc['services']} in {', '.join(svc['services_network'])} ({svc['path']}); conntrack "
            f"{svc['conntrack_entries']}/{svc['conntrack_max']} flows, {svc['conntrack_refused_full']} refused full, "
            f"{svc['conntrack_evicted']} half-open evicted"
        )
        if svc.get("services_file_error"):
            head += f"\nservices file refused (running services kept): {svc['services_file_error']}"
    kernel = s.get("kernel")
    if kernel:
        p = kernel["programmed"]
        head += (
            f"\nkernel: route protocol {kernel['route_protocol']}, devices {', '.join(kernel['devices']) or 'none'};"
            f" programmed {p['routes']} routes, {p['neighbors']} neighbours, {p['fdb']} fdb entries,"
            f" {p['addresses']} addresses; {kernel['op_errors']} errors ({kernel['failing']} failing now),"
            f" {kernel['drift_repairs']} drift repairs"
        )
        if kernel["adopted_pending_sweep"]:
            head += f"\nkernel: {kernel['adopted_pending_sweep']} entries from an earlier run kept until the first full table"
        for error in kernel["last_errors"][-3:]:
            head += f"\nkernel error: {error}"
    if s.get("status_socket"):
        head += "\n" + _status_socket_line(s["status_socket"])
    metrics = s.get("metrics")
    if metrics:
        head += (f"\nmetrics: http://{metrics['listen']}{metrics['path']}  {metrics['scrapes']} scrapes, "
                 f"{metrics['refused_busy']} refused busy, {metrics['bad_requests']} bad requests")
    if not rows:
        return head
    headers = ("NETWORK", "VNI", "BACKEND", "DEVICE", "MTU", "MAC", "ADDRESS", "FLOOD LIST")
    if any(n.get("vlan") for n in s["networks"]):  # a VLAN trunk: its VLAN IDs beside the VNIs
        headers = ("NETWORK", "VLAN", *headers[1:])
        rows = [(r[0], _vlan(n), *r[1:]) for r, n in zip(rows, s["networks"])]
    out = head + "\n\n" + table(headers, rows)
    limits = [(n["name"], n["limits"]) for n in s["networks"] if n.get("limits")]
    if limits:
        out += "\n\n" + table(
            ("NETWORK", "LOCAL MACS", "REFUSED FULL", "LEARN RATE", "REFUSED RATE", "LOCAL IPS", "REFUSED IPS",
             "FLOOD RATE", "FLOOD DROPPED"),
            [(name, f"{x['local_macs']}/{x['max_local_macs']}", x["refused_fdb_full"],
              _rate(x["mac_learn_rate_per_s"], x["mac_learn_burst"], "/s"), x["refused_rate"],
              f"{x.get('local_ips', 0)}/{x.get('max_local_ips')}", x.get("refused_ips", 0),
              _rate(x["flood_rate_pps"], x["flood_burst"], " pps"), x["flood_dropped"]) for name, x in limits],
        )
    return out


def _rate(rate: float | None, burst: float | None, unit: str) -> str:
    """'1000/s burst 1000', or 'kernel' where the kernel does the work unbounded by overlayd."""
    return "kernel" if rate is None else f"{rate:g}{unit} burst {burst:g}"


def render_peers(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no BGP neighbors configured)"
    return table(
        ("NEIGHBOR", "AS", "STATE", "UPTIME", "FAMILIES", "AUTH", "RECEIVED", "ACCEPTED", "SENT", "LAST ERROR"),
        [(r["neighbor"], r["asn"], r["state"], _duration(r["uptime_s"]), ",".join(r.get("families", ())) or "-",
          _protection(r), r["routes_received"], r["routes_accepted"], r["routes_sent"], r["last_error"] or "-")
         for r in rows],
    )


def _protection(row: dict[str, Any]) -> str:
    """How a session is protected: md5 (RFC 2385), gtsm (RFC 5082), both, or -."""
    return "+".join(name for name, on in (("md5", row.get("tcp_md5")), ("gtsm", row.get("ttl_security"))) if on) \
        or "-"


def render_rib(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(rib is empty)"
    return table(
        ("TYPE", "RD", "ESI/TAG", "MAC", "IP", "PREFIX", "VNI", "NEXT HOP", "SEQ", "BEST", "FROM"),
        [(r["type"], r["rd"], None if r["ethernet_tag"] is None else f"{r['esi'] or '-'}/{r['ethernet_tag']}",
          r["mac"], r["ip"], r["prefix"], r["vni"], r["next_hop"], r["sequence"], "*" if r["best"] else "",
          r["peer"]) for r in rows],
    )


def _vlan(row: dict[str, Any]) -> str:
    """A VLAN trunk's VLAN ID (`10`, `10 native`), or "-" for a network that is no trunk."""
    if not row.get("vlan"):
        return "-"
    return f"{row['vlan']} native" if row.get("native") else str(row["vlan"])


def render_fdb(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(fdb is empty)"
    headers = ("NETWORK", "VNI", "MAC", "WHERE", "LEARNED", "AGE")
    cells = [(r["network"], r["vni"], r["mac"], r["where"], r["learned"], f"{r['age_s']:.0f}s") for r in rows]
    if any(r.get("vlan") for r in rows):  # a VLAN trunk: its VLAN IDs beside the VNIs
        headers = ("NETWORK", "VLAN", *headers[1:])
        cells = [(c[0], _vlan(r), *c[1:]) for c, r in zip(cells, rows)]
    if any(r.get("kernel") for r in rows):  # a network on the kernel backend: what its VXLAN device holds
        headers += ("KERNEL",)
        cells = [c + (r.get("kernel"),) for c, r in zip(cells, rows)]
    return table(headers, cells)


def render_stats(s: dict[str, Any]) -> str:
    counters, desc = s["counters"], s.get("descriptions", {})
    return table(("COUNTER", "VALUE", "MEANING"), [(k, v, desc.get(k, "")) for k, v in counters.items()])


def render_routes(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(subnet table is empty)"
    return table(
        ("PREFIX", "NODE", "VTEP", "ROUTER MAC", "VNI", "AGE", "FROM", "WAY", "KERNEL"),
        [(r["prefix"], r["node"], r["vtep"], r["router_mac"], r["vni"], _duration(r["age_s"]), r["peer"],
          r.get("way", "userspace"), _kernel_cell(r)) for r in rows],
    )


def _kernel_cell(row: dict[str, Any]) -> str | None:
    """The kernel's route for a subnet and whether it is there: 'via 10.0.0.2 dev eth0 (yes)'."""
    route, state = row.get("kernel_route"), row.get("kernel")
    if route is None:
        return state
    return f"{route.split(' ', 1)[1] if ' ' in route else route} ({state})"


def render_services(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no services)"
    cells = []
    for s in rows:
        head = (s["name"], f"{s['vip']}:{s['port']}/{s['protocol']}", s["affinity"], s["hits"], s["rejected"])
        if not s["backends"]:
            cells.append(head + ("(no backends)", "-", "-", "-"))
        for i, b in enumerate(s["backends"]):
            state = "up" if b["healthy"] else f"DOWN ({b['failures']} failed)"
            if b["check"] == "none":
                state = "up (not checked)"
            cells.append((head if i == 0 else ("", "", "", "", "")) + (b["backend"], state, b["flows"], b["hits"]))
    return table(("SERVICE", "VIP", "AFFINITY", "HITS", "REJECTED", "BACKEND", "HEALTH", "FLOWS", "BACKEND HITS"),
                 cells)


def render_conntrack(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "(no flows)"
    return table(
        ("SERVICE", "PROTO", "CLIENT", "VIP", "BACKEND", "SNAT", "STATE", "AGE", "EXPIRES", "PACKETS", "BYTES"),
        [(r["service"], r["protocol"], r["client"], r["vip"], r["backend"], r["snat"], r["state"],
          f"{r['age_s']:.0f}s", f"{r['expires_in_s']:.0f}s", r["packets"], r["bytes"]) for r in rows],
    )


def render_explain(r: dict[str, Any]) -> str:
    """A head line (where, what happens, who carries it), then one numbered line per step."""
    where = {"l2": f"network {r['network']}", "routed": f"routed network {r['network']}",
             "none": "on no network of this node"}[r["path"]]
    vni = f" (VNI {r['vni']})" if r["vni"] is not None else ""
    to = f" {'from' if r['direction'] == 'in' else 'to'} {', '.join(r['vteps'])}" if r["vteps"] else ""
    source = f" from {r['source']}" if r["source"] else ""
    lines = [f"{r['destination']}{source}: {where}{vni}: {r['verdict']}{to} ({r['carrier']})"]
    width = len(str(len(r["steps"])))
    for s in r["steps"]:
        counts = f" [counts {', '.join(s['counters'])}]" if s["counters"] else ""
        lines.append(f"{s['step']:>{width}}. {s['text']}{counts}")
    return "\n".join(lines)


def render_clear(r: dict[str, Any]) -> str:
    if r["cleared"] == "counters":
        return f"cleared the {r['counters']} counters of `overlayctl stats` ({r['were_nonzero']} were not 0)"
    if r["cleared"] == "mac":
        return f"unfroze duplicate MAC {r['mac']} on network {r['network']} (vni {r['vni']})"
    return f"reset the BGP session with {r['neighbor']} (Cease, administrative reset); it reconnects now"


def render_reload(r: Any) -> str:
    return f"reloaded {r['reloaded']}: {r['changes']}"


def _status_socket_line(sock: dict[str, Any]) -> str:
    return (
        f"status socket: {sock['path']} mode {sock['mode']} group {sock['group']}, clients "
        f"{sock['clients']}/{sock['max_clients']}, idle timeout {sock['idle_timeout_s']:g}s, requests up to "
        f"{sock['max_request_bytes']} bytes; {sock['refused_busy']} refused busy, {sock['evicted_idle']} idle "
        f"evicted, {sock['dropped_idle']} idle dropped, {sock['refused_too_large']} too large, "
        f"{sock['refused_not_permitted']} not permitted; watchers {sock['watchers']}/{sock['max_watchers']}, "
        f"{sock['dropped_too_slow']} dropped too slow, {sock['refused_watchers_busy']} refused busy"
    )


def render_event(e: dict[str, Any]) -> str:
    """One `watch` event as a line: time (UTC), event name, what happened."""
    return f"{e['ts']} {e['event']:<19} {e['msg']}"


RENDER = {
    "status": render_status,
    "fdb": render_fdb,
    "stats": render_stats,
    "peers": render_peers,
    "rib": render_rib,
    "routes": render_routes,
    "services": render_services,
    "conntrack": render_conntrack,
    "explain": render_explain,
    "clear": render_clear,
    "reload": render_reload,
}

# overlayctl's own words for the state-changing commands (the protocol's are in COMMANDS).
CLEAR_HELP = "root only: zero counters, unfreeze a duplicate MAC, or reset a BGP session"
CLEAR_TARGETS = {
    "counters": "zero every counter `overlayctl stats` shows",
    "mac": "lift the freeze on a duplicate MAC (the ALARM in `status`); advertised again if it is still here",
    "peer": "reset the BGP session with a neighbor: Cease (administrative reset), its routes withdrawn, "
            "then it reconnects",
}
WATCH_HELP = ("follow the daemon's events live, one line each (time, event, what happened): peers up and down "
              "and why, routes learned and withdrawn, MACs learned, moved and aged, duplicate MACs frozen, "
              "limits hit, reloads; until Ctrl-C. A watcher that reads too slowly is dropped (exit 3, too_slow)")
RELOAD_HELP = ("root only: re-read the config file and apply it, as SIGHUP does: neighbors, userspace "
               "networks, static vteps/fdb and services change live; a file that does not load, or that "
               "changes a key only a restart changes, is refused (exit 3) and the running config stays")
EXPLAIN_HELP = "the life of one packet on this node, step by step, from the tables the data path uses"
EXPLAIN_DESCRIPTION = (
    "The life of one packet on this node, step by step: the device it enters (a TAP, the routing device, "
    "the pods' bridge, or VXLAN from another node when --from is behind it), the table entry that matches "
    "(FDB entry, ARP/ND binding, subnet route, service VIP and its backends, the kernel's route for a "
    "kernel backend) and where that entry came from (learned locally, static config, which BGP peer, route "
    "RD and MAC mobility sequence, its age), the VTEP, VNI and outer headers it leaves with, and the MTU on "
    "the way; or why it is flooded or dropped, with the counter of `overlayctl stats` that moves. Computed "
    "from the live tables; nothing is sent and nothing changes."
)
DOCTOR_HELP = ("check this host and the mesh: device MTUs against the underlay, the path MTU and VXLAN port of "
               "each VTEP (one probe datagram each), rp_filter, ip_forward, IPv6 UDP checksums, neighbors never "
               "Established, flapping routes and sessions, duplicate subnets, kernel tables out of step; each "
               "finding with its fix")
TOPOLOGY_HELP = "the mesh as this node sees it: nodes, BGP sessions with their state, VTEPs, networks, subnets"
COMPLETION_HELP = "print a shell completion script for overlayctl (bash or zsh), made from this parser"
TOPOLOGY_FORMATS = ("text", "json", "dot", "svg")
OWN_HELP = {"clear": CLEAR_HELP, "reload": RELOAD_HELP, "explain": EXPLAIN_HELP, "doctor": DOCTOR_HELP,
            "topology": TOPOLOGY_HELP, "watch": WATCH_HELP}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="overlayctl",
        description="Query a running overlayd through its status socket. Members of the socket's group "
                    "(node.status_group) may run every command but clear and reload, which only root may.",
        epilog="exit status: 0 ok, 2 the socket cannot be reached (watch: or the daemon closed it), 3 the "
               "daemon refused the request (not_permitted: a state-changing command from a user who is not "
               "root; bad_request: an argument it cannot use, e.g. an explain DESTINATION that is not an "
               "address; watch: busy, or too_slow when it dropped a watcher that read too slowly); doctor: 0 "
               "healthy, 1 warnings, 4 errors found; topology --format svg: 1 when Graphviz's dot is missing "
               "or fails.",
    )
    p.add_argument(
        "-s", "--socket",
        default=os.environ.get("OVERLAYD_SOCKET", DEFAULT_STATUS_SOCKET),
        help="status socket (default: $OVERLAYD_SOCKET or %(default)s)",
    )
    p.add_argument("--version", action="version", version=f"overlayctl {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        help_text = OWN_HELP.get(name, help_text)
        description = EXPLAIN_DESCRIPTION if name == "explain" else help_text
        cmd = sub.add_parser(name, help=help_text, description=description)
        if name == "watch":
            cmd.add_argument("--json", action="store_true",
                             help="one JSON object a line, keys sorted; ts, event, level, msg, peer, network, mac, "
                                  "prefix and reason always there (null where they mean nothing)")
        elif name != "clear":  # clear's --json goes with its WHAT, so that it is read after it
            cmd.add_argument("--json", action="store_true", help="print the reply as stable JSON")
        if name == "clear":
            targets = cmd.add_subparsers(dest="what", required=True, metavar="WHAT")
            for what, what_help in CLEAR_TARGETS.items():
                t = targets.add_parser(what, help=what_help, description=what_help)
                t.add_argument("--json", action="store_true", help="print the reply as stable JSON")
                if what == "mac":
                    t.add_argument("network", help="the network's name (or its VNI)")
                    t.add_argument("mac", help="the frozen MAC, like 02:00:00:00:00:01")
                elif what == "peer":
                    t.add_argument("neighbor", help="the neighbor's address, as configured")
        if name == "fdb":
            cmd.add_argument("-n", "--network", help="only this network")
        if name == "explain":
            cmd.add_argument("destination", metavar="DESTINATION",
                             help="an IP address (10.244.2.5, fd00::5), a MAC (02:00:00:00:00:01), or a "
                                  "service's VIP:PORT[/tcp|udp] (10.96.0.10:80, [fd00:96::10]:53/udp)")
            cmd.add_argument("--from", dest="source", metavar="SRC_IP",
                             help="the sender's address: this node, a host or pod here, or one behind another "
                                  "node (the packet then arrives over VXLAN); default: sent from this node")
            cmd.add_argument("-n", "--network", help="the L2 network (name or VNI) of the destination, when its "
                                                     "address does not say")
        if name == "conntrack":
            cmd.add_argument("--service", help="only the flows of this service (its name)")
            cmd.add_argument("--client", help="only this client: an address, or address:port")
            cmd.add_argument("--backend", help="only this backend: an address, or address:port")
        if name == "doctor":
            cmd.add_argument("--no-probe", action="store_true",
                             help="send no probe datagram to the VTEPs (path MTU and VXLAN port unchecked)")
        if name == "topology":
            cmd.add_argument("--format", choices=TOPOLOGY_FORMATS, default="text",
                             help="text (default), json (as --json), dot (Graphviz) or svg (dot -Tsvg)")
    completion = sub.add_parser("completion", help=COMPLETION_HELP, description=COMPLETION_HELP)
    completion.add_argument("shell", choices=sorted(SHELLS), help="the shell to complete in")
    return p


def doctor(args: argparse.Namespace, facts: dict[str, Any]) -> int:
    """Read the host, probe the VTEPs, run the checks; the exit status says the worst finding."""
    from overlayd.io.host import read_host  # netlink and the probes: only this command needs them

    host = read_host(facts, probe=not args.no_probe)
    findings = run_checks(facts, host)
    result = doctor_report(facts, host, findings)
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else render_doctor(result))
    return result["exit_status"]


def topology(args: argparse.Namespace, facts: dict[str, Any]) -> int:
    fmt = "json" if args.json else args.format
    if fmt == "json":
        print(json.dumps(facts, indent=2, sort_keys=True))
    elif fmt == "text":
        print(topology_text(facts))
    elif fmt == "dot":
        print(topology_dot(facts), end="")
    else:
        program = shutil.which("dot")
        if program is None:
            print("overlayctl: topology --format svg runs Graphviz's `dot`, which is not installed "
                  "(apt-get install graphviz); --format dot prints the graph as DOT text", file=sys.stderr)
            return EXIT_NO_PICTURE
        done = subprocess.run([program, "-Tsvg"], input=topology_dot(facts), capture_output=True, text=True,
                              check=False)
        if done.returncode != 0:
            print(f"overlayctl: dot -Tsvg failed: {done.stderr.strip()}", file=sys.stderr)
            return EXIT_NO_PICTURE
        print(done.stdout, end="")
    return 0


def watch(args: argparse.Namespace) -> int:
    """`overlayctl watch`: print each event as it comes until Ctrl-C or the daemon goes."""
    try:
        with Watch(args.socket) as stream:
            print(f"overlayctl: watching {stream.started['watching']} (one line per event; Ctrl-C stops)",
                  file=sys.stderr, flush=True)
            for event in stream:
                print(json.dumps(event, sort_keys=True) if args.json else render_event(event), flush=True)
    except StatusError as err:
        print(f"overlayctl: watch: {err} ({err.code})", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as err:
        if isinstance(err, BrokenPipeError):  # `overlayctl watch | head`: the reader is done
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0
        print(f"overlayctl: cannot reach overlayd at {args.socket}: {err.strerror or err}", file=sys.stderr)
        return EXIT_UNREACHABLE
    except KeyboardInterrupt:
        return 0
    print("overlayctl: watch: overlayd closed the connection", file=sys.stderr)
    return EXIT_UNREACHABLE


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "completion":
        print(SHELLS[args.shell](parser), end="")
        return 0
    if args.command == "watch":
        return watch(args)
    extra = {key: getattr(args, key) for key in ("network", "service", "client", "backend", "what", "mac",
                                                    "neighbor", "destination", "source") if getattr(args, key, None)}
    try:
        result = request(args.socket, args.command, **extra)
    except StatusError as err:
        print(f"overlayctl: {args.command}: {err} ({err.code})", file=sys.stderr)
        return EXIT_REFUSED
    except OSError as err:
        print(f"overlayctl: cannot reach overlayd at {args.socket}: {err.strerror or err}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if args.command == "doctor":
        return doctor(args, result)
    if args.command == "topology":
        return topology(args, result)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    else:
        print(RENDER[args.command](result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
