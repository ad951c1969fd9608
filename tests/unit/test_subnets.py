"""`subnet: auto`: the choice against a naive model, and the collision rule as examples.

The model of `choose` enumerates every candidate subnet with `ipaddress`,
keeps those overlapping nothing taken, and takes number hash mod (how many
are free): the same answer the lease finds with merged ranges and no list.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Network, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.fabric.subnets import (
    NetworkExhausted,
    SubnetChosen,
    SubnetCollisionLost,
    SubnetCollisionWon,
    SubnetLease,
)

NET = ip_network("10.244.0.0/16")
A, B, C = IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"), IPv4Address("10.0.0.10")


def naive_choice(lease: SubnetLease, taken) -> IPv4Network | None:
    subnets = list(lease.network.subnets(new_prefix=lease.prefix_length))
    free = [s for s in subnets if not any(t.version == s.version and t.overlaps(s) for t in taken)]
    return free[lease.hash() % len(free)] if free else None


# -- choosing ------------------------------------------------------------------------------

small_prefixes = st.builds(
    lambda a, length: IPv4Network((a, length), strict=False),
    st.integers(0xC0A80000 - 0x100, 0xC0A800FF + 0x100),  # around 192.168.0.0/24
    st.integers(22, 32),
)


@settings(max_examples=300, deadline=None)
@given(
    taken=st.lists(small_prefixes | st.just(ip_network("fd00::/64")), max_size=12),
    length=st.integers(26, 29),
    rid=st.integers(1, 2**32 - 1),
    seed=st.none() | st.integers(-5, 5),
    lost=st.integers(0, 3),
)
def test_choice_against_a_list_of_every_subnet(taken, length, rid, seed, lost):
    lease = SubnetLease("192.168.0.0/24", length, IPv4Address(rid), seed=seed)
    lease.lost = lost
    want = naive_choice(lease, taken)
    if want is None:
        with pytest.raises(NetworkExhausted):
            lease.choose(taken)
        assert lease.current is None
    else:
        got = lease.choose(taken)
        assert got == want == lease.current
        assert got.prefixlen == length and got.subnet_of(lease.network)
        assert not any(t.version == 4 and t.overlaps(got) for t in taken)


def test_first_choice_is_the_hash_and_survives_a_restart():
    one = SubnetLease(NET, 24, A)
    two = SubnetLease("10.244.0.0/16", 24, "10.0.0.1")
    assert one.choose(()) == two.choose(()) == one.subnet(one.hash() % 256)
    assert SubnetLease(NET, 24, A, seed=7).choose(()) == SubnetLease(NET, 24, A, seed=7).choose(())


def test_different_nodes_spread_out():
    picks = {SubnetLease(NET, 24, IPv4Address(f"10.0.1.{i}")).choose(()) for i in range(1, 51)}
    assert len(picks) >= 40  # 50 draws from 256: about 45 distinct
    seeded = {SubnetLease(NET, 24, A, seed=s).choose(()) for s in range(20)}
    assert len(seeded) >= 15


def test_keeps_its_subnet_while_free_and_moves_when_taken():
    lease = SubnetLease(NET, 24, A)
    first = lease.choose(())
    other = next(s for s in NET.subnets(new_prefix=24) if s != first)
    assert lease.choose([other]) == first
    moved = lease.choose([first])
    assert moved != first and lease.current == moved


def test_preferred_is_reused_when_free():
    want = ip_network("10.244.42.0/24")
    assert SubnetLease(NET, 24, A, preferred="10.244.42.0/24").choose(()) == want
    lease = SubnetLease(NET, 24, A, preferred=want)
    assert lease.choose([ip_network("10.244.42.128/25")]) != want
    assert lease.observe([]) == []  # has one now


@pytest.mark.parametrize("preferred", ["10.245.1.0/24", "10.244.1.0/25", "fd00::/24"])
def test_a_preferred_subnet_must_fit(preferred):
    with pytest.raises(ValueError, match="is not a /24 of 10.244.0.0/16"):
        SubnetLease(NET, 24, A, preferred=preferred)


@pytest.mark.parametrize("length", [15, 33])
def test_the_size_must_fit(length):
    with pytest.raises(ValueError, match="does not fit"):
        SubnetLease(NET, length, A)


def test_exhaustion():
    lease = SubnetLease("10.244.0.0/30", 31, A)
    assert lease.choose([ip_network("10.244.0.0/31")]) == ip_network("10.244.0.2/31")
    with pytest.raises(NetworkExhausted) as err:
        lease.choose([ip_network("10.244.0.0/31"), ip_network("10.244.0.3/32"), ip_network("10.9.0.0/16")])
    assert str(err.value) == (
        "routing.network 10.244.0.0/30 is exhausted: all 2 /31 subnets overlap the 2 claimed by other nodes"
    )
    assert lease.current is None
    with pytest.raises(NetworkExhausted):
        SubnetLease(NET, 24, A).choose([ip_network("10.0.0.0/8")])  # one supernet takes it all


def test_ipv6_and_a_huge_space():
    lease = SubnetLease("fd00::/16", 64, A)  # 2**48 candidates: never listed
    got = lease.choose([ip_network("10.244.0.0/16")])
    assert got.prefixlen == 64 and got.subnet_of(ip_network("fd00::/16"))
    assert lease.choose([got]) != got
    full = SubnetLease("fd00::/120", 128, A)
    taken = [ip_network("fd00::/121"), ip_network("fd00::80/122"), ip_network("fd00::c0/123")]
    taken += [ip_network(f"fd00::{x:x}/128") for x in range(0xE0, 0x100) if x != 0xF3]
    assert full.choose(taken) == ip_network("fd00::f3/128")


# -- collisions ----------------------------------------------------------------------------


def collide(low, high):
    """Two leases that picked the same subnet before either saw the other."""
    a = SubnetLease(NET, 24, low, preferred="10.244.7.0/24")
    b = SubnetLease(NET, 24, high, preferred="10.244.7.0/24")
    a.choose(())
    b.choose(())
    return a, b


def test_the_lower_router_id_keeps_the_subnet():
    low, high = collide(A, C)
    subnet = ip_network("10.244.7.0/24")
    assert low.observe([(subnet, C)]) == [SubnetCollisionWon(subnet, C)]
    events = high.observe([(subnet, A), ("10.244.8.0/24", "10.0.0.99")])
    assert len(events) == 1 and isinstance(events[0], SubnetCollisionLost)
    lost = events[0]
    assert (lost.old, lost.winner, lost.new) == (subnet, A, high.current)
    assert lost.new not in (subnet, ip_network("10.244.8.0/24"))
    assert high.lost == 1
    # they agree now: nothing more to say
    assert low.observe([(high.current, C)]) == []
    assert high.observe([(subnet, A)]) == []
    assert low.current == subnet


def test_router_ids_compare_as_addresses():
    nine, ten = IPv4Address("10.0.0.9"), IPv4Address("10.0.0.10")
    low, high = collide(nine, ten)
    assert low.observe([("10.244.7.0/24", "10.0.0.10")])[0] == SubnetCollisionWon(ip_network("10.244.7.0/24"), ten)
    assert isinstance(high.observe([("10.244.7.0/24", "10.0.0.9")])[0], SubnetCollisionLost)


def test_a_win_is_said_once_per_loser_while_it_lasts():
    low, _ = collide(A, C)
    subnet = low.current
    assert low.observe([(subnet, C)]) == [SubnetCollisionWon(subnet, C)]
    assert low.observe([(subnet, C)]) == []
    assert low.observe([(subnet, C), (subnet, B)]) == [SubnetCollisionWon(subnet, B)]
    assert low.observe([]) == []
    assert low.observe([(subnet, C)]) == [SubnetCollisionWon(subnet, C)]  # it came back


def test_any_overlap_is_a_collision():
    low, high = collide(A, C)
    assert isinstance(high.observe([("10.244.6.0/23", A)])[0], SubnetCollisionLost)
    assert high.current != ip_network("10.244.7.0/24") and not high.current.overlaps(ip_network("10.244.6.0/23"))
    assert low.observe([("10.244.7.128/25", C)]) == [SubnetCollisionWon(ip_network("10.244.7.0/24"), C)]


def test_losing_avoids_every_claim_and_can_exhaust():
    lease = SubnetLease("10.244.0.0/22", 24, C, preferred="10.244.0.0/24")
    lease.choose(())
    claims = [("10.244.0.0/24", A), ("10.244.1.0/24", B), ("10.244.2.0/24", "10.0.0.3")]
    lost = SubnetCollisionLost(ip_network("10.244.0.0/24"), ip_network("10.244.3.0/24"), A)
    assert lease.observe(claims) == [lost]
    with pytest.raises(NetworkExhausted, match=r"gave up 10.244.3.0/24 to 10.0.0.4 \(lower router ID\)") as err:
        lease.observe(claims + [("10.244.3.0/24", "10.0.0.4")])
    assert err.value.gave_up == SubnetCollisionLost(ip_network("10.244.3.0/24"), None, IPv4Address("10.0.0.4"))
    assert lease.current is None
    with pytest.raises(NetworkExhausted) as err:  # still none: said again, nothing more to give up
        lease.observe(claims + [("10.244.3.0/24", "10.0.0.4")])
    assert err.value.gave_up is None
    assert lease.observe(claims) == [SubnetChosen(ip_network("10.244.3.0/24"), False)]  # room again


def test_ignores_its_own_claim_other_families_and_other_networks():
    lease = SubnetLease(NET, 24, C, preferred="10.244.7.0/24")
    assert lease.observe([("10.244.7.0/24", C), ("fd00::/64", A), ("192.168.0.0/16", A)]) == [
        SubnetChosen(ip_network("10.244.7.0/24"), True)
    ]
    assert lease.observe([("10.244.7.0/24", C), ("10.245.7.0/24", A)]) == []


def test_observe_chooses_around_what_it_sees():
    lease = SubnetLease("10.244.0.0/23", 24, C)
    events = lease.observe([("10.244.0.0/24", A)])
    assert events == [SubnetChosen(ip_network("10.244.1.0/24"), False)]
