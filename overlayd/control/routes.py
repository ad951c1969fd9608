"""What overlayd announces and how it reads what it receives: the EVPN routes
of one node, built from its config and its local MACs (export), and the
mapping of received routes to networks by route target (import); and the
IPv4 / IPv6 unicast routes beside them (`UnicastRoutes`).

Unicast export. With `routing:` configured, each of our pod subnets
(`RoutedSubnets.subnets`, which move with `subnet: auto`) is announced as a
unicast route to every neighbor that carries its family, whatever
`routing.backend` is: next hop node.vtep, ORIGIN IGP, and what
`RouteFactory.for_peer` adds per session (iBGP: empty AS_PATH, LOCAL_PREF
100; eBGP: our AS, no LOCAL_PREF). That is how the site's routers learn the
pod subnets for native routing. The next hop must be of the prefix's family
(NEXT_HOP holds only IPv4, and overlayd does not negotiate RFC 8950's
extended next hop), so a subnet of the other family than node.vtep is not
announced; that is logged once per family.

Unicast import. `UnicastRoutes.best_path_changed` follows the RIB's unicast
keys: the best path of each prefix, unless it is one of ours (our subnet
coming back, or another speaker announcing it too: the local path wins in
the RIB), puts the prefix in `routes` with its next hop as received, of
whatever family. `version` increases with every change of `routes`, so a
kernel planner can tell cheaply that it must plan again.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any

from overlayd.config import Config
from overlayd.fabric.rib import BestPathChanged, Path
from overlayd.wire.bgp.attributes import (
    AS_SEQUENCE,
    PMSI_INGRESS_REPLICATION,
    AsPathSegment,
    Encapsulation,
    MacMobility,
    PathAttributes,
    PmsiTunnel,
    RouteTarget,
)
from overlayd.wire.bgp.evpn import (
    ZERO_ESI,
    ImetRoute,
    IpAddress,
    IpNetwork,
    MacIpRoute,
    PrefixRoute,
    RouteDistinguisher,
)
from overlayd.wire.bgp.unicast import IPV4_UNICAST, IPV6_UNICAST, UnicastRoute
from overlayd.wire.bgp.update import Family, family_name
from overlayd.wire.ethernet import mac_str

LINK_LOCAL_V6 = ipaddress.IPv6Network("fe80::/10")

log = logging.getLogger("overlayd.routing")


@dataclass(frozen=True)
class EvpnNetwork:
    """One network as the control plane sees it: its VNI, RD and route target."""

    name: str
    vni: int
    rd: RouteDistinguisher
    route_target: RouteTarget


def evpn_networks(config: Config) -> dict[int, EvpnNetwork]:
    """VNI -> EvpnNetwork. The RD is <router ID>:<VNI>, or <router ID>:<index + 1>
    when the VNI does not fit the 2-octet number of a type-1 RD."""
    out = {}
    for i, net in enumerate(config.networks):
        number = net.vni if net.vni <= 0xFFFF else i + 1
        out[net.vni] = EvpnNetwork(
            net.name,
            net.vni,
            RouteDistinguisher.for_vtep(config.router_id, number),
            RouteTarget.parse(config.route_target_for(net)),
        )
    return out


class RouteFactory:
    """Builds this node's routes; the attributes are the same for every peer
    except what `for_peer` adjusts (AS_PATH and LOCAL_PREF for eBGP)."""

    def __init__(self, vtep: IpAddress, asn: int):
        self.vtep = vtep
        self.asn = asn

    def imet(self, net: EvpnNetwork) -> tuple[ImetRoute, PathAttributes]:
        route = ImetRoute(net.rd, self.vtep)
        attrs = PathAttributes(
            next_hop=self.vtep,
            ext_communities=(net.route_target, Encapsulation()),
            pmsi_tunnel=PmsiTunnel(PMSI_INGRESS_REPLICATION, net.vni, self.vtep),
        )
        return route, attrs

    def mac_ip(
        self, net: EvpnNetwork, mac: bytes, ip: IpAddress | None, sequence: int
    ) -> tuple[MacIpRoute, PathAttributes]:
        route = MacIpRoute(net.rd, mac, ip, vni=net.vni)
        ext: tuple = (net.route_target, Encapsulation())
        if sequence > 0:
            ext += (MacMobility(sequence),)
        return route, PathAttributes(next_hop=self.vtep, ext_communities=ext)

    def for_peer(self, attrs: PathAttributes, ebgp: bool) -> PathAttributes:
        """RFC 4271 5.1: eBGP prepends our AS and carries no LOCAL_PREF; iBGP sends LOCAL_PREF."""
        if ebgp:
            return replace(attrs, as_path=(AsPathSegment(AS_SEQUENCE, (self.asn,)),), local_pref=None)
        return replace(attrs, local_pref=100 if attrs.local_pref is None else attrs.local_pref)


def advertisable_ip(ip: IpAddress) -> bool:
    """Snooped addresses worth a MAC/IP route: not link-local IPv6, loopback or multicast."""
    if ip.is_loopback or ip.is_multicast or ip.is_unspecified:
        return False
    return not (ip.version == 6 and ip in LINK_LOCAL_V6)


class Importer:
    """Which network a received path belongs to: the first of its route targets that names one.

    Type-2 and type-3 routes map to the L2 networks; type-5 routes only to
    the routed (L3) VNI, through its own route target; unicast routes to none.
    """

    def __init__(self, networks: dict[int, EvpnNetwork], l3: tuple[RouteTarget, int] | None = None):
        self._by_rt = {str(n.route_target): n.vni for n in networks.values()}
        self._l3 = (str(l3[0]), l3[1]) if l3 is not None else None

    def domain_of(self, path: Path) -> int | None:
        if isinstance(path.route, UnicastRoute):
            return None
        if isinstance(path.route, PrefixRoute):
            if self._l3 is not None and any(str(rt) == self._l3[0] for rt in path.attributes.route_targets()):
                return self._l3[1]
            return None
        for rt in path.attributes.route_targets():
            vni = self._by_rt.get(str(rt))
            if vni is not None:
                return vni
        return None

    @staticmethod
    def flood_target(path: Path | None) -> str | None:
        """The VTEP a type-3 path asks to be flooded to: the PMSI tunnel endpoint, else the next hop."""
        if path is None or path.is_local:
            return None
        pmsi = path.attributes.pmsi_tunnel
        if pmsi is not None:
            return str(pmsi.tunnel_id)
        return str(path.next_hop) if path.next_hop is not None else None


class UnicastRoutes:
    """Our unicast routes for `families` (of those the neighbors carry), and the learned best ones."""

    def __init__(self, vtep: IpAddress, families: Iterable[Family]):
        self.vtep = vtep
        self.families = frozenset(f for f in families if f in (IPV4_UNICAST, IPV6_UNICAST))
        self.routes: dict[IpNetwork, IpAddress] = {}
        self.version = 0
        self._warned: set[Family] = set()

    def originated(self, subnets: Iterable[IpNetwork]) -> list[tuple[UnicastRoute, PathAttributes]]:
        """The routes announcing `subnets` to the neighbors that carry their family."""
        out = []
        for subnet in subnets:
            route = UnicastRoute(subnet)
            if route.family not in self.families:
                continue
            if subnet.version != self.vtep.version:
                if route.family not in self._warned:
                    self._warned.add(route.family)
                    log.warning(
                        "routing: not announcing %s as %s: its next hop would be node.vtep %s, and an IPv%d "
                        "route needs an IPv%d next hop (give node.vtep an IPv%d address to announce it)",
                        subnet, family_name(route.family), self.vtep, subnet.version, subnet.version,
                        subnet.version,
                    )
                continue
            out.append((route, PathAttributes(next_hop=self.vtep)))
        return out

    def best_path_changed(self, change: BestPathChanged) -> bool:
        """Follow the RIB for one unicast key; True when `routes` changed (and `version` with it)."""
        new = change.new
        path = new or change.old
        assert path is not None and isinstance(path.route, UnicastRoute)
        prefix = path.route.prefix
        hop = new.next_hop if new is not None and not new.is_local else None
        if self.routes.get(prefix) == hop:
            return False
        if hop is None:
            del self.routes[prefix]
        else:
            self.routes[prefix] = hop
        self.version += 1
        return True


# -- a path in words: `overlayctl rib` rows and route events (control/hub.py) --------------

ROUTE_TYPE_NAMES = {2: "macip", 3: "imet", 5: "prefix"}


def _esi(esi: bytes) -> str:
    return "0" if esi == ZERO_ESI else esi.hex(":")


def path_row(path: Path, best: bool, vni: int | None) -> dict[str, Any]:
    route = path.route
    next_hop = str(path.next_hop) if path.next_hop is not None else None
    if isinstance(route, UnicastRoute):
        return {"type": family_name(route.family), "rd": None, "esi": None, "ethernet_tag": None, "mac": None,
                "ip": None, "prefix": str(route.prefix), "vni": None, "label": None, "next_hop": next_hop,
                "sequence": None, "route_targets": [str(rt) for rt in path.attributes.route_targets()],
                "best": best, "peer": path.peer}
    row: dict[str, Any] = {
        "type": ROUTE_TYPE_NAMES.get(route.route_type, str(route.route_type)),
        "rd": str(route.rd),
        "esi": None,
        "ethernet_tag": route.ethernet_tag,
        "mac": None,
        "ip": None,
        "prefix": None,
        "vni": vni,
        "label": None,
        "next_hop": next_hop,
        "sequence": path.sequence if isinstance(route, MacIpRoute) else None,
        "route_targets": [str(rt) for rt in path.attributes.route_targets()],
        "best": best,
        "peer": path.peer,
    }
    if isinstance(route, MacIpRoute):
        row.update(esi=_esi(route.esi), mac=mac_str(route.mac), label=route.vni,
                   ip=str(route.ip) if route.ip is not None else None)
    elif isinstance(route, ImetRoute):
        pmsi = path.attributes.pmsi_tunnel
        row.update(ip=str(route.originator), label=pmsi.vni if pmsi else None)
    elif isinstance(route, PrefixRoute):
        row.update(esi=_esi(route.esi), prefix=str(route.prefix), label=route.vni)
    return row
