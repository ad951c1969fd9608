"""A peer that stops reading (issue 13 items 2 and 3) on a fake clock: the send hold timer
(RFC 9687) and the bound on what one connection buffers.

The I/O side reports the bytes the peer has not acknowledged (Session.send_progress); a peer that
acknowledges nothing for the hold time is dropped with NOTIFICATION 8/0, never sooner than that,
whatever keeps arriving from it. While the I/O side's buffer is over its high-water mark, the
speaker queues no UPDATEs: the routes wait in its per-peer table.
"""

from __future__ import annotations

from overlayd.control.events import SessionDown
from overlayd.control.session import SEND_QUEUE_BYTES, State
from overlayd.sim.frames import ethernet, mac
from overlayd.wire.bgp.messages import Keepalive, Notification, encode_message
from overlayd.wire.bgp.update import decode_update
from overlayd.wire.ethernet import BROADCAST
from tests.unit.bgp_fakes import Clock, messages
from tests.unit.bgp_scripted import VNI, Scripted
from tests.unit.test_bgp_session import drain, established

HOLD_S = 9


def test_send_hold_timer_drops_a_peer_that_acknowledges_nothing_at_the_hold_time():
    clock = Clock()
    s = established(clock, hold_time_s=HOLD_S)
    start = clock.now
    unacked = 0
    first_unacked = None
    while s.state is State.ESTABLISHED:
        # every second: the I/O side reports; the peer's keepalives keep arriving (a one-way cut)
        clock.now += 1.0
        s.handle_timer(clock.now)
        if s.state is not State.ESTABLISHED:
            break
        unacked += len(s.data_to_send())
        if unacked and first_unacked is None:
            first_unacked = clock.now
        s.send_progress(clock.now, unacked)
        if s.state is State.ESTABLISHED:
            s.data_received(encode_message(Keepalive()), clock.now)
        assert clock.now - start < 30
    stalled = clock.now - start
    [down] = [e for e in drain(s) if isinstance(e, SessionDown)]
    assert down.notification_sent == (8, 0) and "send hold timer" in down.reason
    assert isinstance(messages(s.data_to_send())[-1], Notification) and s.should_close()
    # the first keepalive went out at hold/3 and was never acknowledged: down a hold time later
    assert clock.now - first_unacked == HOLD_S  # never sooner, and on time (reports every second)
    print(f"send hold timer: down {clock.now - first_unacked:.1f} s after the first byte the peer did not "
          f"acknowledge ({stalled:.1f} s after the cut; hold time {HOLD_S} s)")


def test_send_hold_timer_waits_while_the_peer_acknowledges_something():
    clock = Clock()
    s = established(clock, hold_time_s=HOLD_S)
    handed = acked = 0
    for _ in range(60):  # a slow reader: a few bytes acknowledged every second, never all
        clock.now += 1.0
        s.handle_timer(clock.now)
        handed += len(s.data_to_send()) + 1000  # (as if an UPDATE went out too)
        s._handed_out += 1000
        acked = min(handed - 1, acked + 10)
        s.send_progress(clock.now, handed - acked)
        s.data_received(encode_message(Keepalive()), clock.now)
    assert s.state is State.ESTABLISHED


def learn(n: Scripted, count: int) -> None:
    for i in range(count):
        n.switch.from_tap(VNI, ethernet(BROADCAST, mac(10_000 + i), 0x0800, b"x" * 46), n.now)
    n.speaker.local_events(n.switch.pop_events(), n.now)


def test_a_paused_connection_gets_no_updates_and_each_flush_is_bounded():
    n = Scripted()
    n.connect()
    n.peer.set_paused(n.conn, True)
    n.received.clear()
    learn(n, 3000)
    n.step()
    assert n.received == []  # nothing queued while the I/O side is full
    n.peer.set_paused(n.conn, False)
    biggest = 0
    routes = 0
    end_of_rib = False
    for _ in range(100):  # what the I/O side does: poll, take the bytes, poll again
        n.speaker.poll(n.now)
        for _conn, data, _close in n.peer.data_to_send():
            biggest = max(biggest, len(data))
            for m in messages(data):
                if isinstance(m, tuple):
                    u = decode_update(m[1])
                    routes += len(u.announced)
                    end_of_rib = end_of_rib or u.end_of_rib
        if not n.speaker.backlog():
            break
    assert routes == 3000 and biggest <= SEND_QUEUE_BYTES + 4096
    print(f"flow control: 3000 routes in chunks of at most {biggest} bytes (bound {SEND_QUEUE_BYTES} + one UPDATE)")
