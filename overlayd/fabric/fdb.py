"""The forwarding database: (VNI, MAC) -> where that MAC lives.

An entry says a MAC is `local` (seen on one of our TAP devices, vtep None)
or behind a remote VTEP. Each entry remembers how it was learned; a source
of lower rank never overrides a higher one (static config beats the control
plane, which beats data-plane learning), so a forged inner source MAC cannot
move a MAC that the operator or BGP put somewhere. One exception: a MAC seen
on our own TAP replaces a `bgp` entry, because a host that moved here is
here; the control plane then advertises it with a higher MAC mobility
sequence number (RFC 7432 section 15) and the other VTEPs follow. Data-plane entries
(`local`, `data`) age out after `aging_s` without traffic; the others stay
until removed by whoever added them.

Time is a parameter; every mutation returns what changed (`MacLearned`,
`MacMoved`, `MacRemoved`) and nothing else happens behind the caller's back.

Local entries are bounded per VNI (`limit_local`): at most `max_macs` of
them (`networks[].max_local_macs`), and new ones at most `rate_per_s` a
second with a burst (a token bucket per VNI: one TAP, or one kernel bridge).
A local MAC beyond either is not learned -- `learn` returns `MacRefused.FULL`
or `MacRefused.RATE` instead of a change, counted in the VNI's `LocalLimit`
-- so it is never announced either; its frames are still forwarded, like a
switch whose table is full. What is in the table stays and refreshes as
usual: a cap never evicts. A MAC moving here from a remote VTEP counts as a
new local entry. The MACs given as `exempt` (the device's own) are never
refused. Both checks run only for a MAC the table would add or move: a
refresh costs what it did.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from overlayd.fabric.ratelimit import TokenBucket

DEFAULT_AGING_S = 300.0


class Source(enum.Enum):
    """How an FDB entry was learned; `rank` orders who may override whom."""

    LOCAL = ("local", 0)  # source MAC of a frame read from our TAP
    DATA = ("data", 0)  # inner source MAC of a VXLAN frame from a remote VTEP
    BGP = ("bgp", 1)  # an EVPN MAC/IP route
    STATIC = ("static", 2)  # the config file

    def __init__(self, label: str, rank: int):
        self.label = label
        self.rank = rank

    @property
    def ages(self) -> bool:
        return self.rank == 0

    def may_replace(self, old: Source) -> bool:
        """Whether an entry learned this way replaces one learned the `old` way."""
        return self.rank >= old.rank or (self is Source.LOCAL and old is Source.BGP)


@dataclass(slots=True)
class FdbEntry:
    vni: int
    mac: bytes
    vtep: str | None  # None: behind one of our own TAP devices
    source: Source
    updated: float  # when installed or last refreshed by traffic

    @property
    def is_local(self) -> bool:
        return self.vtep is None


@dataclass(frozen=True, slots=True)
class MacLearned:
    """A MAC the table did not know is now behind `vtep` (None: local)."""

    vni: int
    mac: bytes
    vtep: str | None
    source: Source


@dataclass(frozen=True, slots=True)
class MacMoved:
    """A known MAC now lives elsewhere or was learned another way."""

    vni: int
    mac: bytes
    old_vtep: str | None
    old_source: Source
    vtep: str | None
    source: Source


@dataclass(frozen=True, slots=True)
class MacRemoved:
    """A MAC left the table; `aged` is True when it timed out rather than being withdrawn."""

    vni: int
    mac: bytes
    vtep: str | None
    source: Source
    aged: bool


FdbChange = MacLearned | MacMoved | MacRemoved


class MacRefused(enum.Enum):
    """Why `learn` did not take a local MAC: not a change, the table is as it was."""

    FULL = "fdb_full"  # the VNI's local entries are at its max_macs
    RATE = "rate"  # more new local MACs a second than the VNI's learning rate allows


@dataclass(slots=True)
class LocalLimit:
    """The bounds on one VNI's local entries, and how often they refused a MAC."""

    max_macs: int
    bucket: TokenBucket | None = None  # new local MACs per second; None: no rate limit
    exempt: frozenset[bytes] = frozenset()  # never refused (the device's own MACs)
    refused_full: int = 0

    @property
    def refused_rate(self) -> int:
        return self.bucket.refused if self.bucket is not None else 0


class Fdb:
    """The table. `get` is the hot-path lookup; `learn` is cheap when nothing changes."""

    def __init__(self, aging_s: float = DEFAULT_AGING_S):
        if aging_s <= 0:
            raise ValueError("aging_s must be positive")
        self.aging_s = aging_s
        self.aging_exempt: set[int] = set()  # VNIs whose local entries something else ages (a kernel bridge)
        self.local_limits: dict[int, LocalLimit] = {}  # VNI -> bounds on its local entries (limit_local)
        self._entries: dict[tuple[int, bytes], FdbEntry] = {}
        self.moves: dict[int, int] = {}  # VNI -> MACs that moved to another place (VTEP or local)
        # (VNI, source) -> entries, kept as the table changes: the local ones are what max_macs
        # bounds, and the metrics read the table's size by network and source without a walk
        self.counts: Counter[tuple[int, Source]] = Counter()

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[FdbEntry]:
        return iter(list(self._entries.values()))

    def get(self, vni: int, mac: bytes) -> FdbEntry | None:
        return self._entries.get((vni, mac))

    def local_count(self, vni: int) -> int:
        """How many local entries `vni` has (what its `max_macs` bounds)."""
        return self.counts[vni, Source.LOCAL]

    def limit_local(self, vni: int, max_macs: int, rate_per_s: float | None = None, burst: float | None = None,
                    now: float = 0.0, exempt: frozenset[bytes] | set[bytes] = frozenset()) -> LocalLimit:
        """Bound `vni`'s local entries (see the module docstring); replaces an earlier limit and
        keeps its refusal counts. Entries already beyond a lower `max_macs` stay until they go."""
        if max_macs < 1:
            raise ValueError("max_macs must be at least 1")
        bucket = TokenBucket(rate_per_s, burst if burst is not None else rate_per_s, now) if rate_per_s else None
        old = self.local_limits.get(vni)
        limit = LocalLimit(max_macs, bucket, frozenset(exempt), old.refused_full if old else 0)
        if old is not None and old.bucket is not None and bucket is not None:
            bucket.refused = old.bucket.refused
        self.local_limits[vni] = limit
        return limit

    def learn(
        self, vni: int, mac: bytes, vtep: str | None, source: Source, now: float
    ) -> FdbChange | MacRefused | None:
        """Record that `mac` is behind `vtep`; return the change, or None, or why a local MAC was refused.

        None means the entry was only refreshed, or that an entry of a higher
        rank holds the MAC and stays as it is. `MacRefused` (only for
        `Source.LOCAL`): the VNI's local limit kept the MAC out; nothing changed.
        """
        key = (vni, mac)
        entry = self._entries.get(key)
        if entry is None:
            if source is Source.LOCAL:
                refused = self._admit_local(vni, mac, now)
                if refused is not None:
                    return refused
            self._entries[key] = FdbEntry(vni, mac, vtep, source, now)
            self.counts[vni, source] += 1
            return MacLearned(vni, mac, vtep, source)
        if entry.vtep == vtep and entry.source is source:
            entry.updated = now
            return None
        if not source.may_replace(entry.source):
            return None
        if source is Source.LOCAL and entry.source is not Source.LOCAL:  # moved here, or learned another way
            refused = self._admit_local(vni, mac, now)
            if refused is not None:
                return refused
        change = MacMoved(vni, mac, entry.vtep, entry.source, vtep, source)
        if entry.vtep != vtep:  # not just learned another way
            self.moves[vni] = self.moves.get(vni, 0) + 1
        if entry.source is not source:
            self.counts[vni, entry.source] -= 1
            self.counts[vni, source] += 1
        entry.vtep, entry.source, entry.updated = vtep, source, now
        return change

    def _admit_local(self, vni: int, mac: bytes, now: float) -> MacRefused | None:
        """A local entry for `mac` would be added: None if `vni`'s limit lets it in."""
        limit = self.local_limits.get(vni)
        if limit is None or mac in limit.exempt:
            return None
        if self.counts[vni, Source.LOCAL] >= limit.max_macs:
            limit.refused_full += 1
            return MacRefused.FULL
        bucket = limit.bucket
        if bucket is not None:
            if bucket.stamp == now and bucket.tokens >= 1.0:
                bucket.tokens -= 1.0  # TokenBucket.take without the call: the same `now` earns nothing
            elif not bucket.take(now):
                return MacRefused.RATE
        return None

    def remove(self, vni: int, mac: bytes, source: Source) -> MacRemoved | None:
        """Withdraw the entry if `source` is what holds it (a BGP withdraw never removes static)."""
        entry = self._entries.get((vni, mac))
        if entry is None or entry.source is not source:
            return None
        self._delete(entry)
        return MacRemoved(vni, mac, entry.vtep, source, aged=False)

    def _delete(self, entry: FdbEntry) -> None:
        del self._entries[(entry.vni, entry.mac)]
        self.counts[entry.vni, entry.source] -= 1

    def expire(self, now: float) -> list[MacRemoved]:
        """Remove data-plane entries not refreshed for `aging_s` (outside `aging_exempt`); return
        them, oldest first."""
        deadline = now - self.aging_s
        exempt = self.aging_exempt
        stale = [e for e in self._entries.values()
                 if e.source.ages and e.updated <= deadline and e.vni not in exempt]
        stale.sort(key=lambda e: e.updated)
        for e in stale:
            self._delete(e)
        return [MacRemoved(e.vni, e.mac, e.vtep, e.source, aged=True) for e in stale]

    def flush(self, vni: int | None = None, source: Source | None = None) -> list[MacRemoved]:
        """Remove every entry matching `vni` and `source` (None: any)."""
        gone = [
            e
            for e in self._entries.values()
            if (vni is None or e.vni == vni) and (source is None or e.source is source)
        ]
        for e in gone:
            self._delete(e)
        return [MacRemoved(e.vni, e.mac, e.vtep, e.source, aged=False) for e in gone]
