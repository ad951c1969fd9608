"""The speaker between real Switches, its sessions wired back to back in memory on a fake clock."""

from __future__ import annotations

import ipaddress

import pytest

from overlayd.config import parse_config
from overlayd.control.speaker import Speaker
from overlayd.dataplane.switch import Switch
from overlayd.fabric.fdb import Source
from overlayd.sim.frames import arp_request, ethernet, mac
from overlayd.wire.bgp.attributes import Encapsulation, MacMobility, PathAttributes, RouteTarget
from overlayd.wire.bgp.evpn import MacIpRoute, RouteDistinguisher
from overlayd.wire.bgp.messages import encode_message
from overlayd.wire.bgp.update import Update
from overlayd.wire.ethernet import BROADCAST

VNI = 100
H1, H2, H3 = mac(1), mac(2), mac(3)


class Node:
    def __init__(self, i: int, peers: list[int], now: float, rt: str | None = None):
        self.vtep = f"10.0.0.{i}"
        net = {"name": "blue", "vni": VNI, "device": "blue0"}
        if rt:
            net["route_target"] = rt
        self.config = parse_config({
            "node": {"name": f"n{i}", "vtep": self.vtep},
            "bgp": {"asn": 65000, "hold_time": 3,
                    "neighbors": [{"address": f"10.0.0.{p}", "asn": 65000} for p in peers]},
            "networks": [net],
        })
        self.switch = Switch(4789, 300)
        self.switch.add_segment(VNI, "blue", [mac(1000 + i)])
        self.switch.data_learning = False
        self.switch.neighbor_snooping = self.switch.arp_suppression = True
        self.speaker = Speaker(self.config, self.switch, now)

    def tap(self, frame: bytes, now: float):
        out = self.switch.from_tap(VNI, frame, now)
        self.speaker.local_events(self.switch.pop_events(), now)
        return out


def move_bytes(links: list[tuple], now: float) -> bool:
    """Deliver what each end of each (peer a, its conn_id, peer b, its conn_id) link wrote; whether any."""
    moved = False
    for pa, ca, pb, cb in links:
        for src, dst, dc in ((pa, pb, cb), (pb, pa, ca)):
            for _cid, data, _close in src.data_to_send():
                if data:
                    dst.data_received(dc, data, now)
                    moved = True
    return moved


class Mesh:
    """Two or more nodes, every pair connected: a outbound, b inbound."""

    def __init__(self, n: int = 2, rts: dict[int, str] | None = None):
        self.now = 0.0
        ids = list(range(1, n + 1))
        self.nodes = {i: Node(i, [p for p in ids if p != i], self.now, (rts or {}).get(i)) for i in ids}
        self.links: list[tuple] = []
        for a in ids:
            for b in ids:
                if a < b:
                    pa = self.nodes[a].speaker.peers[f"10.0.0.{b}"]
                    pb = self.nodes[b].speaker.peers[f"10.0.0.{a}"]
                    ca = pa.connect_due(self.now)
                    cb = pb.accept(self.now)
                    pa.connection_made(ca, self.now)
                    self.links.append((pa, ca, pb, cb))
        self.pump()

    def pump(self, seconds: float = 0.0) -> None:
        end = self.now + seconds
        while True:
            for _ in range(50):
                moved = move_bytes(self.links, self.now)
                for node in self.nodes.values():
                    node.speaker.poll(self.now)
                if not moved:
                    break
            timers = [t for n in self.nodes.values() if (t := n.speaker.get_timer()) is not None]
            nxt = min(timers, default=None)
            if nxt is None or nxt > end:
                self.now = max(self.now, end)
                return
            self.now = max(self.now, nxt)
            for node in self.nodes.values():
                node.speaker.handle_timer(self.now)

    def __getitem__(self, i: int) -> Node:
        return self.nodes[i]


def fdb(node: Node) -> dict[bytes, tuple[str | None, str]]:
    return {e.mac: (e.vtep, e.source.label) for e in node.switch.fdb}


def test_sessions_establish_and_type3_routes_build_the_flood_lists():
    m = Mesh(3)
    for i, node in m.nodes.items():
        assert all(p.state.value == "Established" for p in node.speaker.peers.values())
        others = sorted(f"10.0.0.{j}" for j in m.nodes if j != i)
        assert list(node.switch.flood.targets(VNI)) == others
        assert node.switch.flood.sources(VNI, others[0]) == frozenset({Source.BGP})


def test_a_local_mac_becomes_a_bgp_fdb_entry_on_the_peer_and_is_withdrawn_when_it_ages():
    m = Mesh(2)
    m[1].tap(ethernet(BROADCAST, H1, 0x0800, b"x" * 46), m.now)
    m.pump()
    assert fdb(m[2])[H1] == ("10.0.0.1", "bgp")
    m.now += 400
    m[1].switch.expire(m.now)
    m[1].speaker.local_events(m[1].switch.pop_events(), m.now)
    m.pump()
    assert H1 not in fdb(m[2])


def test_snooped_ip_becomes_a_mac_ip_route_and_arp_is_answered_on_the_peer():
    m = Mesh(2)
    m[1].tap(arp_request(H1, "192.168.100.1", "192.168.100.9"), m.now)
    m.pump()
    paths = [e.path for e in m[2].speaker.rib if isinstance(e.path.route, MacIpRoute)]
    assert {(p.route.mac, p.route.ip) for p in paths} == {
        (H1, None), (H1, ipaddress.ip_address("192.168.100.1"))}
    # node 2's host asks for 192.168.100.1: answered locally, not flooded
    assert m[2].tap(arp_request(H2, "192.168.100.2", "192.168.100.1"), m.now) is None
    assert m[2].switch.counters.tx_arp_suppressed == 1
    [(vni, reply)] = m[2].switch.pop_replies()
    assert vni == VNI and reply[6:12] == H1 and reply[0:6] == H2


def test_peer_down_withdraws_its_macs_and_flood_list_entry_at_once():
    m = Mesh(3)
    m[3].tap(ethernet(BROADCAST, H3, 0x0800, b"x" * 46), m.now)
    m.pump()
    assert fdb(m[1])[H3] == ("10.0.0.3", "bgp")
    # node 3 falls silent: node 1's hold timer (3 s) expires
    m.links = [link for link in m.links if "10.0.0.3" not in (link[0].peer, link[2].peer)]
    m.pump(3.5)
    assert H3 not in fdb(m[1])
    assert "10.0.0.3" not in m[1].switch.flood.targets(VNI)
    assert m[1].speaker.stats["10.0.0.3"].last_error


def test_a_mac_that_moves_is_announced_with_sequence_plus_one_and_the_old_vtep_withdraws():
    m = Mesh(3)
    m[1].tap(ethernet(BROADCAST, H1, 0x0800, b"x" * 46), m.now)
    m.pump()
    assert fdb(m[3])[H1] == ("10.0.0.1", "bgp")
    m.now += 1
    m[2].tap(ethernet(BROADCAST, H1, 0x0800, b"x" * 46), m.now)  # the host moved to node 2
    m.pump()
    assert fdb(m[3])[H1] == ("10.0.0.2", "bgp")
    assert fdb(m[1])[H1] == ("10.0.0.2", "bgp")  # node 1 follows, its local entry replaced
    winners = [e.path for e in m[3].speaker.rib if e.best and isinstance(e.path.route, MacIpRoute)]
    assert [(p.next_hop, p.sequence) for p in winners if p.route.mac == H1] == [
        (ipaddress.ip_address("10.0.0.2"), 1)]
    assert not [k for k, p in m[1].speaker._originated.items()
                if isinstance(p.route, MacIpRoute) and p.route.mac == H1]


def test_routes_with_a_foreign_route_target_stay_in_the_rib_but_are_not_imported():
    m = Mesh(2, rts={2: "65000:999"})
    m[2].tap(ethernet(BROADCAST, H2, 0x0800, b"x" * 46), m.now)
    m.pump()
    assert H2 not in fdb(m[1])
    assert list(m[1].switch.flood.targets(VNI)) == []
    received = m[1].speaker.rib.paths_from("10.0.0.2")
    assert received and all(m[1].speaker.importer.domain_of(p) is None for p in received)


def _inject(m: Mesh, update: Update) -> None:
    """Send `update` from node 2 to node 1 on their established connection."""
    pa, ca, pb, cb = m.links[0]
    pa.data_received(ca, encode_message(update), m.now)
    m.pump()


def _route(seq: int = 0, **attrs) -> tuple[MacIpRoute, PathAttributes]:
    route = MacIpRoute(RouteDistinguisher.parse("10.0.0.2:100"), H2, None, vni=VNI)
    ext = (RouteTarget.parse("65000:100"), Encapsulation()) + ((MacMobility(seq),) if seq else ())
    return route, PathAttributes(next_hop=ipaddress.ip_address("10.0.0.2"), ext_communities=ext,
                                 local_pref=100, **attrs)


def test_a_route_with_our_own_originator_id_is_rejected():
    m = Mesh(2)
    route, attrs = _route(originator_id=ipaddress.IPv4Address("10.0.0.1"))
    _inject(m, Update(announced=(route,), attributes=attrs))
    assert H2 not in fdb(m[1])
    assert m[1].speaker.stats["10.0.0.2"].routes_rejected == 1


@pytest.mark.parametrize("seq", [0, 7])
def test_an_injected_route_installs_and_its_withdrawal_removes(seq):
    m = Mesh(2)
    route, attrs = _route(seq)
    _inject(m, Update(announced=(route,), attributes=attrs))
    assert fdb(m[1])[H2] == ("10.0.0.2", "bgp")
    _inject(m, Update(withdrawn=(route,)))
    assert H2 not in fdb(m[1])


def test_stop_sends_cease_and_the_peer_drops_our_routes():
    m = Mesh(2)
    m[1].tap(ethernet(BROADCAST, H1, 0x0800, b"x" * 46), m.now)
    m.pump()
    assert H1 in fdb(m[2])
    m[1].speaker.stop(m.now)
    m.pump()
    assert H1 not in fdb(m[2])
    assert "10.0.0.1" not in m[2].switch.flood.targets(VNI)
    assert "shutdown" in m[2].speaker.stats["10.0.0.1"].last_error.lower()
