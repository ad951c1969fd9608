"""ARP/ND bindings: (VNI, IP) -> the MAC that answers for that address.

Each source keeps its own binding for an address, side by side:

- `local`: snooped from ARP and neighbour discovery a host on one of our TAP
  devices sent. This is what we advertise in our type-2 routes ("MAC with its
  IP"); it ages out `aging_s` after the host last showed it (a new ARP or NA
  refreshes it), like a data-plane FDB entry.
- `bgp`: an EVPN MAC/IP route: a host behind another VTEP. Stays until the
  control plane withdraws it.
- `static`: the config file. Stays until removed.

`lookup` answers with the binding of the highest-ranked source present —
static, then bgp, then local, the FDB's order: what other VTEPs agreed on
through BGP (MAC mobility sequence numbers included) outranks what one host
on our segment claims, so a local host cannot hijack a remote address in the
replies ARP suppression sends. A shadowed local binding is kept, not
overwritten: it is still what we heard here, the control plane still sees
its events (and it is what `lookup` returns again once the route is
withdrawn). A source only ever replaces its own binding; withdrawing one
never touches another's.

Time is a parameter; every mutation returns what changed (`NeighborLearned`,
`NeighborMoved`, `NeighborRemoved`), per source, and nothing else happens
behind the caller's back.

Local bindings are bounded per VNI (`limit_local`, `networks[].max_local_ips`):
one more address than that is not bound -- `learn` returns `LOCAL_FULL`
instead of a change, counted in `refused` -- so a host claiming address
after address cannot grow the type-2 routes every other VTEP holds. What is
bound stays and refreshes; an address that moves to another MAC is not one
more.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from overlayd.fabric.fdb import DEFAULT_AGING_S, Source

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
SOURCES = (Source.LOCAL, Source.BGP, Source.STATIC)
"""The sources a binding can have; `Source.DATA` (VXLAN learning) has no IP to offer."""


@dataclass(slots=True)
class Binding:
    vni: int
    ip: IP
    mac: bytes
    source: Source
    updated: float  # when installed or last confirmed by snooping


@dataclass(frozen=True, slots=True)
class NeighborLearned:
    """`source` had no binding for `ip` on `vni` and now binds it to `mac`."""

    vni: int
    ip: IP
    mac: bytes
    source: Source


@dataclass(frozen=True, slots=True)
class NeighborMoved:
    """`source`'s binding for `ip` now names `mac` instead of `old_mac` (the address moved hosts)."""

    vni: int
    ip: IP
    old_mac: bytes
    mac: bytes
    source: Source


@dataclass(frozen=True, slots=True)
class NeighborRemoved:
    """`source`'s binding `ip` -> `mac` left the table; `aged` when it timed out rather than withdrawn."""

    vni: int
    ip: IP
    mac: bytes
    source: Source
    aged: bool


NeighborChange = NeighborLearned | NeighborMoved | NeighborRemoved


class NeighborRefused:
    """`learn` did not bind a local address: the VNI holds its `max_local_ips` already."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "LOCAL_FULL"


LOCAL_FULL = NeighborRefused()


def _check_source(source: Source) -> None:
    if source not in SOURCES:
        raise ValueError(f"a neighbour binding cannot come from {source.label!r}")


class Neighbors:
    """The table. `lookup` is what ARP suppression asks; `learn` is cheap when nothing changes."""

    def __init__(self, aging_s: float = DEFAULT_AGING_S):
        if aging_s <= 0:
            raise ValueError("aging_s must be positive")
        self.aging_s = aging_s
        self.aging_exempt: set[int] = set()  # VNIs whose local bindings something else ages (a kernel bridge)
        self._slots: dict[tuple[int, IP], dict[Source, Binding]] = {}
        self._by_mac: dict[tuple[int, bytes], set[tuple[IP, Source]]] = {}
        self.local_limits: dict[int, int] = {}  # VNI -> the most local bindings it may hold
        self.refused: dict[int, int] = {}  # VNI -> local bindings refused for that
        # (VNI, source) -> bindings, kept as the table changes: the local ones are what
        # limit_local bounds, and the metrics read the table's size without a walk
        self.counts: Counter[tuple[int, Source]] = Counter()

    def limit_local(self, vni: int, max_ips: int) -> None:
        """At most `max_ips` local bindings on `vni` (those beyond it now stay until they go)."""
        if max_ips < 1:
            raise ValueError("max_ips must be at least 1")
        self.local_limits[vni] = max_ips

    def local_count(self, vni: int) -> int:
        return self.counts[vni, Source.LOCAL]

    def __len__(self) -> int:
        """The number of bindings, each source's counted."""
        return sum(len(slots) for slots in self._slots.values())

    def __iter__(self) -> Iterator[Binding]:
        """Every binding, shadowed ones included."""
        return iter([b for slots in self._slots.values() for b in slots.values()])

    def lookup(self, vni: int, ip: IP) -> Binding | None:
        """The binding that speaks for `ip`: the highest-ranked source's, or None."""
        slots = self._slots.get((vni, ip))
        if not slots:
            return None
        if len(slots) == 1:
            for binding in slots.values():
                return binding
        return max(slots.values(), key=lambda b: b.source.rank)

    def get(self, vni: int, ip: IP, source: Source) -> Binding | None:
        """`source`'s own binding for `ip`, shadowed or not."""
        slots = self._slots.get((vni, ip))
        return None if slots is None else slots.get(source)

    def for_mac(self, vni: int, mac: bytes, source: Source | None = None) -> list[Binding]:
        """The bindings naming `mac` (from `source`; None: any), IPv4 before IPv6, by address."""
        found = []
        for ip, src in self._by_mac.get((vni, mac), ()):
            if source is None or src is source:
                found.append(self._slots[(vni, ip)][src])
        found.sort(key=lambda b: (b.ip.version, b.ip, b.source.rank))
        return found

    def learn(self, vni: int, ip: IP, mac: bytes, source: Source,
              now: float) -> NeighborChange | NeighborRefused | None:
        """`source` says `ip` is at `mac`; return the change, or None if it only refreshed, or
        `LOCAL_FULL` if a new local binding would be one more than the VNI may hold."""
        _check_source(source)
        key = (vni, ip)
        slots = self._slots.get(key)
        binding = None if slots is None else slots.get(source)
        if binding is None:
            if source is Source.LOCAL:
                count = self.counts[vni, Source.LOCAL]
                if count >= self.local_limits.get(vni, count + 1):
                    self.refused[vni] = self.refused.get(vni, 0) + 1
                    return LOCAL_FULL
            if slots is None:
                slots = self._slots[key] = {}
            slots[source] = Binding(vni, ip, mac, source, now)
            self.counts[vni, source] += 1
            self._index(vni, mac, ip, source)
            return NeighborLearned(vni, ip, mac, source)
        binding.updated = now
        if binding.mac == mac:
            return None
        old = binding.mac
        self._unindex(vni, old, ip, source)
        binding.mac = mac
        self._index(vni, mac, ip, source)
        return NeighborMoved(vni, ip, old, mac, source)

    def remove(self, vni: int, ip: IP, source: Source, mac: bytes | None = None) -> NeighborRemoved | None:
        """Withdraw `source`'s binding for `ip` (only if it still names `mac`, when given)."""
        slots = self._slots.get((vni, ip))
        binding = None if slots is None else slots.get(source)
        if binding is None or (mac is not None and binding.mac != mac):
            return None
        self._drop(binding)
        return NeighborRemoved(vni, ip, binding.mac, source, aged=False)

    def expire(self, now: float) -> list[NeighborRemoved]:
        """Remove local bindings not confirmed for `aging_s` (outside `aging_exempt`); oldest
        first (then by VNI, address)."""
        deadline = now - self.aging_s
        exempt = self.aging_exempt
        stale = [
            b
            for slots in self._slots.values()
            if (b := slots.get(Source.LOCAL)) is not None and b.updated <= deadline and b.vni not in exempt
        ]
        stale.sort(key=lambda b: (b.updated, b.vni, b.ip.version, b.ip))
        for b in stale:
            self._drop(b)
        return [NeighborRemoved(b.vni, b.ip, b.mac, b.source, aged=True) for b in stale]

    def flush(self, vni: int | None = None, source: Source | None = None) -> list[NeighborRemoved]:
        """Remove every binding matching `vni` and `source` (None: any)."""
        gone = [
            b
            for b in self
            if (vni is None or b.vni == vni) and (source is None or b.source is source)
        ]
        gone.sort(key=lambda b: (b.vni, b.ip.version, b.ip, b.source.rank))
        for b in gone:
            self._drop(b)
        return [NeighborRemoved(b.vni, b.ip, b.mac, b.source, aged=False) for b in gone]

    def _drop(self, binding: Binding) -> None:
        key = (binding.vni, binding.ip)
        slots = self._slots[key]
        del slots[binding.source]
        self.counts[binding.vni, binding.source] -= 1
        if not slots:
            del self._slots[key]
        self._unindex(binding.vni, binding.mac, binding.ip, binding.source)

    def _index(self, vni: int, mac: bytes, ip: IP, source: Source) -> None:
        self._by_mac.setdefault((vni, mac), set()).add((ip, source))

    def _unindex(self, vni: int, mac: bytes, ip: IP, source: Source) -> None:
        ips = self._by_mac[(vni, mac)]
        ips.discard((ip, source))
        if not ips:
            del self._by_mac[(vni, mac)]
