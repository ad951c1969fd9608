"""The kernel entries overlayd owns, as plain values, and the diff between two sets of them.

A `KernelState` maps each entry's key to the entry:

    routes      dst prefix             -> Route      (main table, `routing.route_protocol`)
    neighbors   (device, ip)           -> Neighbor   (`ip neigh`, permanent or extern_learn)
    fdb         (device, mac[, vtep])  -> FdbEntry   (`bridge fdb ... self dst VTEP`)
                ("master", device, mac) -> BridgeFdbEntry (`bridge fdb ... master extern_learn`)
    addresses   (device, interface)    -> Address    (`ip addr` on a device overlayd created)

One route per destination: overlayd never installs two routes to one
prefix, and a destination routed by other software is theirs (the kernel
says EEXIST to our `add`, which is counted and shown, never replaced). A
unicast MAC has one remote VTEP (a move is a `replace`); the all-zeros MAC
of head-end replication has one entry per flood-list member, so its key
includes the VTEP.

`diff(desired, actual)` returns the operations, in an order the kernel
accepts: additions and changes bottom-up (addresses, FDB, neighbours,
routes: an `onlink` route is accepted before its neighbour exists, but a
neighbour is wanted before traffic follows the route), removals top-down.
A changed entry (same key, other value) is one `replace`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Union

Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface

ZERO_MAC = b"\x00" * 6


@dataclass(frozen=True, slots=True)
class Route:
    """`ip route add DST [encap ip6 dst X] [via GATEWAY] [dev DEVICE] [onlink] proto <ours>`
    in the main table.

    A route with no gateway is a device route (scope link); a gateway of the
    other family than `dst` is an RFC 5549-style `via inet6` next hop; `encap`
    sends through a tunnel device in `external` mode to that remote.
    """

    dst: Prefix
    gateway: IpAddress | None = None
    device: str | None = None
    onlink: bool = False
    encap: IpAddress | None = None  # a lightweight tunnel's remote: `encap ip[6] dst ENCAP`

    @property
    def key(self) -> Prefix:
        return self.dst

    def __str__(self) -> str:
        encap = f" encap ip{'6' if self.encap.version == 6 else ''} dst {self.encap}" if self.encap else ""
        via = f" via {self.gateway}" if self.gateway is not None else ""
        dev = f" dev {self.device}" if self.device else ""
        return f"{self.dst}{encap}{via}{dev}{' onlink' if self.onlink else ''}"


@dataclass(frozen=True, slots=True)
class Neighbor:
    """`ip neigh replace IP lladdr MAC dev DEVICE`: permanent, or extern_learn + noarp on a bridge."""

    device: str
    ip: IpAddress
    mac: bytes
    extern_learn: bool = False

    @property
    def key(self) -> tuple[str, IpAddress]:
        return (self.device, self.ip)

    def __str__(self) -> str:
        return f"{self.ip} lladdr {self.mac.hex(':')} dev {self.device}"


@dataclass(frozen=True, slots=True)
class FdbEntry:
    """`bridge fdb append MAC dev DEVICE dst VTEP self permanent` on a VXLAN device."""

    device: str
    mac: bytes
    vtep: IpAddress

    @property
    def key(self) -> tuple[str, bytes, IpAddress | None]:
        return (self.device, self.mac, self.vtep if self.mac == ZERO_MAC else None)

    def __str__(self) -> str:
        return f"{self.mac.hex(':')} dev {self.device} dst {self.vtep}"


@dataclass(frozen=True, slots=True)
class BridgeFdbEntry:
    """`bridge fdb replace MAC dev DEVICE master extern_learn`: the bridge's own FDB places a
    remote MAC behind its VXLAN port.

    The VXLAN device's entry (`FdbEntry`) says which VTEP; this one is what the
    bridge's `neigh_suppress` looks up before it answers an ARP request or
    neighbour solicitation for the MAC's IP. Without it the bridge answers only
    while it happens to have learned the MAC from traffic (and forgets it after
    its ageing time). An extern_learn entry does not age, and a frame from the
    MAC on a local port takes it over (the host moved here). FRR's zebra
    installs both (NTF_SELF | NTF_MASTER | NTF_EXT_LEARNED).
    """

    device: str  # the VXLAN device, a port of the bridge
    mac: bytes

    @property
    def key(self) -> tuple[str, str, bytes]:
        return ("master", self.device, self.mac)

    def __str__(self) -> str:
        return f"{self.mac.hex(':')} dev {self.device} master extern_learn"


@dataclass(frozen=True, slots=True)
class Address:
    """`ip addr add INTERFACE dev DEVICE` on a device overlayd created."""

    device: str
    interface: Interface

    @property
    def key(self) -> tuple[str, Interface]:
        return (self.device, self.interface)

    def __str__(self) -> str:
        return f"{self.interface} dev {self.device}"


Entry = Union[Route, Neighbor, FdbEntry, BridgeFdbEntry, Address]
Kind = Literal["addresses", "fdb", "neighbors", "routes"]
KINDS: tuple[Kind, ...] = ("addresses", "fdb", "neighbors", "routes")  # bottom-up


@dataclass
class KernelState:
    """Entries by kind, each a {key: entry} map (see the module docstring)."""

    routes: dict[Prefix, Route] = field(default_factory=dict)
    neighbors: dict[tuple, Neighbor] = field(default_factory=dict)
    fdb: dict[tuple, FdbEntry] = field(default_factory=dict)
    addresses: dict[tuple, Address] = field(default_factory=dict)

    @classmethod
    def of(cls, entries: Iterable[Entry]) -> KernelState:
        state = cls()
        for e in entries:
            state.add(e)
        return state

    def add(self, entry: Entry) -> None:
        self.table(kind_of(entry))[entry.key] = entry

    def discard(self, entry: Entry) -> None:
        self.table(kind_of(entry)).pop(entry.key, None)

    def table(self, kind: Kind) -> dict:
        return getattr(self, kind)

    def update(self, other: KernelState) -> None:
        for kind in KINDS:
            self.table(kind).update(other.table(kind))

    def __len__(self) -> int:
        return sum(len(self.table(k)) for k in KINDS)

    def __iter__(self):
        for kind in KINDS:
            yield from self.table(kind).values()

    def copy(self) -> KernelState:
        return KernelState(dict(self.routes), dict(self.neighbors), dict(self.fdb), dict(self.addresses))


def kind_of(entry: Entry) -> Kind:
    if isinstance(entry, Route):
        return "routes"
    if isinstance(entry, Neighbor):
        return "neighbors"
    if isinstance(entry, (FdbEntry, BridgeFdbEntry)):
        return "fdb"
    if isinstance(entry, Address):
        return "addresses"
    raise TypeError(f"not a kernel entry: {entry!r}")


Action = Literal["add", "replace", "delete", "probe"]


@dataclass(frozen=True, slots=True)
class Op:
    """One change to the kernel: `entry` added, replacing `old`, or deleted; or (a neighbour
    only) `probe`d: handed over to the host's own table in PROBE state, where it is no longer
    ours and the kernel asks the MAC at once (`segment.probe_instead`)."""

    action: Action
    entry: Entry
    old: Entry | None = None

    def __str__(self) -> str:
        return f"{self.action} {self.entry}"


def diff_table(desired: Mapping, actual: Mapping) -> tuple[list[Op], list[Op]]:
    """(additions and replacements, deletions) that turn `actual` into `desired`."""
    upserts = []
    for key, entry in desired.items():
        old = actual.get(key)
        if old is None:
            upserts.append(Op("add", entry))
        elif old != entry:
            upserts.append(Op("replace", entry, old))
    deletes = [Op("delete", entry) for key, entry in actual.items() if key not in desired]
    return upserts, deletes


def diff(desired: KernelState, actual: KernelState, keep: KernelState | None = None) -> list[Op]:
    """The operations that make `actual` equal to `desired`, in the order to apply them.

    `keep`: entries not to delete even though `desired` lacks them (what a
    restart adopted from the kernel, until the first full table is known).
    """
    upserts: list[Op] = []
    deletes: list[list[Op]] = []
    for kind in KINDS:
        up, down = diff_table(desired.table(kind), actual.table(kind))
        upserts += up
        if keep is not None:
            kept = keep.table(kind)
            down = [op for op in down if op.entry.key not in kept]
        deletes.append(down)
    return upserts + [op for down in reversed(deletes) for op in down]
