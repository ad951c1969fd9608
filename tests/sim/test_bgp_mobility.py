"""Hosts that move between nodes (RFC 7432 section 15) in a BGP mesh on the fake clock:
the new node advertises sequence + 1, everybody follows, the old node withdraws;
ARP keeps being answered locally; a MAC that flaps is frozen and alarmed."""

from ipaddress import IPv4Address as ip_address

import pytest

from overlayd.sim.frames import arp_reply, arp_request, parse_arp
from overlayd.sim.bgp import BgpSimulator, bgp_fdb
from overlayd.wire.arp import OP_REPLY
from tests.sim.bgp_support import VNI, announce, attach_hosts, check_tables, mac_paths, tables_match

DELAY = 0.002


def mesh(count=6, *, route_reflector=False, seed=7, **kwargs):
    sim = BgpSimulator(seed=seed, delay_s=DELAY)
    if route_reflector:
        nodes = sim.bgp_mesh(count, route_reflectors=["10.255.0.1"], **kwargs)
        sim.add_route_reflector("rr", "10.255.0.1", nodes)
    else:
        nodes = sim.bgp_mesh(count, **kwargs)
    sim.run_until(sim.all_established, timeout_s=5)
    hosts = attach_hosts(sim, nodes, per_node=2)
    sim.run_until(lambda: tables_match(sim, hosts), timeout_s=5, step_s=DELAY)
    return sim, nodes, hosts


def move(sim, host, ip, old, new):
    old.detach(VNI, host)
    new.attach(VNI, host, ip)
    announce(sim, new, host, ip)


def settled(sim, host, at):
    """Every other node places `host` behind `at`, and no RIB still holds another VTEP's route for it."""
    others = [n for n in sim.live_nodes() if n is not at]
    return all(bgp_fdb(n).get(host) == at.vtep for n in others) and all(
        str(p.next_hop) == at.vtep for n in others for p in mac_paths(n, host))


@pytest.mark.parametrize("route_reflector", [False, True], ids=["full-mesh", "route-reflector"])
def test_a_moved_mac_converges_with_sequence_plus_one(route_reflector):
    sim, nodes, hosts = mesh(route_reflector=route_reflector)
    b, host, ip = hosts[2]  # node 1's host with an IP: a MAC route and a MAC/IP route
    c = nodes[4]
    assert b.speaker.mobility.sequence(VNI, host) == 0
    for step, (old, new) in enumerate([(b, c), (c, b)], start=1):
        move(sim, host, ip, old, new)
        sim.run_until(lambda: settled(sim, host, new), timeout_s=1, step_s=DELAY)
        assert new.speaker.mobility.sequence(VNI, host) == step
        assert old.speaker.mobility.sequence(VNI, host) is None  # withdrawn: the RIB has only new's
        for n in sim.live_nodes():
            paths = mac_paths(n, host)
            assert {p.route.ip for p in paths} == {None, ip_address(ip)}  # both routes moved
            assert all(p.sequence == step and str(p.next_hop) == new.vtep for p in paths), n.name
        hosts[2] = (new, host, ip)
        check_tables(sim, hosts)
    assert not any(n.speaker.mobility.frozen() for n in nodes)


def test_arp_for_a_moved_host_is_still_answered_locally():
    sim, nodes, hosts = mesh(4)
    b, host, ip = hosts[2]
    asker, asker_ip = hosts[0][1], hosts[0][2]
    a = nodes[0]

    def ask():
        before = a.counters.tx_arp_suppressed
        sent = sim.send(a, VNI, arp_request(asker, asker_ip, ip))
        reply = parse_arp(a.delivered[VNI][-1])
        answered = a.counters.tx_arp_suppressed == before + 1 and sent.vteps == ()
        return answered and reply.op == OP_REPLY and reply.sender_mac == host

    assert ask()
    move(sim, host, ip, b, nodes[3])
    sim.run_until(lambda: settled(sim, host, nodes[3]), timeout_s=1, step_s=DELAY)
    sim.run(for_s=0.1)
    assert a.switch.neighbors.lookup(VNI, ip_address(ip)).mac == host
    assert ask()
    # and the answer leads to the right place
    assert sim.send(a, VNI, arp_reply(asker, asker_ip, host, ip)).vteps == (nodes[3].vtep,)


def test_a_mac_flapping_five_times_within_180s_is_frozen():
    sim, nodes, hosts = mesh(4)
    b, host, ip = hosts[2]
    c = nodes[2]
    where = [b, c]
    for flap in range(1, 6):  # b -> c -> b -> c -> b -> c, 20 s apart
        old, new = where[(flap - 1) % 2], where[flap % 2]
        sim.run(for_s=20)
        move(sim, host, ip, old, new)
        sim.run(for_s=1)
        if flap < 5:
            assert settled(sim, host, new)
            assert new.speaker.mobility.sequence(VNI, host) == flap
    frozen = c.speaker.mobility.frozen()  # c took part in five moves: learned 3 times, lost twice
    assert [(f.mac, f.moves) for f in frozen] == [(host, 5)]
    assert any("duplicate MAC" in alarm for alarm in c.speaker.alarms)
    assert not b.speaker.mobility.frozen()
    # frozen: c stays out of the ping-pong, the network keeps the location it had
    assert c.speaker.mobility.sequence(VNI, host) is None
    assert b.speaker.mobility.sequence(VNI, host) == 4
    assert all(bgp_fdb(n).get(host) == b.vtep for n in nodes if n not in (b, c))
    assert c.speaker.rib.macs.winner(VNI, host).next_hop == ip_address(b.vtep)
    # the freeze lifts after 180 s; the host is still at c, so c advertises it again and wins
    sim.run(for_s=181)
    assert not c.speaker.mobility.frozen()
    sim.run_until(lambda: settled(sim, host, c), timeout_s=5)
    assert c.speaker.mobility.sequence(VNI, host) == 5
