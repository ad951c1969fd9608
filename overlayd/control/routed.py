"""Routed subnets over EVPN type-5 (RFC 9136), without I/O.

This node announces its pod subnet(s) as IP prefix routes: label = the L3
VNI, next hop = our VTEP, route target from `routing:`, and how the backend
takes traffic: VXLAN (the Encapsulation extended community, RFC 9012, and
the router's MAC, RFC 9135: userspace and kernel), IP in IP (ipip), or no
encapsulation (host-gw and native: route to our next hop directly). Every type-5 route received for
that route target goes into the subnet table (`fabric.prefixes`), which the
routed data plane looks destinations up in. With `subnet: auto` a
`SubnetLease` picks our subnet and moves it when a node with a lower router
ID claims the same one.

The speaker calls `routes()` to learn what to announce, `best_path_changed`
for every type-5 change of its RIB, and reads `moved` (our subnet changed:
withdraw the old routes, announce the new, and the daemon re-addresses the
device and rewrites subnet.env).
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass

from overlayd.config import Config
from overlayd.fabric.fdb import Source
from overlayd.fabric.prefixes import Conflict, PrefixEntry, PrefixTable, conflicts
from overlayd.fabric.rib import BestPathChanged, Path
from overlayd.fabric.subnets import (
    NetworkExhausted,
    SubnetChosen,
    SubnetCollisionLost,
    SubnetCollisionWon,
    SubnetLease,
)
from overlayd.wire.bgp.attributes import (
    TUNNEL_TYPE_IPIP,
    TUNNEL_TYPE_VXLAN,
    Encapsulation,
    PathAttributes,
    RouteTarget,
    RouterMac,
)
from overlayd.wire.bgp.evpn import PrefixRoute, RouteDistinguisher
from overlayd.wire.ethernet import mac_str

log = logging.getLogger("overlayd.routing")

Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network


def default_router_mac(router_id: ipaddress.IPv4Address) -> bytes:
    """A locally administered unicast MAC made of the router ID: 02:00:<router ID>."""
    return b"\x02\x00" + router_id.packed


@dataclass(frozen=True)
class SubnetMoved:
    """Our subnets changed from `old` to `new` (auto allocation lost a collision, or first chosen)."""

    old: tuple[Prefix, ...]
    new: tuple[Prefix, ...]


class RoutedSubnets:
    def __init__(self, config: Config, table: PrefixTable, now: float, preferred: Prefix | None = None):
        r = config.routing
        assert r is not None
        self.routing = r
        self.vni = r.vni
        self.router_id = config.router_id
        self.node = str(self.router_id)
        self.vtep = config.node.vtep
        self.router_mac = bytes.fromhex(r.router_mac.replace(":", "")) if r.router_mac else default_router_mac(
            self.router_id
        )
        self.rd = RouteDistinguisher.for_vtep(self.router_id, r.vni if r.vni <= 0xFFFF else 0xFFFF)
        self.route_target = RouteTarget.parse(config.route_target_for(r))
        self.encap = ENCAP_OF_BACKEND[r.backend]
        self.table = table
        self.networks = (r.network, r.network6)
        self.alarms: list[str] = []
        # The imported type-5 routes behind each BGP candidate of the table: the table keeps one
        # per (prefix, node), the RIB one per route key (RD, tag, prefix); see `_settle`.
        self._imported: dict[tuple[Prefix, str], dict[tuple, PrefixEntry]] = {}
        self.moved: list[SubnetMoved] = []
        self.lease: SubnetLease | None = None
        if r.subnet == "auto":
            self.lease = SubnetLease(r.network, r.prefix_length, self.router_id, preferred=preferred)
            first = self.lease.choose(())
            log.info("routing: subnet auto: chose %s of %s", first, r.network)
            self.subnets: tuple[Prefix, ...] = (first,)
        else:
            self.subnets = (r.subnet,)
        self.subnet6 = r.subnet6  # static; only the main subnet may be `auto`
        if r.subnet6 is not None:
            self.subnets += (r.subnet6,)
        self._install_local(now)

    # -- what we announce ------------------------------------------------------------

    def routes(self) -> list[tuple[PrefixRoute, PathAttributes]]:
        """Our subnets as type-5 routes. The encapsulation says how our backend takes traffic:
        VXLAN with our router MAC (userspace, kernel), IP in IP (ipip), or none at all
        (host-gw, native: send it to our underlay address as it is)."""
        ext: tuple = (self.route_target,)
        if self.encap == "vxlan":
            ext += (Encapsulation(), RouterMac(self.router_mac))
        elif self.encap == "ipip":
            ext += (Encapsulation(TUNNEL_TYPE_IPIP),)
        attrs = PathAttributes(next_hop=self.vtep, ext_communities=ext)
        return [(PrefixRoute(self.rd, subnet, vni=self.vni), attrs) for subnet in self.subnets]

    def imports(self, path: Path) -> bool:
        """Whether a received path is a type-5 route of our routed network."""
        return isinstance(path.route, PrefixRoute) and any(
            str(rt) == str(self.route_target) for rt in path.attributes.route_targets()
        )

    # -- what we receive -----------------------------------------------------------------

    def best_path_changed(self, change: BestPathChanged, now: float) -> None:
        old, new = change.old, change.new
        slots: dict[tuple[Prefix, str], None] = {}
        if old is not None and not old.is_local and self.imports(old):
            slot = (ipaddress.ip_network(old.route.prefix), str(old.router_id))
            self._imported.get(slot, {}).pop(old.key, None)
            slots[slot] = None
        if new is not None and not new.is_local and self.imports(new):
            family = new.route.prefix.version
            if not any(n is not None and n.version == family for n in self.networks):
                log.debug("routing: %s from %s: no IPv%d cluster network here; not imported",
                          new.route.prefix, new.peer, family)
                return
            entry = self._entry(new)
            if entry is not None:
                found = conflicts(self.table, entry, self.networks)
                for c in found:
                    self._alarm(c)
                if not any(c.refused for c in found):
                    slot = (ipaddress.ip_network(entry.prefix), entry.node)
                    self._imported.setdefault(slot, {})[new.key] = entry
                    slots[slot] = None
        for slot in slots:
            self._settle(slot, now)
        if self.lease is not None:
            self._observe(now)

    def _settle(self, slot: tuple[Prefix, str], now: float) -> None:
        """Make the table's candidate of (prefix, node) follow the routes the RIB holds for it.

        One node (one router ID: an eBGP neighbour without ORIGINATOR_ID, or
        GoBGP/FRR originating for several VTEPs) may announce one prefix in
        several routes, under several RDs. Withdrawing one of them leaves
        the others: the candidate is removed only with the last, else it is
        the first of the rest by (VTEP, router MAC, VNI), a choice that does
        not depend on arrival order; more than one VTEP is reported.
        """
        prefix, node = slot
        entries = self._imported.get(slot)
        if not entries:
            self._imported.pop(slot, None)
            self.table.remove(prefix, source=Source.BGP, node=node)
            return
        choice = min(entries.values(), key=lambda e: (e.vtep or "", e.router_mac or b"", e.vni))
        vteps = sorted({e.vtep or "" for e in entries.values()})
        if len(vteps) > 1:
            self._alarm_text(f"routing: subnet {prefix} from node {node} via VTEPs {', '.join(vteps)}: "
                             f"using {choice.vtep}")
        self.table.install(choice, now)

    def route_keys(self, prefix: Prefix, node: str) -> list[tuple]:
        """The RIB keys of the type-5 routes behind the table's BGP candidate of (`prefix`, `node`)."""
        return list(self._imported.get((ipaddress.ip_network(prefix), node), ()))

    def _entry(self, path: Path) -> PrefixEntry | None:
        route = path.route
        assert isinstance(route, PrefixRoute)
        mac = path.attributes.router_mac()
        encap = encapsulation_of(path.attributes)
        if path.next_hop is None or (encap == "vxlan" and mac is None):
            self._alarm_text(f"type-5 route {route.prefix} from {path.peer} lacks a router MAC or next hop: ignored")
            return None
        return PrefixEntry(
            prefix=route.prefix, vtep=str(path.next_hop), router_mac=mac, vni=route.vni,
            node=str(path.router_id), peer=path.peer, source=Source.BGP, encap=encap,
        )

    def _observe(self, now: float) -> None:
        assert self.lease is not None
        claims = [(e.prefix, e.node) for e in self.table.candidates() if e.source is Source.BGP]
        claims = [(p, n) for p, n in claims if _is_router_id(n)]
        try:
            events = self.lease.observe(claims)
        except NetworkExhausted as err:
            self._alarm_text(f"routing: subnet auto: {err}; announcing no subnet until one is free")
            self._move(None, now)
            return
        for ev in events:
            if isinstance(ev, SubnetCollisionLost):
                log.warning("routing: node %s (lower router ID) also claims %s: moving to %s",
                            ev.winner, ev.old, ev.new)
                self._move(ev.new, now)
            elif isinstance(ev, SubnetChosen):  # a subnet is free again after exhaustion
                log.warning("routing: subnet auto: chose %s", ev.subnet)
                self._move(ev.subnet, now)
            elif isinstance(ev, SubnetCollisionWon):
                log.warning("routing: node %s also claims our subnet %s: we keep it (lower router ID)",
                            ev.loser, ev.subnet)

    def _move(self, main: Prefix | None, now: float) -> None:
        """Our main subnet is now `main` (None: none free); the static IPv6 subnet stays."""
        old = self.subnets
        new = ((main,) if main is not None else ()) + ((self.subnet6,) if self.subnet6 is not None else ())
        for subnet in old:
            self.table.remove(subnet, source=Source.LOCAL)
        self.subnets = new
        self._install_local(now)
        self.moved.append(SubnetMoved(old, new))

    def _install_local(self, now: float) -> None:
        for subnet in self.subnets:
            self.table.install(
                PrefixEntry(subnet, None, self.router_mac, self.vni, self.node, "local", Source.LOCAL), now
            )

    def _alarm(self, conflict: Conflict) -> None:
        self._alarm_text(f"routing: {conflict}")

    def _alarm_text(self, text: str) -> None:
        log.warning("%s", text)
        self.alarms.append(text)
        del self.alarms[:-50]

    def describe(self) -> str:
        return (f"routing: vni {self.vni}, subnets {', '.join(map(str, self.subnets)) or 'none'}, "
                f"router MAC {mac_str(self.router_mac)}, RT {self.route_target}")


ENCAP_OF_BACKEND = {"userspace": "vxlan", "kernel": "vxlan", "ipip": "ipip", "host-gw": "none", "native": "none"}


def encapsulation_of(attributes: PathAttributes) -> str:
    """How the announcing node takes traffic: its Encapsulation extended community (VXLAN,
    IP in IP); without one, VXLAN when it names a router MAC (what FRR and GoBGP announce),
    else "none": route to its next hop as it is."""
    types = {c.tunnel_type for c in attributes.ext_communities if isinstance(c, Encapsulation)}
    if TUNNEL_TYPE_VXLAN in types:
        return "vxlan"
    if TUNNEL_TYPE_IPIP in types:
        return "ipip"
    return "vxlan" if attributes.router_mac() is not None and not types else "none"


def _is_router_id(text: str) -> bool:
    try:
        ipaddress.IPv4Address(text)
    except ValueError:
        return False
    return True
