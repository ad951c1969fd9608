"""MAC mobility of our own MACs (RFC 7432 section 15) and duplicate detection.

Most tests run a few nodes, each a `Rib` with its `LocalMobility`, joined by
a loss-free full mesh that delivers every announcement at once: the
exporter and importer in miniature. Duplicate detection is also checked
against a naive model: a list of move times and a sliding window.
"""

from __future__ import annotations

import dataclasses
from collections import deque
from ipaddress import IPv4Address, ip_address

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.fabric.mobility import (
    FrozenMac,
    LocalMacAdvertised,
    LocalMacWithdrawn,
    LocalMobility,
    MacDuplicateDetected,
    MacUnfrozen,
    StickyMacConflict,
    WithdrawReason,
)
from overlayd.fabric.rib import LOCAL, MAX_SEQUENCE, Path, Rib
from overlayd.wire.bgp.attributes import MacMobility, PathAttributes, RouteTarget
from overlayd.wire.bgp.evpn import MacIpRoute, RouteDistinguisher

VNI = 100
RT = RouteTarget("65000", VNI)
MAC = b"\x02\x00\x00\x00\x00\x0a"


def domain_of(path: Path) -> int | None:
    return VNI if RT in path.attributes.route_targets() else None


class Node:
    """One daemon's control plane: the RIB, mobility, and an exporter that does what they say."""

    def __init__(self, fabric: Fabric, n: int, **mobility):
        self.fabric = fabric
        self.name = f"node{n}"
        self.vtep = ip_address(f"10.0.0.{n}")
        self.router_id = IPv4Address(f"10.0.0.{n}")
        self.rib = Rib(domain_of=domain_of)
        self.mobility = LocalMobility(self.rib.macs, **mobility)
        self.alarms: list = []
        self.sent: list = []  # the sequence numbers advertised, in order
        self.withdrawn: list = []  # why we withdrew, in order

    def route(self, mac: bytes) -> MacIpRoute:
        return MacIpRoute(RouteDistinguisher.for_vtep(self.router_id, VNI), mac, vni=VNI)

    def handle(self, events, now: float) -> None:
        for ev in events:
            if isinstance(ev, LocalMacAdvertised):
                attrs = PathAttributes(next_hop=self.vtep, ext_communities=(RT, MacMobility(ev.sequence)))
                path = Path(self.route(ev.mac), attrs, LOCAL, self.router_id, None, False, now)
                self.sent.append(ev.sequence)
                self.feed(self.rib.update(path, now), now)
                self.fabric.outbox.append((self, "update", path))
            elif isinstance(ev, LocalMacWithdrawn):
                key = self.route(ev.mac).key
                self.withdrawn.append(ev.reason)
                self.feed(self.rib.withdraw(LOCAL, key, now), now)
                self.fabric.outbox.append((self, "withdraw", key))
            else:
                self.alarms.append(ev)

    def feed(self, changes, now: float) -> None:
        self.handle(self.mobility.observe(changes, now), now)

    def receive(self, sender: Node, op: str, payload, now: float) -> None:
        if op == "update":
            path = dataclasses.replace(
                payload, peer=sender.name, peer_router_id=sender.router_id, peer_address=sender.vtep, received=now
            )
            self.feed(self.rib.update(path, now), now)
        else:
            self.feed(self.rib.withdraw(sender.name, payload, now), now)

    def learn(self, mac: bytes, now: float) -> None:
        self.handle(self.mobility.learned(VNI, mac, now), now)
        self.fabric.deliver(now)

    def age_out(self, mac: bytes, now: float) -> None:
        self.handle(self.mobility.gone(VNI, mac, now), now)
        self.fabric.deliver(now)

    def expire(self, now: float) -> None:
        self.handle(self.mobility.expire(now), now)
        self.fabric.deliver(now)

    def where(self, mac: bytes):
        """Where this node sends frames for `mac`: 'here', a VTEP address, or None."""
        winner = self.rib.macs.winner(VNI, mac)
        if winner is None:
            return None
        return "here" if winner.is_local else winner.next_hop


class Fabric:
    def __init__(self, count: int, **mobility):
        self.outbox: deque = deque()
        self.nodes = [Node(self, n + 1, **mobility) for n in range(count)]

    def deliver(self, now: float) -> None:
        while self.outbox:
            sender, op, payload = self.outbox.popleft()
            for node in self.nodes:
                if node is not sender:
                    node.receive(sender, op, payload, now)

    def view(self, mac: bytes) -> list:
        """Where each node believes `mac` lives, as the VTEP address."""
        return [n.vtep if n.where(mac) == "here" else n.where(mac) for n in self.nodes]


def ping_pong(fabric: Fabric, times: list[float]) -> None:
    """A MAC present behind both nodes (a duplicate): each time, the node not advertising it sees it."""
    a, b = fabric.nodes
    a.learn(MAC, times[0])
    for i, t in enumerate(times[1:]):
        learner = b if i % 2 == 0 else a
        learner.learn(MAC, t)


# -- moves ----------------------------------------------------------------------------------


def test_a_mac_moving_a_b_c_converges_with_sequence_plus_one_each_time():
    fabric = Fabric(3)
    a, b, c = fabric.nodes
    a.learn(MAC, 0.0)
    assert fabric.view(MAC) == [a.vtep] * 3 and a.sent == [0]
    b.learn(MAC, 10.0)
    assert fabric.view(MAC) == [b.vtep] * 3 and b.sent == [1]
    assert a.mobility.sequence(VNI, MAC) is None  # A withdrew: its route lost to a higher sequence
    assert a.rib.paths_from(LOCAL) == [] and all(a.name not in n.rib.peers() for n in (b, c))
    c.learn(MAC, 20.0)
    assert fabric.view(MAC) == [c.vtep] * 3 and c.sent == [2]
    assert [n.mobility.sequence(VNI, MAC) for n in fabric.nodes] == [None, None, 2]
    for node in fabric.nodes:
        assert node.rib.macs.winner(VNI, MAC).sequence == 2
    assert [n.mobility.moves(VNI, MAC, 20.0) for n in fabric.nodes] == [1, 2, 1]
    assert [n.withdrawn for n in fabric.nodes] == [[WithdrawReason.MOVED], [WithdrawReason.MOVED], []]
    assert not any(n.alarms for n in fabric.nodes)


def test_learning_again_while_advertising_changes_nothing():
    fabric = Fabric(2)
    a, b = fabric.nodes
    a.learn(MAC, 0.0)
    assert a.mobility.learned(VNI, MAC, 1.0) == []
    assert a.sent == [0]


def test_equal_sequence_lower_vtep_address_wins_and_the_other_withdraws():
    """Both learn the MAC with nothing remote (seq 0) before hearing of each other."""
    fabric = Fabric(2)
    a, b = fabric.nodes  # a = 10.0.0.1, b = 10.0.0.2
    a.handle(a.mobility.learned(VNI, MAC, 0.0), 0.0)
    b.handle(b.mobility.learned(VNI, MAC, 0.0), 0.0)
    fabric.deliver(0.0)
    assert fabric.view(MAC) == [a.vtep, a.vtep]
    assert a.mobility.sequence(VNI, MAC) == 0 and b.mobility.sequence(VNI, MAC) is None
    assert b.rib.paths_from(LOCAL) == []


def test_mac_aging_out_withdraws_without_counting_a_move():
    fabric = Fabric(2)
    a, b = fabric.nodes
    a.learn(MAC, 0.0)
    a.age_out(MAC, 50.0)
    assert fabric.view(MAC) == [None, None]
    assert a.mobility.moves(VNI, MAC, 50.0) == 0
    assert a.mobility.gone(VNI, MAC, 51.0) == []
    b.learn(MAC, 60.0)  # nothing remote left: sequence 0 again
    a.learn(MAC, 70.0)  # moved here: 1 (and b withdrew)
    a.age_out(MAC, 80.0)  # withdrawing our own route is not a move
    assert (a.sent, b.sent) == ([0, 1], [0])
    assert (a.withdrawn, b.withdrawn) == ([WithdrawReason.GONE] * 2, [WithdrawReason.MOVED])
    assert a.mobility.moves(VNI, MAC, 80.0) == 1
    assert fabric.view(MAC) == [None, None]


def test_sequence_saturates_instead_of_wrapping():
    fabric = Fabric(2)
    a, b = fabric.nodes
    a.handle([LocalMacAdvertised(VNI, MAC, MAX_SEQUENCE)], 0.0)  # the exporter's part only
    fabric.deliver(0.0)
    b.learn(MAC, 1.0)
    assert b.sent == [MAX_SEQUENCE]


# -- sticky ----------------------------------------------------------------------------------


def announce_static(node: Node, now: float) -> None:
    """The operator pinned MAC behind `node`: sticky, sequence 0."""
    attrs = PathAttributes(next_hop=node.vtep, ext_communities=(RT, MacMobility(0, sticky=True)))
    static = Path(node.route(MAC), attrs, LOCAL, node.router_id, None, False, now)
    node.feed(node.rib.update(static, now), now)
    node.fabric.outbox.append((node, "update", static))
    node.fabric.deliver(now)


def test_a_sticky_remote_mac_is_not_taken_over_by_local_learning():
    fabric = Fabric(2)
    a, b = fabric.nodes
    announce_static(b, 0.0)
    events = a.mobility.learned(VNI, MAC, 1.0)
    assert len(events) == 1 and isinstance(events[0], StickyMacConflict)
    assert events[0].sticky.next_hop == b.vtep
    assert a.mobility.sequence(VNI, MAC) is None and a.mobility.moves(VNI, MAC, 1.0) == 0


def test_sticky_beats_a_higher_sequence():
    fabric = Fabric(2)
    a, b = fabric.nodes
    ping_pong(fabric, [0, 1, 2])
    assert a.mobility.sequence(VNI, MAC) == 2
    announce_static(b, 3.0)
    assert fabric.view(MAC) == [b.vtep, b.vtep]
    assert a.mobility.sequence(VNI, MAC) is None  # a withdrew: a static MAC cannot move


# -- duplicate detection ----------------------------------------------------------------------


def test_five_moves_within_180_s_freeze_the_mac():
    fabric = Fabric(2)
    a, b = fabric.nodes
    ping_pong(fabric, [0, 10, 20, 30, 40, 50])  # moves at 10..50: b's 5th is its arrival at 50
    assert b.alarms == [MacDuplicateDetected(VNI, MAC, 5, 180.0, 230.0)]
    assert b.mobility.frozen() == [FrozenMac(VNI, MAC, 50, 5, 230.0)]
    assert a.alarms == [] and a.mobility.moves(VNI, MAC, 50) == 4
    # b did not advertise its 5th arrival: the MAC stays where the fabric has it
    assert a.sent == [0, 2, 4] and b.sent == [1, 3]
    assert fabric.view(MAC) == [a.vtep, a.vtep]
    # and the ping-pong stops: b sees it again, nothing is sent
    b.learn(MAC, 60)
    a.learn(MAC, 61)
    assert b.sent == [1, 3] and a.sent == [0, 2, 4]
    assert b.mobility.deadline() == 230.0


def test_moves_spread_out_do_not_freeze():
    fabric = Fabric(2)
    ping_pong(fabric, [0, 50, 100, 150, 200, 250, 300, 350])  # never 5 within 180 s
    assert not any(n.alarms for n in fabric.nodes)
    assert fabric.nodes[1].sent == [1, 3, 5, 7]


def test_the_window_includes_its_end():
    fabric = Fabric(2)
    ping_pong(fabric, [0, 1, 46, 91, 136, 181])  # moves at 1 .. 181: exactly 180 s apart
    assert [type(e) for e in fabric.nodes[1].alarms] == [MacDuplicateDetected]


def test_the_freeze_lifts_after_the_hold_down_and_the_mac_is_advertised_again():
    fabric = Fabric(2)
    a, b = fabric.nodes
    ping_pong(fabric, [0, 10, 20, 30, 40, 50])
    b.expire(229.0)
    assert b.mobility.is_frozen(VNI, MAC)
    b.expire(230.0)
    assert b.alarms[1:] == [MacUnfrozen(VNI, MAC, 50, by_operator=False)]
    assert not b.mobility.frozen()
    assert b.sent == [1, 3, 5]  # still here: advertised as just learned, over a's 4
    assert fabric.view(MAC) == [b.vtep, b.vtep]
    assert b.mobility.moves(VNI, MAC, 230.0) == 1  # the count starts afresh
    assert b.mobility.deadline() is None


def test_the_freeze_lifts_quietly_when_the_mac_has_gone():
    fabric = Fabric(2)
    a, b = fabric.nodes
    ping_pong(fabric, [0, 10, 20, 30, 40, 50])
    b.age_out(MAC, 100.0)
    b.expire(300.0)
    assert b.alarms[1:] == [MacUnfrozen(VNI, MAC, 50, by_operator=False)]
    assert b.sent == [1, 3]


def test_a_permanent_freeze_waits_for_the_operator():
    fabric = Fabric(2, freeze_s=None)
    a, b = fabric.nodes
    ping_pong(fabric, [0, 10, 20, 30, 40, 50])
    assert b.alarms == [MacDuplicateDetected(VNI, MAC, 5, 180.0, None)]
    b.expire(1e9)
    assert b.mobility.is_frozen(VNI, MAC) and b.mobility.deadline() is None
    assert b.mobility.unfreeze(VNI, b"\x00" * 6, 1e9) == []
    b.handle(b.mobility.unfreeze(VNI, MAC, 1e9), 1e9)
    fabric.deliver(1e9)
    assert b.alarms[1] == MacUnfrozen(VNI, MAC, 50, by_operator=True)
    assert b.sent[-1] == 5


def test_detection_thresholds_are_configurable():
    fabric = Fabric(2, max_moves=2, window_s=10.0, freeze_s=60.0)
    ping_pong(fabric, [0, 1, 2])
    assert fabric.nodes[0].alarms == [MacDuplicateDetected(VNI, MAC, 2, 10.0, 62.0)]


def test_a_freeze_on_moving_away_still_withdraws():
    fabric = Fabric(3, max_moves=2)
    a, b, c = fabric.nodes
    c.learn(MAC, 0.0)
    a.learn(MAC, 1.0)  # a: arrival, 1 move
    b.learn(MAC, 2.0)  # a: its route loses, 2 moves -> frozen, and withdrawn
    assert a.alarms == [MacDuplicateDetected(VNI, MAC, 2, 180.0, 182.0)]
    assert a.mobility.sequence(VNI, MAC) is None and a.rib.paths_from(LOCAL) == []
    assert fabric.view(MAC) == [b.vtep] * 3 and b.sent == [2]
    a.learn(MAC, 3.0)  # frozen: not advertised
    assert a.sent == [1] and fabric.view(MAC) == [b.vtep] * 3


@pytest.mark.parametrize(
    "kwargs", [{"max_moves": 0}, {"window_s": 0}, {"freeze_s": 0}, {"freeze_s": -1}]
)
def test_bad_configuration_is_refused(kwargs):
    with pytest.raises(ValueError):
        LocalMobility(Rib(domain_of=domain_of).macs, **kwargs)


def test_move_history_is_forgotten_after_the_window():
    fabric = Fabric(2)
    a, b = fabric.nodes
    ping_pong(fabric, [0, 10])
    assert b.mobility.moves(VNI, MAC, 10) == 1
    b.expire(191.0)
    assert b.mobility._moves == {}
    assert b.mobility.moves(VNI, MAC, 191.0) == 0


# -- against a naive model ------------------------------------------------------------------------


def naive_freeze(times: list[float], max_moves: int, window_s: float):
    """Moves happen at times[1:] at both nodes until one freezes; who freezes, and when."""
    moves = times[1:]
    for k, t in enumerate(moves):
        recent = [u for u in moves[: k + 1] if t - u <= window_s]
        if len(recent) >= max_moves:
            return ("b" if k % 2 == 0 else "a"), t, len(recent)
    return None


@settings(max_examples=300, deadline=None)
@given(
    gaps=st.lists(st.floats(0, 100, allow_nan=False), min_size=1, max_size=14),
    max_moves=st.integers(1, 6),
    window_s=st.sampled_from([30.0, 180.0]),
)
def test_duplicate_detection_against_a_sliding_window(gaps, max_moves, window_s):
    times = [0.0]
    for g in gaps:
        times.append(times[-1] + g)
    fabric = Fabric(2, max_moves=max_moves, window_s=window_s, freeze_s=None)
    ping_pong(fabric, times)
    expected = naive_freeze(times, max_moves, window_s)
    frozen = {n.name[-1]: n.mobility.frozen() for n in fabric.nodes}
    got = [("a" if who == "1" else "b", f[0].since, f[0].moves) for who, f in frozen.items() if f]
    assert got == ([expected] if expected else [])
    # whatever happened, every node agrees where the MAC is, and exactly one advertises it
    a, b = fabric.nodes
    assert a.rib.macs.winner(VNI, MAC) is not None
    assert len(set(fabric.view(MAC))) == 1
    assert [n.mobility.sequence(VNI, MAC) is not None for n in fabric.nodes].count(True) == 1
