"""The RIB: Adj-RIB-In per peer, the best path per route key, and the best
location per MAC. It holds EVPN and unicast routes alike: their keys never
collide (a unicast key starts with "unicast", an EVPN key with the route type).

Two selections, both pure functions of the set of candidates (the order in
which paths arrived never matters):

Per route key (`Rib.best`): the paths for one NLRI key from different peers,
one path per peer (a new announcement from a peer replaces its old one,
RFC 4271 9.1.4 implicit withdraw). The winner is chosen by elimination,
each step keeping only the candidates that are best on its criterion:

  0. a local path (`peer == LOCAL`, our own route) wins over received ones.
     The key holds our RD, so a received copy is our own route coming back
     (through a route reflector) or somebody misusing our RD.
  For type-2 (MAC/IP) routes only, RFC 7432 section 15 first:
  1. sticky (static) MAC wins over non-sticky (15.2: a static MAC cannot move);
  2. highest MAC mobility sequence number (no extended community = 0);
  3. lowest next hop address (15.1: same sequence, lowest PE IP wins).
  Then RFC 4271 9.1.2.2, for every route type:
  4. highest LOCAL_PREF (missing = 100);
  5. shortest AS_PATH (an AS_SET counts as one);
  6. lowest ORIGIN (IGP < EGP < INCOMPLETE);
  7. lowest MED (missing = 0), compared only among paths whose neighbouring
     AS (the first AS of the AS_PATH; an empty path or one starting with an
     AS_SET is our own AS) is the same, exactly as 9.1.2.2 (c) says -- or
     among all paths with `always_compare_med=True`;
  8. eBGP over iBGP;
     (the IGP cost to the next hop is skipped: an overlay has no IGP metric)
  9. lowest BGP identifier, ORIGINATOR_ID in place of the peer's router ID
     when present (RFC 4456 9);
  10. shortest CLUSTER_LIST (RFC 4456 9);
  11. lowest peer address (a local path has none and sorts last);
  12. lowest peer id: the final tie-break, unique per key.
  Route age (RFC 5004 "prefer the oldest") is deliberately not a criterion:
  it would make the result depend on the order of arrival.

Per MAC (`MacSelection`): type-2 routes for one MAC in one broadcast domain
come with different keys (each VTEP uses its own RD). The best path of each
such key is a candidate; `domain_of(path)` says which broadcast domain a
path belongs to (None: not imported). The winner: sticky, highest sequence,
lowest next hop (steps 1-3), then steps 0 and 4-12, then the lowest route
key (RD, Ethernet tag, IP; MAC-only first) so that two routes from the same
peer still order. A local path only wins here on the RFC 7432 criteria.

Time is a parameter and every mutation returns what changed:
`BestPathChanged` per key, then `MacLocationChanged` per (domain, MAC).
Applying them in order to empty maps yields exactly `Rib.best` and
`MacSelection.winner`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Union

from overlayd.wire.bgp.attributes import AS_SEQUENCE, PathAttributes
from overlayd.wire.bgp.evpn import EvpnRoute, IpAddress, MacIpRoute
from overlayd.wire.bgp.unicast import UnicastRoute

LOCAL = "local"
"""The peer id of our own routes."""

DEFAULT_LOCAL_PREF = 100
MAX_SEQUENCE = 0xFFFFFFFF  # the MAC mobility sequence number is 32 bits

RouteKey = tuple


def route_kind(key: RouteKey) -> int | str:
    """What kind of route a key is: its EVPN route type (2, 3, 5), or "ipv4-unicast" / "ipv6-unicast"."""
    return f"ipv{key[1].version}-unicast" if key[0] == "unicast" else key[0]

DomainOf = Callable[["Path"], Union[int, None]]


@dataclass(frozen=True, slots=True)
class Path:
    """One route as announced by one peer (or by us: `peer == LOCAL`).

    The facts about the session that the decision needs but that are not
    path attributes travel with it: the peer's BGP identifier and address,
    and whether the session is eBGP. `received` is when it was announced
    (shown, never used to decide).
    """

    route: EvpnRoute | UnicastRoute
    attributes: PathAttributes
    peer: str = LOCAL
    peer_router_id: ipaddress.IPv4Address = ipaddress.IPv4Address(0)
    peer_address: IpAddress | None = None
    ebgp: bool = False
    received: float = 0.0

    @property
    def key(self) -> RouteKey:
        return self.route.key

    @property
    def is_local(self) -> bool:
        return self.peer == LOCAL

    @property
    def next_hop(self) -> IpAddress | None:
        return self.attributes.next_hop

    @property
    def sequence(self) -> int:
        """The MAC mobility sequence number; 0 without the extended community."""
        mm = self.attributes.mac_mobility()
        return mm.sequence if mm is not None else 0

    @property
    def sticky(self) -> bool:
        mm = self.attributes.mac_mobility()
        return mm is not None and mm.sticky

    @property
    def local_pref(self) -> int:
        lp = self.attributes.local_pref
        return DEFAULT_LOCAL_PREF if lp is None else lp

    @property
    def med(self) -> int:
        med = self.attributes.med
        return 0 if med is None else med

    @property
    def router_id(self) -> ipaddress.IPv4Address:
        """The BGP identifier step 9 compares: ORIGINATOR_ID when present (RFC 4456 9)."""
        oid = self.attributes.originator_id
        return self.peer_router_id if oid is None else oid

    @property
    def neighbour_as(self) -> int | None:
        """The AS the path came from (first AS of the AS_PATH); None: our own AS."""
        path = self.attributes.as_path
        if path and path[0].kind == AS_SEQUENCE and path[0].asns:
            return path[0].asns[0]
        return None


# -- the decision process -----------------------------------------------------------
#
# Each step maps a non-empty list of candidates to the non-empty sublist that
# is best on its criterion; it looks at the whole set, never at the order.


def ip_order(ip: IpAddress | None) -> tuple[int, int, int]:
    """A total order on addresses: IPv4 before IPv6, numerically; None last."""
    if ip is None:
        return (1, 0, 0)
    return (0, ip.version, int(ip))


def _keep_min(paths: list[Path], rank: Callable[[Path], object]) -> list[Path]:
    best = min(rank(p) for p in paths)  # type: ignore[type-var]
    return [p for p in paths if rank(p) == best]


def _prefer(paths: list[Path], wanted: Callable[[Path], bool]) -> list[Path]:
    chosen = [p for p in paths if wanted(p)]
    return chosen or paths


def _prefer_local(paths: list[Path]) -> list[Path]:
    return _prefer(paths, lambda p: p.is_local)


def _prefer_sticky(paths: list[Path]) -> list[Path]:
    return _prefer(paths, lambda p: p.sticky)


def _highest_sequence(paths: list[Path]) -> list[Path]:
    return _keep_min(paths, lambda p: -p.sequence)


def _lowest_next_hop(paths: list[Path]) -> list[Path]:
    return _keep_min(paths, lambda p: ip_order(p.next_hop))


def _rfc4271(paths: list[Path], always_compare_med: bool) -> list[Path]:
    """Steps 4-10: RFC 4271 9.1.2.2 (a)-(f) with RFC 4456 9."""
    paths = _keep_min(paths, lambda p: -p.local_pref)
    paths = _keep_min(paths, lambda p: p.attributes.as_path_length())
    paths = _keep_min(paths, lambda p: p.attributes.origin)
    if always_compare_med:
        paths = _keep_min(paths, lambda p: p.med)
    else:
        lowest: dict[int | None, int] = {}
        for p in paths:
            lowest[p.neighbour_as] = min(p.med, lowest.get(p.neighbour_as, p.med))
        paths = [p for p in paths if p.med == lowest[p.neighbour_as]]
    paths = _prefer(paths, lambda p: p.ebgp)
    paths = _keep_min(paths, lambda p: int(p.router_id))
    paths = _keep_min(paths, lambda p: len(p.attributes.cluster_list))
    return paths


def _tie_break(paths: list[Path]) -> list[Path]:
    """Steps 11-12: lowest peer address, then lowest peer id."""
    paths = _keep_min(paths, lambda p: ip_order(p.peer_address))
    return _keep_min(paths, lambda p: p.peer)


def route_order(route: EvpnRoute) -> tuple:
    """A total order on type-2 routes of one MAC: RD, Ethernet tag, IP (MAC-only first)."""
    rd = route.rd
    ip = getattr(route, "ip", None)
    return (rd.kind, rd.admin, rd.number, route.ethernet_tag, ip is not None, ip_order(ip))


def decide(paths: Iterable[Path], *, always_compare_med: bool = False) -> Path:
    """The best of the paths for one route key (steps 0-12, see the module docstring)."""
    candidates = list(paths)
    if len(candidates) == 1:  # the common case: every step keeps the only candidate
        return candidates[0]
    if not candidates:
        raise ValueError("no paths to decide between")
    candidates = _prefer_local(candidates)
    if isinstance(candidates[0].route, MacIpRoute):
        candidates = _prefer_sticky(candidates)
        candidates = _highest_sequence(candidates)
        candidates = _lowest_next_hop(candidates)
    candidates = _rfc4271(candidates, always_compare_med)
    return _tie_break(candidates)[0]


def decide_mac(paths: Iterable[Path], *, always_compare_med: bool = False) -> Path:
    """Where one MAC lives, among the best paths of its type-2 routes (RFC 7432 15 first)."""
    candidates = list(paths)
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise ValueError("no paths to decide between")
    candidates = _prefer_sticky(candidates)
    candidates = _highest_sequence(candidates)
    candidates = _lowest_next_hop(candidates)
    candidates = _prefer_local(candidates)
    candidates = _rfc4271(candidates, always_compare_med)
    candidates = _tie_break(candidates)
    return _keep_min(candidates, lambda p: route_order(p.route))[0]


# -- changes --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BestPathChanged:
    """The best path for `key` is now `new` (None: no path left, the route is gone).

    `old` is the previous best (None: the key is new). Emitted when the best
    path changes in any way, including new attributes from the same peer.
    """

    key: RouteKey
    old: Path | None
    new: Path | None


@dataclass(frozen=True, slots=True)
class MacLocationChanged:
    """The winning type-2 path for `mac` in broadcast domain `domain` is now `new`.

    `old` None: the MAC was unknown; `new` None: no imported route is left
    for it. The winner can change without the MAC moving (a new sequence
    number, or the MAC/IP route replacing the MAC-only one of the same VTEP):
    `moved` says whether the location (local, or which next hop) changed.
    """

    domain: int
    mac: bytes
    old: Path | None
    new: Path | None

    @property
    def moved(self) -> bool:
        return _location(self.old) != _location(self.new)


def _location(path: Path | None) -> tuple | None:
    if path is None:
        return None
    return (LOCAL,) if path.is_local else ("remote", path.next_hop)


RibChange = Union[BestPathChanged, MacLocationChanged]


@dataclass(frozen=True, slots=True)
class RibEntry:
    """One row of `overlayctl rib`: a path and whether it is the best for its key."""

    path: Path
    best: bool


# -- the MAC-level selection ------------------------------------------------------------


class MacSelection:
    """Per (broadcast domain, MAC): the candidates (best path of each type-2 key) and the winner.

    Fed with `BestPathChanged` (the `Rib` does it when given `domain_of`).
    A key's domain is computed when its best path arrives and remembered, so
    a change of `domain_of` takes effect through `rebuild`.
    """

    def __init__(self, domain_of: DomainOf, *, always_compare_med: bool = False):
        self.domain_of = domain_of
        self.always_compare_med = always_compare_med
        self._groups: dict[tuple[int, bytes], dict[RouteKey, Path]] = {}
        self._where: dict[RouteKey, tuple[int, bytes]] = {}
        self._winner: dict[tuple[int, bytes], Path] = {}

    def __len__(self) -> int:
        return len(self._winner)

    def __iter__(self) -> Iterator[tuple[int, bytes, Path]]:
        """(domain, mac, winning path) for every MAC with at least one imported route."""
        return iter([(d, m, p) for (d, m), p in self._winner.items()])

    def winner(self, domain: int, mac: bytes) -> Path | None:
        return self._winner.get((domain, mac))

    def candidates(self, domain: int, mac: bytes) -> tuple[Path, ...]:
        return tuple(self._groups.get((domain, mac), {}).values())

    def apply(self, changes: Iterable[object]) -> list[MacLocationChanged]:
        """Take a batch of `BestPathChanged` (other changes are ignored); return the MAC moves.

        The whole batch is applied before winners are chosen, so a peer going
        down moves each MAC once, straight to where it ends up.
        """
        touched: dict[tuple[int, bytes], None] = {}
        for change in changes:
            if not isinstance(change, BestPathChanged):
                continue
            where = self._where.pop(change.key, None)
            if where is not None:
                del self._groups[where][change.key]
                touched[where] = None
            new = change.new
            if new is not None and isinstance(new.route, MacIpRoute):
                domain = self.domain_of(new)
                if domain is not None:
                    group = (domain, new.route.mac)
                    self._groups.setdefault(group, {})[change.key] = new
                    self._where[change.key] = group
                    touched[group] = None
        return self._settle(touched)

    def rebuild(self, bests: Iterable[Path], domain_of: DomainOf | None = None) -> list[MacLocationChanged]:
        """Regroup every best path from scratch (after `domain_of` changed); return the MAC moves."""
        if domain_of is not None:
            self.domain_of = domain_of
        touched: dict[tuple[int, bytes], None] = dict.fromkeys(self._groups)
        self._groups.clear()
        self._where.clear()
        replay = [BestPathChanged(p.key, None, p) for p in bests]
        changes = self.apply(replay)  # settles only the groups the new grouping has
        gone = [g for g in touched if g not in self._groups]
        return changes + self._settle(dict.fromkeys(gone))

    def _settle(self, groups: Iterable[tuple[int, bytes]]) -> list[MacLocationChanged]:
        out: list[MacLocationChanged] = []
        for group in groups:
            candidates = self._groups.get(group)
            if candidates:
                new: Path | None = decide_mac(candidates.values(), always_compare_med=self.always_compare_med)
            else:
                new = None
                self._groups.pop(group, None)
            old = self._winner.get(group)
            if new == old:
                continue
            if new is None:
                del self._winner[group]
            else:
                self._winner[group] = new
            out.append(MacLocationChanged(group[0], group[1], old, new))
        return out


# -- the RIB ------------------------------------------------------------------------------


class Rib:
    """Adj-RIB-In per peer and the Loc-RIB (best path per key); optionally the MAC view.

    With `domain_of`, `macs` is a `MacSelection` kept in step: every mutation
    returns its `BestPathChanged` events followed by the `MacLocationChanged`
    they cause.
    """

    def __init__(self, *, always_compare_med: bool = False, domain_of: DomainOf | None = None):
        self.always_compare_med = always_compare_med
        self.macs: MacSelection | None = (
            MacSelection(domain_of, always_compare_med=always_compare_med) if domain_of else None
        )
        self._paths: dict[RouteKey, dict[str, Path]] = {}  # key -> peer -> path
        self._adj_in: dict[str, dict[RouteKey, Path]] = {}  # peer -> key -> path
        self._best: dict[RouteKey, Path] = {}
        self._best_since: dict[RouteKey, float] = {}
        # (peer, route_kind) -> paths: the Adj-RIBs-In's sizes by kind without a walk (metrics)
        self.counts: Counter[tuple[str, int | str]] = Counter()

    # -- queries

    def __len__(self) -> int:
        """How many route keys have at least one path."""
        return len(self._best)

    def __iter__(self) -> Iterator[RibEntry]:
        """Every path, key by key, the best one first and the others by peer id."""
        rows = []
        for key, by_peer in self._paths.items():
            best = self._best[key]
            rows.append(RibEntry(best, True))
            rows.extend(RibEntry(by_peer[peer], False) for peer in sorted(by_peer) if peer != best.peer)
        return iter(rows)

    def best(self, key: RouteKey) -> Path | None:
        return self._best.get(key)

    def best_since(self, key: RouteKey) -> float | None:
        """When the current best path of `key` became best."""
        return self._best_since.get(key)

    def bests(self) -> Iterator[Path]:
        return iter(list(self._best.values()))

    def paths(self, key: RouteKey) -> tuple[Path, ...]:
        """Every path for `key`, one per peer, by peer id."""
        by_peer = self._paths.get(key, {})
        return tuple(by_peer[peer] for peer in sorted(by_peer))

    def peers(self) -> list[str]:
        """Peers with at least one path in their Adj-RIB-In."""
        return list(self._adj_in)

    def paths_from(self, peer: str) -> list[Path]:
        """The Adj-RIB-In of `peer` (LOCAL: our own routes)."""
        return list(self._adj_in.get(peer, {}).values())

    def count_from(self, peer: str) -> int:
        """How many paths `peer` has in its Adj-RIB-In."""
        return len(self._adj_in.get(peer, ()))

    def holds(self, peer: str, key: RouteKey) -> bool:
        """Whether `peer` has a path for `key`."""
        return key in self._adj_in.get(peer, ())

    # -- mutations

    def update(self, path: Path, now: float) -> list[RibChange]:
        """`path.peer` announces `path`, replacing its previous path for the same key.

        An announcement identical to the one held (only `received` differs)
        changes nothing: the first `received` stays.
        """
        key = path.key
        held = self._adj_in.get(path.peer, {}).get(key)
        if held is not None and dataclasses.replace(path, received=held.received) == held:
            return []
        if held is None:
            self.counts[path.peer, route_kind(key)] += 1
        self._adj_in.setdefault(path.peer, {})[key] = path
        self._paths.setdefault(key, {})[path.peer] = path
        return self._finish(self._reselect([key], now))

    def withdraw(self, peer: str, key: RouteKey, now: float) -> list[RibChange]:
        """`peer` withdraws its path for `key` (unknown: nothing changes)."""
        adj = self._adj_in.get(peer)
        if adj is None or key not in adj:
            return []
        self._forget(peer, key)
        return self._finish(self._reselect([key], now))

    def drop_peer(self, peer: str, now: float) -> list[RibChange]:
        """The session with `peer` went down: all its paths go at once."""
        adj = self._adj_in.get(peer)
        if not adj:
            return []
        keys = list(adj)
        for key in keys:
            self._forget(peer, key)
        return self._finish(self._reselect(keys, now))

    def set_domain_of(self, domain_of: DomainOf) -> list[MacLocationChanged]:
        """The import policy changed (networks added or removed): regroup the MAC view."""
        if self.macs is None:
            self.macs = MacSelection(domain_of, always_compare_med=self.always_compare_med)
        return self.macs.rebuild(self._best.values(), domain_of)

    # -- internals

    def _forget(self, peer: str, key: RouteKey) -> None:
        adj = self._adj_in[peer]
        del adj[key]
        self.counts[peer, route_kind(key)] -= 1
        if not adj:
            del self._adj_in[peer]
        by_peer = self._paths[key]
        del by_peer[peer]
        if not by_peer:
            del self._paths[key]

    def _reselect(self, keys: list[RouteKey], now: float) -> list[BestPathChanged]:
        changes = []
        for key in keys:
            by_peer = self._paths.get(key)
            new = decide(by_peer.values(), always_compare_med=self.always_compare_med) if by_peer else None
            old = self._best.get(key)
            if new == old:
                continue
            if new is None:
                del self._best[key]
                del self._best_since[key]
            else:
                self._best[key] = new
                self._best_since[key] = now
            changes.append(BestPathChanged(key, old, new))
        return changes

    def _finish(self, changes: list[BestPathChanged]) -> list[RibChange]:
        out: list[RibChange] = list(changes)
        if self.macs is not None and changes:
            out.extend(self.macs.apply(changes))
        return out
