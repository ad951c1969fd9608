"""Ethernet II framing and MAC addresses.

A MAC travels through overlayd as the 6 raw bytes of the frame (hashable,
cheap to slice); `mac_str` / `parse_mac` convert for people and config.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from overlayd.wire.errors import DecodeError

ETH_HEADER_LEN = 14
VLAN_TAG_LEN = 4

ETHERTYPE_IPV4 = 0x0800
ETHERTYPE_ARP = 0x0806
ETHERTYPE_VLAN = 0x8100
ETHERTYPE_QINQ = 0x88A8
ETHERTYPE_IPV6 = 0x86DD

BROADCAST = b"\xff" * 6
ZERO_MAC = b"\x00" * 6

_HEADER = struct.Struct("!6s6sH")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def is_multicast(mac: bytes) -> bool:
    """True for group addresses (broadcast included): the I/G bit is set."""
    return bool(mac[0] & 1)


def mac_str(mac: bytes) -> str:
    """`b'\\x02\\x00...'` -> `'02:00:00:00:00:01'`."""
    return mac.hex(":")


def parse_mac(text: str) -> bytes:
    """`'02:00:00:00:00:01'` (or with '-') -> 6 raw bytes; ValueError if not a MAC."""
    parts = text.replace("-", ":").split(":")
    if len(parts) != 6 or not all(len(p) == 2 and set(p) <= _HEX_DIGITS for p in parts):
        raise ValueError(f"not a MAC address: {text!r}")
    try:
        return bytes(int(p, 16) for p in parts)
    except ValueError:
        raise ValueError(f"not a MAC address: {text!r}") from None


@dataclass(frozen=True, slots=True)
class EthernetHeader:
    """The outer 14 bytes of an Ethernet II frame, plus an 802.1Q tag if present."""

    dst: bytes
    src: bytes
    ethertype: int
    vlan: int | None = None  # VLAN ID of a single 802.1Q tag

    @property
    def length(self) -> int:
        return ETH_HEADER_LEN + (VLAN_TAG_LEN if self.vlan is not None else 0)

    def encode(self) -> bytes:
        if self.vlan is None:
            return _HEADER.pack(self.dst, self.src, self.ethertype)
        return (
            _HEADER.pack(self.dst, self.src, ETHERTYPE_VLAN)
            + struct.pack("!HH", self.vlan & 0x0FFF, self.ethertype)
        )

    @classmethod
    def decode(cls, frame: bytes | memoryview) -> EthernetHeader:
        if len(frame) < ETH_HEADER_LEN:
            raise DecodeError("ethernet", f"frame of {len(frame)} bytes is shorter than a header")
        dst, src, ethertype = _HEADER.unpack_from(frame)
        if ethertype != ETHERTYPE_VLAN:
            return cls(bytes(dst), bytes(src), ethertype)
        if len(frame) < ETH_HEADER_LEN + VLAN_TAG_LEN:
            raise DecodeError("ethernet", "802.1Q tag is truncated")
        tci, inner = struct.unpack_from("!HH", frame, ETH_HEADER_LEN)
        return cls(bytes(dst), bytes(src), inner, tci & 0x0FFF)


def payload(frame: bytes | memoryview) -> memoryview:
    """The bytes after the Ethernet header (and a single VLAN tag)."""
    return memoryview(frame)[EthernetHeader.decode(frame).length :]
