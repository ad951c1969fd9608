"""`overlayctl doctor`: what is wrong with this node and its mesh, and the one-line fix.

Pure: every check is a function of two plain inputs, so each is a unit test
on made-up facts:

- the daemon's view (`facts`): the reply to the status command `doctor`
  (status/facts.py): its devices with the MTU each should have room for, the
  VTEPs it knows, its BGP sessions, flapping routes, subnet conflicts and
  kernel entries that are not what the tables want;
- the host as `overlayctl` reads it (`Host`, filled by io/host.py): device
  MTUs and VXLAN flags from netlink, sysctls from /proc/sys, the route back
  to each source, the kernel's UDP checksum drops, and one probe datagram per
  VTEP.

Each check returns `Finding`s: a severity (ok, info, warning, error), the
check's name, what it is about (a device, a VTEP, a neighbor), one line that
says what is found, and one line that fixes it. `exit_status` maps the worst
to 0 (healthy: ok and info only), 1 (warnings) or 4 (errors).

The VXLAN port probe. For each VTEP the daemon knows (flood lists, FDB,
subnet table; never any other address), `overlayctl` sends one UDP datagram
from the node's VTEP address to the VTEP's VXLAN port, with DF set and as
large as the largest overlay frame makes a datagram (the device MTU plus the
50 or 70 bytes of encapsulation). It is a VXLAN header with the I flag and
VNI 0, which no overlayd network can have (`vni` is at least 1): an
overlayd peer drops it and counts it in `rx_drop_unknown_vni`; a kernel
VXLAN device without VNI 0 drops it. Nothing reaches a TAP or a bridge, and
no answer comes back when the port is open. What the probe can tell: ICMP
port unreachable (nothing listens there: an error), ICMP fragmentation
needed / packet too big, or the local route's MTU (the path carries less
than the overlay sends: an error, with the path MTU), ICMP unreachable or
prohibited (a firewall rejects it, or no route: an error), or silence within
PROBE_WAIT_S (the port is open, or a firewall drops without a word; the
peer's `rx_drop_unknown_vni` moving by one tells them apart).
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import asdict, dataclass, field
from typing import Any

from overlayd.status.text import duration, table

PROBE_WAIT_S = 1.0  # how long the probes wait for ICMP errors, all VTEPs at once
MAX_PROBES = 256  # VTEPs probed at most; more are named as not probed
NEVER_UP_GRACE_S = 15.0  # a neighbor not yet Established this soon after the start is still coming up

EXIT_HEALTHY = 0
EXIT_WARNINGS = 1
EXIT_ERRORS = 4
UDP_IP_HEADERS = {4: 20 + 8, 6: 40 + 8}  # what the kernel adds to a UDP payload


class Severity(enum.IntEnum):
    OK = 0
    INFO = 1
    WARNING = 2
    ERROR = 3

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Finding:
    """One result of one check: about `subject`, `message` says what is so; `fix` what to do."""

    check: str
    severity: Severity
    subject: str
    message: str
    fix: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "severity": self.severity.label}


@dataclass(frozen=True)
class Probe:
    """What came back from one VTEP's probe datagram.

    outcome: "silent" (no ICMP error: the normal answer of an open port), "refused" (port
    unreachable), "too_big" (fragmentation needed / packet too big, or larger than the local
    route's MTU), "unreachable" (host or network unreachable, prohibited), "error" (anything
    else, in `detail`). `path_mtu`: what the kernel knows of the path afterwards (IP_MTU)."""

    outcome: str
    path_mtu: int | None = None
    detail: str = ""


@dataclass
class Host:
    """This host as `overlayctl doctor` read it (io/host.py); each field may be partial."""

    underlay: str | None = None  # the device holding the VTEP address (None: not on this host)
    mtus: dict[str, int] = field(default_factory=dict)  # device -> MTU (missing: no such device)
    vxlan: dict[str, dict[str, Any]] = field(default_factory=dict)  # vxlan device -> udp6zerocsumtx/rx, port
    sysctls: dict[str, str] = field(default_factory=dict)  # "net.ipv4.ip_forward" -> "1"
    routes_back: dict[str, str | None] = field(default_factory=dict)  # source address -> device to it
    udp6_checksum_errors: int | None = None  # Udp6InCsumErrors of /proc/net/snmp6
    probes: dict[str, Probe] = field(default_factory=dict)  # VTEP -> what its probe got
    probe_bytes: int | None = None  # the size of the probes' IP packets
    problems: list[str] = field(default_factory=list)  # what could not be read


def _ok(check: str, subject: str, message: str) -> Finding:
    return Finding(check, Severity.OK, subject, message)


# -- MTU -------------------------------------------------------------------------------------


def underlay_limit(facts: dict[str, Any], host: Host) -> tuple[int | None, str]:
    """The largest IP packet the underlay carries, and how that was found."""
    device_mtu = host.mtus.get(host.underlay) if host.underlay else None
    configured = facts.get("underlay_mtu")
    if configured and device_mtu:
        return min(configured, device_mtu), f"node.underlay_mtu {configured}, {host.underlay} mtu {device_mtu}"
    if configured:
        return configured, f"node.underlay_mtu {configured}"
    if device_mtu:
        return device_mtu, f"{host.underlay} mtu {device_mtu}"
    return None, "underlay MTU unknown"


def check_mtu(facts: dict[str, Any], host: Host) -> list[Finding]:
    out: list[Finding] = []
    limit, how = underlay_limit(facts, host)
    family = facts["family"]
    configured = facts.get("underlay_mtu")
    if configured and host.underlay and host.mtus.get(host.underlay, configured) < configured:
        out.append(Finding("mtu", Severity.ERROR, host.underlay,
                           f"node.underlay_mtu {configured} is above {host.underlay}'s mtu "
                           f"{host.mtus[host.underlay]}: overlay devices are sized for packets it cannot send",
                           f"set node.underlay_mtu to at most {host.mtus[host.underlay]} (or raise "
                           f"{host.underlay}'s mtu), then restart overlayd"))
    if limit is None:
        return out + [Finding("mtu", Severity.WARNING, facts["vtep"], "the underlay device is not on this host: "
                              "cannot check MTUs", "run overlayctl in overlayd's network namespace")]
    for dev in facts["devices"]:
        name, overhead = dev["name"], dev["overhead"]
        mtu = host.mtus.get(name)
        if mtu is None:
            out.append(Finding("mtu", Severity.ERROR, name, f"{dev['role']}: device {name} is missing",
                               "restart overlayd to make it again"))
            continue
        fits = limit - overhead
        what = f"{overhead} bytes of {dev['encap']} over IPv{family}" if overhead else "no encapsulation"
        if mtu > fits:
            where = f"{dev['config']}: {fits}" if dev.get("config") else f"ip link set {name} mtu {fits}"
            out.append(Finding("mtu", Severity.ERROR, name,
                               f"mtu {mtu} is above {fits} ({how} - {what}): packets over {fits} bytes "
                               "are dropped or fragmented on the way",
                               f"{where} (or raise the underlay's mtu to {mtu + overhead})"))
        else:
            out.append(_ok("mtu", name, f"mtu {mtu} fits ({how} - {what} = {fits})"))
    return out


def check_path_mtu(facts: dict[str, Any], host: Host) -> list[Finding]:
    """The probes' verdict on size: the path to each VTEP carries the largest overlay packet."""
    out: list[Finding] = []
    size = host.probe_bytes
    for vtep in facts["vteps"]:
        probe = host.probes.get(vtep)
        if probe is None or size is None:
            continue
        if probe.outcome == "too_big":
            pmtu = probe.path_mtu
            fix = (f"set node.underlay_mtu: {pmtu} (overlay devices then get mtu {pmtu - facts['vxlan_overhead']}), "
                   "or raise the path's mtu" if pmtu else "find the hop with the small mtu (tracepath) and raise it")
            out.append(Finding("path-mtu", Severity.ERROR, vtep,
                               f"the path carries {pmtu or 'fewer'} bytes, the overlay sends {size}: "
                               f"{probe.detail or 'fragmentation needed'}", fix))
        elif probe.outcome == "silent":
            out.append(_ok("path-mtu", vtep, f"a {size}-byte datagram with DF set left without an error"
                                             + (f" (path mtu {probe.path_mtu})" if probe.path_mtu else "")))
    return out


def probe_size(facts: dict[str, Any], host: Host) -> int | None:
    """The IP packet the probes send: the largest VXLAN device's MTU plus its encapsulation, but
    no more than the underlay's limit (a device above that is the mtu check's finding, and the
    path is then checked for what the underlay promises); None: no VXLAN device (host-gw,
    native, ipip only)."""
    sizes = [(host.mtus.get(d["name"]) or d["mtu"] or 0) + d["overhead"]
             for d in facts["devices"] if d["encap"] == "VXLAN"]
    if not sizes:
        return None
    limit, _ = underlay_limit(facts, host)
    return min(max(sizes), limit) if limit else max(sizes)


# -- the VXLAN port ----------------------------------------------------------------------------


def check_vxlan_port(facts: dict[str, Any], host: Host) -> list[Finding]:
    out: list[Finding] = []
    port = facts["vxlan_port"]
    for vtep in facts["vteps"]:
        probe = host.probes.get(vtep)
        if probe is None:
            if host.probe_bytes is not None:
                out.append(Finding("vxlan-port", Severity.INFO, vtep, f"not probed ({MAX_PROBES} VTEPs at most)"))
            continue
        if probe.outcome == "refused":
            out.append(Finding("vxlan-port", Severity.ERROR, vtep,
                               f"nothing listens on UDP port {port} there (ICMP port unreachable)",
                               f"start overlayd on {vtep}, and check its node.vxlan_port is {port}"))
        elif probe.outcome == "unreachable":
            out.append(Finding("vxlan-port", Severity.ERROR, vtep, f"UDP port {port} cannot be reached: "
                               f"{probe.detail}", f"allow UDP {port} between the VTEPs and check the route to "
                               f"{vtep} (ip route get {vtep})"))
        elif probe.outcome == "too_big":
            out.append(Finding("vxlan-port", Severity.INFO, vtep, "not checked: the probe was too big to leave "
                                                                  "(see path-mtu)"))
        elif probe.outcome == "error":
            out.append(Finding("vxlan-port", Severity.WARNING, vtep, f"probe failed: {probe.detail}",
                               "run overlayctl doctor as root, in overlayd's network namespace"))
        elif probe.outcome == "silent":
            out.append(_ok("vxlan-port", vtep, f"UDP port {port}: no ICMP error within {PROBE_WAIT_S:g} s "
                                               "(its rx_drop_unknown_vni counts the probe)"))
    return out


# -- sysctls -----------------------------------------------------------------------------------


def _rp_filter(host: Host, device: str) -> int | None:
    """The effective rp_filter of a device: the larger of `all` and its own."""
    values = [host.sysctls.get(f"net.ipv4.conf.{name}.rp_filter") for name in ("all", device)]
    known = [int(v) for v in values if v is not None and v.strip().isdigit()]
    return max(known) if known else None


def rp_filter_sources(facts: dict[str, Any], host: Host) -> dict[str, list[str]]:
    """Device -> the IPv4 sources whose route back the check needs (io/host.py looks them up)."""
    wanted: dict[str, list[str]] = {}
    if host.underlay and facts["family"] == 4:
        wanted[host.underlay] = [v for v in facts["vteps"] if ipaddress.ip_address(v).version == 4]
    routing = facts.get("routing")
    if routing and routing.get("device"):
        wanted[routing["device"] if routing["backend"] not in ("host-gw", "native") else host.underlay or ""] = [
            str(ipaddress.ip_network(s["prefix"])[1]) for s in facts["subnets"]
            if not s["local"] and ipaddress.ip_network(s["prefix"]).version == 4]
    return {k: v for k, v in wanted.items() if k}


def check_rp_filter(facts: dict[str, Any], host: Host) -> list[Finding]:
    out: list[Finding] = []
    devices = [d["name"] for d in facts["devices"]]
    if host.underlay and facts["family"] == 4:
        devices.insert(0, host.underlay)
    sources = rp_filter_sources(facts, host)
    for device in dict.fromkeys(devices):
        mode = _rp_filter(host, device)
        if mode is None:
            continue
        fix_keys = [f"net.ipv4.conf.{device}.rp_filter=2"]
        if _rp_filter(host, "all") == 1:  # the effective value is the larger of `all` and the device's
            fix_keys.insert(0, "net.ipv4.conf.all.rp_filter=2")
        dropped = [(src, host.routes_back.get(src)) for src in sources.get(device, ())
                   if host.routes_back.get(src) != device]
        if mode == 1 and dropped:
            src, via = dropped[0]
            out.append(Finding("rp_filter", Severity.ERROR, device,
                               f"rp_filter=1 (strict) drops overlay traffic from {src}: the route back to it "
                               f"{'leaves through ' + via if via else 'does not exist'}"
                               + (f" (and {len(dropped) - 1} more sources)" if len(dropped) > 1 else ""),
                               f"sysctl -w {' '.join(fix_keys)}  (loose: the anti-spoofing check stays)"))
        elif mode == 1:
            out.append(Finding("rp_filter", Severity.WARNING, device,
                               "rp_filter=1 (strict): overlay packets are dropped whenever the route back to "
                               "their source leaves through another device (asymmetric routes, a second "
                               "underlay link, pods behind another bridge)",
                               f"sysctl -w {' '.join(fix_keys)}  (loose: the anti-spoofing check stays)"))
        elif mode == 2 and any(via is None for _, via in dropped):
            src = next(s for s, via in dropped if via is None)
            out.append(Finding("rp_filter", Severity.ERROR, device,
                               f"rp_filter=2 (loose) drops overlay traffic from {src}: no route back to it",
                               f"add a route to {src}, or sysctl -w net.ipv4.conf.{device}.rp_filter=0"))
        else:
            out.append(_ok("rp_filter", device, f"rp_filter={mode}"
                           + (" (loose)" if mode == 2 else " (off)" if mode == 0 else "")))
    return out


def check_forwarding(facts: dict[str, Any], host: Host) -> list[Finding]:
    routing = facts.get("routing")
    if not routing:
        return []
    out: list[Finding] = []
    for version, key in ((4, "net.ipv4.ip_forward"), (6, "net.ipv6.conf.all.forwarding")):
        if version not in routing["families"]:
            continue
        value = host.sysctls.get(key)
        if value is None:
            out.append(Finding("ip_forward", Severity.WARNING, key, "cannot be read", f"sysctl {key}"))
        elif value.strip() != "1":
            out.append(Finding("ip_forward", Severity.ERROR, key,
                               f"{key}={value.strip()}: the kernel does not forward between the pods and the "
                               f"routing ({routing['backend']}), so routed subnets are unreachable",
                               f"sysctl -w {key}=1  (and in /etc/sysctl.d/ to keep it)"))
        else:
            out.append(_ok("ip_forward", key, f"{key}=1"))
    return out


# -- IPv6 UDP checksums ----------------------------------------------------------------------------


def check_udp_checksum(facts: dict[str, Any], host: Host) -> list[Finding]:
    """IPv6 VXLAN with a zero UDP checksum is dropped by a Linux receiver that does not allow it
    (RFC 6935: udp6zerocsumrx on a kernel VXLAN device; never on a plain UDP socket)."""
    if facts["family"] != 6:
        return [_ok("udp-checksum", facts["vtep"], "IPv4 underlay: a zero UDP checksum is allowed (RFC 7348)")]
    out: list[Finding] = []
    for dev in facts["devices"]:
        flags = host.vxlan.get(dev["name"])
        if dev["kind"] != "vxlan" or flags is None:
            continue
        if flags.get("udp6zerocsumtx"):
            out.append(Finding("udp-checksum", Severity.ERROR, dev["name"],
                               "sends IPv6 VXLAN with a zero UDP checksum (udp6zerocsumtx): receivers without "
                               "udp6zerocsumrx, and overlayd's userspace VTEPs, drop all of it",
                               f"ip link del {dev['name']} and restart overlayd, which makes it with checksums"))
        else:
            rx = "accepted (udp6zerocsumrx)" if flags.get("udp6zerocsumrx") else "dropped, as Linux does by default"
            out.append(_ok("udp-checksum", dev["name"], f"sends UDP checksums; zero checksums received are {rx}"))
    errors = host.udp6_checksum_errors
    if errors:
        out.append(Finding("udp-checksum", Severity.WARNING, facts["vtep"],
                           f"the kernel dropped {errors} IPv6 UDP datagram{'' if errors == 1 else 's'} for a zero "
                           "or bad checksum (Udp6InCsumErrors): a VTEP that sends IPv6 VXLAN without checksums is not heard here",
                           "have the sending VTEPs compute UDP checksums (kernel VXLAN: no udp6zerocsumtx; "
                           "switches: IPv6 UDP checksum on)"))
    elif errors == 0:
        out.append(_ok("udp-checksum", facts["vtep"], "no IPv6 UDP datagram dropped for its checksum"))
    return out


# -- BGP ------------------------------------------------------------------------------------------

# (words in the last error, likely cause, fix), first match wins
CAUSES = (
    ("bad peer as", "the AS numbers disagree",
     "bgp.neighbors[].asn must be the peer's bgp.asn, and the peer's neighbor entry for us must name our bgp.asn"),
    ("bad bgp identifier", "both ends have the same router ID", "give each node its own bgp.router_id"),
    ("unacceptable hold time", "the peer refuses our hold time", "set bgp.hold_time to 0 or at least 3 s on both"),
    ("unsupported capability", "no address family in common",
     "list the same families (bgp.neighbors[].families) on both ends"),
    ("md5", "TCP MD5 keys differ (or only one end has one)", "set the same bgp.neighbors[].password on both ends"),
    ("connection rejected", "the peer does not have us as a neighbor",
     "add this node's address to the peer's neighbors"),
    ("refused", "nothing listens on the peer's BGP port",
     "start overlayd (or the BGP speaker) there and check bgp.port / bgp.listen on both ends"),
    ("timed out", "the peer's BGP port cannot be reached (a firewall drops it, or no route)",
     "allow TCP 179 both ways; ping the peer's address"),
    ("unreachable", "no route to the peer", "check the underlay route to the peer (ip route get ADDRESS)"),
    ("hold timer expired", "keepalives get lost, or the peer stalls",
     "check the underlay for loss; look at the peer's log"),
    ("closed by the peer", "the peer closes at once: it does not know us, or a password / ttl_security mismatch",
     "check the peer's neighbors list, password and ttl_security for this node"),
    ("reset", "the peer resets the connection: it does not know us, or a password / ttl_security mismatch",
     "check the peer's neighbors list, password and ttl_security for this node"),
)


def likely_cause(last_error: str | None, passive: bool = False) -> tuple[str, str]:
    text = (last_error or "").lower()
    for words, cause, fix in CAUSES:
        if words in text:
            return cause, fix
    if not text and passive:
        return "passive: it waits for the peer, which never connected", "check the peer names this node as neighbor"
    if not text:
        return "no connection was ever answered", "check the peer runs and that TCP 179 passes both ways"
    return "see the last error", "look at both ends' logs (overlayctl peers)"


def check_neighbors(facts: dict[str, Any], host: Host) -> list[Finding]:
    out: list[Finding] = []
    uptime = facts["uptime_s"]
    for p in facts["peers"]:
        who, state, error = p["neighbor"], p["state"], p["last_error"]
        if state == "Established":
            flaps = p.get("recent_downs", 0)
            if flaps >= p.get("flap_downs", 3):
                out.append(Finding("bgp", Severity.WARNING, who,
                                   f"session flapping: down {flaps} times in the last "
                                   f"{facts['flap_window_s']:g} s (last: {p.get('last_down_reason') or '?'})",
                                   "check the underlay for loss and both ends' logs; hold time "
                                   f"{p['hold_time_s']} s"))
            else:
                out.append(_ok("bgp", who, f"Established for {duration(p['uptime_s'])}"))
            continue
        cause, fix = likely_cause(error, p.get("passive", False))
        said = f"last error: {error}" if error else "no error yet"
        if p["established_count"] == 0:
            if uptime < NEVER_UP_GRACE_S:
                out.append(Finding("bgp", Severity.INFO, who, f"{state}, not yet Established "
                                                              f"({uptime:.0f} s after the start)"))
                continue
            out.append(Finding("bgp", Severity.ERROR, who,
                               f"configured but never Established in {duration(uptime)} ({state}; {said}); "
                               f"likely cause: {cause}", fix))
        else:
            out.append(Finding("bgp", Severity.ERROR, who,
                               f"{state}: down after {p['established_count']} session(s) ({said}); "
                               f"likely cause: {cause}", fix))
    return out


def check_flaps(facts: dict[str, Any], host: Host) -> list[Finding]:
    if facts.get("route_flaps") is None:
        return []
    flaps = facts["route_flaps"]
    window = facts["flap_window_s"]
    if not flaps:
        return [_ok("route-flap", "rib", f"no route changed {facts['flap_changes']} times in the last {window:g} s")]
    out = []
    for f in flaps[:10]:
        out.append(Finding("route-flap", Severity.WARNING, f["route"],
                           f"best path changed {f['changes']} times in the last {window:g} s "
                           f"(from {f['peer']}, next hop {f['next_hop'] or '-'})",
                           f"look at who announces it: overlayctl rib, the log of {f['peer']}"))
    if len(flaps) > 10:
        out.append(Finding("route-flap", Severity.WARNING, "rib", f"{len(flaps) - 10} more routes flapping",
                           "overlayctl doctor --json lists them all"))
    return out


def check_subnets(facts: dict[str, Any], host: Host) -> list[Finding]:
    if facts.get("routing") is None:
        return []
    conflicts = facts["subnet_conflicts"]
    if not conflicts:
        return [_ok("subnets", facts["routing"]["network"], f"{len(facts['subnets'])} subnets, none claimed "
                                                             "twice or overlapping")]
    out = []
    for c in conflicts:
        if c["reason"] == "duplicate":
            out.append(Finding("subnets", Severity.ERROR, c["prefix"], f"duplicate subnet: {c['text']}",
                               "give one of the nodes another routing.subnet (or subnet: auto)"))
        else:
            out.append(Finding("subnets", Severity.WARNING, c["prefix"], c["text"],
                               "make the nodes' routing.subnet disjoint"))
    return out


def check_kernel(facts: dict[str, Any], host: Host) -> list[Finding]:
    kernel = facts.get("kernel")
    if kernel is None:
        return []
    entries = kernel["out_of_step"]
    if not entries:
        return [_ok("kernel", "kernel", f"every route and FDB entry the tables want is in the kernel "
                                        f"({kernel['drift_repairs']} put back after changes from outside)")]
    out = []
    for e in entries[:10]:
        pending = e["state"] == "pending"
        out.append(Finding("kernel", Severity.WARNING if pending else Severity.ERROR, e["entry"],
                           f"in the RIB, not in the kernel: {e['state']}",
                           "wait a second and run doctor again" if pending
                           else "see overlayctl status (kernel errors) and the log; fix what the kernel refuses"))
    if len(entries) > 10:
        out.append(Finding("kernel", Severity.ERROR, "kernel", f"{len(entries) - 10} more entries out of step",
                           "overlayctl doctor --json lists them all"))
    return out


CHECKS = (check_mtu, check_path_mtu, check_rp_filter, check_forwarding, check_vxlan_port, check_udp_checksum,
          check_neighbors, check_flaps, check_subnets, check_kernel)


def run_checks(facts: dict[str, Any], host: Host) -> list[Finding]:
    findings = [Finding("host", Severity.WARNING, "overlayctl", problem, "run overlayctl doctor as root, on "
                        "overlayd's host and network namespace") for problem in host.problems]
    for check in CHECKS:
        findings += check(facts, host)
    return findings


def exit_status(findings: list[Finding]) -> int:
    worst = max((f.severity for f in findings), default=Severity.OK)
    if worst is Severity.ERROR:
        return EXIT_ERRORS
    return EXIT_WARNINGS if worst is Severity.WARNING else EXIT_HEALTHY


def report(facts: dict[str, Any], host: Host, findings: list[Finding]) -> dict[str, Any]:
    """`overlayctl doctor --json`."""
    counts = {s.label: sum(1 for f in findings if f.severity is s) for s in Severity}
    return {"node": facts["node"], "vtep": facts["vtep"], "findings": [f.as_dict() for f in findings],
            "counts": counts, "exit_status": exit_status(findings), "probe_bytes": host.probe_bytes}


def render(result: dict[str, Any]) -> str:
    """`overlayctl doctor`: problems first, then what is fine."""
    rows = sorted(result["findings"], key=lambda f: -Severity[f["severity"].upper()])
    cells = []
    for f in rows:
        cells.append((f["severity"].upper() if f["severity"] in ("error", "warning") else f["severity"],
                      f["check"], f["subject"], f["message"]))
        if f["fix"]:
            cells.append(("", "", "", f"fix: {f['fix']}"))
    c = result["counts"]
    verdict = {EXIT_HEALTHY: "healthy", EXIT_WARNINGS: "warnings", EXIT_ERRORS: "errors"}[result["exit_status"]]
    tail = ", ".join(f"{c[key]} {word}{'' if c[key] == 1 else 's'}"
                     for key, word in (("error", "error"), ("warning", "warning"), ("info", "note")))
    tail += f", {c['ok']} ok: {verdict}"
    head = f"doctor: node {result['node']}, vtep {result['vtep']}"
    return "\n".join([head, "", table(("SEVERITY", "CHECK", "SUBJECT", "FINDING"), cells), "", tail])
