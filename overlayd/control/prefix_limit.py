"""Max-prefix: a bound on the routes one BGP peer may have accepted, without I/O.

The speaker keeps one `PrefixLimit` per neighbor (`bgp.neighbors[].max_prefixes`)
and asks it before a route that would be one more in the peer's Adj-RIB-In
goes in (a route replacing the peer's own path for the same NLRI is never one
more). The answer:

    ADMIT      below the limit: in it goes
    REFUSE     at the limit, action `warn`: the route is refused and counted,
               the session stays (the peer is not told; what it announces
               once there is room again is accepted)
    TEARDOWN   at the limit, action `teardown`: the route is refused and the
               speaker closes the session with NOTIFICATION Cease / Maximum
               Number of Prefixes Reached (RFC 4486 2, subcode 1); the peer
               is then kept Idle until `idle_until` (`restart_s` later), when
               the speaker starts it again

`warning(count)` says when the count crosses 90% of the limit on its way up
(once, until it falls below again), for the speaker to log.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

WARN_FRACTION = 0.9


class Verdict(enum.Enum):
    ADMIT = "admit"
    REFUSE = "refuse"
    TEARDOWN = "teardown"


@dataclass
class PrefixLimit:
    limit: int
    action: str = "warn"  # "warn" or "teardown"
    restart_s: float = 60.0
    refused: int = 0  # routes refused at the limit
    teardowns: int = 0  # sessions closed for reaching it
    idle_until: float | None = None  # after a teardown: when the peer may connect again
    warned: bool = False  # the 90% warning was given and the count has not fallen below since
    refused_now: int = 0  # refused since the count was last below 90%

    @classmethod
    def from_config(cls, config) -> PrefixLimit:
        """From a `config.MaxPrefixesConfig`."""
        return cls(config.limit, config.action, config.restart_s)

    @property
    def warn_at(self) -> int:
        return max(1, int(self.limit * WARN_FRACTION))

    def admit(self, count: int, now: float) -> Verdict:
        """May the peer, holding `count` routes, have one more?"""
        if self.idle_until is not None:  # torn down: what was still on its way is dropped
            return Verdict.REFUSE
        if count < self.limit:
            return Verdict.ADMIT
        self.refused += 1
        self.refused_now += 1
        if self.action != "teardown":
            return Verdict.REFUSE
        self.teardowns += 1
        self.idle_until = now + self.restart_s
        return Verdict.TEARDOWN

    def warning(self, count: int) -> bool:
        """True once when `count` reaches 90% of the limit (again after falling below it)."""
        if count < self.warn_at:
            self.warned = False
            self.refused_now = 0
            return False
        if self.warned:
            return False
        self.warned = True
        return True

    def restart_due(self, now: float) -> bool:
        """True once when the idle time after a teardown is over."""
        if self.idle_until is None or now < self.idle_until:
            return False
        self.idle_until = None
        return True
