"""Type-5 export/import and `subnet: auto` collisions through real speakers, back to back in memory."""

from __future__ import annotations

import ipaddress

import pytest

import tests.unit.test_speaker as base
from overlayd.config import parse_config
from overlayd.control.speaker import Speaker
from overlayd.dataplane.switch import Switch
from overlayd.fabric.prefixes import PrefixTable
from overlayd.fabric.subnets import SubnetLease
from overlayd.wire.bgp.evpn import PrefixRoute

NETWORK = "10.244.0.0/24"  # room for two /25 subnets: collisions are easy to make


class RoutedNode(base.Node):
    subnets: dict[int, str] = {}

    def __init__(self, i: int, peers: list[int], now: float, rt: str | None = None):
        self.vtep = f"10.0.0.{i}"
        self.config = parse_config({
            "node": {"name": f"n{i}", "vtep": self.vtep},
            "bgp": {"asn": 65000, "hold_time": 3,
                    "neighbors": [{"address": f"10.0.0.{p}", "asn": 65000} for p in peers]},
            "routing": {"vni": 1, "network": NETWORK, "subnet": self.subnets.get(i, "auto"), "subnet_size": 25},
        })
        self.switch = Switch(4789, 300)
        self.table = PrefixTable()
        self.speaker = Speaker(self.config, self.switch, now, self.table)


@pytest.fixture
def mesh(monkeypatch):
    def make(n: int, subnets: dict[int, str]):
        monkeypatch.setattr(base, "Node", RoutedNode)
        monkeypatch.setattr(RoutedNode, "subnets", subnets)
        return base.Mesh(n)
    return make


def table(node) -> dict[str, tuple[str | None, str]]:
    return {str(e.prefix): (e.vtep, e.node) for e in node.table}


def test_each_node_announces_its_subnet_and_learns_the_others(mesh):
    m = mesh(2, {1: "10.244.0.0/25", 2: "10.244.0.128/25"})
    assert table(m[1]) == {"10.244.0.0/25": (None, "10.0.0.1"), "10.244.0.128/25": ("10.0.0.2", "10.0.0.2")}
    [path] = [p for p in m[1].speaker.rib.paths_from("10.0.0.2") if isinstance(p.route, PrefixRoute)]
    assert path.route.vni == 1 and path.attributes.router_mac() == b"\x02\x00" + bytes([10, 0, 0, 2])


def test_an_auto_node_that_collides_with_a_lower_router_id_moves(mesh):
    # node 2's first pick, taken by node 1 (lower router ID) statically
    first = SubnetLease(NETWORK, 25, ipaddress.IPv4Address("10.0.0.2")).choose(())
    m = mesh(2, {1: str(first)})
    assert [str(s) for s in m[2].speaker.routed.subnets] != [str(first)]
    moved_to = str(m[2].speaker.routed.subnets[0])
    assert m[2].speaker.subnet_moves and str(m[2].speaker.subnet_moves[0].old[0]) == str(first)
    # everyone agrees: node 1 keeps `first`, node 2 has the other half, nothing stale
    assert table(m[1]) == {str(first): (None, "10.0.0.1"), moved_to: ("10.0.0.2", "10.0.0.2")}
    assert table(m[2]) == {str(first): ("10.0.0.1", "10.0.0.1"), moved_to: (None, "10.0.0.2")}


def test_two_static_nodes_with_one_subnet_raise_an_alarm_and_the_lower_router_id_wins(mesh):
    m = mesh(3, {1: "10.244.0.0/25", 2: "10.244.0.0/25", 3: "10.244.0.128/25"})
    assert table(m[3])["10.244.0.0/25"] == ("10.0.0.1", "10.0.0.1")
    assert any("10.244.0.0/25" in a for a in m[3].speaker.routed.alarms)


def test_a_subnet_outside_the_network_is_refused():
    cfg = {"node": {"vtep": "10.0.0.1"}, "bgp": {"asn": 65000},
           "routing": {"vni": 1, "network": NETWORK, "subnet": "10.244.0.0/25"}}
    speaker = Speaker(parse_config(cfg), Switch(4789, 300), 0.0, PrefixTable())
    from overlayd.fabric.rib import BestPathChanged, Path
    from overlayd.wire.bgp.attributes import Encapsulation, PathAttributes, RouteTarget, RouterMac
    from overlayd.wire.bgp.evpn import RouteDistinguisher
    route = PrefixRoute(RouteDistinguisher.parse("10.0.0.9:1"), ipaddress.ip_network("192.168.0.0/24"), vni=1)
    attrs = PathAttributes(next_hop=ipaddress.ip_address("10.0.0.9"),
                           ext_communities=(RouteTarget.parse("65000:1"), Encapsulation(), RouterMac(b"\x02" * 6)))
    speaker.routed.best_path_changed(BestPathChanged(route.key, None, Path(route, attrs, "10.0.0.9")), 1.0)
    assert "192.168.0.0/24" not in {str(e.prefix) for e in speaker.routed.table}
    assert any("outside" in a for a in speaker.routed.alarms)


def test_a_node_left_without_a_subnet_takes_one_when_it_frees_up(mesh):
    m = mesh(3, {1: "10.244.0.0/25", 2: "10.244.0.128/25"})  # node 3 (auto) finds nothing free
    assert m[3].speaker.routed.subnets == ()
    assert any("no subnet" in a for a in m[3].speaker.routed.alarms)
    m[2].speaker.stop(m.now)  # node 2 leaves: its half is free again
    m.pump()
    assert [str(s) for s in m[3].speaker.routed.subnets] == ["10.244.0.128/25"]
    assert table(m[1])["10.244.0.128/25"] == ("10.0.0.3", "10.0.0.3")
