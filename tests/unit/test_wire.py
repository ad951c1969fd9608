"""The wire codecs beyond the golden vectors: round trips and random bytes.

Every decoder must either return a value or raise DecodeError, whatever it is fed.
"""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.wire.arp import OP_REPLY, OP_REQUEST, ArpPacket
from overlayd.wire.errors import DecodeError
from overlayd.wire.ethernet import (
    BROADCAST,
    ETHERTYPE_VLAN,
    EthernetHeader,
    is_multicast,
    mac_str,
    parse_mac,
    payload,
)
from overlayd.wire.vxlan import VNI_MAX, VxlanError, decode_header, encode_header

macs = st.binary(min_size=6, max_size=6)
ipv4s = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
FAST = settings(max_examples=200, deadline=None)


# -- MAC addresses ------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, raw",
    [
        ("02:00:00:00:00:01", b"\x02\x00\x00\x00\x00\x01"),
        ("02-00-00-00-00-01", b"\x02\x00\x00\x00\x00\x01"),
        ("FF:ff:Ff:fF:ff:FF", BROADCAST),
        ("00:00:00:00:00:00", b"\x00" * 6),
    ],
)
def test_parse_mac(text, raw):
    assert parse_mac(text) == raw


@pytest.mark.parametrize(
    "text", ["", "02:00:00:00:00", "02:00:00:00:00:01:02", "2:00:00:00:00:01", "002:00:00:00:00:01",
             "0g:00:00:00:00:01", "02.00.00.00.00.01", "020000000001", " 2:00:00:00:00:01",
             "+2:+0:00:00:00:01", "2 :00:00:00:00:01", "0x:00:00:00:00:01"],
)
def test_parse_mac_refuses(text):
    with pytest.raises(ValueError, match="not a MAC address"):
        parse_mac(text)


@given(macs)
@FAST
def test_mac_text_round_trip(mac):
    text = mac_str(mac)
    assert len(text) == 17 and text == text.lower()
    assert parse_mac(text) == mac
    assert parse_mac(text.upper().replace(":", "-")) == mac


@pytest.mark.parametrize(
    "mac, group",
    [("ff:ff:ff:ff:ff:ff", True), ("01:00:5e:00:00:01", True), ("33:33:00:00:00:01", True),
     ("02:00:00:00:00:01", False), ("00:00:00:00:00:00", False), ("fe:ff:ff:ff:ff:ff", False)],
)
def test_is_multicast_is_the_ig_bit(mac, group):
    assert is_multicast(parse_mac(mac)) is group


# -- Ethernet ---------------------------------------------------------------------------


@given(macs, macs, st.integers(0, 0xFFFF).filter(lambda t: t != ETHERTYPE_VLAN),
       st.none() | st.integers(0, 4095), st.binary(max_size=32))
@FAST
def test_ethernet_round_trip(dst, src, ethertype, vlan, body):
    header = EthernetHeader(dst, src, ethertype, vlan)
    frame = header.encode() + body
    assert len(header.encode()) == header.length
    assert EthernetHeader.decode(frame) == header
    assert bytes(payload(frame)) == body


def test_ethernet_tag_keeps_only_the_vid():
    header = EthernetHeader(BROADCAST, b"\x02" * 6, 0x0800, vlan=0x1064)  # 0x1000 would be the DEI bit
    assert header.encode()[14:16] == b"\x00\x64"
    assert EthernetHeader.decode(header.encode()).vlan == 0x064


@given(st.binary(max_size=40))
@FAST
def test_ethernet_decode_returns_or_raises_decode_error(data):
    try:
        header = EthernetHeader.decode(data)
    except DecodeError as err:
        assert err.layer == "ethernet"
        assert len(data) < 18
        return
    assert header.length <= len(data)
    assert header.dst == data[:6] and header.src == data[6:12]


def test_payload_of_a_runt_raises_decode_error():
    with pytest.raises(DecodeError):
        payload(b"\xff" * 13)


# -- ARP ---------------------------------------------------------------------------------


@given(st.sampled_from([OP_REQUEST, OP_REPLY]), macs, ipv4s, macs, ipv4s, st.binary(max_size=18))
@FAST
def test_arp_round_trip(op, smac, sip, tmac, tip, padding):
    packet = ArpPacket(op, smac, sip, tmac, tip)
    wire = packet.encode()
    assert len(wire) == 28
    assert ArpPacket.decode(wire + padding) == packet
    assert packet.is_gratuitous is (sip == tip)


@given(st.binary(max_size=40))
@FAST
def test_arp_decode_returns_or_raises_decode_error(data):
    try:
        packet = ArpPacket.decode(data)
    except DecodeError as err:
        assert err.layer == "arp"
        return
    assert data[:8] in (bytes.fromhex("0001080006040001"), bytes.fromhex("0001080006040002"))
    assert packet.encode() == data[:28]


# -- VXLAN -------------------------------------------------------------------------------


@given(st.integers(0, VNI_MAX))
@FAST
def test_vxlan_round_trip(vni):
    header = encode_header(vni)
    assert len(header) == 8 and header[0] == 0x08
    assert decode_header(header) == vni


@pytest.mark.parametrize("vni", [-1, VNI_MAX + 1, 1 << 32])
def test_vxlan_encode_refuses_vni_out_of_range(vni):
    with pytest.raises(ValueError, match="24 bits"):
        encode_header(vni)


def naive_vxlan_verdict(data: bytes) -> int | str:
    """RFC 7348 by the byte: the VNI, or the counter the datagram is dropped under."""
    if len(data) < 8:
        return "rx_drop_runt"
    flags, r1, r2, r3, v1, v2, v3, r4 = data[:8]
    if not flags & 0x08:
        return "rx_drop_i_flag_clear"
    if flags & ~0x08 or r1 or r2 or r3 or r4:
        return "rx_drop_reserved_bits"
    return v1 << 16 | v2 << 8 | v3


vxlan_like = st.one_of(
    st.binary(max_size=12),
    # mostly-valid headers, so the interesting branches are reached often
    st.tuples(st.sampled_from([0x08, 0x08, 0x00, 0x88, 0x0C]), st.sampled_from([0, 0, 1]),
              st.integers(0, VNI_MAX), st.sampled_from([0, 0, 0x80]))
    .map(lambda t: bytes([t[0], t[1], 0, 0]) + t[2].to_bytes(3, "big") + bytes([t[3]])),
)


@given(vxlan_like)
@settings(max_examples=400, deadline=None)
def test_vxlan_decode_agrees_with_naive_reading(data):
    verdict = naive_vxlan_verdict(data)
    if isinstance(verdict, int):
        assert decode_header(data) == verdict
    else:
        with pytest.raises(VxlanError) as err:
            decode_header(data)
        assert err.value.counter == verdict
        assert isinstance(err.value, DecodeError)
