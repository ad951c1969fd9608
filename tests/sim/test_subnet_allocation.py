"""`subnet: auto` across many simulated nodes that all start at once.

No BGP here: what the speaker would carry is modelled directly. Each node
has a view of the other nodes' claims (the type-5 routes in its table). When
a node's claim changes, the update (a new prefix, or a withdrawal) reaches
every other node 1 to `max_delay` rounds later, chosen per update and
receiver from the seed, and in order per pair of nodes (one BGP session is
one ordered stream). Every round each node first takes in what arrived,
then calls `SubnetLease.observe` with its view.

The nodes must end up with distinct subnets within a few rounds, every move
must be a loss to a lower router ID that the mover saw claiming its subnet,
and the whole run must be a function of the seed.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from ipaddress import IPv4Address, ip_network

from overlayd.fabric.fdb import Source
from overlayd.fabric.prefixes import PrefixEntry, PrefixTable, conflicts
from overlayd.fabric.subnets import (
    NetworkExhausted,
    SubnetCollisionLost,
    SubnetCollisionWon,
    SubnetLease,
)

NET = ip_network("10.244.0.0/16")


@dataclass
class Run:
    rounds: int | None = None  # the round after which nothing changed any more (None: never)
    history: list[dict[IPv4Address, object]] = field(default_factory=list)  # claims after each round
    events: list[tuple[int, IPv4Address, object]] = field(default_factory=list)  # (round, node, event)
    unjustified: list[tuple[int, IPv4Address, object]] = field(default_factory=list)  # moves without cause
    exhausted: int = 0  # times a node was told NetworkExhausted

    @property
    def final(self) -> dict[IPv4Address, object]:
        return self.history[-1]


def simulate(n: int, prefix_length: int, seed: int, max_delay: int = 1, network=NET, max_rounds: int = 100) -> Run:
    rnd = random.Random(seed)
    rids = [IPv4Address(x) for x in rnd.sample(range(1, 2**32 - 1), n)]
    leases = [SubnetLease(network, prefix_length, rid) for rid in rids]
    views: list[dict[int, object]] = [{} for _ in rids]  # node index -> its view {other index: prefix}
    mail: dict[int, list[tuple[int, int, object]]] = {}  # round -> [(to, from, prefix or None)]
    latest: dict[tuple[int, int], int] = {}  # (from, to) -> round of the last update in flight

    def announce(now: int, i: int, prefix) -> None:
        for j in range(n):
            if j != i:
                at = max(latest.get((i, j), 0), now + rnd.randint(1, max_delay))
                latest[(i, j)] = at
                mail.setdefault(at, []).append((j, i, prefix))

    run = Run()
    for i, lease in enumerate(leases):  # round 0: everybody picks, having seen nothing
        announce(0, i, lease.choose(()))
    run.history.append({lease.router_id: lease.current for lease in leases})
    for now in range(1, max_rounds + 1):
        for j, i, prefix in mail.pop(now, []):
            if prefix is None:
                views[j].pop(i, None)
            else:
                views[j][i] = prefix
        for i, lease in enumerate(leases):
            before = lease.current
            seen = [(prefix, rids[k]) for k, prefix in views[i].items()]
            try:
                events = lease.observe(seen)
            except NetworkExhausted as err:  # the node announces nothing and tries again next round
                run.exhausted += 1
                events = [err.gave_up] if err.gave_up else []
            for event in events:
                run.events.append((now, lease.router_id, event))
            if lease.current != before:
                lost = [e for e in events if isinstance(e, SubnetCollisionLost)]
                cause = before is not None and lost and lost[0].winner < lease.router_id and any(
                    rid == lost[0].winner and prefix.overlaps(before) for prefix, rid in seen
                )
                if before is not None and not cause:
                    run.unjustified.append((now, lease.router_id, events))
                announce(now, i, lease.current)
        run.history.append({lease.router_id: lease.current for lease in leases})
        held = [p for p in run.final.values() if p is not None]
        if not mail and len(set(held)) == len(held):
            run.rounds = now
            return run
    return run


def distinct(claims) -> bool:
    held = [p for p in claims.values() if p is not None]
    return len(set(held)) == len(held) and not any(
        a.overlaps(b) for a, b in zip(sorted(held), sorted(held)[1:])
    )


def check(run: Run, n: int, within: int) -> None:
    assert run.rounds is not None and run.rounds <= within, f"not converged within {within} rounds: {run.rounds}"
    assert distinct(run.final)
    assert run.unjustified == []
    for _, node, event in run.events:
        if isinstance(event, SubnetCollisionLost):
            assert event.winner < node
        if isinstance(event, SubnetCollisionWon):
            assert event.loser > node
    # every node's subnet table agrees: no conflict left to report
    table = PrefixTable()
    for rid, prefix in run.final.items():
        if prefix is not None:
            entry = PrefixEntry(prefix, f"192.0.2.{int(rid) % 250}", None, 1, str(rid), "rr", Source.BGP)
            assert conflicts(table, entry, NET) == []
            table.install(entry, 0)
    assert len(table) == len([p for p in run.final.values() if p is not None])


def test_a_hundred_nodes_in_a_slash_16():
    run = simulate(100, 24, seed=1)
    check(run, 100, within=4)
    assert any(isinstance(e, SubnetCollisionLost) for _, _, e in run.events)  # 100 of 256: some collide
    assert all(p is not None for p in run.final.values())


def test_the_lowest_claimant_always_keeps_its_subnet():
    """With every update one round late, the lowest router ID claiming a
    subnet in one round still claims it in the next."""
    run = simulate(120, 24, seed=2)
    check(run, 120, within=5)
    for before, after in zip(run.history, run.history[1:]):
        lowest = {}
        for rid, prefix in before.items():
            if prefix not in lowest or rid < lowest[prefix]:
                lowest[prefix] = rid
        for prefix, rid in lowest.items():
            assert after[rid] == prefix


def test_a_hundred_nodes_with_uneven_delays():
    run = simulate(100, 24, seed=3, max_delay=3)
    check(run, 100, within=15)


def test_deterministic_for_a_seed():
    one, two = simulate(80, 24, seed=4, max_delay=3), simulate(80, 24, seed=4, max_delay=3)
    assert one.history == two.history and one.events == two.events
    other = simulate(80, 24, seed=5, max_delay=3)
    assert other.history != one.history


def test_three_hundred_nodes_with_room():
    run = simulate(300, 26, seed=6, max_delay=2)  # 1024 /26s in the /16
    check(run, 300, within=10)


def test_a_tight_network():
    run = simulate(250, 24, seed=7)  # 250 nodes, 256 /24s
    check(run, 250, within=10)
    assert run.exhausted == 0


def test_a_tight_network_with_uneven_delays():
    run = simulate(250, 24, seed=8, max_delay=3)
    check(run, 250, within=20)


def test_more_nodes_than_subnets():
    """260 nodes for 256 subnets: every subnet held once, four nodes told the network is exhausted."""
    run = simulate(260, 24, seed=9, network=NET)
    assert run.rounds is not None and run.rounds <= 15
    assert distinct(run.final) and run.unjustified == []
    held = [p for p in run.final.values() if p is not None]
    assert len(held) == 256
    assert run.exhausted >= 4


def test_a_small_ipv6_network():
    run = simulate(60, 64, seed=10, network=ip_network("fd00:0:0:ff00::/56"), max_delay=2)  # 256 /64s
    assert run.rounds is not None and run.rounds <= 10
    assert distinct(run.final) and run.unjustified == []
    assert all(p is not None and p.version == 6 for p in run.final.values())
