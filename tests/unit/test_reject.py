"""overlayd.wire.reject: resets and ICMP errors, their rules, sizes and checksums (against packet_model.py)."""

from __future__ import annotations

import dataclasses
import ipaddress
import struct

import pytest
from hypothesis import given

from overlayd.wire.ip import PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN, parse_flow
from overlayd.wire.reject import (
    answerable,
    icmp4_unreachable,
    icmp6_unreachable,
    reject,
    reset_for,
    tcp_reset,
)
from tests.unit.packet_model import Spec, build, checksums_verify, fold_sum, pseudo_header, specs

CLIENT4, VIP4 = ipaddress.ip_address("10.244.2.3").packed, ipaddress.ip_address("10.96.0.10").packed
CLIENT6, VIP6 = ipaddress.ip_address("fd00:10:244:2::3").packed, ipaddress.ip_address("fd00:10:96::a").packed
SYN4 = Spec(src=CLIENT4, dst=VIP4, proto=PROTO_TCP, sport=40000, dport=80, seq=1000, flags=TCP_SYN)
SYN6 = dataclasses.replace(SYN4, src=CLIENT6, dst=VIP6)


def icmp_verifies(packet: bytes) -> bool:
    if packet[0] >> 4 == 4:
        return fold_sum(packet[:20]) == 0xFFFF and fold_sum(packet[20:]) == 0xFFFF
    message = packet[40:]
    return fold_sum(pseudo_header(packet[8:24], packet[24:40], 58, len(message)) + message) == 0xFFFF


@pytest.mark.parametrize("syn", (SYN4, SYN6), ids=("ipv4", "ipv6"))
def test_a_syn_gets_rst_ack_acknowledging_it(syn):
    reply = reset_for(parse_flow(build(syn)))
    assert checksums_verify(reply)
    flow = parse_flow(reply)
    assert (flow.src, flow.sport, flow.dst, flow.dport) == (syn.dst, syn.dport, syn.src, syn.sport)
    assert flow.tcp_flags == TCP_RST | TCP_ACK
    assert (flow.seq, flow.ack, flow.payload_len) == (0, syn.seq + 1, 0)
    assert len(reply) == (40 if syn.version == 4 else 60)
    window = struct.unpack_from("!H", reply, flow.l4_offset + 14)[0]
    assert window == 0


@pytest.mark.parametrize(("flags", "payload", "ack"), [
    (TCP_SYN, b"fast open data", 1000 + 1 + 14),
    (TCP_SYN | TCP_FIN, b"", 1002),
    (TCP_FIN, b"x", 1002),
    (0, b"", 1000),
])
def test_without_ack_the_reset_acknowledges_seq_plus_seg_len(flags, payload, ack):
    reply = parse_flow(reset_for(parse_flow(build(dataclasses.replace(SYN4, flags=flags, payload=payload)))))
    assert (reply.tcp_flags, reply.seq, reply.ack) == (TCP_RST | TCP_ACK, 0, ack)


def test_sequence_numbers_wrap():
    reply = parse_flow(reset_for(parse_flow(build(dataclasses.replace(SYN4, seq=0xFFFFFFFF)))))
    assert reply.ack == 0


@pytest.mark.parametrize("flags", (TCP_ACK, TCP_ACK | 0x08, TCP_ACK | TCP_FIN, TCP_SYN | TCP_ACK))
def test_a_segment_with_ack_gets_a_bare_reset_at_its_ack(flags):
    segment = dataclasses.replace(SYN4, flags=flags, seq=5000, ack=0xDEADBEEF, payload=b"data")
    reply = parse_flow(reset_for(parse_flow(build(segment))))
    assert (reply.tcp_flags, reply.seq, reply.ack) == (TCP_RST, 0xDEADBEEF, 0)


@pytest.mark.parametrize("flags", (TCP_RST, TCP_RST | TCP_ACK))
def test_a_reset_is_never_answered(flags):
    assert reset_for(parse_flow(build(dataclasses.replace(SYN4, flags=flags)))) is None


def test_reset_for_udp_is_a_mistake():
    with pytest.raises(ValueError):
        reset_for(parse_flow(build(dataclasses.replace(SYN4, proto=PROTO_UDP))))


def test_tcp_reset_refuses_mixed_families():
    with pytest.raises(ValueError):
        tcp_reset(VIP4, CLIENT6, 80, 40000, 0)


@given(specs(proto=PROTO_UDP, max_payload=1600))
def test_icmp_errors_quote_as_much_as_allowed(spec):
    offending = build(spec)
    ip_len = len(offending) - len(spec.padding)
    if spec.version == 4:
        reply = icmp4_unreachable(offending, spec.dst, spec.src)
        limit, header, kind = 576, 20, (3, 3)
        assert reply[1] == 0xC0 and reply[9] == 1 and reply[8] == 64
        assert struct.unpack_from("!H", reply, 2)[0] == len(reply)
    else:
        reply = icmp6_unreachable(offending, spec.dst, spec.src)
        limit, header, kind = 1280, 40, (1, 4)
        assert reply[6] == 58 and reply[7] == 64
        assert struct.unpack_from("!H", reply, 4)[0] == len(reply) - 40
    assert icmp_verifies(reply)
    assert tuple(reply[header : header + 2]) == kind
    assert reply[header + 4 : header + 8] == bytes(4)
    quoted = reply[header + 8 :]
    assert quoted == offending[: min(ip_len, limit - header - 8)]  # never the link padding
    assert len(reply) <= limit
    src, dst = (reply[12:16], reply[16:20]) if spec.version == 4 else (reply[8:24], reply[24:40])
    assert (src, dst) == (spec.dst, spec.src)


def test_icmp_errors_at_their_limits():
    big4 = build(Spec(src=CLIENT4, dst=VIP4, proto=PROTO_UDP, sport=1, dport=2, payload=bytes(2000)))
    assert len(icmp4_unreachable(big4, VIP4, CLIENT4)) == 576
    big6 = build(Spec(src=CLIENT6, dst=VIP6, proto=PROTO_UDP, sport=1, dport=2, payload=bytes(2000)))
    assert len(icmp6_unreachable(big6, VIP6, CLIENT6)) == 1280


@pytest.mark.parametrize(("src", "dst", "answered"), [
    ("10.244.2.3", "10.96.0.10", True),
    ("10.244.2.3", "224.0.0.251", False),  # multicast
    ("10.244.2.3", "255.255.255.255", False),  # limited broadcast
    ("10.244.2.3", "240.0.0.1", False),  # class E
    ("0.0.0.0", "10.96.0.10", False),
    ("127.0.0.1", "10.96.0.10", False),
    ("224.0.0.1", "10.96.0.10", False),
    ("fd00:10:244:2::3", "fd00:10:96::a", True),
    ("fd00:10:244:2::3", "ff02::1", False),
    ("::", "fd00:10:96::a", False),
    ("::1", "fd00:10:96::a", False),
    ("ff02::2", "fd00:10:96::a", False),
])
@pytest.mark.parametrize("proto", (PROTO_TCP, PROTO_UDP))
def test_who_gets_an_answer(src, dst, answered, proto):
    spec = Spec(src=ipaddress.ip_address(src).packed, dst=ipaddress.ip_address(dst).packed, proto=proto,
                sport=40000, dport=80, flags=TCP_SYN)
    packet = build(spec)
    flow = parse_flow(packet)
    assert answerable(flow) is answered
    reply = reject(packet, flow)
    if not answered:
        assert reply is None
    elif proto == PROTO_TCP:
        assert reply == reset_for(flow)
    else:
        assert reply == (icmp4_unreachable(packet, flow.dst, flow.src) if flow.version == 4
                         else icmp6_unreachable(packet, flow.dst, flow.src))


@given(specs())
def test_reject_answers_any_flow_correctly(spec):
    packet = build(spec)
    flow = parse_flow(packet)
    reply = reject(packet, flow)
    if reply is None:
        assert not answerable(flow) or flow.tcp_flags & TCP_RST
        return
    if flow.proto == PROTO_TCP:
        assert checksums_verify(reply)
        assert parse_flow(reply).tcp_flags & TCP_RST
    else:
        assert icmp_verifies(reply)
