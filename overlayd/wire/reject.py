"""The packets the service path sends itself: a TCP reset and an ICMP/ICMPv6 port unreachable.

A connection to a VIP:port with no healthy backend is refused, not
dropped, the way a host answers on a closed port: TCP gets a reset, UDP an
ICMP destination unreachable (IPv4 type 3 code 3, ICMPv6 type 1 code 4).
Both come from the address and port the client sent to (the VIP), so the
client's stack matches them to its socket. Each builder returns a whole
bare IP packet (what a TUN device takes), every checksum filled in.

- `reject(packet, flow)`: the answer to one offending packet (a `Flow` from
  `ip.parse_flow`), or None where the RFCs say to stay silent.
- `reset_for(flow)`: the reset of RFC 9293 section 3.10.7.1 (a segment to
  a connection that does not exist): a segment with ACK set gets
  <SEQ=SEG.ACK><CTL=RST> — what a client of a connection that was pinned
  to a backend gone dead sees; one without ACK (a SYN) gets
  <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>, SEG.LEN counting SYN and FIN.
  A reset is never answered (None).
- `tcp_reset(...)`, `icmp4_unreachable(...)`, `icmp6_unreachable(...)`: the
  packets themselves, from explicit fields.

ICMP errors quote as much of the offending packet as the RFCs allow: the
whole ICMP error packet stays within 576 bytes for IPv4 (RFC 1812 4.3.2.3,
so up to 548 bytes quoted) and within the IPv6 minimum MTU of 1280 bytes
for IPv6 (RFC 4443 2.4 (c), up to 1232 bytes). Link padding after the
offending packet's IP length is not quoted. Pass the packet as the client
sent it, before any rewrite. The IPv4 error carries precedence 6 (TOS
0xc0, RFC 1812 4.3.2.5, as Linux sends them), TTL and hop limit 64.

Not answered (`reject` returns None; RFC 1812 4.3.2.7, RFC 1122 3.2.2 and
4.2.3.10, RFC 4443 2.4 (e)): a packet to a multicast or broadcast
address (224/4, 240/4 and 255.255.255.255; ff00::/8), one from an address
that is not one host (0/8, 127/8, 224/4, 240/4; ::, ::1, ff00::/8), and a
TCP reset. A subnet's directed broadcast cannot be told from here. The
caller still has to rate-limit what it sends (RFC 4443 2.4 (f), RFC 1812
4.3.2.8). ICMP errors about ICMP errors and non-initial fragments never
get this far: `parse_flow` only returns unfragmented TCP and UDP.
"""

from __future__ import annotations

import struct

from overlayd.wire.ip import (
    IPV4_HEADER_LEN,
    IPV6_HEADER_LEN,
    PROTO_ICMP,
    PROTO_ICMPV6,
    PROTO_TCP,
    TCP_ACK,
    TCP_RST,
    Flow,
    checksum,
    ones_sum,
    pseudo_header_sum,
)

ICMP_DEST_UNREACHABLE = 3
ICMP_PORT_UNREACHABLE = 3  # code
ICMPV6_DEST_UNREACHABLE = 1
ICMPV6_PORT_UNREACHABLE = 4  # code
ICMP_ERROR_MAX_BYTES = 576  # RFC 1812 4.3.2.3: the whole IPv4 packet
ICMPV6_ERROR_MAX_BYTES = 1280  # RFC 4443 2.4 (c): the IPv6 minimum MTU
ICMP_HEADER_LEN = 8
TOS_INTERNETWORK_CONTROL = 0xC0  # precedence 6
DEFAULT_TTL = 64

_UNSPECIFIED = bytes(16)
_LOOPBACK = bytes(15) + b"\x01"
_IPV4 = struct.Struct("!BBHHHBBH4s4s")
_IPV6 = struct.Struct("!IHBB16s16s")
_TCP = struct.Struct("!HHIIBBHHH")  # ports, seq, ack, data offset, flags, window, checksum, urgent
_ICMP = struct.Struct("!BBHI")  # type, code, checksum, unused


def _ipv4(src: bytes, dst: bytes, proto: int, payload: bytes, ttl: int, tos: int = 0) -> bytes:
    """An IPv4 packet without options: DF set, id 0 (RFC 6864 allows it for atomic datagrams)."""
    header = bytearray(_IPV4.pack(0x45, tos, IPV4_HEADER_LEN + len(payload), 0, 0x4000, ttl, proto, 0, src, dst))
    header[10:12] = checksum(ones_sum(header)).to_bytes(2, "big")
    return bytes(header) + payload


def _ipv6(src: bytes, dst: bytes, next_header: int, payload: bytes, hop_limit: int) -> bytes:
    """An IPv6 packet without extension headers: traffic class and flow label 0."""
    return _IPV6.pack(6 << 28, len(payload), next_header, hop_limit, src, dst) + payload


def tcp_reset(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int | None = None,
              *, ttl: int = DEFAULT_TTL) -> bytes:
    """A TCP reset from `src`:`sport` to `dst`:`dport` (addresses of 4 or 16 octets, one family).

    `ack` None: RST alone, sequence number `seq`; else RST|ACK acknowledging
    `ack`. No options, no payload, window 0. IPv4 (DF set) or IPv6, TTL /
    hop limit `ttl`.
    """
    if len(src) != len(dst) or len(src) not in (4, 16):
        raise ValueError(f"addresses of {len(src)} and {len(dst)} octets are not one family")
    flags = TCP_RST if ack is None else TCP_RST | TCP_ACK
    segment = bytearray(_TCP.pack(sport, dport, seq & 0xFFFFFFFF, (ack or 0) & 0xFFFFFFFF, 5 << 4, flags, 0, 0, 0))
    total = pseudo_header_sum(src, dst, PROTO_TCP, len(segment)) + ones_sum(segment)
    segment[16:18] = checksum(total).to_bytes(2, "big")
    if len(src) == 4:
        return _ipv4(src, dst, PROTO_TCP, bytes(segment), ttl)
    return _ipv6(src, dst, PROTO_TCP, bytes(segment), ttl)


def reset_for(flow: Flow) -> bytes | None:
    """The reset answering the TCP segment `flow` (RFC 9293 3.10.7.1), from its destination; None for a reset."""
    if flow.proto != PROTO_TCP:
        raise ValueError(f"protocol {flow.proto} is not TCP")
    if flow.tcp_flags & TCP_RST:
        return None
    if flow.tcp_flags & TCP_ACK:
        return tcp_reset(flow.dst, flow.src, flow.dport, flow.sport, flow.ack)
    return tcp_reset(flow.dst, flow.src, flow.dport, flow.sport, 0, flow.seq + flow.seg_len)


def _quoted(offending: bytes | bytearray | memoryview, length: int, limit: int) -> bytes:
    """The first bytes of the offending packet that fit: up to its IP length, at most `limit`."""
    return bytes(offending[: min(length, len(offending), limit)])


def icmp4_unreachable(offending: bytes | bytearray | memoryview, src: bytes, dst: bytes,
                      code: int = ICMP_PORT_UNREACHABLE, *, ttl: int = DEFAULT_TTL) -> bytes:
    """An ICMP destination unreachable (type 3, `code`) from `src` to `dst` about the IPv4 packet `offending`.

    It quotes the offending packet from its IP header on, as much as keeps
    the whole packet within 576 bytes (RFC 1812 4.3.2.3).
    """
    length = offending[2] << 8 | offending[3] if len(offending) >= 4 else len(offending)
    quoted = _quoted(offending, length, ICMP_ERROR_MAX_BYTES - IPV4_HEADER_LEN - ICMP_HEADER_LEN)
    message = bytearray(_ICMP.pack(ICMP_DEST_UNREACHABLE, code, 0, 0) + quoted)
    message[2:4] = checksum(ones_sum(message)).to_bytes(2, "big")
    return _ipv4(src, dst, PROTO_ICMP, bytes(message), ttl, TOS_INTERNETWORK_CONTROL)


def icmp6_unreachable(offending: bytes | bytearray | memoryview, src: bytes, dst: bytes,
                      code: int = ICMPV6_PORT_UNREACHABLE, *, hop_limit: int = DEFAULT_TTL) -> bytes:
    """An ICMPv6 destination unreachable (type 1, `code`) from `src` to `dst` about the IPv6 packet `offending`.

    It quotes as much of the offending packet as keeps the whole packet
    within the minimum IPv6 MTU, 1280 bytes (RFC 4443 2.4 (c)).
    """
    length = IPV6_HEADER_LEN + (offending[4] << 8 | offending[5]) if len(offending) >= 6 else len(offending)
    quoted = _quoted(offending, length, ICMPV6_ERROR_MAX_BYTES - IPV6_HEADER_LEN - ICMP_HEADER_LEN)
    message = bytearray(_ICMP.pack(ICMPV6_DEST_UNREACHABLE, code, 0, 0) + quoted)
    total = pseudo_header_sum(src, dst, PROTO_ICMPV6, len(message)) + ones_sum(message)
    message[2:4] = checksum(total).to_bytes(2, "big")
    return _ipv6(src, dst, PROTO_ICMPV6, bytes(message), hop_limit)


def port_unreachable(packet: bytes | bytearray | memoryview, flow: Flow) -> bytes:
    """The ICMP or ICMPv6 port unreachable answering `packet` (whose `Flow` is `flow`), from its destination."""
    if flow.version == 4:
        return icmp4_unreachable(packet, flow.dst, flow.src)
    return icmp6_unreachable(packet, flow.dst, flow.src)


def answerable(flow: Flow) -> bool:
    """False when no error may answer `flow`: a group or broadcast destination, or a source that is not one host."""
    src, dst = flow.src, flow.dst
    if flow.version == 4:
        return 0 < src[0] < 224 and src[0] != 127 and 0 < dst[0] < 224
    return dst[0] != 0xFF and src[0] != 0xFF and src != _UNSPECIFIED and src != _LOOPBACK


def reject(packet: bytes | bytearray | memoryview, flow: Flow) -> bytes | None:
    """How the VIP refuses `packet`: a TCP reset or an ICMP port unreachable, or None to stay silent."""
    if not answerable(flow):
        return None
    if flow.proto == PROTO_TCP:
        return reset_for(flow)
    return port_unreachable(packet, flow)
