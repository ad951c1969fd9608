"""SIGHUP reloads the config (issue 13 item 7): what changed is applied, what did not carries on.

Three nodes in iBGP, userspace networks:

    network blue (VNI 100, TAP blue0, 192.168.100.N/24) on every node
    n1 starts peering with n2 only (n3 asks, and is refused: not a neighbor yet)

The tests run in order, each from where the previous one left the nodes:

1. n1 and n3 gain network red (VNI 200) and n1 gains neighbor n3 and a static VTEP,
   by SIGHUP: the new session and network come up, while a ping n1 -> n2 over blue
   runs through the reload without a loss and the n1-n2 session keeps its uptime.
2. A file that does not parse, one that changes a key only a restart changes, and one
   whose new network's device is taken are each refused as a whole, with the reason
   logged (and returned to `overlayctl reload`): nothing of them is applied.
3. n1 drops neighbor n2 and network red: n2 gets a Cease, n1 forgets n2's routes,
   red0 is gone and n3's red flood list no longer has n1; a ping n1 -> n3 runs through it.

Then, on a host of its own, a kernel-backend network without BGP: its static `vteps` and
`fdb` are programmed into the kernel's VXLAN device, and a reload changes them there.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from typing import Any

import pytest

from overlayd.status.client import request
from tests.netns.test_kernel_segment import kernel_tables
from tests.support import require_netns
from tools.lab import Host, Lab
from tools.nodes import Overlayd, start_overlayd, wait_showing_logs

pytestmark = pytest.mark.root

ASN = 65000
PING_INTERVAL_S = 0.02


def vtep(i: int) -> str:
    return f"10.0.0.{i + 1}"


def config(i: int, neighbors: list[int], red: bool = False, vteps: tuple[str, ...] = (),
           **node: Any) -> dict[str, Any]:
    networks = [{"name": "blue", "vni": 100, "device": "blue0", "address": f"192.168.100.{i + 1}/24",
                 "vteps": list(vteps)}]
    if red:
        networks.append({"name": "red", "vni": 200, "device": "red0", "address": f"192.168.200.{i + 1}/24"})
    return {
        "node": {"vtep": vtep(i), **node},
        "bgp": {"asn": ASN, "hold_time": 9, "connect_retry": 1,
                "neighbors": [{"address": vtep(j), "asn": ASN} for j in neighbors]},
        "networks": networks,
    }


class Trio:
    def __init__(self, lab: Lab):
        self.lab = lab
        self.hosts: list[Host] = []
        self.nodes: list[Overlayd] = []

    def peers(self, i: int) -> dict[str, dict[str, Any]]:
        return {p["neighbor"]: p for p in request(self.nodes[i].socket, "peers")}

    def established(self, i: int, j: int) -> bool:
        return self.peers(i).get(vtep(j), {}).get("state") == "Established"

    def flood_list(self, i: int, network: str) -> list[str]:
        nets = {n["name"]: n for n in request(self.nodes[i].socket, "status")["networks"]}
        return nets[network]["flood_list"] if network in nets else []


class Pinger:
    """PINGS pings 20 ms apart from `host` to `address`, the reload somewhere in the middle."""

    PINGS = 100

    def __init__(self, host: Host, address: str):
        self.proc = host.popen("ping", "-n", "-c", str(self.PINGS), "-i", str(PING_INTERVAL_S), "-W", "1", address,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        time.sleep(0.3)  # some replies before the reload

    def wait(self) -> tuple[int, int]:
        """(sent, replies), once every ping is answered or timed out."""
        out = self.proc.communicate(timeout=15)[0].decode()
        m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
        assert m, out
        return int(m.group(1)), int(m.group(2))


@pytest.fixture(scope="module")
def trio():
    require_netns()
    with Lab() as lab:
        t = Trio(lab)
        for i in range(3):
            t.hosts.append(lab.add_host(f"n{i + 1}", v4=f"{vtep(i)}/24"))
        first = [config(0, [1]), config(1, [0, 2]), config(2, [0, 1])]
        t.nodes = [start_overlayd(h, first[i], wait=False) for i, h in enumerate(t.hosts)]
        for node in t.nodes:
            node.wait_ready()
        wait_showing_logs(lambda: t.established(0, 1) and t.established(1, 2) and t.established(2, 1),
                          "n1-n2 and n2-n3 Established", *t.nodes, timeout=20)
        assert not t.established(0, 2) and vtep(2) not in t.peers(0)
        yield t
        codes = {n.host.name: n.stop() for n in t.nodes}
        assert set(codes.values()) == {0}, codes


def test_a_neighbor_a_network_and_a_static_vtep_added_while_traffic_flows(trio: Trio):
    t = trio
    n1 = t.hosts[0]
    assert n1.ping("192.168.100.2", timeout=10)
    uptime = t.peers(0)[vtep(1)]["uptime_s"]
    assert "reload:" in t.nodes[2].reload(config(2, [0, 1], red=True))
    pinger = Pinger(n1, "192.168.100.2")
    start = time.monotonic()
    line = t.nodes[0].reload(config(0, [1, 2], red=True, vteps=("10.0.0.9",)))
    sent, got = pinger.wait()
    print(line)
    assert "applied: neighbors + 10.0.0.3; networks + red; static vteps/fdb of blue" in line, line
    wait_showing_logs(lambda: t.established(0, 2) and t.established(2, 0), "n1-n3 Established after the reload",
                      t.nodes[0], t.nodes[2], timeout=10)
    up = time.monotonic() - start
    assert n1.ping("192.168.200.3", timeout=10), "n1 -> n3 over the new network red"
    print(f"reload: n1-n3 Established {up:.2f} s after SIGHUP; ping n1 -> n2 over blue during it: "
          f"{got}/{sent} replies; n1-n2 uptime {uptime} s before, {t.peers(0)[vtep(1)]['uptime_s']} s after")
    assert sent == Pinger.PINGS and got == sent, (sent, got)
    assert t.peers(0)[vtep(1)]["uptime_s"] >= uptime + 1.0  # the same session, never reset
    assert "10.0.0.9" in t.flood_list(0, "blue") and t.flood_list(0, "red") == [vtep(2)]
    addr = t.hosts[0].json_ip("addr", "show", "dev", "red0")
    assert {a["local"] for a in addr[0]["addr_info"]} >= {"192.168.200.1"}


def test_a_bad_or_restart_only_config_is_refused_whole(trio: Trio):
    t = trio
    node = t.nodes[0]
    running = node.config
    uptime = t.peers(0)[vtep(1)]["uptime_s"]

    node.write_config(running)
    node.config_path.write_text("networks: [\n")
    line = node.reload()
    assert "reload refused" in line and str(node.config_path) in line, line

    # a file that removes neighbor n2 but also changes the VXLAN port: none of it happens
    node.write_config({**config(0, [2], red=True), "node": {"vtep": vtep(0), "vxlan_port": 4790}})
    out = t.hosts[0].run(sys.executable, "-m", "overlayd.status.ctl", "-s", node.socket, "reload", check=False)
    assert out.returncode == 3 and "node.vxlan_port" in out.stderr and "reload_refused" in out.stderr, out
    assert "node.vxlan_port" in node.reload_lines()[-1]

    # a new network whose device exists already: refused before anything else is touched
    t.hosts[0].ip("link", "add", "taken0", "type", "bridge")
    try:
        bad = config(0, [2], red=True)
        bad["networks"].append({"name": "green", "vni": 300, "device": "taken0"})
        line = node.reload(bad)
        assert "reload refused" in line and "networks[2].device: taken0 already exists" in line, line
    finally:
        t.hosts[0].ip("link", "del", "taken0")
    print("\n".join(node.reload_lines()[-3:]))
    assert t.established(0, 1) and t.peers(0)[vtep(1)]["uptime_s"] >= uptime
    assert {n["name"] for n in request(node.socket, "status")["networks"]} == {"blue", "red"}
    node.write_config(running)  # the file says again what runs


def test_a_removed_neighbor_and_network_go_cleanly(trio: Trio):
    t = trio
    n1 = t.hosts[0]
    assert n1.ping("192.168.100.3", timeout=10)
    assert vtep(0) in t.flood_list(2, "red")
    pinger = Pinger(n1, "192.168.100.3")
    out = n1.run(sys.executable, "-m", "overlayd.status.ctl", "-s", t.nodes[0].socket, "reload", check=False)
    assert out.returncode == 0 and "reloaded" in out.stdout  # nothing changed in the file yet
    line = t.nodes[0].reload(config(0, [2]))
    sent, got = pinger.wait()
    print(line)
    assert "applied: neighbors - 10.0.0.2; networks - red" in line, line
    print(f"reload: ping n1 -> n3 over blue during it: {got}/{sent} replies")
    assert sent == Pinger.PINGS and got == sent, (sent, got)
    assert vtep(1) not in t.peers(0)
    assert not [r for r in request(t.nodes[0].socket, "rib") if r["peer"] == vtep(1)]
    wait_showing_logs(lambda: t.peers(1)[vtep(0)]["state"] != "Established", "n2 to see its session with n1 end",
                      t.nodes[1], timeout=5)
    # (its reconnects are refused from now on, so the last error moves on: the log has the Cease)
    cease = [line for line in t.nodes[1].log().splitlines() if f"peer {vtep(0)}: down: peer sent NOTIFICATION" in line]
    assert cease and "cease/administrative shutdown" in cease[-1], cease
    assert n1.run("ip", "link", "show", "red0", check=False).returncode != 0, "red0 outlived its network"
    wait_showing_logs(lambda: vtep(0) not in t.flood_list(2, "red"), "n3's red flood list to lose n1",
                      t.nodes[2], timeout=5)
    assert vtep(1) not in t.flood_list(0, "blue") and "10.0.0.9" not in t.flood_list(0, "blue")
    assert t.established(0, 2)


def test_a_kernel_segments_static_entries_are_programmed_and_follow_a_reload():
    require_netns()
    with Lab() as lab:
        host = lab.add_host("k1", v4="10.0.0.1/24")
        net = {"name": "blue", "vni": 100, "device": "br-blue", "backend": "kernel",
               "vteps": ["10.0.0.9"], "fdb": [{"mac": "02:00:00:00:09:01", "vtep": "10.0.0.9"}]}
        node = start_overlayd(host, {"node": {"vtep": "10.0.0.1"}, "networks": [net]})
        try:
            zero = "00:00:00:00:00:00"
            want = {(zero, "10.0.0.9"), ("02:00:00:00:09:01", "10.0.0.9")}
            wait_showing_logs(lambda: set(kernel_tables(host).fdb) == want, "vx100 to hold the static entries",
                              node, timeout=5)
            net = {**net, "vteps": ["10.0.0.8"], "fdb": [{"mac": "02:00:00:00:09:01", "vtep": "10.0.0.8"},
                                                         {"mac": "02:00:00:00:09:02", "vtep": "10.0.0.8"}]}
            line = node.reload({"node": {"vtep": "10.0.0.1"}, "networks": [net]})
            assert "applied: static vteps/fdb of blue" in line, line
            want = {(zero, "10.0.0.8"), ("02:00:00:00:09:01", "10.0.0.8"), ("02:00:00:00:09:02", "10.0.0.8")}
            wait_showing_logs(lambda: set(kernel_tables(host).fdb) == want, "vx100 to follow the reload",
                              node, timeout=5)
            print(host.run("bridge", "fdb", "show", "dev", "vx100").stdout)
        finally:
            assert node.stop() == 0
