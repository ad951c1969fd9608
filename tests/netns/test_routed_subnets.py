"""Routed subnets (EVPN type-5) end to end: three nodes, pods made by the real CNI plugins.

The `cluster` fixture (module scope) builds what a Kubernetes node running
flannel looks like, with overlayd in flanneld's place:

- lab hosts node1, node2, node3 (underlay 10.0.0.{1,2,3}), an iBGP full mesh
  in AS 65000 (hold time 3 s, connect retry 1 s), IPv4 and IPv6 forwarding
  on (each node routes between its pod bridge cni0 and overlayd's ovl0);
- `routing:` VNI 1, network 10.244.0.0/16 on every node:
    node1  tun, subnet 10.244.1.0/24, and IPv6: fd00:244:0:1::/64 of fd00:244::/48
    node2  tap, subnet `auto` (the one it picked is read from `overlayctl status`)
    node3  tun, subnet 10.244.3.0/24, and IPv6: fd00:244:0:3::/64 of fd00:244::/48
  (The IPv6 subnets are fd00:244:0:N::/64, not fd00:244:N::/64: only the
  former lie inside a /48.)
- each node writes its subnet.env and its CNI conflist (`env_file`,
  `cni_conflist`) into the lab's temporary directory;
- two pods per node, each a network namespace plugged in by the real CNI
  `bridge` plugin with `host-local` IPAM (`tests/netns/cni.py`), fed the
  conflist that node's overlayd wrote for its subnet — the shipped
  configs/cni/10-overlayd.conflist with the node's own subnet in it. The
  plugin runs in the node's namespace, so cni0 is there. host-local keeps
  its allocations in a per-node directory of the lab (`ipam.dataDir`), not
  in the machine's /var/lib/cni.

Tests run in file order and share the cluster; the last one stops node2
(SIGTERM) for good. Teardown: CNI DEL for every pod, the pod namespaces
deleted, the daemons stopped (exit code 0 expected), the lab removed.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from overlayd.status.client import request
from tests.netns.cni import CniPods, Pod, plugin_config, require_cni
from tests.netns.test_three_nodes import delta, link_exists
from tests.netns.topology import ASN, HOLD_TIME_S
from tests.support import require_netns, require_programs
from tools.lab import Host, Lab, wait_for
from tools.nodes import Overlayd, start_overlayd

pytestmark = pytest.mark.root

REPO = Path(__file__).resolve().parents[2]
SHIPPED_CONFLIST = REPO / "configs" / "cni" / "10-overlayd.conflist"

VNI = 1
DEVICE = "ovl0"
BRIDGE = "cni0"
NETWORK = ipaddress.ip_network("10.244.0.0/16")
NETWORK6 = ipaddress.ip_network("fd00:244::/48")
MTU = 1500 - 50  # the lab's underlay MTU minus VXLAN over IPv4
PODS_PER_NODE = 2
N1, N2, N3 = 0, 1, 2
NODES = (  # name, device_type, subnet, subnet6
    ("node1", "tun", "10.244.1.0/24", "fd00:244:0:1::/64"),
    ("node2", "tap", "auto", None),
    ("node3", "tun", "10.244.3.0/24", "fd00:244:0:3::/64"),
)
# A SIGTERMed node says Cease before it goes: its subnet leaves the others' tables
# sooner than any hold timer could make it (the slack is for a loaded 2-core machine).
WITHDRAW_DEADLINE_S = HOLD_TIME_S - 0.5


def vtep(i: int) -> str:
    return f"10.0.0.{i + 1}"


def router_mac(i: int) -> str:
    """The default router MAC, 02:00:<router ID>; the router ID is the VTEP here."""
    return "02:00:" + ":".join(f"{int(octet):02x}" for octet in vtep(i).split("."))


def routed_node_config(i: int, tmpdir: Path) -> dict[str, Any]:
    name, device_type, subnet, subnet6 = NODES[i]
    routing: dict[str, Any] = {
        "vni": VNI,
        "device": DEVICE,
        "device_type": device_type,
        "network": str(NETWORK),
        "subnet": subnet,
        "env_file": str(tmpdir / f"{name}-subnet.env"),
        "cni_conflist": str(tmpdir / f"{name}-10-overlayd.conflist"),
        "cni_bridge": BRIDGE,
    }
    if subnet6 is not None:
        routing["network6"] = str(NETWORK6)
        routing["subnet6"] = subnet6
    return {
        "node": {"vtep": vtep(i)},
        "bgp": {
            "asn": ASN,
            "hold_time": HOLD_TIME_S,
            "connect_retry": 1,
            "neighbors": [{"address": vtep(j), "asn": ASN} for j in range(len(NODES)) if j != i],
        },
        "routing": routing,
    }


@dataclass
class RoutedCluster:
    lab: Lab
    hosts: list[Host]
    nodes: list[Overlayd]
    subnets: list[ipaddress.IPv4Network] = field(default_factory=list)  # per node (node2's as it picked it)
    subnets6: list[ipaddress.IPv6Network | None] = field(default_factory=list)
    pods: list[list[Pod]] = field(default_factory=list)  # per node
    conflists: list[dict[str, Any]] = field(default_factory=list)  # as overlayd wrote them, per node

    def query(self, i: int, command: str) -> Any:
        """The status socket's answer, asked directly: cheaper than `overlayctl` for polling."""
        return request(self.nodes[i].socket, command)

    def routing(self, i: int) -> dict[str, Any]:
        return self.nodes[i].config["routing"]

    def others(self, i: int) -> list[int]:
        return [j for j in range(len(self.nodes)) if j != i]

    def read_subnets(self) -> bool:
        """Each node's subnets, from `overlayctl status` (routing.subnets)."""
        self.subnets, self.subnets6 = [], []
        for i in range(len(self.nodes)):
            mine = [ipaddress.ip_network(s) for s in self.query(i, "status")["routing"]["subnets"]]
            self.subnets.append(next(s for s in mine if s.version == 4))
            self.subnets6.append(next((s for s in mine if s.version == 6), None))
        return True

    def tables_full(self) -> bool:
        """Every node's subnet table has every node's IPv4 subnet (and the IPv6 ones where it does IPv6)."""
        for i in range(len(self.nodes)):
            want = {str(s) for s in self.subnets}
            if self.subnets6[i] is not None:
                want |= {str(s) for s in self.subnets6 if s is not None}
            if not want <= {r["prefix"] for r in self.query(i, "routes")}:
                return False
        return True


def read_env(path: Path) -> dict[str, str]:
    """A subnet.env file as a dict."""
    return dict(line.split("=", 1) for line in path.read_text().splitlines())


def ping_all(pairs: list[tuple[Host, str]], timeout: float = 5) -> list[tuple[str, str]]:
    """Ping every (from, address) pair concurrently; the pairs that got no reply."""
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda pair: pair[0].ping(pair[1], timeout=timeout), pairs))
    return [(host.name, addr) for (host, addr), ok in zip(pairs, results) if not ok]


def iperf3(client: Pod, server: Pod, seconds: int = 2) -> dict[str, Any]:
    """A TCP stream from `client` to `server` for `seconds`; iperf3's JSON `end` section."""
    srv = server.host.popen("iperf3", "-s", "-1", "-B", server.v4)
    try:
        wait_for(lambda: "LISTEN" in server.host.run("ss", "-Hltn", "sport", "=", ":5201").stdout,
                 timeout=10, what=f"iperf3 server in {server.name}")
        out = client.host.run("iperf3", "-c", server.v4, "-t", str(seconds), "-J",
                              "--connect-timeout", "5000", timeout=seconds + 30, check=False)
        result = json.loads(out.stdout or "{}")
        assert out.returncode == 0 and "error" not in result, (
            f"iperf3 {client.name} -> {server.name} failed ({out.returncode}): "
            f"{result.get('error') or out.stdout + out.stderr}\nserver: {server.host.log(srv)}")
        srv.wait(timeout=10)  # -1: the server exits after its one client
        return result["end"]
    finally:
        if srv.poll() is None:
            srv.kill()
            srv.wait()


@pytest.fixture(scope="module")
def cluster():
    require_netns()
    require_cni()
    require_programs("ping", "iperf3", "ss")
    with Lab() as lab:
        hosts = []
        for i, (name, *_) in enumerate(NODES):
            host = lab.add_host(name, v4=f"{vtep(i)}/24")
            host.sysctl("net.ipv4.ip_forward", 1)
            host.sysctl("net.ipv6.conf.all.forwarding", 1)
            hosts.append(host)
        nodes = [start_overlayd(h, routed_node_config(i, lab.tmpdir), wait=False)
                 for i, h in enumerate(hosts)]
        pods = CniPods(lab)
        try:
            for node in nodes:
                node.wait_ready()
            c = RoutedCluster(lab, hosts, nodes)
            # (re-read each time: an `auto` subnet moves if it collides on the way)
            wait_for(lambda: c.read_subnets() and c.tables_full(), timeout=30,
                     what="every node's subnet table to hold every subnet")
            for i, host in enumerate(hosts):
                # the conflist this node's overlayd wrote for its subnet: what its pods get
                conflist = json.loads(Path(c.routing(i)["cni_conflist"]).read_text())
                c.conflists.append(conflist)
                config = plugin_config(conflist, data_dir=lab.tmpdir / f"cni-{host.name}")
                c.pods.append([pods.add(host, f"p{k + 1}", config) for k in range(PODS_PER_NODE)])
            yield c
        finally:
            problems = pods.close()
            for node in nodes:  # all at once: each takes a moment to say goodbye
                if node.proc.poll() is None:
                    node.proc.send_signal(signal.SIGTERM)
            codes = {node.host.name: node.proc.wait(timeout=15) for node in nodes}
    assert not problems, "CNI DEL failed:\n" + "\n".join(problems)
    assert set(codes.values()) == {0}, f"overlayd exit codes {codes}"


# -- files: subnet.env and the conflist --------------------------------------------------


def test_auto_picked_a_free_subnet_of_the_network(cluster: RoutedCluster):
    picked = cluster.subnets[N2]
    assert picked.subnet_of(NETWORK) and picked.prefixlen == 24, picked
    assert picked not in (cluster.subnets[N1], cluster.subnets[N3])
    log = cluster.nodes[N2].log()
    assert f"subnet auto: chose {picked}" in log or f"moving to {picked}" in log, log
    env = read_env(Path(cluster.routing(N2)["env_file"]))
    assert ipaddress.ip_interface(env["FLANNEL_SUBNET"]).network == picked, env


def test_subnet_env_has_the_flannel_keys(cluster: RoutedCluster):
    for i in range(len(NODES)):
        path = Path(cluster.routing(i)["env_file"])
        keys = read_env(path)
        subnet, subnet6 = cluster.subnets[i], cluster.subnets6[i]
        want = {
            "FLANNEL_NETWORK": str(NETWORK),
            "FLANNEL_SUBNET": f"{subnet.network_address + 1}/{subnet.prefixlen}",
            "FLANNEL_MTU": str(MTU),
            "FLANNEL_IPMASQ": "false",
        }
        if subnet6 is not None:
            want["FLANNEL_IPV6_NETWORK"] = str(NETWORK6)
            want["FLANNEL_IPV6_SUBNET"] = f"{subnet6.network_address + 1}/{subnet6.prefixlen}"
        assert keys == want, f"{NODES[i][0]}: {path.read_text()}"


def shape(value: Any) -> Any:
    """The structure of a JSON value: keys and the types of the leaves, list lengths ignored."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        shapes = []
        for item in value:
            if shape(item) not in shapes:
                shapes.append(shape(item))
        return shapes
    return type(value).__name__


def test_conflist_is_the_shipped_one_for_the_node_subnet(cluster: RoutedCluster):
    shipped = json.loads(SHIPPED_CONFLIST.read_text())
    for i, conflist in enumerate(cluster.conflists):
        name = NODES[i][0]
        env = read_env(Path(cluster.routing(i)["env_file"]))
        assert shape(conflist) == shape(shipped), f"{name}: {json.dumps(conflist, indent=2)}"
        [plugin] = conflist["plugins"]
        assert (plugin["type"], plugin["ipam"]["type"]) == ("bridge", "host-local")
        assert (plugin["bridge"], plugin["isGateway"], plugin["ipMasq"]) == (BRIDGE, True, False)
        assert plugin["mtu"] == int(env["FLANNEL_MTU"]) == MTU
        subnets = [s for s in (cluster.subnets[i], cluster.subnets6[i]) if s is not None]
        assert plugin["ipam"]["ranges"] == [
            [{"subnet": str(s), "gateway": str(s.network_address + 1)}] for s in subnets]
        # the shipped file is exactly what an IPv4-only node writes, but for its subnet
        if cluster.subnets6[i] is None:
            expected = copy.deepcopy(shipped)
            expected["plugins"][0]["ipam"]["ranges"] = plugin["ipam"]["ranges"]
            assert conflist == expected, f"{name}: {json.dumps(conflist, indent=2)}"


def test_pods_got_addresses_from_their_node_subnet_with_the_overlay_mtu(cluster: RoutedCluster):
    for i, pods in enumerate(cluster.pods):
        subnet, subnet6 = cluster.subnets[i], cluster.subnets6[i]
        for pod in pods:
            families = {a.version: a for a in pod.addresses}
            assert families[4].network == subnet, pod
            assert pod.gateways[0] == str(subnet.network_address + 1), pod
            if subnet6 is None:
                assert 6 not in families, pod
            else:
                assert families[6].network == subnet6, pod
            [eth0] = pod.host.json_ip("link", "show", "dev", "eth0")
            assert eth0["mtu"] == MTU, eth0
        [bridge] = cluster.hosts[i].json_ip("link", "show", "dev", BRIDGE)
        assert bridge["mtu"] == MTU, bridge
        # host-local kept its allocations in the lab, one directory per node
        data_dir = cluster.lab.tmpdir / f"cni-{cluster.hosts[i].name}" / "overlayd"
        assert {p.v4 for p in pods} <= {f.name for f in data_dir.iterdir()}, list(data_dir.iterdir())


# -- the subnet table and the kernel's routes ----------------------------------------------


def test_every_node_routes_every_subnet(cluster: RoutedCluster):
    for i in range(len(NODES)):
        rows = {r["prefix"]: r for r in cluster.nodes[i].ctl("routes")}
        for j in range(len(NODES)):
            prefixes = [cluster.subnets[j]]
            if cluster.subnets6[i] is not None and cluster.subnets6[j] is not None:
                prefixes.append(cluster.subnets6[j])
            for prefix in prefixes:
                row = rows.get(str(prefix))
                assert row is not None, f"{NODES[i][0]} lacks {prefix}: {rows}"
                want_vtep, want_peer = ("local", "local") if i == j else (vtep(j), vtep(j))
                assert (row["node"], row["vtep"], row["peer"], row["router_mac"], row["vni"]) == (
                    vtep(j), want_vtep, want_peer, router_mac(j), VNI), row
        # node2 does no IPv6: the others' IPv6 subnets are refused (and said so), IPv4 is all it has
        if cluster.subnets6[i] is None:
            assert all(ipaddress.ip_network(p).version == 4 for p in rows), rows

    # for the record (pytest -rP shows it): what the closing note quotes
    host = cluster.hosts[N1]
    print(f"--- overlayctl routes ({host.name}) ---\n{cluster.nodes[N1].ctl_text('routes')}")
    print(f"--- ip route ({host.name}) ---\n{host.ip('route').stdout}")
    print(f"--- ip -6 route ({host.name}) ---\n{host.ip('-6', 'route').stdout}")


def test_kernel_routes_the_network_to_ovl0_and_the_node_subnet_to_cni0(cluster: RoutedCluster):
    for i, host in enumerate(cluster.hosts):
        for family, network, subnet in ((4, NETWORK, cluster.subnets[i]), (6, NETWORK6, cluster.subnets6[i])):
            if subnet is None:
                continue
            routes = {(r["dst"], r["dev"]) for r in host.json_ip(f"-{family}", "route", "show")}
            assert (str(network), DEVICE) in routes, f"{host.name}: {routes}"
            assert (str(subnet), BRIDGE) in routes, f"{host.name}: {routes}"
            # nothing per node: the daemon decides, the kernel has one route
            theirs = [s for s in (cluster.subnets + cluster.subnets6) if s is not None and s != subnet]
            assert not [r for r in routes if r[0] in map(str, theirs)], f"{host.name}: {routes}"
        [link] = host.json_ip("link", "show", "dev", DEVICE)
        assert link["mtu"] == MTU, link
        assert ("link_type", "none" if NODES[i][1] == "tun" else "ether") in link.items(), link


# -- pod to pod ----------------------------------------------------------------------------


def test_every_pod_pings_every_pod_on_the_other_nodes(cluster: RoutedCluster):
    before = [cluster.query(i, "stats")["counters"] for i in range(len(NODES))]
    pairs = [(a.host, b.v4) for i in range(len(NODES)) for j in cluster.others(i)
             for a in cluster.pods[i] for b in cluster.pods[j]]
    assert len(pairs) == 6 * 4
    failed = ping_all(pairs)
    assert not failed, f"no reply across the overlay for {failed}"
    moved = [delta(x, cluster.query(i, "stats")["counters"]) for i, x in enumerate(before)]
    for i in range(len(NODES)):
        # each node's pods sent 2 x 4 echo requests and got as many replies, at least
        assert moved[i].get("tx_routed_packets", 0) >= 16, (NODES[i][0], moved[i])
        assert moved[i].get("rx_routed_packets", 0) >= 16, (NODES[i][0], moved[i])
    # the tap node's kernel asked ARP for each of the other nodes' pods (the route to
    # ovl0 is on-link); overlayd answered every one with node2's router MAC
    assert moved[N2].get("tx_route_arp_answered", 0) >= 4, moved[N2]
    neighbors = {n["dst"]: n.get("lladdr") for n in cluster.hosts[N2].json_ip("neigh", "show", "dev", DEVICE)}
    for j in cluster.others(N2):
        for pod in cluster.pods[j]:
            assert neighbors.get(pod.v4) == router_mac(N2), neighbors


def test_ipv6_pods_ping_each_other_across(cluster: RoutedCluster):
    pairs = [(a.host, b.v6) for i, j in ((N1, N3), (N3, N1))
             for a in cluster.pods[i] for b in cluster.pods[j]]
    assert all(addr for _, addr in pairs), cluster.pods
    failed = ping_all(pairs)
    assert not failed, f"no IPv6 reply across the overlay for {failed}"


@pytest.mark.parametrize("src, dst", [(N1, N2), (N3, N1)], ids=["node1-to-node2-tap", "node3-to-node1"])
def test_a_tcp_stream_crosses(cluster: RoutedCluster, src: int, dst: int):
    client, server = cluster.pods[src][0], cluster.pods[dst][1]
    before = [cluster.query(i, "stats")["counters"] for i in (src, dst)]
    end = iperf3(client, server)
    received, sent = end["sum_received"]["bytes"], end["sum_sent"]["bytes"]
    moved = [delta(x, cluster.query(i, "stats")["counters"]) for i, x in zip((src, dst), before)]
    mbps = end["sum_received"]["bits_per_second"] / 1e6
    print(f"iperf3 {client.name} -> {server.name}: {received} bytes, {mbps:.0f} Mbit/s, "
          f"{end['sum_sent'].get('retransmits')} retransmits")
    assert received > 0 and sent > 0, end
    # every byte went through the two daemons: out of src's device, into dst's
    assert moved[0].get("tx_routed_bytes", 0) >= received, moved[0]
    assert moved[1].get("rx_routed_bytes", 0) >= received, moved[1]


# -- a node goes away (leaves node2 stopped: keep it last) ---------------------------------


def test_a_node_stopped_with_sigterm_leaves_every_subnet_table(cluster: RoutedCluster):
    victim = N2
    gone_subnet = str(cluster.subnets[victim])
    targets = [pod.v4 for pod in cluster.pods[victim]]
    assert not ping_all([(cluster.pods[N1][0].host, targets[0])]), "node2's pods unreachable before the stop"
    assert cluster.tables_full()
    node = cluster.nodes[victim]
    start = time.monotonic()
    node.proc.send_signal(signal.SIGTERM)

    def left() -> bool:
        return all(gone_subnet not in {r["prefix"] for r in cluster.query(i, "routes")}
                   for i in cluster.others(victim))

    wait_for(left, timeout=WITHDRAW_DEADLINE_S, interval=0.05,
             what=f"{gone_subnet} to leave node1's and node3's subnet tables (Cease, not the hold timer)")
    took = time.monotonic() - start
    assert node.proc.wait(timeout=10) == 0, node.log()
    for i in cluster.others(victim):
        rows = cluster.nodes[i].ctl("routes")
        assert {r["prefix"] for r in rows if r["vtep"] == vtep(victim)} == set(), rows
        assert gone_subnet not in cluster.nodes[i].ctl_text("routes")
    print(f"SIGTERM: {gone_subnet} left the other tables after {took:.2f} s")

    # its pods are unreachable now: the others drop packets for them (no route covers them)
    before = [cluster.query(i, "stats")["counters"] for i in cluster.others(victim)]
    pairs = [(pod.host, addr) for i in cluster.others(victim) for pod in cluster.pods[i] for addr in targets]
    failed = ping_all(pairs, timeout=1)
    assert len(failed) == len(pairs), f"answered after node2 stopped: {set(pairs) - set(failed)}"
    for i, x in zip(cluster.others(victim), before):
        moved = delta(x, cluster.query(i, "stats")["counters"])
        assert moved.get("tx_route_drop_no_route", 0) >= 2, (NODES[i][0], moved)
        assert moved.get("tx_routed_packets", 0) == 0, (NODES[i][0], moved)
    # the survivors still reach each other
    assert not ping_all([(cluster.pods[N1][0].host, cluster.pods[N3][0].v4),
                         (cluster.pods[N3][1].host, cluster.pods[N1][1].v4)])

    # node2 cleaned up after itself: no ovl0 (so no route to it), no subnet.env, no conflist
    host = cluster.hosts[victim]
    assert not link_exists(host, DEVICE)
    assert not [r for r in host.json_ip("-4", "route", "show") if r["dst"] == str(NETWORK)]
    assert not Path(cluster.routing(victim)["env_file"]).exists()
    assert not Path(cluster.routing(victim)["cni_conflist"]).exists()
    # the pods' own plumbing is CNI's, not overlayd's: cni0 stays until the pods are deleted
    assert link_exists(host, BRIDGE)
