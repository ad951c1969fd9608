"""Routes whose VTEP is of the other address family than ours are not imported.

Found against GoBGP (tests/interop/test_gobgp.py's lab, by hand): a type-3
route for an IPv6 VTEP, added in GoBGP, put that VTEP on the flood list of
an overlayd whose VTEP is IPv4; every flooded frame then failed to send
(tx_drop_send_error). Static config refuses such VTEPs (README: "Remote
VTEPs must be of the same address family as node.vtep"); BGP now does too.
"""

from __future__ import annotations

import ipaddress

import pytest

from overlayd.wire.bgp.attributes import (
    PMSI_INGRESS_REPLICATION,
    Encapsulation,
    PathAttributes,
    PmsiTunnel,
    RouteTarget,
)
from overlayd.wire.bgp.evpn import ImetRoute, MacIpRoute, RouteDistinguisher
from overlayd.wire.bgp.update import Update
from tests.unit.test_speaker import H2, VNI, Mesh, _inject, fdb

RD = RouteDistinguisher.parse("10.0.0.2:100")
EXT = (RouteTarget.parse("65000:100"), Encapsulation())


def _imet(originator: str, next_hop: str, tunnel: str) -> tuple[ImetRoute, PathAttributes]:
    route = ImetRoute(RD, ipaddress.ip_address(originator))
    pmsi = PmsiTunnel(PMSI_INGRESS_REPLICATION, VNI, ipaddress.ip_address(tunnel))
    return route, PathAttributes(next_hop=ipaddress.ip_address(next_hop), ext_communities=EXT,
                                 local_pref=100, pmsi_tunnel=pmsi)


@pytest.mark.parametrize("next_hop, tunnel", [("fd00::2", "fd00::2"), ("10.0.0.2", "fd00::2"),
                                              ("fd00::2", "10.0.0.2")])
def test_a_type3_route_for_an_ipv6_vtep_stays_off_an_ipv4_nodes_flood_list(next_hop, tunnel):
    m = Mesh(2)
    route, attrs = _imet(tunnel, next_hop, tunnel)
    _inject(m, Update(announced=(route,), attributes=attrs))
    assert all(ipaddress.ip_address(v).version == 4 for v in m[1].switch.flood.targets(VNI))
    assert "fd00::2" not in m[1].switch.flood.targets(VNI)
    assert m[1].speaker.stats["10.0.0.2"].routes_rejected == 1
    assert route.key not in {e.path.route.key for e in m[1].speaker.rib}


def test_a_type2_route_with_an_ipv6_next_hop_stays_out_of_an_ipv4_nodes_fdb():
    m = Mesh(2)
    route = MacIpRoute(RD, H2, None, vni=VNI)
    attrs = PathAttributes(next_hop=ipaddress.ip_address("fd00::2"), ext_communities=EXT,
                           local_pref=100)
    _inject(m, Update(announced=(route,), attributes=attrs))
    assert H2 not in fdb(m[1])
    assert m[1].speaker.stats["10.0.0.2"].routes_rejected == 1


def test_the_same_routes_with_ipv4_vteps_are_imported():
    m = Mesh(2)
    route, attrs = _imet("10.0.0.7", "10.0.0.7", "10.0.0.7")
    _inject(m, Update(announced=(route,), attributes=attrs))
    assert "10.0.0.7" in m[1].switch.flood.targets(VNI)
    assert m[1].speaker.stats["10.0.0.2"].routes_rejected == 0
