"""kernel.services on a real kernel: the table applied with `nft -j -f -` on a node, read back,
and connections through the VIPs.

    node (10.0.0.1)                         peer (10.0.0.2)
      cni0 10.244.1.1/24, fd00:244:0:1::1/64  cni0 10.244.2.1/24, fd00:244:0:2::1/64
        client .10   b1 .11                     b2 .12   b3 .13
      svc0 (a veth): 10.96.0.0/16, fd00:96::/112 routed to it
      10.244.2.0/24 via peer                  10.244.1.0/24 via node

The node holds `inet overlayd` (the ipmasq part and the services part), as
a kernel backend would program it, applied and changed as diffs and read
back after each; the peer only routes. Every test runs twice: with traffic
between the pods of a bridge passing netfilter (br_netfilter) and without. Every backend
answers with its name and the address it saw the client as. b1 is on the
client's node (its traffic is masqueraded, so its replies come back
through the rewrite), b2 and b3 are not (the client's address is kept).
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from ipaddress import ip_address
from ipaddress import ip_network as net
from pathlib import Path

import pytest

from overlayd.kernel import masq, nft
from overlayd.kernel import services as sv
from tests.support import require_netns, require_programs, unmet
from tools.lab import Lab, wait_for

PEER_SCRIPT = str(Path(__file__).with_name("svc_peer.py"))
NODE_SUBNETS = [net("10.244.1.0/24"), net("fd00:244:0:1::/64")]
CLUSTER = [net("10.244.0.0/16"), net("fd00:244::/48")]
SERVICES_NETWORK = [net("10.96.0.0/16"), net("fd00:96::/112")]
PODS = {  # name: (node, v4, v6)
    "client": ("node", "10.244.1.10", "fd00:244:0:1::10"),
    "b1": ("node", "10.244.1.11", "fd00:244:0:1::11"),
    "b2": ("peer", "10.244.2.12", "fd00:244:0:2::12"),
    "b3": ("peer", "10.244.2.13", "fd00:244:0:2::13"),
}
PORT = 8080


def v4(*names: str) -> list[tuple[str, int]]:
    return [(PODS[n][1], PORT) for n in names]


def v6(*names: str) -> list[tuple[str, int]]:
    return [(PODS[n][2], PORT) for n in names]


SERVICES = [
    sv.Service("web", "10.96.0.10", 80, "tcp", v4("b1", "b2", "b3")),
    sv.Service("dns", "10.96.0.10", 53, "udp", v4("b1", "b2", "b3")),
    sv.Service("solo", "10.96.0.20", 80, "tcp", v4("b1")),
    sv.Service("sticky", "10.96.0.21", 80, "tcp", v4("b1", "b2", "b3"), "client-ip", 30),
    sv.Service("web6", "fd00:96::10", 80, "tcp", v6("b1", "b2")),
    sv.Service("empty", "10.96.0.30", 80, "tcp", []),
    sv.Service("empty-udp", "10.96.0.30", 53, "udp", []),
]


def desired(services: list[sv.Service]) -> nft.Table:
    return nft.merge(masq.table(NODE_SUBNETS, [*CLUSTER, *SERVICES_NETWORK]),
                     sv.table(services, NODE_SUBNETS, CLUSTER))


class Node:
    """The lab, and what the node's table should hold now."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.node = lab.add_host("node", v4="10.0.0.1/24", v6="fd00::1/64")
        self.peer = lab.add_host("peer", v4="10.0.0.2/24", v6="fd00::2/64")
        for host, n, other in ((self.node, 1, self.peer), (self.peer, 2, self.node)):
            host.sysctl("net.ipv4.ip_forward", 1)
            host.sysctl("net.ipv6.conf.all.forwarding", 1)
            host.ip("link", "add", "cni0", "type", "bridge")
            host.ip("addr", "add", f"10.244.{n}.1/24", "dev", "cni0")
            host.ip("-6", "addr", "add", f"fd00:244:0:{n}::1/64", "dev", "cni0", "nodad")
            host.ip("link", "set", "cni0", "up")
            m = 3 - n
            host.ip("route", "add", f"10.244.{m}.0/24", "via", other.v4)
            host.ip("-6", "route", "add", f"fd00:244:0:{m}::/64", "via", other.v6)
        # the services network routed into a device of its own, as into overlayd's routing device
        # (a veth pair: this kernel may have no dummy devices)
        self.node.ip("link", "add", "svc0", "type", "veth", "peer", "name", "svc0-end")
        self.node.ip("link", "set", "svc0-end", "up")
        self.node.ip("link", "set", "svc0", "up")
        for prefix in SERVICES_NETWORK:
            self.node.ip("route", "add", str(prefix), "dev", "svc0")
        hosts = {"node": self.node, "peer": self.peer}
        self.pods = {}
        for name, (where, a4, a6) in PODS.items():
            n = 1 if where == "node" else 2
            self.pods[name] = lab.add_pod(hosts[where], name, "cni0", v4=f"{a4}/24", gateway=f"10.244.{n}.1",
                                          v6=f"{a6}/64", gateway6=f"fd00:244:0:{n}::1")
        servers = {name: self.pods[name].popen(sys.executable, PEER_SCRIPT, "serve", name, str(PORT))
                   for name in ("b1", "b2", "b3")}
        for name, proc in servers.items():
            wait_for(lambda p=proc, n=name: "listening" in self.pods[n].log(p), timeout=10, what=f"{name} listening")
        self.table: nft.Table | None = None

    def apply(self, services: list[sv.Service]) -> list[dict]:
        """Make the node's table the one for `services` (a diff from the last), and check that
        the kernel holds exactly that; returns the commands."""
        want = desired(services)
        commands = nft.diff(self.table, want)
        self.node.run("nft", "-j", "-f", "-", input=json.dumps(nft.document(commands)))
        self.table = want
        assert self.read_back() == nft.canonical(want)
        return commands

    def read_back(self) -> nft.Table:
        return nft.parse(json.loads(self.node.run("nft", "-j", "list", "table", "inet", "overlayd").stdout))

    def connect(self, who: str, kind: str, address: str, port: int, count: int, *flags: str) -> dict:
        host = self.node if who == "node" else self.pods[who]
        out = host.run(sys.executable, PEER_SCRIPT, kind, address, str(port), str(count), *flags, timeout=60)
        return json.loads(out.stdout)


BRIDGE_NF = ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables")


@pytest.fixture(scope="module", params=["bridged", "routed"])
def node(request: pytest.FixtureRequest):
    """bridged: netfilter sees traffic between the pods of one bridge (br_netfilter, which
    kubeadm requires), and the pods' bridge ports are in hairpin mode (the CNI bridge plugin's
    `hairpinMode: true`), so that a backend's packet to its own VIP can go back out its port.
    routed: without br_netfilter, such traffic goes up to cni0 and is routed back down."""
    require_netns()
    require_programs("nft", "bridge")
    with Lab() as lab:
        n = Node(lab)
        available = Path("/proc/sys/net/bridge/bridge-nf-call-iptables").exists()
        if request.param == "bridged":
            if not available:
                unmet("needs br_netfilter (modprobe br_netfilter)")
            for pod in PODS:
                if PODS[pod][0] == "node":
                    n.node.run("bridge", "link", "set", "dev", f"p-{pod}", "hairpin", "on")
        for key in BRIDGE_NF if available else ():
            n.node.sysctl(key, 1 if request.param == "bridged" else 0)
        if request.param == "routed":
            # Routing a pod's packet back out cni0 (to a backend on the same bridge) makes the
            # node send the pod ICMP redirects; those use up the per-host ICMP rate limit that the
            # port-unreachable replies of a service without backends are subject to (seen here:
            # 2 of 5 lost after the other tests). A node routing between pods of one bridge has
            # no use for redirects.
            n.node.sysctl("net.ipv4.conf.all.send_redirects", 0)
            n.node.sysctl("net.ipv4.conf.cni0.send_redirects", 0)
        started = time.monotonic()
        n.apply(SERVICES)
        print(f"{request.param}: table made in {time.monotonic() - started:.2f} s:\n"
              f"{n.node.run('nft', 'list', 'table', 'inet', 'overlayd').stdout}")
        yield n
        n.node.run("nft", "-j", "-f", "-", input=json.dumps(nft.delete()))
        tables = n.node.run("nft", "list", "tables").stdout
        assert "overlayd" not in tables, tables


def spread(answers: list[list[str]]) -> Counter:
    return Counter(name for name, _ in answers)


def test_connections_spread_over_the_backends_and_replies_come_from_the_vip(node: Node):
    for kind, port in (("tcp", 80), ("udp", 53)):
        result = node.connect("client", kind, "10.96.0.10", port, 200)
        counts = spread(result["answers"])
        print(f"{kind}: {dict(counts)}, replies from {result['replied_from']}")
        assert sum(counts.values()) == 200, result
        assert set(counts) == {"b1", "b2", "b3"}
        assert all(0.2 * 200 <= c <= 0.5 * 200 for c in counts.values()), counts
        assert result["replied_from"] == ["10.96.0.10"]
        seen_as = {name: {a for n, a in result["answers"] if n == name} for name in counts}
        # b1 shares the client's node: masqueraded to the node, so its replies come back through it
        assert seen_as == {"b1": {"10.244.1.1"}, "b2": {"10.244.1.10"}, "b3": {"10.244.1.10"}}


def test_an_ipv6_vip_in_the_same_table(node: Node):
    result = node.connect("client", "tcp", "fd00:96::10", 80, 40)
    counts = spread(result["answers"])
    assert set(counts) == {"b1", "b2"} and sum(counts.values()) == 40, result
    assert result["replied_from"] == ["fd00:96::10"]
    seen_as = {name: {a for n, a in result["answers"] if n == name} for name in counts}
    assert seen_as == {"b1": {"fd00:244:0:1::1"}, "b2": {"fd00:244:0:1::10"}}


def test_hairpin_a_backend_reaching_its_own_vip_lands_on_itself(node: Node):
    result = node.connect("b1", "tcp", "10.96.0.20", 80, 5)
    assert result["answers"] == [["b1", "10.244.1.1"]] * 5, result
    assert result["replied_from"] == ["10.96.0.20"]
    result = node.connect("b1", "udp", "10.96.0.10", 53, 30)
    assert len(result["answers"]) == 30 and "b1" in spread(result["answers"]), result


def test_the_node_itself_reaches_a_vip(node: Node):
    result = node.connect("node", "tcp", "10.96.0.10", 80, 30)
    assert sum(spread(result["answers"]).values()) == 30, result
    assert result["replied_from"] == ["10.96.0.10"]


def test_no_healthy_backend_refuses_at_once(node: Node):
    tcp = node.connect("client", "tcp", "10.96.0.30", 80, 5)
    udp = node.connect("client", "udp", "10.96.0.30", 53, 5, "--connect")
    local = node.connect("node", "tcp", "10.96.0.30", 80, 5)
    for result in (tcp, udp, local):
        assert result["refused"] == 5 and result["max_refusal_s"] < 0.5, (tcp, udp, local)


def test_client_ip_affinity_keeps_a_client_on_one_backend(node: Node):
    result = node.connect("client", "tcp", "10.96.0.21", 80, 30)
    counts = spread(result["answers"])
    assert len(counts) == 1 and sum(counts.values()) == 30, counts
    [backend] = counts
    chosen = sv.affinity_set(SERVICES[3], sv.Endpoint(ip_address(PODS[backend][1]), PORT))
    listing = node.node.run("nft", "-j", "list", "set", "inet", "overlayd", chosen).stdout
    assert [e["elem"]["val"] for e in json.loads(listing)["nftables"][1]["set"]["elem"]] == ["10.244.1.10"]


def test_a_backend_removed_gets_no_new_connections_and_only_its_service_changes(node: Node):
    web = sv.Service("web", "10.96.0.10", 80, "tcp", v4("b1", "b2"))
    try:
        commands = node.apply([web, *SERVICES[1:]])  # reads the kernel back: exactly the new table
        names = {obj.get("chain", obj.get("name")) for c in commands for body in c.values() for obj in body.values()}
        assert names == {"service-web/tcp/80", "endpoint-web/tcp/80__10.244.2.13/8080"}
        chains = set(node.read_back().chains)
        assert "endpoint-web/tcp/80__10.244.2.13/8080" not in chains
        assert "endpoint-dns/udp/53__10.244.2.13/8080" in chains
        counts = spread(node.connect("client", "tcp", "10.96.0.10", 80, 100)["answers"])
        assert set(counts) == {"b1", "b2"} and sum(counts.values()) == 100, counts
        assert "b3" in spread(node.connect("client", "udp", "10.96.0.10", 53, 60)["answers"])
    finally:
        node.apply(SERVICES)
