"""A restarted node is reachable at once (issue 17): stable MACs, announcements on start.

Three nodes in iBGP (hold time 9 s, as the issue measured it), each with

    network blue (VNI 100, TAP blue0, 192.168.100.N/24)   -- node2 with an explicit `mac:`
    network red  (VNI 200, TAP red0, 192.168.200.N/24)    -- node1 only: two networks, two MACs
    routing: tap device ovl0, subnet 10.244.N.0/24, a pod 10.244.N.2 on the bridge cni0

With the ARP caches warm (every node has pinged every other node's blue address
and every pod every other pod), node3's overlayd is killed (SIGKILL) and started
again at once with the same config, then stopped (SIGTERM) and started again:
each time every peer pings node3's blue address, and every pod node3's pod, within
2 s of the restart, and node3's MACs are the ones it had.
"""

from __future__ import annotations

import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from overlayd.status.client import request
from tests.support import require_netns
from tools.lab import Host, Lab, wait_for
from tools.nodes import Overlayd, start_overlayd, wait_showing_logs

pytestmark = pytest.mark.root

ASN = 65000
HOLD_S = 9
DEADLINE_S = 2.0
EXPLICIT_MAC = "02:aa:00:00:00:02"


def blue(i: int) -> str:
    return f"192.168.100.{i + 1}"


def config(lab: Lab, i: int) -> dict[str, Any]:
    networks = [{"name": "blue", "vni": 100, "device": "blue0", "address": f"{blue(i)}/24"}]
    if i == 1:
        networks[0]["mac"] = EXPLICIT_MAC
    if i == 0:
        networks.append({"name": "red", "vni": 200, "device": "red0", "address": f"192.168.200.{i + 1}/24"})
    return {
        "node": {"vtep": f"10.0.0.{i + 1}"},
        "bgp": {"asn": ASN, "hold_time": HOLD_S, "connect_retry": 1,
                "neighbors": [{"address": f"10.0.0.{j + 1}", "asn": ASN} for j in range(3) if j != i]},
        "networks": networks,
        "routing": {"vni": 1, "device_type": "tap", "network": "10.244.0.0/16", "subnet": f"10.244.{i + 1}.0/24",
                    "env_file": str(lab.tmpdir / f"n{i}.env")},
    }


class Mesh:
    def __init__(self, lab: Lab):
        self.lab = lab
        self.hosts: list[Host] = []
        self.pods: list[Host] = []
        self.nodes: list[Overlayd] = []

    def status(self, i: int) -> dict[str, Any]:
        return request(self.nodes[i].socket, "status")

    def macs(self, i: int) -> dict[str, str]:
        return {n["name"]: n["mac"] for n in self.status(i)["networks"]}

    def converged(self) -> bool:
        return all(request(n.socket, "status")["bgp"]["peers_established"] == 2 for n in self.nodes) and \
            all(len(request(n.socket, "routes")) == 3 for n in self.nodes)


def ping(host: Host, address: str) -> bool:
    return host.run("ping", "-c", "1", "-W", "1", address, check=False, timeout=5).returncode == 0


@pytest.fixture(scope="module")
def mesh():
    require_netns()
    with Lab() as lab:
        m = Mesh(lab)
        for i in range(3):
            h = lab.add_host(f"n{i + 1}", v4=f"10.0.0.{i + 1}/24")
            h.sysctl("net.ipv4.ip_forward", 1)
            h.ip("link", "add", "cni0", "type", "bridge")
            h.ip("addr", "add", f"10.244.{i + 1}.1/24", "dev", "cni0")
            h.ip("link", "set", "cni0", "up")
            m.hosts.append(h)
            m.pods.append(lab.add_pod(h, "p1", "cni0", f"10.244.{i + 1}.2/24", f"10.244.{i + 1}.1"))
        m.nodes = [start_overlayd(h, config(lab, i), wait=False) for i, h in enumerate(m.hosts)]
        for node in m.nodes:
            node.wait_ready()
        wait_showing_logs(m.converged, "the mesh to converge", *m.nodes, timeout=20)
        yield m
        codes = {n.host.name: n.stop() for n in m.nodes}
        assert set(codes.values()) == {0}, codes


def warm(m: Mesh) -> None:
    """Every ARP cache holds every peer's blue address, every pod's path is used."""
    for i in range(3):
        for j in range(3):
            if i != j:
                wait_for(lambda: ping(m.hosts[i], blue(j)), timeout=10, what=f"n{i + 1} -> {blue(j)}")
                wait_for(lambda: ping(m.pods[i], f"10.244.{j + 1}.2"), timeout=10, what=f"pod{i + 1} -> pod{j + 1}")


def test_macs_are_derived_stable_and_distinct(mesh: Mesh):
    macs = [mesh.macs(i) for i in range(3)]
    assert macs[1]["blue"] == EXPLICIT_MAC
    assert macs[0]["blue"] != macs[0]["red"]
    everyone = [mac for m in macs for mac in m.values()]
    assert len(set(everyone)) == len(everyone)
    for mac in everyone:  # locally administered unicast
        first = int(mac.split(":")[0], 16)
        assert first & 0x02 and not first & 0x01, mac
    sources = {n["name"]: n["mac_source"] for n in mesh.status(1)["networks"]}
    assert sources == {"blue": "config"}
    assert {n["mac_source"] for n in mesh.status(0)["networks"]} == {"derived"}
    assert mesh.status(0)["routing"]["device_mac_source"] == "router"
    print(mesh.nodes[0].ctl_text("status"))


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_a_restarted_node_is_reachable_within_two_seconds(mesh: Mesh, how):
    warm(mesh)
    victim = 2
    before = mesh.macs(victim)
    routing_mac = mesh.status(victim)["routing"]["device_mac"]
    mesh.nodes[victim].stop(how)
    mesh.nodes[victim] = node = start_overlayd(mesh.hosts[victim], config(mesh.lab, victim), wait=False)
    node.wait_ready()
    ready = time.monotonic()
    targets = [(mesh.hosts[i], blue(victim)) for i in range(2)] + [(mesh.pods[i], "10.244.3.2") for i in range(2)]

    def reached(pair: tuple[Host, str]) -> float:
        host, address = pair
        wait_for(lambda: ping(host, address), timeout=30, interval=0.05, what=f"{host.name} -> {address}")
        return time.monotonic() - ready

    with ThreadPoolExecutor(len(targets)) as pool:
        took = list(pool.map(reached, targets))
    print(f"{signal.Signals(how).name} + restart: " + ", ".join(
        f"{h.name} -> {a} {t:.2f} s" for (h, a), t in zip(targets, took)) + " after ready")
    assert max(took) <= DEADLINE_S, took
    assert mesh.macs(victim) == before
    assert mesh.status(victim)["routing"]["device_mac"] == routing_mac
    wait_showing_logs(mesh.converged, "the mesh to converge again", *mesh.nodes, timeout=20)
    alarms = [a for i in range(3) for a in mesh.status(i)["bgp"]["alarms"] if "duplicate" in a]
    assert not alarms, alarms


def test_a_new_mac_is_announced_so_the_peers_follow_at_once(mesh: Mesh):
    """A MAC that does change (here: a `mac:` put in node3's config) reaches the peers' ARP caches
    by the gratuitous ARP sent when the flood list fills, not after their entries go stale."""
    warm(mesh)
    victim, new_mac = 2, "02:bb:00:00:00:03"
    cfg = config(mesh.lab, victim)
    cfg["networks"][0]["mac"] = new_mac
    mesh.nodes[victim].stop(signal.SIGTERM)
    mesh.nodes[victim] = node = start_overlayd(mesh.hosts[victim], cfg, wait=False)
    node.wait_ready()
    ready = time.monotonic()
    for i in range(2):
        wait_for(lambda: ping(mesh.hosts[i], blue(victim)), timeout=DEADLINE_S + 1, interval=0.05,
                 what=f"n{i + 1} -> {blue(victim)} at its new MAC")
    took = time.monotonic() - ready
    neigh = {n["dst"]: n.get("lladdr") for n in mesh.hosts[0].json_ip("neigh", "show", "dev", "blue0")}
    print(f"new MAC {new_mac}: the peers reach it {took:.2f} s after ready; n1's cache: {neigh.get(blue(victim))}")
    assert neigh.get(blue(victim)) == new_mac and took <= DEADLINE_S
    mesh.nodes[victim].stop(signal.SIGTERM)  # back to the mesh's own config for what follows
    mesh.nodes[victim] = start_overlayd(mesh.hosts[victim], config(mesh.lab, victim))
    wait_showing_logs(mesh.converged, "the mesh to converge again", *mesh.nodes, timeout=20)
