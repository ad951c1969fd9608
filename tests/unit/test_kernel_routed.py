"""kernel.routed and kernel.segment: the desired kernel state of each backend, from the tables."""

from __future__ import annotations

import dataclasses
import ipaddress
from ipaddress import ip_address, ip_interface, ip_network

import pytest

from overlayd.fabric.fdb import FdbEntry as TableMac, Source
from overlayd.fabric.neighbors import Binding
from overlayd.fabric.prefixes import PrefixEntry
from overlayd.kernel.routed import Connected, Gateway, Host, RoutedSpec, plan_routed
from overlayd.kernel.segment import SegmentSpec, plan_segment, probe_instead
from overlayd.kernel.state import Address, BridgeFdbEntry, FdbEntry, KernelState, Neighbor, Op, Route

NETWORK = ip_network("10.244.0.0/16")
NETWORK6 = ip_network("fd00:244::/48")
MAC2, MAC3, MAC4 = (bytes([2, 0, 10, 0, 0, n]) for n in (2, 3, 4))


def local(prefix: str) -> PrefixEntry:
    return PrefixEntry(ip_network(prefix), None, bytes([2, 0, 10, 0, 0, 1]), 1, "10.0.0.1", "local", Source.LOCAL)


def remote(prefix: str, vtep: str, mac: bytes | None, vni: int = 1, node: str | None = None) -> PrefixEntry:
    return PrefixEntry(ip_network(prefix), vtep, mac, vni, node or vtep, vtep, Source.BGP)


TABLE = [
    local("10.244.1.0/24"),
    remote("10.244.2.0/24", "10.0.0.2", MAC2),   # same underlay subnet as us
    remote("10.244.3.0/24", "10.1.0.3", MAC3),   # another underlay subnet, behind a router
    local("fd00:244:0:1::/64"),
    remote("fd00:244:0:2::/64", "10.0.0.2", MAC2),
]
HOST = Host(
    connected=(Connected(ip_network("10.0.0.0/24"), "eth0"), Connected(ip_network("192.168.9.0/24"), "eth1")),
    gateways={4: Gateway(ip_address("10.0.0.254"), "eth0")},
)


def taking(encap: str, table: list[PrefixEntry]) -> list[PrefixEntry]:
    """The table as nodes of another backend announce it (local entries stay)."""
    return [e if e.vtep is None else dataclasses.replace(e, encap=encap) for e in table]


def spec(backend: str, **kw) -> RoutedSpec:
    return RoutedSpec(backend, "ovl0", ip_address("10.0.0.1"), 1, (NETWORK, NETWORK6), **kw)


def test_kernel_backend_is_flannels_vxlan_one_route_one_neighbour_one_fdb_entry_per_node():
    plan = plan_routed(spec("kernel"), TABLE, HOST)
    gw2, gw3, gw6 = ip_address("10.244.2.0"), ip_address("10.244.3.0"), ip_address("fd00:244:0:2::")
    assert plan.state == KernelState.of([
        Address("ovl0", ip_interface("10.244.1.0/32")),
        Address("ovl0", ip_interface("fd00:244:0:1::/128")),
        Route(ip_network("10.244.2.0/24"), gw2, "ovl0", onlink=True),
        Route(ip_network("10.244.3.0/24"), gw3, "ovl0", onlink=True),
        Route(ip_network("fd00:244:0:2::/64"), gw6, "ovl0", onlink=True),
        Neighbor("ovl0", gw2, MAC2), Neighbor("ovl0", gw3, MAC3), Neighbor("ovl0", gw6, MAC2),
        FdbEntry("ovl0", MAC2, ip_address("10.0.0.2")), FdbEntry("ovl0", MAC3, ip_address("10.1.0.3")),
    ])
    assert {str(p): w.way for p, w in plan.ways.items()} == {
        "10.244.1.0/24": "local", "10.244.2.0/24": "vxlan", "10.244.3.0/24": "vxlan",
        "fd00:244:0:1::/64": "local", "fd00:244:0:2::/64": "vxlan"}


def test_kernel_backend_refuses_what_one_vxlan_device_cannot_reach():
    table = [remote("10.244.4.0/24", "10.0.0.4", None), remote("10.244.5.0/24", "10.0.0.5", MAC4, vni=7),
             remote("10.244.6.0/24", "fd00::6", MAC4), remote("10.244.7.0/24", "10.0.0.7", MAC2, node="a"),
             remote("10.244.8.0/24", "10.0.0.8", MAC2, node="b")]
    plan = plan_routed(spec("kernel"), table, HOST)
    reasons = {str(p): w.reason for p, w in plan.ways.items() if w.way == "none"}
    assert reasons == {
        "10.244.4.0/24": "the route carries no router MAC",
        "10.244.5.0/24": "VNI 7 is not our L3 VNI 1",
        "10.244.6.0/24": "VTEP fd00::6 is not of our underlay's family",
        "10.244.8.0/24": "router MAC 02:00:0a:00:00:02 is node a's too",
    }
    assert set(plan.state.routes) == {ip_network("10.244.7.0/24")}


def test_host_gw_routes_only_to_nodes_on_a_connected_network():
    plan = plan_routed(spec("host-gw"), TABLE, HOST)
    assert plan.state == KernelState.of([Route(ip_network("10.244.2.0/24"), ip_address("10.0.0.2"), "eth0")])
    ways = {str(p): w for p, w in plan.ways.items()}
    assert ways["10.244.3.0/24"].way == "none"
    assert ways["10.244.3.0/24"].reason == "node 10.1.0.3 (10.1.0.3) is not on a directly connected network"
    assert ways["fd00:244:0:2::/64"].reason == "host-gw needs an IPv6 next hop; node 10.0.0.2 has VTEP 10.0.0.2"


@pytest.mark.parametrize("backend, far_way", [("kernel", "vxlan"), ("userspace", "userspace"), ("ipip", "ipip")])
def test_direct_routing_takes_host_gw_where_it_can_and_the_tunnel_elsewhere(backend, far_way):
    table = taking("ipip", TABLE) if backend == "ipip" else TABLE
    plan = plan_routed(spec(backend, direct_routing=True), table, HOST)
    ways = {str(p): w.way for p, w in plan.ways.items()}
    assert ways["10.244.2.0/24"] == "host-gw" and ways["10.244.3.0/24"] == far_way
    assert plan.state.routes[ip_network("10.244.2.0/24")] == Route(
        ip_network("10.244.2.0/24"), ip_address("10.0.0.2"), "eth0")


def test_userspace_hands_the_cluster_networks_to_its_device():
    plan = plan_routed(spec("userspace"), TABLE, HOST)
    assert plan.state == KernelState.of([Route(NETWORK, device="ovl0"), Route(NETWORK6, device="ovl0")])


def test_ipip_routes_each_node_onlink_and_carries_only_the_underlays_family():
    plan = plan_routed(spec("ipip"), taking("ipip", TABLE), HOST)
    assert plan.state == KernelState.of([
        Address("ovl0", ip_interface("10.244.1.0/32")),
        Route(ip_network("10.244.2.0/24"), ip_address("10.0.0.2"), "ovl0", onlink=True),
        Route(ip_network("10.244.3.0/24"), ip_address("10.1.0.3"), "ovl0", onlink=True),
    ])
    assert plan.ways[ip_network("fd00:244:0:2::/64")].reason == "IPIP carries only IPv4 subnets (an IPv6 underlay carries both)"


def test_native_sends_the_cluster_network_to_the_default_gateway():
    plan = plan_routed(spec("native"), TABLE, HOST)
    assert plan.state == KernelState.of([Route(NETWORK, ip_address("10.0.0.254"), "eth0")])
    ways = plan.ways
    assert ways[ip_network("10.244.3.0/24")].way == "native"
    assert ways[ip_network("fd00:244:0:2::/64")].reason == "no IPv6 default route to send it to"


def test_native_installs_learned_unicast_routes_when_told_but_never_over_our_subnet():
    host = Host(HOST.connected, HOST.gateways, unicast={
        ip_network("10.244.2.0/24"): ip_address("10.0.0.2"),
        ip_network("10.244.1.128/25"): ip_address("10.0.0.9"),  # inside ours: not installed
        ip_network("198.51.100.0/24"): ip_address("192.168.9.3"),
        ip_network("203.0.113.0/24"): ip_address("10.7.0.1"),  # next hop not on a connected network
    })
    plan = plan_routed(spec("native", install_routes=True), TABLE, host)
    assert set(map(str, plan.state.routes.values())) == {  # instead of the cluster network's route
        "10.244.2.0/24 via 10.0.0.2 dev eth0", "198.51.100.0/24 via 192.168.9.3 dev eth1"}
    assert plan_routed(spec("native"), TABLE, host).state.routes.keys() == {NETWORK}


def test_the_longest_connected_network_names_the_device():
    host = Host(connected=(Connected(ip_network("10.0.0.0/16"), "eth0"), Connected(ip_network("10.0.0.0/24"), "eth9")))
    assert host.on_link(ip_address("10.0.0.2")).device == "eth9"
    assert host.on_link(ip_address("10.0.1.2")).device == "eth0"
    assert host.on_link(ip_address("10.9.0.2")) is None


# -- an L2 segment on the kernel's bridge ----------------------------------------------


def test_segment_plan_is_remote_macs_flood_list_and_bindings():
    spec_ = SegmentSpec(100, "br-blue", "vx100", 4)
    macs = [TableMac(100, MAC2, "10.0.0.2", Source.BGP, 0.0), TableMac(100, MAC3, None, Source.LOCAL, 0.0),
            TableMac(100, MAC4, "fd00::4", Source.BGP, 0.0)]
    bindings = [Binding(100, ipaddress.ip_address("192.168.100.2"), MAC2, Source.BGP, 0.0)]
    state = plan_segment(spec_, macs, ["10.0.0.2", "10.0.0.3"], bindings)
    assert state == KernelState.of([
        FdbEntry("vx100", MAC2, ip_address("10.0.0.2")),
        BridgeFdbEntry("vx100", MAC2),  # what the bridge's neigh_suppress looks the MAC up in
        FdbEntry("vx100", bytes(6), ip_address("10.0.0.2")), FdbEntry("vx100", bytes(6), ip_address("10.0.0.3")),
        Neighbor("br-blue", ip_address("192.168.100.2"), MAC2, extern_learn=True),
    ])


def test_our_neighbour_for_a_host_that_moved_here_is_handed_to_the_hosts_table_as_a_probe():
    ip2, ip3 = ip_address("192.168.100.2"), ip_address("192.168.100.3")
    moved = Neighbor("br-blue", ip2, MAC2, extern_learn=True)  # MAC2 is on a local port now
    gone = Neighbor("br-blue", ip3, MAC3, extern_learn=True)  # MAC3 is not
    kept = Neighbor("br-blue", ip3, MAC2, extern_learn=True)
    ops = [Op("delete", moved), Op("delete", gone), Op("replace", kept, gone),
           Op("delete", FdbEntry("vx100", MAC2, ip_address("10.0.0.2"))),
           Op("delete", Neighbor("ovl0", ip2, MAC2))]  # a routed backend's permanent neighbour
    out = probe_instead(ops, lambda bridge, mac: bridge == "br-blue" and mac == MAC2)
    assert out == [Op("probe", moved)] + ops[1:]
    assert str(out[0]) == "probe 192.168.100.2 lladdr 02:00:0a:00:00:02 dev br-blue"


def hostgw_node(prefix: str, vtep: str) -> PrefixEntry:
    return PrefixEntry(ip_network(prefix), vtep, None, 1, vtep, vtep, Source.BGP, encap="none")


@pytest.mark.parametrize("backend", ["userspace", "kernel", "ipip"])
def test_a_node_that_takes_no_tunnel_is_routed_to_directly_or_not_at_all(backend):
    table = [hostgw_node("10.244.5.0/24", "10.0.0.5"), hostgw_node("10.244.6.0/24", "10.1.0.6")]
    plan = plan_routed(spec(backend), table, HOST)
    near, far = plan.ways[ip_network("10.244.5.0/24")], plan.ways[ip_network("10.244.6.0/24")]
    assert near.way == "host-gw" and near.route == Route(ip_network("10.244.5.0/24"), ip_address("10.0.0.5"), "eth0")
    assert plan.state.routes[ip_network("10.244.5.0/24")] == near.route
    wanted = "IP in IP" if backend == "ipip" else "VXLAN"
    assert far.way == "none"
    assert far.reason == f"node 10.1.0.6 takes no tunnel, not {wanted}, and is not on a directly connected network"


def test_a_vxlan_node_seen_from_an_ipip_node_is_routed_directly():
    plan = plan_routed(spec("ipip"), [remote("10.244.2.0/24", "10.0.0.2", MAC2)], HOST)
    assert plan.ways[ip_network("10.244.2.0/24")].way == "host-gw"
