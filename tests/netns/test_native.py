"""`routing.backend: native`: pods reached through the site's router, which learns from BGP
which node owns which pod subnet (cilium's native routing with BGP), with FRR as that router.

    node1 10.1.1.2/24 --+
    node2 10.1.2.2/24 --+-- r: FRR (zebra + bgpd), eth0 10.1.1.1/24, 10.1.2.1/24, 10.1.3.1/24
    node3 10.1.3.2/24 --+

Three nodes on three underlay subnets, each with its default route via r, an
iBGP session to r with `families: [ipv4-unicast]` and one CNI pod. Each node
announces its pod subnet (next hop: its underlay address) and routes the
cluster network to its default gateway; r installs the subnets through zebra
and routes between the nodes. node1 has `install_routes: true` instead: r
reflects every subnet to it with itself as next hop (`next-hop-self force`),
and node1 installs them one by one. What each test asserts: FRR's `show ip
route` lists each pod subnet via its node; pods ping across through r; the
nodes' kernels route as the backend says; a stopped node's subnet leaves FRR's
table, and its kernel keeps nothing of overlayd's.
"""

from __future__ import annotations

import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.netns.cni import CniPods, Pod, plugin_config, require_cni
from tests.netns.test_routed_subnets import iperf3, ping_all
from tests.support import require_netns, require_programs, unmet
from tools import frr as frr_tools
from tools.lab import Host, Lab, wait_for
from tools.nodes import Overlayd, start_overlayd, wait_showing_logs

pytestmark = pytest.mark.root

ASN = 65000
NETWORK = "10.244.0.0/16"


def subnet(i: int) -> str:
    return f"10.244.{i + 1}.0/24"


def address(i: int) -> str:
    return f"10.1.{i + 1}.2"


def gateway(i: int) -> str:
    return f"10.1.{i + 1}.1"


@dataclass
class Site:
    lab: Lab
    router: Host
    frr: frr_tools.Frr
    hosts: list[Host]
    nodes: list[Overlayd] = field(default_factory=list)
    pods: list[Pod] = field(default_factory=list)

    def frr_subnets(self) -> dict[str, str]:
        """Pod subnets in FRR's routing table: prefix -> the next hop of its selected BGP route."""
        out = {}
        for prefix, routes in self.frr.ip_routes().items():
            for route in routes:
                if route.get("protocol") == "bgp" and route.get("selected"):
                    hops = [h.get("ip") for h in route.get("nexthops", []) if h.get("active")]
                    if hops and prefix.startswith("10.244."):
                        out[prefix] = hops[0]
        return out


def node_config(lab: Lab, i: int) -> dict[str, Any]:
    return {
        "node": {"vtep": address(i)},
        "bgp": {"asn": ASN, "hold_time": 3, "connect_retry": 1,
                "neighbors": [{"address": gateway(i), "asn": ASN, "families": ["ipv4-unicast"]}]},
        "routing": {"backend": "native", "install_routes": i == 0, "vni": 1, "network": NETWORK,
                    "subnet": subnet(i), "env_file": str(lab.tmpdir / f"node{i + 1}.env"),
                    "cni_conflist": str(lab.tmpdir / f"node{i + 1}-10-overlayd.conflist")},
    }


@pytest.fixture(scope="module")
def site():
    require_netns()
    require_cni()
    require_programs("ping", "iperf3", "ss")
    why = frr_tools.missing()
    if why:
        unmet(why)
    with Lab() as lab:
        router = lab.add_host("r", v4=f"{gateway(0)}/24")
        for i in (1, 2):
            router.ip("addr", "add", f"{gateway(i)}/24", "dev", "eth0")
        router.sysctl("net.ipv4.ip_forward", 1)
        router.sysctl("net.ipv4.conf.all.send_redirects", 0)
        router.sysctl("net.ipv4.conf.eth0.send_redirects", 0)
        hosts = []
        for i in range(3):
            h = lab.add_host(f"node{i + 1}", v4=f"{address(i)}/24")
            h.ip("route", "add", "default", "via", gateway(i))
            h.sysctl("net.ipv4.ip_forward", 1)
            h.sysctl("net.ipv4.conf.all.accept_redirects", 0)
            hosts.append(h)
        config = frr_tools.bgp_config(ASN, gateway(0), [
            frr_tools.Neighbor(address(i), ASN, families=("ipv4-unicast",), rr_client=True) for i in range(3)
        ], hold_time=3)
        frr = frr_tools.start_frr(router, config)
        # node1 installs what it learns: let r reflect the subnets with itself as the next hop
        frr.configure(f"router bgp {ASN}\n address-family ipv4 unicast\n"
                      f"  neighbor {address(0)} next-hop-self force\n exit-address-family\nexit\n")
        s = Site(lab, router, frr, hosts)
        pods = CniPods(lab)
        try:
            s.nodes = [start_overlayd(h, node_config(lab, i), wait=False) for i, h in enumerate(hosts)]
            for node in s.nodes:
                node.wait_ready()
            wait_showing_logs(lambda: len(s.frr_subnets()) == 3, "FRR to route every pod subnet",
                              *s.nodes, timeout=20)
            for i, h in enumerate(hosts):
                conflist = json.loads(Path(node_config(lab, i)["routing"]["cni_conflist"]).read_text())
                s.pods.append(pods.add(h, "p1", plugin_config(conflist, data_dir=lab.tmpdir / f"cni-{i}")))
            yield s
        finally:
            problems = pods.close()
            for node in s.nodes:
                if node.proc.poll() is None:
                    node.proc.send_signal(signal.SIGTERM)
            codes = {node.host.name: node.proc.wait(timeout=15) for node in s.nodes}
            frr.stop()
        assert not problems, problems
        assert set(codes.values()) == {0}, f"overlayd exit codes {codes}"
        for h in hosts:
            assert h.json_ip("route", "show", "proto", "149") == [], h.name


def test_frr_routes_each_pod_subnet_via_its_node(site: Site):
    assert site.frr_subnets() == {subnet(i): address(i) for i in range(3)}
    # and zebra put them into r's kernel
    kernel = {r["dst"]: r.get("gateway") for r in site.router.json_ip("route", "show", "proto", "bgp")}
    assert kernel == {subnet(i): address(i) for i in range(3)}, kernel
    print(site.frr.vtysh("show ip route bgp"))


def test_nodes_route_the_cluster_to_their_gateway_or_install_what_they_learn(site: Site):
    for i in (1, 2):
        routes = site.hosts[i].json_ip("route", "show", "proto", "149")
        assert [(r["dst"], r["gateway"], r["dev"]) for r in routes] == [(NETWORK, gateway(i), "eth0")], routes
    # node1: `install_routes`, the other subnets via r (next-hop-self), no cluster-wide route
    want = {subnet(j): gateway(0) for j in (1, 2)}
    wait_for(lambda: {r["dst"]: r["gateway"] for r in site.hosts[0].json_ip("route", "show", "proto", "149")}
             == want, timeout=10, what="node1 to install the reflected subnets")
    rows = {r["prefix"]: r for r in site.nodes[0].ctl("routes")}
    assert rows[subnet(1)]["way"] == "native" and rows[subnet(1)]["kernel"] == "yes", rows
    print(site.nodes[0].ctl_text("routes"))


def test_pods_ping_across_through_the_router(site: Site):
    pairs = [(site.pods[i].host, site.pods[j].v4) for i in range(3) for j in range(3) if i != j]
    failed = ping_all(pairs)
    assert not failed, f"no reply through FRR for {failed}"
    hops = site.pods[1].host.run("ip", "route", "get", site.pods[2].v4).stdout
    assert "10.244.2.1" in hops  # the pod's gateway is its node's bridge; the node sends it to r
    end = iperf3(site.pods[1], site.pods[2])
    assert end["sum_received"]["bytes"] > 1_000_000, end


def test_a_stopped_node_leaves_frrs_table(site: Site):
    node = site.nodes[2]
    start = time.monotonic()
    node.stop(signal.SIGTERM)
    wait_for(lambda: subnet(2) not in site.frr_subnets(), timeout=5, interval=0.05,
             what=f"{subnet(2)} to leave FRR's table")
    print(f"SIGTERM: {subnet(2)} left FRR's table after {time.monotonic() - start:.2f} s")
    assert site.hosts[2].json_ip("route", "show", "proto", "149") == []
    assert not ping_all([(site.pods[0].host, site.pods[1].v4)])  # the others still reach each other
    wait_for(lambda: subnet(2) not in {r["dst"] for r in site.hosts[0].json_ip("route", "show", "proto", "149")},
             timeout=5, what="node1 to remove the installed route of the stopped node")
