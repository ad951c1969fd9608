"""The subnet table: which node owns the subnet a destination address is in.

Every node announces its pod subnet as an EVPN type-5 route (RFC 9136); the
speaker installs each one here, with the announcing node's VTEP, router MAC
(RFC 9135) and L3 VNI. Our own subnet is here too (`Source.LOCAL`, no VTEP).
`lookup` is the per-packet longest-prefix match of the routed data plane.

Candidates. A prefix may be announced by more than one node (a
misconfiguration, or two `subnet: auto` nodes that picked the same subnet
before they saw each other). The table keeps every announcement as a
candidate, one per (source, node), and routes the prefix to the preferred
one, a pure function of the candidates (arrival order never matters):

  1. our own subnet (`LOCAL`) over a `STATIC` route over one from `BGP`;
  2. the lower originating router ID (compared as IPv4 addresses; a node
     name that is not one sorts after every address, by its text).

So when the preferred node withdraws, the next one takes over at once.
`vteps()` is every remote VTEP among the candidates, preferred or not: a
node that lost a duplicate is still a node of the fabric sending from its
pods, and the data plane accepts routed VXLAN only from these.

Time is a parameter; every mutation returns what changed in what `lookup`
and `get` answer (`PrefixInstalled`, `PrefixReplaced`, `PrefixRemoved`) —
a change of a candidate that is not preferred returns None. Applying the
changes in order to an empty {prefix: entry} map yields exactly the table.

Conflicts are reported, never silently accepted: `conflicts()` says what is
wrong with an announcement before the caller installs it, and whether to
refuse it:

  OUTSIDE_NETWORK  the prefix is not inside `routing.network` (or network6).
                   Refused: the kernel sends only `network` to us, and a
                   foreign prefix in the table would capture nothing but
                   confusion.
  DUPLICATE        the same prefix from another node. Installed: the table
                   keeps both and routes to the preferred one (see above);
                   `Conflict.keeps` names the node that keeps the prefix,
                   so the log says who should move.
  OVERLAP          the prefix overlaps a different prefix of another node,
                   or our own. Installed — longest-prefix match sends the
                   more specific part to its announcer — except a remote
                   prefix inside our own subnet: that is refused, our
                   subnet's addresses are ours (host-local IPAM gives them
                   to our pods).

The caller (the speaker's type-5 import) does:

    found = conflicts(table, entry, (routing.network, routing.network6))
    for c in found:
        log.warning("%s", c)
    if not any(c.refused for c in found):
        change = table.install(entry, now)   # -> data plane, if not None
    ...
    change = table.remove(prefix, source=Source.BGP, node=entry.node)  # withdraw

A conflict with a `subnet: auto` node settles itself: `subnets.SubnetLease`
moves the node with the higher router ID, whose withdrawal ends it.
"""

from __future__ import annotations

import dataclasses
import enum
import ipaddress
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

from overlayd.fabric.fdb import Source

Prefix = IPv4Network | IPv6Network
LOCAL_PEER = "local"  # PrefixEntry.peer of our own subnet

# Which source's candidate is preferred for one prefix (higher first).
# DATA (learned from traffic) has no meaning for a prefix.
_RANK = {Source.LOCAL: 3, Source.STATIC: 2, Source.BGP: 1}


@dataclass(frozen=True, slots=True)
class PrefixEntry:
    """One node subnet and where it lives."""

    prefix: Prefix
    vtep: str | None  # the remote node's VTEP; None: our own subnet (local)
    router_mac: bytes | None  # the remote node's router MAC (RFC 9135 extended community)
    vni: int  # the L3 VNI (the route's label)
    node: str  # who announced it: the originating router ID
    peer: str  # which BGP peer we have it from (LOCAL_PEER, "local", for ours)
    source: Source  # Source.BGP, Source.STATIC or Source.LOCAL
    installed: float = 0.0  # when the table installed it (set by `install`)
    encap: str = "vxlan"  # how the node takes traffic: "vxlan", "ipip", or "none" (routed to it directly)

    def __post_init__(self) -> None:
        if isinstance(self.prefix, str):
            object.__setattr__(self, "prefix", ipaddress.ip_network(self.prefix))

    @property
    def is_local(self) -> bool:
        return self.vtep is None


@dataclass(frozen=True, slots=True)
class PrefixInstalled:
    """A prefix the table did not route now goes to `entry`."""

    entry: PrefixEntry

    @property
    def prefix(self) -> Prefix:
        return self.entry.prefix


@dataclass(frozen=True, slots=True)
class PrefixReplaced:
    """A routed prefix now goes to `new` instead of `old` (another node, VTEP, MAC or VNI)."""

    old: PrefixEntry
    new: PrefixEntry

    @property
    def prefix(self) -> Prefix:
        return self.new.prefix


@dataclass(frozen=True, slots=True)
class PrefixRemoved:
    """A prefix left the table: its last candidate, `entry`, was removed."""

    entry: PrefixEntry

    @property
    def prefix(self) -> Prefix:
        return self.entry.prefix


PrefixChange = PrefixInstalled | PrefixReplaced | PrefixRemoved


def _node_order(node: str) -> tuple[int, int, str]:
    try:
        return (0, int(ipaddress.IPv4Address(node)), node)
    except ValueError:
        return (1, 0, node)


def preference(entry: PrefixEntry) -> tuple:
    """Sort key of the candidates of one prefix: the smallest is routed to."""
    return (-_RANK[entry.source], _node_order(entry.node))


def prefix_order(prefix: Prefix) -> tuple[int, int, int]:
    """How the table sorts prefixes: IPv4 first, then by address, then shorter first."""
    return (prefix.version, int(prefix.network_address), prefix.prefixlen)


def _same_route(a: PrefixEntry, b: PrefixEntry) -> bool:
    return (a.vtep, a.router_mac, a.vni, a.peer, a.encap) == (b.vtep, b.router_mac, b.vni, b.peer, b.encap)


class PrefixTable:
    """Longest-prefix match over node subnets, IPv4 and IPv6.

    Per family, the preferred entry of every prefix sits in a dict per prefix
    length, {network address as int: entry}, and `lookup` probes the lengths
    present, longest first: typically one or two dict probes per packet.
    """

    def __init__(self) -> None:
        # prefix -> {(source, node): entry}, every candidate
        self._candidates: dict[Prefix, dict[tuple[Source, str], PrefixEntry]] = {}
        # family -> prefix length -> {int(network address): preferred entry}
        self._by_length: dict[int, dict[int, dict[int, PrefixEntry]]] = {4: {}, 6: {}}
        # what `lookup` walks: ((netmask as int, dict), ...) longest first
        self._levels4: tuple[tuple[int, dict[int, PrefixEntry]], ...] = ()
        self._levels6: tuple[tuple[int, dict[int, PrefixEntry]], ...] = ()
        self._vtep_count: Counter[str] = Counter()
        self._vteps: frozenset[str] = frozenset()
        self.version = 0  # counts the changes returned: a reader re-reads the table when it moved

    # -- reading -------------------------------------------------------------------------

    def lookup(self, address: bytes | memoryview, _int=int.from_bytes) -> PrefixEntry | None:
        """The longest prefix containing a destination address, given as its
        4 (IPv4) or 16 (IPv6) raw octets, as they sit in the IP header.

        The per-packet call: one `int.from_bytes` and a dict probe per prefix
        length present (`_int` is bound at definition time to save a lookup).
        """
        if len(address) == 4:
            levels = self._levels4
        else:
            if len(address) != 16:
                raise ValueError(f"an address is 4 or 16 octets, not {len(address)}")
            levels = self._levels6
        n = _int(address)
        for mask, table in levels:
            entry = table.get(n & mask)
            if entry is not None:
                return entry
        return None

    def get(self, prefix: Prefix | str) -> PrefixEntry | None:
        """The entry `prefix` is routed to (exact match), or None."""
        prefix = ipaddress.ip_network(prefix)
        candidates = self._candidates.get(prefix)
        if not candidates:
            return None
        return self._by_length[prefix.version][prefix.prefixlen][int(prefix.network_address)]

    def candidates(self, prefix: Prefix | str | None = None) -> list[PrefixEntry]:
        """Every announcement of `prefix` (None: of every prefix), preferred first."""
        if prefix is None:
            return [e for p in sorted(self._candidates, key=prefix_order) for e in self.candidates(p)]
        found = self._candidates.get(ipaddress.ip_network(prefix), {})
        return sorted(found.values(), key=preference)

    def overlapping(self, prefix: Prefix) -> list[PrefixEntry]:
        """Every candidate whose prefix overlaps `prefix` (equal, containing or inside it)."""
        found: list[PrefixEntry] = []
        n, length = int(prefix.network_address), prefix.prefixlen
        bits = prefix.max_prefixlen
        for other_length, table in self._by_length[prefix.version].items():
            if other_length <= length:  # containing or equal: one probe
                key = n >> (bits - other_length) << (bits - other_length)
                hits = [table[key]] if key in table else []
            else:  # inside: every prefix of that length in the range
                hits = [e for k, e in table.items() if k >> (bits - length) << (bits - length) == n]
            for e in hits:
                found.extend(self._candidates[e.prefix].values())
        return sorted(found, key=lambda e: (prefix_order(e.prefix), preference(e)))

    def vteps(self) -> frozenset[str]:
        """Every remote VTEP in the table, of preferred and other candidates alike."""
        return self._vteps

    def __len__(self) -> int:
        """The number of prefixes routed (not of candidates)."""
        return len(self._candidates)

    def __iter__(self) -> Iterator[PrefixEntry]:
        """The routed entries, one per prefix, IPv4 first, sorted by address then length."""
        return iter([self.get(p) for p in sorted(self._candidates, key=prefix_order)])

    # -- changing ------------------------------------------------------------------------

    def install(self, entry: PrefixEntry, now: float) -> PrefixChange | None:
        """Add or update the candidate of (`entry.source`, `entry.node`) for `entry.prefix`.

        Idempotent: installing what is there again returns None and keeps the
        original `installed` time. Otherwise the candidate is stored with
        `installed=now`, and the change of the routed entry is returned (None
        if the prefix still goes to another, preferred candidate).
        """
        if entry.source not in _RANK:
            raise ValueError(f"a prefix cannot be learned from {entry.source.label}")
        if (entry.vtep is None) != (entry.source is Source.LOCAL):
            raise ValueError("a local prefix has no VTEP, and every other has one")
        prefix = entry.prefix
        candidates = self._candidates.setdefault(prefix, {})
        key = (entry.source, entry.node)
        old = candidates.get(key)
        if old is not None and _same_route(old, entry):
            return None
        before = self._preferred(prefix) if candidates else None
        new = dataclasses.replace(entry, installed=now)
        candidates[key] = new
        if old is not None:
            self._count_vtep(old.vtep, -1)
        self._count_vtep(new.vtep, +1)
        return self._reselect(prefix, before)

    def remove(
        self, prefix: Prefix | str, source: Source | None = None, node: str | None = None
    ) -> PrefixChange | None:
        """Remove the candidates of `prefix` from `source` and `node` (None: any).

        A BGP withdraw passes both, so that it removes only what that node
        announced. Returns `PrefixRemoved` when the prefix left the table,
        `PrefixReplaced` when another candidate takes over, else None.
        """
        prefix = ipaddress.ip_network(prefix)
        candidates = self._candidates.get(prefix)
        if not candidates:
            return None
        gone = [
            k for k in candidates if (source is None or k[0] is source) and (node is None or k[1] == node)
        ]
        if not gone:
            return None
        before = self._preferred(prefix)
        for k in gone:
            self._count_vtep(candidates.pop(k).vtep, -1)
        return self._reselect(prefix, before)

    def flush(
        self, source: Source | None = None, node: str | None = None, peer: str | None = None
    ) -> list[PrefixChange]:
        """Remove every candidate matching `source`, `node` and `peer` (None: any).

        Returns the changes, in prefix order (a peer that went down: `peer=`).
        """
        changes = []
        for prefix in sorted(self._candidates, key=prefix_order):
            candidates = self._candidates[prefix]
            gone = [
                k
                for k, e in candidates.items()
                if (source is None or e.source is source)
                and (node is None or e.node == node)
                and (peer is None or e.peer == peer)
            ]
            if not gone:
                continue
            before = self._preferred(prefix)
            for k in gone:
                self._count_vtep(candidates.pop(k).vtep, -1)
            change = self._reselect(prefix, before)
            if change is not None:
                changes.append(change)
        return changes

    # -- inside --------------------------------------------------------------------------

    def _preferred(self, prefix: Prefix) -> PrefixEntry:
        return min(self._candidates[prefix].values(), key=preference)

    def _reselect(self, prefix: Prefix, before: PrefixEntry | None) -> PrefixChange | None:
        """Put the preferred candidate of `prefix` where `lookup` finds it; say what changed."""
        change = self._select(prefix, before)
        if change is not None:
            self.version += 1
        return change

    def _select(self, prefix: Prefix, before: PrefixEntry | None) -> PrefixChange | None:
        candidates = self._candidates[prefix]
        by_length = self._by_length[prefix.version]
        key = int(prefix.network_address)
        if not candidates:
            del self._candidates[prefix]
            table = by_length[prefix.prefixlen]
            del table[key]
            if not table:
                del by_length[prefix.prefixlen]
                self._rebuild_levels(prefix.version)
            assert before is not None
            return PrefixRemoved(before)
        after = self._preferred(prefix)
        if after is before:
            return None
        if prefix.prefixlen not in by_length:
            by_length[prefix.prefixlen] = {}
            self._rebuild_levels(prefix.version)
        by_length[prefix.prefixlen][key] = after
        if before is None:
            return PrefixInstalled(after)
        return PrefixReplaced(before, after)

    def _rebuild_levels(self, version: int) -> None:
        bits = 32 if version == 4 else 128
        full = (1 << bits) - 1
        levels = tuple(
            (full >> (bits - length) << (bits - length), table)
            for length, table in sorted(self._by_length[version].items(), reverse=True)
        )
        if version == 4:
            self._levels4 = levels
        else:
            self._levels6 = levels

    def _count_vtep(self, vtep: str | None, delta: int) -> None:
        if vtep is None:
            return
        count = self._vtep_count[vtep] + delta
        if count:
            self._vtep_count[vtep] = count
            if count == 1 and delta > 0:
                self._vteps = self._vteps | {vtep}
        else:
            del self._vtep_count[vtep]
            self._vteps = self._vteps - {vtep}


# -- conflicts ---------------------------------------------------------------------------


class ConflictReason(enum.Enum):
    OUTSIDE_NETWORK = "outside-network"  # not inside routing.network / network6
    DUPLICATE = "duplicate"  # the same prefix from another node
    OVERLAP = "overlap"  # overlaps a different prefix of another node, or our own


@dataclass(frozen=True, slots=True)
class Conflict:
    """What is wrong with announcement `entry`, and what to do about it.

    other:   the announcement it collides with (None for OUTSIDE_NETWORK)
    refused: the caller does not install `entry` (see the module docstring)
    keeps:   for DUPLICATE, the node the prefix stays with (the preferred one)
    """

    reason: ConflictReason
    entry: PrefixEntry
    other: PrefixEntry | None = None
    refused: bool = False
    keeps: str | None = None

    def __str__(self) -> str:
        e, o = self.entry, self.other
        if e.is_local:
            said = f"our own subnet {e.prefix}"
        else:
            said = f"subnet {e.prefix} from node {e.node} (peer {e.peer})"
        if self.reason is ConflictReason.OUTSIDE_NETWORK:
            return f"{said} is outside the cluster network: refused"
        assert o is not None
        theirs = "our own subnet" if o.is_local else f"{o.prefix} of node {o.node}"
        if self.reason is ConflictReason.DUPLICATE:
            by = "us" if o.is_local else f"node {o.node}"
            return f"{said} is also announced by {by}: {self.keeps} keeps it"
        verdict = "refused" if self.refused else "the longer prefix wins"
        return f"{said} overlaps {theirs}: {verdict}"


def conflicts(
    table_or_entries: PrefixTable | Iterable[PrefixEntry],
    candidate: PrefixEntry,
    network: Prefix | Iterable[Prefix | None] | None,
) -> list[Conflict]:
    """What is wrong with installing `candidate` next to what is there.

    `network` is the cluster network, or several (routing.network and
    routing.network6; None entries are skipped); None: do not check.
    An announcement never conflicts with itself (same source and node), nor
    with other prefixes of the same node, except a node's own overlap with
    our local subnet.
    """
    found: list[Conflict] = []
    prefix = candidate.prefix
    if network is not None:
        networks = [network] if isinstance(network, IPv4Network | IPv6Network) else [n for n in network if n]
        inside = any(n.version == prefix.version and prefix.subnet_of(n) for n in networks)
        if not inside:
            found.append(Conflict(ConflictReason.OUTSIDE_NETWORK, candidate, refused=True))
    if isinstance(table_or_entries, PrefixTable):
        others = table_or_entries.overlapping(prefix)
    else:
        others = sorted(
            (e for e in table_or_entries if e.prefix.version == prefix.version and e.prefix.overlaps(prefix)),
            key=lambda e: (prefix_order(e.prefix), preference(e)),
        )
    others = [
        o
        for o in others
        if (o.source, o.node) != (candidate.source, candidate.node)
        and not (o.node == candidate.node and o.is_local == candidate.is_local)
    ]
    keeps = min([candidate] + [o for o in others if o.prefix == prefix], key=preference)
    for other in others:
        if other.prefix == prefix:
            found.append(
                Conflict(
                    ConflictReason.DUPLICATE,
                    candidate,
                    other,
                    keeps="us" if keeps.is_local else keeps.node,
                )
            )
        else:
            refused = other.is_local and not candidate.is_local and prefix.subnet_of(other.prefix)
            found.append(Conflict(ConflictReason.OVERLAP, candidate, other, refused=refused))
    return found
