"""The kernel's share of one L2 segment (`networks[].backend: kernel`), without I/O.

The kernel's bridge (named `device`) and VXLAN device (`vx<VNI>`, enslaved to
the bridge, `nolearning`, `neigh_suppress on`) move the frames; overlayd
fills the VXLAN device's forwarding database and the bridge's neighbour
table from its own tables, as FRR's zebra does from its RIB:

  a MAC the FDB places behind a remote VTEP  ->  MAC dev vxN dst VTEP self permanent
                                                 MAC dev vxN master extern_learn
  each VTEP of the flood list (type-3)       ->  00:00:00:00:00:00 dev vxN dst VTEP self permanent
  an IP/MAC binding from BGP or config       ->  IP lladdr MAC dev <bridge> extern_learn (noarp)

Unknown unicast, broadcast and multicast leave through the all-zeros
entries (head-end replication, one copy per member); ARP requests and
neighbour solicitations for a bound IP are answered by the bridge
(`neigh_suppress`) instead of crossing the overlay. The bridge answers only
for a MAC that its own FDB places on the VXLAN port, hence the `master
extern_learn` entry next to the VXLAN device's (zebra installs both too).
Local MACs and IPs come the other way: the bridge learns them, and `io`
feeds them into the tables. One hand-over links the two (`probe_instead`):
when a host moves here from another VTEP, our extern_learn entry for its IP
is not deleted but left to the host's table as a probe, so that its IP is
learned here at once.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol

from overlayd.kernel.state import ZERO_MAC, BridgeFdbEntry, FdbEntry, IpAddress, KernelState, Neighbor, Op


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
            mac = entry.mac
            fdb[(device, mac, None)] = FdbEntry(device, mac, vtep)
            fdb[("master", device, mac)] = BridgeFdbEntry(device, mac)
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


def probe_instead(ops: Iterable[Op], is_local: Callable[[str, bytes], bool]) -> list[Op]:
    """`ops` with each delete of an extern_learn neighbour whose MAC is now on a local port of
    its bridge (`is_local(bridge, mac)`) turned into a probe.

    That is a host that moved here from another VTEP, whose remote MAC/IP
    route was withdrawn once our route for its MAC won. Deleting our entry
    would leave the host's neighbour table without the IP: the ARP the host
    sent on arrival changed nothing while our NOARP entry held the address,
    and nothing asks it again until it next speaks to this node. As a probe
    the entry becomes the host's own: the kernel asks the MAC at once, and
    its answer (REACHABLE, or FAILED) is learned like any local binding.
    """
    out = []
    for op in ops:
        entry = op.entry
        if (op.action == "delete" and isinstance(entry, Neighbor) and entry.extern_learn
                and is_local(entry.device, entry.mac)):
            op = Op("probe", entry)
        out.append(op)
    return out
