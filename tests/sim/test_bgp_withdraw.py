"""A node that goes away leaves every table: at once when its daemon stops (Cease),
within the hold time when it dies silently (its peers' hold timers find out)."""

import pytest

from overlayd.control.session import State
from overlayd.sim.bgp import BgpSimulator
from tests.sim.bgp_support import (
    attach_hosts,
    check_tables,
    last_removal,
    sessions_established,
    table_mentions,
    tables_match,
)

DELAY = 0.002
RR1, RR2 = "10.255.0.1", "10.255.0.2"


def build(count=8, *, hold_time=9, reflectors=(), seed=5):
    sim = BgpSimulator(seed=seed, delay_s=DELAY, hold_time=hold_time)
    nodes = sim.bgp_mesh(count, route_reflectors=reflectors)
    for i, rr in enumerate(reflectors):
        sim.add_route_reflector(f"rr{i + 1}", rr, nodes)
    sim.run_until(sim.all_established, timeout_s=5)
    hosts = attach_hosts(sim, nodes, per_node=2)
    sim.run_until(lambda: tables_match(sim, hosts), timeout_s=5, step_s=DELAY)
    sim.run(for_s=1.234)  # somewhere between two keepalives
    return sim, nodes, hosts


def gone_everywhere(sim, victim):
    return lambda: not any(table_mentions(n, victim.vtep) for n in sim.live_nodes())


def removal_times(sim, hosts, victim, start):
    macs = {m for n, m, _ in hosts if n is victim}
    removal = last_removal(sim, victim.vtep, start, macs)
    assert set(removal) == {n.name for n in sim.live_nodes()}, "a node never dropped the victim"
    return min(removal.values()) - start, max(removal.values()) - start


@pytest.mark.parametrize("reflectors", [(), (RR1,)], ids=["full-mesh", "route-reflector"])
def test_a_stopped_node_leaves_every_table_at_once(reflectors):
    sim, nodes, hosts = build(reflectors=reflectors)
    victim = nodes[3]
    start = sim.now
    sim.stop_bgp(victim)
    sim.run_until(gone_everywhere(sim, victim), timeout_s=1, step_s=DELAY)
    first, last = removal_times(sim, hosts, victim, start)
    assert last <= (len(reflectors) + 1) * DELAY + 1e-9  # the Cease, and a reflection
    hosts = [h for h in hosts if h[0] is not victim]
    check_tables(sim, hosts)
    # it stays away: the others' reconnects are refused
    sim.run(for_s=30)
    assert all(p.state is not State.ESTABLISHED for p in victim.speaker.peers.values())
    if not reflectors:
        assert sim.stats["tcp_refused"] > 0
        assert "refused" in nodes[0].speaker.peers[victim.vtep].last_error
    check_tables(sim, hosts)


@pytest.mark.parametrize("hold_time", [3, 9, 30])
@pytest.mark.parametrize("reflectors", [(), (RR1,)], ids=["full-mesh", "route-reflector"])
def test_a_crashed_node_leaves_every_table_within_the_hold_time(reflectors, hold_time):
    sim, nodes, hosts = build(reflectors=reflectors, hold_time=hold_time)
    victim = nodes[5]
    start = sim.now
    sim.crash(victim)
    sim.run(for_s=hold_time * 2 / 3 - 0.1)  # silence shorter than hold time - keepalive: nobody knows
    assert all(table_mentions(n, victim.vtep) for n in sim.live_nodes())
    sim.run_until(gone_everywhere(sim, victim), timeout_s=hold_time, step_s=0.01)
    first, last = removal_times(sim, hosts, victim, start)
    assert hold_time * 2 / 3 <= first and last <= hold_time + (len(reflectors) + 1) * DELAY + 1e-9
    live = sim.live_nodes()
    if reflectors:  # the reflector's hold timer found out; the clients' sessions stay up
        assert "hold timer expired" in sim.host("rr1").speaker.peers[victim.vtep].last_error
        assert all(n.speaker.peers[RR1].established is not None for n in live)
    else:
        assert all("hold timer expired" in n.speaker.peers[victim.vtep].last_error for n in live)
    check_tables(sim, [h for h in hosts if h[0] is not victim])


def test_two_route_reflectors_one_crashes_nothing_is_lost():
    sim, nodes, hosts = build(count=12, reflectors=(RR1, RR2))
    assert sessions_established(sim) == 2 * 2 * 12
    for n in nodes:  # every route twice, once through each reflector; one best
        paths = [e.path for e in n.speaker.rib if not e.path.is_local]
        assert {p.peer for p in paths} == {RR1, RR2}
    start = sim.now
    sim.crash("rr1")
    sim.run(for_s=10)
    assert all(n.speaker.peers[RR1].state is not State.ESTABLISHED for n in nodes)
    assert all(n.speaker.peers[RR2].established is not None for n in nodes)
    # the FDB never lost an entry on the way: only the paths through rr1 went
    assert not [ev for t, _, ev in sim.fabric_log if t >= start]
    check_tables(sim, hosts)
    # and a client that dies now is withdrawn through rr2 alone
    victim = nodes[4]
    start = sim.now
    sim.crash(victim)
    sim.run_until(gone_everywhere(sim, victim), timeout_s=10, step_s=0.01)
    first, last = removal_times(sim, hosts, victim, start)
    assert last <= 9 + 2 * DELAY + 1e-9
    check_tables(sim, [h for h in hosts if h[0] is not victim])
