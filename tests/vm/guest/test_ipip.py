"""`routing.backend: ipip` in Debian's kernel (the host's has no IPIP): cilium's IPIP tunnel.

IPv4 underlay: nodes a, b, c (10.0.0.{1,2,3}), each with a bridge cni0 holding
its pod subnet 10.244.N.0/24 and one pod on it, an iBGP full mesh, and the
ipip backend: overlayd creates the IPIP device ovl0 (local = the VTEP) and a
route per other node's subnet via that node's address, onlink on ovl0.
IPv6 underlay: nodes d, e (fd00::{4,5}), dual-stack pods (10.246.N.0/24 and
fd00:244:0:N::/64): an ip6tnl device in external mode carries both, each
route naming its remote (`encap ip6 dst VTEP`). Each test asserts what
crossed, and that the kernel holds exactly the routes the RIB implies.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from tests.support import require_netns
from tests.vm.guest.guest import query, start_nodes, stop_nodes
from tests.vm.report import note
from tools.lab import Host, Lab, wait_for

ASN = 65000


def node_config(lab: Lab, vtep: str, peers: list[str], subnets: list[str], router_id: str) -> dict[str, Any]:
    routing: dict[str, Any] = {"backend": "ipip", "vni": 1, "env_file": f"{lab.tmpdir}/{router_id}.env"}
    for subnet in subnets:
        if ipaddress.ip_network(subnet).version == 4:
            routing.update(network="10.244.0.0/14", subnet=subnet)
        else:
            routing.update(network6="fd00:244::/48", subnet6=subnet)
    return {
        "node": {"vtep": vtep},
        "bgp": {"asn": ASN, "router_id": router_id, "hold_time": 30, "connect_retry": 2,
                "neighbors": [{"address": p, "asn": ASN} for p in peers]},
        "routing": routing,
    }


def add_node(lab: Lab, name: str, vtep: str, subnets: list[str]) -> tuple[Host, Host]:
    """A node with `vtep` on eth0 and a pod on its bridge cni0 with an address of each subnet."""
    version = ipaddress.ip_address(vtep).version
    host = lab.add_host(name, **({"v4": f"{vtep}/24"} if version == 4 else {"v6": f"{vtep}/64"}))
    host.sysctl("net.ipv4.ip_forward", 1)
    host.sysctl("net.ipv6.conf.all.forwarding", 1)
    host.ip("link", "add", "cni0", "type", "bridge")
    pod_args: dict[str, str] = {}
    for subnet in subnets:
        net = ipaddress.ip_network(subnet)
        gw, pod_ip = net.network_address + 1, net.network_address + 2
        host.ip("addr", "add", f"{gw}/{net.prefixlen}", "dev", "cni0", *(["nodad"] if net.version == 6 else []))
        if net.version == 4:
            pod_args.update(v4=f"{pod_ip}/{net.prefixlen}", gateway=str(gw))
        else:
            pod_args.update(v6=f"{pod_ip}/{net.prefixlen}", gateway6=str(gw))
    host.ip("link", "set", "cni0", "up")
    return host, lab.add_pod(host, "p1", "cni0", **pod_args)


def kernel_routes(host: Host, family: str) -> set[tuple[str, str | None, str, bool]]:
    """(prefix, next hop or encap remote, device, onlink) of each route of protocol 149, read from
    `ip route` text (its JSON names an encap route's prefix and remote both "dst")."""
    out = set()
    for line in host.run("ip", family, "route", "show", "proto", "149").stdout.splitlines():
        words = line.split()
        if not words:
            continue
        hop = words[words.index("via") + 1] if "via" in words else None
        if "encap" in words:
            hop = words[words.index("dst") + 1]
        out.add((words[0], hop, words[words.index("dev") + 1], "onlink" in words))
    return out


def converged(nodes, count: int) -> bool:
    return all(len(query(n, "routes")) == count for n in nodes)


@pytest.fixture(scope="module")
def clusters():
    """Both underlays at once, so the daemons start side by side (each start is slow here)."""
    require_netns()
    with Lab() as lab:
        vteps4 = [f"10.0.0.{i + 1}" for i in range(3)]
        vteps6 = [f"fd00::{i + 4}" for i in range(2)]
        subnets4 = [[f"10.244.{i + 1}.0/24"] for i in range(3)]
        subnets6 = [[f"10.246.{i + 4}.0/24", f"fd00:244:0:{i + 4}::/64"] for i in range(2)]
        v4 = [add_node(lab, name, vteps4[i], subnets4[i]) for i, name in enumerate("abc")]
        v6 = [add_node(lab, name, vteps6[i], subnets6[i]) for i, name in enumerate("de")]
        configs = [(h, node_config(lab, vteps4[i], [v for v in vteps4 if v != vteps4[i]], subnets4[i], vteps4[i]))
                   for i, (h, _) in enumerate(v4)]
        configs += [(h, node_config(lab, vteps6[i], [v for v in vteps6 if v != vteps6[i]], subnets6[i],
                                    f"10.0.1.{i + 4}")) for i, (h, _) in enumerate(v6)]
        nodes = start_nodes(configs)
        wait_for(lambda: converged(nodes[:3], 3) and converged(nodes[3:], 4), timeout=120,
                 what="every node to know every subnet")
        yield {"v4": (v4, nodes[:3], vteps4), "v6": (v6, nodes[3:], vteps6)}
        codes = stop_nodes(nodes)
        assert set(codes.values()) == {0}, f"overlayd exit codes {codes}"
        for host, _ in v4 + v6:  # a clean stop leaves nothing
            assert host.run("ip", "link", "show", "dev", "ovl0", check=False).returncode != 0, host.name
            assert host.json_ip("-4", "route", "show", "proto", "149") == []
            assert host.json_ip("-6", "route", "show", "proto", "149") == []


def test_ipip_pods_ping_across_and_the_routes_equal_the_rib(clusters):
    members, nodes, vteps = clusters["v4"]
    for i, (host, pod) in enumerate(members):
        [link] = host.json_ip("-d", "link", "show", "dev", "ovl0")
        assert link["linkinfo"]["info_kind"] == "ipip", link
        assert link["linkinfo"]["info_data"]["local"] == vteps[i] and link["mtu"] == 1480, link
        want = {(r["prefix"], r["vtep"], "ovl0", True) for r in query(nodes[i], "routes") if r["vtep"] != "local"}
        assert len(want) == 2 and kernel_routes(host, "-4") == want, (kernel_routes(host, "-4"), want)
        for j, (_, other) in enumerate(members):
            if i != j:
                out = pod.run("ping", "-n", "-c", "3", "-i", "0.2", "-w", "30", other.v4, check=False).stdout
                assert "3 received" in out, f"{pod.name} -> {other.v4}:\n{out}"
    # the packets crossed as IP in IP: the IPIP device counted them
    [stats] = members[0][0].json_ip("-s", "link", "show", "dev", "ovl0")
    assert stats["stats64"]["tx"]["packets"] >= 6 and stats["stats64"]["rx"]["packets"] >= 6, stats
    note(f"ipip: 6 pod pairs pinged across; node a's routes: {sorted(kernel_routes(members[0][0], '-4'))}")


def test_ip6tnl_carries_ipv4_and_ipv6_pods_over_an_ipv6_underlay(clusters):
    members, nodes, vteps = clusters["v6"]
    for i, (host, pod) in enumerate(members):
        [link] = host.json_ip("-d", "link", "show", "dev", "ovl0")
        assert link["linkinfo"]["info_kind"] == "ip6tnl" and link["mtu"] == 1460, link
        want = {(r["prefix"], r["vtep"], "ovl0", False) for r in query(nodes[i], "routes") if r["vtep"] != "local"}
        have = kernel_routes(host, "-4") | kernel_routes(host, "-6")
        assert len(want) == 2 and have == want, (have, want, query(nodes[i], "status")["kernel"]["last_errors"])
        other = members[1 - i][1]
        for family, address in (("-4", other.v4), ("-6", other.v6)):
            out = pod.run("ping", family, "-n", "-c", "3", "-i", "0.2", "-w", "30", address, check=False).stdout
            assert "3 received" in out, f"{pod.name} -> {address}:\n{out}"
    note("ip6tnl (external, encap ip6): IPv4 and IPv6 pods pinged across both ways")
