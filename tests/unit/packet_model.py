"""A deliberately naive model of IPv4/IPv6 TCP/UDP packets for the service path's tests.

Packets are built from their fields with every checksum computed in full,
the RFC 1071 way (16-bit words, end-around carry, one word at a time),
sharing no code with overlayd.wire. `Spec` is a packet's fields; `build`
makes its bytes; `specs()` is a Hypothesis strategy of them: both
families, random addresses, ports and payloads (odd lengths included),
IPv4 options, TCP options, UDP datagrams without a checksum, Ethernet
padding after the IP packet.
"""

from __future__ import annotations

import dataclasses
import struct

from hypothesis import strategies as st


def fold_sum(data: bytes) -> int:
    """The 16-bit one's complement sum of `data`, a zero byte added to an odd length."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += data[i] << 8 | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def internet_checksum(data: bytes) -> int:
    return ~fold_sum(data) & 0xFFFF


def pseudo_header(src: bytes, dst: bytes, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return src + dst + struct.pack("!BBH", 0, proto, length)
    return src + dst + struct.pack("!I3xB", length, proto)


@dataclasses.dataclass(frozen=True)
class Spec:
    """An IPv4 or IPv6 packet carrying TCP (6) or UDP (17)."""

    src: bytes
    dst: bytes
    proto: int
    sport: int
    dport: int
    payload: bytes = b""
    ip_options: bytes = b""  # IPv4 only, a multiple of 4 bytes
    tcp_options: bytes = b""  # a multiple of 4 bytes
    seq: int = 0
    ack: int = 0
    flags: int = 0x18
    udp_checksum: bool = True  # False: a UDP checksum of 0, none
    ident: int = 0
    ttl: int = 64
    padding: bytes = b""  # after the IP packet: link-layer padding, not part of it

    @property
    def version(self) -> int:
        return 4 if len(self.src) == 4 else 6


def segment(spec: Spec, partial: bool = False) -> bytes:
    """The TCP or UDP header and payload, checksum filled in in full (or the pseudo-header sum: `partial`)."""
    if spec.proto == 6:
        offset = (20 + len(spec.tcp_options)) // 4
        head = struct.pack("!HHIIBBHHH", spec.sport, spec.dport, spec.seq, spec.ack, offset << 4, spec.flags,
                           4096, 0, 0) + spec.tcp_options
        at = 16
    else:
        head = struct.pack("!HHHH", spec.sport, spec.dport, 8 + len(spec.payload), 0)
        at = 6
    seg = bytearray(head + spec.payload)
    pseudo = pseudo_header(spec.src, spec.dst, spec.proto, len(seg))
    if partial:
        value = fold_sum(pseudo)  # the kernel's CHECKSUM_PARTIAL seed: not complemented, never 0
    elif spec.proto == 17 and not spec.udp_checksum:
        value = 0
    else:
        value = internet_checksum(pseudo + bytes(seg))
        if spec.proto == 17 and value == 0:
            value = 0xFFFF
    seg[at : at + 2] = struct.pack("!H", value)
    return bytes(seg)


def build(spec: Spec, partial: bool = False) -> bytes:
    """The whole packet (plus `spec.padding`), every checksum computed in full."""
    payload = segment(spec, partial)
    if spec.version == 4:
        ihl = 5 + len(spec.ip_options) // 4
        header = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, ihl * 4 + len(payload), spec.ident, 0x4000,
                                       spec.ttl, spec.proto, 0, spec.src, spec.dst) + spec.ip_options)
        header[10:12] = struct.pack("!H", internet_checksum(bytes(header)))
    else:
        header = struct.pack("!IHBB16s16s", 6 << 28, len(payload), spec.proto, spec.ttl, spec.src, spec.dst)
    return bytes(header) + payload + spec.padding


def l4_offset(packet: bytes) -> int:
    return (packet[0] & 0x0F) * 4 if packet[0] >> 4 == 4 else 40


def checksums_verify(packet: bytes) -> bool:
    """True if every checksum of a built packet verifies (a UDP checksum of 0 counts as none)."""
    l4 = l4_offset(packet)
    if packet[0] >> 4 == 4:
        if fold_sum(packet[:l4]) != 0xFFFF:
            return False
        src, dst, proto, end = packet[12:16], packet[16:20], packet[9], packet[2] << 8 | packet[3]
    else:
        src, dst, proto, end = packet[8:24], packet[24:40], packet[6], 40 + (packet[4] << 8 | packet[5])
    seg = packet[l4:end]
    if proto == 17 and seg[6:8] == b"\0\0":
        return True
    return fold_sum(pseudo_header(src, dst, proto, len(seg)) + seg) == 0xFFFF


def _words(n: int):
    return st.integers(0, n).map(lambda k: k * 4).flatmap(lambda size: st.binary(min_size=size, max_size=size))


@st.composite
def specs(draw, version: int | None = None, proto: int | None = None, max_payload: int = 1500) -> Spec:
    version = draw(st.sampled_from((4, 6))) if version is None else version
    proto = draw(st.sampled_from((6, 17))) if proto is None else proto
    width = 4 if version == 4 else 16
    return Spec(
        src=draw(st.binary(min_size=width, max_size=width)),
        dst=draw(st.binary(min_size=width, max_size=width)),
        proto=proto,
        sport=draw(st.integers(0, 0xFFFF)),
        dport=draw(st.integers(0, 0xFFFF)),
        payload=draw(st.binary(max_size=max_payload)),
        ip_options=draw(_words(10)) if version == 4 else b"",
        tcp_options=draw(_words(10)) if proto == 6 else b"",
        seq=draw(st.integers(0, 0xFFFFFFFF)),
        ack=draw(st.integers(0, 0xFFFFFFFF)),
        flags=draw(st.integers(0, 0xFF)),
        udp_checksum=draw(st.booleans()) if proto == 17 else True,
        ident=draw(st.integers(0, 0xFFFF)),
        padding=draw(st.binary(max_size=12)),
    )


def addresses(version: int):
    width = 4 if version == 4 else 16
    return st.binary(min_size=width, max_size=width)
