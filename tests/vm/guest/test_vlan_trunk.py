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

import time
from typing import Any

import pytest

from tests.netns.topology import add_underlay_host
from tests.support import require_netns
from tests.vm.guest.guest import pings, query, start_nodes, stop_nodes
from tests.vm.report import note
from tools.lab import Host, Lab, run, wait_for

VLANS = {10: 1010, 20: 1020}
ASN = 65000


def trunk_network(vteps: list[str] | None = None) -> dict[str, Any]:
    net: dict[str, Any] = {"name": "blue", "device": "trunk0", "vlans": VLANS}
    if vteps:
        net["vteps"] = vteps
    return net


def batch(host: Host, tool: str, lines: list[str]) -> None:
    """Run `ip` or `bridge` commands in `host` as one batch: every process costs in the emulated guest."""
    run(tool, "-n", host.netns, "-batch", "-", input="\n".join(lines) + "\n", timeout=120)


# `ip` lines for br0, VLAN filtering on, with no default VLAN 1 on new ports.
VLAN_BRIDGE = ["link add br0 type bridge vlan_filtering 1 vlan_default_pvid 0", "link set br0 up"]


def trunk_port(port: str) -> list[str]:
    """`bridge` lines making `port` a tagged member of both VLANs."""
    return [f"vlan add dev {port} vid {vid}" for vid in VLANS]


def access_pods(lab: Lab, host: Host, subnet: str, first: int) -> tuple[dict[int, Host], list[str]]:
    """Pods h10 and h20 on br0 (.first and .first+1 of `subnet`), and the `bridge` lines that
    make their ports access ports of VLANs 10 and 20."""
    pods = {}
    for k, vid in enumerate(VLANS):
        pods[vid] = lab.add_pod(host, f"h{vid}", "br0", v4=f"{subnet}.{first + k}/24", mtu=1400)
    return pods, [f"vlan add dev p-h{vid} vid {vid} pvid untagged" for vid in VLANS]


def kernel_svd(local: str, remote: str) -> tuple[list[str], list[str]]:
    """`ip` and `bridge` lines for the kernel's single VXLAN device, a port of br0, mapping the
    VLANs to their VNIs with head-end replication to `remote`."""
    ip = [f"link add vxlan0 type vxlan dstport 4789 local {local} external vnifilter",
          "link set vxlan0 master br0 up"]
    bridge = ["link set dev vxlan0 vlan_tunnel on"]
    for vid, vni in VLANS.items():
        bridge += [f"vlan add dev vxlan0 vid {vid}", f"vlan add dev vxlan0 vid {vid} tunnel_info id {vni}",
                   f"vni add dev vxlan0 vni {vni}",
                   f"fdb append 00:00:00:00:00:00 dev vxlan0 dst {remote} src_vni {vni} self permanent"]
    return ip, bridge


def bgp_config(vtep: str, peer: str) -> dict[str, Any]:
    return {"node": {"vtep": vtep}, "networks": [trunk_network()],
            "bgp": {"asn": ASN, "hold_time": 30, "connect_retry": 1,
                    "neighbors": [{"address": peer, "asn": ASN}]}}


@pytest.fixture(scope="module")
def pairs():
    require_netns()
    with Lab() as lab:
        start = time.monotonic()
        a, b, c, d = (add_underlay_host(lab, name, i + 1, 4) for i, name in enumerate("abcd"))
        svd_ip, svd_bridge = kernel_svd("10.0.0.2", "10.0.0.1")
        for host in (a, b, c, d):
            batch(host, "ip", VLAN_BRIDGE + (svd_ip if host is b else []))
        nodes = start_nodes([
            (a, {"node": {"vtep": "10.0.0.1"}, "networks": [trunk_network(["10.0.0.2"])]}),
            (c, bgp_config("10.0.0.3", "10.0.0.4")),
            (d, bgp_config("10.0.0.4", "10.0.0.3")),
        ])
        pods = {}
        for host, subnet, first in ((a, "192.168.50", 1), (b, "192.168.50", 3),
                                    (c, "192.168.60", 1), (d, "192.168.60", 3)):
            pods[host.name], access = access_pods(lab, host, subnet, first)
            if host is not b:
                batch(host, "ip", ["link set trunk0 master br0 up"])
            batch(host, "bridge", access + (svd_bridge + trunk_port("vxlan0") if host is b else trunk_port("trunk0")))
        wait_for(lambda: all(len(n["flood_list"]) == 1 for node in nodes[1:]
                             for n in query(node, "status")["networks"]),
                 timeout=120, what="c and d's flood lists from each other's type-3 routes")
        note(f"VLAN trunk: 4 hosts, 8 pods, 3 daemons set up in {time.monotonic() - start:.1f} s")
        yield nodes, pods
        codes = stop_nodes(nodes)
        assert set(codes.values()) == {0}, f"overlayd exit codes {codes}"


@pytest.mark.parametrize(("near", "far"), [("a", "b"), ("c", "d")])
def test_each_vlan_reaches_its_own_vlan_across_and_never_the_other(pairs, near, far):
    nodes, pods = pairs
    for vid, other in ((10, 20), (20, 10)):
        pings(pods[near][vid], pods[far][vid].v4, 3)
        pings(pods[far][vid], pods[near][vid].v4, 3)
        assert not pods[near][vid].ping(pods[far][other].v4, count=1, timeout=2), \
            f"{near}'s VLAN {vid} pod reached {far}'s VLAN {other} pod"
    node = nodes[0] if near == "a" else nodes[1]
    macs = {(r["vlan"], r["vni"]) for r in query(node, "fdb") if r["where"] != "local"}
    assert macs == {(10, 1010), (20, 1020)}, macs
    note(f"VLAN trunk {near}-{far}: VLANs 10 and 20 crossed in VNIs 1010 and 1020; the other VLAN unreachable")
