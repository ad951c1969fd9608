"""The data plane's hot loops with kernel offloads on (see io/offload.py for which).

The daemon uses these readers instead of its plain ones when any offload is
on. They make the same decisions through the same Switch and count the same
way: a TCP super-frame cut into n segments counts as n frames read from the
TAP and n datagrams sent, a coalesced super-frame as the n frames it was
made of. What they add is counted too: `tx_tso_superframes`,
`rx_gro_superframes`.
"""

from __future__ import annotations

import logging
import os
import struct
from collections.abc import Callable

from overlayd.dataplane.offload import (
    F_NEEDS_CSUM,
    GSO_ECN,
    GSO_TCPV4,
    GSO_TCPV6,
    MAX_GSO_SEGMENTS,
    MAX_UDP_PAYLOAD,
    VNET_HDR_LEN,
    ZERO_VNET_HDR,
    finish_checksum,
    from_vxlan_batch,
    segment_tcp,
    tcp_layout,
)
from overlayd.dataplane.flowhash import flow_hash
from overlayd.dataplane.gro import coalesce as coalesce_run
from overlayd.dataplane.switch import Switch
from overlayd.wire.vxlan import VXLAN_HEADER_LEN
from overlayd.io.offload import (
    Offloads,
    enable_tap_tso,
    enable_udp_gro,
    gro_segment_size,
    gso_control,
    udp_gso_supported,
)
from overlayd.io.tap import Tap
from overlayd.io.udp import VxlanSockets

log = logging.getLogger("overlayd")

BATCH = 64
TAP_BUFFER_BYTES = VNET_HDR_LEN + 65536
RX_BUFFER_BYTES = 2 * 65536  # a GRO batch, and room to pad its last datagram
_csum_at = struct.Struct("<HH").unpack_from  # csum_start, csum_offset of a virtio-net header
_gso_size = struct.Struct("<H").unpack_from


class FastPath:
    def __init__(self, switch: Switch, taps: dict[int, Tap], sockets: VxlanSockets,
                 offloads: Offloads, ipv6: bool, clock: Callable[[], float]):
        self.switch = switch
        self.sockets = sockets
        self.offloads = offloads
        self.ipv6 = ipv6
        self.clock = clock
        self.fds = {vni: tap.fd for vni, tap in taps.items()}  # + the routing device's, by the daemon
        self.tap_fds = dict(self.fds)  # the L2 segments' TAPs only
        # Frames read in one wake-up stay in their buffers until their batch is sent.
        self._ring = []
        for _ in range(BATCH if offloads.gso else 1):
            buf = bytearray(TAP_BUFFER_BYTES)
            self._ring.append((buf, [buf], memoryview(buf)))
        self._rbuf = bytearray(RX_BUFFER_BYTES)
        self._rbufs = [self._rbuf]
        self._rmv = memoryview(self._rbuf)
        self._gso_refused = False

    # -- TAP -> VXLAN ------------------------------------------------------------

    def tap_readable(self, vni: int, fd: int) -> None:
        readv = os.readv
        ring = self._ring
        switch = self.switch
        from_tap = switch.from_tap
        replies = switch.replies  # filled by from_tap, emptied here after each call
        tx = self.sockets.tx
        ntx = len(tx)
        counters = switch.counters
        vnet = self.offloads.vnet_hdr
        skip = VNET_HDR_LEN if vnet else 0
        batching = self.offloads.gso
        limit = self._gso_limit
        flush = self._flush
        pending: list = []  # frames of one size for one socket and destination list, sent in one sendmsg
        p_sock = p_targets = p_header = None
        p_size = 0
        # The Switch's answer for the last unicast IP frame, reused (and counted as it counts)
        # while the next ones repeat its Ethernet header: nothing ran in between, so it would
        # answer the same. IPv6 frames that may be neighbour discovery (next header ICMPv6)
        # always ask it, and so does every frame it floods: flooding has a rate limit to pass.
        c_key = c_header = c_targets = None
        c_v4 = False
        c_counts = (0, 0, 0, 0)
        now = self.clock()
        for i in range(BATCH):
            buf, bufs, mv = ring[i] if batching else ring[0]
            try:
                n = readv(fd, bufs)
            except OSError:
                break
            frame = mv[skip:n]
            if vnet and n > VNET_HDR_LEN:
                if buf[1]:
                    if pending:
                        flush(pending, p_sock, p_targets, p_header, p_size)
                        pending = []
                    self._superframe(vni, buf, frame, now)
                    continue
                if buf[0] & F_NEEDS_CSUM:
                    start, offset = _csum_at(buf, 6)
                    finish_checksum(frame, start, offset)
            if n - skip >= 34 and frame[:14] == c_key and (c_v4 or frame[20] != 58):
                counters.tx_frames += 1
                counters.tx_bytes += n - skip
                counters.tx_unicast_frames += c_counts[0]
                counters.tx_flood_frames += c_counts[1]
                counters.tx_unknown_unicast_frames += c_counts[2]
                counters.tx_datagrams += c_counts[3]
                header, targets, flow = c_header, c_targets, flow_hash(frame)
            else:
                before = (counters.tx_unicast_frames, counters.tx_flood_frames,
                          counters.tx_unknown_unicast_frames, counters.tx_datagrams)
                egress = from_tap(vni, frame, now)
                c_key = None
                if egress is None:
                    if replies:  # ARP suppression answered: the reply goes back to this TAP
                        for _, reply in replies:
                            try:
                                os.writev(fd, [ZERO_VNET_HDR, reply] if vnet else [reply])
                            except OSError:
                                counters.rx_drop_write_error += 1
                        replies.clear()
                    continue
                header, targets, flow = egress
                ethertype = frame[12] << 8 | frame[13]
                if (n - skip >= 34 and ethertype in (0x0800, 0x86DD)  # never ARP; ND is checked above
                        and counters.tx_flood_frames == before[1]):
                    c_key, c_header, c_targets, c_v4 = bytes(frame[:14]), header, targets, ethertype == 0x0800
                    c_counts = (counters.tx_unicast_frames - before[0], counters.tx_flood_frames - before[1],
                                counters.tx_unknown_unicast_frames - before[2],
                                counters.tx_datagrams - before[3])
            sock = tx[flow % ntx]
            if batching:
                size = n - skip
                if pending:
                    if (size == p_size and sock is p_sock and targets == p_targets
                            and len(pending) < limit(size)):
                        pending.append(frame)
                        continue
                    flush(pending, p_sock, p_targets, p_header, p_size)
                pending = [frame]
                p_sock, p_targets, p_header, p_size = sock, targets, header, size
                continue
            sendmsg = sock.sendmsg
            parts = (header, frame)
            for addr in targets:
                try:
                    sendmsg(parts, (), 0, addr)
                except OSError:
                    counters.tx_drop_send_error += 1
        if pending:
            flush(pending, p_sock, p_targets, p_header, p_size)

    def _gso_limit(self, size: int) -> int:
        """How many VXLAN datagrams carrying `size`-byte frames one sendmsg may carry."""
        return min(MAX_GSO_SEGMENTS, MAX_UDP_PAYLOAD[6 if self.ipv6 else 4] // (size + VXLAN_HEADER_LEN))

    def _flush(self, frames: list, sock, targets, header: bytes, size: int) -> None:
        """Send equal-sized frames to each target: one sendmsg with UDP_SEGMENT for them all."""
        c = self.switch.counters
        if len(frames) == 1 or not self.offloads.gso:
            for frame in frames:
                for addr in targets:
                    try:
                        sock.sendmsg((header, frame), (), 0, addr)
                    except OSError:
                        c.tx_drop_send_error += 1
            return
        iov = []
        for frame in frames:
            iov.append(header)
            iov.append(frame)
        control = gso_control(size + len(header))
        for addr in targets:
            try:
                sock.sendmsg(iov, control, 0, addr)
            except OSError as err:
                if err.errno in (5, 22) and not self._gso_refused:
                    self._refuse_gso(err)
                    self._flush(frames, sock, (addr,), header, size)
                    continue
                c.tx_drop_send_error += len(frames)

    def _refuse_gso(self, err: OSError) -> None:
        self._gso_refused = True
        self.offloads.gso = False
        log.warning("offloads: sendmsg with UDP_SEGMENT failed (%s); gso off", err.strerror)

    def _superframe(self, vni: int, buf: bytearray, frame: memoryview, now: float) -> None:
        """A TCP super-frame from the TAP: decide once, cut it, send each copy in a few sendmsg calls."""
        c = self.switch.counters
        gso_type = buf[1] & ~GSO_ECN
        if gso_type not in (GSO_TCPV4, GSO_TCPV6) or tcp_layout(frame) is None:
            c.tx_drop_gso_unsupported += 1
            return
        unicast, flooded, unknown = c.tx_unicast_frames, c.tx_flood_frames, c.tx_unknown_unicast_frames
        egress = self.switch.from_tap(vni, frame, now)
        if egress is None:
            return
        header, targets, flow = egress
        seg = segment_tcp(frame, _gso_size(buf, 4)[0], header)
        if seg is None:
            c.tx_drop_gso_unsupported += 1
            return
        extra = seg.count - 1
        c.tx_tso_superframes += 1
        c.tx_frames += extra
        c.tx_bytes += seg.inner_bytes - len(frame)
        c.tx_unicast_frames += extra if c.tx_unicast_frames != unicast else 0
        c.tx_flood_frames += extra if c.tx_flood_frames != flooded else 0
        c.tx_unknown_unicast_frames += extra if c.tx_unknown_unicast_frames != unknown else 0
        c.tx_datagrams += extra * len(targets)
        sock = self.sockets.tx[flow % len(self.sockets.tx)]
        for addr in targets:
            self._send_segments(sock, seg, addr)

    def _send_segments(self, sock, seg, addr) -> None:
        c = self.switch.counters
        size = seg.datagram_bytes
        if self.offloads.gso:
            control = gso_control(size)
            for chunk in seg.chunks(self.ipv6):
                try:
                    sock.sendmsg([chunk], control, 0, addr)
                except OSError as err:
                    if err.errno in (5, 22) and not self._gso_refused:  # EIO, EINVAL: no UDP GSO here
                        self._refuse_gso(err)
                        self._send_each(sock, chunk, size, addr)
                        continue
                    c.tx_drop_send_error += -(-len(chunk) // size)
            return
        self._send_each(sock, seg.data, size, addr)

    def _send_each(self, sock, data: memoryview, size: int, addr) -> None:
        sendmsg = sock.sendmsg
        for at in range(0, len(data), size):
            try:
                sendmsg([data[at : at + size]], (), 0, addr)
            except OSError:
                self.switch.counters.tx_drop_send_error += 1

    # -- VXLAN -> TAP ------------------------------------------------------------

    def udp_readable(self) -> None:
        recvmsg_into = self.sockets.rx.recvmsg_into
        bufs, buf, mv = self._rbufs, self._rbuf, self._rmv
        switch = self.switch
        from_vxlan = switch.from_vxlan
        counters = switch.counters
        fds = self.fds
        write, writev = os.write, os.writev
        vnet = self.offloads.vnet_hdr
        coalesce = self.offloads.coalesce
        ancillary = 64 if self.offloads.gro else 0
        written = counters.rx_frames
        now = self.clock()
        for _ in range(BATCH):
            try:
                nbytes, ancdata, _, addr = recvmsg_into(bufs, ancillary)
            except OSError:
                break
            seg = gro_segment_size(ancdata, nbytes) if ancdata else nbytes
            if seg >= nbytes:
                delivery = from_vxlan(addr[0], mv[:nbytes], now)
                if delivery is None:
                    continue
                vni, inner = delivery
                try:
                    if vnet:
                        writev(fds[vni], [ZERO_VNET_HDR, inner])
                    else:
                        write(fds[vni], inner)
                except OSError:
                    counters.rx_drop_write_error += 1
                continue
            for vni, first, end in from_vxlan_batch(switch, addr[0], mv[:nbytes], seg, now):
                fd = fds[vni]
                if coalesce:
                    for iov, frames in coalesce_run(buf, seg, nbytes, first, end):
                        try:
                            writev(fd, iov)
                        except OSError:
                            counters.rx_drop_write_error += frames
                            continue
                        if frames > 1:
                            counters.rx_gro_superframes += 1
                    continue
                for i in range(first, end):
                    inner = mv[i * seg + 8 : min((i + 1) * seg, nbytes)]
                    try:
                        if vnet:
                            writev(fd, [ZERO_VNET_HDR, inner])
                        else:
                            write(fd, inner)
                    except OSError:
                        counters.rx_drop_write_error += 1
        if self.offloads.drain and counters.rx_frames != written:
            # Whatever the kernel answered while taking those frames (an echo reply, an ACK)
            # is already queued on the TAP: send it now rather than after another loop turn.
            for vni, fd in self.tap_fds.items():
                self.tap_readable(vni, fd)


def start(offloads: Offloads, switch: Switch, taps: dict[int, Tap], sockets: VxlanSockets,
          ipv6: bool, clock: Callable[[], float]) -> FastPath | None:
    """Switch on what `offloads` asks for and the kernel grants; the FastPath, or None if nothing is on.

    `taps` must have been created with `vnet_hdr=offloads.vnet_hdr`. Updates `offloads` in place.
    """
    if offloads.tso:
        offloads.tso = all([enable_tap_tso(tap.fd) for tap in taps.values()])
    if offloads.gro:
        offloads.gro = enable_udp_gro(sockets.rx)
    if offloads.gso:
        offloads.gso = bool(sockets.tx) and udp_gso_supported(sockets.tx[0])
    log.info("offloads: %s", offloads.describe())
    if not (offloads.any or offloads.vnet_hdr):
        return None
    return FastPath(switch, taps, sockets, offloads, ipv6, clock)

