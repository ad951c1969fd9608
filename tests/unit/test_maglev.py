"""Maglev hashing against a deliberately naive model of the paper's pseudocode.

The model (`naive_table`) is Eisenbud et al., NSDI 2016, section 3.4,
written out as printed: a permutation[i][j] function, next[i], entry[c] = -1
for empty, the rounds. It shares nothing with the production code but the
two hashes, which it computes itself from their definition.

Disruption. The issue and DECISIONS ask that removing one of N <= 100
backends moves that backend's slots plus at most 1% of the others. Measured
(`test_disruption_figures` prints it), the paper's population does that *on
average* at the default size only up to about 30 backends: the mean grows
to ~1.4% at 100 backends, and single cases of a few backends reach several
percent (a backend whose preference list runs alongside the removed one's
picks up its slots and sheds its own; worst seen in 2,400 random draws:
6.8% at 6 backends). A table of 65537 slots keeps the mean near 0.6% at
100 backends. So the per-draw property below checks the model, the
removed backend's slots, and a ceiling of 10%; the 1% figure is checked
where it holds, as a mean over seeded draws.
"""

from __future__ import annotations

import random
import statistics
import time
from hashlib import blake2b

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.fabric.maglev import (
    DEFAULT_SIZE,
    MaglevTable,
    is_prime,
    moved,
    offset_skip,
)

# -- the model ----------------------------------------------------------------------------


def naive_table(names: list[str], size: int) -> list[str | None]:
    """Pseudocode 1 of the paper, backends taken in sorted order."""
    names = sorted(names)
    n = len(names)

    def h(name, person):
        return int.from_bytes(blake2b(name.encode(), digest_size=8, person=person).digest(), "big")

    offset = [h(name, b"overlayd-offset") % size for name in names]
    skip = [h(name, b"overlayd-skip") % (size - 1) + 1 for name in names]

    def permutation(i, j):
        return (offset[i] + j * skip[i]) % size

    entry = [-1] * size
    if n == 0:
        return [None] * size
    next_ = [0] * n
    filled = 0
    while True:
        for i in range(n):
            c = permutation(i, next_[i])
            while entry[c] >= 0:
                next_[i] += 1
                c = permutation(i, next_[i])
            entry[c] = i
            next_[i] += 1
            filled += 1
            if filled == size:
                return [names[e] for e in entry]


def slots(table: MaglevTable) -> list[str | None]:
    return list(table.slots) if table.slots else [None] * table.size


def others_moved(before: list, after: list, gone: str) -> float:
    """The fraction of the slots not owned by `gone` in `before` that name another backend in `after`."""
    kept = [(a, b) for a, b in zip(before, after) if a != gone]
    return sum(a != b for a, b in kept) / len(kept)


# -- strategies ---------------------------------------------------------------------------

endpoints = st.builds(
    "10.244.{}.{}:{}".format, st.integers(0, 255), st.integers(1, 254), st.integers(1, 65535)
) | st.builds("[fd00::{:x}]:{}".format, st.integers(1, 0xFFFF), st.integers(1, 65535))


def backend_sets(min_size, max_size):
    """Lists of distinct backends, their number drawn first so that large ones come up too."""
    return st.integers(min_size, max_size).flatmap(lambda n: st.lists(endpoints, min_size=n, max_size=n, unique=True))


PRIMES = [2, 3, 5, 7, 13, 101, 251, 1021, DEFAULT_SIZE]
CEILING = 0.10  # per draw, see the module docstring


# -- the table is the paper's -------------------------------------------------------------


@given(names=backend_sets(0, 40), size=st.sampled_from(PRIMES))
@settings(max_examples=150, deadline=None)
def test_population_is_the_papers(names, size):
    if len(names) > size:
        with pytest.raises(ValueError, match="do not fit"):
            MaglevTable(names, size)
        return
    assert slots(MaglevTable(names, size)) == naive_table(names, size)


@given(names=backend_sets(1, 100))
@settings(max_examples=30, deadline=None)
def test_every_backend_gets_an_even_share(names):
    shares = MaglevTable(names).shares()
    assert set(shares) == set(names)
    low = DEFAULT_SIZE // len(names)
    assert set(shares.values()) <= {low, low + 1}  # "within a few percent": within one slot
    assert sum(shares.values()) == DEFAULT_SIZE


@given(names=backend_sets(2, 100), data=st.data())
@settings(max_examples=40, deadline=None)
def test_removing_and_adding_a_backend_against_the_model(names, data):
    """Removing `one` from `names` and adding it back are the same two tables, read both ways."""
    one = data.draw(st.sampled_from(names))
    rest = [n for n in names if n != one]
    full, less = naive_table(names, DEFAULT_SIZE), naive_table(rest, DEFAULT_SIZE)
    assert slots(MaglevTable(names)) == full and slots(MaglevTable(rest)) == less
    # removing: its slots all go to the others, and few of the others' slots move
    assert one not in less
    assert others_moved(full, less, one) <= CEILING
    # adding: every slot it takes was another's, and the others' slots that do not go to it stay put
    assert sum(a != b for a, b in zip(less, full) if b == one) == full.count(one)
    assert sum(a != b for a, b in zip(less, full) if b != one) / (DEFAULT_SIZE - full.count(one)) <= CEILING


def _draw(rng: random.Random, n: int) -> list[str]:
    names: set[str] = set()
    while len(names) < n:
        names.add(f"10.244.{rng.randrange(256)}.{rng.randrange(1, 255)}:{rng.randrange(1, 65536)}")
    return sorted(names)


def _mean_disruption(n: int, size: int, draws: int, seed: int) -> float:
    """Mean fraction of the others' slots moved by removing one backend of `n`.

    Adding that backend back is the same pair of tables the other way round,
    so the same figure.
    """
    rng = random.Random(seed)
    fractions = []
    for _ in range(draws):
        names = _draw(rng, n)
        one = rng.choice(names)
        full, less = MaglevTable(names, size), MaglevTable([x for x in names if x != one], size)
        fractions.append(others_moved(list(full.slots), list(less.slots), one))
        assert moved(full, less) == sum(a != b for a, b in zip(full.slots, less.slots))
    return statistics.mean(fractions)


def test_disruption_figures():
    """The 1% bound as a mean over seeded draws: where it holds, and the figure at 100 backends."""
    print(f"\nmaglev disruption, mean fraction of the other backends' slots moved (size {DEFAULT_SIZE}):")
    means = {}
    for n in (2, 3, 5, 10, 20, 30, 50, 100):
        means[n] = _mean_disruption(n, DEFAULT_SIZE, draws=5, seed=n)
        print(f"  {n:3d} backends: removing one moves {means[n]:.2%} of the others")
    assert all(m <= 0.01 for n, m in means.items() if n <= 20)
    assert means[100] <= 0.016  # ~1.4%: above the 1% of the issue, see the module docstring
    big = _mean_disruption(100, 65537, draws=3, seed=100)
    print(f"  100 backends, size 65537: {big:.2%}")
    assert big <= 0.01


# -- the rest -------------------------------------------------------------------------------


def test_build_time_for_100_backends():
    names = [f"10.244.{i // 200}.{i % 200 + 1}:8080" for i in range(100)]
    best = min(_timed(lambda: MaglevTable(names)) for _ in range(3))
    print(f"\nmaglev build, {DEFAULT_SIZE} slots, 100 backends: {best * 1e3:.1f} ms (best of 3)")
    assert best < 0.1


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_deterministic_across_instances_and_listing_order():
    names = ["10.244.1.5:8080", "10.244.2.7:8080", "10.244.3.9:8080"]
    a, b = MaglevTable(names), MaglevTable(list(reversed(names)))
    assert a.slots == b.slots and a.backends == tuple(names)
    # pinned: the same on every node and every Python run (blake2b, never hash())
    assert [a.lookup(h) for h in (0, 1, 2, 12345, 2**64 + 7)] == [
        a.slots[0], a.slots[1], a.slots[2], a.slots[12345 % DEFAULT_SIZE], a.slots[(2**64 + 7) % DEFAULT_SIZE]
    ]
    assert a.shares() == {"10.244.1.5:8080": 5461, "10.244.2.7:8080": 5460, "10.244.3.9:8080": 5460}
    # each backend's first choice is its own
    assert [offset_skip(n, DEFAULT_SIZE) for n in names] == [(3732, 9154), (7963, 1516), (7941, 13024)]
    assert [a.slots[3732], a.slots[7963], a.slots[7941]] == names


def test_no_backend_looks_up_none():
    table = MaglevTable([])
    assert table.lookup(42) is None and len(table) == 0 and table.shares() == {}
    assert moved(table, MaglevTable(["10.244.1.5:80"])) == DEFAULT_SIZE
    assert moved(table, MaglevTable([])) == 0


@pytest.mark.parametrize("size", [0, 1, 4, 9, 16383, 65536])
def test_a_size_that_is_not_prime_is_refused(size):
    with pytest.raises(ValueError, match=f"size {size} is not a prime"):
        MaglevTable(["10.244.1.5:80"], size)


def test_is_prime():
    assert [n for n in range(40) if is_prime(n)] == [2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37]
    assert is_prime(16381) and is_prime(65537) and not is_prime(16383)


def test_a_backend_listed_twice_is_refused():
    with pytest.raises(ValueError, match="10.244.1.5:80 is listed twice"):
        MaglevTable(["10.244.1.5:80", "10.244.2.5:80", "10.244.1.5:80"])


def test_tables_of_other_sizes_are_not_compared():
    with pytest.raises(ValueError, match="cannot be compared"):
        moved(MaglevTable(["a"], 13), MaglevTable(["a"], 17))
