"""The VXLAN header (RFC 7348 section 5).

    0                   1                   2                   3
    |R|R|R|R|I|R|R|R|            Reserved                           |
    |                VXLAN Network Identifier (VNI) |   Reserved    |

The RFC says reserved bits are ignored on receipt. overlayd, like the Linux
kernel's VXLAN driver, drops them instead: extensions (GBP, GPE) reuse those
bits, and a frame that carries one means something this node does not do.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from overlayd.wire.errors import DecodeError

VXLAN_HEADER_LEN = 8
VXLAN_PORT = 4789
FLAG_I = 0x08
VNI_MAX = (1 << 24) - 1

_WORDS = struct.Struct("!II")


class VxlanError(DecodeError):
    """A VXLAN header that must be dropped; `counter` names the drop reason."""

    def __init__(self, reason: str, counter: str):
        super().__init__("vxlan", reason)
        self.counter = counter


def encode_header(vni: int) -> bytes:
    """The 8 bytes that precede an inner frame on VNI `vni`."""
    if not 0 <= vni <= VNI_MAX:
        raise ValueError(f"VNI {vni} does not fit in 24 bits")
    return _WORDS.pack(FLAG_I << 24, vni << 8)


def decode_header(data: bytes | memoryview) -> int:
    """Check the header at the start of `data` and return its VNI.

    Raises VxlanError naming the drop counter: `rx_drop_runt`,
    `rx_drop_i_flag_clear` or `rx_drop_reserved_bits`.
    """
    if len(data) < VXLAN_HEADER_LEN:
        raise VxlanError(f"datagram of {len(data)} bytes is shorter than a header", "rx_drop_runt")
    w0, w1 = _WORDS.unpack_from(data)
    if not w0 & (FLAG_I << 24):
        raise VxlanError("I flag is clear", "rx_drop_i_flag_clear")
    if w0 & ~(FLAG_I << 24) or w1 & 0xFF:
        raise VxlanError(f"reserved bits set ({w0:#010x} {w1 & 0xFF:#04x})", "rx_drop_reserved_bits")
    return w1 >> 8


@dataclass(frozen=True, slots=True)
class VxlanHeader:
    """A decoded VXLAN header, for tests and tools; the hot path uses the functions."""

    vni: int

    def encode(self) -> bytes:
        return encode_header(self.vni)

    @classmethod
    def decode(cls, data: bytes | memoryview) -> VxlanHeader:
        return cls(decode_header(data))
