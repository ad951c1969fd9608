"""IPv4 and IPv6 packets carrying TCP or UDP, as the service path reads them; the Internet checksum.

`parse_flow(packet)` takes a bare IP packet (what a TUN device gives, or a
frame's payload: a memoryview slice of the receive buffer is fine) and
returns where its 5-tuple and its headers are, in a `Flow`. Offsets count
from the first byte of the IP header. Three outcomes, and no other:

- a `Flow` for an unfragmented TCP or UDP packet whose headers are whole;
- **None** for an IP packet this path does not look into: another protocol
  (ICMP, ICMPv6, SCTP, ...); an IPv4 fragment, the first one too (MF set or
  a non-zero offset: the later fragments carry no ports, so the packet
  cannot be translated consistently); an IPv6 packet whose next header is
  not TCP or UDP itself, i.e. any extension header (hop-by-hop, routing,
  fragment — an atomic fragment too —, destination options, AH, ESP,
  mobility, HIP, shim6). Those headers are not walked;
- **DecodeError** (`overlayd.wire.errors`) for bytes that are not a whole
  packet: empty, a version other than 4 or 6, shorter than its IP header,
  an IPv4 header length under 20, an IP length (IPv4 total length, IPv6
  payload length + 40) past the end of the bytes or shorter than the IP
  header, a TCP header shorter than 20 or past the IP length, a UDP header
  past the IP length, or a UDP length under 8 or past the IP length. An
  IPv4 "BIG TCP" packet (total length 0) is one of these.

Bytes after the IP length (Ethernet padding) are left out: `Flow.ip_len`.
Checksums are not verified here: the rewrite in `nat.py` is incremental
and carries a wrong checksum along, so a corrupt packet stays detectably
corrupt (RFC 1624 section 5).

The one's complement sum is taken as a residue mod 0xFFFF: the sum of the
16-bit big-endian words of some bytes is congruent to their value read as
one big integer (2**16 == 1 mod 0xFFFF), so no Python loop runs per word.
"""

from __future__ import annotations

import struct
from typing import NamedTuple

from overlayd.wire.errors import DecodeError

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_ICMPV6 = 58

IPV4_HEADER_LEN = 20
IPV6_HEADER_LEN = 40
TCP_HEADER_LEN = 20
UDP_HEADER_LEN = 8

TCP_FIN = 0x01
TCP_SYN = 0x02
TCP_RST = 0x04
TCP_PSH = 0x08
TCP_ACK = 0x10

TCP_CHECKSUM_AT = 16  # where the checksum field is, from the start of the TCP header
UDP_CHECKSUM_AT = 6

_MOD = 0xFFFF
_IPV4 = struct.Struct("!BxH2xHxB2x4s4s")  # version/IHL, total length, flags/offset, protocol, addresses
_IPV6 = struct.Struct("!4xHBx16s16s")  # payload length, next header, addresses
_TCP = struct.Struct("!HHIIBB")  # ports, sequence and acknowledgment numbers, data offset, flags
_UDP = struct.Struct("!HHH")  # ports, length
_new = tuple.__new__  # a Flow from a tuple, without NamedTuple's keyword handling


class Flow(NamedTuple):
    """An unfragmented TCP or UDP packet: its 5-tuple and where its headers are (`parse_flow`)."""

    version: int  # 4 or 6
    proto: int  # PROTO_TCP or PROTO_UDP
    src: bytes  # source address: 4 or 16 octets
    dst: bytes  # destination address
    sport: int
    dport: int
    l4_offset: int  # where the TCP/UDP header starts: the IPv4 header length (options included), or 40
    payload_offset: int  # where the TCP/UDP payload starts
    payload_len: int  # TCP: IP length minus both headers; UDP: UDP length minus 8
    ip_len: int  # the packet's length by its IP header; later bytes are not part of it
    tcp_flags: int  # the eight flag bits CWR..FIN (TCP_SYN, TCP_ACK, ...); 0 for UDP
    seq: int  # TCP sequence number; 0 for UDP
    ack: int  # TCP acknowledgment number (meaningful with TCP_ACK set); 0 for UDP

    @property
    def seg_len(self) -> int:
        """SEG.LEN of RFC 9293: payload octets, plus one each for SYN and FIN."""
        return self.payload_len + (self.tcp_flags & TCP_SYN) // TCP_SYN + (self.tcp_flags & TCP_FIN)

    @property
    def checksum_offset(self) -> int:
        """Where the TCP or UDP checksum field is, from the start of the packet."""
        return self.l4_offset + (TCP_CHECKSUM_AT if self.proto == PROTO_TCP else UDP_CHECKSUM_AT)


def parse_flow(packet: bytes | bytearray | memoryview) -> Flow | None:
    """The `Flow` of an IP packet; None if it is not unfragmented TCP/UDP; DecodeError if malformed."""
    size = len(packet)
    if not size:
        raise DecodeError("ip", "empty packet")
    version = packet[0] >> 4
    if version == 4:
        if size < IPV4_HEADER_LEN:
            raise DecodeError("ipv4", f"packet of {size} bytes is shorter than a header")
        vihl, end, fragment, proto, src, dst = _IPV4.unpack_from(packet)
        l4 = (vihl & 0x0F) * 4
        if l4 < IPV4_HEADER_LEN:
            raise DecodeError("ipv4", f"header length {l4} is shorter than 20")
        if end < l4:
            raise DecodeError("ipv4", f"total length {end} is shorter than the {l4}-byte header")
        if end > size:
            raise DecodeError("ipv4", f"total length {end} runs past the {size} bytes")
        if fragment & 0x3FFF:  # MF, or a fragment offset
            return None
    elif version == 6:
        if size < IPV6_HEADER_LEN:
            raise DecodeError("ipv6", f"packet of {size} bytes is shorter than a header")
        end, proto, src, dst = _IPV6.unpack_from(packet)
        end += IPV6_HEADER_LEN
        if end > size:
            raise DecodeError("ipv6", f"payload length {end - IPV6_HEADER_LEN} runs past the {size} bytes")
        l4 = IPV6_HEADER_LEN
    else:
        raise DecodeError("ip", f"version {version} is neither 4 nor 6")
    if proto == PROTO_TCP:
        if l4 + TCP_HEADER_LEN > end:
            raise DecodeError("tcp", f"header at byte {l4} runs past the IP length {end}")
        sport, dport, seq, ack, offset, flags = _TCP.unpack_from(packet, l4)
        payload = l4 + (offset >> 4) * 4
        if payload < l4 + TCP_HEADER_LEN:
            raise DecodeError("tcp", f"data offset {offset >> 4} is under 5")
        if payload > end:
            raise DecodeError("tcp", f"header of {payload - l4} bytes runs past the IP length {end}")
        return _new(Flow, (version, proto, src, dst, sport, dport, l4, payload, end - payload, end, flags, seq, ack))
    if proto == PROTO_UDP:
        if l4 + UDP_HEADER_LEN > end:
            raise DecodeError("udp", f"header at byte {l4} runs past the IP length {end}")
        sport, dport, length = _UDP.unpack_from(packet, l4)
        if length < UDP_HEADER_LEN or l4 + length > end:
            raise DecodeError("udp", f"length {length} is under 8 or runs past the IP length {end}")
        return _new(Flow, (version, proto, src, dst, sport, dport, l4, l4 + UDP_HEADER_LEN,
                           length - UDP_HEADER_LEN, end, 0, 0, 0))
    return None


# -- the Internet checksum (RFC 1071) --------------------------------------------


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """The one's complement sum of `data` as 16-bit big-endian words, mod 0xFFFF (0..0xFFFE).

    An odd length counts as if padded with a zero byte.
    """
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    return value % _MOD


def checksum(total: int) -> int:
    """The checksum field for data whose one's complement sum is `total` (any int, taken mod 0xFFFF).

    0..0xFFFE, as RFC 1071's ~sum gives it for data that is not all zeros
    (TCP, ICMP and IPv4 headers; UDP writes 0 as 0xFFFF: `udp_checksum`).
    """
    return -total % _MOD


def udp_checksum(total: int) -> int:
    """The UDP checksum field for a sum of `total`: 1..0xFFFF, a computed 0 sent as 0xFFFF (RFC 768)."""
    return -total % _MOD or _MOD


def pseudo_header_sum(src: bytes, dst: bytes, proto: int, length: int) -> int:
    """The sum (mod 0xFFFF) of the TCP/UDP/ICMPv6 pseudo-header (RFC 9293 3.1, RFC 8200 8.1).

    `src` and `dst` are 4 or 16 octets; `length` is the upper-layer length.
    """
    return (int.from_bytes(src, "big") + int.from_bytes(dst, "big") + proto + length) % _MOD
