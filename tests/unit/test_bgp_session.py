"""The BGP session FSM (overlayd.control.session) on a fake clock.

Two ways of driving it: `Wire` (tests/unit/bgp_fakes.py) connects two real
Sessions back to back; the `opened`/`established` helpers below play the
peer by hand with crafted bytes, for the error paths.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlayd.control.events import (
    EndOfRibReceived,
    RouteRefreshReceived,
    SessionDown,
    SessionEstablished,
    UpdateReceived,
)
from overlayd.control.negotiation import Backoff, local_open
from overlayd.control.session import EXPECTED, LocalProtocolError, Session, State
from overlayd.wire.bgp import update as update_codec
from overlayd.wire.bgp.messages import (
    AS_TRANS,
    UPDATE,
    FourOctetAs,
    GracefulRestart,
    Keepalive,
    Multiprotocol,
    Notification,
    Open,
    RouteRefresh,
    RouteRefreshCapability,
    encode_message,
    frame,
    shutdown_communication,
)
from overlayd.wire.bgp.update import Update
from tests.unit.bgp_fakes import A_ID, B_ID, Clock, Wire, config, messages, pair_configs, sample_update, updates

__all__ = ["updates"]  # the fixture

EVPN_CAPS = (Multiprotocol(25, 70), RouteRefreshCapability(), FourOctetAs(65000), GracefulRestart(120, False, ((25, 70, False),)))


def wire(**kw) -> Wire:
    clock = Clock()
    a, b = pair_configs(**kw)
    return Wire(Session(a, clock.now), Session(b, clock.now), clock)


def established_wire(**kw) -> Wire:
    w = wire(**kw)
    w.connect()
    assert w.a.session.state is State.ESTABLISHED and w.b.session.state is State.ESTABLISHED
    return w


def peer_open(asn=65000, hold=9, rid=B_ID, caps=EVPN_CAPS) -> bytes:
    return encode_message(Open(asn, hold, ipaddress.IPv4Address(rid), caps))


def opened(clock: Clock, **kw) -> Session:
    """A session of A's that connected out and sent its OPEN: OpenSent."""
    s = Session(config(**kw), clock.now)
    assert s.wants_connection(clock.now)
    assert s.connection_made(clock.now)
    assert [type(m) for m in messages(s.data_to_send())] == [Open]
    assert s.state is State.OPEN_SENT
    return s


def established(clock: Clock, **kw) -> Session:
    s = opened(clock, **kw)
    s.data_received(peer_open() + encode_message(Keepalive()), clock.now)
    assert s.state is State.ESTABLISHED
    assert isinstance(s.next_event(), SessionEstablished)
    assert messages(s.data_to_send()) == [Keepalive()]
    return s


def drain(s: Session) -> list:
    out = []
    while (e := s.next_event()) is not None:
        out.append(e)
    return out


def assert_notified(s: Session, code: int, subcode: int, data: bytes | None = None, established: bool = False):
    """The session sent NOTIFICATION(code, subcode), asked to close, and reported SessionDown."""
    sent = messages(s.data_to_send())
    assert isinstance(sent[-1], Notification), sent
    assert (sent[-1].code, sent[-1].subcode) == (code, subcode)
    if data is not None:
        assert sent[-1].data == data
    assert s.should_close()
    downs = [e for e in drain(s) if isinstance(e, SessionDown)]
    assert len(downs) == 1
    assert downs[0].notification_sent == (code, subcode)
    assert downs[0].notification_received is None
    assert downs[0].was_established is established
    assert s.state in (State.IDLE, State.ACTIVE)
    assert s.last_error == downs[0].reason
    return downs[0]


# -- reaching Established ---------------------------------------------------------------------


def test_two_sessions_reach_established():
    w = established_wire()
    [ea] = w.a.events
    [eb] = w.b.events
    assert ea == SessionEstablished(str(B_ID), 65000, B_ID, 9, True, local_open(w.b.session.config).capabilities)
    assert eb.remote_router_id == A_ID and eb.peer == str(A_ID)
    assert [type(m) for m in w.a.sent] == [Open, Keepalive]
    assert w.a.session.established_since == w.clock.now
    assert w.a.session.counters.established_transitions == 1
    assert w.a.session.inbound is False and w.b.session.inbound is True


def test_four_octet_as_needs_both_sides():
    w = established_wire(b_four_octet_as=False)
    assert w.a.events[0].four_octet_as is False
    assert w.b.events[0].four_octet_as is False
    assert not any(isinstance(c, FourOctetAs) for c in w.a.events[0].capabilities)


def test_4_octet_as_speaker_and_old_speaker_meet_through_as_trans():
    # RFC 6793 4.1: the old speaker sees AS_TRANS and must be configured with it
    w = established_wire(a_local_asn=4200000001, a_peer_asn=65001, b_local_asn=65001, b_peer_asn=AS_TRANS,
                         b_four_octet_as=False)
    assert w.a.events[0].remote_asn == 65001 and w.a.events[0].four_octet_as is False
    assert w.b.events[0].remote_asn == AS_TRANS


def test_4_octet_as_on_both_sides():
    w = established_wire(a_local_asn=4200000001, a_peer_asn=4200000002, b_local_asn=4200000002,
                         b_peer_asn=4200000001)
    assert w.a.events[0].remote_asn == 4200000002 and w.b.events[0].remote_asn == 4200000001


def test_updates_are_decoded_with_the_negotiated_as_width_and_families(updates, monkeypatch):
    seen = []
    decode = update_codec.decode_update
    monkeypatch.setattr(update_codec, "decode_update",
                        lambda body, four, families: seen.append((four, families)) or decode(body, four, families))
    for four in (True, False):
        w = established_wire(b_four_octet_as=four)
        w.b.session.send_update(sample_update(), w.clock.now)
        w.pump()
        assert seen[-1] == (four, ((25, 70),))
    w = established_wire(families=((25, 70), (1, 1)))
    w.b.session.send_update(sample_update(), w.clock.now)
    w.pump()
    assert seen[-1] == (True, ((25, 70), (1, 1)))


def test_hold_time_is_the_smaller_offer_and_keepalives_come_every_third():
    w = established_wire(a_hold_time_s=30, b_hold_time_s=9)
    assert w.a.events[0].hold_time_s == 9 == w.b.events[0].hold_time_s
    assert w.a.session.negotiated.keepalive_s == 3
    start = w.clock.now
    times = []
    for _ in range(10):
        deadline = w.a.session.get_timer()
        w.advance(deadline - w.clock.now)
        times.append(w.clock.now - start)
    assert times == pytest.approx([3.0 * i for i in range(1, 11)])
    assert [type(m) for m in w.a.sent] == [Open] + [Keepalive] * 11
    assert w.a.session.state is State.ESTABLISHED and w.b.session.state is State.ESTABLISHED


def test_keepalives_keep_the_session_up_for_long():
    w = established_wire()
    w.advance(3600)
    assert w.a.session.state is State.ESTABLISHED
    assert w.a.session.counters.tx_keepalive == 1 + 1200
    assert [e for e in w.a.events + w.b.events if isinstance(e, SessionDown)] == []


def test_hold_time_zero_means_no_keepalives_and_no_hold_timer():
    w = established_wire(a_hold_time_s=0)
    assert w.a.events[0].hold_time_s == 0
    assert w.a.session.get_timer() is None and w.b.session.get_timer() is None
    w.advance(10_000)
    assert w.a.session.state is State.ESTABLISHED
    assert w.a.session.counters.tx_keepalive == 1


# -- timers --------------------------------------------------------------------------------------


def test_hold_timer_expiry_sends_4_0_and_reports_session_down():
    clock = Clock()
    s = established(clock)
    assert s.get_timer() == clock.now + 3  # the keepalive comes first
    for _ in range(2):
        clock.now = s.get_timer()
        s.handle_timer(clock.now)
        assert messages(s.data_to_send()) == [Keepalive()]
    assert s.get_timer() == clock.now + 3  # 9 s after the last message heard: hold expires with the 3rd keepalive
    clock.now += 3
    s.handle_timer(clock.now)
    down = assert_notified(s, 4, 0, established=True)
    assert "hold timer expired" in down.reason
    assert s.state is State.IDLE


def test_a_connection_that_sends_no_open_within_30_s_is_closed():
    # issue 13: not RFC 4271's suggested 4 minutes; a silent connection is a stranger's
    clock = Clock()
    s = opened(clock)
    start = clock.now
    assert s.get_timer() == clock.now + 30
    clock.now += 29.9
    s.handle_timer(clock.now)
    assert s.state is State.OPEN_SENT
    clock.now += 0.1
    s.handle_timer(clock.now)
    assert_notified(s, 4, 0)
    print(f"no OPEN: the connection was closed {clock.now - start:.1f} s after it came up")


def test_keepalive_and_update_restart_the_hold_timer_route_refresh_does_not(updates):
    clock = Clock()
    s = established(clock, hold_time_s=9)
    for msg in (encode_message(Keepalive()), encode_message(sample_update())):
        clock.now += 8
        s.handle_timer(clock.now)
        s.data_received(msg, clock.now)
        assert s._hold_at == clock.now + 9
    hold_at = s._hold_at
    s.data_received(encode_message(RouteRefresh(25, 70)), clock.now + 1)
    assert s._hold_at == hold_at


def test_sending_an_update_restarts_the_keepalive_timer(updates):
    clock = Clock()
    s = established(clock)
    clock.now += 2
    s.send_update(sample_update(), clock.now)
    assert s._keepalive_at == clock.now + 3
    assert [t for t, _ in messages(s.data_to_send())] == [UPDATE]


# -- the OPEN checks -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "open_kw,config_kw,code,subcode,data",
    [
        ({"asn": 65001}, {}, 2, 2, struct.pack("!H", 65001)),  # bad peer AS
        ({"rid": A_ID}, {}, 2, 3, b""),  # iBGP peer with our BGP identifier
        ({"hold": 1}, {}, 2, 6, b""),
        ({"hold": 2}, {}, 2, 6, b""),
        ({"hold": 4}, {"min_hold_time_s": 5}, 2, 6, b""),  # below our minimum
        ({"caps": (Multiprotocol(1, 1), FourOctetAs(65000))}, {}, 2, 7, bytes.fromhex("010400190046")),
        ({"caps": ()}, {}, 2, 7, bytes.fromhex("010400190046")),
    ],
    ids=["bad-peer-as", "own-identifier", "hold-1", "hold-2", "hold-below-minimum", "no-evpn", "no-capabilities"],
)
def test_open_errors(open_kw, config_kw, code, subcode, data):
    clock = Clock()
    s = opened(clock, **config_kw)
    s.data_received(peer_open(**open_kw), clock.now)
    assert_notified(s, code, subcode, data)


@pytest.mark.parametrize(
    "families, caps, missing",
    [
        (((1, 1),), (Multiprotocol(1, 1), FourOctetAs(65000)), None),
        (((1, 1), (2, 1)), (Multiprotocol(2, 1), Multiprotocol(1, 1)), None),
        (((1, 1),), (), None),  # no multiprotocol capability: IPv4 unicast only (RFC 4760 8)
        (((1, 1),), (FourOctetAs(65000),), None),
        (((2, 1),), (), "010400020001"),
        (((1, 1), (2, 1)), (Multiprotocol(1, 1),), "010400020001"),
        (((1, 1),), (Multiprotocol(25, 70),), "010400010001"),  # it names families, not IPv4 unicast
    ],
)
def test_every_family_we_carry_must_be_the_peers(families, caps, missing):
    clock = Clock()
    s = opened(clock, families=families)
    s.data_received(peer_open(caps=caps), clock.now)
    if missing is None:
        assert s.state is State.OPEN_CONFIRM and s.negotiated.families == families
    else:
        assert_notified(s, 2, 7, bytes.fromhex(missing))


def test_end_of_rib_names_its_family(updates):
    families = ((25, 70), (1, 1), (2, 1))
    w = established_wire(families=families)
    for family in families:
        w.a.session.send_update(Update(end_of_rib=True, end_of_rib_family=family), w.clock.now)
    w.pump()
    assert w.b.events[1:] == [EndOfRibReceived(str(A_ID), *f) for f in families]


def test_ebgp_peer_may_share_our_identifier():  # RFC 6286 2.2
    clock = Clock()
    s = opened(clock, peer_asn=65001)
    s.data_received(peer_open(asn=65001, rid=A_ID, caps=(Multiprotocol(25, 70), FourOctetAs(65001))), clock.now)
    assert s.state is State.OPEN_CONFIRM


def test_hold_time_zero_from_the_peer_is_acceptable():
    clock = Clock()
    s = opened(clock, min_hold_time_s=5)
    s.data_received(peer_open(hold=0), clock.now)
    assert s.state is State.OPEN_CONFIRM and s.negotiated.hold_time_s == 0


@pytest.mark.parametrize(
    "raw,code,subcode,data",
    [
        (frame(1, struct.pack("!BHH4sB", 3, 65000, 9, B_ID.packed, 0)), 2, 1, b"\x00\x04"),  # version 3
        (frame(1, struct.pack("!BHH4sB", 4, 65000, 9, bytes(4), 0)), 2, 3, b""),  # identifier 0.0.0.0
        (frame(1, struct.pack("!BHH4sB", 4, 65000, 9, B_ID.packed, 4) + b"\x01\x02\x00\x00"), 2, 4, b""),
        (frame(1, struct.pack("!BHH4sB", 4, 0, 9, B_ID.packed, 0)), 2, 2, b"\x00\x00"),  # AS 0
        (b"\xff" * 15 + b"\x00" + struct.pack("!HB", 19, 4), 1, 1, b""),
        (b"\xff" * 16 + struct.pack("!HB", 5000, 1), 1, 2, struct.pack("!H", 5000)),
        (frame(9, b""), 1, 3, b"\x09"),
        (frame(4, b"\x00"), 1, 2, b"\x00\x14"),
    ],
    ids=["version", "zero-identifier", "auth-parameter", "as-zero", "marker", "length", "type", "keepalive-length"],
)
def test_decoding_errors_send_their_notification(raw, code, subcode, data):
    clock = Clock()
    s = opened(clock)
    s.data_received(raw, clock.now)
    assert_notified(s, code, subcode, data)


# -- messages out of place: FSM errors (RFC 6608) ---------------------------------------------


def test_unexpected_messages_in_open_sent(updates):
    for raw in (encode_message(Keepalive()), encode_message(RouteRefresh(25, 70)), frame(UPDATE, bytes(4))):
        clock = Clock()
        s = opened(clock)
        s.data_received(raw, clock.now)
        assert_notified(s, 5, 1)


def test_unexpected_messages_in_open_confirm():
    for raw in (peer_open(), encode_message(RouteRefresh(25, 70)), frame(UPDATE, bytes(4))):
        clock = Clock()
        s = opened(clock)
        s.data_received(peer_open(), clock.now)
        assert s.state is State.OPEN_CONFIRM
        assert messages(s.data_to_send()) == [Keepalive()]
        s.data_received(raw, clock.now)
        assert_notified(s, 5, 2)


def test_open_in_established():
    clock = Clock()
    s = established(clock)
    s.data_received(peer_open(), clock.now)
    assert_notified(s, 5, 3, established=True)


def test_the_table_of_expected_messages():
    assert EXPECTED[State.OPEN_SENT] == {1, 3}
    assert EXPECTED[State.OPEN_CONFIRM] == {4, 3}
    assert EXPECTED[State.ESTABLISHED] == {2, 4, 5, 3}


def test_nothing_is_read_after_a_notification_is_sent():
    clock = Clock()
    s = opened(clock)
    s.data_received(encode_message(Keepalive()) + peer_open() + encode_message(Keepalive()), clock.now)
    assert_notified(s, 5, 1)
    assert s.counters.rx_open == 0


# -- NOTIFICATION from the peer --------------------------------------------------------------


def test_notification_received_reports_session_down_in_words():
    clock = Clock()
    s = established(clock)
    s.data_received(encode_message(Notification(6, 2, shutdown_communication("upgrade"))), clock.now)
    assert messages(s.data_to_send()) == []  # never answer a NOTIFICATION with one
    assert s.should_close()
    [down] = drain(s)
    assert down == SessionDown(
        "10.0.0.2", "peer sent NOTIFICATION cease/administrative shutdown: 'upgrade'", None, (6, 2), True
    )
    assert s.state is State.IDLE


def test_notification_received_in_open_sent():
    clock = Clock()
    s = opened(clock)
    s.data_received(encode_message(Notification(2, 2)), clock.now)
    [down] = drain(s)
    assert down.notification_received == (2, 2) and not down.was_established
    assert "bad peer AS" in down.reason


# -- Established: routes, End-of-RIB, route refresh -------------------------------------------


def test_updates_flow_both_ways(updates):
    w = established_wire()
    update = sample_update(7)
    w.a.session.send_update(update, w.clock.now)
    w.pump()
    [event] = w.b.events[1:]
    assert isinstance(event, UpdateReceived) and event.peer == str(A_ID)
    assert event.update.announced == update.announced
    assert w.a.session.counters.tx_update == 1 and w.b.session.counters.rx_update == 1


def test_end_of_rib(updates):
    w = established_wire()
    w.a.session.send_update(Update(end_of_rib=True), w.clock.now)
    w.pump()
    assert w.b.events[1:] == [EndOfRibReceived(str(A_ID), 25, 70)]


def test_update_that_resets_the_session(updates):
    clock = Clock()
    s = established(clock)
    s.data_received(frame(UPDATE, b"\x00\x09\x00\x00"), clock.now)  # withdrawn routes overrun the message
    sent = messages(s.data_to_send())
    assert isinstance(sent[-1], Notification) and sent[-1].code in (1, 3)
    [down] = drain(s)
    assert down.was_established and down.notification_sent == (sent[-1].code, sent[-1].subcode)


def test_route_refresh():
    w = established_wire()
    w.a.session.send_route_refresh(w.clock.now)
    w.pump()
    assert w.b.events[1:] == [RouteRefreshReceived(str(A_ID), 25, 70)]
    with pytest.raises(LocalProtocolError):
        w.a.session.send_route_refresh(w.clock.now, 1, 1)


def test_route_refresh_for_a_family_not_negotiated_is_ignored():
    clock = Clock()
    s = established(clock)
    s.data_received(encode_message(RouteRefresh(1, 1)) + encode_message(RouteRefresh(25, 70, subtype=1)), clock.now)
    assert drain(s) == [] and s.state is State.ESTABLISHED
    assert s.counters.rx_route_refresh_ignored == 2


def test_sending_before_established_is_a_local_error(updates):
    clock = Clock()
    s = opened(clock)
    with pytest.raises(LocalProtocolError):
        s.send_update(sample_update(), clock.now)
    with pytest.raises(LocalProtocolError):
        s.send_route_refresh(clock.now)


def test_route_refresh_needs_the_peer_capability():
    clock = Clock()
    s = opened(clock)
    s.data_received(peer_open(caps=(Multiprotocol(25, 70),)) + encode_message(Keepalive()), clock.now)
    assert s.state is State.ESTABLISHED
    with pytest.raises(LocalProtocolError):
        s.send_route_refresh(clock.now)


# -- stop, connection loss, restart --------------------------------------------------------------


def test_stop_sends_cease_admin_shutdown_and_stays_idle():
    w = established_wire()
    w.a.session.stop(w.clock.now, "maintenance")
    w.pump()
    assert w.a.sent[-1] == Notification(6, 2, shutdown_communication("maintenance"))
    assert w.a.events[-1].notification_sent == (6, 2) and w.a.events[-1].was_established
    assert w.b.events[-1].notification_received == (6, 2)
    assert "maintenance" in w.b.events[-1].reason
    w.advance(3600)
    assert w.a.session.state is State.IDLE and not w.a.session.wants_connection(w.clock.now)
    assert w.a.session.get_timer() is None
    w.a.session.start(w.clock.now)
    assert w.a.session.wants_connection(w.clock.now)


def test_stop_without_a_connection_is_quiet():
    clock = Clock()
    s = Session(config(), clock.now)
    s.stop(clock.now)
    assert s.state is State.IDLE and drain(s) == [] and s.data_to_send() == b""


def test_connection_lost_in_established_goes_idle_then_restarts():
    clock = Clock()
    s = established(clock)
    s.connection_lost(clock.now)
    [down] = drain(s)
    assert down.was_established and down.notification_sent is None and down.notification_received is None
    assert s.state is State.IDLE
    clock.now = s.get_timer()
    s.handle_timer(clock.now)
    assert s.state is State.CONNECT and s.wants_connection(clock.now)


def test_connection_lost_in_open_sent_goes_to_active():  # RFC 4271 8.2.2
    clock = Clock()
    s = opened(clock)
    s.connection_lost(clock.now, "reset by peer")
    assert s.state is State.ACTIVE
    assert drain(s)[0].reason == "connection lost: reset by peer"
    assert s.connection_made(clock.now, inbound=True)  # Active still takes the peer's connection
    assert s.state is State.OPEN_SENT


def test_connection_lost_twice_and_data_after_close_are_ignored():
    clock = Clock()
    s = established(clock)
    s.connection_lost(clock.now)
    drain(s)
    s.connection_lost(clock.now)
    s.data_received(encode_message(Keepalive()), clock.now)
    assert drain(s) == [] and s.counters.rx_keepalive == 1


def test_connections_the_session_refuses():
    clock = Clock()
    s = Session(config(), clock.now, start=False)
    assert not s.connection_made(clock.now, inbound=True)  # Idle refuses (RFC 4271 8.2.2)
    s.start(clock.now)
    assert not s.connection_made(clock.now, inbound=False)  # nobody asked for an outbound connection
    assert s.wants_connection(clock.now)
    assert s.connection_made(clock.now, inbound=True)  # the peer's connection wins over our attempt
    assert not s.connection_made(clock.now, inbound=False)  # our attempt completes: already connected


# -- connect retry ------------------------------------------------------------------------------


def failing_delays(s: Session, clock: Clock, n: int) -> list[float]:
    delays = []
    for _ in range(n):
        assert s.wants_connection(clock.now)
        assert not s.wants_connection(clock.now)  # once per attempt
        s.connection_failed(clock.now, "refused")
        assert s.state is State.ACTIVE
        deadline = s.get_timer()
        delays.append(deadline - clock.now)
        clock.now = deadline
        s.handle_timer(clock.now)
        assert s.state is State.CONNECT
    return delays


def test_connect_retry_backs_off_and_caps():
    clock = Clock()
    s = Session(config(connect_retry_s=5, connect_retry_max_s=60), clock.now)
    delays = failing_delays(s, clock, 10)
    for i, d in enumerate(delays):
        base = min(5 * 2**i, 60)
        assert 0.75 * base <= d <= base
    assert all(45 <= d <= 60 for d in delays[4:])  # capped from the 5th failure on
    assert s.counters.connect_attempts == 10 and s.counters.connect_failures == 10
    assert s.last_error == "connect failed: refused"


def test_connect_retry_jitter_is_deterministic_per_seed():
    def run(seed):
        clock = Clock()
        return failing_delays(Session(config(jitter_seed=seed), clock.now), clock, 6)

    assert run(1) == run(1)
    assert run(1) != run(2)


def test_backoff_resets_once_established():
    clock = Clock()
    s = Session(config(), clock.now)
    failing_delays(s, clock, 3)
    assert s.backoff.failures == 3
    s.wants_connection(clock.now)
    s.connection_made(clock.now)
    s.data_received(peer_open() + encode_message(Keepalive()), clock.now)
    assert s.state is State.ESTABLISHED and s.backoff.failures == 0


def test_backoff_alone():
    b = Backoff(2, 10, seed=7)
    for raw in (2, 4, 8, 10, 10, 10):
        assert 0.75 * raw <= b.failed() <= raw
        assert b.delay_s <= raw
    assert b.failures == 6
    b.reset()
    assert b.failures == 0 and b.delay_s == 0


def test_passive_session_never_wants_a_connection():
    clock = Clock()
    s = Session(config(passive=True), clock.now)
    assert s.state is State.ACTIVE
    for _ in range(5):
        assert not s.wants_connection(clock.now)
        clock.now += 100
        s.handle_timer(clock.now)
    assert s.get_timer() is None
    assert s.connection_made(clock.now, inbound=True) and s.state is State.OPEN_SENT
    s.connection_lost(clock.now)
    assert s.state is State.ACTIVE and not s.wants_connection(clock.now) and s.get_timer() is None


def test_failed_session_restarts_after_the_backoff():
    clock = Clock()
    s = opened(clock)
    s.data_received(peer_open(asn=1), clock.now)
    drain(s)
    assert s.state is State.IDLE and not s.wants_connection(clock.now)
    assert 3.75 <= s.get_timer() - clock.now <= 5
    clock.now = s.get_timer()
    s.handle_timer(clock.now)
    assert s.wants_connection(clock.now)


def test_session_without_auto_restart_stays_idle():
    clock = Clock()
    s = Session(config(), clock.now, auto_restart=False)
    s.wants_connection(clock.now)
    s.connection_made(clock.now)
    s.connection_lost(clock.now)
    drain(s)
    assert s.state is State.IDLE and s.get_timer() is None


# -- events are facts ------------------------------------------------------------------------


def test_events_are_frozen():
    w = established_wire()
    with pytest.raises(dataclasses.FrozenInstanceError):
        w.a.events[0].hold_time_s = 3


# -- the peer sends garbage ------------------------------------------------------------------

framed = st.builds(
    lambda t, body, declared: b"\xff" * 16 + struct.pack("!HB", declared if declared else 19 + len(body), t) + body,
    st.integers(0, 7),
    st.binary(max_size=80),
    st.one_of(st.none(), st.integers(0, 0xFFFF)),
)
garbage = st.lists(st.one_of(st.binary(max_size=40), framed), max_size=8)


def check_after_garbage(s: Session, chunks: list[bytes], clock: Clock, was_established: bool) -> None:
    for chunk in chunks:
        s.data_received(chunk, clock.now)  # never raises
    out = messages(s.data_to_send())
    events = drain(s)
    downs = [e for e in events if isinstance(e, SessionDown)]
    assert len(downs) <= 1
    if s.should_close():
        assert len(downs) == 1
        assert s.state in (State.IDLE, State.ACTIVE)
        if downs[0].notification_received is None and downs[0].notification_sent is not None:
            assert isinstance(out[-1], Notification)
            assert (out[-1].code, out[-1].subcode) == downs[0].notification_sent
        assert downs[0].was_established is was_established
    else:
        assert downs == [] and s.connected


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(chunks=garbage)
def test_garbage_in_open_sent_never_raises(chunks):
    clock = Clock()
    check_after_garbage(opened(clock), chunks, clock, was_established=False)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(chunks=garbage)
def test_garbage_in_established_never_raises(updates, chunks):
    clock = Clock()
    check_after_garbage(established(clock), chunks, clock, was_established=True)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(cuts=st.lists(st.integers(1, 200), min_size=1, max_size=20))
def test_any_chunking_of_a_good_stream_reaches_established(cuts):
    clock = Clock()
    s = opened(clock)
    stream = peer_open() + encode_message(Keepalive()) * 3 + encode_message(RouteRefresh(25, 70))
    pos = 0
    for cut in cuts:
        s.data_received(stream[pos : pos + cut], clock.now)
        pos += cut
    s.data_received(stream[pos:], clock.now)
    assert s.state is State.ESTABLISHED
    assert [type(e) for e in drain(s)] == [SessionEstablished, RouteRefreshReceived]


# -- odds and ends ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kw",
    [
        {"local_asn": 0}, {"peer_asn": 2**32}, {"local_asn": 4200000001, "four_octet_as": False},
        {"hold_time_s": 2}, {"hold_time_s": 70000}, {"router_id": "0.0.0.0"}, {"graceful_restart_time_s": 4096},
        {"connect_retry_s": 0}, {"connect_retry_s": 90}, {"families": ()}, {"min_hold_time_s": -1},
    ],
)
def test_config_validation(kw):
    with pytest.raises(ValueError):
        config(**kw)


def test_config_accepts_a_router_id_string_and_knows_ibgp():
    c = config(router_id="10.0.0.1")
    assert c.router_id == A_ID and c.internal and not config(peer_asn=65001).internal


def test_our_open_advertises_what_the_issue_asks():
    o = local_open(config(graceful_restart_time_s=90))
    assert o.capabilities == (
        Multiprotocol(25, 70), RouteRefreshCapability(), FourOctetAs(65000), GracefulRestart(90, False, ((25, 70, False),))
    )
    assert FourOctetAs(65000) not in local_open(config(four_octet_as=False)).capabilities


def test_graceful_restart_is_advertised_only_when_configured():
    # DECISIONS (issue 13): off unless `bgp.graceful_restart` says so; then the R bit while we
    # are restarting and the F bit where our forwarding state survives the restart
    assert not any(isinstance(c, GracefulRestart) for c in local_open(config()).capabilities)
    on = local_open(config(graceful_restart_time_s=30, forwarding_preserved=True), restarting=True)
    assert on.capabilities[-1] == GracefulRestart(30, True, ((25, 70, True),))


def test_the_session_sends_the_r_bit_it_is_given():
    clock = Clock()
    a, b = pair_configs(graceful_restart_time_s=30)
    w = Wire(Session(a, clock.now), Session(b, clock.now), clock)
    w.a.session.restarting = True
    w.connect()
    [opened] = [m for m in w.a.sent if isinstance(m, Open)]
    assert opened.capabilities[-1] == GracefulRestart(30, True, ((25, 70, False),))


def test_start_is_idempotent_and_connection_failed_without_an_attempt_is_ignored():
    clock = Clock()
    s = Session(config(), clock.now)
    s.start(clock.now)
    assert s.state is State.CONNECT
    s.connection_failed(clock.now)
    assert s.state is State.CONNECT and s.counters.connect_failures == 0


def test_counters_as_dict():
    w = established_wire()
    counts = w.a.session.counters.as_dict()
    assert counts["tx_open"] == 1 and counts["rx_keepalive"] == 1 and counts["connect_attempts"] == 1
