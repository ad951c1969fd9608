"""A second connection to an Established peer fails: the session's Adj-RIB-Out must survive.

Seen in the netns tier under load: a node's crossing connect, abandoned after
collision resolution, completes late; the other node accepts it, sends OPEN,
and sees it closed. That SessionDown (never Established) used to clear the
speaker's Adj-RIB-Out for the peer while the Established session went on, so
later withdrawals were never sent and the peer kept stale MACs.
"""

from __future__ import annotations

from overlayd.sim.frames import ethernet
from overlayd.wire.ethernet import BROADCAST
from tests.unit.test_speaker import H1, Mesh, fdb


def test_a_failed_extra_connection_leaves_the_established_session_alone():
    m = Mesh(2)
    m[1].tap(ethernet(BROADCAST, H1, 0x0800, b"x" * 46), m.now)
    m.pump()
    assert fdb(m[2])[H1] == ("10.0.0.1", "bgp")
    peer = m[1].speaker.peers["10.0.0.2"]
    sent = dict(m[1].speaker.stats["10.0.0.2"].adj_out)

    extra = peer.accept(m.now)  # node 2's late connect, which node 2 closes at once
    peer.data_to_send()
    peer.connection_lost(extra, m.now, "connection closed")
    m.pump()
    assert peer.state.value == "Established"
    assert m[1].speaker.stats["10.0.0.2"].adj_out == sent

    m.pump(400)  # keepalives flow; H1 ages out on node 1
    m[1].switch.expire(m.now)
    m[1].speaker.local_events(m[1].switch.pop_events(), m.now)
    m.pump()
    assert peer.state.value == "Established"
    assert H1 not in fdb(m[2])  # the withdrawal reached node 2
