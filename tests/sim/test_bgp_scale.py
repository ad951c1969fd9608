"""Fifty overlayd node cores speaking BGP EVPN in one process, on the fake clock:
a full iBGP mesh (1225 sessions) and fifty clients of one route reflector.

Each scenario runs its phases on one converged mesh (building and converging
fifty speakers is the expensive part): the tables converge to the union of
announcements, unicast goes to exactly one VTEP, a MAC move converges with
sequence + 1, and a node that dies leaves every table within the hold time
(one that stops, at once).
"""

import ipaddress

import pytest

from overlayd.sim.frames import ethernet
from overlayd.sim.bgp import BgpSimulator, bgp_fdb
from tests.sim.bgp_support import (
    VNI,
    announce,
    attach_hosts,
    check_tables,
    last_removal,
    mac_paths,
    sessions_established,
    table_mentions,
    tables_match,
)

pytestmark = pytest.mark.slow

N = 50
HOLD = 9
DELAY = 0.001
RR = "10.255.0.1"
EPSILON = 0.01


def converge_hosts(sim, nodes):
    hosts = attach_hosts(sim, nodes, per_node=2)
    start = sim.now
    done = sim.run_until(lambda: tables_match(sim, hosts), timeout_s=5, step_s=DELAY)
    assert sim.converged()
    return hosts, done - start


def unicast_goes_to_one_vtep(sim, hosts, pairs=25):
    sent = []
    while len(sent) < pairs:
        (a, src, _), (b, dst, _) = sim.rng.sample(hosts, 2)
        if a is b:
            continue
        s = sim.send(a, VNI, ethernet(dst, src, 0x0800, b"data"))
        assert s.vteps == (b.vtep,) and not s.flooded, f"{a.name} -> {b.name}: {s.vteps}"
        sent.append((s, b))
    sim.run(for_s=0.1)
    for s, b in sent:
        assert [d.node for d in sim.deliveries if d.sent is s] == [b.name]


def move_mac(sim, hosts, i, to):
    """Host `i` leaves its node for `to` and speaks there; wait until every table follows."""
    old, host, ip = hosts[i]
    before = old.speaker.mobility.sequence(VNI, host)
    old.detach(VNI, host)
    to.attach(VNI, host, ip)
    hosts[i] = (to, host, ip)
    start = sim.now
    announce(sim, to, host, ip)
    others = [n for n in sim.live_nodes() if n is not to]
    done = sim.run_until(lambda: all(bgp_fdb(n).get(host) == to.vtep for n in others), timeout_s=5, step_s=DELAY)
    withdrawn = sim.run_until(  # and the old node's withdrawal is everywhere
        lambda: not any(str(p.next_hop) == old.vtep for n in others for p in mac_paths(n, host)),
        timeout_s=5, step_s=DELAY)
    assert withdrawn - done <= 2 * DELAY + EPSILON
    check_tables(sim, hosts)
    assert to.speaker.mobility.sequence(VNI, host) == before + 1
    assert old.speaker.mobility.sequence(VNI, host) is None  # the old node withdrew it
    for n in others:
        winner = n.speaker.rib.macs.winner(VNI, host)
        assert (str(winner.next_hop), winner.sequence) == (to.vtep, before + 1), n.name
        assert all(str(p.next_hop) == to.vtep for p in mac_paths(n, host)), f"{n.name} still has {old.name}'s route"
    return done - start


def lose(sim, hosts, victim, *, crash: bool):
    """`victim` crashes (silent) or stops (Cease); returns (first, last) time a table dropped it."""
    start = sim.now
    macs = {m for n, m, _ in hosts if n is victim}
    (sim.crash if crash else sim.stop_bgp)(victim)
    live = sim.live_nodes()
    sim.run_until(lambda: not any(table_mentions(n, victim.vtep) for n in live), timeout_s=HOLD + 5, step_s=0.01)
    hosts[:] = [h for h in hosts if h[0] is not victim]
    check_tables(sim, hosts)
    removal = last_removal(sim, victim.vtep, start, macs)
    assert set(removal) == {n.name for n in live}
    return min(removal.values()) - start, max(removal.values()) - start


def test_full_mesh_of_fifty_converges_moves_and_forgets():
    sim = BgpSimulator(seed=50, delay_s=DELAY, hold_time=HOLD)
    nodes = sim.bgp_mesh(N)
    established = sim.run_until(sim.all_established, timeout_s=10, step_s=DELAY)
    assert sessions_established(sim) == N * (N - 1)  # 1225 sessions, seen from both ends
    assert established < 0.01
    assert sim.stats["tcp_connects"] == N * (N - 1)  # both ends connect at once: collisions resolved
    assert all(p.counters.established_transitions == 1 for n in nodes for p in n.speaker.peers.values())

    hosts, converged = converge_hosts(sim, nodes)
    assert converged <= 2 * DELAY  # one UPDATE, one hop
    unicast_goes_to_one_vtep(sim, hosts)

    assert move_mac(sim, hosts, 2 * 5, nodes[7]) <= 2 * DELAY

    first, last = lose(sim, hosts, nodes[-1], crash=True)
    assert HOLD * 2 / 3 - EPSILON <= first and last <= HOLD + EPSILON  # the hold timers found out
    first, last = lose(sim, hosts, nodes[-2], crash=False)
    assert last <= 2 * DELAY + EPSILON  # Cease: at once

    sim.run(for_s=2 * HOLD)  # nothing else falls over
    assert sessions_established(sim) == (N - 2) * (N - 3)
    check_tables(sim, hosts)


def test_fifty_clients_of_one_route_reflector():
    sim = BgpSimulator(seed=51, delay_s=DELAY, hold_time=HOLD)
    nodes = sim.bgp_mesh(N, route_reflectors=[RR])
    rr = sim.add_route_reflector("rr", RR, nodes)
    sim.run_until(sim.all_established, timeout_s=10, step_s=DELAY)
    assert sessions_established(sim) == 2 * N

    hosts, converged = converge_hosts(sim, nodes)
    assert converged <= 3 * DELAY  # client -> reflector -> clients
    a, b = nodes[3], nodes[4]
    path = b.speaker.rib.macs.winner(VNI, hosts[2 * 3][1])  # a's first host, seen at b
    assert path.peer == RR and str(path.next_hop) == a.vtep  # next hop unchanged (RFC 4456)
    assert path.attributes.originator_id == ipaddress.IPv4Address(a.vtep)
    assert path.attributes.cluster_list == (ipaddress.IPv4Address(RR),)
    assert rr.stats["loops_rejected"] == 0
    unicast_goes_to_one_vtep(sim, hosts)

    assert move_mac(sim, hosts, 2 * 5, nodes[7]) <= 3 * DELAY

    first, last = lose(sim, hosts, nodes[-1], crash=True)
    assert HOLD * 2 / 3 - EPSILON <= first and last <= HOLD + EPSILON  # the reflector's hold timer
    first, last = lose(sim, hosts, nodes[-2], crash=False)
    assert last <= 3 * DELAY + EPSILON
