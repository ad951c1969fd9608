"""`subnet: auto`: pick a free node subnet of the cluster network, and keep
it or give it up when another node claims it too.

flannel leases node subnets from etcd, which serialises the claims. overlayd
has no central store: every node announces its subnet as an EVPN type-5
route, so two nodes can pick the same subnet before either sees the other's
route. The rule that settles it is deterministic and needs no messages
beyond the announcements themselves:

  The lower router ID keeps a contested subnet; the other picks again.

"Contested" means any overlap, not only the same prefix (a node configured
with another `subnet_size`), so both sides of a collision always agree on
who moves. A node whose subnet is static does not run a lease and never
moves; when it collides with an auto node of a lower router ID, the
conflict stays and `prefixes.conflicts` reports it on every node.

Choosing. The candidates are the subnets of `network` with `prefix_length`,
numbered in address order. A lease keeps its current subnet while it is
free, else takes `preferred` if that is free (the subnet from before a
restart, as flannel reuses its lease), else hashes its router ID (with
`seed` and the number of collisions lost so far) to a number h and takes
the free subnet number h mod (number of free subnets), counting the free
ones in address order. With nothing taken that is simply subnet h mod
count. So different nodes tend to pick far apart, every free subnet is as
likely as any other (no clustering behind long taken runs, as with "the
first free one after h"), the first choice is the same on every restart,
and two nodes that lost a collision together do not pick alike again.
A subnet is free when it overlaps nothing in `taken`.

Pure and deterministic: no clock, no randomness beyond the hash, and
`observe` returns what happened as events (`SubnetChosen`,
`SubnetCollisionLost`, `SubnetCollisionWon`) for the daemon to log and act
on (announce the new subnet, withdraw the old one, rewrite subnet.env).
"""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import math
from collections.abc import Iterable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Network

Prefix = IPv4Network | IPv6Network


class NetworkExhausted(Exception):
    """Every subnet of the network overlaps a claim: there is none left to pick.

    `gave_up`: when `observe` lost a collision and then found no other
    subnet, the loss (its `new` is None): withdraw `gave_up.old`.
    """

    def __init__(
        self, network: Prefix, prefix_length: int, taken: int, gave_up: SubnetCollisionLost | None = None
    ):
        self.network = network
        self.prefix_length = prefix_length
        self.taken = taken
        self.gave_up = gave_up
        count = 1 << (prefix_length - network.prefixlen)
        message = (
            f"routing.network {network} is exhausted: all {count} /{prefix_length} subnets "
            f"overlap the {taken} claimed by other nodes"
        )
        if gave_up is not None:
            message += f"; gave up {gave_up.old} to {gave_up.winner} (lower router ID)"
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class SubnetChosen:
    """The lease claimed its first subnet; `preferred` if it is the one it was asked to reuse."""

    subnet: Prefix
    preferred: bool


@dataclass(frozen=True, slots=True)
class SubnetCollisionLost:
    """Node `winner` (a lower router ID) claims our subnet `old`: we now claim `new`
    (None only in `NetworkExhausted.gave_up`: there was no other)."""

    old: Prefix
    new: Prefix | None
    winner: IPv4Address


@dataclass(frozen=True, slots=True)
class SubnetCollisionWon:
    """Node `loser` (a higher router ID) claims our subnet too: we keep it, it will move.

    Said once per (subnet, loser) while the loser's claim lasts.
    """

    subnet: Prefix
    loser: IPv4Address


SubnetEvent = SubnetChosen | SubnetCollisionLost | SubnetCollisionWon


def _bounds(prefix: Prefix) -> tuple[int, int]:
    """First and last address of `prefix`, as ints."""
    return int(prefix.network_address), int(prefix.broadcast_address)


class SubnetLease:
    """This node's claim on one subnet of `network` (see the module docstring)."""

    def __init__(
        self,
        network: Prefix | str,
        prefix_length: int,
        router_id: IPv4Address | str,
        preferred: Prefix | str | None = None,
        seed: int | None = None,
    ):
        self.network = ipaddress.ip_network(network)
        if not self.network.prefixlen <= prefix_length <= self.network.max_prefixlen:
            raise ValueError(f"a /{prefix_length} subnet does not fit in network {self.network}")
        self.prefix_length = prefix_length
        self.router_id = IPv4Address(router_id)
        self.seed = seed
        self.count = 1 << (prefix_length - self.network.prefixlen)  # how many subnets there are
        self._shift = self.network.max_prefixlen - prefix_length
        self._base, self._last = _bounds(self.network)
        if preferred is not None:
            preferred = ipaddress.ip_network(preferred)
            if (
                preferred.version != self.network.version
                or preferred.prefixlen != prefix_length
                or not preferred.subnet_of(self.network)
            ):
                raise ValueError(f"preferred subnet {preferred} is not a /{prefix_length} of {self.network}")
        self.preferred: Prefix | None = preferred
        self.lost = 0  # collisions lost so far; part of the hash for the next choice
        self._current: Prefix | None = None
        self._won: set[tuple[Prefix, IPv4Address]] = set()

    @property
    def current(self) -> Prefix | None:
        """The subnet we claim now, or None until `choose` (or `observe`) picked one."""
        return self._current

    def subnet(self, index: int) -> Prefix:
        """Candidate number `index` (0 .. count-1), in address order."""
        address = ipaddress.ip_address(self._base + (index << self._shift))
        return ipaddress.ip_network((address, self.prefix_length))

    def hash(self) -> int:
        """h, the number that picks among the free subnets (see the module docstring)."""
        data = b"overlayd subnet lease\0" + self.router_id.packed + self.lost.to_bytes(4, "big")
        if self.seed is not None:
            data += self.seed.to_bytes(16, "big", signed=True)
        return int.from_bytes(hashlib.sha256(data).digest()[:16], "big")

    def choose(self, taken: Iterable[Prefix]) -> Prefix:
        """Claim a subnet that overlaps nothing in `taken` and return it.

        Keeps the current subnet if it is free, else `preferred` if free, else
        the free one `hash()` picks. Raises `NetworkExhausted` (and
        claims nothing) when every subnet overlaps `taken`.
        """
        taken = [ipaddress.ip_network(p) if isinstance(p, str) else p for p in taken]
        blocked = self._blocked(taken)
        for mine in (self._current, self.preferred):
            if mine is not None and self._free(self._index(mine), blocked):
                self._current = mine
                return mine
        free = self.count - sum(hi - lo + 1 for lo, hi in blocked)
        if not free:
            self._current = None
            raise NetworkExhausted(self.network, self.prefix_length, len(taken_in(taken, self.network)))
        self._current = self.subnet(self._nth_free(self.hash() % free, blocked))
        return self._current

    def observe(self, announcements: Iterable[tuple[Prefix | str, IPv4Address | str]]) -> list[SubnetEvent]:
        """Take in every node's current claim, as (prefix, router ID) pairs.

        Pass every type-5 prefix received with its originating router ID:
        every candidate, not only the routed ones (our own LOCAL entry
        hides a rival's claim of our subnet in `PrefixTable`'s routed view:
        use `PrefixTable.candidates()`), and refused ones too (a prefix
        inside ours). Our own (by router ID), other families and prefixes
        outside `network` are skipped. Without a current subnet, chooses
        one. If a lower router ID claims a subnet overlapping ours we lose:
        we choose again, avoiding every claim; if none is left, raises
        `NetworkExhausted` with the loss in `gave_up` and `current` None
        (the next call tries again). Otherwise every higher router ID claiming
        ours is told once as `SubnetCollisionWon`.
        """
        mine = _bounds(self._current) if self._current is not None else (-1, -1)
        claims: list[Prefix] = []
        rivals: set[IPv4Address] = set()
        for prefix, rid in announcements:
            prefix = ipaddress.ip_network(prefix) if isinstance(prefix, str) else prefix
            rid = rid if isinstance(rid, IPv4Address) else IPv4Address(rid)
            if rid == self.router_id or prefix.version != self.network.version:
                continue
            first, last = int(prefix.network_address), int(prefix.broadcast_address)
            if first > self._last or last < self._base:
                continue
            claims.append(prefix)
            if first <= mine[1] and last >= mine[0]:
                rivals.add(rid)
        if self._current is None:
            subnet = self.choose(claims)
            return [SubnetChosen(subnet, subnet == self.preferred)]
        if rivals and min(rivals) < self.router_id:
            old, winner = self._current, min(rivals)
            self._current = None
            self._won.clear()
            self.lost += 1
            try:
                new = self.choose(claims)
            except NetworkExhausted as err:
                gave_up = SubnetCollisionLost(old, None, winner)
                raise NetworkExhausted(self.network, self.prefix_length, err.taken, gave_up) from None
            return [SubnetCollisionLost(old, new, winner)]
        events: list[SubnetEvent] = []
        still = {(self._current, rid) for rid in rivals}
        for subnet, loser in sorted(still - self._won, key=lambda w: w[1]):
            events.append(SubnetCollisionWon(subnet, loser))
        self._won = still
        return events

    # -- inside --------------------------------------------------------------------------

    def _index(self, subnet: Prefix) -> int:
        return (int(subnet.network_address) - self._base) >> self._shift

    def _blocked(self, taken: Iterable[Prefix]) -> list[tuple[int, int]]:
        """The candidate numbers overlapping `taken`, as sorted, merged, inclusive ranges."""
        ranges = []
        for prefix in taken:
            if prefix.version != self.network.version:
                continue
            first, last = _bounds(prefix)
            if first > self._last or last < self._base:
                continue
            first, last = max(first, self._base), min(last, self._last)
            ranges.append(((first - self._base) >> self._shift, (last - self._base) >> self._shift))
        ranges.sort()
        merged: list[tuple[int, int]] = []
        for lo, hi in ranges:
            if merged and lo <= merged[-1][1] + 1:
                if hi > merged[-1][1]:
                    merged[-1] = (merged[-1][0], hi)
            else:
                merged.append((lo, hi))
        return merged

    @staticmethod
    def _nth_free(n: int, blocked: list[tuple[int, int]]) -> int:
        """The candidate number of the n-th (from 0) subnet outside `blocked`."""
        index = 0
        for lo, hi in blocked:
            if n < lo - index:
                break
            n -= lo - index
            index = hi + 1
        return index + n

    @staticmethod
    def _free(index: int, blocked: list[tuple[int, int]]) -> bool:
        k = bisect.bisect_right(blocked, (index, math.inf)) - 1
        return k < 0 or blocked[k][1] < index


def taken_in(taken: Iterable[Prefix], network: Prefix) -> set[Prefix]:
    """The prefixes of `taken` that overlap `network`."""
    return {p for p in taken if p.version == network.version and p.overlaps(network)}
