"""The routing decision for one routed (L3) VNI, without I/O: symmetric IRB between node subnets.

Every node owns a subnet; the kernel routes the whole cluster network to one
device (`ovl0`), and `Router` decides per packet which node gets it, from the
prefix table the EVPN type-5 routes fill (RFC 9136). On the wire it does what
symmetric IRB does (RFC 9135 section 4.2): the IP packet travels on the L3 VNI
inside an inner Ethernet header from our router MAC to the router MAC of the
egress VTEP — what a kernel VXLAN device in an FRR VRF sends and expects.

Device side (`from_device`), two modes:

- `tun`: the device gives bare IP packets (a TUN opened with IFF_NO_PI); the
  version nibble says IPv4 or IPv6.
- `tap`: the device gives Ethernet frames. The kernel, told that the cluster
  network is on the link, asks ARP / neighbour solicitation for each
  destination; we answer for every address of the cluster network
  (`networks`, all of them when empty) that is not in our own subnets, and
  for `gateways`, with the router MAC: `from_device` returns None and
  appends `(vni, reply frame)` to `replies` for the caller to write back to
  the device (and empty: `pop_replies`), as `Switch.replies`. IPv4/IPv6
  frames sent to the router MAC are routed as in tun mode, their Ethernet
  header left behind.

Routing: `table.lookup(destination)` (longest match). No entry, our own
subnet (an entry without a VTEP) or an entry without a router MAC: drop,
counted. Otherwise the `Egress` is (VXLAN header of the entry's VNI + inner
Ethernet header, ((vtep, port),), flow hash of the IP packet) — the 22
header octets are built once per (VTEP, router MAC, VNI) and cached.
**The caller sends header + the IP packet**: `packet[payload_offset:]`
of what it passed in, i.e. the input itself in tun mode (offset 0) and the
input minus its 14-octet Ethernet header in tap mode (offset 14).

VXLAN side (`from_vxlan`, also reached through `Switch.from_vxlan` once
`Switch.add_router` registered the VNI): the sender must be a VTEP of the
table, the inner frame must be addressed to our router MAC and carry an IPv4
or IPv6 packet whose version matches the ethertype, with a destination in
one of `local_subnets` (no transit: a packet for another node's subnet is
not forwarded again). What to write to the device:

- `tun`: the IP packet, a memoryview slice of `data` (no copy).
- `tap`: the Ethernet frame for the device (device MAC <- router MAC, the
  ethertype kept). When `data` is writable (the caller's receive buffer,
  a bytearray or a memoryview of one), the 12 MAC octets of the inner frame
  are **rewritten in place** and the result is a memoryview slice of `data`:
  no copy, no allocation, and the caller writes it with one `os.write` like
  any L2 frame. A read-only `data` (bytes) gets a new bytes object instead.
  Either way: one bytes-like object, never a tuple of parts.

TTL / hop limit are left alone. In symmetric IRB each VTEP routes once; here
those two routing steps are the kernels' on both nodes (pod bridge -> ovl0 on
the way in, ovl0 -> pod bridge on the way out), which decrement and send
ICMP time exceeded with the right source address, as flannel's backends
rely on. overlayd sits between them like the kernel's VXLAN device in the
L3 VNI (which does not decrement either): a traceroute between pods shows
the two nodes, the same as against a kernel VXLAN/VRF node. Decrementing
here too would count each node twice and need ICMP generation we would
have to get right for both families.

Counters (`counters.py`): one outcome per call — `tx_routed_packets` or a
`tx_route_drop_*` / `tx_route_arp_*` counter out of the device, and
`rx_routed_packets` or an `rx_route_drop_*` counter into it. Nothing
malformed raises. `now` is taken for symmetry with `Switch` and unused.
`dataplane/explain.py` mirrors these decisions for `overlayctl explain`
(tests/unit/test_dataplane_explain.py holds both to the same counters).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Literal, Protocol
from zlib import crc32

from overlayd.dataplane.counters import Counters
from overlayd.dataplane.egress import ND_MIN_FRAME, Egress
from overlayd.dataplane.services import DROP, LOCAL, ServicePath
from overlayd.wire.arp import OP_REQUEST, ArpPacket, reply_frame
from overlayd.wire.errors import DecodeError
from overlayd.wire.ethernet import ETH_HEADER_LEN, ETHERTYPE_IPV4, ETHERTYPE_IPV6, is_multicast
from overlayd.wire.ndp import NeighborMessage, advertisement_reply_frame
from overlayd.wire.vxlan import VXLAN_HEADER_LEN, encode_header

Mode = Literal["tun", "tap"]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

IPV4_HEADER_LEN = 20
IPV6_HEADER_LEN = 40
_INNER = VXLAN_HEADER_LEN + ETH_HEADER_LEN  # 22: where the IP packet starts in a datagram
_NS = 135
_L4_WITH_PORTS = frozenset((6, 17, 132))
_CACHE_MAX = 4096  # distinct (VTEP, router MAC, VNI) next hops kept; cleared when exceeded
_LIMITED_BROADCAST = ipaddress.IPv4Address("255.255.255.255")


class PrefixEntry(Protocol):
    """What the router reads from a prefix table entry (`fabric.prefixes.PrefixEntry`)."""

    vtep: str | None  # None: one of our own subnets
    router_mac: bytes | None
    vni: int


class PrefixLookup(Protocol):
    """The prefix table as the router uses it (`fabric.prefixes.PrefixTable`)."""

    def lookup(self, address: bytes | memoryview) -> PrefixEntry | None: ...

    def vteps(self) -> frozenset[str]: ...


def ip_flow_hash(packet: bytes | memoryview, version: int) -> int:
    """A 32-bit hash of the flow of an IP packet: addresses, protocol, TCP/UDP/SCTP ports.

    The IP-level sibling of `flowhash.flow_hash` for the outer UDP source port
    (RFC 7348 section 5): the inner MACs of a routed packet are the same for
    every flow between two nodes, so they are left out. Ports are hashed for
    unfragmented IPv4 and for IPv6 without extension headers; `packet` holds
    at least a whole IP header of `version`.
    """
    if version == 4:
        proto = packet[9]
        if proto in _L4_WITH_PORTS and not (packet[6] & 0x3F or packet[7]):  # MF clear, offset 0
            if packet[0] == 0x45 and len(packet) >= 24:  # no options: addresses and ports in a row
                return crc32(packet[12:24], proto)
            ihl = (packet[0] & 0x0F) * 4
            if ihl >= 20 and len(packet) >= ihl + 4:
                return crc32(packet[ihl : ihl + 4], crc32(packet[12:20], proto))
        return crc32(packet[12:20], proto)
    proto = packet[6]
    if proto in _L4_WITH_PORTS and len(packet) >= 44:
        return crc32(packet[8:44], proto)  # addresses and ports in a row
    return crc32(packet[8:40], proto)


def _after_ethernet(frame: bytes | memoryview) -> memoryview:
    """The packet behind the Ethernet header, without copying it."""
    return frame[ETH_HEADER_LEN:] if type(frame) is memoryview else memoryview(frame)[ETH_HEADER_LEN:]


def _masks(subnets: Iterable[Network], version: int) -> tuple[tuple[int, int], ...]:
    return tuple(
        (int(n.netmask), int(n.network_address)) for n in subnets if n.version == version
    )


class Router:
    """The L3 data plane of one routed VNI (see the module docstring)."""

    def __init__(
        self,
        vni: int,
        router_mac: bytes,
        mode: Mode,
        table: PrefixLookup,
        vxlan_port: int,
        local_subnets: Iterable[Network | str],
        device_mac: bytes | None = None,
        *,
        networks: Iterable[Network | str] = (),
        gateways: Iterable[Address | str] = (),
        counters: Counters | None = None,
    ):
        """`device_mac`: the TAP's own MAC (tap mode), the destination of the frames we write to it.

        `networks`: the cluster network(s) whose addresses we answer ARP/ND for
        in tap mode (all but `local_subnets`; empty: any unicast address not in
        `local_subnets`). `gateways`: addresses answered for in any case.
        `counters`: where to count (`Switch.add_router` hands over the switch's).
        """
        if mode not in ("tun", "tap"):
            raise ValueError(f"routing device type {mode!r} is neither tun nor tap")
        if len(router_mac) != 6 or is_multicast(router_mac) or router_mac == bytes(6):
            raise ValueError(f"router MAC {bytes(router_mac).hex(':')} is not a unicast MAC")
        if mode == "tap" and (device_mac is None or len(device_mac) != 6):
            raise ValueError("a tap routing device needs its own MAC (device_mac)")
        self.vni = vni
        self.router_mac = bytes(router_mac)
        self.mode = mode
        self.table = table
        self.vxlan_port = vxlan_port
        self.networks = tuple(ipaddress.ip_network(n) for n in networks)
        self.gateways = frozenset(ipaddress.ip_address(a) for a in gateways)
        self.device_mac = bytes(device_mac) if device_mac is not None else None
        self.counters = counters if counters is not None else Counters()
        self.replies: list[tuple[int, bytes]] = []  # (VNI, frame) to write back to the device
        self.payload_offset = ETH_HEADER_LEN if mode == "tap" else 0
        """Where the IP packet starts in what `from_device` took: send egress header + input[offset:]."""
        self.set_local_subnets(local_subnets)
        # tap: the 12 MAC octets of frames written to the device, and their v4/v6 headers.
        macs = (self.device_mac or bytes(6)) + self.router_mac
        self._device_macs = macs
        self._device_headers = (macs + ETHERTYPE_IPV4.to_bytes(2, "big"), macs + ETHERTYPE_IPV6.to_bytes(2, "big"))
        self._next_hops: dict[tuple[str, bytes, int], tuple[bytes, bytes, tuple[tuple[str, int], ...]]] = {}
        self.services: ServicePath | None = None  # `attach_services`
        self.from_device = self._from_tap if mode == "tap" else self._from_tun

    def attach_services(self, path: ServicePath) -> None:
        """Send packets to VIPs through `path` (`dataplane.services`); its own packets come back as replies."""
        self.services = path
        path.emit = self._emit
        path.set_local_subnets(self.local_subnets)

    def _emit(self, packet: bytes) -> None:
        """Queue an IP packet for the device (tap: in an Ethernet frame from the router MAC)."""
        if self.payload_offset:
            packet = self._device_headers[packet[0] >> 4 == 6] + packet
        self.replies.append((self.vni, packet))

    def set_local_subnets(self, subnets: Iterable[Network | str]) -> None:
        """This node's subnets changed (`subnet: auto` picked again): what we deliver and do not answer for."""
        self.local_subnets = tuple(ipaddress.ip_network(n) for n in subnets)
        self._local4 = _masks(self.local_subnets, 4)
        self._local6 = _masks(self.local_subnets, 6)
        if getattr(self, "services", None) is not None:
            self.services.set_local_subnets(self.local_subnets)

    def pop_replies(self) -> list[tuple[int, bytes]]:
        """The ARP/ND answers queued since the last call; empties `replies` in place."""
        replies = list(self.replies)
        self.replies.clear()
        return replies

    # -- device -> VXLAN ------------------------------------------------------------

    def from_device(self, data: bytes | memoryview, now: float) -> Egress | None:
        """A packet (tun) or frame (tap) read from the device: where its datagram goes, or None.

        Send egress header + `data[self.payload_offset:]` to each destination.
        (`__init__` binds the instance's `from_device` straight to the mode's
        function, saving this dispatch on the hot path.)
        """
        return (self._from_tap if self.payload_offset else self._from_tun)(data, now)

    def _from_tun(self, packet: bytes | memoryview, now: float) -> Egress | None:
        c = self.counters
        size = len(packet)
        if size < IPV4_HEADER_LEN:
            c.tx_route_drop_runt += 1
            return None
        version = packet[0] >> 4
        if version == 4:
            dst = packet[16:20]
        elif version == 6:
            if size < IPV6_HEADER_LEN:
                c.tx_route_drop_runt += 1
                return None
            dst = packet[24:40]
        else:
            c.tx_route_drop_not_ip += 1
            return None
        return self._route(packet, version, dst, size, now)

    def _from_tap(self, frame: bytes | memoryview, now: float) -> Egress | None:
        c = self.counters
        size = len(frame)
        if size < ETH_HEADER_LEN:
            c.tx_route_drop_runt += 1
            return None
        hi, lo = frame[12], frame[13]
        if hi == 0x08 and lo == 0x06:
            self._arp(frame)
            return None
        if hi == 0x86 and lo == 0xDD and size >= ND_MIN_FRAME and frame[20] == 58 and frame[54] == _NS:
            self._ns(frame)  # also when unicast to the router MAC (neighbour unreachability detection)
            return None
        if frame[0:6] != self.router_mac:
            c.tx_route_drop_not_router_mac += 1
            return None
        if hi == 0x08 and lo == 0x00:
            if size < ETH_HEADER_LEN + IPV4_HEADER_LEN:
                c.tx_route_drop_runt += 1
                return None
            if frame[14] >> 4 != 4:
                c.tx_route_drop_bad_version += 1
                return None
            return self._route(_after_ethernet(frame), 4, frame[30:34], size - ETH_HEADER_LEN, now)
        if hi == 0x86 and lo == 0xDD:
            if size < ETH_HEADER_LEN + IPV6_HEADER_LEN:
                c.tx_route_drop_runt += 1
                return None
            if frame[14] >> 4 != 6:
                c.tx_route_drop_bad_version += 1
                return None
            return self._route(_after_ethernet(frame), 6, frame[38:54], size - ETH_HEADER_LEN, now)
        c.tx_route_drop_not_ip += 1
        return None

    def _route(
        self, packet: bytes | memoryview, version: int, dst: bytes | memoryview, size: int, now: float
    ) -> Egress | None:
        c = self.counters
        services = self.services
        if services is not None:
            verdict = services.from_pods(packet, now)  # rewrites a flow to a VIP in place
            if verdict is not None:
                if verdict == DROP:
                    return None
                if verdict == LOCAL:  # a backend (or, replied to, a client) on this node
                    self._emit(bytes(packet))
                    return None
                dst = packet[16:20] if version == 4 else packet[24:40]
        entry = self.table.lookup(dst)
        if entry is None:
            # Multicast (an IPv6 MLD report from the device's link-local address, say) is
            # never routed between subnets; count it apart from a real missing route.
            if (dst[0] == 0xFF) if version == 6 else (dst[0] & 0xF0 == 0xE0):
                c.tx_route_drop_multicast += 1
            else:
                c.tx_route_drop_no_route += 1
            return None
        vtep, mac = entry.vtep, entry.router_mac
        if vtep is None:
            c.tx_route_drop_local += 1
            return None
        if mac is None:
            c.tx_route_drop_no_router_mac += 1
            return None
        key = (vtep, mac, entry.vni)
        hop = self._next_hops.get(key)
        if hop is None:
            hop = self._next_hop(key)
        c.tx_routed_packets += 1
        c.tx_routed_bytes += size
        return hop[version == 6], hop[2], ip_flow_hash(packet, version)

    def _next_hop(self, key: tuple[str, bytes, int]) -> tuple[bytes, bytes, tuple[tuple[str, int], ...]]:
        """The two 22-octet headers (IPv4, IPv6) and the destination for one next hop, cached."""
        vtep, mac, vni = key
        if len(self._next_hops) >= _CACHE_MAX:
            self._next_hops.clear()  # next hops that came and went: start over
        vxlan = encode_header(vni) + bytes(mac) + self.router_mac
        hop = (
            vxlan + ETHERTYPE_IPV4.to_bytes(2, "big"),
            vxlan + ETHERTYPE_IPV6.to_bytes(2, "big"),
            ((vtep, self.vxlan_port),),
        )
        self._next_hops[key] = hop
        return hop

    # -- ARP and neighbour discovery on a tap device ---------------------------------------

    def answers_for(self, ip: Address) -> bool:
        """True if the device should reach `ip` through us: a remote address or a gateway."""
        if ip in self.gateways:
            return True
        if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_link_local or ip == _LIMITED_BROADCAST:
            return False
        if any(ip in net for net in self.local_subnets):
            return False
        return not self.networks or any(ip in net for net in self.networks)

    def _arp(self, frame: bytes | memoryview) -> None:
        c = self.counters
        try:
            packet = ArpPacket.decode(memoryview(frame)[ETH_HEADER_LEN:])
        except DecodeError:
            c.tx_route_arp_ignored += 1
            return
        if (
            packet.op != OP_REQUEST
            or packet.sender_ip.is_unspecified  # a probe
            or packet.is_gratuitous
            or not self.answers_for(packet.target_ip)
        ):
            c.tx_route_arp_ignored += 1
            return
        self.replies.append((self.vni, reply_frame(packet, self.router_mac)))
        c.tx_route_arp_answered += 1

    def _ns(self, frame: bytes | memoryview) -> None:
        c = self.counters
        try:
            msg = NeighborMessage.decode(memoryview(frame)[ETH_HEADER_LEN:])
        except DecodeError:
            c.tx_route_arp_ignored += 1
            return
        if msg.is_dad or not self.answers_for(msg.target):
            c.tx_route_arp_ignored += 1
            return
        asker = msg.source_lladdr or bytes(frame[6:12])
        self.replies.append((self.vni, advertisement_reply_frame(msg, asker, self.router_mac)))
        c.tx_route_arp_answered += 1

    # -- VXLAN -> device -----------------------------------------------------------

    def from_vxlan(self, vtep: str, data: bytes | memoryview, now: float) -> memoryview | bytes | None:
        """A UDP payload from `vtep` whose VXLAN header (checked by the caller) names our VNI.

        Returns what to write to the device with one `os.write`, or None:
        tun, the IP packet (a memoryview slice of `data`); tap, the Ethernet
        frame for the device (`data` rewritten in place and sliced when it is
        writable, else a new bytes) — see the module docstring.
        """
        c = self.counters
        if vtep not in self.table.vteps():
            c.rx_route_drop_unknown_vtep += 1
            return None
        size = len(data)
        if size < _INNER + IPV4_HEADER_LEN:
            c.rx_route_drop_runt += 1
            return None
        if data[8:14] != self.router_mac:
            c.rx_route_drop_not_router_mac += 1
            return None
        hi, lo = data[20], data[21]
        if hi == 0x08 and lo == 0x00:
            if data[22] >> 4 != 4:
                c.rx_route_drop_bad_version += 1
                return None
            dst = int.from_bytes(data[38:42], "big")
            local = self._local4
            version = 0
        elif hi == 0x86 and lo == 0xDD:
            if size < _INNER + IPV6_HEADER_LEN:
                c.rx_route_drop_runt += 1
                return None
            if data[22] >> 4 != 6:
                c.rx_route_drop_bad_version += 1
                return None
            dst = int.from_bytes(data[46:62], "big")
            local = self._local6
            version = 1
        else:
            c.rx_route_drop_not_ip += 1
            return None
        for mask, net in local:
            if dst & mask == net:
                break
        else:
            c.rx_route_drop_not_local += 1
            return None
        c.rx_routed_packets += 1
        c.rx_routed_bytes += size - _INNER
        view = data if type(data) is memoryview else memoryview(data)
        if self.services is not None and not view.readonly:
            self.services.to_pods(view[_INNER:], now)  # a backend's reply: from the VIP again
        if self.payload_offset == 0:
            return view[_INNER:]
        if not view.readonly:
            view[VXLAN_HEADER_LEN:20] = self._device_macs
            return view[VXLAN_HEADER_LEN:]
        return self._device_headers[version] + view[_INNER:]
