"""The simulated TCP under the speakers, and the simulation's route reflector:
streams stall across a partition and resume in order, connects into a
partition time out, a crash is silent, reflected routes carry ORIGINATOR_ID and
CLUSTER_LIST with the next hop unchanged."""

import ipaddress

from overlayd.control.session import State
from overlayd.sim.frames import mac
from overlayd.sim.bgp import BgpSimulator, bgp_fdb
from tests.sim.bgp_support import VNI, announce, attach_hosts, host_ip, mac_paths, tables_match

DELAY = 0.002


def pair(**kwargs):
    sim = BgpSimulator(seed=2, delay_s=DELAY, **kwargs)
    a, b = sim.bgp_mesh(2)
    return sim, a, b


def test_sessions_come_up_through_the_real_fsm_over_the_stream():
    sim, a, b = pair()
    at = sim.run_until(sim.all_established, timeout_s=1, step_s=0.001)
    # SYN, SYN-ACK, OPEN, KEEPALIVE; both connected at once: one connection survives (RFC 4271 6.8)
    assert 3 * DELAY <= at <= 5 * DELAY
    assert sim.stats["tcp_connects"] == 2 and sim.stats["tcp_established"] == 2
    pa, pb = a.speaker.peers[b.vtep], b.speaker.peers[a.vtep]
    # both found the collision on a's connection and closed it with Cease/7; b's (higher BGP ID) survives
    assert pa.counters.as_dict()["tx_notification"] == pb.counters.as_dict()["tx_notification"] == 1
    assert pa.established.inbound and not pb.established.inbound
    sim.run(for_s=DELAY)  # and the type-3 routes that follow
    assert a.switch.flood.targets(VNI) == (b.vtep,) and b.switch.flood.targets(VNI) == (a.vtep,)


def test_a_partition_stalls_the_stream_and_healing_delivers_everything_in_order():
    sim, a, b = pair(hold_time=9)
    sim.run_until(sim.all_established, timeout_s=1)
    sim.run(for_s=1)
    sim.partition(a, b)
    for k in range(1, 6):  # five UPDATEs into the cut, 0.5 s apart
        a.attach(VNI, mac(k), host_ip(k))
        announce(sim, a, mac(k), host_ip(k))
        sim.run(for_s=0.5)
    sim.run(for_s=2)
    assert bgp_fdb(b) == {} and sim.stats["tcp_stalls"] >= 1
    sim.heal(a, b)
    healed = sim.now
    sim.run_until(lambda: len(bgp_fdb(b)) == 5, timeout_s=1, step_s=0.001)
    assert sim.now - healed <= DELAY + 0.001
    assert bgp_fdb(b) == {mac(k): a.vtep for k in range(1, 6)}
    for p in (a.speaker.peers[b.vtep], b.speaker.peers[a.vtep]):  # nothing lost or reordered
        assert p.state is State.ESTABLISHED and p.counters.established_transitions == 1
        assert p.counters.as_dict()["tx_notification"] <= 1  # only the collision's Cease


def test_connects_into_a_partition_time_out_and_succeed_after_healing():
    sim, a, b = pair(connect_retry=5.0)
    sim.partition(a, b)
    sim.run(for_s=4.9)
    assert sim.stats["tcp_connect_failures"] == 0  # still waiting for the SYN-ACK
    sim.run(for_s=0.2)
    assert sim.stats["tcp_connect_failures"] == 2
    assert "connect timed out" in a.speaker.peers[b.vtep].last_error
    assert a.speaker.peers[b.vtep].state is State.ACTIVE
    sim.run(for_s=20)
    sim.heal(a, b)
    healed = sim.now
    at = sim.run_until(sim.all_established, timeout_s=60)
    assert at - healed <= 20  # the connect retry timer's backoff, then one handshake


def test_a_syn_retransmitted_after_the_partition_heals_gets_through():
    sim, a, b = pair(connect_retry=5.0)
    sim.partition(a, b)
    sim.run(for_s=2.5)  # SYNs at 0 and 1 s are lost
    sim.heal(a, b)
    at = sim.run_until(sim.all_established, timeout_s=5, step_s=0.001)
    assert 3.0 < at < 3.0 + 5 * DELAY  # the one at 3 s is not
    assert sim.stats["tcp_connect_failures"] == 0



def test_a_neighbor_that_is_not_configured_is_refused():
    sim = BgpSimulator(seed=2, delay_s=DELAY)
    a = sim.add_bgp_node("a", "10.0.0.1", ["10.0.0.2"])
    sim.add_bgp_node("b", "10.0.0.2", [])  # b does not know a
    sim.run(for_s=1)
    assert sim.stats["tcp_refused"] >= 1
    assert "refused" in a.speaker.peers["10.0.0.2"].last_error
    assert a.speaker.peers["10.0.0.2"].state is not State.ESTABLISHED


def test_a_crash_is_silent_until_the_hold_timer():
    sim, a, b = pair(hold_time=9)
    sim.run_until(sim.all_established, timeout_s=1)
    sim.run(for_s=0.5)
    sim.crash(b)
    sim.run(for_s=5.9)  # the last keepalive from b came at most 3 s before the crash
    assert a.speaker.peers[b.vtep].established is not None
    sim.run(for_s=3.2)
    assert a.speaker.peers[b.vtep].established is None
    assert "hold timer expired" in a.speaker.peers[b.vtep].last_error
    assert a.switch.flood.targets(VNI) == ()


def test_the_reflector_adds_originator_id_and_cluster_list_and_keeps_the_next_hop():
    sim = BgpSimulator(seed=4, delay_s=DELAY)
    nodes = sim.bgp_mesh(4, route_reflectors=["10.255.0.1"])
    rr = sim.add_route_reflector("rr", "10.255.0.1", nodes, cluster_id="192.0.2.1")
    sim.run_until(sim.all_established, timeout_s=1)
    hosts = attach_hosts(sim, nodes, per_node=1)
    sim.run_until(lambda: tables_match(sim, hosts), timeout_s=1, step_s=0.001)
    for origin, host, _ in hosts:
        for n in nodes:
            paths = mac_paths(n, host)
            if n is origin:  # our own route never comes back (the reflector skips its source)
                assert all(p.is_local for p in paths)
                continue
            assert paths and all(
                p.peer == rr.address
                and str(p.next_hop) == origin.vtep
                and p.attributes.originator_id == ipaddress.IPv4Address(origin.vtep)
                and p.attributes.cluster_list == (ipaddress.IPv4Address("192.0.2.1"),)
                for p in paths
            )
    assert all(n.speaker.stats[rr.address].routes_rejected == 0 for n in nodes)
    assert rr.stats["loops_rejected"] == 0 and rr.stats["routes_reflected"] > 0
