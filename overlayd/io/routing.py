"""The routing device (`ovl0`): a TUN or TAP device that the kernel hands the
whole cluster network to, the Router that decides per packet, and the
files that tell other tools our subnet (subnet.env, a CNI conflist).

Setup order: the speaker has chosen our subnet (or read it from config);
this module creates the device, gives it the subnet's first address (/32 or
/128: the kernel needs a source address, the pods' gateway lives on their
bridge), registers the Router with the Switch and writes subnet.env. The
route of `network` (and `network6`) to the device is the kernel planner's
(`kernel.routed`, applied by `io.backend`), with overlayd's route protocol. `follow_moves` re-addresses all of that
when `subnet: auto` lost a collision and moved.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
from collections.abc import Callable

from overlayd.config import Config
from overlayd.control.speaker import Speaker
from overlayd.dataplane.router import Router
from overlayd.dataplane.switch import Switch
from overlayd.io.netlink import Netlink
from overlayd.io.subnet_env import remove, write_subnet_files
from overlayd.io.tap import Tap
from overlayd.kernel.routed import device_address

log = logging.getLogger("overlayd.routing")

BATCH = 64
VNET_HDR_LEN = 10  # struct virtio_net_hdr, no GSO on this device

Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network



class RoutedDevice:
    def __init__(self, config: Config, switch: Switch, speaker: Speaker, clock: Callable[[], float],
                 vnet_hdr: bool):
        assert config.routing is not None and speaker.routed is not None
        self.config = config
        self.routing = config.routing
        self.switch = switch
        self.speaker = speaker
        self.routed = speaker.routed
        self.clock = clock
        self.vnet_hdr = vnet_hdr
        self.tap: Tap | None = None
        self.router: Router | None = None
        self.mtu = 0
        self._addresses: list = []
        self._reported: set[tuple[str, str, str]] = set()
        self._buf = bytearray(VNET_HDR_LEN + 65536)
        self._mv = memoryview(self._buf)

    async def setup(self, nl: Netlink, underlay_mtu: int, stack: contextlib.ExitStack, mac: str | None = None) -> None:
        r = self.routing
        self.tap = Tap(r.device, vnet_hdr=self.vnet_hdr, tun=r.device_type == "tun")
        stack.callback(self.tap.close)
        self.mtu = self.config.routing_mtu(underlay_mtu)
        subnets = self.routed.subnets
        first = device_address(subnets[0]) if subnets else None
        mac = await nl.configure(r.device, self.mtu, first, mac=mac if r.device_type == "tap" else None)
        self._addresses = [first] if first else []
        for subnet in subnets[1:]:
            addr = device_address(subnet)
            await nl.add_address(r.device, addr)
            self._addresses.append(addr)
        self.router = Router(
            r.vni, self.routed.router_mac, r.device_type, self.routed.table, self.config.node.vxlan_port,
            subnets, device_mac=mac or None,
            networks=[*(n for n in (r.network, r.network6) if n), *self.config.services_network],
        )
        self.switch.add_router(self.router)
        self._write_env()
        stack.callback(remove, r.env_file)
        if r.cni_conflist:
            stack.callback(remove, r.cni_conflist)
        log.info("%s on %s (%s, mtu %d)", self.routed.describe(), r.device, r.device_type, self.mtu)

    @property
    def fd(self) -> int:
        assert self.tap is not None
        return self.tap.fd

    def _write_env(self) -> None:
        write_subnet_files(self.routing, self.routed.subnets, self.mtu)

    async def follow_moves(self, nl: Netlink) -> None:
        """Our subnet moved: re-address the device, tell the Router, rewrite subnet.env."""
        if not self.speaker.subnet_moves:
            return
        moves, self.speaker.subnet_moves = self.speaker.subnet_moves, []
        r = self.routing
        for addr in self._addresses:
            with contextlib.suppress(Exception):
                await nl.del_address(r.device, addr)
        self._addresses = []
        for subnet in self.routed.subnets:
            addr = device_address(subnet)
            await nl.add_address(r.device, addr)
            self._addresses.append(addr)
        assert self.router is not None
        self.router.set_local_subnets(self.routed.subnets)
        self._write_env()
        log.warning("routing: our subnets are now %s (were %s)",
                    ", ".join(map(str, self.routed.subnets)) or "none",
                    ", ".join(map(str, moves[0].old)) or "none")

    async def check_local_routes(self, nl: Netlink) -> None:
        """Report subnets that overlap a route of this host on another device (once each).

        Traffic for such a subnet never reaches the routing device: the
        kernel's more specific route wins. Our own subnet may only be routed
        to the CNI bridge (that is where our pods are).
        """
        r = self.routing
        ours = set(self.routed.subnets)
        for version in {e.prefix.version for e in self.routed.table}:
            for dst, dev in await nl.local_routes(version, skip_protocol=r.route_protocol):
                if dev == r.device or dst.prefixlen == 0:
                    continue
                for entry in self.routed.table:
                    if entry.prefix.version != version or not entry.prefix.overlaps(dst):
                        continue
                    if entry.prefix in ours and dev == r.cni_bridge:
                        continue
                    key = (str(entry.prefix), str(dst), dev)
                    if key in self._reported:
                        continue
                    self._reported.add(key)
                    whose = "our subnet" if entry.prefix in ours else f"subnet of node {entry.node}"
                    self.routed._alarm_text(
                        f"routing: {whose} {entry.prefix} overlaps the local route {dst} dev {dev}: "
                        f"traffic for the overlap stays on this host"
                    )

    def flush_replies(self) -> None:
        """Write what the Router queued for the device outside `readable` (service resets)."""
        assert self.router is not None
        for _, packet in self.router.pop_replies():
            with contextlib.suppress(OSError):
                os.writev(self.fd, [bytes(VNET_HDR_LEN), packet] if self.vnet_hdr else [packet])

    # -- the hot path: device -> VXLAN ---------------------------------------------------

    def readable(self, tx: list, counters) -> None:
        assert self.router is not None
        router = self.router
        from_device = router.from_device
        replies = router.replies
        offset = router.payload_offset
        skip = VNET_HDR_LEN if self.vnet_hdr else 0
        fd, bufs, mv = self.fd, [self._buf], self._mv
        ntx = len(tx)
        readv = os.readv
        now = self.clock()
        for _ in range(BATCH):
            try:
                n = readv(fd, bufs)
            except OSError:
                return
            data = mv[skip:n]
            egress = from_device(data, now)
            if egress is None:
                if replies:
                    for _, reply in replies:
                        try:
                            os.writev(fd, [bytes(VNET_HDR_LEN), reply] if skip else [reply])
                        except OSError:
                            counters.rx_drop_write_error += 1
                    replies.clear()
                continue
            header, targets, flow = egress
            sendmsg = tx[flow % ntx].sendmsg
            parts = (header, data[offset:])
            for addr in targets:
                try:
                    sendmsg(parts, (), 0, addr)
                except OSError:
                    counters.tx_drop_send_error += 1
