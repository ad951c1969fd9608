"""The token bucket: a burst at once, the rate in the long run, never more, never less."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlayd.fabric.ratelimit import TokenBucket


def test_a_full_bucket_allows_the_burst_at_once_then_refuses():
    b = TokenBucket(rate_per_s=10, burst=5, now=0.0)
    assert [b.take(0.0) for _ in range(7)] == [True] * 5 + [False] * 2
    assert b.refused == 2


def test_time_earns_tokens_at_the_rate_up_to_the_burst():
    b = TokenBucket(rate_per_s=10, burst=5, now=0.0)
    for _ in range(5):
        b.take(0.0)
    assert b.take(0.1) and not b.take(0.1)  # 0.1 s earns one
    assert sum(b.take(100.0) for _ in range(10)) == 5  # a long pause earns the burst, no more


def test_time_going_backwards_earns_nothing():
    b = TokenBucket(rate_per_s=1, burst=1, now=10.0)
    assert b.take(10.0)
    assert not b.take(5.0) and not b.take(10.5)
    assert b.take(11.0)


@pytest.mark.parametrize("rate, burst", [(0, 1), (-1, 5), (10, 0.5)])
def test_a_bucket_that_could_never_allow_is_refused(rate, burst):
    with pytest.raises(ValueError):
        TokenBucket(rate, burst, 0.0)


def model(rate: int, burst: int, times: list[Fraction]) -> list[bool]:
    """The same bucket in exact arithmetic, tokens recomputed from scratch each time."""
    out, tokens, last = [], Fraction(burst), Fraction(0)
    for t in times:
        tokens = min(Fraction(burst), tokens + max(Fraction(0), t - last) * rate)
        last = max(last, t)
        ok = tokens >= 1
        tokens -= ok
        out.append(ok)
    return out


@given(
    rate=st.integers(1, 1000),
    burst=st.integers(1, 50),
    gaps=st.lists(st.integers(0, 4000), max_size=300),
)
def test_it_decides_as_the_exact_model_and_never_exceeds_burst_plus_rate_times_time(rate, burst, gaps):
    # times on a 1/1024 s grid: exact in binary floating point, so the float bucket may match exactly
    times, t = [], Fraction(0)
    for g in gaps:
        t += Fraction(g, 1024)
        times.append(t)
    b = TokenBucket(rate, burst, 0.0)
    got = [b.take(float(x)) for x in times]
    want = model(rate, burst, times)
    # float rounding may flip a take that lands exactly on a token boundary; never more than that
    assert sum(got) == pytest.approx(sum(want), abs=2)
    assert b.refused == len(got) - sum(got)
    for i in range(len(times)):  # any window [times[i], times[j]] allows at most burst + rate * span
        allowed = 0
        for j in range(i, len(times)):
            allowed += got[j]
            assert allowed <= burst + rate * (times[j] - times[i]) + 1e-9
