"""Kernel entries over rtnetlink, in batches: write routes, neighbours, FDB entries and
addresses; read back the ones overlayd owns; watch for changes made by others.

pyroute2's message classes (`rtmsg`, `ndmsg`, `ifaddrmsg`) define every
message: `encode` builds requests with them, and the reads decode with them.
Two paths are done by hand, because pyroute2 spends ~130 us on each message
and a table of 10,000 MACs is 10,000 messages: `pack` writes the same bytes
as `encode` with `struct` (a unit test holds them equal on random entries),
and the monitor reads the owned neighbour and FDB entries it is told about
with a few `struct` reads (`_owned_neighbor`). The transport is a plain
NETLINK_ROUTE socket, because pyroute2's request API waits for each
acknowledgement in turn (about 2,000 entries/s here) where the kernel takes
a batch of requests in one `send` and acknowledges each. Each request carries its own sequence number, so every
acknowledgement names the operation it answers: an error is kept per entry,
never lost in the batch.

What overlayd owns, when it reads the kernel back (`read_owned`):

    routes      protocol `routing.route_protocol` in the main table
    neighbours  on overlayd's devices: permanent ones (the routed VXLAN
                device), or extern_learn ones (a bridge of a kernel segment)
    FDB         `self` entries with a remote (dst) on overlayd's VXLAN devices, and
                the bridge's extern_learn entries on them (`master`)
    addresses   every global address on overlayd's devices

`Monitor` is a second socket subscribed to link, address, neighbour and
route notifications. It reads cheaply: the header and the fixed part of each
message say whether it is about an owned device or our route protocol, and
only those are decoded (`Notice`).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from pyroute2.netlink import NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, NLM_F_REQUEST
from pyroute2.netlink.rtnl import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELNEIGH,
    RTM_DELROUTE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWNEIGH,
    RTM_NEWROUTE,
)
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ndmsg import ndmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

from overlayd.kernel.state import ZERO_MAC, Address, BridgeFdbEntry, Entry, FdbEntry, KernelState, Neighbor, Op, Route

AF_BRIDGE = 7
RT_TABLE_MAIN = 254
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253
RTN_UNICAST = 1
RTNH_F_ONLINK = 4
NUD_REACHABLE, NUD_PROBE, NUD_NOARP, NUD_PERMANENT = 0x02, 0x10, 0x40, 0x80
NTF_SELF, NTF_MASTER, NTF_EXT_LEARNED = 0x02, 0x04, 0x10
IFA_F_NODAD, IFA_F_PERMANENT = 0x02, 0x80
NLMSG_ERROR, NLMSG_DONE = 2, 3
# rtnetlink multicast groups (the old bitmask form): link, neighbour, v4/v6 address and route
GROUPS = 0x1 | 0x4 | 0x10 | 0x40 | 0x100 | 0x400

_HEADER = struct.Struct("=IHHII")  # nlmsghdr: length, type, flags, sequence, port id
BATCH_BYTES = 64 * 1024
RCVBUF_BYTES = 4 << 20


def _family(address) -> int:
    return socket.AF_INET if address.version == 4 else socket.AF_INET6


def _mac(mac: bytes) -> str:
    return mac.hex(":")


class Devices:
    """Every link's name -> index, and which of them overlayd made (refreshed by the caller)."""

    def __init__(self, index: dict[str, int] | None = None, owned: Iterable[str] = ()):
        self.index: dict[str, int] = dict(index or {})
        self._names = {i: n for n, i in self.index.items()}
        self.owned = frozenset(owned)

    def name(self, index: int) -> str | None:
        return self._names.get(index)

    def owned_name(self, index: int) -> str | None:
        """The name of an owned device with this index, or None."""
        name = self._names.get(index)
        return name if name in self.owned else None

    def owned_indexes(self) -> list[int]:
        return [self.index[n] for n in self.owned if n in self.index]


def encode(op: Op, devices: Devices, protocol: int, sequence: int) -> bytes:
    """One request for `op`; KeyError when the entry's device has no index (it is gone)."""
    entry = op.entry
    delete = op.action == "delete"
    flags = NLM_F_REQUEST | NLM_F_ACK
    if op.action == "probe" and not isinstance(entry, Neighbor):
        raise TypeError(f"only a neighbour can be probed: {op}")
    if isinstance(entry, Route):
        msg = rtmsg()
        msg["family"] = _family(entry.dst)
        msg["dst_len"] = entry.dst.prefixlen
        msg["table"] = RT_TABLE_MAIN
        msg["proto"] = protocol
        msg["type"] = RTN_UNICAST
        msg["scope"] = RT_SCOPE_LINK if entry.gateway is None else RT_SCOPE_UNIVERSE
        msg["flags"] = RTNH_F_ONLINK if entry.onlink else 0
        attrs: list = [("RTA_DST", str(entry.dst.network_address))]
        if entry.gateway is not None and not delete:
            if entry.gateway.version == entry.dst.version:
                attrs.append(("RTA_GATEWAY", str(entry.gateway)))
            else:
                attrs.append(("RTA_VIA", {"family": _family(entry.gateway), "addr": str(entry.gateway)}))
        if entry.device is not None and not delete:
            attrs.append(("RTA_OIF", devices.index[entry.device]))
        if entry.encap is not None and not delete:
            attrs.append(("RTA_ENCAP_TYPE", _LWT_TYPE[entry.encap.version]))
            attrs.append(("RTA_ENCAP", _lwt_dst(entry.encap)))  # pyroute2 has no class for it: raw
        msg["attrs"] = attrs
        kind = RTM_DELROUTE if delete else RTM_NEWROUTE
        if op.action == "add":
            flags |= NLM_F_CREATE | NLM_F_EXCL  # never over another program's route
        elif op.action == "replace":
            flags |= NLM_F_CREATE | NLM_F_REPLACE
    elif isinstance(entry, Neighbor):
        msg = ndmsg()
        msg["family"] = _family(entry.ip)
        msg["ifindex"] = devices.index[entry.device]
        msg["state"] = NUD_NOARP if entry.extern_learn else NUD_PERMANENT
        msg["flags"] = NTF_EXT_LEARNED if entry.extern_learn else 0
        if op.action == "probe":  # the host's own entry from now on: the kernel asks the MAC at once
            msg["state"], msg["flags"] = NUD_PROBE, 0
        msg["attrs"] = [("NDA_DST", str(entry.ip))] + ([] if delete else [("NDA_LLADDR", _mac(entry.mac))])
        kind = RTM_DELNEIGH if delete else RTM_NEWNEIGH
        if not delete:
            flags |= NLM_F_CREATE | NLM_F_REPLACE
    elif isinstance(entry, FdbEntry):
        msg = ndmsg()
        msg["family"] = AF_BRIDGE
        msg["ifindex"] = devices.index[entry.device]
        msg["state"] = NUD_PERMANENT
        msg["flags"] = NTF_SELF
        msg["attrs"] = [("NDA_LLADDR", _mac(entry.mac)), ("NDA_DST", str(entry.vtep))]
        kind = RTM_DELNEIGH if delete else RTM_NEWNEIGH
        if not delete:
            # The all-zeros MAC has one entry per flood-list member (append); a unicast MAC
            # has one remote, replaced when it moves.
            flags |= NLM_F_CREATE | (NLM_F_APPEND if entry.mac == ZERO_MAC else NLM_F_REPLACE)
    elif isinstance(entry, BridgeFdbEntry):
        msg = ndmsg()
        msg["family"] = AF_BRIDGE
        msg["ifindex"] = devices.index[entry.device]
        msg["state"] = NUD_REACHABLE  # as zebra: the bridge wants one of REACHABLE, NOARP, PERMANENT
        msg["flags"] = NTF_MASTER | NTF_EXT_LEARNED
        msg["attrs"] = [("NDA_LLADDR", _mac(entry.mac))]
        kind = RTM_DELNEIGH if delete else RTM_NEWNEIGH
        if not delete:
            flags |= NLM_F_CREATE | NLM_F_REPLACE
    elif isinstance(entry, Address):
        msg = ifaddrmsg()
        iface = entry.interface
        msg["family"] = _family(iface)
        msg["prefixlen"] = iface.network.prefixlen
        msg["index"] = devices.index[entry.device]
        msg["flags"] = IFA_F_NODAD if iface.version == 6 else 0
        msg["attrs"] = [("IFA_LOCAL", str(iface.ip)), ("IFA_ADDRESS", str(iface.ip))]
        kind = RTM_DELADDR if delete else RTM_NEWADDR
        if not delete:
            flags |= NLM_F_CREATE | NLM_F_REPLACE
    else:
        raise TypeError(f"not a kernel entry: {entry!r}")
    msg["header"]["type"] = kind
    msg["header"]["flags"] = flags
    msg["header"]["sequence_number"] = sequence
    msg.encode()
    return bytes(msg.data)


_NDMSG = struct.Struct("=BBHiHBB")
_RTMSG = struct.Struct("=BBBBBBBBI")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTATTR = struct.Struct("=HH")
_FAMILY = {4: socket.AF_INET, 6: socket.AF_INET6}


_LWT_TYPE = {4: 2, 6: 4}  # LWTUNNEL_ENCAP_IP, LWTUNNEL_ENCAP_IP6
_LWT_DST = 2  # LWTUNNEL_IP_DST and LWTUNNEL_IP6_DST


def _lwt_dst(remote) -> bytes:
    """RTA_ENCAP's nested attributes for `encap ip[6] dst REMOTE`."""
    return _attr(_LWT_DST, remote.packed)


def _attr(kind: int, value: bytes) -> bytes:
    length = 4 + len(value)
    return _RTATTR.pack(length, kind) + value + bytes(-length % 4)


def pack(op: Op, devices: Devices, protocol: int, sequence: int) -> bytes:
    """`encode`'s bytes, built with struct (the hot path; `encode` is the reference)."""
    entry = op.entry
    action = op.action
    delete = action == "delete"
    flags = NLM_F_REQUEST | NLM_F_ACK
    if action == "probe" and not isinstance(entry, Neighbor):
        raise TypeError(f"only a neighbour can be probed: {op}")
    if isinstance(entry, FdbEntry):
        kind = RTM_DELNEIGH if delete else RTM_NEWNEIGH
        if not delete:
            flags |= NLM_F_CREATE | (NLM_F_APPEND if entry.mac == ZERO_MAC else NLM_F_REPLACE)
        body = (_NDMSG.pack(AF_BRIDGE, 0, 0, devices.index[entry.device], NUD_PERMANENT, NTF_SELF, 0)
                + _attr(2, entry.mac) + _attr(1, entry.vtep.packed))
    elif isinstance(entry, BridgeFdbEntry):
        kind = RTM_DELNEIGH if delete else RTM_NEWNEIGH
        if not delete:
            flags |= NLM_F_CREATE | NLM_F_REPLACE
        body = (_NDMSG.pack(AF_BRIDGE, 0, 0, devices.index[entry.device], NUD_REACHABLE,
                            NTF_MASTER | NTF_EXT_LEARNED, 0) + _attr(2, entry.mac))
    elif isinstance(entry, Neighbor):
        kind = RTM_DELNEIGH if delete else RTM_NEWNEIGH
        if not delete:
            flags |= NLM_F_CREATE | NLM_F_REPLACE
        ext = entry.extern_learn
        state, nflags = (NUD_NOARP, NTF_EXT_LEARNED) if ext else (NUD_PERMANENT, 0)
        if action == "probe":  # handed to the host's own table: the kernel asks the MAC at once
            state, nflags = NUD_PROBE, 0
        body = (_NDMSG.pack(_FAMILY[entry.ip.version], 0, 0, devices.index[entry.device], state, nflags, 0)
                + _attr(1, entry.ip.packed) + (b"" if delete else _attr(2, entry.mac)))
    elif isinstance(entry, Route):
        kind = RTM_DELROUTE if delete else RTM_NEWROUTE
        if action == "add":
            flags |= NLM_F_CREATE | NLM_F_EXCL
        elif action == "replace":
            flags |= NLM_F_CREATE | NLM_F_REPLACE
        dst = entry.dst
        body = _RTMSG.pack(_FAMILY[dst.version], dst.prefixlen, 0, 0, RT_TABLE_MAIN, protocol,
                           RT_SCOPE_LINK if entry.gateway is None else RT_SCOPE_UNIVERSE, RTN_UNICAST,
                           RTNH_F_ONLINK if entry.onlink else 0)
        body += _attr(1, dst.network_address.packed)
        if entry.gateway is not None and not delete:
            gw = entry.gateway
            if gw.version == dst.version:
                body += _attr(5, gw.packed)
            else:
                body += _attr(18, struct.pack("=H", _FAMILY[gw.version]) + gw.packed)
        if entry.device is not None and not delete:
            body += _attr(4, struct.pack("=I", devices.index[entry.device]))
        if entry.encap is not None and not delete:
            body += _attr(21, struct.pack("=H", _LWT_TYPE[entry.encap.version])) + _attr(22, _lwt_dst(entry.encap))
    elif isinstance(entry, Address):
        kind = RTM_DELADDR if delete else RTM_NEWADDR
        if not delete:
            flags |= NLM_F_CREATE | NLM_F_REPLACE
        iface = entry.interface
        packed = iface.ip.packed
        body = (_IFADDRMSG.pack(_FAMILY[iface.version], iface.network.prefixlen,
                                IFA_F_NODAD if iface.version == 6 else 0, 0, devices.index[entry.device])
                + _attr(2, packed) + _attr(1, packed))
    else:
        raise TypeError(f"not a kernel entry: {entry!r}")
    return _HEADER.pack(_HEADER.size + len(body), kind, flags, sequence, 0) + body


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the kernel answered to one operation: 0, or an errno."""

    op: Op
    error: int

    @property
    def ok(self) -> bool:
        # A delete of what is already gone reached its goal, as did adding an address it has.
        return (self.error == 0
                or (self.op.action == "delete" and self.error in (errno.ENOENT, errno.ESRCH, errno.EADDRNOTAVAIL))
                or (self.op.action == "add" and isinstance(self.op.entry, Address) and self.error == errno.EEXIST))

    def describe(self) -> str:
        text = os.strerror(self.error) if self.error else "ok"
        if self.error == errno.EEXIST and isinstance(self.op.entry, Route):
            text += " (a route of another program: left alone)"
        return f"{self.op}: {text}"


class Writer:
    """A NETLINK_ROUTE socket that applies operations in batches (see the module docstring)."""

    def __init__(self, protocol: int):
        self.protocol = protocol
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        self._sock.bind((0, 0))
        self.port_id = self._sock.getsockname()[0]
        self._sequence = 0

    def close(self) -> None:
        self._sock.close()

    def apply(self, ops: Iterable[Op], devices: Devices) -> list[Outcome]:
        """Send `ops` in batches of up to BATCH_BYTES and collect every answer, in order.

        An operation on a device that has no index any more fails with ENODEV
        without being sent.
        """
        outcomes: list[Outcome] = []
        pending: dict[int, Op] = {}
        batch: list[bytes] = []
        size = 0
        for op in ops:
            self._sequence = self._sequence % 0x7FFFFFFF + 1
            try:
                data = pack(op, devices, self.protocol, self._sequence)
            except KeyError:
                outcomes.append(Outcome(op, errno.ENODEV))
                continue
            pending[self._sequence] = op
            batch.append(data)
            size += len(data)
            if size >= BATCH_BYTES:
                outcomes += self._flush(batch, pending)
                batch, size = [], 0
        if batch:
            outcomes += self._flush(batch, pending)
        return outcomes

    def _flush(self, batch: list[bytes], pending: dict[int, Op]) -> list[Outcome]:
        self._sock.send(b"".join(batch))
        # The kernel handles each request inside `send`: every answer is queued already.
        outcomes = []
        while pending:
            data = self._sock.recv(RCVBUF_BYTES)
            for msg_type, _, seq, _, body in _messages(data):
                if msg_type == NLMSG_ERROR and seq in pending:
                    (code,) = struct.unpack_from("=i", body)
                    outcomes.append(Outcome(pending.pop(seq), -code))
        return outcomes


def _messages(data: bytes) -> Iterator[tuple[int, int, int, int, memoryview]]:
    """(type, flags, sequence, port id, body) of each netlink message in `data`."""
    view = memoryview(data)
    offset = 0
    while offset + _HEADER.size <= len(data):
        length, msg_type, flags, seq, port = _HEADER.unpack_from(data, offset)
        if length < _HEADER.size:
            return
        yield msg_type, flags, seq, port, view[offset + _HEADER.size : offset + length]
        offset += (length + 3) & ~3


# -- reading back what we own ---------------------------------------------------------------


def route_of(msg, devices: Devices) -> Route | None:
    """A decoded rtmsg as a Route (main table, unicast), or None."""
    if msg.get("table") != RT_TABLE_MAIN or msg["type"] != RTN_UNICAST:
        return None
    family = msg["family"]
    dst = msg.get_attr("RTA_DST") or ("0.0.0.0" if family == socket.AF_INET else "::")
    gateway = msg.get_attr("RTA_GATEWAY")
    via = msg.get_attr("RTA_VIA")
    if gateway is None and via is not None:
        gateway = via.get("addr")
    oif = msg.get_attr("RTA_OIF")
    return Route(
        ipaddress.ip_network(f"{dst}/{msg['dst_len']}"),
        ipaddress.ip_address(gateway) if gateway else None,
        devices.name(oif) if oif is not None else None,
        bool(msg["flags"] & RTNH_F_ONLINK),
        _encap_of(msg),
    )


def _encap_of(msg):
    """The remote of an `encap ip[6] dst X` route, or None (pyroute2 leaves RTA_ENCAP raw)."""
    if msg.get_attr("RTA_ENCAP_TYPE") not in _LWT_TYPE.values():
        return None
    raw = msg.get_attr("RTA_ENCAP")
    if isinstance(raw, str):
        raw = bytes.fromhex(raw.replace(":", ""))
    offset = 0
    while raw and offset + 4 <= len(raw):
        length, kind = _RTATTR.unpack_from(raw, offset)
        if length < 4:
            break
        if kind == _LWT_DST and length - 4 in (4, 16):
            return ipaddress.ip_address(bytes(raw[offset + 4 : offset + length]))
        offset += (length + 3) & ~3
    return None


def neighbor_of(msg, devices: Devices) -> Neighbor | FdbEntry | BridgeFdbEntry | None:
    """A decoded ndmsg as a Neighbor, FdbEntry or BridgeFdbEntry that overlayd would own, or None."""
    device = devices.owned_name(msg["ifindex"])
    if device is None:
        return None
    lladdr = msg.get_attr("NDA_LLADDR")
    dst = msg.get_attr("NDA_DST")
    if lladdr is None:
        return None
    mac = bytes.fromhex(lladdr.replace(":", ""))
    if msg["family"] == AF_BRIDGE:
        if msg["flags"] & NTF_SELF:
            return FdbEntry(device, mac, ipaddress.ip_address(dst)) if dst is not None else None
        if msg["flags"] & NTF_EXT_LEARNED and not msg.get_attr("NDA_VLAN"):
            return BridgeFdbEntry(device, mac)  # the bridge's entry on our VXLAN port
        return None
    if dst is None:
        return None
    if msg["flags"] & NTF_EXT_LEARNED:
        return Neighbor(device, ipaddress.ip_address(dst), mac, extern_learn=True)
    if msg["state"] & NUD_PERMANENT:
        return Neighbor(device, ipaddress.ip_address(dst), mac)
    return None


def _owned_neighbor(body: memoryview, device: str) -> Neighbor | FdbEntry | BridgeFdbEntry | None:
    """`neighbor_of` for a raw ndmsg body on an owned device, read with struct (the monitor's
    hot path: overlayd's own FDB writes come back as notifications, one per entry)."""
    family, _, _, _, state, flags, _ = _NDMSG.unpack_from(body)
    dst = lladdr = None
    offset = _NDMSG.size
    while offset + 4 <= len(body):
        length, kind = _RTATTR.unpack_from(body, offset)
        if length < 4:
            break
        if kind == 1:
            dst = bytes(body[offset + 4 : offset + length])
        elif kind == 2:
            lladdr = bytes(body[offset + 4 : offset + length])
        offset += (length + 3) & ~3
    if lladdr is None or len(lladdr) != 6:
        return None
    if family == AF_BRIDGE and not flags & NTF_SELF:
        # the bridge's extern_learn entry on our VXLAN port (one without a VLAN)
        vlan = _has_attr(body, 5)
        return BridgeFdbEntry(device, lladdr) if flags & NTF_EXT_LEARNED and not vlan else None
    if dst is None or len(dst) not in (4, 16):
        return None
    ip = ipaddress.ip_address(dst)
    if family == AF_BRIDGE:
        return FdbEntry(device, lladdr, ip)
    if flags & NTF_EXT_LEARNED:
        return Neighbor(device, ip, lladdr, extern_learn=True)
    if state & NUD_PERMANENT:
        return Neighbor(device, ip, lladdr)
    return None


def _has_attr(body: memoryview, kind: int) -> bool:
    offset = _NDMSG.size
    while offset + 4 <= len(body):
        length, found = _RTATTR.unpack_from(body, offset)
        if length < 4:
            return False
        if found == kind:
            return True
        offset += (length + 3) & ~3
    return False


def address_of(msg, devices: Devices) -> Address | None:
    """A decoded ifaddrmsg on an owned device as an Address (not link-local), or None."""
    device = devices.owned_name(msg["index"])
    local = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
    if device is None or local is None:
        return None
    iface = ipaddress.ip_interface(f"{local}/{msg['prefixlen']}")
    if iface.ip.is_link_local:
        return None
    return Address(device, iface)


async def read_owned(ipr, devices: Devices, protocol: int) -> KernelState:
    """Everything in the kernel overlayd owns (see the module docstring), through an AsyncIPRoute."""
    state = KernelState()
    for family in (socket.AF_INET, socket.AF_INET6):
        async for msg in await ipr.get_routes(family=family, table=RT_TABLE_MAIN):
            if msg["proto"] == protocol and (route := route_of(msg, devices)) is not None:
                state.add(route)
    owned = set(devices.owned_indexes())
    async for msg in await ipr.get_neighbours():
        if msg["ifindex"] in owned and (entry := neighbor_of(msg, devices)) is not None:
            state.add(entry)
    async for msg in await ipr.fdb("dump"):
        if msg["ifindex"] in owned and (entry := neighbor_of(msg, devices)) is not None:
            state.add(entry)
    async for msg in await ipr.get_addr():
        if msg["index"] in owned and (entry := address_of(msg, devices)) is not None:
            state.add(entry)
    return state


# -- watching ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Notice:
    """A notification worth a look:

    entry    an owned entry added, changed or gone (`deleted`) by someone else: route and
             neighbour notifications name who asked, and our own Writer's are dropped
    msg      a neighbour or bridge FDB entry that is not ours (decoded), for local learning
    host     the host's links, addresses or other routes changed; `resync` when it was
             about an owned device, or notifications were lost: read everything again
    """

    deleted: bool = False
    entry: Entry | None = None
    msg: object = None
    host: bool = False
    resync: bool = False


class Monitor:
    """A NETLINK_ROUTE socket subscribed to link, address, neighbour and route notifications."""

    def __init__(self, protocol: int):
        self.protocol = protocol
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF_BYTES)
        self._sock.bind((0, GROUPS))
        self._sock.setblocking(False)
        self.overruns = 0  # the kernel dropped notifications (ENOBUFS): the caller must re-read

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        self._sock.close()

    def read(self, devices: Devices, writer_port: int, learning: bool = False) -> list[Notice]:
        """Everything queued now, as Notices; never blocks. `learning`: decode every neighbour
        and bridge FDB notification (kernel segments learn local MACs and IPs from them)."""
        notices: list[Notice] = []
        owned = set(devices.owned_indexes())
        while True:
            try:
                data = self._sock.recv(RCVBUF_BYTES)
            except BlockingIOError:
                return notices
            except OSError as err:
                if err.errno == errno.ENOBUFS:
                    self.overruns += 1
                    notices.append(Notice(host=True, resync=True))
                    continue
                raise
            for msg_type, _, _, port, body in _messages(data):
                notice = self._classify(msg_type, port, body, devices, owned, writer_port, learning)
                if notice is not None:
                    notices.append(notice)

    def _classify(self, msg_type: int, port: int, body: memoryview, devices: Devices, owned: set[int],
                  writer_port: int, learning: bool) -> Notice | None:
        if port == writer_port and port and msg_type in (RTM_NEWNEIGH, RTM_DELNEIGH, RTM_NEWROUTE, RTM_DELROUTE):
            return None  # our own Writer's change coming back: already recorded
        if msg_type in (RTM_NEWNEIGH, RTM_DELNEIGH, RTM_NEWROUTE, RTM_DELROUTE, RTM_NEWADDR, RTM_DELADDR):
            raw = _HEADER.pack(_HEADER.size + len(body), msg_type, 0, 0, port) + bytes(body)
        if msg_type in (RTM_NEWROUTE, RTM_DELROUTE):
            if len(body) < 12:
                return None
            proto, table = body[5], body[4]
            if proto != self.protocol:
                return Notice(host=True) if table == RT_TABLE_MAIN else None
            msg = rtmsg(raw)
            msg.decode()
            return Notice(msg_type == RTM_DELROUTE, route_of(msg, devices))
        if msg_type in (RTM_NEWNEIGH, RTM_DELNEIGH):
            if len(body) < 12:
                return None
            (ifindex,) = struct.unpack_from("=i", body, 4)
            if ifindex in owned:
                entry = _owned_neighbor(body, devices.name(ifindex))
                if entry is not None:
                    return Notice(msg_type == RTM_DELNEIGH, entry)
            if not learning:
                return None
            msg = ndmsg(raw)
            msg.decode()
            return Notice(msg_type == RTM_DELNEIGH, msg=msg)
        if msg_type in (RTM_NEWADDR, RTM_DELADDR):
            if len(body) >= 8 and struct.unpack_from("=I", body, 4)[0] in owned:
                msg = ifaddrmsg(raw)
                msg.decode()
                entry = address_of(msg, devices)
                if entry is not None:
                    return Notice(msg_type == RTM_DELADDR, entry)
            return Notice(host=True)
        if msg_type in (RTM_NEWLINK, RTM_DELLINK):
            about_ours = len(body) >= 8 and struct.unpack_from("=i", body, 4)[0] in owned
            return Notice(msg_type == RTM_DELLINK, host=True, resync=about_ours)
        return None
