"""Entropy for the outer UDP source port (RFC 7348 section 5).

The source port is "a hash of fields from the inner packet", so that ECMP
routers in the underlay spread different flows over different paths while
one flow keeps its order. We hash the inner Ethernet addresses, and for
IPv4/IPv6 the addresses, protocol and (unfragmented TCP/UDP/SCTP) ports.
"""

from __future__ import annotations

from zlib import crc32

_L4_WITH_PORTS = frozenset((6, 17, 132))


def flow_hash(frame: bytes | memoryview) -> int:
    """A 32-bit hash of the inner flow of an Ethernet frame (at least 14 bytes)."""
    h = crc32(frame[0:12])
    et = frame[12] << 8 | frame[13]
    if et == 0x0800 and len(frame) >= 34:
        h = crc32(frame[23:24], h)
        h = crc32(frame[26:34], h)
        ihl = (frame[14] & 0x0F) * 4
        unfragmented = not (frame[20] & 0x3F or frame[21])  # MF clear, offset 0
        if frame[23] in _L4_WITH_PORTS and unfragmented and len(frame) >= 14 + ihl + 4:
            h = crc32(frame[14 + ihl : 18 + ihl], h)
    elif et == 0x86DD and len(frame) >= 54:
        h = crc32(frame[20:21], h)
        h = crc32(frame[22:54], h)
        if frame[20] in _L4_WITH_PORTS and len(frame) >= 58:
            h = crc32(frame[54:58], h)
    return h
