"""`overlayctl explain` against three running nodes, and the counters that move when the
explained packet is really sent.

Lab hosts a, b, c (underlay 10.0.0.{1,2,3}/24), an iBGP full mesh in AS 65000:

    a, c  network blue (VNI 100) on TAP blue0, 192.168.100.{1,3}/24; routed subnet
          10.244.{1,3}.0/24 on VNI 1, backend userspace (tun ovl0)
    b     the same on the kernel: blue on bridge blue0 + vx100, 192.168.100.2/24,
          subnet 10.244.2.0/24 with backend kernel (VXLAN device ovl0)
    a     service web, 10.96.0.10:80 -> 10.244.2.7:8080 (a pod address of b; no health checks)

Each explanation is checked for what it must name (peer, VTEP, VNI, subnet route and next
hop node, the kernel entry, the counter), and where the path is overlayd's, the packet is
then sent for real and the counters the explanation named are the ones that move.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

import pytest

from overlayd.status.client import request
from tests.netns.test_three_nodes import delta
from tests.netns.topology import ASN, HOLD_TIME_S, add_underlay_host
from tests.support import require_netns
from tools.lab import Host, Lab
from tools.nodes import Overlayd, start_overlayd, wait_showing_logs

pytestmark = pytest.mark.root

A, B, C = 0, 1, 2
NAMES = ("a", "b", "c")
BACKENDS = ("userspace", "kernel", "userspace")


def vtep(i: int) -> str:
    return f"10.0.0.{i + 1}"


def blue_ip(i: int) -> str:
    return f"192.168.100.{i + 1}"


def config(i: int, lab: Lab) -> dict[str, Any]:
    backend = BACKENDS[i]
    cfg: dict[str, Any] = {
        "node": {"vtep": vtep(i)},
        "bgp": {"asn": ASN, "hold_time": HOLD_TIME_S, "connect_retry": 1,
                "neighbors": [{"address": vtep(j), "asn": ASN} for j in range(3) if j != i]},
        "networks": [{"name": "blue", "vni": 100, "device": "blue0", "address": f"{blue_ip(i)}/24",
                      "backend": backend}],
        "routing": {"vni": 1, "network": "10.244.0.0/16", "subnet": f"10.244.{i + 1}.0/24", "backend": backend,
                    "env_file": str(lab.tmpdir / f"{NAMES[i]}-subnet.env")},
    }
    if i == A:
        cfg["services_network"] = "10.96.0.0/16"
        cfg["services"] = [{"name": "web", "vip": "10.96.0.10", "port": 80, "backends": ["10.244.2.7:8080"],
                            "health": {"type": "none"}}]
    return cfg


@dataclass
class Mesh:
    lab: Lab
    hosts: list[Host]
    nodes: list[Overlayd]

    def query(self, i: int, command: str, **args: str) -> Any:
        return request(self.nodes[i].socket, command, **args)

    def explain(self, i: int, destination: str, *args: str) -> dict[str, Any]:
        """`overlayctl explain ... --json` on node i, as an operator runs it."""
        return self.nodes[i].ctl("explain", destination, *args)

    def counters(self, i: int) -> dict[str, int]:
        return self.query(i, "stats")["counters"]

    def converged(self) -> bool:
        for i in range(3):
            peers = {p["neighbor"]: p["state"] for p in self.query(i, "peers")}
            if peers != {vtep(j): "Established" for j in range(3) if j != i}:
                return False
            if len(self.query(i, "routes")) != 3:
                return False
            macip = {(r["ip"], r["next_hop"]) for r in self.query(i, "rib") if r["type"] == "macip" and r["best"]}
            if not all((blue_ip(j), vtep(j)) in macip for j in range(3) if j != i):
                return False
        return True


@pytest.fixture(scope="module")
def mesh():
    require_netns()
    with Lab() as lab:
        hosts = [add_underlay_host(lab, name, i + 1, 4) for i, name in enumerate(NAMES)]
        nodes = [start_overlayd(h, config(i, lab), wait=False) for i, h in enumerate(hosts)]
        for node in nodes:
            node.wait_ready()
        m = Mesh(lab, hosts, nodes)

        def pinged_and_known() -> bool:
            for i in range(3):  # each blue address speaks once: snooped, announced in a type-2 route
                for j in range(3):
                    if i != j:
                        m.hosts[i].ping(blue_ip(j), timeout=1)
            return m.converged()

        wait_showing_logs(pinged_and_known, "sessions, subnets and every blue address known everywhere", *nodes,
                          timeout=30, interval=0.5)
        yield m
        codes = {node.host.name: node.stop() for node in nodes}
        assert set(codes.values()) == {0}, f"overlayd exit codes {codes}"


def step(result: dict[str, Any], kind: str) -> dict[str, Any]:
    return next(s for s in result["steps"] if s["kind"] == kind)


def test_a_host_on_another_node_names_its_peer_vtep_and_vni(mesh: Mesh):
    r = mesh.explain(A, blue_ip(C))
    assert (r["path"], r["network"], r["verdict"], r["vni"], r["vteps"]) == ("l2", "blue", "unicast", 100, [vtep(C)])
    fdb = step(r, "fdb")
    assert (fdb["origin"]["source"], fdb["origin"]["peer"], fdb["origin"]["rd"]) == ("bgp", vtep(C), f"{vtep(C)}:100")
    assert step(r, "vxlan")["outer"]["dst"] == [vtep(C)] and step(r, "vxlan")["outer"]["udp_dst_port"] == 4789
    assert step(r, "neighbor")["counters"] == ["tx_arp_suppressed"]
    assert step(r, "mtu")["mtu"] == {"device": "blue0", "device_mtu": 1450, "underlay_mtu": 1500,
                                     "overhead_bytes": 50, "fits": True}
    # the same frame, sent: it moves the counters the explanation named, to that VTEP
    before = mesh.counters(A)
    assert mesh.hosts[A].ping(blue_ip(C))
    moved = delta(before, mesh.counters(A))
    assert moved.get("tx_unicast_frames", 0) >= 1 and "tx_flood_frames" not in moved, moved
    # by MAC, in the text operators read: numbered steps naming the VTEP and the VNI
    tap_mac = mesh.query(C, "status")["networks"][0]["mac"]
    text = mesh.nodes[A].ctl_text("explain", tap_mac).splitlines()
    assert text[0] == f"{tap_mac}: network blue (VNI 100): unicast to {vtep(C)} (overlayd)"
    assert text[1].startswith("1. enters TAP blue0") and text[2].startswith(f"2. FDB: {tap_mac} is behind VTEP {vtep(C)}")
    assert f"learned from BGP peer {vtep(C)}: type-2 route RD {vtep(C)}:100" in text[2]
    assert f"-> {vtep(C)}, UDP dst port 4789" in text[3] and "VXLAN VNI 100" in text[3]


def test_an_unknown_address_is_flooded_naming_the_counters_that_then_move(mesh: Mesh):
    r = mesh.explain(A, "192.168.100.77")
    assert (r["verdict"], r["vteps"]) == ("flooded", [vtep(B), vtep(C)])
    assert "no binding for 192.168.100.77" in step(r, "neighbor")["text"]
    assert step(r, "neighbor")["counters"] == ["tx_arp_flooded"]
    assert step(r, "flood")["counters"] == ["tx_flood_frames", "tx_datagrams"]
    assert f"{vtep(B)} (type-3 route RD {vtep(B)}:100 from BGP peer {vtep(B)})" in step(r, "flood")["text"]
    before = mesh.counters(A)
    mesh.hosts[A].run("ping", "-c", "1", "-W", "1", "192.168.100.77", check=False)
    moved = delta(before, mesh.counters(A))
    assert moved.get("tx_arp_flooded", 0) >= 1 and moved.get("tx_flood_frames", 0) >= 1, moved
    assert moved.get("tx_datagrams", 0) >= 2 * moved["tx_flood_frames"], moved
    # a MAC nobody has: unknown unicast, flooded too; on the kernel node the kernel floods it
    unknown = mesh.explain(B, "02:00:00:00:77:77")
    assert (unknown["verdict"], unknown["carrier"], unknown["counters"]) == ("flooded", "kernel", [])
    assert f"`00:00:00:00:00:00 dev vx100 dst {vtep(A)}` (programmed)" in step(unknown, "vxlan")["text"]


def test_a_remote_subnet_names_its_route_and_next_hop_node(mesh: Mesh):
    r = mesh.explain(A, "10.244.3.5", "--from", "10.244.1.7")
    assert (r["path"], r["verdict"], r["vni"], r["vteps"]) == ("routed", "unicast", 1, [vtep(C)])
    route = step(r, "route")
    assert route["entry"] == {"prefix": "10.244.3.0/24", "node": vtep(C), "vtep": vtep(C), "vni": 1,
                              "router_mac": "02:00:0a:00:00:03"}
    assert (route["origin"]["peer"], route["origin"]["rd"]) == (vtep(C), f"{vtep(C)}:1")
    assert "`10.244.0.0/16 dev ovl0` (programmed)" in step(r, "enter")["text"]
    before = mesh.counters(A)
    mesh.hosts[A].run("ping", "-c", "1", "-W", "1", "10.244.3.0", check=False)  # c's address on its ovl0
    assert delta(before, mesh.counters(A)).get("tx_routed_packets", 0) >= 1
    # the kernel node: the route, neighbour and FDB entry it programmed, and that the kernel holds them
    k = mesh.explain(B, "10.244.1.5")
    assert (k["carrier"], k["verdict"], k["vteps"]) == ("kernel", "unicast", [vtep(A)])
    kernel = step(k, "kernel")
    assert kernel["route"] == "10.244.1.0/24 via 10.244.1.0 dev ovl0 onlink"
    assert "`10.244.1.0/24 via 10.244.1.0 dev ovl0 onlink` (programmed)" in kernel["text"], kernel["text"]
    assert f"`02:00:0a:00:00:01 dev ovl0 dst {vtep(A)}` (programmed)" in kernel["text"], kernel["text"]


def test_an_address_without_a_route_is_dropped_naming_the_counter_that_then_moves(mesh: Mesh):
    r = mesh.explain(A, "10.244.99.9")
    assert (r["verdict"], r["counters"]) == ("dropped", ["tx_route_drop_no_route"])
    before = mesh.counters(A)
    mesh.hosts[A].run("ping", "-c", "1", "-W", "1", "10.244.99.9", check=False)
    assert delta(before, mesh.counters(A)).get("tx_route_drop_no_route", 0) >= 1


def test_a_frame_from_a_remote_host_arrives_over_vxlan_from_its_vtep(mesh: Mesh):
    r = mesh.explain(A, blue_ip(A), "--from", blue_ip(C))
    assert (r["direction"], r["verdict"], r["vteps"]) == ("in", "delivered", [vtep(C)])
    assert step(r, "enter")["outer"] == {"src": vtep(C), "dst": [vtep(A)], "udp_dst_port": 4789, "vni": 100}
    assert r["counters"] == ["rx_datagrams", "rx_frames", "rx_bytes"]


def test_a_service_vip_names_its_backend_and_the_node_it_is_routed_to(mesh: Mesh):
    r = mesh.explain(A, "10.96.0.10:80")
    service = step(r, "service")
    assert service["entry"]["backends"] == ["10.244.2.7:8080"] and service["counters"][0] == "svc_new_flows"
    assert step(r, "route")["entry"]["node"] == vtep(B) and r["vteps"] == [vtep(B)]
    refused = mesh.explain(A, "10.96.0.10:81")
    assert (refused["verdict"], refused["counters"]) == ("refused", ["svc_reject_no_service"])


def test_overlayctl_refuses_what_it_cannot_explain_with_exit_3(mesh: Mesh):
    host, socket = mesh.hosts[A], mesh.nodes[A].socket
    bad = host.run(sys.executable, "-m", "overlayd.status.ctl", "-s", socket, "explain", "nowhere", check=False)
    assert bad.returncode == 3 and "bad_request" in bad.stderr
    gone = host.run(sys.executable, "-m", "overlayd.status.ctl", "-s", socket + ".nope", "explain", blue_ip(C),
                    check=False)
    assert gone.returncode == 2
