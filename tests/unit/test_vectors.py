"""overlayd's codecs against the golden vectors in tests/vectors/.

The vectors were checked against tshark's dissectors (tests/vectors/check_tshark.py,
recorded in each file's `checked_with`), so agreeing with them means agreeing
with a real peer's reading of the same bytes.
"""

from __future__ import annotations

import pytest

from overlayd.dataplane.switch import Switch
from overlayd.fabric.fdb import Source
from overlayd.wire.arp import ARP_LEN, ArpPacket
from overlayd.wire.errors import DecodeError
from overlayd.wire.ethernet import EthernetHeader, mac_str, payload
from overlayd.wire.vxlan import VXLAN_HEADER_LEN, VxlanError, VxlanHeader, decode_header, encode_header
from tests.vectors import load, vectors

FILES = ("ethernet.json", "arp.json", "vxlan.json", "packets.json")


def by_name(filename: str) -> list:
    return [pytest.param(v, id=v["name"]) for v in vectors(filename)]


def eth_fields(h: EthernetHeader) -> dict:
    return {"dst": mac_str(h.dst), "src": mac_str(h.src), "ethertype": f"0x{h.ethertype:04x}", "vlan": h.vlan}


def arp_fields(p: ArpPacket) -> dict:
    return {
        "op": p.op,
        "sender_mac": mac_str(p.sender_mac),
        "sender_ip": str(p.sender_ip),
        "target_mac": mac_str(p.target_mac),
        "target_ip": str(p.target_ip),
        "gratuitous": p.is_gratuitous,
    }


def raw(vector: dict) -> bytes:
    return bytes.fromhex(vector["hex"])


# -- the files themselves -------------------------------------------------------


@pytest.mark.parametrize("filename", FILES)
def test_vector_file_was_checked_against_tshark(filename):
    doc = load(filename)
    assert str(doc["checked_with"]).startswith("tshark "), "run tests/vectors/check_tshark.py --record"
    names = [v["name"] for v in doc["vectors"]]
    assert len(names) == len(set(names)), "vector names must be unique"
    assert doc["encap"] in ("ethernet", "udp:4789")


# -- Ethernet -----------------------------------------------------------------------


@pytest.mark.parametrize("vector", by_name("ethernet.json"))
def test_ethernet_vector(vector):
    frame = raw(vector)
    if "error" in vector:
        with pytest.raises(DecodeError) as err:
            EthernetHeader.decode(frame)
        assert err.value.layer == vector["error"]["layer"]
        assert vector["error"]["reason"] in err.value.reason
        return
    header = EthernetHeader.decode(frame)
    assert eth_fields(header) == vector["fields"]["ethernet"]
    assert header.length == (14 if header.vlan is None else 18)
    assert bytes(payload(frame)) == frame[header.length :]
    if vector.get("encodes_back", True):
        assert header.encode() == frame[: header.length]
    else:  # priority and DEI bits are not kept: the re-encoded tag carries the VID only
        again = header.encode()
        assert again != frame[: header.length]
        assert EthernetHeader.decode(again + frame[header.length :]) == header


def test_ethernet_decode_accepts_memoryview():
    frame = raw(vectors("ethernet.json")[2])
    assert EthernetHeader.decode(memoryview(frame)) == EthernetHeader.decode(frame)


# -- ARP --------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", by_name("arp.json"))
def test_arp_vector(vector):
    frame = raw(vector)
    assert eth_fields(EthernetHeader.decode(frame)) == vector["fields"]["ethernet"]
    body = payload(frame)
    if "error" in vector:
        with pytest.raises(DecodeError) as err:
            ArpPacket.decode(body)
        assert err.value.layer == vector["error"]["layer"] == "arp"
        assert vector["error"]["reason"] in err.value.reason
        return
    packet = ArpPacket.decode(body)
    assert arp_fields(packet) == vector["fields"]["arp"]
    assert packet.encode() == bytes(body[:ARP_LEN])
    if vector.get("encodes_back", True):
        assert len(body) == ARP_LEN


# -- VXLAN ------------------------------------------------------------------------------


@pytest.mark.parametrize("vector", by_name("vxlan.json"))
def test_vxlan_header_vector(vector):
    data = raw(vector)
    if "error" in vector:
        with pytest.raises(VxlanError) as err:
            decode_header(data)
        assert err.value.layer == "vxlan"
        assert err.value.counter == vector["error"]["counter"]
        assert vector["error"]["reason"] in err.value.reason
        with pytest.raises(VxlanError):
            VxlanHeader.decode(data)
        return
    vni = vector["fields"]["vxlan"]["vni"]
    assert decode_header(data) == vni
    assert VxlanHeader.decode(memoryview(data)) == VxlanHeader(vni)
    # flags 0x08, every reserved field zero: re-encoding gives the same 8 bytes
    assert encode_header(vni) == VxlanHeader(vni).encode() == data[:VXLAN_HEADER_LEN]


@pytest.mark.parametrize("vector", by_name("packets.json"))
def test_vxlan_packet_vector(vector):
    data = raw(vector)
    fields = vector["fields"]
    assert decode_header(data) == fields["vxlan"]["vni"]
    inner = memoryview(data)[VXLAN_HEADER_LEN:]
    assert eth_fields(EthernetHeader.decode(inner)) == fields["ethernet"]
    if "arp" in fields:
        assert arp_fields(ArpPacket.decode(payload(inner))) == fields["arp"]


# -- the Switch reaches the same verdict as the codec ------------------------------

REMOTE = "10.0.0.2"
SWITCH_VNIS = (1, 100, 5000, 16777215)  # every VNI the vectors expect to be delivered
RX_OUTCOMES = (
    "rx_frames", "rx_drop_runt", "rx_drop_i_flag_clear", "rx_drop_reserved_bits",
    "rx_drop_unknown_vni", "rx_drop_unknown_vtep", "rx_drop_bad_src_mac", "rx_drop_own_mac",
)


@pytest.mark.parametrize("vector", by_name("vxlan.json") + by_name("packets.json"))
def test_switch_outcome_for_vector(vector):
    switch = Switch(vxlan_port=4789, aging_s=300)
    for vni in SWITCH_VNIS:
        switch.add_segment(vni, f"net{vni}")
        switch.add_flood_vtep(vni, REMOTE, Source.STATIC)
    data = raw(vector)
    result = switch.from_vxlan(REMOTE, data, now=1.0)
    counters = switch.counters.as_dict()
    assert counters["rx_datagrams"] == 1
    assert {k: counters[k] for k in RX_OUTCOMES if counters[k]} == {vector["switch"]: 1}
    if vector["switch"] == "rx_frames":
        vni, inner = result
        assert vni == vector["fields"]["vxlan"]["vni"]
        assert bytes(inner) == data[VXLAN_HEADER_LEN:]
        assert counters["rx_bytes"] == len(data) - VXLAN_HEADER_LEN
    else:
        assert result is None
