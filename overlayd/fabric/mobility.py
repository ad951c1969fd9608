"""Mobility of our own MACs (RFC 7432 section 15): which sequence number to
advertise, when to withdraw, and duplicate MAC detection.

`LocalMobility` sits next to the RIB's `MacSelection` (it reads the remote
candidates for a MAC from it) and answers three questions for the exporter:

- A MAC was learned on one of our TAPs (`learned`). With no remote route for
  it we advertise sequence 0. If other VTEPs advertise it (the MAC moved
  here), we advertise the highest remote sequence + 1 (15: "increment the
  sequence number"), and count a move. If another VTEP advertises it as
  sticky (static), we do not advertise and raise `StickyMacConflict`
  (15.2: a static MAC cannot move; alert the operator).
- The RIB chose another VTEP's route for a MAC we advertise (`observe`):
  its sequence is higher than ours, or equal with a lower VTEP address
  (15.1), or it is sticky. The MAC moved away: we withdraw our route
  (`LocalMacWithdrawn(reason=MOVED)`) and count a move.
- The MAC left our TAP (`gone`, e.g. it aged out of the FDB): withdraw.

Duplicate detection (15.1): a MAC that moves `max_moves` times (default 5)
within `window_s` seconds (default 180; a move exactly `window_s` after the
first still counts) is frozen and `MacDuplicateDetected` raised. While
frozen, learning it locally advertises nothing (we stop taking part in the
ping-pong) and nothing is sent for it; the network keeps the location it
has. The freeze lifts after `freeze_s` (default 180 s, as Junos's
auto-recovery; None: only `unfreeze`, the operator's clear), with
`MacUnfrozen`; if the MAC is still here it is then advertised as if just
learned. Moves are counted where we take part: remote -> here on local
learning, here -> remote when our route loses; moves between two other
VTEPs are theirs to count.

Sequence numbers are compared as plain 32-bit unsigned integers and
saturate at 2**32 - 1 rather than wrap (RFC 7432 15 asks implementations to
handle wraparound): with duplicate detection in place, four billion moves of
one MAC do not happen.

Wiring, in order: feed every change list the `Rib` returns to `observe`;
our own routes go into the `Rib` as `LOCAL` paths carrying
`MacMobility(sequence)`; call `gone` before withdrawing them from the `Rib`.
Time is a parameter; `deadline` says when `expire` next has work.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Union

from overlayd.fabric.rib import MAX_SEQUENCE, MacLocationChanged, MacSelection, Path, decide_mac

DEFAULT_MAX_MOVES = 5
DEFAULT_WINDOW_S = 180.0
DEFAULT_FREEZE_S = 180.0


class WithdrawReason(enum.Enum):
    MOVED = "moved"  # another VTEP's route for the MAC now wins
    GONE = "gone"  # the MAC left our TAP (aged out of the FDB)


@dataclass(frozen=True, slots=True)
class LocalMacAdvertised:
    """We advertise `mac` in `domain` with MAC mobility `sequence` (every type-2 route of the MAC)."""

    domain: int
    mac: bytes
    sequence: int


@dataclass(frozen=True, slots=True)
class LocalMacWithdrawn:
    """We no longer advertise `mac` in `domain`; `winner` is the route that beat ours (MOVED)."""

    domain: int
    mac: bytes
    reason: WithdrawReason
    winner: Path | None = None


@dataclass(frozen=True, slots=True)
class MacDuplicateDetected:
    """`mac` moved `moves` times within `window_s` seconds: frozen until `frozen_until` (None: cleared by hand)."""

    domain: int
    mac: bytes
    moves: int
    window_s: float
    frozen_until: float | None


@dataclass(frozen=True, slots=True)
class MacUnfrozen:
    """The freeze on `mac` lifted (`by_operator`: `unfreeze` was called, else the hold-down ran out)."""

    domain: int
    mac: bytes
    frozen_since: float
    by_operator: bool


@dataclass(frozen=True, slots=True)
class StickyMacConflict:
    """`mac` was learned on our TAP but another VTEP advertises it as sticky (static): not advertised."""

    domain: int
    mac: bytes
    sticky: Path


MobilityEvent = Union[LocalMacAdvertised, LocalMacWithdrawn, MacDuplicateDetected, MacUnfrozen, StickyMacConflict]


@dataclass(frozen=True, slots=True)
class FrozenMac:
    """A row of the duplicate-MAC alarm list: frozen at `since` after `moves` moves, until `until`."""

    domain: int
    mac: bytes
    since: float
    moves: int
    until: float | None


class LocalMobility:
    def __init__(
        self,
        macs: MacSelection,
        *,
        max_moves: int = DEFAULT_MAX_MOVES,
        window_s: float = DEFAULT_WINDOW_S,
        freeze_s: float | None = DEFAULT_FREEZE_S,
    ):
        if max_moves < 1:
            raise ValueError("max_moves must be at least 1")
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        if freeze_s is not None and freeze_s <= 0:
            raise ValueError("freeze_s must be positive (or None: until cleared)")
        self.macs = macs
        self.max_moves = max_moves
        self.window_s = window_s
        self.freeze_s = freeze_s
        self._advertised: dict[tuple[int, bytes], int] = {}  # -> the sequence we advertise
        self._moves: dict[tuple[int, bytes], list[float]] = {}  # -> times of recent moves
        self._frozen: dict[tuple[int, bytes], FrozenMac] = {}
        self._held: set[tuple[int, bytes]] = set()  # learned here while frozen

    # -- queries

    def sequence(self, domain: int, mac: bytes) -> int | None:
        """The sequence we advertise for `mac`, or None when we do not advertise it."""
        return self._advertised.get((domain, mac))

    def advertised(self) -> list[tuple[int, bytes, int]]:
        """(domain, mac, sequence) for every MAC we advertise."""
        return [(d, m, s) for (d, m), s in self._advertised.items()]

    def is_frozen(self, domain: int, mac: bytes) -> bool:
        return (domain, mac) in self._frozen

    def frozen(self) -> list[FrozenMac]:
        """The duplicate-MAC alarms, oldest first."""
        return sorted(self._frozen.values(), key=lambda f: f.since)

    def moves(self, domain: int, mac: bytes, now: float) -> int:
        """Moves of `mac` counted within the window ending at `now`."""
        return len([t for t in self._moves.get((domain, mac), ()) if now - t <= self.window_s])

    def deadline(self) -> float | None:
        """When `expire` next has a freeze to lift (None: nothing scheduled)."""
        times = [f.until for f in self._frozen.values() if f.until is not None]
        return min(times) if times else None

    # -- inputs

    def learned(self, domain: int, mac: bytes, now: float) -> list[MobilityEvent]:
        """`mac` was seen on one of our TAPs in `domain`. Returns what to advertise, if anything.

        Call it when the FDB learns a local MAC, and also when a frame from
        our TAP carries a source MAC that the FDB holds from BGP (the MAC
        moved here; the FDB does not let local learning override BGP).
        Idempotent while we advertise the MAC.
        """
        key = (domain, mac)
        if key in self._frozen:
            self._held.add(key)
            return []
        if key in self._advertised:
            return []
        remote = [p for p in self.macs.candidates(domain, mac) if not p.is_local]
        sticky = [p for p in remote if p.sticky]
        if sticky:
            return [StickyMacConflict(domain, mac, decide_mac(sticky))]
        events: list[MobilityEvent] = []
        sequence = 0
        if remote:
            sequence = min(max(p.sequence for p in remote) + 1, MAX_SEQUENCE)
            events.extend(self._count_move(key, now))
            if key in self._frozen:
                self._held.add(key)
                return events
        self._advertised[key] = sequence
        events.append(LocalMacAdvertised(domain, mac, sequence))
        return events

    def gone(self, domain: int, mac: bytes, now: float) -> list[MobilityEvent]:
        """`mac` left our TAP (aged out): withdraw it if we advertise it."""
        key = (domain, mac)
        self._held.discard(key)
        if self._advertised.pop(key, None) is None:
            return []
        return [LocalMacWithdrawn(domain, mac, WithdrawReason.GONE)]

    def observe(self, changes: Iterable[object], now: float) -> list[MobilityEvent]:
        """Watch the RIB's changes: a MAC we advertise whose winner is now another VTEP moved away.

        Our own route must still be a candidate (else we withdrew it
        ourselves, which is not a move).
        """
        events: list[MobilityEvent] = []
        for change in changes:
            if not isinstance(change, MacLocationChanged):
                continue
            key = (change.domain, change.mac)
            new = change.new
            if key not in self._advertised or new is None or new.is_local:
                continue
            if not any(p.is_local for p in self.macs.candidates(change.domain, change.mac)):
                continue
            del self._advertised[key]
            events.extend(self._count_move(key, now))
            events.append(LocalMacWithdrawn(change.domain, change.mac, WithdrawReason.MOVED, new))
        return events

    def expire(self, now: float) -> list[MobilityEvent]:
        """Lift the freezes whose hold-down ran out; forget moves older than the window."""
        events: list[MobilityEvent] = []
        due = [k for k, f in self._frozen.items() if f.until is not None and f.until <= now]
        for key in sorted(due, key=lambda k: self._frozen[k].until):  # type: ignore[arg-type, return-value]
            events.extend(self._unfreeze(key, now, by_operator=False))
        for key in [k for k, times in self._moves.items() if now - times[-1] > self.window_s]:
            del self._moves[key]
        return events

    def unfreeze(self, domain: int, mac: bytes, now: float) -> list[MobilityEvent]:
        """The operator clears the alarm for `mac` (nothing if it is not frozen)."""
        if (domain, mac) not in self._frozen:
            return []
        return self._unfreeze((domain, mac), now, by_operator=True)

    # -- internals

    def _count_move(self, key: tuple[int, bytes], now: float) -> list[MobilityEvent]:
        times = [t for t in self._moves.get(key, ()) if now - t <= self.window_s]
        times.append(now)
        if len(times) < self.max_moves:
            self._moves[key] = times
            return []
        self._moves.pop(key, None)
        until = None if self.freeze_s is None else now + self.freeze_s
        self._frozen[key] = FrozenMac(key[0], key[1], now, len(times), until)
        return [MacDuplicateDetected(key[0], key[1], len(times), self.window_s, until)]

    def _unfreeze(self, key: tuple[int, bytes], now: float, by_operator: bool) -> list[MobilityEvent]:
        frozen = self._frozen.pop(key)
        events: list[MobilityEvent] = [MacUnfrozen(key[0], key[1], frozen.since, by_operator)]
        if key in self._held:
            self._held.discard(key)
            events.extend(self.learned(key[0], key[1], now))
        return events
