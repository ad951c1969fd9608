"""A VLAN trunk on one TAP (`networks[].vlans`), behind a VLAN-aware bridge (the host's bridge cannot filter VLANs).

Each overlayd node here has network blue as a trunk on TAP trunk0 (VLAN 10 ->
VNI 1010, VLAN 20 -> VNI 1020, no native VLAN), trunk0 a tagged port of a
VLAN-filtering bridge br0 with two pods on access ports: h10 in VLAN 10,
h20 in VLAN 20, all four pods of a pair in one IPv4 subnet, so only the
VLANs keep them apart.

- a (overlayd, static flood list) and b, with no overlayd: the kernel's
  single VXLAN device (`external vnifilter`, `vlan_tunnel on`, 10 -> 1010
  and 20 -> 1020 by `tunnel_info`, head-end replication to a per VNI) as a
  port of b's br0, the way FRR's single-VXLAN-device setups do it.
- c and d, overlayd on both, over BGP EVPN (type-2/3 routes per VNI).

Each pod pings the other node's pod of its VLAN, and never reaches the
other VLAN's pod (its ARP request stays in its VLAN).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.netns.topology import add_underlay_host
from tests.support import require_netns
from tests.vm.guest.guest import pings, query, start_nodes, stop_nodes
from tests.vm.report import note
from tools.lab import Host, Lab, wait_for

VLANS = {10: 1010, 20: 1020}
ASN = 65000


def trunk_network(vteps: list[str] | None = None) -> dict[str, Any]:
    net: dict[str, Any] = {"name": "blue", "device": "trunk0", "vlans": VLANS}
    if vteps:
        net["vteps"] = vteps
    return net


def vlan_bridge(host: Host) -> None:
    """br0, VLAN filtering on, with no default VLAN 1 on new ports."""
    host.ip("link", "add", "br0", "type", "bridge", "vlan_filtering", "1", "vlan_default_pvid", "0")
    host.ip("link", "set", "br0", "up")


def trunk_port(host: Host, port: str) -> None:
    host.ip("link", "set", port, "master", "br0", "up")
    for vid in VLANS:
        host.run("bridge", "vlan", "add", "dev", port, "vid", str(vid))


def access_pods(lab: Lab, host: Host, subnet: str, first: int) -> dict[int, Host]:
    """Pods h10 and h20 on br0's access ports of VLANs 10 and 20: .first and .first+1 of `subnet`."""
    pods = {}
    for k, vid in enumerate(VLANS):
        pod = lab.add_pod(host, f"h{vid}", "br0", v4=f"{subnet}.{first + k}/24", mtu=1400)
        host.run("bridge", "vlan", "add", "dev", f"p-h{vid}", "vid", str(vid), "pvid", "untagged")
        pod.sysctl("net.ipv6.conf.all.disable_ipv6", 1)
        pods[vid] = pod
    return pods


def kernel_svd(host: Host, local: str, remote: str) -> None:
    """The kernel's single VXLAN device in `host`, a port of br0, mapping the VLANs to their VNIs."""
    host.ip("link", "add", "vxlan0", "type", "vxlan", "dstport", "4789", "local", local,
            "external", "vnifilter")
    host.ip("link", "set", "vxlan0", "master", "br0", "up")
    host.run("bridge", "link", "set", "dev", "vxlan0", "vlan_tunnel", "on")
    for vid, vni in VLANS.items():
        host.run("bridge", "vlan", "add", "dev", "vxlan0", "vid", str(vid))
        host.run("bridge", "vlan", "add", "dev", "vxlan0", "vid", str(vid), "tunnel_info", "id", str(vni))
        host.run("bridge", "vni", "add", "dev", "vxlan0", "vni", str(vni))
        host.run("bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vxlan0", "dst", remote,
                 "src_vni", str(vni), "self", "permanent")


def bgp_config(vtep: str, peer: str) -> dict[str, Any]:
    return {"node": {"vtep": vtep}, "networks": [trunk_network()],
            "bgp": {"asn": ASN, "hold_time": 30, "connect_retry": 1,
                    "neighbors": [{"address": peer, "asn": ASN}]}}


@pytest.fixture(scope="module")
def pairs():
    require_netns()
    with Lab() as lab:
        a, b, c, d = (add_underlay_host(lab, name, i + 1, 4) for i, name in enumerate("abcd"))
        for host in (a, b, c, d):
            vlan_bridge(host)
        kernel_svd(b, "10.0.0.2", "10.0.0.1")
        trunk_port(b, "vxlan0")
        nodes = start_nodes([
            (a, {"node": {"vtep": "10.0.0.1"}, "networks": [trunk_network(["10.0.0.2"])]}),
            (c, bgp_config("10.0.0.3", "10.0.0.4")),
            (d, bgp_config("10.0.0.4", "10.0.0.3")),
        ])
        for host in (a, c, d):
            trunk_port(host, "trunk0")
        pods = {host.name: access_pods(lab, host, subnet, first)
                for host, subnet, first in ((a, "192.168.50", 1), (b, "192.168.50", 3),
                                            (c, "192.168.60", 1), (d, "192.168.60", 3))}
        wait_for(lambda: all(len(n["flood_list"]) == 1 for node in nodes[1:]
                             for n in query(node, "status")["networks"]),
                 timeout=120, what="c and d's flood lists from each other's type-3 routes")
        yield nodes, pods
        codes = stop_nodes(nodes)
        assert set(codes.values()) == {0}, f"overlayd exit codes {codes}"


@pytest.mark.parametrize(("near", "far"), [("a", "b"), ("c", "d")])
def test_each_vlan_reaches_its_own_vlan_across_and_never_the_other(pairs, near, far):
    nodes, pods = pairs
    for vid, other in ((10, 20), (20, 10)):
        pings(pods[near][vid], pods[far][vid].v4, 3)
        pings(pods[far][vid], pods[near][vid].v4, 3)
        assert not pods[near][vid].ping(pods[far][other].v4, count=2, timeout=3), \
            f"{near}'s VLAN {vid} pod reached {far}'s VLAN {other} pod"
    node = nodes[0] if near == "a" else nodes[1]
    macs = {(r["vlan"], r["vni"]) for r in query(node, "fdb") if r["where"] != "local"}
    assert macs == {(10, 1010), (20, 1020)}, macs
    note(f"VLAN trunk {near}-{far}: VLANs 10 and 20 crossed in VNIs 1010 and 1020; the other VLAN unreachable")
