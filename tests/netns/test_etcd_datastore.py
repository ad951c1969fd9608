"""Cluster state in etcd (issue 16), end to end with a real etcd cluster.

The lab: three etcd members (Debian's etcd-server) on hosts e0..e2
(10.0.0.11-13) form one cluster; `<prefix>/config` holds flannel's network
config (10.244.0.0/16, /24 subnets, vxlan). Nodes n0..n2 (10.0.0.1-3) run
overlayd with only `node:`, `datastore:` and the subnet.env path in their
config (no network or subnet, no `bgp:`), userspace VXLAN, a 6 s lease TTL.

In file order, sharing the cluster: the three nodes take three distinct
subnets and `etcdctl get --prefix` shows flannel's layout; the nodes'
routing devices ping each other across; a node started against a bad
Network is refused with the key named while the others keep forwarding;
the lease race (100 rounds, two claimers, through overlayd's transaction);
a 4th node joins and every table has its subnet within 2 s; one member
stopped changes nothing; two members stopped (no quorum): forwarding goes
on, status says unavailable, and renewal resumes when they are back; a node
cut off until its lease expired, whose subnet another node took meanwhile,
moves to a new subnet (device, subnet.env, every table) and says in status
that its pods must be restarted; a SIGKILLed node's lease expires and its
subnet is withdrawn everywhere.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import sys
import time
from dataclasses import dataclass
from datetime import datetime

import pytest

from tests.support import require_netns, require_programs
from tools.lab import Host, Lab, wait_for
from tools.nodes import Overlayd, start_overlayd, wait_showing_logs

pytestmark = pytest.mark.root

PREFIX = "/coreos.com/network"
NETWORK_CONFIG = {"Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan"}}
TTL_S = 6
MEMBERS = 3
NODES = 3


def member_ip(m: int) -> str:
    return f"10.0.0.{11 + m}"


def node_ip(i: int) -> str:
    return f"10.0.0.{i + 1}"


ENDPOINTS = [f"{member_ip(m)}:2379" for m in range(MEMBERS)]


@dataclass
class Cluster:
    lab: Lab
    members: list[Host]
    etcd: list
    hosts: list[Host]
    nodes: list[Overlayd]

    def etcdctl(self, *args: str, check: bool = True) -> str:
        return self.members[0].run("etcdctl", "--endpoints", ",".join(ENDPOINTS), *args, check=check).stdout

    def healthy(self) -> bool:
        return self.members[0].run("etcdctl", "--endpoints", ",".join(ENDPOINTS), "--command-timeout", "2s",
                                   "put", "/overlayd-test/health", "ok", check=False).returncode == 0

    def leases(self) -> dict[str, dict]:
        out = self.etcdctl("get", "--prefix", f"{PREFIX}/subnets/")
        lines = out.splitlines()
        return {lines[k]: json.loads(lines[k + 1]) for k in range(0, len(lines) - 1, 2)}

    def subnet_of(self, i: int) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(self.nodes[i].ctl("status")["routing"]["subnets"][0])

    def start_member(self, m: int, state: str = "new") -> None:
        names = ",".join(f"e{k}=http://{member_ip(k)}:2380" for k in range(MEMBERS))
        data = self.lab.tmpdir / f"etcd{m}"
        self.etcd[m] = self.members[m].popen(
            "etcd", "--name", f"e{m}", "--data-dir", str(data),
            "--listen-client-urls", f"http://{member_ip(m)}:2379,http://127.0.0.1:2379",
            "--advertise-client-urls", f"http://{member_ip(m)}:2379",
            "--listen-peer-urls", f"http://{member_ip(m)}:2380",
            "--initial-advertise-peer-urls", f"http://{member_ip(m)}:2380",
            "--initial-cluster", names, "--initial-cluster-state", state,
            "--initial-cluster-token", "overlayd-test",
            "--heartbeat-interval", "50", "--election-timeout", "500")

    def datastore_config(self, i: int) -> dict:
        return {"node": {"vtep": node_ip(i)},
                "datastore": {"type": "etcd", "endpoints": ENDPOINTS[i % MEMBERS:] + ENDPOINTS[:i % MEMBERS],
                              "prefix": PREFIX, "lease_ttl": TTL_S},
                "routing": {"env_file": str(self.lab.tmpdir / f"n{i}-subnet.env")}}


@pytest.fixture(scope="module")
def cluster():
    require_netns()
    require_programs("etcd", "etcdctl", "ping")
    with Lab() as lab:
        members = [lab.add_host(f"e{m}", v4=f"{member_ip(m)}/24") for m in range(MEMBERS)]
        hosts = [lab.add_host(f"n{i}", v4=f"{node_ip(i)}/24") for i in range(NODES)]
        c = Cluster(lab, members, [None] * MEMBERS, hosts, [])
        for m in range(MEMBERS):
            c.start_member(m)
        wait_for(c.healthy, 20, interval=0.3, what="the etcd cluster to take a write")
        c.etcdctl("put", f"{PREFIX}/config", json.dumps(NETWORK_CONFIG))
        c.nodes = [start_overlayd(hosts[i], c.datastore_config(i), wait=False) for i in range(NODES)]
        for node in c.nodes:
            node.wait_ready(timeout=30)
        yield c
        for node in c.nodes:
            if node.proc.poll() is None:
                node.stop()


def test_three_nodes_take_three_subnets_in_flannels_layout(cluster: Cluster):
    subnets = [cluster.subnet_of(i) for i in range(NODES)]
    assert len(set(subnets)) == NODES
    assert all(s.subnet_of(ipaddress.ip_network("10.244.0.0/16")) and s.prefixlen == 24 for s in subnets)
    print(cluster.etcdctl("get", "--prefix", PREFIX))
    leases = cluster.leases()
    for i, subnet in enumerate(subnets):
        key = f"{PREFIX}/subnets/{subnet.network_address}-24"
        value = leases[key]
        assert value["PublicIP"] == node_ip(i) and value["PublicIPv6"] is None
        assert value["BackendType"] == "vxlan" and value["BackendData"]["VNI"] == 1
        assert value["BackendData"]["VtepMAC"] == cluster.nodes[i].ctl("status")["routing"]["router_mac"]
    status = cluster.nodes[0].ctl_text("status")
    print(status)
    assert "datastore: etcd" in status and "available" in status
    env = (cluster.lab.tmpdir / "n0-subnet.env").read_text()
    assert "FLANNEL_NETWORK=10.244.0.0/16" in env and f"FLANNEL_SUBNET={subnets[0].network_address + 1}/24" in env


def ping_devices(cluster: Cluster, nodes: list[int]) -> list[tuple[int, int]]:
    failed = []
    for i in nodes:
        for j in nodes:
            if i != j and not cluster.hosts[i].ping(str(cluster.subnet_of(j).network_address), count=1, timeout=3):
                failed.append((i, j))
    return failed


def test_routing_devices_ping_across(cluster: Cluster):
    def all_routes() -> bool:
        return all(len([r for r in n.ctl("routes") if r["peer"] == "etcd"]) == NODES - 1 for n in cluster.nodes)
    wait_showing_logs(all_routes, "every node to have the others' leases", *cluster.nodes, timeout=10)
    assert ping_devices(cluster, list(range(NODES))) == []


def test_bad_network_value_is_refused_naming_the_key(cluster: Cluster):
    cluster.etcdctl("put", f"{PREFIX}/config", json.dumps({**NETWORK_CONFIG, "Network": "10.244.0.0/33"}))
    try:
        extra = cluster.lab.add_host("n9", v4="10.0.0.9/24")
        node = start_overlayd(extra, cluster.datastore_config(8), wait=False)
        assert node.proc.wait(20) != 0
        assert f"{PREFIX}/config: Network: '10.244.0.0/33'" in node.log()
    finally:
        cluster.etcdctl("put", f"{PREFIX}/config", json.dumps(NETWORK_CONFIG))
    assert all(n.proc.poll() is None for n in cluster.nodes)  # the running nodes keep their state
    assert ping_devices(cluster, [0, 1]) == []


def test_lease_race_never_has_two_winners(cluster: Cluster):
    started = time.monotonic()
    out = cluster.members[0].run(sys.executable, "-m", "tools.etcd_race", ENDPOINTS[0], "/race", "100", "2",
                                 check=False, timeout=120)
    result = json.loads(out.stdout.splitlines()[-1])
    print(f"lease race: {result['rounds']} rounds, 2 claimers, {time.monotonic() - started:.1f} s")
    assert result["rounds"] == 100 and set(result["winners"]) == {1}, out.stdout + out.stderr


def log_time(node: Overlayd, needle: str) -> datetime | None:
    """When `node` logged its first line containing `needle` (the text log's timestamp)."""
    for line in node.log().splitlines():
        if needle in line:
            return datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f")
    return None


def test_a_fourth_node_joins_and_every_table_follows_within_2s(cluster: Cluster):
    host = cluster.lab.add_host("n3", v4=f"{node_ip(3)}/24")
    node = start_overlayd(host, cluster.datastore_config(3))
    cluster.hosts.append(host)
    cluster.nodes.append(node)
    subnet = cluster.subnet_of(3)

    def followed() -> bool:
        return all(str(subnet) in {r["prefix"] for r in n.ctl("routes")} for n in cluster.nodes[:3])
    wait_showing_logs(followed, f"{subnet} in every table", *cluster.nodes, timeout=5, interval=0.05)
    # from the daemons' own log lines: the lease written, then seen by each watcher
    taken = log_time(node, f"took {PREFIX}/subnets/{subnet.network_address}-24")
    seen = [log_time(n, f"datastore: lease {subnet} ({node_ip(3)})") for n in cluster.nodes[:3]]
    took = max((t - taken).total_seconds() for t in seen)
    print(f"4th node's lease {subnet} in every table {took:.3f} s after it was written")
    assert took < 2.0
    wait_for(lambda: len([r for r in node.ctl("routes") if r["peer"] == "etcd"]) == 3, 5,
             what="the 4th node to have the others' leases")
    assert ping_devices(cluster, [0, 3]) == []


def test_one_member_down_changes_nothing(cluster: Cluster):
    cluster.etcd[2].send_signal(signal.SIGTERM)  # node 2's first endpoint: it fails over
    cluster.etcd[2].wait(10)
    try:
        time.sleep(TTL_S / 3 + 1)  # a renewal round
        assert [n.ctl("status")["datastore"]["state"] for n in cluster.nodes] == ["available"] * len(cluster.nodes)
        assert len(cluster.leases()) == len(cluster.nodes)
        assert ping_devices(cluster, list(range(NODES))) == []
    finally:
        cluster.start_member(2, state="existing")
    wait_for(cluster.healthy, 20, interval=0.3, what="the etcd cluster to take a write")


def test_no_quorum_forwarding_goes_on_and_renewal_resumes(cluster: Cluster):
    for m in (1, 2):
        cluster.etcd[m].send_signal(signal.SIGTERM)
        cluster.etcd[m].wait(10)
    try:
        wait_showing_logs(lambda: all(n.ctl("status")["datastore"]["state"] == "unavailable" for n in cluster.nodes),
                          "every node to say the datastore is unavailable", *cluster.nodes, timeout=TTL_S + 6)
        print(cluster.nodes[0].ctl_text("status"))
        assert ping_devices(cluster, list(range(NODES))) == []
    finally:
        for m in (1, 2):
            cluster.start_member(m, state="existing")
    wait_showing_logs(lambda: all(n.ctl("status")["datastore"]["state"] == "available" for n in cluster.nodes),
                      "renewal to resume everywhere", *cluster.nodes, timeout=30)
    wait_for(lambda: len(cluster.leases()) == len(cluster.nodes), 15, what="every lease back in etcd")
    assert ping_devices(cluster, list(range(NODES))) == []


def test_a_lease_lost_while_away_moves_the_node_to_a_new_subnet(cluster: Cluster):
    node, host = cluster.nodes[1], cluster.hosts[1]
    old = cluster.subnet_of(1)
    key = f"{PREFIX}/subnets/{old.network_address}-24"
    host.ip("link", "set", "eth0", "down")  # cut off from etcd (and from everyone)
    try:
        wait_for(lambda: key not in cluster.leases(), TTL_S + 5, interval=0.3, what=f"{key} to expire")
        lease = cluster.etcdctl("lease", "grant", "60").split()[1]
        cluster.etcdctl("put", f"--lease={lease}", key, json.dumps(
            {"PublicIP": "10.0.0.99", "PublicIPv6": None, "BackendType": "host-gw"}))
    finally:
        host.ip("link", "set", "eth0", "up")
    try:
        wait_showing_logs(lambda: cluster.subnet_of(1) != old, "node 1 to move to a new subnet", node,
                          timeout=TTL_S + 10)
        new = cluster.subnet_of(1)
        status = node.ctl_text("status")
        print(status)
        assert f"our subnet {old} was taken by 10.0.0.99" in status and "restart this node's pods" in status
        assert cluster.leases()[f"{PREFIX}/subnets/{new.network_address}-24"]["PublicIP"] == node_ip(1)
        env = (cluster.lab.tmpdir / "n1-subnet.env").read_text()
        assert f"FLANNEL_SUBNET={new.network_address + 1}/24" in env
        wait_for(lambda: all(any(r["prefix"] == str(new) and r["vtep"] == node_ip(1) for r in n.ctl("routes"))
                             for k, n in enumerate(cluster.nodes) if k != 1), 5, what=f"{new} everywhere")
        assert ping_devices(cluster, [0, 1]) == []
    finally:
        cluster.etcdctl("del", key)


def test_sigkilled_node_lease_expires_and_is_withdrawn(cluster: Cluster):
    gone = cluster.subnet_of(2)
    cluster.nodes[2].stop(signal.SIGKILL)
    started = time.monotonic()

    def withdrawn() -> bool:
        return all(str(gone) not in {r["prefix"] for r in n.ctl("routes")} for k, n in enumerate(cluster.nodes)
                   if k != 2)
    wait_showing_logs(withdrawn, f"{gone} to be withdrawn everywhere", *cluster.nodes, timeout=TTL_S + 10)
    print(f"{gone}: withdrawn {time.monotonic() - started:.1f} s after SIGKILL (lease TTL {TTL_S} s)")
    assert f"{PREFIX}/subnets/{gone.network_address}-24" not in cluster.leases()
