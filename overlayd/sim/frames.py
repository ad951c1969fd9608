"""Frames for the simulators and tests: host MACs, Ethernet, ARP requests and replies.

    mac(1)                                      02:00:00:00:00:01
    arp_request(mac(1), "10.0.0.1", "10.0.0.2") a broadcast who-has
    parse_arp(frame)                            the ArpPacket in a frame, or None
"""

from __future__ import annotations

import ipaddress

from overlayd.wire.arp import OP_REPLY, OP_REQUEST, ArpPacket
from overlayd.wire.errors import DecodeError
from overlayd.wire.ethernet import BROADCAST, ETHERTYPE_ARP, ZERO_MAC, EthernetHeader, payload as eth_payload

IPv4 = ipaddress.IPv4Address | str


def mac(n: int) -> bytes:
    """Host MAC number `n`: locally administered unicast, 02:00:nn:nn:nn:nn."""
    return b"\x02\x00" + n.to_bytes(4, "big")


def ethernet(dst: bytes, src: bytes, ethertype: int, payload: bytes = b"") -> bytes:
    return EthernetHeader(dst, src, ethertype).encode() + bytes(payload)


def arp_request(src_mac: bytes, src_ip: IPv4, target_ip: IPv4) -> bytes:
    """A broadcast "who has `target_ip`? tell `src_ip`"."""
    arp = ArpPacket(OP_REQUEST, src_mac, ipv4(src_ip), ZERO_MAC, ipv4(target_ip))
    return ethernet(BROADCAST, src_mac, ETHERTYPE_ARP, arp.encode())


def arp_reply(src_mac: bytes, src_ip: IPv4, dst_mac: bytes, dst_ip: IPv4) -> bytes:
    """A unicast "`src_ip` is at `src_mac`" to the asker."""
    arp = ArpPacket(OP_REPLY, src_mac, ipv4(src_ip), dst_mac, ipv4(dst_ip))
    return ethernet(dst_mac, src_mac, ETHERTYPE_ARP, arp.encode())


def parse_arp(frame: bytes | memoryview) -> ArpPacket | None:
    """The ARP packet in a frame (untagged or with one VLAN tag), or None if it is not one."""
    try:
        if EthernetHeader.decode(frame).ethertype == ETHERTYPE_ARP:
            return ArpPacket.decode(eth_payload(frame))
    except DecodeError:
        pass
    return None


def ipv4(ip: IPv4) -> ipaddress.IPv4Address:
    return ipaddress.IPv4Address(ip)
