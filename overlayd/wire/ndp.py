"""IPv6 neighbour discovery (RFC 4861): Neighbor Solicitation and Advertisement.

`NeighborMessage.decode` takes the IPv6 packet after the Ethernet header (as
`ArpPacket.decode` takes the ARP packet) and checks what section 7.1 asks a
receiver to check: hop limit 255, ICMPv6 code 0, a valid checksum over the
pseudo-header, a target that is not multicast, no zero-length option, no
source link-layer option on a DAD solicitation (source ::), no solicited
flag on an advertisement to a multicast group. Options other than the two
link-layer address options are skipped, as the RFC says to.

`encode` computes the checksum; `advertisement_reply_frame` builds the whole
Ethernet frame a node sends back when it answers a solicitation (the one
ARP suppression writes to the TAP). ND messages never carry IPv6 extension
headers in practice and the Linux bridge's suppression ignores those that
do: a packet whose next header is not ICMPv6 is not one of these.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from overlayd.wire.errors import DecodeError
from overlayd.wire.ethernet import ETHERTYPE_IPV6, EthernetHeader

IPV6_HEADER_LEN = 40
NEXT_HEADER_ICMPV6 = 58
ND_HOP_LIMIT = 255

TYPE_NEIGHBOR_SOLICITATION = 135
TYPE_NEIGHBOR_ADVERTISEMENT = 136
ND_MESSAGE_LEN = 24  # type, code, checksum, flags/reserved, target: the fixed part

OPT_SOURCE_LLADDR = 1
OPT_TARGET_LLADDR = 2

FLAG_ROUTER = 0x80000000
FLAG_SOLICITED = 0x40000000
FLAG_OVERRIDE = 0x20000000

UNSPECIFIED = ipaddress.IPv6Address("::")

_IPV6 = struct.Struct("!IHBB16s16s")  # version/class/flow, payload length, next header, hop limit
_ND = struct.Struct("!BBHI16s")  # type, code, checksum, flags (NA) or reserved (NS), target
_PSEUDO = struct.Struct("!16s16sI3xB")


def checksum(src: ipaddress.IPv6Address, dst: ipaddress.IPv6Address, message: bytes) -> int:
    """The ICMPv6 checksum (RFC 4443 2.3) of `message` whose checksum field is zero."""
    data = _PSEUDO.pack(src.packed, dst.packed, len(message), NEXT_HEADER_ICMPV6) + message
    return ~_sum16(data) & 0xFFFF


def _sum16(data: bytes) -> int:
    """The 16-bit one's complement sum of `data` (odd lengths padded with a zero byte).

    2**16 is 1 modulo 0xFFFF, so the whole buffer read as one integer has the
    same remainder as the sum of its 16-bit words: no Python loop per word.
    """
    if len(data) & 1:
        data += b"\x00"
    total = int.from_bytes(data, "big")
    if not total:
        return 0
    return total % 0xFFFF or 0xFFFF


def _lladdr_option(kind: int, mac: bytes) -> bytes:
    return bytes((kind, 1)) + mac


@dataclass(frozen=True, slots=True)
class NeighborMessage:
    """A Neighbor Solicitation (type 135) or Advertisement (type 136) in its IPv6 packet."""

    type: int  # TYPE_NEIGHBOR_SOLICITATION or TYPE_NEIGHBOR_ADVERTISEMENT
    src: ipaddress.IPv6Address  # IPv6 source; :: for a DAD solicitation
    dst: ipaddress.IPv6Address  # IPv6 destination (solicited-node group, a unicast, ff02::1)
    target: ipaddress.IPv6Address  # the address being resolved or advertised
    source_lladdr: bytes | None = None  # source link-layer address option (NS)
    target_lladdr: bytes | None = None  # target link-layer address option (NA)
    router: bool = False  # NA flags; always False on a solicitation
    solicited: bool = False
    override: bool = False
    hop_limit: int = ND_HOP_LIMIT

    @property
    def is_solicitation(self) -> bool:
        return self.type == TYPE_NEIGHBOR_SOLICITATION

    @property
    def is_advertisement(self) -> bool:
        return self.type == TYPE_NEIGHBOR_ADVERTISEMENT

    @property
    def is_dad(self) -> bool:
        """A duplicate address detection probe: a solicitation from the unspecified address."""
        return self.type == TYPE_NEIGHBOR_SOLICITATION and self.src == UNSPECIFIED

    def icmpv6(self) -> bytes:
        """The ICMPv6 message, checksum included."""
        flags = 0
        if self.type == TYPE_NEIGHBOR_ADVERTISEMENT:
            flags = (
                (FLAG_ROUTER if self.router else 0)
                | (FLAG_SOLICITED if self.solicited else 0)
                | (FLAG_OVERRIDE if self.override else 0)
            )
        options = b""
        if self.source_lladdr is not None:
            options += _lladdr_option(OPT_SOURCE_LLADDR, self.source_lladdr)
        if self.target_lladdr is not None:
            options += _lladdr_option(OPT_TARGET_LLADDR, self.target_lladdr)
        message = bytearray(_ND.pack(self.type, 0, 0, flags, self.target.packed) + options)
        message[2:4] = checksum(self.src, self.dst, bytes(message)).to_bytes(2, "big")
        return bytes(message)

    def encode(self) -> bytes:
        """The IPv6 packet: a 40-byte header (class and flow label 0) and the ICMPv6 message."""
        message = self.icmpv6()
        header = _IPV6.pack(
            6 << 28, len(message), NEXT_HEADER_ICMPV6, self.hop_limit, self.src.packed, self.dst.packed
        )
        return header + message

    @classmethod
    def decode(cls, data: bytes | memoryview) -> NeighborMessage:
        """The IPv6 packet after the Ethernet header; DecodeError unless it is a valid NS or NA."""
        if len(data) < IPV6_HEADER_LEN:
            raise DecodeError("ipv6", f"packet of {len(data)} bytes is shorter than a header")
        word0, length, next_header, hop_limit, src, dst = _IPV6.unpack_from(data)
        if word0 >> 28 != 6:
            raise DecodeError("ipv6", f"version {word0 >> 28} is not 6")
        if IPV6_HEADER_LEN + length > len(data):
            raise DecodeError("ipv6", f"payload length {length} runs past the {len(data)} bytes")
        if next_header != NEXT_HEADER_ICMPV6:
            raise DecodeError("ndp", f"next header {next_header} is not ICMPv6")
        message = bytes(data[IPV6_HEADER_LEN : IPV6_HEADER_LEN + length])
        if len(message) < ND_MESSAGE_LEN:
            raise DecodeError("ndp", f"ICMPv6 message of {len(message)} bytes is shorter than {ND_MESSAGE_LEN}")
        kind, code, _, flags, target = _ND.unpack_from(message)
        if kind not in (TYPE_NEIGHBOR_SOLICITATION, TYPE_NEIGHBOR_ADVERTISEMENT):
            raise DecodeError("ndp", f"ICMPv6 type {kind} is neither solicitation nor advertisement")
        if code != 0:
            raise DecodeError("ndp", f"ICMPv6 code {code} is not 0")
        if hop_limit != ND_HOP_LIMIT:
            raise DecodeError("ndp", f"hop limit {hop_limit} is not 255: the packet crossed a router")
        src_ip, dst_ip = ipaddress.IPv6Address(src), ipaddress.IPv6Address(dst)
        if _sum16(_PSEUDO.pack(src, dst, len(message), NEXT_HEADER_ICMPV6) + message) != 0xFFFF:
            raise DecodeError("ndp", "ICMPv6 checksum is wrong")
        target_ip = ipaddress.IPv6Address(target)
        if target_ip.is_multicast:
            raise DecodeError("ndp", f"target {target_ip} is a multicast address")
        sll = tll = None
        at = ND_MESSAGE_LEN
        while at < len(message):
            if at + 2 > len(message):
                raise DecodeError("ndp", f"option at byte {at} is truncated")
            opt, units = message[at], message[at + 1]
            if units == 0:
                raise DecodeError("ndp", f"option {opt} at byte {at} has length 0")
            end = at + 8 * units
            if end > len(message):
                raise DecodeError("ndp", f"option {opt} at byte {at} runs past the message")
            if opt == OPT_SOURCE_LLADDR and sll is None:
                sll = message[at + 2 : at + 8]
            elif opt == OPT_TARGET_LLADDR and tll is None:
                tll = message[at + 2 : at + 8]
            at = end
        if kind == TYPE_NEIGHBOR_SOLICITATION:
            if src_ip == UNSPECIFIED and sll is not None:
                raise DecodeError("ndp", "a DAD solicitation (source ::) carries a source link-layer option")
            return cls(kind, src_ip, dst_ip, target_ip, source_lladdr=sll, hop_limit=hop_limit)
        solicited = bool(flags & FLAG_SOLICITED)
        if solicited and dst_ip.is_multicast:
            raise DecodeError("ndp", "a solicited advertisement is sent to a multicast address")
        return cls(
            kind, src_ip, dst_ip, target_ip, target_lladdr=tll, router=bool(flags & FLAG_ROUTER),
            solicited=solicited, override=bool(flags & FLAG_OVERRIDE), hop_limit=hop_limit,
        )


def advertisement_reply_frame(
    solicitation: NeighborMessage, asker_mac: bytes, mac: bytes, router: bool = False
) -> bytes:
    """The Ethernet frame answering `solicitation`: its target is at `mac`.

    A solicited advertisement with the override flag and a target link-layer
    option, from the target address to the solicitation's source, Ethernet
    from `mac` to `asker_mac` (the source link-layer option if it had one,
    else its Ethernet source). `router` sets the R flag; leave it False
    unless the target is known to be a router.
    """
    if solicitation.is_dad:
        raise ValueError("a DAD solicitation (source ::) is never answered on the target's behalf")
    na = NeighborMessage(
        TYPE_NEIGHBOR_ADVERTISEMENT, solicitation.target, solicitation.src, solicitation.target,
        target_lladdr=mac, router=router, solicited=True, override=True,
    )
    return EthernetHeader(asker_mac, mac, ETHERTYPE_IPV6).encode() + na.encode()


ALL_NODES = ipaddress.IPv6Address("ff02::1")
ALL_NODES_MAC = b"\x33\x33\x00\x00\x00\x01"


def unsolicited_advertisement_frame(mac: bytes, ip: ipaddress.IPv6Address) -> bytes:
    """An unsolicited neighbour advertisement (RFC 4861 7.2.6) to all nodes, override set:
    `ip` is at `mac` (what Linux's ndisc_notify sends)."""
    na = NeighborMessage(TYPE_NEIGHBOR_ADVERTISEMENT, ip, ALL_NODES, ip, target_lladdr=mac, override=True)
    return EthernetHeader(ALL_NODES_MAC, mac, ETHERTYPE_IPV6).encode() + na.encode()
