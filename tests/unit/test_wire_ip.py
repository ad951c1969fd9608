"""overlayd.wire.ip: parse_flow's three outcomes, and the checksum helpers, against packet_model.py."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlayd.wire.errors import DecodeError
from overlayd.wire.ip import (
    PROTO_TCP,
    PROTO_UDP,
    TCP_FIN,
    TCP_SYN,
    Flow,
    checksum,
    ones_sum,
    parse_flow,
    pseudo_header_sum,
    udp_checksum,
)
from tests.unit.packet_model import Spec, build, fold_sum, internet_checksum, pseudo_header, specs

V4 = Spec(src=bytes([10, 244, 2, 3]), dst=bytes([10, 96, 0, 10]), proto=PROTO_TCP, sport=40000, dport=80,
          payload=b"hello", seq=7, ack=9, flags=0x18)
V6 = dataclasses.replace(V4, src=bytes(15) + b"\x03", dst=b"\xfd" + bytes(14) + b"\x0a")


@given(specs())
def test_a_built_packet_reads_back(spec):
    packet = build(spec)
    flow = parse_flow(packet)
    ip_header = 20 + len(spec.ip_options) if spec.version == 4 else 40
    l4_header = 20 + len(spec.tcp_options) if spec.proto == PROTO_TCP else 8
    assert flow == Flow(
        version=spec.version, proto=spec.proto, src=spec.src, dst=spec.dst, sport=spec.sport, dport=spec.dport,
        l4_offset=ip_header, payload_offset=ip_header + l4_header, payload_len=len(spec.payload),
        ip_len=len(packet) - len(spec.padding),
        tcp_flags=spec.flags if spec.proto == PROTO_TCP else 0,
        seq=spec.seq if spec.proto == PROTO_TCP else 0, ack=spec.ack if spec.proto == PROTO_TCP else 0,
    )
    assert type(flow.src) is bytes and type(flow.dst) is bytes
    assert parse_flow(bytearray(packet)) == flow == parse_flow(memoryview(packet))
    assert flow.checksum_offset == ip_header + (16 if spec.proto == PROTO_TCP else 6)


@given(st.binary(max_size=120))
def test_any_bytes_give_a_flow_none_or_decode_error(data):
    try:
        parse_flow(data)
    except DecodeError:
        pass


@given(specs(max_payload=40), st.data())
def test_damaged_packets_give_a_flow_none_or_decode_error(spec, data):
    packet = bytearray(build(spec))
    for _ in range(data.draw(st.integers(1, 4))):
        packet[data.draw(st.integers(0, len(packet) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(packet)))
    try:
        parse_flow(packet[:cut])
    except DecodeError:
        pass


@given(specs(max_payload=40), st.data())
def test_a_truncated_packet_is_a_decode_error(spec, data):
    packet = build(dataclasses.replace(spec, padding=b""))
    cut = data.draw(st.integers(0, len(packet) - 1))
    with pytest.raises(DecodeError):
        parse_flow(packet[:cut])


def test_fragments_are_not_flows():
    packet = bytearray(build(V4))
    for flags_offset in (0x2000, 0x0001, 0x2001, 0x1FFF):  # MF (a first fragment too), offsets
        packet[6:8] = struct.pack("!H", flags_offset)
        assert parse_flow(packet) is None
    packet[6:8] = b"\x40\x00"  # DF alone is no fragment
    assert parse_flow(packet) is not None


@pytest.mark.parametrize("next_header", (0, 43, 44, 50, 51, 58, 59, 60, 135, 132))
def test_ipv6_extension_headers_and_other_protocols_are_not_walked(next_header):
    packet = bytearray(build(V6))
    packet[6] = next_header
    assert parse_flow(packet) is None


@pytest.mark.parametrize("proto", (1, 2, 47, 50, 132))
def test_other_ipv4_protocols_are_not_flows(proto):
    packet = bytearray(build(V4))
    packet[9] = proto
    assert parse_flow(packet) is None


def _broken(spec: Spec, at: int, value: bytes) -> bytes:
    packet = bytearray(build(spec))
    packet[at : at + len(value)] = value
    return bytes(packet)


@pytest.mark.parametrize(
    ("packet", "layer", "reason"),
    [
        (b"", "ip", "empty"),
        (b"\x45" + bytes(10), "ipv4", "shorter than a header"),
        (b"\x60" + bytes(30), "ipv6", "shorter than a header"),
        (_broken(V4, 0, b"\x55"), "ip", "version 5"),
        (_broken(V4, 0, b"\x44"), "ipv4", "header length 16"),
        (_broken(V4, 2, b"\x00\x10"), "ipv4", "total length 16"),
        (_broken(V4, 2, b"\x00\x00"), "ipv4", "total length 0"),  # BIG TCP: not handled
        (_broken(V4, 2, b"\x05\xdc"), "ipv4", "runs past"),
        (_broken(V6, 4, b"\x05\xdc"), "ipv6", "runs past"),
        (_broken(V4, 2, b"\x00\x20"), "tcp", "header at byte 20"),
        (_broken(V4, 32, b"\x40"), "tcp", "data offset 4"),
        (_broken(V4, 32, b"\xf0"), "tcp", "runs past"),
        (_broken(dataclasses.replace(V4, proto=PROTO_UDP), 24, b"\x00\x07"), "udp", "length 7"),
        (_broken(dataclasses.replace(V4, proto=PROTO_UDP), 24, b"\x00\x20"), "udp", "length 32"),
        (_broken(dataclasses.replace(V6, proto=PROTO_UDP), 4, b"\x00\x04"), "udp", "header at byte 40"),
    ],
)
def test_malformed_packets(packet, layer, reason):
    with pytest.raises(DecodeError) as err:
        parse_flow(packet)
    assert err.value.layer == layer
    assert reason in err.value.reason


def test_udp_shorter_than_its_ip_length_counts_its_own_length():
    packet = bytearray(build(dataclasses.replace(V4, proto=PROTO_UDP, payload=b"abcdef")))
    packet[24:26] = struct.pack("!H", 10)  # the UDP length says 2 payload bytes of the 6
    assert parse_flow(packet).payload_len == 2


@pytest.mark.parametrize(("flags", "payload", "seg_len"), [
    (TCP_SYN, b"", 1), (TCP_SYN, b"fast open", 10), (TCP_SYN | TCP_FIN, b"", 2),
    (0x10, b"", 0), (0x11, b"abc", 4), (0x18, b"abc", 3),
])
def test_seg_len_counts_syn_and_fin(flags, payload, seg_len):
    assert parse_flow(build(dataclasses.replace(V4, flags=flags, payload=payload))).seg_len == seg_len


@given(st.binary(max_size=300))
def test_ones_sum_is_rfc_1071_mod_ffff(data):
    assert ones_sum(data) == fold_sum(data) % 0xFFFF
    assert ones_sum(memoryview(data)) == ones_sum(bytearray(data)) == ones_sum(data)


@given(st.binary(min_size=2, max_size=300).filter(any))
def test_checksum_is_what_a_full_computation_gives(data):
    assert checksum(ones_sum(data)) == internet_checksum(data)
    full = internet_checksum(data)
    assert udp_checksum(ones_sum(data)) == (full or 0xFFFF)


@given(st.sampled_from((4, 16)).flatmap(lambda n: st.tuples(st.binary(min_size=n, max_size=n),
                                                            st.binary(min_size=n, max_size=n))),
       st.sampled_from((6, 17, 58)), st.integers(0, 0xFFFF))
def test_pseudo_header_sum(addresses, proto, length):
    src, dst = addresses
    assert pseudo_header_sum(src, dst, proto, length) == fold_sum(pseudo_header(src, dst, proto, length)) % 0xFFFF
