"""A token bucket: at most `burst` events at once, `rate_per_s` a second in the long run.

The bucket starts full. Each `take(now)` first adds the tokens earned since
the last call (never more than `burst`), then spends one if there is one.
Time is the caller's `now` (seconds, monotonic); a `now` earlier than the
last one earns nothing. `refused` counts the takes that found it empty.

    bucket = TokenBucket(rate_per_s=1000, burst=1000, now=clock())
    if bucket.take(clock()): ...        # allowed
"""

from __future__ import annotations


class TokenBucket:
    __slots__ = ("rate_per_s", "burst", "tokens", "stamp", "refused")

    def __init__(self, rate_per_s: float, burst: float, now: float):
        if rate_per_s <= 0 or burst < 1:
            raise ValueError("a token bucket needs a positive rate and a burst of at least 1")
        self.rate_per_s = float(rate_per_s)
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now
        self.refused = 0

    def take(self, now: float) -> bool:
        """Spend one token if there is one (after adding what time earned); whether it was spent."""
        elapsed = now - self.stamp
        tokens = self.tokens
        if elapsed > 0:
            tokens += elapsed * self.rate_per_s
            if tokens > self.burst:
                tokens = self.burst
            self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        self.refused += 1
        return False

    def __repr__(self) -> str:
        return f"TokenBucket({self.rate_per_s:g}/s, burst {self.burst:g}, {self.tokens:.1f} left)"
