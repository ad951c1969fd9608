"""ARP for IPv4 over Ethernet (RFC 826): the 28-byte packet after the Ethernet header."""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from overlayd.wire.errors import DecodeError
from overlayd.wire.ethernet import BROADCAST, ETHERTYPE_ARP, ZERO_MAC, EthernetHeader

ARP_LEN = 28
HTYPE_ETHERNET = 1
PTYPE_IPV4 = 0x0800
OP_REQUEST = 1
OP_REPLY = 2

_ARP = struct.Struct("!HHBBH6s4s6s4s")


@dataclass(frozen=True, slots=True)
class ArpPacket:
    """An Ethernet/IPv4 ARP request or reply."""

    op: int  # OP_REQUEST or OP_REPLY
    sender_mac: bytes
    sender_ip: ipaddress.IPv4Address
    target_mac: bytes
    target_ip: ipaddress.IPv4Address

    @property
    def is_gratuitous(self) -> bool:
        """Sender announces its own binding (sender IP == target IP)."""
        return self.sender_ip == self.target_ip

    def encode(self) -> bytes:
        return _ARP.pack(
            HTYPE_ETHERNET, PTYPE_IPV4, 6, 4, self.op,
            self.sender_mac, self.sender_ip.packed, self.target_mac, self.target_ip.packed,
        )

    @classmethod
    def decode(cls, data: bytes | memoryview) -> ArpPacket:
        if len(data) < ARP_LEN:
            raise DecodeError("arp", f"packet of {len(data)} bytes is shorter than {ARP_LEN}")
        htype, ptype, hlen, plen, op, smac, sip, tmac, tip = _ARP.unpack_from(data)
        if htype != HTYPE_ETHERNET or hlen != 6:
            raise DecodeError("arp", f"hardware type {htype}/length {hlen} is not Ethernet")
        if ptype != PTYPE_IPV4 or plen != 4:
            raise DecodeError("arp", f"protocol type {ptype:#06x}/length {plen} is not IPv4")
        if op not in (OP_REQUEST, OP_REPLY):
            raise DecodeError("arp", f"operation {op} is neither request nor reply")
        return cls(
            op, bytes(smac), ipaddress.IPv4Address(sip), bytes(tmac), ipaddress.IPv4Address(tip)
        )


def reply_frame(request: ArpPacket, mac: bytes) -> bytes:
    """The Ethernet frame answering `request` on its target's behalf: target IP is at `mac`.

    What the target itself would send (and what the Linux bridge sends when it
    suppresses ARP): a reply from `mac` to the asker's sender MAC, 42 bytes
    without padding (a real link pads it to 60; a TAP does not need it).
    """
    reply = ArpPacket(OP_REPLY, mac, request.target_ip, request.sender_mac, request.sender_ip)
    return EthernetHeader(request.sender_mac, mac, ETHERTYPE_ARP).encode() + reply.encode()


def gratuitous_frame(mac: bytes, ip: ipaddress.IPv4Address) -> bytes:
    """A gratuitous ARP request (RFC 5227 3): `ip` is at `mac`, broadcast, as Linux's arp_notify sends it."""
    arp = ArpPacket(OP_REQUEST, mac, ip, ZERO_MAC, ip)
    return EthernetHeader(BROADCAST, mac, ETHERTYPE_ARP).encode() + arp.encode()
