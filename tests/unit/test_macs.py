"""fabric.macs: stable MACs derived from the node and the device; the frames that announce them."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.fabric.macs import derive, plan
from overlayd.wire.arp import ArpPacket, gratuitous_frame
from overlayd.wire.ndp import NeighborMessage, unsolicited_advertisement_frame


def test_the_same_identity_gives_the_same_mac_every_time():
    assert derive("node1", "network blue") == derive("node1", "network blue")
    assert derive("node1", "network blue") != derive("node2", "network blue")
    assert derive("node1", "network blue") != derive("node1", "network red")
    assert derive("node1", "network blue", 1) != derive("node1", "network blue", 0)


def test_ten_thousand_identities_get_ten_thousand_unicast_local_macs():
    macs = {derive(f"node{n}", f"network {net}") for n in range(2500) for net in ("blue", "red", "green", "routing")}
    assert len(macs) == 10_000
    assert all(m[0] & 0x02 and not m[0] & 0x01 for m in macs)


@settings(max_examples=200)
@given(st.lists(st.text(min_size=1, max_size=8), min_size=1, max_size=20, unique=True), st.text(min_size=1))
def test_a_plan_never_gives_a_mac_twice_nor_one_taken(roles, node):
    taken = [derive(node, roles[0])]  # the first role's own first derivation is taken elsewhere
    got = plan(node, [(r, None, "derived") for r in roles], taken)
    macs = [d.mac for d in got.values()]
    assert len(set(macs)) == len(macs) and taken[0] not in macs
    assert got[roles[0]].skipped == (taken[0],) and got[roles[0]].mac == derive(node, roles[0], 1)


def test_configured_macs_win_and_are_never_derived_again():
    configured = derive("n", "network red")  # somebody configured exactly what red would derive
    got = plan("n", [("network blue", configured, "config"), ("network red", None, "derived"),
                     ("routing", b"\x02\x00\x0a\x00\x00\x01", "router")])
    assert got["network blue"].source == "config" and got["network blue"].mac == configured
    assert got["network red"].mac == derive("n", "network red", 1)
    assert got["routing"].source == "router"


def test_the_announcements_decode_as_what_they_say():
    mac = derive("n", "network blue")
    arp = ArpPacket.decode(gratuitous_frame(mac, ipaddress.ip_address("192.168.100.3"))[14:])
    assert arp.is_gratuitous and arp.sender_mac == mac
    frame = unsolicited_advertisement_frame(mac, ipaddress.ip_address("fd10::3"))
    na = NeighborMessage.decode(frame[14:])
    assert frame[:6] == b"\x33\x33\x00\x00\x00\x01" and na.override and not na.solicited and na.target_lladdr == mac
