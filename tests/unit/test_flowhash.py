"""The inner flow hash that picks the outer UDP source port (RFC 7348 section 5)."""

from __future__ import annotations

import ipaddress
import struct

from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.dataplane.flowhash import flow_hash

DST, SRC = bytes.fromhex("020000000102"), bytes.fromhex("020000000101")
FAST = settings(max_examples=200, deadline=None)


def ipv4_frame(sport=40000, dport=80, proto=6, *, src="192.168.100.1", dst="192.168.100.2",
               ttl=64, ident=1, frag=0x4000, options=b"", body=b"payload") -> bytes:
    ihl = 5 + len(options) // 4
    l4 = struct.pack("!HH", sport, dport) + body
    ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl, 0, 4 * ihl + len(l4), ident, frag, ttl, proto, 0,
                     ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return DST + SRC + b"\x08\x00" + ip + options + l4


def ipv6_frame(sport=40000, dport=80, nh=17, *, src="fd00::1", dst="fd00::2", hop=64, label=0,
               body=b"payload") -> bytes:
    l4 = struct.pack("!HH", sport, dport) + body
    ip = struct.pack("!IHBB16s16s", 6 << 28 | label, len(l4), nh, hop,
                     ipaddress.IPv6Address(src).packed, ipaddress.IPv6Address(dst).packed)
    return DST + SRC + b"\x86\xdd" + ip + l4


@given(st.binary(min_size=14, max_size=80))
@FAST
def test_any_frame_hashes_to_32_bits_and_the_same_every_time(frame):
    h = flow_hash(frame)
    assert 0 <= h < 2**32
    assert flow_hash(memoryview(frame)) == h == flow_hash(bytes(frame))


@given(st.integers(1, 255), st.integers(0, 0xFFFF), st.binary(max_size=40))
@FAST
def test_one_ipv4_flow_keeps_its_hash(ttl, ident, body):
    """TTL, IP ID and payload change from packet to packet; the flow's hash must not."""
    assert flow_hash(ipv4_frame(ttl=ttl, ident=ident, body=body)) == flow_hash(ipv4_frame())


@given(st.integers(0, 255), st.integers(0, 0xFFFFF), st.binary(max_size=40))
@FAST
def test_one_ipv6_flow_keeps_its_hash(hop, label, body):
    assert flow_hash(ipv6_frame(hop=hop, label=label, body=body)) == flow_hash(ipv6_frame())


def test_different_ports_give_different_hashes():
    # CRC-32 detects every difference confined to 32 bits, so distinct ports never collide here
    for proto in (6, 17, 132):
        hashes = {flow_hash(ipv4_frame(sport=p, proto=proto)) for p in range(40000, 40256)}
        assert len(hashes) == 256
        hashes = {flow_hash(ipv4_frame(dport=p, proto=proto)) for p in range(1, 257)}
        assert len(hashes) == 256
    assert len({flow_hash(ipv6_frame(sport=p)) for p in range(40000, 40256)}) == 256


def test_addresses_protocol_and_macs_are_part_of_the_flow():
    base = flow_hash(ipv4_frame())
    assert flow_hash(ipv4_frame(src="192.168.100.3")) != base
    assert flow_hash(ipv4_frame(dst="192.168.100.3")) != base
    assert flow_hash(ipv4_frame(proto=17)) != base
    assert flow_hash(bytes.fromhex("020000000199") + ipv4_frame()[6:]) != base
    assert flow_hash(ipv6_frame(src="fd00::3")) != flow_hash(ipv6_frame())


def test_ports_are_ignored_where_they_are_not_ports():
    # fragments: only the first carries the ports, so no fragment may use them
    for frag in (0x2000, 0x0001, 0x20B9):  # MF set; offset 8 bytes; MF and an offset
        assert flow_hash(ipv4_frame(sport=1, frag=frag)) == flow_hash(ipv4_frame(sport=2, frag=frag))
    assert flow_hash(ipv4_frame(sport=1, frag=0x2000)) != flow_hash(ipv4_frame(sport=2, frag=0x4000))
    # ICMP has no ports
    assert flow_hash(ipv4_frame(sport=1, proto=1)) == flow_hash(ipv4_frame(sport=2, proto=1))
    assert flow_hash(ipv6_frame(sport=1, nh=58)) == flow_hash(ipv6_frame(sport=2, nh=58))


def test_ipv4_options_move_the_ports():
    options = b"\x01\x01\x01\x00"  # NOP NOP NOP EOL: IHL 6
    assert flow_hash(ipv4_frame(sport=1, options=options)) != flow_hash(ipv4_frame(sport=2, options=options))


def test_non_ip_frames_hash_by_mac_addresses():
    arp = DST + SRC + b"\x08\x06" + bytes(28)
    assert flow_hash(arp) == flow_hash(arp[:14] + b"\xff" * 28)
    tagged = DST + SRC + b"\x81\x00\x00\x64" + ipv4_frame()[12:]
    assert flow_hash(tagged) == flow_hash(DST + SRC + b"\x81\x00" + bytes(40))


def test_truncated_ip_headers_do_not_raise():
    for cut in range(14, 60):
        assert isinstance(flow_hash(ipv4_frame()[:cut]), int)
        assert isinstance(flow_hash(ipv6_frame()[:cut]), int)
