"""The forwarding decision of one node, without I/O.

`from_tap` takes an Ethernet frame read from the TAP of a VNI and says
where its VXLAN copies go; `from_vxlan` takes a UDP payload from a remote
VTEP and says which TAP gets the inner frame. Both learn source MACs into
the FDB, count every drop under its reason and never raise on bad input.
Changes to the tables pile up in `events` for the caller to collect.

Time is the caller's `now` (seconds, monotonic); the decisions allocate
nothing large: frames stay as the caller's memoryviews.

ARP and IPv6 neighbour discovery (both off by default; the BGP mode turns
them on, and `data_learning` off):

- `neighbor_snooping`: ARP requests, replies and gratuitous ARP, and IPv6
  neighbour solicitations and advertisements read from a TAP teach
  `neighbors` the host's binding (source `local`) — the IP our type-2 route
  carries with the MAC. Probes (sender 0.0.0.0, DAD from ::) teach nothing,
  nor does a packet whose claimed MAC (ARP sender, ND link-layer option) is
  not the frame's own source MAC.
- `arp_suppression`: an ARP request or neighbour solicitation from a TAP
  whose target has a binding (`neighbors.lookup`) naming a MAC that the FDB
  places behind a remote VTEP, and that is not the asker's own, is answered
  here: `from_tap` returns None and appends `(vni, reply frame)` to
  `replies`, which the caller writes to the TAP of that VNI and empties
  after each call (`pop_replies`). This is the Linux bridge's
  `neigh_suppress` rule (answer when the neighbour's FDB entry is on the
  VXLAN port). A target on this node answers for itself, so its request,
  like one for an unknown address, is forwarded as usual and counted
  `tx_arp_flooded`. Probes and gratuitous ARP are never answered.
- `data_learning` (on by default): learn inner source MACs of VXLAN frames.
  Off under BGP, where remote MACs come only from the control plane (kernel
  VXLAN `nolearning` under FRR); learning from the TAP goes on regardless.

Only frames with ethertype ARP, or IPv6 with next header ICMPv6 and type
135/136 at fixed offsets, go further than two integer compares; frames with
an 802.1Q tag are not looked into.

`dataplane/explain.py` puts the same questions to these tables for one
destination, learning and counting nothing (`overlayctl explain`); a change
of the decision here is a change there, and tests/unit/test_dataplane_explain.py
fails until both agree.
"""

from __future__ import annotations

import ipaddress
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from overlayd.dataplane.counters import Counters
from overlayd.dataplane.egress import ND_MIN_FRAME, Address, Egress, RoutedVni
from overlayd.dataplane.flowhash import flow_hash
from overlayd.fabric.fdb import Fdb, FdbChange, MacMoved, MacRefused, MacRemoved, Source
from overlayd.fabric.flood import FloodChange, FloodLists
from overlayd.fabric.neighbors import IP, LOCAL_FULL, NeighborChange, Neighbors
from overlayd.fabric.ratelimit import TokenBucket
from overlayd.wire.arp import OP_REQUEST, ArpPacket, reply_frame
from overlayd.wire.errors import DecodeError
from overlayd.wire.ethernet import ETH_HEADER_LEN, ZERO_MAC
from overlayd.wire.ndp import NeighborMessage, advertisement_reply_frame
from overlayd.wire.vxlan import FLAG_I, VXLAN_HEADER_LEN, encode_header

_MIN_DATAGRAM = VXLAN_HEADER_LEN + ETH_HEADER_LEN
_I_FLAG_WORD = FLAG_I << 24
_unpack_vxlan = struct.Struct("!II").unpack_from
_ND_TYPES = (135, 136)
_IPV4_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


@dataclass(slots=True)
class Segment:
    """One network (one VNI, one TAP) as the data plane sees it."""

    vni: int
    name: str
    header: bytes
    own_macs: frozenset[bytes] = frozenset()
    allowed: frozenset[str] = frozenset()  # remote VTEPs we accept VXLAN from
    vouchers: Counter[str] = field(default_factory=Counter)  # non-flood reasons to accept a VTEP
    flood_bucket: TokenBucket | None = None  # frames flooded per second (set_limits); None: no limit


class Switch:
    def __init__(self, vxlan_port: int, aging_s: float):
        self.vxlan_port = vxlan_port
        self.fdb = Fdb(aging_s)
        self.flood = FloodLists()
        self.counters = Counters()
        self.events: list[FdbChange | FloodChange | NeighborChange] = []
        self.neighbors = Neighbors(aging_s)
        self.neighbor_snooping = False
        self.arp_suppression = False
        self.data_learning = True
        self.replies: list[tuple[int, bytes]] = []  # (VNI, frame) for that VNI's TAP: see above
        self.routers: dict[int, RoutedVni] = {}  # routed (L3) VNIs: add_router; read-only otherwise
        self._segments: dict[int, Segment] = {}
        self._unicast: dict[str, tuple[Address, ...]] = {}
        self._flood: dict[int, tuple[Address, ...]] = {}

    # -- configuration -------------------------------------------------------

    def add_segment(self, vni: int, name: str, own_macs: Iterable[bytes] = ()) -> None:
        if vni in self._segments:
            raise ValueError(f"VNI {vni} already has a segment")
        if vni in self.routers:
            raise ValueError(f"VNI {vni} is routed (a router's L3 VNI)")
        seg = self._segments[vni] = Segment(vni, name, encode_header(vni), frozenset(own_macs))
        # Flood-list members and static/BGP MACs given for this VNI before it had a segment.
        seg.vouchers.update(e.vtep for e in self.fdb if e.vni == vni and e.source.rank > 0)
        self._flood[vni] = tuple((v, self.vxlan_port) for v in self.flood.targets(vni))
        self._refresh_allowed(vni)

    def remove_segment(self, vni: int) -> None:
        """Forget segment `vni` and everything the tables hold for it (a network a reload
        removed); what left is recorded in `events`, as any other removal."""
        del self._segments[vni]
        self._flood.pop(vni, None)
        self.events.extend(self.fdb.flush(vni))
        self.events.extend(self.neighbors.flush(vni))
        self.events.extend(self.flood.flush(vni))
        self.fdb.aging_exempt.discard(vni)
        self.neighbors.aging_exempt.discard(vni)

    def add_router(self, router: RoutedVni) -> None:
        """Route VNI `router.vni`: `from_vxlan` hands its datagrams to `router.from_vxlan`.

        The router counts into this switch's counters from now on. A VNI is
        either a segment (L2) or routed (L3), never both.
        """
        vni = router.vni
        if vni in self._segments:
            raise ValueError(f"VNI {vni} already has a segment")
        if vni in self.routers:
            raise ValueError(f"VNI {vni} already has a router")
        router.counters = self.counters
        self.routers[vni] = router

    def add_kernel_segment(self, vni: int, name: str, own_macs: Iterable[bytes] = ()) -> None:
        """A segment whose frames the kernel's bridge moves (`networks[].backend: kernel`).

        The tables mean what they mean for a TAP, but local MACs and IP
        bindings come from the bridge (`learn_local`, `bind_local` and their
        undoing, as the bridge learns and ages them), so they never age here.
        """
        self.add_segment(vni, name, own_macs)
        self.fdb.aging_exempt.add(vni)
        self.neighbors.aging_exempt.add(vni)

    def set_limits(self, vni: int, *, max_local_macs: int, learn_rate_per_s: float | None,
                   learn_burst: float | None, flood_rate_pps: float | None, flood_burst: float | None,
                   now: float, max_local_ips: int | None = None) -> None:
        """Bound network `vni` (see the module docstring): its local FDB entries (at most
        `max_local_macs`, new ones at `learn_rate_per_s` with `learn_burst`; the segment's own
        MACs exempt), its local IP bindings (`max_local_ips`; None: twice `max_local_macs`)
        and its flooding (`flood_rate_pps` frames with `flood_burst`). A rate of None is no
        rate limit; a burst of None is one second's worth."""
        seg = self._segments[vni]
        self.fdb.limit_local(vni, max_local_macs, learn_rate_per_s, learn_burst, now, seg.own_macs)
        self.neighbors.limit_local(vni, max_local_ips or 2 * max_local_macs)
        seg.flood_bucket = (TokenBucket(flood_rate_pps, flood_burst or flood_rate_pps, now)
                            if flood_rate_pps else None)

    def learn_local(self, vni: int, mac: bytes, now: float) -> None:
        """The kernel's bridge learned `mac` on one of its local ports."""
        change = self.fdb.learn(vni, mac, None, Source.LOCAL, now)
        if change is not None:
            if type(change) is MacRefused:
                self._refused(change)
            else:
                self.events.append(change)

    def forget_local(self, vni: int, mac: bytes, aged: bool = True) -> None:
        """The kernel's bridge forgot a local `mac` (aged out or deleted)."""
        change = self.fdb.remove(vni, mac, Source.LOCAL)
        if change is not None:
            self.events.append(MacRemoved(change.vni, change.mac, change.vtep, change.source, aged))

    def bind_local(self, vni: int, ip: IP, mac: bytes, now: float) -> None:
        """The host's neighbour table on the kernel bridge holds `ip` at a local `mac`."""
        self._learn_local(vni, ip, mac, now)

    def unbind_local(self, vni: int, ip: IP, mac: bytes | None = None) -> None:
        self.withdraw_neighbor(vni, ip, mac, Source.LOCAL)

    def set_own_macs(self, vni: int, macs: Iterable[bytes]) -> None:
        """The MACs of our own TAP device: frames arriving from them are loops."""
        seg = self._segments[vni]
        seg.own_macs = frozenset(macs)
        limit = self.fdb.local_limits.get(vni)
        if limit is not None:
            limit.exempt = seg.own_macs

    def refused(self, vni: int) -> dict[str, int]:
        """How often network `vni`'s limits (set_limits) refused so far, by reason: local MACs at
        max_local_macs (`fdb_full`) or past the learning rate (`rate`), local IP bindings at
        max_local_ips (`ips_full`), frames to flood past the flood rate (`flood_rate`)."""
        limit = self.fdb.local_limits.get(vni)
        seg = self._segments.get(vni)
        flood = seg.flood_bucket if seg is not None else None
        return {
            "fdb_full": limit.refused_full if limit is not None else 0,
            "rate": limit.refused_rate if limit is not None else 0,
            "ips_full": self.neighbors.refused.get(vni, 0),
            "flood_rate": flood.refused if flood is not None else 0,
        }

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

    def install_neighbor(self, vni: int, ip: IP | str, mac: bytes, source: Source, now: float) -> None:
        """An IP/MAC binding placed by the control plane (`bgp`) or config (`static`)."""
        change = self.neighbors.learn(vni, ipaddress.ip_address(ip), mac, source, now)
        if change is not None:
            self.events.append(change)

    def withdraw_neighbor(self, vni: int, ip: IP | str, mac: bytes | None, source: Source) -> None:
        """Remove `source`'s binding for `ip`, if it still names `mac` (None: whatever it names)."""
        change = self.neighbors.remove(vni, ipaddress.ip_address(ip), source, mac)
        if change is not None:
            self.events.append(change)

    def expire(self, now: float) -> list[FdbChange]:
        """Age out data-plane FDB entries; returns (and records) what left.

        Snooped neighbour bindings age here too; their removals are recorded
        in `events` only.
        """
        gone = self.fdb.expire(now)
        self.events.extend(gone)
        self.events.extend(self.neighbors.expire(now))
        return list(gone)

    def pop_events(self) -> list[FdbChange | FloodChange | NeighborChange]:
        events, self.events = self.events, []
        return events

    def pop_replies(self) -> list[tuple[int, bytes]]:
        """The suppression replies queued since the last call: (VNI, frame to write to its TAP).

        Empties `replies` in place: a caller may hold on to that list and drain it itself.
        """
        replies = list(self.replies)
        self.replies.clear()
        return replies

    def _refused(self, why: MacRefused) -> None:
        if why is MacRefused.FULL:
            self.counters.learn_refused_fdb_full += 1
        else:
            self.counters.learn_refused_rate += 1

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
            if type(change) is MacRefused:  # not learned, not announced; the frame goes on
                self._refused(change)
            else:
                self.events.append(change)
                if type(change) is MacMoved and change.old_source is Source.BGP:
                    self._vouch(vni, change.old_vtep, -1)  # the host moved here from that VTEP
        kind = frame[12]  # ARP and ND only: IPv4 pays this compare and the next
        if kind == 0x08:
            if frame[13] == 0x06 and self._arp(vni, frame, src, now):
                return None
        elif kind == 0x86 and frame[13] == 0xDD and size >= ND_MIN_FRAME and frame[20] == 58:
            if self._nd(vni, frame, src, now):  # ICMPv6 right after the IPv6 header
                return None
        seg = self._segments[vni]
        unicast = not frame[0] & 1
        if unicast:
            entry = fdb.get(vni, bytes(frame[0:6]))
            if entry is not None:
                if entry.vtep is None:
                    c.tx_drop_local_dst += 1
                    return None
                c.tx_unicast_frames += 1
                c.tx_datagrams += 1
                return seg.header, self._unicast_to(entry.vtep), flow_hash(frame)
        targets = self._flood[vni]
        if not targets:
            c.tx_drop_no_flood_list += 1
            return None
        bucket = seg.flood_bucket
        if bucket is not None:
            if bucket.stamp == now and bucket.tokens >= 1.0:
                bucket.tokens -= 1.0  # TokenBucket.take without the call: the same `now` earns nothing
            elif not bucket.take(now):
                c.tx_drop_flood_rate += 1
                return None
        c.tx_flood_frames += 1
        c.tx_unknown_unicast_frames += unicast  # a unicast frame flooded: its MAC is unknown
        c.tx_datagrams += len(targets)
        return seg.header, targets, flow_hash(frame)

    def from_vxlan(
        self, vtep: str, data: bytes | memoryview, now: float
    ) -> tuple[int, memoryview | bytes] | None:
        """A UDP payload from `vtep`: (VNI, payload) to write to that VNI's device, or None.

        For a segment's VNI the payload is the inner frame, a memoryview slice
        of `data`. For a routed VNI (`add_router`) it is what
        `Router.from_vxlan` returns, also one bytes-like object written with
        one `os.write`: a tun device gets the inner IP packet (a slice of
        `data`); a tap device gets an Ethernet frame to its own MAC, which is
        `data` with its inner MACs rewritten *in place* and sliced when
        `data` is writable, else a new bytes. Routed datagrams count
        `rx_datagrams`, then `rx_routed_packets` or one `rx_route_drop_*`
        (not `rx_frames`).
        """
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
            router = self.routers.get(vni)  # only VNIs without a segment pay this probe
            if router is None:
                c.rx_drop_unknown_vni += 1
                return None
            packet = router.from_vxlan(vtep, data, now)
            return None if packet is None else (vni, packet)
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
        if self.data_learning:
            change = self.fdb.learn(vni, src, vtep, Source.DATA, now)
            if change is not None:
                self.events.append(change)
        c.rx_frames += 1
        c.rx_bytes += len(inner)
        return vni, inner

    # -- ARP and neighbour discovery (frames from the TAP) -----------------------

    def _arp(self, vni: int, frame: bytes | memoryview, src: bytes, now: float) -> bool:
        """Snoop an ARP frame; True if it was answered here and goes no further."""
        if not (self.neighbor_snooping or self.arp_suppression):
            return False
        try:
            packet = ArpPacket.decode(memoryview(frame)[ETH_HEADER_LEN:])
        except DecodeError:
            return False  # not ours to judge: forwarded as any frame
        probe = packet.sender_ip.is_unspecified
        if self.neighbor_snooping and not probe and packet.sender_mac == src:
            ip = packet.sender_ip
            if not (ip.is_multicast or ip.is_loopback or ip == _IPV4_BROADCAST):
                self._learn_local(vni, ip, src, now)
        if not self.arp_suppression or packet.op != OP_REQUEST or probe or packet.is_gratuitous:
            return False
        mac = self.suppression_answer(vni, packet.target_ip, packet.sender_mac)
        if mac is None:
            self.counters.tx_arp_flooded += 1
            return False
        self.replies.append((vni, reply_frame(packet, mac)))
        self.counters.tx_arp_suppressed += 1
        return True

    def _nd(self, vni: int, frame: bytes | memoryview, src: bytes, now: float) -> bool:
        """Snoop an ICMPv6 frame that may be an NS or NA; True if it was answered here."""
        if frame[54] not in _ND_TYPES:
            return False
        if not (self.neighbor_snooping or self.arp_suppression):
            return False
        try:
            msg = NeighborMessage.decode(memoryview(frame)[ETH_HEADER_LEN:])
        except DecodeError:
            return False
        if msg.is_dad:
            return False
        if msg.is_advertisement:
            ip, claimed = msg.target, msg.target_lladdr
        else:
            ip, claimed = msg.src, msg.source_lladdr
        if self.neighbor_snooping and claimed in (None, src):
            if not (ip.is_multicast or ip.is_loopback or ip.is_unspecified):
                self._learn_local(vni, ip, src, now)
        if not self.arp_suppression or msg.is_advertisement:
            return False
        asker = msg.source_lladdr or src
        mac = self.suppression_answer(vni, msg.target, asker)
        if mac is None:
            self.counters.tx_arp_flooded += 1
            return False
        self.replies.append((vni, advertisement_reply_frame(msg, asker, mac)))
        self.counters.tx_arp_suppressed += 1
        return True

    def _learn_local(self, vni: int, ip: IP, mac: bytes, now: float) -> None:
        entry = self.fdb.get(vni, mac)
        if entry is None or entry.vtep is not None:  # a MAC not learned here (refused): no address for it
            return
        change = self.neighbors.learn(vni, ip, mac, Source.LOCAL, now)
        if change is LOCAL_FULL:
            self.counters.learn_refused_ips += 1
        elif change is not None:
            self.events.append(change)

    def suppression_answer(self, vni: int, ip: IP, asker: bytes) -> bytes | None:
        """The MAC to answer for `ip` with, or None: bound, not the asker, behind a remote VTEP."""
        binding = self.neighbors.lookup(vni, ip)
        if binding is None or binding.mac == asker:
            return None
        entry = self.fdb.get(vni, binding.mac)
        if entry is None or entry.vtep is None:
            return None
        return binding.mac
