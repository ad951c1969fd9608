"""overlayd.wire.nat's incremental rewrites against the naive model's full recomputation (packet_model.py)."""

from __future__ import annotations

import dataclasses
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlayd.wire.ip import parse_flow
from overlayd.wire.nat import rewrite_dst, rewrite_src
from tests.unit.packet_model import Spec, addresses, build, checksums_verify, fold_sum, l4_offset, specs

ports = st.integers(0, 0xFFFF)


@st.composite
def translations(draw, max_steps: int = 8):
    """A packet and a sequence of rewrites of it: (which end, new address, new port)."""
    spec = draw(specs())
    steps = draw(st.lists(st.tuples(st.sampled_from(("src", "dst")), addresses(spec.version), ports),
                          min_size=1, max_size=max_steps))
    return spec, steps


def apply(spec: Spec, side: str, addr: bytes, port: int) -> Spec:
    """What the packet's fields are after one rewrite: the model's side of it."""
    if side == "dst":
        return dataclasses.replace(spec, dst=addr, dport=port)
    return dataclasses.replace(spec, src=addr, sport=port)


def rewrite(packet, flow, side: str, addr: bytes, port: int, partial: bool = False) -> None:
    (rewrite_dst if side == "dst" else rewrite_src)(packet, flow, addr, port, partial=partial)


@pytest.mark.parametrize("side", ("dst", "src"))
@given(spec=specs(), data=st.data())
def test_a_rewrite_equals_a_full_recomputation(side, spec, data):
    addr, port = data.draw(addresses(spec.version)), data.draw(ports)
    packet = bytearray(build(spec))
    rewrite(packet, parse_flow(packet), side, addr, port)
    assert bytes(packet) == build(apply(spec, side, addr, port))


@given(translations())
def test_rewrites_in_sequence_and_back(case):
    spec, steps = case
    original = build(spec)
    packet = bytearray(original)
    flow = parse_flow(packet)  # offsets only: still right after each rewrite
    undo = []
    for side, addr, port in steps:
        before = parse_flow(packet)
        undo.append((side, before.dst, before.dport) if side == "dst" else (side, before.src, before.sport))
        rewrite(packet, flow, side, addr, port)
        spec = apply(spec, side, addr, port)
        assert bytes(packet) == build(spec)
    for side, addr, port in reversed(undo):
        rewrite(packet, flow, side, addr, port)
    assert bytes(packet) == original


@given(specs(), st.data())
def test_dnat_then_its_reverse_gives_the_original_bytes(spec, data):
    """The service path's round trip: client -> VIP becomes client -> backend, and back."""
    addr, port = data.draw(addresses(spec.version)), data.draw(ports)
    original = build(spec)
    packet = bytearray(original)
    flow = parse_flow(packet)
    rewrite_dst(packet, flow, addr, port)
    rewrite_dst(packet, flow, spec.dst, spec.dport)
    assert packet == original


@given(specs(), st.data())
def test_in_a_memoryview_of_a_larger_buffer(spec, data):
    """The receive buffer itself: a memoryview slice, bytes around it untouched."""
    addr, port = data.draw(addresses(spec.version)), data.draw(ports)
    packet = build(spec)
    buf = bytearray(b"\xaa" * 10 + packet + b"\xbb" * 10)
    view = memoryview(buf)[10 : 10 + len(packet)]
    rewrite_dst(view, parse_flow(view), addr, port)
    assert buf == b"\xaa" * 10 + build(apply(spec, "dst", addr, port)) + b"\xbb" * 10


@given(translations(max_steps=4))
def test_partial_checksums(case):
    """CHECKSUM_PARTIAL: the field holds the pseudo-header sum; only the addresses change it, not complemented."""
    spec, steps = case
    packet = bytearray(build(spec, partial=True))
    flow = parse_flow(packet)
    for side, addr, port in steps:
        rewrite(packet, flow, side, addr, port, partial=True)
        spec = apply(spec, side, addr, port)
        assert bytes(packet) == build(spec, partial=True)


@given(specs(), st.data())
def test_a_partial_checksum_completed_is_the_full_checksum(spec, data):
    """Completing the rewritten partial checksum (sum the segment onto it, complement) gives a valid packet."""
    spec = dataclasses.replace(spec, udp_checksum=True)
    addr, port = data.draw(addresses(spec.version)), data.draw(ports)
    packet = bytearray(build(spec, partial=True))
    rewrite_dst(packet, parse_flow(packet), addr, port, partial=True)
    flow = parse_flow(packet)
    at = flow.checksum_offset
    value = ~fold_sum(bytes(packet[flow.l4_offset : flow.ip_len])) & 0xFFFF  # what the NIC or kernel does
    if spec.proto == 17 and value == 0:
        value = 0xFFFF
    packet[at : at + 2] = struct.pack("!H", value)
    assert bytes(packet) == build(apply(spec, "dst", addr, port))


def test_partial_checksum_is_never_written_as_zero():
    """A pseudo-header sum that works out to zero is written 0xffff, as the kernel writes it."""
    spec = Spec(src=bytes(4), dst=bytes(4), proto=6, sport=1, dport=2)
    packet = bytearray(build(spec, partial=True))
    flow = parse_flow(packet)
    seed = packet[flow.checksum_offset] << 8 | packet[flow.checksum_offset + 1]
    target = (-seed) % 0xFFFF or 0xFFFF  # a destination address that makes the pseudo-header sum 0 mod 0xffff
    rewrite_dst(packet, flow, target.to_bytes(4, "big"), 2, partial=True)
    assert packet[flow.checksum_offset : flow.checksum_offset + 2] == b"\xff\xff"


@given(specs(version=4, proto=17), st.data())
def test_udp_without_checksum_keeps_none(spec, data):
    spec = dataclasses.replace(spec, udp_checksum=False)
    addr, port = data.draw(addresses(4)), data.draw(ports)
    packet = bytearray(build(spec))
    rewrite_dst(packet, parse_flow(packet), addr, port)
    assert packet[l4_offset(packet) + 6 : l4_offset(packet) + 8] == b"\0\0"
    assert bytes(packet) == build(apply(spec, "dst", addr, port))


def _zero_sum_spec(spec: Spec) -> Spec:
    """`spec` with the first two payload bytes chosen so that its TCP checksum comes out 0x0000."""
    spec = dataclasses.replace(spec, payload=b"\0\0" + spec.payload)
    packet = build(spec)
    l4 = l4_offset(packet)
    checksum = packet[l4 + 16] << 8 | packet[l4 + 17]
    # adding w to the sum lowers the checksum by w (mod 0xffff)
    return dataclasses.replace(spec, payload=struct.pack("!H", checksum % 0xFFFF) + spec.payload[2:])


@given(specs(proto=6), st.data())
def test_a_checksum_in_the_other_form_of_zero_stays_valid(spec, data):
    """0xffff in a TCP checksum field is zero too (a sender may write it): the rewrite stays correct."""
    spec = _zero_sum_spec(spec)
    packet = bytearray(build(spec))
    l4 = l4_offset(packet)
    assert packet[l4 + 16 : l4 + 18] == b"\0\0"
    packet[l4 + 16 : l4 + 18] = b"\xff\xff"
    assert checksums_verify(bytes(packet))
    addr, port = data.draw(addresses(spec.version)), data.draw(ports)
    rewrite_dst(packet, parse_flow(packet), addr, port)
    assert checksums_verify(bytes(packet))
    expected = build(apply(spec, "dst", addr, port))
    assert packet[: l4 + 16] == expected[: l4 + 16] and packet[l4 + 18 :] == expected[l4 + 18 :]


@given(specs(), st.data(), st.integers(1, 0xFFFE))
def test_a_wrong_checksum_stays_wrong_by_as_much(spec, data, error):
    """Nothing is verified, nothing is hidden: the receiver still sees the corruption (RFC 1624 5)."""
    if spec.proto == 17:
        spec = dataclasses.replace(spec, udp_checksum=True)
    addr, port = data.draw(addresses(spec.version)), data.draw(ports)
    packet = bytearray(build(spec))
    flow = parse_flow(packet)
    at = flow.checksum_offset
    wrong = ((packet[at] << 8 | packet[at + 1]) + error) % 0xFFFF or 0xFFFF
    packet[at : at + 2] = struct.pack("!H", wrong)
    rewrite_dst(packet, flow, addr, port)
    expected = build(apply(spec, "dst", addr, port))
    got = packet[at] << 8 | packet[at + 1]
    assert (got - (expected[at] << 8 | expected[at + 1])) % 0xFFFF == error % 0xFFFF
    assert not checksums_verify(bytes(packet))


def test_udp_checksum_that_becomes_zero_is_sent_as_ffff():
    spec = Spec(src=bytes([10, 244, 2, 3]), dst=bytes([10, 96, 0, 10]), proto=17, sport=5000, dport=53, payload=b"xy")
    packet = bytearray(build(spec))
    flow = parse_flow(packet)
    # pick the new port so that the full checksum of the result is zero
    for port in range(0x10000):
        if internet_zero(apply(spec, "dst", spec.dst, port)):
            break
    rewrite_dst(packet, flow, spec.dst, port)
    assert packet[flow.checksum_offset : flow.checksum_offset + 2] == b"\xff\xff"
    assert bytes(packet) == build(apply(spec, "dst", spec.dst, port))


def internet_zero(spec: Spec) -> bool:
    """True if the UDP checksum of `spec` computes to 0 (and so is sent as 0xffff)."""
    packet = build(spec)
    l4 = l4_offset(packet)
    return packet[l4 + 6 : l4 + 8] == b"\xff\xff"


@pytest.mark.parametrize("version", (4, 6))
def test_bad_arguments_are_refused_before_anything_changes(version):
    width = 4 if version == 4 else 16
    spec = Spec(src=bytes(range(1, width + 1)), dst=bytes(range(2, width + 2)), proto=6, sport=1, dport=2)
    packet = bytearray(build(spec))
    flow = parse_flow(packet)
    for function in (rewrite_dst, rewrite_src):
        with pytest.raises(ValueError, match="address"):
            function(packet, flow, bytes(20 - width), 80)
        with pytest.raises(ValueError, match="port"):
            function(packet, flow, bytes(width), 65536)
        with pytest.raises(ValueError, match="port"):
            function(packet, flow, bytes(width), -1)
    assert bytes(packet) == build(spec)
