"""IPv4 / IPv6 unicast through a real Speaker: our subnets to the site's routers
(export), their routes into the RIB and `unicast_routes()` (import), and which
family goes to which neighbor. The router is a bare `Peer`, back to back with
the speaker in memory on a fake clock, so every UPDATE it gets is visible.
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass, field, replace

import pytest

from overlayd.config import parse_config
from overlayd.control.events import EndOfRibReceived, UpdateReceived
from overlayd.control.negotiation import SessionConfig, families_named
from overlayd.control.peer import Peer
from overlayd.control.routed import default_router_mac
from overlayd.control.speaker import Speaker
from overlayd.dataplane.switch import Switch
from overlayd.fabric.prefixes import PrefixTable
from overlayd.status import ctl
from overlayd.status.bgp_view import peer_rows, rib_rows
from overlayd.wire.bgp.attributes import (
    AS_SEQUENCE,
    AsPathSegment,
    Encapsulation,
    PathAttributes,
    RouterMac,
    RouteTarget,
)
from overlayd.wire.bgp.evpn import PrefixRoute, RouteDistinguisher
from overlayd.wire.bgp.unicast import IPV4_UNICAST, IPV6_UNICAST, UnicastRoute
from overlayd.wire.bgp.update import L2VPN_EVPN, Update, route_family
from tests.unit.test_speaker import move_bytes

ASN = 65000
NODE = "10.0.0.5"
SUBNET = UnicastRoute("10.244.1.0/24")
NET = ipaddress.ip_network
ADDR = ipaddress.ip_address


@dataclass
class Router:
    """A neighbor of the speaker: a bare Peer and what it received."""

    peer: Peer
    updates: list[Update] = field(default_factory=list)
    end_of_rib: list[tuple[int, int]] = field(default_factory=list)

    def unicast(self) -> dict:
        """What the router holds from us: prefix -> next hop."""
        held: dict = {}
        for u in self.updates:
            for r in u.withdrawn:
                held.pop(r.prefix, None)
            for r in u.announced:
                if isinstance(r, UnicastRoute):
                    held[r.prefix] = str(u.next_hop_of(r))
        return held


class Lab:
    """One speaker (NODE, AS 65000) and its routers, every session Established."""

    def __init__(self, neighbors: list[dict], routing: dict | None = None, node: dict | None = None,
                 bgp: dict | None = None):
        self.now = 0.0
        routing = {"vni": 1, "network": "10.244.0.0/16", "subnet": str(SUBNET.prefix), **(routing or {})}
        self.config = parse_config({
            "node": {"vtep": NODE, **(node or {})},
            "bgp": {"asn": ASN, "hold_time": 3, "neighbors": neighbors, **(bgp or {})},
            "routing": routing,
        })
        self.table = PrefixTable()
        self.speaker = Speaker(self.config, Switch(4789, 300), self.now, self.table)
        self.routers: dict[str, Router] = {}
        self.links = []
        for nb in self.config.bgp.neighbors:
            address = str(nb.address)
            cfg = SessionConfig(nb.asn, ASN, ipaddress.IPv4Address(address) if nb.address.version == 4
                                else ipaddress.IPv4Address("10.9.9.9"), NODE, hold_time_s=3, passive=True,
                                families=families_named(nb.families))
            router = Router(Peer(cfg, self.now))
            self.routers[address] = router
            ours = self.speaker.peers[address]
            mine, theirs = ours.connect_due(self.now), router.peer.accept(self.now)
            ours.connection_made(mine, self.now)
            self.links.append((ours, mine, router.peer, theirs))
        self.pump()

    def __getitem__(self, address: str) -> Router:
        return self.routers[address]

    def pump(self) -> None:
        for _ in range(50):
            moved = move_bytes(self.links, self.now)
            self.speaker.poll(self.now)
            for router in self.routers.values():
                while (event := router.peer.next_event()) is not None:
                    if isinstance(event, UpdateReceived):
                        router.updates.append(event.update)
                    elif isinstance(event, EndOfRibReceived):
                        router.end_of_rib.append((event.afi, event.safi))
            if not moved:
                return
        raise AssertionError("never quiet")

    def send(self, address: str, update: Update) -> None:
        self.routers[address].peer.send_update(update, self.now)
        self.pump()


def v4(address: str, asn: int = ASN, families=("ipv4-unicast",), **kw) -> dict:
    return {"address": address, "asn": asn, "families": list(families), **kw}


def announce(prefix: str, next_hop: str, **attrs) -> Update:
    return Update(announced=(UnicastRoute(prefix),),
                  attributes=PathAttributes(next_hop=ADDR(next_hop), local_pref=100, **attrs))


# -- export ----------------------------------------------------------------------------------


def test_our_subnet_goes_to_an_ibgp_router_as_ipv4_unicast_and_nothing_else():
    lab = Lab([v4("10.0.0.1")])
    router = lab["10.0.0.1"]
    assert lab.speaker.peers["10.0.0.1"].negotiated.families == (IPV4_UNICAST,)
    [update] = router.updates
    assert update.announced == (SUBNET,)
    assert update.attributes == PathAttributes(next_hop=ADDR(NODE), local_pref=100)  # ORIGIN IGP, empty AS_PATH
    assert router.end_of_rib == [IPV4_UNICAST]
    assert router.unicast() == {SUBNET.prefix: NODE}


def test_to_an_ebgp_router_our_as_is_prepended_and_there_is_no_local_pref():
    lab = Lab([v4("10.0.0.1", asn=65100)])
    [update] = lab["10.0.0.1"].updates
    assert update.attributes == PathAttributes(next_hop=ADDR(NODE), as_path=(AsPathSegment(AS_SEQUENCE, (ASN,)),))


def test_each_neighbor_gets_only_the_families_it_carries():
    lab = Lab([{"address": "10.0.0.1", "asn": ASN}, v4("10.0.0.2"),
               v4("10.0.0.3", families=("evpn", "ipv4-unicast"))])
    evpn_only, unicast_only, both = lab["10.0.0.1"], lab["10.0.0.2"], lab["10.0.0.3"]
    families = lambda r: {route_family(x) for u in r.updates for x in u.announced}
    assert families(evpn_only) == {L2VPN_EVPN} and evpn_only.end_of_rib == [L2VPN_EVPN]
    assert families(unicast_only) == {IPV4_UNICAST} and unicast_only.end_of_rib == [IPV4_UNICAST]
    assert families(both) == {L2VPN_EVPN, IPV4_UNICAST} and both.end_of_rib == [L2VPN_EVPN, IPV4_UNICAST]
    assert all(len({route_family(x) for x in u.announced}) == 1 for r in (both,) for u in r.updates)


def test_without_a_unicast_neighbor_no_unicast_route_is_originated():
    lab = Lab([{"address": "10.0.0.1", "asn": ASN}])
    assert not any(isinstance(e.path.route, UnicastRoute) for e in lab.speaker.rib)


def test_an_ipv6_subnet_needs_an_ipv6_next_hop(caplog):
    routing = {"network6": "fd00:244::/48", "subnet6": "fd00:244:0:1::/64"}
    with caplog.at_level(logging.WARNING, "overlayd.routing"):
        lab = Lab([v4("10.0.0.1", families=("ipv4-unicast", "ipv6-unicast"))], routing)
        lab.speaker._follow_subnet_moves(lab.now)  # announcing again does not log again
    assert lab["10.0.0.1"].unicast() == {SUBNET.prefix: NODE}
    warnings = [r.getMessage() for r in caplog.records if "not announcing" in r.getMessage()]
    assert warnings == [("routing: not announcing fd00:244:0:1::/64 as ipv6-unicast: its next hop would be node.vtep "
                         "10.0.0.5, and an IPv6 route needs an IPv6 next hop (give node.vtep an IPv6 address to "
                         "announce it)")]
    assert lab["10.0.0.1"].end_of_rib == [IPV4_UNICAST, IPV6_UNICAST]


def test_with_an_ipv6_vtep_the_ipv6_subnet_goes_in_mp_reach_nlri():
    routing = {"network": "fd00:244::/48", "subnet": "fd00:244:0:1::/64"}
    lab = Lab([v4("fd00::1", families=("ipv6-unicast",))], routing, node={"vtep": "fd00::5"},
              bgp={"router_id": NODE})
    assert lab["fd00::1"].unicast() == {NET("fd00:244:0:1::/64"): "fd00::5"}


def test_route_refresh_sends_that_family_again():
    lab = Lab([v4("10.0.0.1", families=("evpn", "ipv4-unicast"))])
    router = lab["10.0.0.1"]
    router.updates.clear()
    router.peer.send_route_refresh(lab.now, *IPV4_UNICAST)
    lab.pump()
    assert [u.announced for u in router.updates] == [(SUBNET,)]


def test_a_subnet_that_moves_is_withdrawn_and_the_new_one_announced():
    """`subnet: auto` loses a collision to a lower router ID: the unicast route follows, as type-5 does."""
    lab = Lab([v4("10.0.0.1", families=("evpn", "ipv4-unicast"))],
              routing={"network": "10.244.0.0/23", "subnet": "auto", "subnet_size": 24})
    router = lab["10.0.0.1"]
    first = lab.speaker.routed.subnets[0]
    assert router.unicast() == {first: NODE}
    rt = RouteTarget.parse(f"{ASN}:1")
    claim = PrefixRoute(RouteDistinguisher.for_vtep(ipaddress.IPv4Address("10.0.0.1"), 1), first, vni=1)
    attrs = PathAttributes(next_hop=ADDR("10.0.0.1"), local_pref=100, ext_communities=(
        rt, Encapsulation(), RouterMac(default_router_mac(ipaddress.IPv4Address("10.0.0.1")))))
    lab.send("10.0.0.1", Update(announced=(claim,), attributes=attrs))
    [moved] = lab.speaker.routed.subnets
    assert moved != first
    assert router.unicast() == {moved: NODE}
    assert UnicastRoute(first) in [r for u in router.updates for r in u.withdrawn]


# -- import ----------------------------------------------------------------------------------


def test_a_learned_route_is_in_unicast_routes_and_its_withdrawal_takes_it_out():
    lab = Lab([v4("10.0.0.1")])
    speaker = lab.speaker
    assert speaker.unicast_routes() == {}
    v0 = speaker.unicast_version
    lab.send("10.0.0.1", announce("192.0.2.0/24", "10.0.0.9"))
    assert speaker.unicast_routes() == {NET("192.0.2.0/24"): ADDR("10.0.0.9")}
    v1 = speaker.unicast_version
    assert v1 > v0
    lab.send("10.0.0.1", announce("192.0.2.0/24", "10.0.0.9"))  # the same again: nothing changes
    assert speaker.unicast_version == v1
    lab.send("10.0.0.1", announce("192.0.2.0/24", "10.0.0.8"))  # a new next hop
    assert speaker.unicast_routes() == {NET("192.0.2.0/24"): ADDR("10.0.0.8")} and speaker.unicast_version > v1
    v2 = speaker.unicast_version
    lab.send("10.0.0.1", Update(withdrawn=(UnicastRoute("192.0.2.0/24"),)))
    assert speaker.unicast_routes() == {} and speaker.unicast_version > v2


def test_the_best_of_two_routers_wins_and_the_other_takes_over_when_it_goes():
    lab = Lab([v4("10.0.0.1"), v4("10.0.0.2")])
    lab.send("10.0.0.1", announce("192.0.2.0/24", "10.0.0.11", med=0))
    lab.send("10.0.0.2", replace(announce("192.0.2.0/24", "10.0.0.12"),
                                 attributes=PathAttributes(next_hop=ADDR("10.0.0.12"), local_pref=200)))
    assert lab.speaker.unicast_routes() == {NET("192.0.2.0/24"): ADDR("10.0.0.12")}
    rows = [r for r in rib_rows(lab.speaker) if r["prefix"] == "192.0.2.0/24"]
    assert [(r["type"], r["next_hop"], r["best"], r["peer"]) for r in rows] == [
        ("ipv4-unicast", "10.0.0.12", True, "10.0.0.2"), ("ipv4-unicast", "10.0.0.11", False, "10.0.0.1")]
    lab.links = [link for link in lab.links if link[0].peer != "10.0.0.2"]
    lab.speaker.peers["10.0.0.2"].connection_lost(1, lab.now, "gone")
    lab.pump()
    assert lab.speaker.unicast_routes() == {NET("192.0.2.0/24"): ADDR("10.0.0.11")}


def test_ipv6_routes_and_next_hops_of_the_other_family_are_kept_as_received():
    lab = Lab([v4("10.0.0.1", families=("ipv4-unicast", "ipv6-unicast"))])
    lab.send("10.0.0.1", announce("2001:db8::/32", "fd00::9"))
    lab.send("10.0.0.1", announce("2001:db8:1::/48", "10.0.0.9"))  # IPv6 prefix, IPv4 next hop (MP_REACH)
    assert lab.speaker.unicast_routes() == {NET("2001:db8::/32"): ADDR("fd00::9"),
                                             NET("2001:db8:1::/48"): ADDR("10.0.0.9")}


def test_our_own_subnet_announced_back_is_not_a_learned_route():
    lab = Lab([v4("10.0.0.1")])
    lab.send("10.0.0.1", announce(str(SUBNET.prefix), "10.0.0.9"))
    assert lab.speaker.unicast_routes() == {}
    assert lab.speaker.rib.best(SUBNET.key).is_local


@pytest.mark.parametrize(
    "asn, attrs, reason",
    [
        (65100, {"as_path": (AsPathSegment(AS_SEQUENCE, (65100, ASN)),)}, "our AS in the AS_PATH on eBGP"),
        (ASN, {"originator_id": ipaddress.IPv4Address(NODE)}, "ORIGINATOR_ID ours"),
    ],
)
def test_looped_routes_are_rejected(asn, attrs, reason):
    lab = Lab([v4("10.0.0.1", asn=asn)])
    lab.send("10.0.0.1", Update(announced=(UnicastRoute("192.0.2.0/24"),),
                                attributes=PathAttributes(next_hop=ADDR("10.0.0.9"), **attrs)))
    assert lab.speaker.unicast_routes() == {}, reason
    assert lab.speaker.stats["10.0.0.1"].routes_rejected == 1


def test_treat_as_withdraw_takes_the_route_out():
    lab = Lab([v4("10.0.0.1")])
    lab.send("10.0.0.1", announce("192.0.2.0/24", "10.0.0.9"))
    lab.speaker._receive("10.0.0.1", replace(announce("192.0.2.0/24", "10.0.0.9"), treat_as_withdraw=True,
                                              errors=("NEXT_HOP: ... (treat-as-withdraw)",)), lab.now)
    assert lab.speaker.unicast_routes() == {}
    assert lab.speaker.stats["10.0.0.1"].treated_as_withdraw == 1


def test_peers_show_families_and_unicast_routes_as_accepted():
    lab = Lab([v4("10.0.0.1", families=("evpn", "ipv4-unicast"))])
    lab.send("10.0.0.1", announce("192.0.2.0/24", "10.0.0.9"))
    lab.send("10.0.0.1", Update(end_of_rib=True, end_of_rib_family=IPV4_UNICAST))
    [row] = peer_rows(lab.speaker, lab.now)
    assert row["families"] == ["evpn", "ipv4-unicast"]
    assert (row["routes_received"], row["routes_accepted"]) == (1, 1)
    assert row["end_of_rib_received"] is False  # not yet for EVPN
    lab.send("10.0.0.1", Update(end_of_rib=True))
    assert peer_rows(lab.speaker, lab.now)[0]["end_of_rib_received"] is True


def test_overlayctl_renders_unicast_rows_and_families():
    lab = Lab([v4("10.0.0.1", families=("evpn", "ipv4-unicast"))])
    lab.send("10.0.0.1", announce("192.0.2.0/24", "10.0.0.9"))
    rib = ctl.render_rib(rib_rows(lab.speaker)).splitlines()
    assert rib[0].split() == ["TYPE", "RD", "ESI/TAG", "MAC", "IP", "PREFIX", "VNI", "NEXT", "HOP", "SEQ", "BEST",
                              "FROM"]
    unicast = [line.split() for line in rib if line.startswith("ipv4-unicast")]
    assert unicast == [["ipv4-unicast", "-", "-", "-", "-", "10.244.1.0/24", "-", NODE, "-", "*", "local"],
                       ["ipv4-unicast", "-", "-", "-", "-", "192.0.2.0/24", "-", "10.0.0.9", "-", "*", "10.0.0.1"]]
    peers = ctl.render_peers(peer_rows(lab.speaker, lab.now)).splitlines()
    assert "FAMILIES" in peers[0].split() and "evpn,ipv4-unicast" in peers[1].split()
