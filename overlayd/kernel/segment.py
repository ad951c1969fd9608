"""The kernel's share of one L2 segment (`networks[].backend: kernel`), without I/O.

The kernel's bridge (named `device`) and VXLAN device (`vx<VNI>`, enslaved to
the bridge, `nolearning`, `neigh_suppress on`) move the frames; overlayd
fills the VXLAN device's forwarding database and the bridge's neighbour
table from its own tables, as FRR's zebra does from its RIB:

  a MAC the FDB places behind a remote VTEP  ->  MAC dev vxN dst VTEP self permanent
  each VTEP of the flood list (type-3)       ->  00:00:00:00:00:00 dev vxN dst VTEP self permanent
  an IP/MAC binding from BGP or config       ->  IP lladdr MAC dev <bridge> extern_learn (noarp)

Unknown unicast, broadcast and multicast leave through the all-zeros
entries (head-end replication, one copy per member); ARP requests and
neighbour solicitations for a bound IP are answered by the bridge
(`neigh_suppress`) instead of crossing the overlay. Local MACs and IPs come
the other way: the bridge learns them, and `io` feeds them into the tables.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from overlayd.kernel.state import ZERO_MAC, FdbEntry, IpAddress, KernelState, Neighbor


class MacEntry(Protocol):
    """What the planner reads of an FDB entry (`fabric.fdb.FdbEntry`)."""

    mac: bytes
    vtep: str | None  # None: local


class Binding(Protocol):
    """What the planner reads of an IP/MAC binding (`fabric.neighbors.Binding`)."""

    ip: IpAddress
    mac: bytes


@dataclass(frozen=True)
class SegmentSpec:
    """One kernel L2 segment: its VNI, its bridge and VXLAN device, our VTEP's family."""

    vni: int
    bridge: str
    vxlan: str
    family: int  # our VTEP's IP version: remote VTEPs of the other one cannot be reached


def plan_segment(spec: SegmentSpec, macs: Iterable[MacEntry], flood: Iterable[str],
                 bindings: Iterable[Binding]) -> KernelState:
    """What the kernel should hold for one segment, from its FDB entries (local ones are
    skipped: the bridge has them), flood list and control-plane IP/MAC bindings."""
    state = KernelState()
    fdb, device, family = state.fdb, spec.vxlan, spec.family
    for entry in macs:  # the hot loop of a segment with many MACs: keys written directly
        if entry.vtep is None:
            continue
        vtep = _address(entry.vtep)
        if vtep.version == family and entry.mac != ZERO_MAC:
            fdb[(device, entry.mac, None)] = FdbEntry(device, entry.mac, vtep)
    for member in flood:
        vtep = _address(member)
        if vtep.version == family:
            state.add(FdbEntry(device, ZERO_MAC, vtep))
    for b in bindings:
        state.add(Neighbor(spec.bridge, b.ip, b.mac, extern_learn=True))
    return state


@functools.lru_cache(maxsize=65536)
def _address(text: str) -> IpAddress:
    """A VTEP's address: few distinct ones stand behind many MACs."""
    return ipaddress.ip_address(text)
