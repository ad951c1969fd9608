"""A VLAN trunk's tags (dataplane/vlan.py): what classify takes off, what tagged puts on, what is counted.

The golden frame below, an ARP request in VLAN 20 with priority 5, was
checked once against tshark's dissector (written to a pcap: `tshark -T
fields -e vlan.id -e vlan.priority -e vlan.dei -e vlan.etype` gave
`20 5 0 0x0806`, and the ARP addresses 192.168.10.1 -> 192.168.10.2).
"""

from __future__ import annotations

import pytest

from overlayd.dataplane.counters import Counters
from overlayd.dataplane.vlan import Trunk, tag, tagged

DST, SRC = bytes.fromhex("ffffffffffff"), bytes.fromhex("02000000000a")
ARP = bytes.fromhex("0806" "0001080006040001" "02000000000a" "c0a80a01" "000000000000" "c0a80a02")
UNTAGGED = DST + SRC + ARP
GOLDEN = bytes.fromhex("ffffffffffff" "02000000000a" "8100" "a014") + ARP  # VLAN 20, PCP 5, DEI 0


def drops(counters: Counters) -> dict[str, int]:
    return {k: v for k, v in counters.as_dict().items() if v}


def test_tag_bytes():
    assert tag(10) == bytes.fromhex("8100000a")
    assert tag(20, pcp=5) == bytes.fromhex("8100a014")
    assert tag(4094) == bytes.fromhex("81000ffe")
    assert tagged(UNTAGGED, tag(20, pcp=5)) == GOLDEN


def test_a_mapped_vlan_gives_its_vni_and_the_frame_untagged_whatever_its_priority():
    trunk, c = Trunk({10: 1010, 20: 1020}), Counters()
    assert trunk.classify(GOLDEN, c) == (1020, UNTAGGED)
    assert trunk.classify(tagged(UNTAGGED, tag(10, pcp=7)), c) == (1010, UNTAGGED)
    dei = bytearray(tagged(UNTAGGED, tag(10)))
    dei[14] |= 0x10  # the DEI bit: not part of the VLAN ID either
    assert trunk.classify(bytes(dei), c) == (1010, UNTAGGED)
    assert drops(c) == {}


def test_untagged_and_priority_tagged_frames_belong_to_the_native_vlan():
    trunk, c = Trunk({10: 1010, 20: 1020}, native=10), Counters()
    assert trunk.classify(UNTAGGED, c) == (1010, UNTAGGED)
    assert trunk.classify(tagged(UNTAGGED, tag(0, pcp=3)), c) == (1010, UNTAGGED)
    assert trunk.classify(tagged(UNTAGGED, tag(10)), c) == (1010, UNTAGGED)  # tagged with the native VLAN too
    assert drops(c) == {}
    assert trunk.tags == {1020: tag(20)}  # the native VLAN leaves untagged


@pytest.mark.parametrize(("frame", "counter"), [
    (UNTAGGED, "tx_drop_vlan_untagged"),
    (tagged(UNTAGGED, tag(0, pcp=3)), "tx_drop_vlan_untagged"),
    (tagged(UNTAGGED, tag(30)), "tx_drop_vlan_unmapped"),
    (tagged(UNTAGGED, bytes.fromhex("88a8000a")), "tx_drop_vlan_stacked"),  # an 802.1ad S-tag
    (tagged(tagged(UNTAGGED, tag(20)), tag(10)), "tx_drop_vlan_stacked"),  # 802.1Q in 802.1Q
    (tagged(tagged(UNTAGGED, bytes.fromhex("88a80014")), tag(10)), "tx_drop_vlan_stacked"),
    ((DST + SRC + tag(10))[:16], "tx_drop_runt"),  # a tag and nothing after it
])
def test_what_a_trunk_without_a_native_vlan_refuses_is_counted_once(frame, counter):
    c = Counters()
    assert Trunk({10: 1010, 20: 1020}).classify(frame, c) is None
    assert drops(c) == {counter: 1}


def test_every_vlan_round_trips():
    trunk, c = Trunk({vid: 5000 + vid for vid in (1, 100, 4094)}), Counters()
    for vni, tag_bytes in trunk.tags.items():
        assert trunk.classify(tagged(UNTAGGED, tag_bytes), c) == (vni, UNTAGGED)
    assert drops(c) == {}
