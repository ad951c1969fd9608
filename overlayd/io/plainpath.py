"""The data plane's hot loops without offloads: one frame per read, one datagram per send.

The daemon uses these readers when no offload is on (OVERLAYD_OFFLOAD=none,
or a node with a VLAN trunk); io/fastpath.py has the ones with offloads.
Both make the same decisions through the same Switch and count the same way.
A VLAN trunk's TAP (dataplane/vlan.py) is read here only: its frames' tags
pick their VNIs on the way in and are put back on the way out.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from overlayd.dataplane.switch import Switch
from overlayd.dataplane.vlan import Trunk, tagged
from overlayd.io.udp import VxlanSockets

BATCH = 64  # frames or datagrams handled per wake-up before the event loop gets a turn
BUFFER_BYTES = 65536


class PlainPath:
    def __init__(self, switch: Switch, sockets: VxlanSockets, fds: dict[int, int], vlan_tags: dict[int, bytes],
                 clock: Callable[[], float]):
        self.switch = switch
        self.sockets = sockets
        self.fds = fds  # VNI -> the device its frames are written to: the daemon's, kept up to date there
        self.vlan_tags = vlan_tags  # VNI -> its 802.1Q tag on its trunk's TAP (the daemon's)
        self.clock = clock
        self._buf = bytearray(BUFFER_BYTES)
        self._bufs = [self._buf]
        self._mv = memoryview(self._buf)

    def tap_readable(self, vni: int, fd: int, trunk: Trunk | None = None) -> None:
        """Frames from the TAP of `vni` out as VXLAN. With `trunk` (a VLAN trunk's TAP), each
        frame's tag picks its VNI instead and is removed (dataplane/vlan.py), and the replies of
        ARP suppression go back tagged as their VLAN."""
        readv, bufs, mv = os.readv, self._bufs, self._mv
        from_tap = self.switch.from_tap
        replies = self.switch.replies  # filled by from_tap, emptied here after each call
        tx = self.sockets.tx
        ntx = len(tx)
        counters = self.switch.counters
        now = self.clock()
        for _ in range(BATCH):
            try:
                n = readv(fd, bufs)
            except BlockingIOError:
                return
            except OSError:
                return
            frame = mv[:n]
            if trunk is not None:
                found = trunk.classify(frame, counters)
                if found is None:
                    continue
                vni, frame = found
            egress = from_tap(vni, frame, now)
            if egress is None:
                if replies:  # ARP suppression answered: the reply goes back to this TAP
                    for reply_vni, reply in replies:
                        if trunk is not None and reply_vni in trunk.tags:
                            reply = tagged(reply, trunk.tags[reply_vni])
                        try:
                            os.write(fd, reply)
                        except OSError:
                            counters.rx_drop_write_error += 1
                    replies.clear()
                continue
            header, targets, flow = egress
            sendmsg = tx[flow % ntx].sendmsg
            parts = (header, frame)
            for addr in targets:
                try:
                    sendmsg(parts, (), 0, addr)
                except OSError:
                    counters.tx_drop_send_error += 1

    def udp_readable(self) -> None:
        recv = self.sockets.rx.recvfrom_into
        buf, mv = self._buf, self._mv
        from_vxlan = self.switch.from_vxlan
        fds = self.fds
        tags = self.vlan_tags
        write = os.write
        counters = self.switch.counters
        now = self.clock()
        for _ in range(BATCH):
            try:
                n, addr = recv(buf)
            except BlockingIOError:
                return
            except OSError:
                return
            delivery = from_vxlan(addr[0], mv[:n], now)
            if delivery is None:
                continue
            vni, inner = delivery
            if tags and vni in tags:
                inner = tagged(inner, tags[vni])
            try:
                write(fds[vni], inner)
            except OSError:
                counters.rx_drop_write_error += 1
