"""The routed kernel backends end to end: kernel VXLAN, host-gw, direct routing, and a
mixed cluster, each with three nodes and a pod per node made by the real CNI plugins.

Underlay (lab hosts on one bridge):

    node1 10.0.0.1/24 ---+                         +--- node3 10.0.1.3/24   ("far" scenarios)
    node2 10.0.0.2/24 ---+--- r 10.0.0.254/24, 10.0.1.254/24 (routes between the two)

In the "far" scenarios node3 is on another underlay subnet, behind the router r:
host-gw cannot reach it (flannel's rule, shown in `overlayctl routes`), direct
routing takes host-gw between node1 and node2 and the tunnel to node3. In the
others node3 sits at 10.0.0.3/24 with the rest.

Every node runs overlayd with `routing:` (VNI 1, 10.244.0.0/16, subnet
10.244.N.0/24), an iBGP full mesh, the scenario's backend, and writes its CNI
conflist; one pod per node gets its address from it; `ipmasq` is on, and a
server outside the cluster network (host "srv", 10.0.0.200) records the
source addresses it sees. What each test asserts:
pods ping and a TCP stream crosses; the kernel tables equal what the RIB
implies, computed here from `overlayctl routes` rows (independently of the
planner); an entry deleted by hand comes back; SIGKILL and a restart leave no
stale or duplicate entry and never touch another protocol's route; a clean
stop leaves nothing of overlayd's behind (checked in the fixture's teardown).
"""

from __future__ import annotations

import ipaddress
import json
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from overlayd.status.client import request
from tests.netns import udp_send, udp_sources
from tests.netns.cni import CniPods, Pod, plugin_config, require_cni
from tests.netns.test_routed_subnets import iperf3, ping_all
from tests.support import require_netns, require_programs
from tools.lab import Host, Lab, wait_for
from tools.nodes import Overlayd, start_overlayd, wait_showing_logs

pytestmark = pytest.mark.root

ASN = 65000
PROTO = 149
SERVER = "10.0.0.200"
NETWORK = ipaddress.ip_network("10.244.0.0/16")
DEVICE = "ovl0"
NETWORK6 = ipaddress.ip_network("fd00:244::/48")
SCENARIOS = {  # backends per node, direct routing, node3 behind a router, IPv6 pods too
    "kernel": (("kernel", "kernel", "kernel"), False, True, True),
    "host-gw": (("host-gw", "host-gw", "host-gw"), False, True, False),
    "direct-routing": (("kernel", "kernel", "kernel"), True, True, True),
    "mixed": (("userspace", "kernel", "host-gw"), False, False, False),
}


def subnet(i: int) -> ipaddress.IPv4Network:
    return ipaddress.ip_network(f"10.244.{i + 1}.0/24")


def subnet6(i: int) -> ipaddress.IPv6Network:
    return ipaddress.ip_network(f"fd00:244:0:{i + 1}::/64")


@dataclass
class Cluster:
    name: str
    lab: Lab
    backends: tuple[str, ...]
    direct: bool
    far: bool
    ipv6: bool
    hosts: list[Host]
    server: Host
    nodes: list[Overlayd] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)

    def vtep(self, i: int) -> str:
        return f"10.0.1.{i + 1}" if self.far and i == 2 else f"10.0.0.{i + 1}"

    def config(self, i: int) -> dict[str, Any]:
        routing: dict[str, Any] = {
            "vni": 1, "network": str(NETWORK), "subnet": str(subnet(i)), "backend": self.backends[i],
            "env_file": str(self.lab.tmpdir / f"node{i + 1}-subnet.env"),
            "cni_conflist": str(self.lab.tmpdir / f"node{i + 1}-10-overlayd.conflist"),
            "ipmasq": True,
        }
        if self.direct:
            routing["direct_routing"] = True
        if self.ipv6:
            routing.update(network6=str(NETWORK6), subnet6=str(subnet6(i)))
        return {
            "node": {"vtep": self.vtep(i)},
            "bgp": {"asn": ASN, "hold_time": 3, "connect_retry": 1,
                    "neighbors": [{"address": self.vtep(j), "asn": ASN} for j in range(3) if j != i]},
            "routing": routing,
        }

    def start(self, i: int) -> Overlayd:
        node = start_overlayd(self.hosts[i], self.config(i), wait=False)
        if i < len(self.nodes):
            self.nodes[i] = node
        else:
            self.nodes.append(node)
        return node

    def start_all(self, pods: CniPods) -> None:
        """Start the three nodes, wait until every table holds every subnet, add a pod per node."""
        for i in range(3):
            self.start(i)
        for node in self.nodes:
            node.wait_ready()
        wait_showing_logs(self.converged, "every subnet in every table, programmed", *self.nodes, timeout=20)
        for i, host in enumerate(self.hosts):
            conflist = json.loads(Path(self.config(i)["routing"]["cni_conflist"]).read_text())
            self.pods.append(pods.add(host, "p1", plugin_config(conflist, data_dir=self.lab.tmpdir / f"cni-{i}")))

    def routes(self, i: int) -> list[dict[str, Any]]:
        return request(self.nodes[i].socket, "routes")

    def reaches(self, i: int, j: int) -> bool:
        """Whether node i has a way to node j's pods in this scenario."""
        if self.backends[i] == "host-gw" or self.backends[j] == "host-gw":
            return not (self.far and 2 in (i, j))
        return True

    def converged(self) -> bool:
        for i in range(3):
            rows = {r["prefix"]: r for r in self.routes(i)}
            want = {str(subnet(j)) for j in range(3)} | ({str(subnet6(j)) for j in range(3)} if self.ipv6 else set())
            if want - set(rows):
                return False
            if any(r["kernel"] not in (None, "yes") and not r["kernel"].startswith("no route") for r in rows.values()):
                return False
        return True


def add_underlay(lab: Lab, far: bool) -> tuple[list[Host], Host]:
    hosts = [lab.add_host("node1", v4="10.0.0.1/24"), lab.add_host("node2", v4="10.0.0.2/24"),
             lab.add_host("node3", v4="10.0.1.3/24" if far else "10.0.0.3/24")]
    server = lab.add_host("srv", v4=f"{SERVER}/24")
    if far:
        r = lab.add_host("r", v4="10.0.0.254/24")
        r.ip("addr", "add", "10.0.1.254/24", "dev", "eth0")
        r.sysctl("net.ipv4.ip_forward", 1)
        r.sysctl("net.ipv4.conf.all.send_redirects", 0)
        r.sysctl("net.ipv4.conf.eth0.send_redirects", 0)
        for h in hosts[:2]:
            h.ip("route", "add", "10.0.1.0/24", "via", "10.0.0.254")
        hosts[2].ip("route", "add", "10.0.0.0/24", "via", "10.0.1.254")
        server.ip("route", "add", "10.0.1.0/24", "via", "10.0.0.254")
    for h in hosts:
        h.sysctl("net.ipv4.ip_forward", 1)
        h.sysctl("net.ipv6.conf.all.forwarding", 1)
        # Lab only: a kernel VXLAN device sends over a veth with the inner TCP checksum left to
        # the NIC, which a userspace receiver cannot finish (see tests/interop/test_kernel_vxlan.py).
        h.run("ethtool", "-K", "eth0", "tx", "off")
    return hosts, server


@pytest.fixture(scope="module", params=list(SCENARIOS))
def cluster(request: pytest.FixtureRequest):
    require_netns()
    require_cni()
    require_programs("ping", "iperf3", "ss", "ethtool", "bridge")
    backends, direct, far, ipv6 = SCENARIOS[request.param]
    with Lab() as lab:
        c = Cluster(request.param, lab, backends, direct, far, ipv6, *add_underlay(lab, far))
        pods = CniPods(lab)
        try:
            c.start_all(pods)
            yield c
        finally:
            problems = pods.close()
            for node in c.nodes:
                if node.proc.poll() is None:
                    node.proc.send_signal(signal.SIGTERM)
            codes = {node.host.name: node.proc.wait(timeout=15) for node in c.nodes}
        assert not problems, problems
        assert set(codes.values()) == {0}, f"overlayd exit codes {codes}"
        for host in c.hosts:  # a clean stop leaves nothing of overlayd's
            for family in ("-4", "-6"):
                assert host.json_ip(family, "route", "show", "proto", str(PROTO)) == [], host.name
            assert not host.json_ip("link", "show", "type", "vxlan"), host.name
            assert host.run("nft", "list", "table", "inet", "overlayd", check=False).returncode != 0, host.name


# -- traffic ------------------------------------------------------------------------------


def test_pods_ping_every_pod_they_have_a_way_to(cluster: Cluster):
    pairs = [(cluster.pods[i].host, cluster.pods[j].v4) for i in range(3) for j in range(3)
             if i != j and cluster.reaches(i, j)]
    failed = ping_all(pairs)
    assert not failed, f"{cluster.name}: no reply for {failed}"
    if cluster.ipv6:
        pairs6 = [(cluster.pods[i].host, cluster.pods[j].v6) for i in range(3) for j in range(3) if i != j]
        failed = ping_all(pairs6)
        assert not failed, f"{cluster.name}: no IPv6 reply for {failed}"
        pairs += pairs6
    print(f"{cluster.name}: {len(pairs)} pod pairs pinged across")


def test_a_tcp_stream_crosses(cluster: Cluster):
    end = iperf3(cluster.pods[0], cluster.pods[1])
    received = end["sum_received"]["bytes"]
    print(f"{cluster.name}: iperf3 node1 -> node2 pod: {end['sum_received']['bits_per_second'] / 1e9:.2f} Gbit/s")
    assert received > 1_000_000, end


def sources_seen(receiver: Host, address: str, senders: list[Host]) -> list[str]:
    """Each sender sends one UDP datagram to address:9999; the source addresses the receiver saw."""
    proc = receiver.popen(sys.executable, udp_sources.__file__, address, "9999")
    try:
        wait_for(lambda: "listening" in receiver.log(proc), timeout=10, what="the UDP receiver")
        for sender in senders:
            sender.run(sys.executable, udp_send.__file__, address, "9999", "6869")
        wait_for(lambda: receiver.log(proc).count("from ") >= len(senders), timeout=5,
                 what=f"{len(senders)} datagrams at {address}")
        return [line.split()[1] for line in receiver.log(proc).splitlines() if line.startswith("from ")]
    finally:
        proc.kill()
        proc.wait()


def test_ipmasq_hides_pods_behind_their_node_outside_the_cluster_only(cluster: Cluster):
    seen = sources_seen(cluster.server, SERVER, [pod.host for pod in cluster.pods])
    assert sorted(seen) == sorted(cluster.vtep(i) for i in range(3)), seen
    inside = sources_seen(cluster.pods[1].host, cluster.pods[1].v4, [cluster.pods[0].host])
    assert inside == [cluster.pods[0].v4], inside
    rules = cluster.hosts[0].run("nft", "list", "table", "inet", "overlayd").stdout
    print(f"{cluster.name}: server saw {seen}; pod on node2 saw {inside}\n{rules}")
    assert "ip saddr 10.244.1.0/24 ip daddr != { 10.244.0.0/16, 224.0.0.0/4 } masquerade fully-random" in rules


# -- the kernel's tables ----------------------------------------------------------------------


def expected_tables(c: Cluster, i: int) -> tuple[set, set, set]:
    """(routes, neighbours, fdb entries) node i's kernel should hold, from its `routes` rows."""
    routes, neigh, fdb = set(), set(), set()
    me = c.backends[i]
    same_subnet = lambda j: c.vtep(j).rsplit(".", 1)[0] == c.vtep(i).rsplit(".", 1)[0]  # noqa: E731
    for row in c.routes(i):
        if row["vtep"] == "local":
            continue
        j = [c.vtep(k) for k in range(3)].index(row["vtep"])
        other = c.backends[j]
        v6 = ":" in row["prefix"]
        direct = same_subnet(j) and (me == "host-gw" or c.direct or other == "host-gw") and not v6
        if direct:
            routes.add((row["prefix"], row["vtep"], "eth0", False))
        elif me == "kernel" and other != "host-gw":
            gw = row["prefix"].split("/")[0]
            routes.add((row["prefix"], gw, DEVICE, True))
            neigh.add((gw, row["router_mac"]))
            fdb.add((row["router_mac"], row["vtep"]))
    if me == "userspace":
        routes.add((str(NETWORK), None, DEVICE, False))
    return routes, neigh, fdb


def kernel_tables(host: Host) -> tuple[list, list, list]:
    routes = [(r["dst"], r.get("gateway"), r["dev"], "onlink" in r.get("flags", []))
              for family in ("-4", "-6") for r in host.json_ip(family, "route", "show", "proto", str(PROTO))]
    has_dev = bool(host.json_ip("link", "show", "type", "vxlan"))
    neigh = [(n["dst"], n["lladdr"]) for n in host.json_ip("neigh", "show", "dev", DEVICE)
             if "PERMANENT" in n.get("state", [])] if has_dev else []
    fdb = [(f["mac"], f["dst"]) for f in json.loads(host.run("bridge", "-j", "fdb", "show", "dev", DEVICE).stdout)
           if "dst" in f] if has_dev else []
    return routes, neigh, fdb


def tables_match(c: Cluster, i: int) -> bool:
    want = [sorted(w, key=str) for w in expected_tables(c, i)]
    have = [sorted(h, key=str) for h in kernel_tables(c.hosts[i])]
    return want == have


def test_the_kernel_tables_equal_what_the_rib_implies(cluster: Cluster):
    for i, host in enumerate(cluster.hosts):
        want = expected_tables(cluster, i)
        have = kernel_tables(host)
        for what, w, h in zip(("routes", "neighbours", "fdb"), want, have):
            assert sorted(h, key=str) == sorted(w, key=str), f"{cluster.name} node{i + 1} {what}: {h} != {w}"
            assert len(h) == len(set(h)), f"duplicates in node{i + 1}'s {what}: {h}"
    print(f"--- {cluster.name}: overlayctl routes (node1) ---\n{cluster.nodes[0].ctl_text('routes')}")
    print(f"--- ip route (node1) ---\n{cluster.hosts[0].ip('route').stdout}")


@pytest.mark.parametrize("cluster", ["host-gw"], indirect=True)
def test_a_node_out_of_reach_gets_no_route_and_a_reason(cluster: Cluster):
    row = next(r for r in cluster.routes(0) if r["prefix"] == str(subnet(2)))
    assert row["way"] == "none", row
    assert row["kernel"] == "no route: node 10.0.1.3 (10.0.1.3) is not on a directly connected network", row
    assert "not on a directly connected network" in cluster.nodes[0].ctl_text("routes")
    assert not [r for r in cluster.hosts[0].json_ip("route") if r["dst"] == str(subnet(2))]


@pytest.mark.parametrize("cluster", ["direct-routing"], indirect=True)
def test_direct_routing_shows_which_way_each_subnet_goes(cluster: Cluster):
    ways = {r["prefix"]: r["way"] for r in cluster.routes(0)}
    assert ways == {str(subnet(0)): "local", str(subnet(1)): "host-gw", str(subnet(2)): "vxlan",
                    # an IPv6 subnet behind an IPv4 VTEP has no host-gw next hop: the tunnel it is
                    str(subnet6(0)): "local", str(subnet6(1)): "vxlan", str(subnet6(2)): "vxlan"}, ways


# -- drift and restarts (kernel scenario) ------------------------------------------------------


@pytest.mark.parametrize("cluster", ["kernel"], indirect=True)
def test_entries_deleted_by_hand_come_back(cluster: Cluster):
    host = cluster.hosts[0]
    row = next(r for r in cluster.routes(0) if r["prefix"] == str(subnet(1)))
    gw = str(subnet(1).network_address)
    host.ip("route", "del", str(subnet(1)))
    host.ip("neigh", "del", gw, "dev", DEVICE)
    host.run("bridge", "fdb", "del", row["router_mac"], "dev", DEVICE, "dst", row["vtep"])
    start = time.monotonic()
    wait_showing_logs(lambda: tables_match(cluster, 0), "the deleted route, neighbour and FDB entry to come back",
                      cluster.nodes[0], timeout=5)
    print(f"deleted by hand: back after {time.monotonic() - start:.2f} s")
    assert request(cluster.nodes[0].socket, "status")["kernel"]["drift_repairs"] >= 1
    assert not ping_all([(cluster.pods[0].host, cluster.pods[1].v4)])


@pytest.mark.parametrize("cluster", ["kernel"], indirect=True)
def test_sigkill_and_restart_reconcile_and_leave_other_protocols_alone(cluster: Cluster):
    host, node = cluster.hosts[0], cluster.nodes[0]
    node.stop(signal.SIGKILL)
    assert host.json_ip("link", "show", "dev", DEVICE), "the device outlives a SIGKILL"
    # what a crashed run might leave, and what other software has
    host.ip("route", "add", "10.244.77.0/24", "via", "10.244.77.0", "dev", DEVICE, "onlink", "proto", str(PROTO))
    host.ip("route", "add", "10.99.0.0/24", "via", "10.0.0.2", "proto", "static")
    host.ip("route", "add", "10.98.0.0/24", "via", "10.0.0.2", "proto", "186")
    node = cluster.start(0)
    node.wait_ready()
    start = time.monotonic()
    wait_showing_logs(lambda: tables_match(cluster, 0), "node1's tables to equal the RIB again, the stale route gone",
                      node, timeout=15)
    print(f"SIGKILL + restart: tables equal the RIB {time.monotonic() - start:.2f} s after ready")
    assert "ovl0: adopted" in node.log(), node.log()
    others = {r["dst"]: r.get("protocol") for r in host.json_ip("route")}
    assert others.get("10.99.0.0/24") == "static" and others.get("10.98.0.0/24") == "bgp", others
    host.ip("route", "del", "10.99.0.0/24")
    host.ip("route", "del", "10.98.0.0/24")
    assert not ping_all([(cluster.pods[0].host, cluster.pods[2].v4), (cluster.pods[2].host, cluster.pods[0].v4)])
    wait_for(cluster.converged, timeout=10, what="every table to hold every subnet again")
