"""IPv4 / IPv6 unicast beside EVPN, without I/O: the unicast routes this node
originates and the learned ones a kernel planner installs.

Export. With `routing:` configured, each of our pod subnets
(`RoutedSubnets.subnets`, which move with `subnet: auto`) is announced as a
unicast route to every neighbor that carries its family, whatever
`routing.backend` is: next hop node.vtep, ORIGIN IGP, and what
`RouteFactory.for_peer` adds per session (iBGP: empty AS_PATH, LOCAL_PREF
100; eBGP: our AS, no LOCAL_PREF). That is how the site's routers learn the
pod subnets for native routing. The next hop must be of the prefix's family
(NEXT_HOP holds only IPv4, and overlayd does not negotiate RFC 8950's
extended next hop), so a subnet of the other family than node.vtep is not
announced; that is logged once per family.

Import. `best_path_changed` follows the RIB's unicast keys: the best path of
each prefix, unless it is one of ours (our subnet coming back, or another
speaker announcing it too: the local path wins in the RIB), puts the prefix
in `routes` with its next hop as received, of whatever family. `version`
increases with every change of `routes`, so a planner can tell cheaply that
it must plan again.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from overlayd.fabric.rib import BestPathChanged
from overlayd.wire.bgp.attributes import PathAttributes
from overlayd.wire.bgp.evpn import IpAddress, IpNetwork
from overlayd.wire.bgp.unicast import IPV4_UNICAST, IPV6_UNICAST, UnicastRoute
from overlayd.wire.bgp.update import Family, family_name

log = logging.getLogger("overlayd.routing")


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
