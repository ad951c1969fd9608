"""Type-5 import: the subnet table follows the RIB when one node announces a prefix in several routes.

The table keeps one BGP candidate per (prefix, node); the RIB keeps one route
per (RD, Ethernet tag, prefix). A node (one router ID) may hold several
routes for one prefix: GoBGP or FRR originating for several VTEPs, an eBGP
neighbour passing on other routers' routes (no ORIGINATOR_ID), or a node
whose RD changed (new route announced before the old one is withdrawn).
Found with GoBGP (tests/interop/test_gobgp_type5.py's lab): withdrawing
one of two such routes took the prefix out of the table although the
other was still best in the RIB.
"""

from __future__ import annotations

import ipaddress

from overlayd.config import parse_config
from overlayd.control.routed import RoutedSubnets
from overlayd.fabric.prefixes import PrefixTable
from overlayd.fabric.rib import BestPathChanged, Path
from overlayd.wire.bgp.attributes import Encapsulation, PathAttributes, RouteTarget, RouterMac
from overlayd.wire.bgp.evpn import PrefixRoute, RouteDistinguisher

PEER, PEER_ID = "10.0.0.9", ipaddress.IPv4Address("10.0.0.9")
PREFIX = "10.244.7.0/24"


def routed() -> RoutedSubnets:
    cfg = parse_config({"node": {"vtep": "10.0.0.1"}, "bgp": {"asn": 65000},
                        "routing": {"vni": 1, "network": "10.244.0.0/16", "subnet": "10.244.1.0/24"}})
    return RoutedSubnets(cfg, PrefixTable(), 0.0)


def path(vtep: str, rd: str | None = None, prefix: str = PREFIX) -> Path:
    route = PrefixRoute(RouteDistinguisher.parse(rd or f"{vtep}:1"), ipaddress.ip_network(prefix), vni=1)
    mac = b"\x02\x00" + ipaddress.IPv4Address(vtep).packed
    attrs = PathAttributes(next_hop=ipaddress.ip_address(vtep),
                           ext_communities=(RouteTarget.parse("65000:1"), Encapsulation(), RouterMac(mac)))
    return Path(route, attrs, PEER, peer_router_id=PEER_ID)


def announce(rs: RoutedSubnets, p: Path, now: float) -> None:
    rs.best_path_changed(BestPathChanged(p.key, None, p), now)


def withdraw(rs: RoutedSubnets, p: Path, now: float) -> None:
    rs.best_path_changed(BestPathChanged(p.key, p, None), now)


def vtep_of(rs: RoutedSubnets, prefix: str = PREFIX) -> str | None:
    entry = rs.table.get(prefix)
    return entry.vtep if entry is not None else None


def test_withdrawing_one_of_two_routes_of_a_node_keeps_the_other():
    for first, second in (("10.0.0.5", "10.0.0.6"), ("10.0.0.6", "10.0.0.5")):
        rs = routed()
        a, b = path(first), path(second)
        announce(rs, a, 1.0)
        announce(rs, b, 2.0)
        assert vtep_of(rs) == "10.0.0.5"  # the lower VTEP, whatever the arrival order
        assert any(PREFIX in t and "10.0.0.5, 10.0.0.6" in t for t in rs.alarms), rs.alarms
        withdraw(rs, b, 3.0)
        assert vtep_of(rs) == first  # the RIB still holds `a`: so does the table
        assert rs.table.get(PREFIX).router_mac == b"\x02\x00" + ipaddress.IPv4Address(first).packed
        withdraw(rs, a, 4.0)
        assert vtep_of(rs) is None
        assert [str(e.prefix) for e in rs.table] == ["10.244.1.0/24"]


def test_a_new_rd_announced_before_the_old_one_is_withdrawn_keeps_the_prefix():
    rs = routed()
    old, new = path("10.0.0.5", rd="10.0.0.5:1"), path("10.0.0.5", rd="10.0.0.5:2")
    announce(rs, old, 1.0)
    announce(rs, new, 2.0)
    withdraw(rs, old, 3.0)
    assert vtep_of(rs) == "10.0.0.5"
    assert rs.table.get(PREFIX).installed == 1.0  # the same next hop all along: never reinstalled
    assert not rs.alarms, rs.alarms


def test_an_update_of_the_same_route_moves_the_prefix_without_a_gap():
    rs = routed()
    a, b = path("10.0.0.5", rd="10.0.0.9:1"), path("10.0.0.6", rd="10.0.0.9:1")  # same route key
    announce(rs, a, 1.0)
    rs.best_path_changed(BestPathChanged(a.key, a, b), 2.0)
    assert vtep_of(rs) == "10.0.0.6"
    withdraw(rs, b, 3.0)
    assert vtep_of(rs) is None
