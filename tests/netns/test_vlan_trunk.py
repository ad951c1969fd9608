"""A VLAN trunk on one TAP (`networks[].vlans`) between two overlayd nodes over BGP EVPN.

Hosts a and b each run overlayd with network blue as a trunk on TAP trunk0:
VLAN 10 -> VNI 1010, VLAN 20 -> VNI 1020, no native VLAN. This host's kernel
has no 802.1Q devices, so frames go in and out of the TAPs through raw
sockets (tests/netns/raw_frames.py): what a's kernel sends on trunk0 is what
a's overlayd reads, tag and all, and what b's overlayd writes to trunk0 is
what b's kernel receives, its tag in the packet's metadata. Each VLAN's
frames cross in their own VNI and arrive with their own tag, never another
VLAN's; what a trunk cannot place is dropped and counted once. (The
full-kernel tier has the same with VLAN devices, a VLAN-aware bridge and the
kernel's own VXLAN: tests/vm/guest/test_vlan_trunk.py.)
"""

from __future__ import annotations

import json
import sys

import pytest

from overlayd.dataplane.vlan import tag as vlan_tag
from overlayd.dataplane.vlan import tagged
from tests.netns import raw_frames
from tests.netns.topology import add_underlay_host, bgp_node_config
from tests.support import require_netns
from tools.lab import Host, wait_for
from tools.nodes import Overlayd, start_overlayd

TRUNK = "trunk0"
VLANS = {10: 1010, 20: 1020}
BROADCAST = "ff:ff:ff:ff:ff:ff"
A10, A20, B10, B20 = "02:0a:00:00:00:10", "02:0a:00:00:00:20", "02:0b:00:00:00:10", "02:0b:00:00:00:20"
ETHERTYPE = bytes.fromhex("88b5")  # local experimental: nothing snoops or answers it


def frame(dst: str, src: str, text: str) -> bytes:
    body = ETHERTYPE + text.encode()
    return (bytes.fromhex(dst.replace(":", "")) + bytes.fromhex(src.replace(":", "")) + body).ljust(60, b"\0")


def trunk_config(i: int) -> dict:
    config = bgp_node_config(i, 4, count=2)
    config["networks"] = [{"name": "blue", "device": TRUNK, "vlans": VLANS}]
    return config


def capture(host: Host, seconds: float):
    proc = host.popen(sys.executable, raw_frames.__file__, "recv", TRUNK, str(seconds))
    wait_for(lambda: "listening" in host.log(proc), timeout=10, what=f"a capture on {host.name}'s {TRUNK}")
    return proc


def captured(host: Host, proc) -> list[tuple[int | None, bytes]]:
    assert proc.wait(timeout=30) == 0, host.log(proc)
    lines = host.log(proc).splitlines()[1:]
    return sorted((row["vlan"], bytes.fromhex(row["frame"])) for row in map(json.loads, lines))


def send(host: Host, *frames: bytes) -> None:
    host.run(sys.executable, raw_frames.__file__, "send", TRUNK, *(f.hex() for f in frames))


def fdb(node: Overlayd) -> dict[str, tuple[int, int, str]]:
    return {r["mac"]: (r["vlan"], r["vni"], r["where"]) for r in node.ctl("fdb")}


def moved(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


@pytest.fixture
def trunks(lab):
    require_netns()
    hosts = [add_underlay_host(lab, name, i + 1, 4) for i, name in enumerate("ab")]
    nodes = [start_overlayd(host, trunk_config(i)) for i, host in enumerate(hosts)]
    wait_for(lambda: all(len(n["flood_list"]) == 1 for node in nodes for n in node.ctl("status")["networks"]),
             timeout=20, what="both VLANs' flood lists from the type-3 routes")
    yield hosts, nodes
    assert [node.stop() for node in nodes] == [0, 0]


def test_each_vlan_crosses_in_its_vni_and_arrives_with_its_tag(trunks):
    (a, b), (node_a, node_b) = trunks
    status = node_a.ctl("status")["networks"]
    assert [(n["name"], n["vlan"], n["vni"], n["device"]) for n in status] == [
        ("blue.10", 10, 1010, TRUNK), ("blue.20", 20, 1020, TRUNK)]
    assert status[0]["mac"] == status[1]["mac"]  # one TAP
    in10, in20 = frame(BROADCAST, A10, "to all of VLAN 10"), frame(BROADCAST, A20, "to all of VLAN 20")
    before = node_a.counters()
    cap = capture(b, 5)
    send(a, tagged(in10, vlan_tag(10, pcp=5)), tagged(in20, vlan_tag(20)))
    assert captured(b, cap) == [(10, in10), (20, in20)]
    assert moved(before, node_a.counters()) == {
        "tx_frames": 2, "tx_bytes": 2 * len(in10), "tx_flood_frames": 2, "tx_datagrams": 2}
    wait_for(lambda: {A10, A20} <= fdb(node_b).keys(), timeout=10, what="b to hear of a's MACs")
    assert fdb(node_b)[A10] == (10, 1010, "10.0.0.1") and fdb(node_b)[A20] == (20, 1020, "10.0.0.1")
    assert fdb(node_a)[A10] == (10, 1010, "local")
    assert "VLAN" in node_a.ctl_text("fdb").splitlines()[0]
    rows = [line.split() for line in node_a.ctl_text("status").splitlines() if line.startswith("blue.")]
    assert [row[:3] for row in rows[:2]] == [["blue.10", "10", "1010"], ["blue.20", "20", "1020"]], rows  # then limits


def test_a_vlan_never_reaches_another_vlans_hosts(trunks):
    (a, b), (_, node_b) = trunks
    send(a, tagged(frame(BROADCAST, A10, "hello"), vlan_tag(10)))  # A10 is now in VLAN 10 only
    wait_for(lambda: A10 in fdb(node_b), timeout=10, what="b to hear of A10")
    to_10 = frame(A10, B10, "unicast in VLAN 10")
    to_20 = frame(A10, B20, "the same MAC, asked in VLAN 20")  # unknown in VNI 1020: flooded there
    before = node_b.counters()
    cap = capture(a, 5)
    send(b, tagged(to_10, vlan_tag(10)), tagged(to_20, vlan_tag(20)))
    assert captured(a, cap) == [(10, to_10), (20, to_20)]
    counted = moved(before, node_b.counters())
    assert counted["tx_unicast_frames"] == 1 and counted["tx_unknown_unicast_frames"] == 1, counted


def test_what_the_trunk_cannot_place_is_dropped_and_counted(trunks):
    (a, b), (node_a, _) = trunks
    plain = frame(BROADCAST, A10, "untagged, and no native VLAN")
    before = node_a.counters()
    cap = capture(b, 4)
    send(a, plain, tagged(plain, vlan_tag(30)), tagged(plain, bytes.fromhex("88a8000a")),
         tagged(tagged(plain, vlan_tag(20)), vlan_tag(10)))
    assert captured(b, cap) == []
    assert moved(before, node_a.counters()) == {
        "tx_drop_vlan_untagged": 1, "tx_drop_vlan_unmapped": 1, "tx_drop_vlan_stacked": 2}
