"""Connection collisions (RFC 4271 6.8, RFC 6286 2.3) and the Peer that resolves them (overlayd.control.peer).

`Net` (tests/unit/bgp_fakes.py) carries every TCP connection between two
Peers with its bytes in flight, so connects can cross and messages can be
delivered in any order. `accept_by_hand` plays a peer from raw bytes, for
the cases two overlayd Peers never produce (a peer without graceful restart).
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlayd.control.events import SessionDown, SessionEstablished, UpdateReceived
from overlayd.control.peer import Peer, keeps_outbound
from overlayd.control.session import LocalProtocolError, State
from overlayd.wire.bgp.messages import (
    FourOctetAs,
    GracefulRestart,
    Keepalive,
    Multiprotocol,
    Notification,
    Open,
    encode_message,
)
from tests.unit.bgp_fakes import A_ID, B_ID, Clock, Net, config, messages, pair_configs, sample_update, updates

__all__ = ["updates"]  # the fixture


def net(**kw) -> Net:
    clock = Clock()
    a, b = pair_configs(**kw)
    return Net(Peer(a, clock.now), Peer(b, clock.now), clock)


def crossing(n: Net) -> None:
    """Both Peers connect at the same moment; then everything is delivered."""
    n.start_connects()
    assert all(n.pending.values())
    n.complete_connects()
    n.pump()


def of_type(events, kind):
    return [e for e in events if isinstance(e, kind)]


def assert_one_session(n: Net) -> None:
    [link] = n.open_links()
    for name, peer in n.peers.items():
        assert peer.state is State.ESTABLISHED
        assert peer.established is peer._conns[link.ends[name]]
    return link


def notifications(n: Net, name: str) -> list[tuple[int, int, int]]:
    return [(conn, m.code, m.subcode) for conn, m in n.sent[name] if isinstance(m, Notification)]


# -- two overlayd Peers ------------------------------------------------------------------------


def test_keeps_outbound():
    one, two = ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv4Address("10.0.0.2")
    assert keeps_outbound(two, one, 1, 1) and not keeps_outbound(one, two, 1, 1)
    assert keeps_outbound(one, one, 65002, 65001) and not keeps_outbound(one, one, 65001, 65002)
    assert keeps_outbound(ipaddress.IPv4Address("200.0.0.1"), two, 1, 1)  # compared as unsigned 32-bit


def test_one_connection_no_collision():
    n = net()
    n.start_connects(only="a")
    n.complete_connects()
    n.pump()
    link = assert_one_session(n)
    assert link.initiator == "a"
    assert of_type(n.events["b"], SessionEstablished) and not of_type(n.events["b"], SessionDown)


@pytest.mark.parametrize(
    "kw,survivor",
    [
        ({}, "b"),  # 10.0.0.1 < 10.0.0.2: the connection B opened survives
        ({"a_router_id": "10.0.0.3"}, "a"),
        ({"a_router_id": "10.0.0.7", "b_router_id": "10.0.0.7", "a_local_asn": 65001, "a_peer_asn": 65002,
          "b_local_asn": 65002, "b_peer_asn": 65001}, "b"),  # same identifier (eBGP): the higher AS
        ({"a_router_id": "10.0.0.7", "b_router_id": "10.0.0.7", "a_local_asn": 65003, "a_peer_asn": 65002,
          "b_local_asn": 65002, "b_peer_asn": 65003}, "a"),
    ],
    ids=["lower-id", "higher-id", "same-id-lower-as", "same-id-higher-as"],
)
def test_crossing_connects_keep_the_one_the_higher_speaker_opened(kw, survivor):
    n = net(**kw)
    crossing(n)
    link = assert_one_session(n)
    assert link.initiator == survivor
    for name in "ab":
        assert len(of_type(n.events[name], SessionEstablished)) == 1
        assert of_type(n.events[name], SessionDown) == []  # the logical session never went down
    # the losing connection was closed with Cease/7 (RFC 4271 6.8)
    loser = next(l for l in n.links if l is not link)
    ceases = [(c, code, sub) for name in "ab" for c, code, sub in notifications(n, name)]
    assert ceases and all((code, sub) == (6, 7) for _, code, sub in ceases)
    assert any(c == loser.ends[name] for name in "ab" for c, _, _ in notifications(n, name))
    n.advance(120)
    assert assert_one_session(n) is link
    assert len(n.links) == 2  # nobody tried again


def test_established_session_stays_after_a_crossing_settles():
    n = net()
    crossing(n)
    n.advance(3600)
    assert_one_session(n)
    for name in "ab":
        assert [type(e) for e in n.events[name]] == [SessionEstablished]


def test_outbound_connect_still_under_way_is_abandoned():
    n = net()
    n.start_connects(only="a")  # A's SYN is in flight ...
    n.start_connects(only="b")
    n.complete_connects(only="b")  # ... while B's connection makes it
    n.pump()
    assert n.peers["a"].state is State.ESTABLISHED
    [abandoned] = n.pending["a"]
    n.complete_connects(only="a")  # A's connect completes after all: A closes it at once
    n.pump()
    link = assert_one_session(n)
    assert link.initiator == "b"
    late = next(l for l in n.links if l.initiator == "a")
    assert not late.open
    assert [m for c, m in n.sent["a"] if c == abandoned] == []  # not even an OPEN
    assert of_type(n.events["a"], SessionDown) == []


def test_peer_stop_and_start():
    n = net()
    n.settle()
    assert_one_session(n)
    n.peers["a"].stop(n.clock.now, "maintenance")
    n.pump()
    [down_a] = of_type(n.events["a"], SessionDown)
    [down_b] = of_type(n.events["b"], SessionDown)
    assert down_a.notification_sent == (6, 2) and down_a.was_established
    assert down_b.notification_received == (6, 2) and "maintenance" in down_b.reason
    assert n.peers["a"].state is State.IDLE
    assert n.peers["a"].connect_due(n.clock.now) is None and n.peers["a"].accept(n.clock.now) is None
    n.advance(300)  # B keeps trying; A refuses
    assert n.peers["a"].state is State.IDLE and n.peers["b"].state is not State.ESTABLISHED
    assert n.peers["b"].last_error.startswith("connect failed")
    n.peers["a"].start(n.clock.now)
    n.advance(1)
    assert_one_session(n)


def test_outbound_restarts_after_the_winning_inbound_session_dies():
    n = net()
    crossing(n)
    a = n.peers["a"]
    assert a._outbound.state is State.IDLE and not a._outbound.started  # B's connection won
    n.peers["b"].stop(n.clock.now)
    n.pump()
    assert of_type(n.events["a"], SessionDown)[0].was_established
    assert a._outbound.started
    delay = a.get_timer() - n.clock.now
    assert 0 < delay <= 5  # the backoff, not at once
    n.clock.now += delay
    a.handle_timer(n.clock.now)
    assert a.connect_due(n.clock.now) is not None


def test_passive_peer_never_connects():
    n = net(a_passive=True)
    for _ in range(3):
        assert n.peers["a"].connect_due(n.clock.now) is None
        n.advance(100)
    link = assert_one_session(n)
    assert link.initiator == "b"


def test_both_passive_never_meet():
    n = net(passive=True)
    n.advance(600)
    assert n.links == [] and n.peers["a"].state is State.ACTIVE


def test_keepalives_flow_through_the_peer():
    n = net()
    n.settle()
    before = n.peers["a"].counters.tx_keepalive
    n.advance(30)
    assert n.peers["a"].counters.tx_keepalive - before == 10
    assert n.peers["a"].established_since is not None
    assert n.peers["a"].negotiated.hold_time_s == 9


def test_send_update_through_the_peer(updates):
    n = net()
    with pytest.raises(LocalProtocolError):
        n.peers["a"].send_update(sample_update(), n.clock.now)
    n.settle()
    n.peers["a"].send_update(sample_update(), n.clock.now)
    n.pump()
    [got] = of_type(n.events["b"], UpdateReceived)
    assert got.update.announced == sample_update().announced


def test_unknown_connection_ids_are_harmless():
    clock = Clock()
    a = Peer(config(), clock.now)
    a.data_received(99, b"\xff" * 19, clock.now)
    a.connection_lost(99, clock.now)
    a.connection_failed(99, clock.now)
    assert a.data_to_send() == []
    a.connection_made(98, clock.now)  # a connection nobody asked for is closed
    assert a.data_to_send() == [(98, b"", True)]
    assert a.next_event() is None


# -- a peer played by hand ---------------------------------------------------------------------

def their_open(graceful_restart: bool, restarted: bool = False) -> bytes:
    gr = GracefulRestart(120, restarted, ((25, 70, False),))
    caps = (Multiprotocol(25, 70), FourOctetAs(65000)) + ((gr,) if graceful_restart else ())
    return encode_message(Open(65000, 9, B_ID, caps))


def outputs(peer: Peer) -> dict[int, tuple[list, bool]]:
    return {c: (messages(d), close) for c, d, close in peer.data_to_send()}


def events(peer: Peer) -> list:
    out = []
    while (e := peer.next_event()) is not None:
        out.append(e)
    return out


def accept_by_hand(peer: Peer, now: float, graceful_restart: bool, keepalive: bool = True, restarted=False) -> int:
    conn = peer.accept(now)
    opening = their_open(graceful_restart, restarted)
    peer.data_received(conn, opening + (encode_message(Keepalive()) if keepalive else b""), now)
    return conn


@pytest.mark.parametrize("graceful_restart", [False, True])
def test_second_connection_from_the_peer_while_established_is_a_restart(graceful_restart):
    # RFC 4724 4.2: a new OPEN from a peer whose session is Established: the peer restarted
    # (its old connection was lost without a FIN reaching us); no waiting for the hold timer
    clock = Clock()
    a = Peer(config(passive=True), clock.now)
    c1 = accept_by_hand(a, clock.now, graceful_restart)
    assert [type(e) for e in events(a)] == [SessionEstablished]
    outputs(a)
    clock.now += 0.2
    c2 = accept_by_hand(a, clock.now, graceful_restart, keepalive=False)
    out = outputs(a)
    assert out[c1] == ([], True)  # closed without a NOTIFICATION: the peer is not there any more
    assert [type(m) for m in out[c2][0]] == [Open, Keepalive] and not out[c2][1]
    [down] = events(a)
    assert isinstance(down, SessionDown) and down.was_established and "restarted" in down.reason
    assert down.notification_sent is None and down.notification_received is None
    a.data_received(c2, encode_message(Keepalive()), clock.now)
    assert [type(e) for e in events(a)] == [SessionEstablished]
    assert a.established is a._conns[c2]


def outbound_established(a: Peer, clock: Clock) -> int:
    conn = a.connect_due(clock.now)
    a.connection_made(conn, clock.now)
    a.data_received(conn, their_open(False) + encode_message(Keepalive()), clock.now)
    assert a.established is a._conns[conn]
    return conn


@pytest.mark.parametrize("later_s, restart", [(0.0, False), (0.5, False), (1.0, True), (30.0, True)])
def test_open_on_a_crossing_loser_is_refused_but_a_later_connection_is_a_restart(later_s, restart):
    # a (10.0.0.3) outranks b: a's outbound connection wins a collision. An OPEN from b on a
    # connection b made before (or just after) a's outbound reached Established is the losing
    # end of a crossing connect: Cease/7 for it, the session stays (RFC 4271 6.8). (Seen by
    # a before its outbound reached Established, the collision is resolved on the spot; the
    # event loop may report the accept a moment after, hence the window.) Made later, it can
    # only be b coming back after a restart.
    clock = Clock()
    a = Peer(config(router_id="10.0.0.3"), clock.now)
    y = outbound_established(a, clock)
    assert [type(e) for e in events(a)] == [SessionEstablished]
    clock.now += later_s
    inbound = a.accept(clock.now)
    outputs(a)
    a.data_received(inbound, their_open(False), clock.now)
    out = outputs(a)
    if restart:
        assert out[y] == ([], True)
        [down] = events(a)
        assert down.was_established and "restarted" in down.reason
        a.data_received(inbound, encode_message(Keepalive()), clock.now)
        assert [type(e) for e in events(a)] == [SessionEstablished]
        assert a.established is a._conns[inbound]
        assert a.connect_due(clock.now) is None  # the outbound session waits while the inbound one lives
    else:
        assert out[inbound][0][-1] == Notification(6, 7) and out[inbound][1]
        assert y not in out and events(a) == []
        assert a.established is a._conns[y]


def test_new_connection_from_a_restarted_peer_replaces_the_established_one():
    # RFC 4724: the R bit says the peer restarted; the old connection is dead, the new one goes on
    clock = Clock()
    a = Peer(config(passive=True), clock.now)
    c1 = accept_by_hand(a, clock.now, graceful_restart=True)
    events(a)
    outputs(a)
    c2 = accept_by_hand(a, clock.now, graceful_restart=True, keepalive=False, restarted=True)
    out = outputs(a)
    assert out[c1] == ([], True)  # closed without a NOTIFICATION
    assert [type(m) for m in out[c2][0]] == [Open, Keepalive] and not out[c2][1]
    [down] = events(a)
    assert isinstance(down, SessionDown) and down.was_established and "restarted" in down.reason
    a.data_received(c2, encode_message(Keepalive()), clock.now)
    assert [type(e) for e in events(a)] == [SessionEstablished]
    assert a.established is a._conns[c2]


def test_newer_inbound_connection_replaces_one_still_opening():
    clock = Clock()
    a = Peer(config(passive=True), clock.now)
    c1 = a.accept(clock.now)
    c2 = a.accept(clock.now)
    out = outputs(a)
    assert out[c1] == ([Open(65000, 9, A_ID, out[c1][0][0].capabilities), Notification(6, 7)], True)
    assert [type(m) for m in out[c2][0]] == [Open] and not out[c2][1]
    assert events(a) == []
    a.data_received(c2, their_open(True) + encode_message(Keepalive()), clock.now)
    assert a.state is State.ESTABLISHED


def test_inbound_open_error_is_reported():
    clock = Clock()
    a = Peer(config(passive=True), clock.now)
    c1 = a.accept(clock.now)
    a.data_received(c1, encode_message(Open(65001, 9, B_ID, (Multiprotocol(25, 70),))), clock.now)
    out = outputs(a)
    assert out[c1][0][-1].code == 2 and out[c1][0][-1].subcode == 2 and out[c1][1]
    [down] = events(a)
    assert down.notification_sent == (2, 2) and a.last_error == down.reason
    assert a._conns == {}


# -- any interleaving ends with one session ---------------------------------------------------

actions = st.lists(
    st.one_of(
        st.tuples(st.just("connect"), st.sampled_from("ab")),
        st.tuples(st.just("complete"), st.sampled_from("ab")),
        st.tuples(st.just("deliver"), st.integers(0, 7)),
        st.tuples(st.just("tick"), st.floats(0, 30)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(steps=actions, a_id=st.sampled_from(["10.0.0.1", "10.0.0.3"]))
def test_any_interleaving_converges_on_one_session(steps, a_id):
    n = net(a_router_id=a_id)
    for action, arg in steps:
        if action == "connect":
            n.start_connects(only=arg)
        elif action == "complete":
            n.complete_connects(only=arg)
        elif action == "deliver":
            flights = n.in_flight()
            if flights:
                n.deliver(*flights[arg % len(flights)])
        else:  # time passes, each timer firing on time; no message is late by a hold time
            n.pump()
            end = n.clock.now + arg
            while (timers := [t for p in n.peers.values() if (t := p.get_timer()) is not None]) and min(timers) <= end:
                n.clock.now = max(n.clock.now, min(timers))
                for peer in n.peers.values():
                    peer.handle_timer(n.clock.now)
                n.pump()
            n.clock.now = end
    n.advance(600)
    assert_one_session(n)
    for name in "ab":
        assert [e for e in of_type(n.events[name], SessionDown) if e.was_established] == []
        assert len(of_type(n.events[name], SessionEstablished)) == 1


def test_route_refresh_through_the_peer():
    n = net()
    with pytest.raises(LocalProtocolError):
        n.peers["b"].send_route_refresh(n.clock.now)
    n.settle()
    n.peers["b"].send_route_refresh(n.clock.now)
    n.pump()
    assert [type(e).__name__ for e in n.events["a"]] == ["SessionEstablished", "RouteRefreshReceived"]
