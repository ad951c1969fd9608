"""Flood lists: per VNI, the remote VTEPs that get a copy of every
broadcast, multicast and unknown-unicast frame (head-end replication).

A VTEP may be on a list for several reasons at once (static config, a BGP
inclusive-multicast route); it leaves the list when the last one goes.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from overlayd.fabric.fdb import Source


@dataclass(frozen=True, slots=True)
class FloodMemberAdded:
    vni: int
    vtep: str


@dataclass(frozen=True, slots=True)
class FloodMemberRemoved:
    vni: int
    vtep: str


FloodChange = FloodMemberAdded | FloodMemberRemoved


class FloodLists:
    def __init__(self) -> None:
        self._members: dict[int, dict[str, set[Source]]] = {}
        self._targets: dict[int, tuple[str, ...]] = {}

    def add(self, vni: int, vtep: str, source: Source) -> FloodMemberAdded | None:
        reasons = self._members.setdefault(vni, {}).setdefault(vtep, set())
        fresh = not reasons
        reasons.add(source)
        if not fresh:
            return None
        self._refresh(vni)
        return FloodMemberAdded(vni, vtep)

    def remove(self, vni: int, vtep: str, source: Source) -> FloodMemberRemoved | None:
        reasons = self._members.get(vni, {}).get(vtep)
        if not reasons or source not in reasons:
            return None
        reasons.discard(source)
        if reasons:
            return None
        del self._members[vni][vtep]
        self._refresh(vni)
        return FloodMemberRemoved(vni, vtep)

    def replace(self, vni: int, vteps: Iterable[str], source: Source) -> list[FloodChange]:
        """Make `source`'s contribution to `vni` exactly `vteps`."""
        wanted = set(vteps)
        have = {v for v, why in self._members.get(vni, {}).items() if source in why}
        changes: list[FloodChange] = []
        for vtep in sorted(have - wanted):
            if (c := self.remove(vni, vtep, source)) is not None:
                changes.append(c)
        for vtep in sorted(wanted - have):
            if (c := self.add(vni, vtep, source)) is not None:
                changes.append(c)
        return changes

    def flush(self, vni: int) -> list[FloodMemberRemoved]:
        """Empty `vni`'s list, whatever put each member there."""
        members = self._members.pop(vni, {})
        self._targets.pop(vni, None)
        return [FloodMemberRemoved(vni, vtep) for vtep in sorted(members)]

    def targets(self, vni: int) -> tuple[str, ...]:
        """The VTEPs to replicate to, sorted; the same tuple until the list changes."""
        return self._targets.get(vni, ())

    def sources(self, vni: int, vtep: str) -> frozenset[Source]:
        return frozenset(self._members.get(vni, {}).get(vtep, ()))

    def vnis(self) -> list[int]:
        return sorted(self._members)

    def _refresh(self, vni: int) -> None:
        self._targets[vni] = tuple(sorted(self._members[vni]))
