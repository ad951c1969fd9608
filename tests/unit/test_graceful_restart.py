"""Graceful restart (RFC 4724) on a fake clock: overlayd as the helper of a peer played by hand,
and as the restarting side (what its OPENs say). Configured by `bgp.graceful_restart`; off by
default (DECISIONS, issue 13): then a peer whose connection dies is withdrawn at once.
"""

from __future__ import annotations

import pytest

from overlayd.control.session import State
from overlayd.sim.frames import mac
from overlayd.wire.bgp.messages import (
    GracefulRestart,
    Notification,
    Open,
    encode_message,
)
from overlayd.wire.bgp.update import decode_update
from tests.unit.bgp_scripted import PEER, Scripted, peer_caps

M1, M2 = mac(1), mac(2)
RESTART_S = 30


def converged(n: Scripted, caps=None) -> None:
    n.connect(caps or peer_caps(RESTART_S))
    n.send(n.imet())
    n.send(n.announce(M1, M2))
    n.send(n.end_of_rib())
    assert n.fdb() == {M1: PEER, M2: PEER} and n.flood() == [PEER]


def test_without_graceful_restart_a_dead_connection_withdraws_everything_at_once():
    n = Scripted()  # the default: no capability advertised, no helper
    converged(n)
    [our_open] = [m for m in n.received if isinstance(m, Open)]
    assert not any(isinstance(c, GracefulRestart) for c in our_open.capabilities)
    n.lose()
    assert n.fdb() == {} and n.flood() == [] and n.rib_keys() == set()
    print("graceful restart off: the peer's routes left the RIB, FDB and flood list 0 s after its connection died")


def test_helper_keeps_stale_routes_until_end_of_rib_then_removes_the_ones_not_announced_again():
    n = Scripted(graceful_restart_s=RESTART_S)
    converged(n)
    n.lose()  # SIGKILL: the peer's kernel closes the connection, no NOTIFICATION
    n.advance(RESTART_S - 1)
    assert n.fdb() == {M1: PEER, M2: PEER} and n.flood() == [PEER]  # forwarding goes on
    assert len(n.speaker.stale_keys(PEER)) == 3 and n.stats.graceful_restarts == 1
    n.connect(peer_caps(RESTART_S, restarting=True, forwarding=True))
    n.send(n.imet())
    n.send(n.announce(M1))  # M2 went away while the peer was down
    assert n.fdb() == {M1: PEER, M2: PEER}
    assert len(n.speaker.stale_keys(PEER)) == 1
    n.send(n.end_of_rib())
    assert n.fdb() == {M1: PEER} and n.flood() == [PEER]
    assert n.speaker.stale_keys(PEER) == set() and n.stats.stale_removed == 1
    print(f"helper: stale routes kept {RESTART_S - 1} s until End-of-RIB; 1 of 3 removed by it")


def test_helper_removes_stale_routes_at_the_restart_time_if_the_peer_stays_away():
    n = Scripted(graceful_restart_s=RESTART_S)
    converged(n)
    n.lose()
    down = n.now
    n.advance(RESTART_S - 0.01)
    assert n.fdb() == {M1: PEER, M2: PEER}
    n.advance(0.01)
    assert n.fdb() == {} and n.flood() == [] and n.rib_keys() == set()
    assert n.stats.stale_removed == 3
    print(f"helper: stale routes removed {n.now - down:.2f} s after the session went down (restart time {RESTART_S} s)")


def test_helper_drops_stale_routes_when_the_new_open_does_not_say_forwarding_was_kept():
    n = Scripted(graceful_restart_s=RESTART_S)
    converged(n)
    n.lose()
    assert n.fdb() == {M1: PEER, M2: PEER}
    n.connect(peer_caps(RESTART_S, restarting=True, forwarding=False))  # RFC 4724 4.2: F bit 0
    assert n.fdb() == {} and n.speaker.stale_keys(PEER) == set()


@pytest.mark.parametrize("how", ["notification", "hold timer", "no capability"])
def test_helper_does_not_keep_routes_after_a_notification_or_without_the_capability(how):
    n = Scripted(graceful_restart_s=RESTART_S)
    converged(n, peer_caps(None) if how == "no capability" else None)
    if how == "notification":
        n.send(encode_message(Notification(6, 2)))
    elif how == "hold timer":
        n.advance(9.01)
    else:
        n.lose()
    assert n.peer.state is not State.ESTABLISHED
    assert n.fdb() == {} and n.flood() == [] and n.speaker.stale_keys(PEER) == set()


def test_a_restart_detected_by_a_new_open_keeps_the_routes_as_stale():
    # the old connection never closed (its FIN was lost): the new OPEN is the restart (4.2)
    n = Scripted(graceful_restart_s=RESTART_S)
    converged(n)
    old = n.conn
    n.conn = None
    n.connect(peer_caps(RESTART_S, restarting=True))
    assert old in n.closed
    assert n.fdb() == {M1: PEER, M2: PEER} and len(n.speaker.stale_keys(PEER)) == 3
    n.send(n.announce(M1, M2))
    n.send(n.imet())
    n.send(n.end_of_rib())
    assert n.fdb() == {M1: PEER, M2: PEER} and n.speaker.stale_keys(PEER) == set()


def test_restarting_side_sends_the_r_bit_until_its_end_of_rib_then_not_any_more():
    n = Scripted(graceful_restart_s=RESTART_S)
    n.connect(peer_caps(RESTART_S))
    opens = [m for m in n.received if isinstance(m, Open)]
    assert opens[-1].capabilities[-1] == GracefulRestart(RESTART_S, True, ((25, 70, False),))
    updates = [decode_update(body) for m in n.received if isinstance(m, tuple) for body in m[1:]]
    assert updates[-1].end_of_rib  # after our initial table
    n.lose()
    n.connect(peer_caps(RESTART_S))
    opens = [m for m in n.received if isinstance(m, Open)]
    assert opens[-1].capabilities[-1] == GracefulRestart(RESTART_S, False, ((25, 70, False),))


def test_the_f_bit_is_set_only_once_the_io_side_says_the_kernel_kept_forwarding():
    n = Scripted(graceful_restart_s=RESTART_S)
    n.speaker.preserve_forwarding()  # before the sessions start, as the daemon does
    n.connect(peer_caps(RESTART_S))
    opens = [m for m in n.received if isinstance(m, Open)]
    assert opens[-1].capabilities[-1] == GracefulRestart(RESTART_S, True, ((25, 70, True),))
