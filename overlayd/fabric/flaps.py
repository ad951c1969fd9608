"""Routes and sessions that keep changing: a bounded log of recent changes, time as a parameter.

Each change (a best path that moved, a session that went down) is logged with
its key and time. The log holds at most `size` changes and forgets those older
than `window_s`, so its memory is bounded whatever the table's size: one route
changing once among a million is one entry for a while, not a million
counters. A key with at least `threshold` changes in the window is flapping.
A busy table can push a flapping key's older changes out of the log before
the window ends; `size` is large enough that a table must change thousands of
routes within the window for that to happen, and then the flap is seen again
on its next changes.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

FLAP_WINDOW_S = 300.0
ROUTE_FLAP_CHANGES = 6  # best-path changes of one route in the window: three withdraw + announce cycles
SESSION_FLAP_DOWNS = 3  # an Established session that went down this often in the window
LOG_SIZE = 4096


@dataclass(frozen=True, slots=True)
class Flapping:
    """Key `key` changed `changes` times between `first` and `last`; `what` is its latest value."""

    key: Hashable
    changes: int
    first: float
    last: float
    what: Any


class FlapLog:
    def __init__(self, threshold: int, window_s: float = FLAP_WINDOW_S, size: int = LOG_SIZE):
        self.threshold = threshold
        self.window_s = window_s
        self.size = size
        self._log: deque[tuple[float, Hashable]] = deque()
        self._counts: Counter[Hashable] = Counter()
        self._what: dict[Hashable, Any] = {}

    def __len__(self) -> int:
        return len(self._log)

    def record(self, key: Hashable, now: float, what: Any = None) -> None:
        """`key` changed at `now`; `what` describes it (its latest path, say)."""
        self._log.append((now, key))
        self._counts[key] += 1
        self._what[key] = what
        self._forget(now)

    def _forget(self, now: float) -> None:
        log, counts = self._log, self._counts
        while log and (len(log) > self.size or log[0][0] <= now - self.window_s):
            _, key = log.popleft()
            counts[key] -= 1
            if not counts[key]:
                del counts[key]
                del self._what[key]

    def flapping(self, now: float) -> list[Flapping]:
        """The keys with at least `threshold` changes in the last `window_s`, most changes first."""
        self._forget(now)
        hot = {key for key, n in self._counts.items() if n >= self.threshold}
        if not hot:
            return []
        times: dict[Hashable, list[float]] = {}
        for t, key in self._log:
            if key in hot:
                times.setdefault(key, []).append(t)
        found = [Flapping(key, len(ts), ts[0], ts[-1], self._what[key]) for key, ts in times.items()]
        found.sort(key=lambda f: (-f.changes, f.first))
        return found
