"""Run GoBGP (`gobgpd` + the `gobgp` CLI) in a lab host, as a BGP EVPN or unicast peer or route reflector.

    from tools.gobgp import Neighbor, start_gobgpd

    rr = start_gobgpd(host, asn=65000, neighbors=[
        Neighbor("10.0.0.1", 65000, rr_client=True),
        Neighbor("10.0.0.2", 65000, rr_client=True),
    ])
    rr.neighbor_state("10.0.0.1")      # "established", "active", ... (None: not configured)
    rr.routes()                         # the EVPN RIB, one flat dict per path (see `summarize`)
    rr.add_macadv("02:00:00:00:00:04", "192.168.100.4", vni=100, rd="10.0.0.4:100",
                  rt="65000:100", next_hop="10.0.0.4")
    rr.add_multicast("10.0.0.4", vni=100, rd="10.0.0.4:100", rt="65000:100", next_hop="10.0.0.4")
    rr.add_prefix("10.244.9.0/24", vni=1, rd="10.0.0.4:1", rt="65000:1",
                  router_mac="02:00:00:00:09:04", next_hop="10.0.0.4")
    rr.delete_macadv(...); rr.delete_multicast(...); rr.delete_prefix(...)
    rr.stop()

    router = start_gobgpd(host, asn=65000, neighbors=[
        Neighbor("10.0.0.1", 65000, families=("ipv4-unicast", "ipv6-unicast")),
    ])
    router.unicast_routes("ipv4")       # {prefix: [flat dict per path]} (see `summarize_unicast`)
    router.add_unicast("192.0.2.0/24", next_hop="10.0.0.99")
    router.delete_unicast("192.0.2.0/24")

The generated config (TOML, kept in the lab's temporary directory next to the
log) holds the global AS, router ID, BGP port and listen addresses, and one
neighbor entry per `Neighbor` with its AFI/SAFIs (`families`, GoBGP's names:
l2vpn-evpn by default, ipv4-unicast, ipv6-unicast), short timers
(hold time 9 s, keepalive 3 s, connect retry 1 s, so sessions come up and
fail fast in tests) and, when asked, route-reflector-client with this
router's ID as cluster ID, a TCP MD5 password (`auth-password`) and GTSM
(`ttl-security`, `ttl-min` 255). Neighbors marked `adj_in_only` are named in a
global import policy that rejects their routes: gobgpd keeps them in that
neighbor's Adj-RIB-In (`adj_in_count`) and never in its RIB. That is for
benchmarks: GoBGP 3.10 scans its whole EVPN RIB for every type-2 route it
puts there (`handleMacMobility`), so learning N of them takes O(N^2) time
(20k routes: about 40 s here; 35k: three minutes). gobgpd's gRPC API listens on 127.0.0.1:`api_port`
inside the host's namespace (each namespace has its own loopback, so labs
never see each other's); pprof is off. Every `gobgp` call runs in the same
namespace against that API.

Syntax found by `gobgp global rib -a evpn add` (GoBGP 3.10):

    macadv <mac> <ip> etag <etag> label <label> rd <rd> [rt <rt>...] [encap vxlan] nexthop <addr>
    multicast <ip> etag <etag> rd <rd> [rt <rt>...] [encap vxlan]
              [pmsi ingress-repl <label> <tunnel-id>] nexthop <addr>
    prefix <ip prefix> [gw <gateway>] [esi <esi>] etag <etag> [label <label>] rd <rd>
           [rt <rt>...] [encap vxlan] [router-mac <mac>] nexthop <addr>

and `del` takes the same NLRI part (mac, ip, etag, label, rd / ip, etag, rd /
prefix, gw, etag, label, rd).
A MAC-only type-2 route is spelled with IP 0.0.0.0 (GoBGP shows it as "<nil>").
For VXLAN the label is the VNI (RFC 8365 5.1.3): GoBGP puts the number in
all 24 bits of the label field, as overlayd and FRR do. A type-5 (IP prefix,
RFC 9136) route is the L3 VNI's: label = the L3 VNI, gateway 0.0.0.0 (the
next hop is the VTEP itself), and the router's MAC extended community (RFC
9135) names the MAC to put as the inner destination; GoBGP's JSON shows the
label as "label" (one number, not a "labels" list) and the community as
{"type": 6, "subtype": 3, "mac": ...}.

After `gobgp neighbor ADDR reset` gobgpd stayed Idle for 30 s: 3.10 did not
apply `idle-hold-time-after-reset` from the config file, so it is not set.
Tests here never reset a session they still need.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import subprocess
from dataclasses import dataclass
from typing import Any

from tools.lab import Host, wait_for

READY_TIMEOUT_S = 15.0
GOBGPD = "gobgpd"
GOBGP = "gobgp"

# BGP path attribute type codes and extended community (type, subtype) pairs used below.
ATTR_ORIGIN, ATTR_AS_PATH, ATTR_NEXT_HOP, ATTR_LOCAL_PREF = 1, 2, 3, 5
ATTR_MP_REACH, ATTR_EXT_COMMUNITIES, ATTR_PMSI = 14, 16, 22
ATTR_ORIGINATOR_ID, ATTR_CLUSTER_LIST = 9, 10
EC_ROUTE_TARGET = (0, 2)  # two-octet AS specific route target
EC_ENCAPSULATION = (3, 12)  # opaque, BGP encapsulation (RFC 9012); tunnel type 8 = VXLAN
EC_ROUTER_MAC = (6, 3)  # EVPN, router's MAC (RFC 9135 8.1)
# `gobgp neighbor -j` gives the state as the number of its gRPC enum (apipb.PeerState.SessionState).
ADJ_IN_ONLY = "adj-in-only"  # the neighbor set and import policy of Neighbor.adj_in_only
SESSION_STATES = {0: "unknown", 1: "idle", 2: "connect", 3: "active", 4: "opensent",
                  5: "openconfirm", 6: "established"}


@dataclass(frozen=True)
class Neighbor:
    """One BGP neighbor of gobgpd."""

    address: str
    asn: int
    rr_client: bool = False  # reflect iBGP routes to and from it (RFC 4456)
    passive: bool = False  # wait for it to connect
    port: int = 179  # its BGP port
    adj_in_only: bool = False  # its routes stay in its Adj-RIB-In: the global import policy rejects them
    families: tuple[str, ...] = ("l2vpn-evpn",)  # GoBGP's afi-safi-names, as overlayd's `families` spells them
    password: str | None = None  # TCP MD5 signatures with this key (auth-password)
    ttl_security: bool = False  # GTSM: TTL 255 out, at least 255 in (ttl-security, ttl-min 255)


def config_toml(asn: int, router_id: str, listen: list[str], port: int,
                neighbors: list[Neighbor], hold_time: int = 9) -> str:
    """gobgpd's config file for this router."""

    def q(s: str) -> str:
        return json.dumps(s)  # a TOML basic string

    lines = [
        "[global.config]",
        f"  as = {asn}",
        f"  router-id = {q(router_id)}",
        f"  port = {port}",
        f"  local-address-list = [{', '.join(q(a) for a in listen)}]",
    ]
    adj_in_only = [nb.address for nb in neighbors if nb.adj_in_only]
    if adj_in_only:
        lines += [
            "[global.apply-policy.config]",
            f"  import-policy-list = [{q(ADJ_IN_ONLY)}]",
            '  default-import-policy = "accept-route"',
            "",
            "[[defined-sets.neighbor-sets]]",
            f"  neighbor-set-name = {q(ADJ_IN_ONLY)}",
            f"  neighbor-info-list = [{', '.join(q(a) for a in adj_in_only)}]",
            "",
            "[[policy-definitions]]",
            f"  name = {q(ADJ_IN_ONLY)}",
            "  [[policy-definitions.statements]]",
            f"    name = {q(ADJ_IN_ONLY)}",
            "    [policy-definitions.statements.conditions.match-neighbor-set]",
            f"      neighbor-set = {q(ADJ_IN_ONLY)}",
            "    [policy-definitions.statements.actions]",
            '      route-disposition = "reject-route"',
        ]
    for nb in neighbors:
        lines += [
            "",
            "[[neighbors]]",
            "  [neighbors.config]",
            f"    neighbor-address = {q(nb.address)}",
            f"    peer-as = {nb.asn}",
            *([f"    auth-password = {q(nb.password)}"] if nb.password is not None else []),
            "  [neighbors.timers.config]",
            f"    hold-time = {hold_time}",
            f"    keepalive-interval = {max(1, hold_time // 3)}",
            "    connect-retry = 1",
            "  [neighbors.transport.config]",
            f"    passive-mode = {str(nb.passive).lower()}",
            f"    remote-port = {nb.port}",
        ]
        local = [a for a in listen if ipaddress.ip_address(a).version
                 == ipaddress.ip_address(nb.address).version]
        if local:
            lines.append(f"    local-address = {q(local[0])}")
        if nb.ttl_security:
            lines += [
                "  [neighbors.ttl-security.config]",
                "    enabled = true",
                "    ttl-min = 255",
            ]
        if nb.rr_client:
            lines += [
                "  [neighbors.route-reflector.config]",
                "    route-reflector-client = true",
                f"    route-reflector-cluster-id = {q(router_id)}",
            ]
        for family in nb.families:
            lines += [
                "  [[neighbors.afi-safis]]",
                "    [neighbors.afi-safis.config]",
                f"      afi-safi-name = {q(family)}",
            ]
    return "\n".join(lines) + "\n"


class GoBgp:
    def __init__(self, host: Host, config: str, api_port: int, log_level: str):
        self.host = host
        self.api_port = api_port
        self.config_path = host.lab.tmpdir / f"{host.name}-gobgpd.toml"
        self.config_path.write_text(config)
        self.proc = host.popen(GOBGPD, "-f", str(self.config_path), "-t", "toml", "-p",
                               "-l", log_level, "--api-hosts", f"127.0.0.1:{api_port}",
                               "--pprof-disable")

    def log(self) -> str:
        return self.host.log(self.proc)

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run `gobgp ARGS` in the host against this gobgpd."""
        return self.host.run(GOBGP, "-u", "127.0.0.1", "-p", str(self.api_port), *args,
                             check=check)

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"gobgpd on {self.host.name} exited {self.proc.returncode}:\n"
                                   f"{self.log()}")
            return self.cli("global", "-j", check=False).returncode == 0

        wait_for(ready, timeout, interval=0.2, what=f"gobgpd on {self.host.name} to answer")

    # -- reading -----------------------------------------------------------------

    def rib(self) -> dict[str, list[dict[str, Any]]]:
        """`gobgp global rib -a evpn -j`: prefix text -> the paths GoBGP holds for it."""
        out = self.cli("global", "rib", "-a", "evpn", "-j").stdout.strip()
        return json.loads(out) if out.startswith("{") else {}

    def unicast_routes(self, family: str = "ipv4") -> dict[str, list[dict[str, Any]]]:
        """`gobgp global rib -a ipv4|ipv6 -j`: prefix -> its paths, each flattened by `summarize_unicast`."""
        out = self.cli("global", "rib", "-a", family, "-j").stdout.strip()
        rib = json.loads(out) if out.startswith("{") else {}
        return {prefix: [summarize_unicast(path) for path in paths] for prefix, paths in rib.items()}

    def routes(self) -> list[dict[str, Any]]:
        """Every path of `rib()`, flattened by `summarize`."""
        return [summarize(prefix, path) for prefix, paths in self.rib().items() for path in paths]

    def neighbors(self) -> list[dict[str, Any]]:
        """`gobgp neighbor -j`."""
        return json.loads(self.cli("neighbor", "-j").stdout or "[]")

    def adj_in_count(self, address: str) -> int | None:
        """How many EVPN routes gobgpd holds from a neighbor (its Adj-RIB-In, import
        policy not applied; None: not configured)."""
        for nb in self.neighbors():
            if nb["conf"]["neighbor_address"] == address:
                return sum(f.get("state", {}).get("received", 0) for f in nb.get("afi_safis", [])
                           if f.get("state", {}).get("family") == {"afi": 25, "safi": 70})
        return None

    def neighbor_state(self, address: str) -> str | None:
        """The session state of a neighbor in BGP's words ("established", "active", ...)."""
        for nb in self.neighbors():
            if nb["conf"]["neighbor_address"] == address:
                state = nb.get("state", {}).get("session_state", 0)
                return SESSION_STATES.get(state, str(state).lower())
        return None

    # -- writing -----------------------------------------------------------------

    def add_macadv(self, mac: str, ip: str | None, vni: int, rd: str, rt: str, next_hop: str,
                   etag: int = 0) -> None:
        """Originate a type-2 (MAC/IP advertisement) route, encapsulation VXLAN, label = VNI;
        ip None: a MAC-only route."""
        self.cli("global", "rib", "-a", "evpn", "add", *self._macadv(mac, ip, vni, rd, etag),
                 "rt", rt, "encap", "vxlan", "nexthop", next_hop)

    def delete_macadv(self, mac: str, ip: str | None, vni: int, rd: str, etag: int = 0) -> None:
        self.cli("global", "rib", "-a", "evpn", "del", *self._macadv(mac, ip, vni, rd, etag))

    def add_multicast(self, ip: str, vni: int, rd: str, rt: str, next_hop: str,
                      etag: int = 0) -> None:
        """Originate a type-3 (inclusive multicast) route with a PMSI tunnel: ingress
        replication to `ip`, label = VNI."""
        self.cli("global", "rib", "-a", "evpn", "add", "multicast", ip, "etag", str(etag),
                 "rd", rd, "rt", rt, "encap", "vxlan", "pmsi", "ingress-repl", str(vni), ip,
                 "nexthop", next_hop)

    def delete_multicast(self, ip: str, rd: str, etag: int = 0) -> None:
        self.cli("global", "rib", "-a", "evpn", "del", "multicast", ip, "etag", str(etag),
                 "rd", rd)

    def add_prefix(self, prefix: str, vni: int, rd: str, rt: str, router_mac: str | None,
                   next_hop: str, gateway: str | None = None, etag: int = 0) -> None:
        """Originate a type-5 (IP prefix) route, encapsulation VXLAN, label = the L3 VNI,
        with the router's MAC extended community (none when router_mac is None); gateway
        None: the all-zeros address of the prefix's family (the next hop is the VTEP)."""
        self.cli("global", "rib", "-a", "evpn", "add", *self._prefix(prefix, gateway, vni, rd, etag),
                 "rt", rt, "encap", "vxlan", *(["router-mac", router_mac] if router_mac else []),
                 "nexthop", next_hop)

    def delete_prefix(self, prefix: str, vni: int, rd: str, gateway: str | None = None,
                      etag: int = 0) -> None:
        self.cli("global", "rib", "-a", "evpn", "del", *self._prefix(prefix, gateway, vni, rd, etag))

    def add_unicast(self, prefix: str, next_hop: str) -> None:
        """Originate an IPv4 or IPv6 unicast route (the family is the prefix's)."""
        self.cli("global", "rib", "-a", _unicast_family(prefix), "add", prefix, "nexthop", next_hop)

    def delete_unicast(self, prefix: str) -> None:
        self.cli("global", "rib", "-a", _unicast_family(prefix), "del", prefix)

    @staticmethod
    def _prefix(prefix: str, gateway: str | None, vni: int, rd: str, etag: int) -> list[str]:
        if gateway is None:
            gateway = "::" if ipaddress.ip_network(prefix, strict=False).version == 6 else "0.0.0.0"
        return ["prefix", prefix, "gw", gateway, "etag", str(etag), "label", str(vni), "rd", rd]

    @staticmethod
    def _macadv(mac: str, ip: str | None, vni: int, rd: str, etag: int) -> list[str]:
        return ["macadv", mac, ip or "0.0.0.0", "etag", str(etag), "label", str(vni), "rd", rd]

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def summarize(prefix: str, path: dict[str, Any]) -> dict[str, Any]:
    """One path of GoBGP's JSON as a flat dict:

    prefix, type (2, 3, 5, ...), rd ("10.0.0.1:100"), etag, mac, ip (None when the route
    has none; GoBGP says "<nil>"), labels (type 5: GoBGP's one "label", as a list),
    ip_prefix and gateway (type 5, else None), next_hop,
    route_targets (["65000:100"]), tunnel_types ([8] = VXLAN), router_macs (["02:..."],
    RFC 9135), pmsi (GoBGP's PMSI attribute dict or None), originator_id,
    cluster_list, best, raw (the path)
    """
    nlri = path["nlri"]["value"]
    rd = nlri.get("rd", {})
    attrs = {a["type"]: a for a in path.get("attrs", [])}
    ext = attrs.get(ATTR_EXT_COMMUNITIES, {}).get("value", [])
    next_hop = attrs.get(ATTR_MP_REACH, attrs.get(ATTR_NEXT_HOP, {})).get("nexthop")
    return {
        "prefix": prefix,
        "type": path["nlri"]["type"],
        "rd": f"{rd.get('admin')}:{rd.get('assigned')}" if rd else None,
        "etag": nlri.get("etag"),
        "mac": nlri.get("mac"),
        "ip": None if nlri.get("ip") in (None, "<nil>") else nlri["ip"],
        "labels": nlri.get("labels", [nlri["label"]] if "label" in nlri else None),
        "ip_prefix": nlri.get("prefix"),
        "gateway": nlri.get("gateway"),
        "next_hop": next_hop,
        "route_targets": [c["value"] for c in ext if (c["type"], c["subtype"]) == EC_ROUTE_TARGET],
        "tunnel_types": [c["tunnel_type"] for c in ext
                         if (c["type"], c["subtype"]) == EC_ENCAPSULATION],
        "router_macs": [c["mac"] for c in ext if (c["type"], c["subtype"]) == EC_ROUTER_MAC],
        "pmsi": attrs.get(ATTR_PMSI),
        "originator_id": attrs.get(ATTR_ORIGINATOR_ID, {}).get("value"),
        "cluster_list": attrs.get(ATTR_CLUSTER_LIST, {}).get("value"),
        "best": path.get("best", False),
        "raw": path,
    }


def _unicast_family(prefix: str) -> str:
    return "ipv6" if ipaddress.ip_network(prefix, strict=False).version == 6 else "ipv4"


def summarize_unicast(path: dict[str, Any]) -> dict[str, Any]:
    """One path of GoBGP's unicast JSON as a flat dict: prefix, next_hop (NEXT_HOP's or
    MP_REACH_NLRI's), as_path (the ASes in order), local_pref (None when absent), origin,
    best, neighbor (the peer it came from; GoBGP says "<nil>" for its own), raw."""
    attrs = {a["type"]: a for a in path.get("attrs", [])}
    segments = attrs.get(ATTR_AS_PATH, {}).get("as_paths", [])
    return {
        "prefix": path["nlri"]["prefix"],
        "next_hop": attrs.get(ATTR_MP_REACH, attrs.get(ATTR_NEXT_HOP, {})).get("nexthop"),
        "as_path": [asn for seg in segments for asn in seg.get("asns", [])],
        "local_pref": attrs.get(ATTR_LOCAL_PREF, {}).get("value"),
        "origin": attrs.get(ATTR_ORIGIN, {}).get("value"),
        "best": path.get("best", False),
        "neighbor": path.get("neighbor-ip"),
        "raw": path,
    }


def start_gobgpd(host: Host, asn: int, neighbors: list[Neighbor], router_id: str | None = None,
                 listen: list[str] | None = None, port: int = 179, api_port: int = 50051,
                 hold_time: int = 9, log_level: str = "debug", wait: bool = True) -> GoBgp:
    """Start gobgpd in `host`. Router ID and listen address default to the host's IPv4
    address; `wait` returns once its API answers (sessions may still be coming up)."""
    router_id = router_id or host.v4
    if router_id is None:
        raise ValueError(f"{host.name} has no IPv4 address: give router_id")
    if listen is None:
        listen = [a for a in (host.v4, host.v6) if a]
    gobgp = GoBgp(host, config_toml(asn, router_id, listen, port, neighbors, hold_time),
                  api_port, log_level)
    if wait:
        gobgp.wait_ready()
    return gobgp
