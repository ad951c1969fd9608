"""Three overlayd nodes in network namespaces, on IPv4 and IPv6 underlays.

The `overlay` fixture (conftest.py) is shared by a module; each test brings
the traffic state it needs (pings first) and asserts counter *deltas*. The
lifecycle tests at the bottom run a single daemon in a fresh lab each.
"""

from __future__ import annotations

import signal
import struct
import sys
from pathlib import Path

import pytest

from tests.netns import udp_send
from tests.netns.topology import DEVICE, VNI, Overlay, node_config, overlay_ip
from tools.lab import Host, wait_for
from tools.nodes import start_overlayd

pytestmark = pytest.mark.root

PAIRS = [(i, j) for i in range(3) for j in range(3) if i != j]


def delta(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The counters that moved, and by how much."""
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def link_exists(host: Host, device: str) -> bool:
    return host.ip("link", "show", "dev", device, check=False).returncode == 0


def ping_many(host: Host, addr: str, count: int) -> None:
    out = host.run("ping", "-4", "-q", "-n", "-c", str(count), "-i", "0.01", "-w", "10",
                   addr, check=False).stdout
    assert f"{count} received" in out, out


# -- the three-node overlay -----------------------------------------------------------


def test_every_pair_pings_over_the_overlay_both_ways(overlay: Overlay):
    failed = [(overlay.hosts[i].name, overlay.hosts[j].name) for i, j in PAIRS
              if not overlay.hosts[i].ping(overlay_ip(j))]
    assert not failed, f"no reply over the overlay for {failed}"


def test_taps_carry_no_ipv6_so_the_overlay_is_quiet(overlay: Overlay):
    for host in overlay.hosts:
        assert not host.json_ip("-6", "addr", "show", "dev", DEVICE)


def test_broadcast_arp_resolves_to_the_mac_of_the_remote_tap(overlay: Overlay):
    a = overlay.nodes[0]
    a.host.ip("neigh", "flush", "dev", DEVICE)
    before = [n.counters() for n in overlay.nodes]
    assert a.host.ping(overlay_ip(1))
    [neigh] = a.host.json_ip("neigh", "show", overlay_ip(1), "dev", DEVICE)
    assert neigh["lladdr"] == overlay.macs[1]
    moved = [delta(x, n.counters()) for x, n in zip(before, overlay.nodes)]
    assert moved[0].get("tx_flood_frames") == 1  # the ARP request, head-end replicated
    assert moved[0].get("tx_datagrams", 0) >= 3  # a copy of it to B and C, then the echo request
    assert moved[1].get("rx_frames", 0) >= 2  # B got the request, then the ping
    # C got the broadcast copy (and maybe its kernel's own ARP refresh with A or B)
    assert 1 <= moved[2].get("rx_frames", 0) <= 3, moved[2]


def test_learned_unicast_is_not_flooded(overlay: Overlay):
    for i, j in PAIRS:  # every node learns every MAC, every ARP entry resolves
        assert overlay.hosts[i].ping(overlay_ip(j))
    before = [n.counters() for n in overlay.nodes]
    ping_many(overlay.hosts[0], overlay_ip(1), 50)
    moved = [delta(x, n.counters()) for x, n in zip(before, overlay.nodes)]
    assert moved[0].get("tx_flood_frames", 0) == 0, moved[0]
    assert moved[0].get("tx_unknown_unicast_frames", 0) == 0, moved[0]
    assert moved[0].get("tx_unicast_frames", 0) >= 50, moved[0]
    assert moved[0].get("rx_frames", 0) >= 50, moved[0]  # the replies
    assert moved[1].get("rx_frames", 0) >= 50, moved[1]
    # None of the 100 frames between A and B reached C. C's kernel may refresh its own
    # ARP entries for A and B meanwhile: a request and a reply each, unicast, at most.
    assert moved[2].get("rx_frames", 0) <= 4, f"C saw traffic between A and B: {moved[2]}"
    assert moved[2].get("rx_bytes", 0) <= 4 * 42, f"C saw traffic between A and B: {moved[2]}"


def test_fdb_lists_remote_macs_behind_their_vteps_and_own_mac_as_local(overlay: Overlay):
    a = overlay.hosts[0]
    assert a.ping(overlay_ip(1)) and a.ping(overlay_ip(2))
    rows = {r["mac"]: r for r in overlay.nodes[0].ctl("fdb")}
    assert set(rows) == set(overlay.macs)
    for i, mac in enumerate(overlay.macs):
        row = rows[mac]
        assert (row["network"], row["vni"]) == ("blue", VNI)
        if i == 0:
            assert (row["where"], row["learned"]) == ("local", "local")
        else:
            assert (row["where"], row["learned"]) == (overlay.vtep(i), "data")
    text = overlay.nodes[0].ctl_text("fdb")
    assert any(overlay.macs[1] in line and overlay.vtep(1) in line for line in text.splitlines())


EXPERIMENTAL = 0x88B5  # the crafted frames' ethertype: nothing else in the overlay uses it
PER_CASE = 20


def count_pcap_records(path: Path) -> int:
    """How many packets a pcap file (tcpdump -w) holds."""
    data = path.read_bytes()
    at, n = 24, 0  # global header, then (16-byte record header + captured bytes) per packet
    while at + 16 <= len(data):
        at += 16 + struct.unpack_from("<I", data, at + 8)[0]
        n += 1
    return n


def test_bad_vxlan_datagrams_are_dropped_and_counted_by_reason(overlay: Overlay):
    """Every drop of Switch.from_vxlan, from a stranger on the underlay (d) or from a peer (b):
    nothing reaches the TAP, the FDB is unchanged, each reason's counter moves by what was sent."""
    node, peer, stranger = overlay.nodes[0], overlay.hosts[1], overlay.outsider
    assert overlay.hosts[0].ping(overlay_ip(1)) and overlay.hosts[2].ping(overlay_ip(1))  # the FDB knows b's MAC
    own = bytes.fromhex(overlay.macs[0].replace(":", ""))
    victim = bytes.fromhex(overlay.macs[1].replace(":", ""))  # b's TAP MAC, which a's FDB places at b

    def inner(src: bytes, dst: bytes = own) -> bytes:
        return dst + src + EXPERIMENTAL.to_bytes(2, "big") + b"x" * 46

    def vxlan(word0: int, vni: int, low: int = 0) -> bytes:
        return struct.pack("!II", word0, vni << 8 | low)

    ok = vxlan(0x08 << 24, VNI)
    from_stranger = {
        "rx_drop_runt": [ok + inner(victim)[:10]],
        "rx_drop_i_flag_clear": [vxlan(0, VNI) + inner(victim)],
        "rx_drop_reserved_bits": [vxlan(0x88 << 24, VNI) + inner(victim),  # I + the GBP G bit
                                  vxlan(0x08 << 24, VNI, low=1) + inner(victim)],  # the byte after the VNI
        "rx_drop_unknown_vni": [vxlan(0x08 << 24, VNI + 1) + inner(victim)],
        # valid VXLAN from a VTEP in no flood list, carrying the victim's MAC: unicast and broadcast
        "rx_drop_unknown_vtep": [ok + inner(victim), ok + inner(victim, b"\xff" * 6)],
    }
    from_peer = {  # from b, a VTEP a accepts: the inner frame's checks
        "rx_drop_bad_src_mac": [ok + inner(b"\x01\x00\x5e\x00\x00\x01"), ok + inner(bytes(6))],
        "rx_drop_own_mac": [ok + inner(own, b"\xff" * 6)],
    }
    expected = {name: PER_CASE * len(d) for name, d in (from_stranger | from_peer).items()}
    fdb_before = {(r["mac"], r["where"], r["learned"]) for r in node.ctl("fdb")}
    before = node.counters()
    capture = overlay.hosts[0].capture(overlay.lab.tmpdir / "drops.pcap", f"ether proto {EXPERIMENTAL:#x}",
                                       iface=DEVICE)
    try:
        for sender, cases in ((stranger, from_stranger), (peer, from_peer)):
            hexes = [d.hex() for datagrams in cases.values() for d in datagrams for _ in range(PER_CASE)]
            sender.run(sys.executable, udp_send.__file__, overlay.vtep(0), "4789", *hexes)
        wait_for(lambda: node.counters()["rx_datagrams"] >= before["rx_datagrams"] + sum(expected.values()),
                 timeout=5, what="the daemon to read the crafted datagrams")
    finally:
        capture.stop()
    moved = delta(before, node.counters())
    drops = {k: v for k, v in moved.items() if k.startswith("rx_drop_")}
    print(f"\nsent {sum(expected.values())} bad datagrams ({PER_CASE} per case); counted: {drops}")
    assert drops == expected, moved
    # Every datagram read is one of ours, or a frame the kernels of B and C sent meanwhile
    # (an ARP refresh), which is delivered, not dropped.
    assert moved["rx_datagrams"] == sum(expected.values()) + moved.get("rx_frames", 0), moved
    assert count_pcap_records(capture.path) == 0, "a crafted frame reached the TAP"
    assert {(r["mac"], r["where"], r["learned"]) for r in node.ctl("fdb")} == fdb_before
    assert (overlay.macs[1], overlay.vtep(1), "data") in fdb_before  # the victim's entry, untouched


# -- one daemon's lifecycle -------------------------------------------------------------


@pytest.fixture
def host(lab) -> Host:
    return lab.add_host("a", v4="10.0.0.1/24")


def two_networks(socket: Path) -> dict:
    config = node_config(0, 4)
    config["node"]["status_socket"] = str(socket)
    config["networks"].append({"name": "red", "vni": 200, "device": "red0",
                               "address": "192.168.200.1/24", "vteps": ["10.0.0.2"]})
    return config


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_removing_taps_socket_and_port(host: Host, sig: int):
    socket = host.lab.tmpdir / "run" / "a.sock"
    node = start_overlayd(host, two_networks(socket))
    assert link_exists(host, "blue0") and link_exists(host, "red0") and socket.exists()
    assert node.stop(sig) == 0, node.log()
    assert not link_exists(host, "blue0")
    assert not link_exists(host, "red0")
    assert not socket.exists()
    host.run(sys.executable, "-c", "import socket; "
             "socket.socket(socket.AF_INET, socket.SOCK_DGRAM).bind(('10.0.0.1', 4789))")


def test_configured_mac_is_the_taps_and_survives_a_restart(host: Host):
    socket = host.lab.tmpdir / "run" / "a.sock"
    config = node_config(0, 4)
    config["node"]["status_socket"] = str(socket)
    config["networks"][0]["mac"] = "02-AA-00-00-64-01"
    for _ in range(2):
        node = start_overlayd(host, config)
        assert "link/ether 02:aa:00:00:64:01 " in host.ip("link", "show", "dev", DEVICE).stdout
        assert node.ctl("status")["networks"][0]["mac"] == "02:aa:00:00:64:01"
        assert node.stop(signal.SIGTERM) == 0, node.log()


BAD_CONFIGS = {
    "vni-too-big": (lambda c: c["networks"][0].update(vni=1 << 24), "networks[0].vni"),
    "own-vtep-in-flood-list": (lambda c: c["networks"][0]["vteps"].append("10.0.0.1"),
                               "networks[0].vteps"),
    "no-vtep": (lambda c: c["node"].pop("vtep"), "node.vtep"),
    "unknown-key": (lambda c: c["networks"][0].update(colour="blue"), "networks[0].colour"),
}


@pytest.mark.parametrize("case", BAD_CONFIGS)
def test_bad_config_exits_2_naming_the_field_before_touching_anything(host: Host, case: str):
    change, field = BAD_CONFIGS[case]
    rundir = host.lab.tmpdir / "run"
    config = node_config(0, 4)
    config["node"]["status_socket"] = str(rundir / "a.sock")
    change(config)
    node = start_overlayd(host, config, wait=False)
    assert node.proc.wait(timeout=15) == 2, node.log()
    assert f"  {field}: " in node.log()
    assert not link_exists(host, DEVICE)
    assert not rundir.exists()


def _vtep_not_here(host: Host, config: dict) -> None:
    config["node"]["vtep"] = "10.0.0.9"
    config["networks"][0]["vteps"] = ["10.0.0.2"]


def _device_taken(host: Host, config: dict) -> None:
    host.ip("tuntap", "add", "red0", "mode", "tap")  # a persistent TAP someone else made


def _port_taken(host: Host, config: dict) -> None:
    other = node_config(0, 4)
    other["networks"][0]["device"] = "green0"
    start_overlayd(host, other)  # a first daemon holds 10.0.0.1:4789


def _mtu_too_big(host: Host, config: dict) -> None:
    config["networks"][1]["mtu"] = 65535  # a TAP takes at most 65521: blue0 exists by then


SETUP_FAILURES = {
    "vtep-not-on-host": (_vtep_not_here, "node.vtep"),
    "device-exists": (_device_taken, "networks[1].device"),
    "port-in-use": (_port_taken, "node.vxlan_port"),
    "device-refuses-mtu": (_mtu_too_big, "networks[1]"),
}


@pytest.mark.parametrize("case", SETUP_FAILURES)
def test_setup_failure_exits_3_and_leaves_nothing_behind(host: Host, case: str):
    prepare, field = SETUP_FAILURES[case]
    socket = host.lab.tmpdir / "run" / "a.sock"
    config = two_networks(socket)
    prepare(host, config)
    node = start_overlayd(host, config, wait=False)
    assert node.proc.wait(timeout=15) == 3, node.log()
    assert f"setup failed: {field}" in node.log()
    assert not link_exists(host, "blue0")
    if case == "device-exists":
        [red0] = host.json_ip("-d", "link", "show", "dev", "red0")
        assert red0["linkinfo"]["info_data"]["persist"]  # not ours: left alone
    else:
        assert not link_exists(host, "red0")
    assert not socket.exists()
