"""Services (VIP:port -> healthy backends) as nftables rules for the kernel backends, without I/O.

The layout of kube-proxy's nftables mode, in overlayd's own table
(`inet overlayd`, next to `ipmasq`'s chain), both address families in it:

    nat-prerouting   (nat, prerouting, dstnat)  jump services       traffic from pods and other hosts
    nat-output       (nat, output, dstnat)      jump services       traffic from the node itself
    services         ip daddr . meta l4proto . th dport vmap @service-ips4
                     ip6 daddr . meta l4proto . th dport vmap @service-ips6
    map service-ips4 { VIP . tcp . 80 : goto service-web/tcp/80, ... }       (and service-ips6)
    service-web/tcp/80
                     ip saddr != { cluster networks } jump mark-for-masquerade
                     ip saddr @affinity-web/tcp/80__10.244.1.5/8080 goto endpoint-...   (client-ip affinity)
                     numgen random mod 3 vmap { 0 : goto endpoint-..., 1 : ..., 2 : ... }
    endpoint-web/tcp/80__10.244.1.5/8080
                     ip saddr 10.244.1.0/24 jump mark-for-masquerade    (a backend on this node:
                                                 the node's pod subnet; elsewhere: the backend itself)
                     update @affinity-web/tcp/80__10.244.1.5/8080 { ip saddr }       (client-ip affinity)
                     meta l4proto tcp dnat ip to 10.244.1.5:8080
    nat-postrouting  (nat, postrouting, srcnat) jump masquerading
    masquerading     meta mark & MARK == 0 return; meta mark set meta mark ^ MARK; masquerade fully-random

Hairpin: a backend reaching its own VIP and landing on itself, or a client on
the node of its backend, would get the reply straight from the backend (on
the same bridge, past the rewrite). The endpoint chain marks such traffic,
and postrouting masquerades it to the node's address, so the reply comes
back through the node and conntrack reverses both rewrites (DECISIONS,
services). Traffic from outside the cluster networks (the node itself, an
outside router) is masqueraded for the same reason, as kube-proxy does.

A service without a healthy backend has no chains; its VIP:port is in
`no-endpoint-services4/6`, checked for new connections in the forward and
output paths (`reject` is not allowed in prerouting before Linux 5.9):
TCP gets a reset, anything else ICMP port unreachable, at once.

Client-ip affinity uses kube-proxy's per-backend sets of client addresses
with a timeout: a client seen recently on a backend goes back to it; the
entry is refreshed at each new connection.

Chains are named after the service (`service-NAME/PROTO/PORT`) and the
backend (`endpoint-NAME/PROTO/PORT__IP/PORT`, IPv6 colons as dots), so a
change of one backend touches that service's chains and nothing else.
`table(services, ...)` returns this part of the table (empty for no
services); `nft.merge` joins it with `masq.table(...)`, and `nft.diff`
gives the commands.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from overlayd.kernel.nft import Chain, Hook, Map, Rule, Set, Table

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network

MASQ_MARK = 0x4000  # the bit "masquerade this" (kube-proxy's default, and the same meaning)
DEFAULT_AFFINITY_TIMEOUT_S = 10800
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")

SERVICES = "services"
MARK_MASQ = "mark-for-masquerade"
MASQUERADING = "masquerading"
ENDPOINTS_CHECK = "endpoints-check"
REJECT = "reject-chain"
SERVICE_IPS = {4: "service-ips4", 6: "service-ips6"}
NO_ENDPOINTS = {4: "no-endpoint-services4", 6: "no-endpoint-services6"}
DSTNAT, SRCNAT = -100, 100
BASE_CHAINS = {
    "nat-prerouting": (Hook("nat", "prerouting", DSTNAT), SERVICES),
    "nat-output": (Hook("nat", "output", DSTNAT), SERVICES),
    "nat-postrouting": (Hook("nat", "postrouting", SRCNAT), MASQUERADING),
    # before DNAT, as kube-proxy: a VIP without backends is still the destination here
    "filter-forward": (Hook("filter", "forward", DSTNAT - 10), ENDPOINTS_CHECK),
    "filter-output": (Hook("filter", "output", DSTNAT - 10), ENDPOINTS_CHECK),
}


class Endpoint(NamedTuple):
    """A healthy backend: address and port."""

    ip: IpAddress
    port: int

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.ip.version == 6 else f"{self.ip}:{self.port}"


@dataclass(frozen=True)
class Service:
    """One service as the kernel should serve it now: `backends` are the healthy ones only.

    Addresses may be given as strings and backends as (ip, port) pairs; they are
    normalised. ValueError names the field that is wrong.
    """

    name: str
    vip: IpAddress
    port: int
    protocol: Literal["tcp", "udp"] = "tcp"
    backends: tuple[Endpoint, ...] = ()
    affinity: Literal["none", "client-ip"] = "none"
    affinity_timeout_s: float = DEFAULT_AFFINITY_TIMEOUT_S

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise ValueError(f"name: {self.name!r} is not a service name")
        vip = ipaddress.ip_address(self.vip)
        object.__setattr__(self, "vip", vip)
        if not 1 <= self.port <= 65535:
            raise ValueError(f"{self.name}: port {self.port} is not 1-65535")
        if self.protocol not in ("tcp", "udp"):
            raise ValueError(f"{self.name}: protocol {self.protocol!r} is not tcp or udp")
        if self.affinity not in ("none", "client-ip"):
            raise ValueError(f"{self.name}: affinity {self.affinity!r} is not none or client-ip")
        if not self.affinity_timeout_s > 0:
            raise ValueError(f"{self.name}: affinity_timeout_s must be positive")
        backends = []
        for ip, port in self.backends:
            b = Endpoint(ipaddress.ip_address(ip), int(port))
            if b.ip.version != vip.version:
                raise ValueError(f"{self.name}: backend {b} is IPv{b.ip.version}, the VIP IPv{vip.version}")
            if not 1 <= b.port <= 65535:
                raise ValueError(f"{self.name}: backend {b}: port is not 1-65535")
            backends.append(b)
        if len(set(backends)) != len(backends):
            raise ValueError(f"{self.name}: a backend is listed twice")
        # sorted: the plan does not depend on the order health reports come in
        object.__setattr__(self, "backends", tuple(sorted(backends, key=lambda b: (int(b.ip), b.port))))

    @property
    def key(self) -> tuple[IpAddress, str, int]:
        return (self.vip, self.protocol, self.port)


# -- names -------------------------------------------------------------------------------------


def _base(s: Service) -> str:
    return f"{s.name}/{s.protocol}/{s.port}"


def _endpoint_base(s: Service, b: Endpoint) -> str:
    return f"{_base(s)}__{str(b.ip).replace(':', '.')}/{b.port}"


def service_chain(s: Service) -> str:
    return f"service-{_base(s)}"


def endpoint_chain(s: Service, b: Endpoint) -> str:
    return f"endpoint-{_endpoint_base(s, b)}"


def affinity_set(s: Service, b: Endpoint) -> str:
    return f"affinity-{_endpoint_base(s, b)}"


# -- expressions -------------------------------------------------------------------------------


def _ipx(version: int) -> str:
    return "ip" if version == 4 else "ip6"


def _saddr(version: int) -> dict[str, Any]:
    return {"payload": {"protocol": _ipx(version), "field": "saddr"}}


def _prefix(p: Prefix) -> Any:
    if p.prefixlen == p.max_prefixlen:
        return str(p.network_address)
    return {"prefix": {"addr": str(p.network_address), "len": p.prefixlen}}


def _goto(chain: str) -> dict[str, Any]:
    return {"goto": {"target": chain}}


def _jump(chain: str) -> dict[str, Any]:
    return {"jump": {"target": chain}}


def _dispatch(version: int, data: str) -> Rule:
    key = {"concat": [{"payload": {"protocol": _ipx(version), "field": "daddr"}},
                      {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}
    return ({"vmap": {"key": key, "data": f"@{data}"}},)


def _mark(mark: int, op: str) -> dict[str, Any]:
    return {"mangle": {"key": {"meta": {"key": "mark"}}, "value": {op: [{"meta": {"key": "mark"}}, mark]}}}


# -- the plan ----------------------------------------------------------------------------------


def _common(mark: int) -> dict[str, Chain]:
    """The chains every service shares (kube-proxy's base and helper chains)."""
    chains = {name: Chain(((_jump(target),) if hook.type == "nat" else
                           ({"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": "new"}}, _jump(target)),),
                          hook)
              for name, (hook, target) in BASE_CHAINS.items()}
    chains[SERVICES] = Chain((_dispatch(4, SERVICE_IPS[4]), _dispatch(6, SERVICE_IPS[6])))
    chains[ENDPOINTS_CHECK] = Chain((_dispatch(4, NO_ENDPOINTS[4]), _dispatch(6, NO_ENDPOINTS[6])))
    chains[MARK_MASQ] = Chain(((_mark(mark, "|"),),))
    chains[MASQUERADING] = Chain((
        ({"match": {"op": "==", "left": {"&": [{"meta": {"key": "mark"}}, mark]}, "right": 0}}, {"return": None}),
        (_mark(mark, "^"),),
        ({"masquerade": {"flags": "fully-random"}},),
    ))
    chains[REJECT] = Chain((
        ({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"reject": {"type": "tcp reset"}}),
        ({"reject": {"type": "icmpx", "expr": "port-unreachable"}},),
    ))
    return chains


def _service_chain(s: Service, cluster: list[Prefix]) -> Chain:
    v = s.vip.version
    rules: list[Rule] = []
    outside = [p for p in cluster if p.version == v]
    if outside:
        right = _prefix(outside[0]) if len(outside) == 1 else {"set": [_prefix(p) for p in outside]}
        rules.append(({"match": {"op": "!=", "left": _saddr(v), "right": right}}, _jump(MARK_MASQ)))
    if s.affinity == "client-ip":
        for b in s.backends:
            rules.append(({"match": {"op": "==", "left": _saddr(v), "right": f"@{affinity_set(s, b)}"}},
                          _goto(endpoint_chain(s, b))))
    choices = [[i, _goto(endpoint_chain(s, b))] for i, b in enumerate(s.backends)]
    rules.append(({"vmap": {"key": {"numgen": {"mode": "random", "mod": len(choices), "offset": 0}},
                            "data": {"set": choices}}},))
    return Chain(tuple(rules))


def _endpoint_chain(s: Service, b: Endpoint, local: list[Prefix]) -> Chain:
    v = b.ip.version
    # hairpin: from the backend itself, or from any pod of this node when the backend is one
    home = next((p for p in local if p.version == v and b.ip in p), None)
    source = _prefix(home) if home is not None else str(b.ip)
    rules: list[Rule] = [({"match": {"op": "==", "left": _saddr(v), "right": source}}, _jump(MARK_MASQ))]
    if s.affinity == "client-ip":
        rules.append(({"set": {"op": "update", "elem": _saddr(v), "set": f"@{affinity_set(s, b)}"}},))
    rules.append(({"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": s.protocol}},
                  {"dnat": {"family": _ipx(v), "addr": str(b.ip), "port": b.port}}))
    return Chain(tuple(rules))


def table(services: Iterable[Service], node_subnets: Iterable[Prefix] = (),
          cluster_networks: Iterable[Prefix] = (), mark: int = MASQ_MARK) -> Table:
    """The services' part of `inet overlayd`.

    services          each with its healthy backends (none: its VIP:port is rejected)
    node_subnets      this node's pod subnets: a client there reaching a backend there is masqueraded
    cluster_networks  the pod networks: a client outside them is masqueraded (the node, a router)
    mark              the packet mark bit that asks postrouting to masquerade

    No services: an empty part (the table holds ipmasq's chain alone, if that).
    ValueError if two services share a VIP:port:protocol or a name, port and protocol.
    """
    services = list(services)
    if not services:
        return Table()
    local, cluster = list(node_subnets), list(cluster_networks)
    chains = _common(mark)
    sets: dict[str, Set] = {}
    elements: dict[str, dict] = {name: {} for name in (*SERVICE_IPS.values(), *NO_ENDPOINTS.values())}
    keys: dict[tuple, str] = {}
    for s in services:
        if s.key in keys:
            raise ValueError(f"{s.name}: {s.vip} {s.protocol} {s.port} is also service {keys[s.key]}")
        keys[s.key] = s.name
        if service_chain(s) in chains:
            raise ValueError(f"{s.name}: two services named {s.name} with {s.protocol} port {s.port}")
        key = (str(s.vip), s.protocol, s.port)
        v = s.vip.version
        if not s.backends:
            elements[NO_ENDPOINTS[v]][key] = _goto(REJECT)
            continue
        elements[SERVICE_IPS[v]][key] = _goto(service_chain(s))
        chains[service_chain(s)] = _service_chain(s, cluster)
        for b in s.backends:
            chains[endpoint_chain(s, b)] = _endpoint_chain(s, b, local)
            if s.affinity == "client-ip":
                # ("dynamic", which the kernel adds itself, is refused by nft 1.0.6's JSON)
                sets[affinity_set(s, b)] = Set(f"ipv{v}_addr", ("timeout",),
                                               max(1, math.ceil(s.affinity_timeout_s)))
    maps = {name: Map((f"ipv{4 if name.endswith('4') else 6}_addr", "inet_proto", "inet_service"), elements[name])
            for name in elements}
    return Table(chains, sets, maps)
