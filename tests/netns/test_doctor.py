"""`overlayctl doctor` and `topology` against running daemons, and the daemon's sd_notify.

On the BGP mesh (`bgp_overlay`: a, b, c, iBGP, network blue, IPv4 and IPv6 underlays):
doctor passes on every node (exit 0), and its probes arrive (each peer's
rx_drop_unknown_vni moves by exactly one per probe); a TAP MTU set too large
is an error (exit 4) naming the device and `ip link set ... mtu`; rp_filter=1
on the TAP a warning (exit 1) with the loose setting as the fix. topology
lists every session Established, and Graphviz reads its DOT.

In a lab of their own: a VTEP where nothing listens on the VXLAN port (ICMP
port unreachable) and a route whose MTU is below the overlay's (the kernel's
EMSGSIZE and IP_MTU) are errors; overlayd tells a fake NOTIFY_SOCKET READY=1
once its TAP and status socket are up, and STOPPING=1 on SIGTERM.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from typing import Any

import pytest

from overlayd.status.client import request
from tests.netns.topology import DEVICE, BgpOverlay
from tests.support import require_programs
from tools.lab import Host, Lab
from tools.nodes import Overlayd, start_overlayd

pytestmark = pytest.mark.root


def doctor(node: Overlayd, *args: str) -> tuple[int, dict[str, Any], str]:
    """Run `overlayctl doctor` in the node's host: (exit status, --json result, text output)."""
    ctl = (sys.executable, "-m", "overlayd.status.ctl", "-s", node.socket, "doctor", *args)
    as_json = node.host.run(*ctl, "--json", check=False)
    text = node.host.run(*ctl, check=False)
    assert as_json.returncode == text.returncode, (as_json, text)
    return as_json.returncode, json.loads(as_json.stdout), text.stdout


def problems(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(f["severity"], f["check"], f["subject"]) for f in result["findings"]
            if f["severity"] in ("warning", "error")]


def test_doctor_passes_on_a_healthy_mesh_and_its_probes_arrive(bgp_overlay: BgpOverlay):
    bgp_overlay.converge()
    before = bgp_overlay.counters()
    for i, node in enumerate(bgp_overlay.nodes):
        code, result, text = doctor(node)
        assert (code, problems(result)) == (0, []), text
        checks = {(f["check"], f["subject"]) for f in result["findings"]}
        others = [bgp_overlay.vtep(j) for j in bgp_overlay.others(i)]
        assert {("mtu", DEVICE), *(("bgp", v) for v in others), *(("vxlan-port", v) for v in others),
                *(("path-mtu", v) for v in others)} <= checks, text
        assert result["probe_bytes"] == 1500
    print(text)
    moved = [after["rx_drop_unknown_vni"] - b["rx_drop_unknown_vni"] for b, after in
             zip(before, bgp_overlay.counters())]
    assert moved == [4, 4, 4]  # each of the two others ran doctor twice (--json, text): a probe each time


def test_doctor_flags_a_tap_mtu_too_large_for_the_underlay(bgp_overlay: BgpOverlay):
    bgp_overlay.converge()
    a = bgp_overlay.nodes[0]
    fits = 1500 - (50 if bgp_overlay.family == 4 else 70)
    a.host.ip("link", "set", DEVICE, "mtu", "1500")
    try:
        code, result, text = doctor(a)
    finally:
        a.host.ip("link", "set", DEVICE, "mtu", str(fits))
    assert code == 4, text
    assert problems(result) == [("error", "mtu", DEVICE)], text
    [f] = [f for f in result["findings"] if f["severity"] == "error"]
    assert f"mtu 1500 is above {fits}" in f["message"]
    assert f["fix"].startswith(f"ip link set {DEVICE} mtu {fits}")
    assert f"fix: ip link set {DEVICE} mtu {fits}" in text
    print(text)
    assert doctor(a)[0] == 0


def test_doctor_warns_of_strict_rp_filter_on_the_tap(bgp_overlay: BgpOverlay):
    bgp_overlay.converge()
    a = bgp_overlay.nodes[0]
    a.host.sysctl(f"net.ipv4.conf.{DEVICE}.rp_filter", 1)
    try:
        code, result, text = doctor(a, "--no-probe")
    finally:
        a.host.sysctl(f"net.ipv4.conf.{DEVICE}.rp_filter", 0)
    assert code == 1, text
    assert problems(result) == [("warning", "rp_filter", DEVICE)], text
    [f] = [f for f in result["findings"] if f["severity"] == "warning"]
    assert f["message"].startswith("rp_filter=1 (strict)")
    assert f["fix"].startswith(f"sysctl -w net.ipv4.conf.{DEVICE}.rp_filter=2")
    print(text)


def test_topology_lists_every_session_and_graphviz_reads_its_dot(bgp_overlay: BgpOverlay):
    require_programs("dot")
    bgp_overlay.converge()
    for i, node in enumerate(bgp_overlay.nodes):
        t = node.ctl("topology")
        others = [bgp_overlay.vtep(j) for j in bgp_overlay.others(i)]
        assert [(s["neighbor"], s["state"]) for s in t["sessions"]] == [(v, "Established") for v in others]
        assert [(v["vtep"], v["networks"], v["macs"]) for v in t["vteps"]] == [(v, ["blue"], 1) for v in others]
    a = bgp_overlay.nodes[0]
    text = a.ctl_text("topology")
    for v in (bgp_overlay.vtep(1), bgp_overlay.vtep(2)):
        assert any(line.startswith(v) and "Established" in line for line in text.splitlines()), text
    dot = a.ctl_text("topology", "--format", "dot")
    done = subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stderr) == (0, ""), dot
    for v in (bgp_overlay.vtep(0), bgp_overlay.vtep(1), bgp_overlay.vtep(2)):
        assert f"<title>{v}</title>" in done.stdout
    svg = a.ctl_text("topology", "--format", "svg")
    assert "<svg" in svg and "BGP Established" in svg
    print(text)
    print(dot)


# -- a lab of their own ------------------------------------------------------------------------------


def static_node(host: Host, peers: list[str]) -> Overlayd:
    return start_overlayd(host, {"node": {"vtep": host.v4}, "networks": [
        {"name": "blue", "vni": 100, "device": DEVICE, "address": "192.168.100.1/24", "vteps": peers}]})


def test_doctor_flags_a_vtep_without_a_listener_and_a_route_too_small(lab: Lab):
    a = lab.add_host("a", v4="10.0.0.1/24")
    b = lab.add_host("b", v4="10.0.0.2/24")  # no overlayd: its kernel answers port unreachable ...
    # ... to every datagram a's overlayd floods there too (its gratuitous ARP, the TAP's own
    # chatter), which can spend b's ICMP rate limit for a (1/s, burst 6) before a probe arrives
    b.sysctl("net.ipv4.icmp_ratelimit", 0)
    lab.add_host("c", v4="10.0.0.3/24")
    c = static_node(lab.hosts["c"], ["10.0.0.1"])
    node = static_node(a, ["10.0.0.2", "10.0.0.3"])
    a.ip("route", "add", "10.0.0.3/32", "dev", "eth0", "mtu", "1400")
    code, result, text = doctor(node)
    print(text)
    assert code == 4
    assert problems(result) == [("error", "path-mtu", "10.0.0.3"), ("error", "vxlan-port", "10.0.0.2")], text
    by = {(f["check"], f["subject"]): f for f in result["findings"]}
    assert "nothing listens on UDP port 4789" in by["vxlan-port", "10.0.0.2"]["message"]
    assert "the path carries 1400 bytes, the overlay sends 1500" in by["path-mtu", "10.0.0.3"]["message"]
    assert by["path-mtu", "10.0.0.3"]["fix"].startswith("set node.underlay_mtu: 1400")
    assert c.ctl("stats")["counters"]["rx_drop_unknown_vni"] == 0  # too big to leave a
    a.ip("route", "del", "10.0.0.3/32")
    assert problems(doctor(node)[1]) == [("error", "vxlan-port", "10.0.0.2")]
    assert c.ctl("stats")["counters"]["rx_drop_unknown_vni"] == 2  # --json and text: a probe each


ZERO_CHECKSUM_SENDER = """
import socket, sys
s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_UDP, 101, 1)  # UDP_NO_CHECK6_TX: send with a zero checksum (RFC 6935)
s.sendto(bytes(8) + bytes(64), (sys.argv[1], 4789))
"""


def test_doctor_warns_when_the_kernel_drops_ipv6_vxlan_with_a_zero_checksum(lab: Lab):
    a = lab.add_host("a", v6="fd00::1/64")
    b = lab.add_host("b", v6="fd00::2/64")
    node = start_overlayd(a, {"node": {"vtep": "fd00::1"}, "networks": [
        {"name": "blue", "vni": 100, "device": DEVICE, "vteps": ["fd00::2"]}]})
    before = node.counters()["rx_datagrams"]
    b.run(sys.executable, "-c", ZERO_CHECKSUM_SENDER, "fd00::1")
    code, result, text = doctor(node, "--no-probe")
    print(text)
    assert code == 1 and problems(result) == [("warning", "udp-checksum", "fd00::1")], text
    [f] = [f for f in result["findings"] if f["severity"] == "warning"]
    assert "dropped 1 IPv6 UDP datagram" in f["message"] and "Udp6InCsumErrors" in f["message"]
    assert node.counters()["rx_datagrams"] == before  # the kernel dropped it before overlayd saw it


def test_overlayd_notifies_ready_after_its_tap_and_socket_and_stopping_on_sigterm(lab: Lab):
    host = lab.add_host("a", v4="10.0.0.1/24")
    path = lab.tmpdir / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as manager:
        manager.bind(str(path))
        manager.settimeout(15)
        node = start_overlayd(host, {"node": {"vtep": "10.0.0.1"},
                                     "networks": [{"name": "blue", "vni": 100, "device": DEVICE}]},
                              wait=False, env={"NOTIFY_SOCKET": str(path)})
        ready = manager.recv(4096).decode()
        assert ready.splitlines()[0] == "READY=1", ready
        # at READY=1 the TAP exists and the status socket answers
        assert host.json_ip("link", "show", "dev", DEVICE)[0]["ifname"] == DEVICE
        assert request(node.socket, "status")["node"] == "a"
        assert node.stop() == 0
        assert manager.recv(4096) == b"STOPPING=1"
