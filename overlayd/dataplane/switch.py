"""The forwarding decision of one node, without I/O.

`from_tap` takes an Ethernet frame read from the TAP of a VNI and says
where its VXLAN copies go; `from_vxlan` takes a UDP payload from a remote
VTEP and says which TAP gets the inner frame. Both learn source MACs into
the FDB, count every drop under its reason and never raise on bad input.
Changes to the tables pile up in `events` for the caller to collect.

Time is the caller's `now` (seconds, monotonic); the decisions allocate
nothing large: frames stay as the caller's memoryviews.
"""

from __future__ import annotations

import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from overlayd.dataplane.counters import Counters
from overlayd.dataplane.flowhash import flow_hash
from overlayd.fabric.fdb import Fdb, FdbChange, Source
from overlayd.fabric.flood import FloodChange, FloodLists
from overlayd.wire.ethernet import ETH_HEADER_LEN, ZERO_MAC
from overlayd.wire.vxlan import FLAG_I, VXLAN_HEADER_LEN, encode_header

Address = tuple[str, int]
Egress = tuple[bytes, tuple[Address, ...], int]
"""(VXLAN header, destinations, inner flow hash): send header + frame to each."""

_MIN_DATAGRAM = VXLAN_HEADER_LEN + ETH_HEADER_LEN
_I_FLAG_WORD = FLAG_I << 24
_unpack_vxlan = struct.Struct("!II").unpack_from


@dataclass(slots=True)
class Segment:
    """One network (one VNI, one TAP) as the data plane sees it."""

    vni: int
    name: str
    header: bytes
    own_macs: frozenset[bytes] = frozenset()
    allowed: frozenset[str] = frozenset()  # remote VTEPs we accept VXLAN from
    vouchers: Counter[str] = field(default_factory=Counter)  # non-flood reasons to accept a VTEP


class Switch:
    def __init__(self, vxlan_port: int, aging_s: float):
        self.vxlan_port = vxlan_port
        self.fdb = Fdb(aging_s)
        self.flood = FloodLists()
        self.counters = Counters()
        self.events: list[FdbChange | FloodChange] = []
        self._segments: dict[int, Segment] = {}
        self._unicast: dict[str, tuple[Address, ...]] = {}
        self._flood: dict[int, tuple[Address, ...]] = {}

    # -- configuration -------------------------------------------------------

    def add_segment(self, vni: int, name: str, own_macs: Iterable[bytes] = ()) -> None:
        if vni in self._segments:
            raise ValueError(f"VNI {vni} already has a segment")
        seg = self._segments[vni] = Segment(vni, name, encode_header(vni), frozenset(own_macs))
        # Flood-list members and static/BGP MACs given for this VNI before it had a segment.
        seg.vouchers.update(e.vtep for e in self.fdb if e.vni == vni and e.source.rank > 0)
        self._flood[vni] = tuple((v, self.vxlan_port) for v in self.flood.targets(vni))
        self._refresh_allowed(vni)

    def set_own_macs(self, vni: int, macs: Iterable[bytes]) -> None:
        """The MACs of our own TAP device: frames arriving from them are loops."""
        self._segments[vni].own_macs = frozenset(macs)

    def segments(self) -> list[Segment]:
        return [self._segments[v] for v in sorted(self._segments)]

    def segment(self, vni: int) -> Segment:
        return self._segments[vni]

    # -- table changes from config or the control plane -----------------------

    def add_flood_vtep(self, vni: int, vtep: str, source: Source) -> None:
        if (change := self.flood.add(vni, vtep, source)) is not None:
            self._flood_changed(vni, change)

    def remove_flood_vtep(self, vni: int, vtep: str, source: Source) -> None:
        if (change := self.flood.remove(vni, vtep, source)) is not None:
            self._flood_changed(vni, change)

    def install_mac(self, vni: int, mac: bytes, vtep: str, source: Source, now: float) -> None:
        """A MAC placed by config or the control plane; data-plane learning cannot move it."""
        old = self.fdb.get(vni, mac)
        old_vouch = old.vtep if old is not None and old.source.rank > 0 else None
        change = self.fdb.learn(vni, mac, vtep, source, now)
        if change is None:
            return
        self._vouch(vni, old_vouch, -1)
        self._vouch(vni, vtep, +1)
        self.events.append(change)

    def withdraw_mac(self, vni: int, mac: bytes, source: Source) -> None:
        change = self.fdb.remove(vni, mac, source)
        if change is None:
            return
        if source.rank > 0:
            self._vouch(vni, change.vtep, -1)
        self.events.append(change)

    def expire(self, now: float) -> list[FdbChange]:
        """Age out data-plane FDB entries; returns (and records) what left."""
        gone = self.fdb.expire(now)
        self.events.extend(gone)
        return list(gone)

    def pop_events(self) -> list[FdbChange | FloodChange]:
        events, self.events = self.events, []
        return events

    def _flood_changed(self, vni: int, change: FloodChange) -> None:
        port = self.vxlan_port
        self._flood[vni] = tuple((v, port) for v in self.flood.targets(vni))
        self._refresh_allowed(vni)
        self.events.append(change)

    def _vouch(self, vni: int, vtep: str | None, delta: int) -> None:
        if vtep is None or vni not in self._segments:
            return
        seg = self._segments[vni]
        seg.vouchers[vtep] += delta
        if seg.vouchers[vtep] <= 0:
            del seg.vouchers[vtep]
        self._refresh_allowed(vni)

    def _refresh_allowed(self, vni: int) -> None:
        seg = self._segments.get(vni)
        if seg is not None:
            seg.allowed = frozenset(self.flood.targets(vni)) | frozenset(seg.vouchers)

    def _unicast_to(self, vtep: str) -> tuple[Address, ...]:
        dest = self._unicast.get(vtep)
        if dest is None:
            dest = self._unicast[vtep] = ((vtep, self.vxlan_port),)
        return dest

    # -- the hot path ---------------------------------------------------------

    def from_tap(self, vni: int, frame: bytes | memoryview, now: float) -> Egress | None:
        """A frame read from the TAP of `vni`: where do its VXLAN copies go?"""
        c = self.counters
        size = len(frame)
        if size < ETH_HEADER_LEN:
            c.tx_drop_runt += 1
            return None
        c.tx_frames += 1
        c.tx_bytes += size
        src = bytes(frame[6:12])
        if src[0] & 1 or src == ZERO_MAC:
            c.tx_drop_bad_src_mac += 1
            return None
        fdb = self.fdb
        change = fdb.learn(vni, src, None, Source.LOCAL, now)
        if change is not None:
            self.events.append(change)
        header = self._segments[vni].header
        if not frame[0] & 1:
            entry = fdb.get(vni, bytes(frame[0:6]))
            if entry is not None:
                if entry.vtep is None:
                    c.tx_drop_local_dst += 1
                    return None
                c.tx_unicast_frames += 1
                c.tx_datagrams += 1
                return header, self._unicast_to(entry.vtep), flow_hash(frame)
            c.tx_unknown_unicast_frames += 1
        targets = self._flood[vni]
        if not targets:
            c.tx_drop_no_flood_list += 1
            return None
        c.tx_flood_frames += 1
        c.tx_datagrams += len(targets)
        return header, targets, flow_hash(frame)

    def from_vxlan(self, vtep: str, data: bytes | memoryview, now: float) -> tuple[int, memoryview] | None:
        """A UDP payload from `vtep`: (VNI, inner frame) to write to that VNI's TAP, or None."""
        c = self.counters
        c.rx_datagrams += 1
        if len(data) < _MIN_DATAGRAM:
            c.rx_drop_runt += 1
            return None
        w0, w1 = _unpack_vxlan(data)
        if not w0 & _I_FLAG_WORD:
            c.rx_drop_i_flag_clear += 1
            return None
        if w0 != _I_FLAG_WORD or w1 & 0xFF:
            c.rx_drop_reserved_bits += 1
            return None
        vni = w1 >> 8
        seg = self._segments.get(vni)
        if seg is None:
            c.rx_drop_unknown_vni += 1
            return None
        if vtep not in seg.allowed:
            c.rx_drop_unknown_vtep += 1
            return None
        inner = memoryview(data)[VXLAN_HEADER_LEN:]
        src = bytes(inner[6:12])
        if src[0] & 1 or src == ZERO_MAC:
            c.rx_drop_bad_src_mac += 1
            return None
        if src in seg.own_macs:
            c.rx_drop_own_mac += 1
            return None
        change = self.fdb.learn(vni, src, vtep, Source.DATA, now)
        if change is not None:
            self.events.append(change)
        c.rx_frames += 1
        c.rx_bytes += len(inner)
        return vni, inner
