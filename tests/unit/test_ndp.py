"""The IPv6 neighbour discovery codec against the golden vectors in tests/vectors/ndp.json
(checked against tshark by tests/vectors/check_tshark.py, recorded in `checked_with`),
and the ARP reply builder against arp.json's request/reply pair."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlayd.wire.arp import OP_REPLY, ArpPacket, reply_frame
from overlayd.wire.errors import DecodeError
from overlayd.wire.ethernet import EthernetHeader, mac_str, payload
from overlayd.wire.ndp import (
    TYPE_NEIGHBOR_ADVERTISEMENT,
    TYPE_NEIGHBOR_SOLICITATION,
    NeighborMessage,
    advertisement_reply_frame,
    checksum,
)
from tests.vectors import load, vectors

NDP = "ndp.json"
A = bytes.fromhex("020000000001")
B = bytes.fromhex("020000000002")


def by_name(filename: str) -> list:
    return [pytest.param(v, id=v["name"]) for v in vectors(filename)]


def raw(vector: dict) -> bytes:
    return bytes.fromhex(vector["hex"])


def named(name: str) -> dict:
    return next(v for v in vectors(NDP) if v["name"] == name)


def fields(msg: NeighborMessage, packet: bytes) -> tuple[dict, dict]:
    """The vector's `ipv6` and `icmpv6` fields, from the decoded message (and two raw fields)."""
    icmp: dict = {
        "type": msg.type,
        "code": 0,
        "checksum": f"0x{int.from_bytes(packet[42:44], 'big'):04x}",
        "checksum_good": True,
        "target": str(msg.target),
    }
    if msg.is_advertisement:
        icmp.update(router=msg.router, solicited=msg.solicited, override=msg.override)
    if msg.source_lladdr is not None:
        icmp["source_lladdr"] = mac_str(msg.source_lladdr)
    if msg.target_lladdr is not None:
        icmp["target_lladdr"] = mac_str(msg.target_lladdr)
    return {
        "src": str(msg.src),
        "dst": str(msg.dst),
        "hop_limit": msg.hop_limit,
        "next_header": 58,
        "payload_length": int.from_bytes(packet[4:6], "big"),
    }, icmp


def test_vector_file_was_checked_against_tshark():
    doc = load(NDP)
    assert str(doc["checked_with"]).startswith("tshark "), "run tests/vectors/check_tshark.py --record"
    names = [v["name"] for v in doc["vectors"]]
    assert len(names) == len(set(names))
    assert doc["encap"] == "ethernet"


@pytest.mark.parametrize("vector", by_name(NDP))
def test_ndp_vector(vector):
    frame = raw(vector)
    eth = EthernetHeader.decode(frame)
    assert eth.ethertype == 0x86DD and eth.vlan is None
    assert mac_str(eth.dst) == vector["fields"]["ethernet"]["dst"]
    assert mac_str(eth.src) == vector["fields"]["ethernet"]["src"]
    packet = bytes(payload(frame))
    if "error" in vector:
        with pytest.raises(DecodeError) as err:
            NeighborMessage.decode(packet)
        assert err.value.layer == vector["error"]["layer"]
        assert vector["error"]["reason"] in err.value.reason
        return
    msg = NeighborMessage.decode(packet)
    ipv6, icmp = fields(msg, packet)
    assert ipv6 == vector["fields"]["ipv6"]
    assert icmp == vector["fields"]["icmpv6"]
    if vector["name"] != "ns-dad-with-nonce":  # the nonce option is skipped, so not re-encoded
        assert msg.encode() == packet
    assert NeighborMessage.decode(memoryview(frame)[14:]) == msg


@pytest.mark.parametrize("vector", [v for v in by_name(NDP) if "reply_to" in v.values[0]])
def test_advertisement_reply_frame_gives_the_vector(vector):
    ns_frame = raw(named(vector["reply_to"]))
    ns = NeighborMessage.decode(payload(ns_frame))
    asker = ns.source_lladdr or EthernetHeader.decode(ns_frame).src
    mac = bytes.fromhex(vector["fields"]["ethernet"]["src"].replace(":", ""))
    assert advertisement_reply_frame(ns, asker, mac) == raw(vector)


def test_dad_solicitations_are_never_answered():
    dad = NeighborMessage.decode(payload(raw(named("ns-dad"))))
    assert dad.is_dad and dad.is_solicitation and not dad.is_advertisement
    with pytest.raises(ValueError):
        advertisement_reply_frame(dad, A, B)


def test_bad_version_short_packet_and_other_icmpv6_types_are_decode_errors():
    good = bytes(payload(raw(named("ns-multicast"))))
    for bad, layer in (
        (good[:39], "ipv6"),
        (b"\x45" + good[1:], "ipv6"),
        (good[:6] + b"\x11" + good[7:], "ndp"),  # next header UDP
        (good[:40] + b"\x80" + good[41:], "ndp"),  # an echo request
        (good[:41] + b"\x01" + good[42:], "ndp"),  # code 1
        (good[:4] + b"\x00\x10" + good[6:56], "ndp"),  # ICMPv6 shorter than 24 bytes
    ):
        with pytest.raises(DecodeError) as err:
            NeighborMessage.decode(bad)
        assert err.value.layer == layer


def test_option_running_past_the_message_is_an_error():
    ns = NeighborMessage(
        TYPE_NEIGHBOR_SOLICITATION, ipaddress.IPv6Address("2001:db8::1"),
        ipaddress.IPv6Address("ff02::1:ff00:2"), ipaddress.IPv6Address("2001:db8::2"),
    )
    icmp = bytearray(ns.icmpv6() + bytes((1, 2)) + A)  # says 16 bytes, has 8
    icmp[2:4] = b"\0\0"
    icmp[2:4] = checksum(ns.src, ns.dst, bytes(icmp)).to_bytes(2, "big")
    packet = ns.encode()[:4] + len(icmp).to_bytes(2, "big") + ns.encode()[6:40] + bytes(icmp)
    with pytest.raises(DecodeError, match="runs past"):
        NeighborMessage.decode(packet)


addresses = st.builds(ipaddress.IPv6Address, st.integers(0, 2**128 - 1))
unicast = addresses.filter(lambda a: not a.is_multicast)
macs = st.binary(min_size=6, max_size=6)


@given(
    kind=st.sampled_from((TYPE_NEIGHBOR_SOLICITATION, TYPE_NEIGHBOR_ADVERTISEMENT)),
    src=unicast, dst=addresses, target=unicast, lladdr=st.none() | macs,
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
)
def test_encode_then_decode_is_identity(kind, src, dst, target, lladdr, flags):
    router, solicited, override = flags
    if kind == TYPE_NEIGHBOR_SOLICITATION:
        if src.is_unspecified:
            lladdr = None
        msg = NeighborMessage(kind, src, dst, target, source_lladdr=lladdr)
    else:
        solicited = solicited and not dst.is_multicast
        msg = NeighborMessage(
            kind, src, dst, target, target_lladdr=lladdr,
            router=router, solicited=solicited, override=override,
        )
    packet = msg.encode()
    assert NeighborMessage.decode(packet) == msg
    # any single flipped bit in the ICMPv6 message is caught (checksum or a field check)
    flipped = bytearray(packet)
    flipped[40 + (len(packet) - 40) // 2] ^= 0x10
    with pytest.raises(DecodeError):
        NeighborMessage.decode(bytes(flipped))


# -- the ARP reply builder ---------------------------------------------------------


def test_arp_reply_frame_is_arp_json_reply_to_its_request():
    by = {v["name"]: v for v in vectors("arp.json")}
    request = ArpPacket.decode(payload(raw(by["request"])))
    assert reply_frame(request, B) == raw(by["reply"])


def test_arp_reply_frame_fields():
    request = ArpPacket.decode(payload(raw(next(v for v in vectors("arp.json") if v["name"] == "request"))))
    frame = reply_frame(request, B)
    eth = EthernetHeader.decode(frame)
    assert (eth.dst, eth.src, eth.ethertype) == (request.sender_mac, B, 0x0806)
    reply = ArpPacket.decode(payload(frame))
    assert reply == ArpPacket(OP_REPLY, B, request.target_ip, request.sender_mac, request.sender_ip)
    assert len(frame) == 42
