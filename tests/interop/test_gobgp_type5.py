"""Routed subnets (EVPN type-5, RFC 9136) against GoBGP, and the Linux kernel's VXLAN-in-a-VRF data plane.

One lab for the module:

    n1: overlayd, VTEP 10.0.0.1, routing vni 1, network 10.244.0.0/16, subnet
        10.244.1.0/24 on TUN ovl0; bridge cni0 10.244.1.1/24 (no ports: the CNI
        bridge before its first pod) gives the node an address in its subnet;
        neighbor 10.0.0.9
    g:  gobgpd 10.0.0.9, neighbor 10.0.0.1 (l2vpn-evpn); tcpdump of port 179 on eth0
    k:  no BGP: the data plane FRR/zebra programs for symmetric IRB, by hand
        (below); GoBGP stands in for FRR's control plane and announces k's
        subnet 10.244.9.0/24 (router MAC = br1's, next hop 10.0.0.4, label 1)

GoBGP holds overlayd's type-5 route with the prefix, the L3 VNI as label, the
VTEP as next hop, overlayd's router MAC (RFC 9135), the route target and the
VXLAN encapsulation; a type-5 route added in GoBGP shows up in `overlayctl
routes` (VTEP, router MAC, VNI) and leaves it when withdrawn, one without
a router MAC is reported and not used, and one prefix announced for two
VTEPs stays when one of the two is withdrawn; a ping from n1's 10.244.1.1 to k's
10.244.9.1, and one back from k's tenant side, cross overlayd and the
kernel's VXLAN device; tshark decodes the session cleanly and reads
overlayd's type-5 UPDATE field for field like GoBGP's.

k is what FRR with kernel VXLAN in a VRF looks like once zebra has
installed overlayd's type-5 route (symmetric IRB, RFC 9135 4.2):

    ip link add vrf1 type vrf table 10
    ip link add br1 address <K_RMAC> type bridge     # master vrf1: the L3 VNI's SVI
    ip link add vx1 type vxlan id 1 local 10.0.0.4 dstport 4789 nolearning   # master br1
    ip link add k9 type veth peer name k9p           # k9: master vrf1, 10.244.9.1/24
    ip route add 10.244.1.0/24 table 10 via 10.0.0.1 dev br1 onlink
    ip neigh add 10.0.0.1 lladdr <overlayd's router MAC> dev br1 nud permanent
    bridge fdb append <overlayd's router MAC> dev vx1 dst 10.0.0.1 self permanent
    bridge fdb add <overlayd's router MAC> dev vx1 master static

Found by trying it (kernel 6.18, iproute2 6.x):

- This machine's kernel has neither VRF devices (CONFIG_NET_VRF is not set:
  `ip link add vrf1 type vrf` says "Unknown device type") nor dummy devices
  (CONFIG_DUMMY), and cannot load modules. So the fixture probes for VRF:
  with it, the recipe above as written; without it, the tenant routing
  table is table 10 all the same, chosen by the rules a VRF's l3mdev rule
  stands for (`ip rule add iif br1 lookup 10`, `ip rule add from
  10.244.9.0/24 lookup 10`), with br1 and k9 enslaved to no VRF. The
  wire is the same either way (VNI 1, inner Ethernet from k's router MAC to
  overlayd's and back, decapsulated on br1); what the fallback does not
  check is the VRF device itself. The run says which one it used. The VRF
  branch has not been run on this machine.
- k's "pods" are a veth pair with both ends in k (for want of a dummy);
  10.244.9.1 is a local address of the tenant side.
- br1's MAC is set explicitly: a bridge otherwise takes the lowest MAC of
  its ports, and k's router MAC must not change under GoBGP's route.
- Nothing else: k keeps ip_forward 0 and rp_filter 0 (a new namespace's
  defaults), no VRF strict mode; the pings end at local addresses on both sides. A datagram
  for k's router MAC is delivered up br1; the reply is routed by table 10
  through the onlink route, the permanent neighbour (no ARP for a VTEP on
  the overlay) and the FDB entries to vx1, whose datagram is routed in the
  main table (vx1 has no lower device, so its underlay is not the VRF's).
  n1 has ip_forward on only as a node with pods behind cni0 would.
- vx1 counts TX drops: what br1 and vx1 send on their own (IGMP and MLD
  reports, link-local multicast) has nowhere to go, for an L3 VNI has no
  all-zeros FDB entry (as with FRR). Not an error.
- Lab only: `ethtool -K eth0 tx off` on k, as in test_kernel_vxlan.py (a
  veth hands overlayd inner TCP checksums unfinished; harmless for ping).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest

from tests.support import require_netns, require_programs
from tools.gobgp import GoBgp, Neighbor, start_gobgpd
from tools.lab import Capture, Host, Lab
from tools.nodes import Overlayd, start_overlayd, wait_showing_logs

pytestmark = [pytest.mark.root, pytest.mark.peer]

ASN = 65000
L3_VNI = 1
RT = "65000:1"
VXLAN_TUNNEL_TYPE = 8
VXLAN_PORT = 4789
HOLD_TIME = 9
CONVERGE_S = 20.0

N1_VTEP, G_ADDR, K_VTEP = "10.0.0.1", "10.0.0.9", "10.0.0.4"
NETWORK = "10.244.0.0/16"
N1_SUBNET, N1_POD = "10.244.1.0/24", "10.244.1.1"
K_SUBNET, K_POD = "10.244.9.0/24", "10.244.9.1"
K_RMAC = "02:00:00:00:09:04"  # br1's MAC: k's router MAC
K_RD = f"{K_VTEP}:{L3_VNI}"
K_TABLE = 10


def overlayd_config(lab: Lab) -> dict[str, Any]:
    return {
        "node": {"vtep": N1_VTEP, "vxlan_port": VXLAN_PORT},
        "bgp": {"asn": ASN, "hold_time": HOLD_TIME, "connect_retry": 1,
                "neighbors": [{"address": G_ADDR, "asn": ASN}]},
        "routing": {"vni": L3_VNI, "network": NETWORK, "subnet": N1_SUBNET, "device": "ovl0",
                    "device_type": "tun", "route_target": RT,
                    "env_file": str(lab.tmpdir / "n1-subnet.env")},
    }


@dataclass
class Type5Lab:
    lab: Lab
    n1: Host
    k: Host
    node: Overlayd
    gobgp: GoBgp
    router_mac: str  # overlayd's
    vrf: bool  # k's tenant table is a VRF's (else table 10 by ip rules)
    pcap: Path
    capture: Capture



def wait(predicate, what: str, *logs: Any, timeout: float = CONVERGE_S) -> Any:
    return wait_showing_logs(predicate, what, *logs, timeout=timeout)


def vrf_supported(k: Host) -> bool:
    """Whether k's kernel has VRF devices (CONFIG_NET_VRF); probed with a throwaway one."""
    made = k.ip("link", "add", "vrfprobe", "type", "vrf", "table", "99", check=False)
    if made.returncode != 0:
        return False
    k.ip("link", "del", "vrfprobe")
    return True


def kernel_irb_host(k: Host, overlayd_rmac: str, vrf: bool) -> None:
    """k's symmetric IRB data plane, as zebra programs it (see the module docstring);
    the tenant table is vrf1's, or without VRF support table 10 chosen by ip rules."""
    if vrf:
        k.ip("link", "add", "vrf1", "type", "vrf", "table", str(K_TABLE))
        k.ip("link", "set", "vrf1", "up")
    k.ip("link", "add", "br1", "address", K_RMAC, "type", "bridge")
    k.ip("link", "add", "vx1", "type", "vxlan", "id", str(L3_VNI), "local", K_VTEP,
         "dstport", str(VXLAN_PORT), "nolearning")
    k.ip("link", "set", "vx1", "master", "br1")
    # k's pod subnet: a veth pair with both ends here (a dummy that needs no CONFIG_DUMMY).
    k.ip("link", "add", "k9", "type", "veth", "peer", "name", "k9p")
    if vrf:
        k.ip("link", "set", "br1", "master", "vrf1")
        k.ip("link", "set", "k9", "master", "vrf1")
    k.ip("addr", "add", f"{K_POD}/24", "dev", "k9")
    for dev in ("vx1", "br1", "k9p", "k9"):
        k.ip("link", "set", dev, "up")
    if not vrf:
        # What a VRF's l3mdev rule does, by hand: the overlay side and k's subnet use table 10.
        k.ip("rule", "add", "iif", "br1", "lookup", str(K_TABLE))
        k.ip("rule", "add", "from", K_SUBNET, "lookup", str(K_TABLE))
    # What zebra installs for overlayd's type-5 route.
    k.ip("route", "add", N1_SUBNET, "table", str(K_TABLE), "via", N1_VTEP, "dev", "br1", "onlink")
    k.ip("neigh", "add", N1_VTEP, "lladdr", overlayd_rmac, "dev", "br1", "nud", "permanent")
    k.run("bridge", "fdb", "append", overlayd_rmac, "dev", "vx1", "dst", N1_VTEP, "self",
          "permanent")
    k.run("bridge", "fdb", "add", overlayd_rmac, "dev", "vx1", "master", "static")
    # Lab only: finish inner checksums before the veth (see test_kernel_vxlan.py).
    k.run("ethtool", "-K", "eth0", "tx", "off")


@pytest.fixture(scope="module")
def t5() -> Iterator[Type5Lab]:
    require_netns()
    require_programs("gobgpd", "gobgp", "tcpdump", "tshark", "ethtool", "bridge", "ping")
    with Lab() as lab:
        n1 = lab.add_host("n1", v4=f"{N1_VTEP}/24")
        g = lab.add_host("g", v4=f"{G_ADDR}/24")
        k = lab.add_host("k", v4=f"{K_VTEP}/24")
        pcap = lab.tmpdir / "bgp-type5.pcap"
        capture = g.capture(pcap, "tcp port 179")
        gobgp = start_gobgpd(g, ASN, [Neighbor(N1_VTEP, ASN)], hold_time=HOLD_TIME)
        node = start_overlayd(n1, overlayd_config(lab))
        # The node's "pod" address: cni0 is where overlayd expects our own subnet.
        n1.ip("link", "add", "cni0", "type", "bridge")
        n1.ip("addr", "add", f"{N1_POD}/24", "dev", "cni0")
        n1.ip("link", "set", "cni0", "up")
        n1.sysctl("net.ipv4.ip_forward", 1)  # as on a node with pods; the pings here need not
        router_mac = node.ctl("status")["routing"]["router_mac"]
        vrf = vrf_supported(k)
        kernel_irb_host(k, router_mac, vrf)
        setup = Type5Lab(lab, n1, k, node, gobgp, router_mac, vrf, pcap, capture)
        yield setup
        code = node.stop()
        setup.capture.stop()
        gobgp.stop()
        assert code == 0, node.log()


def route_row(node: Overlayd, prefix: str) -> dict[str, Any] | None:
    return next((r for r in node.ctl("routes") if r["prefix"] == prefix), None)


def overlayds_type5(t5: Type5Lab) -> dict[str, Any] | None:
    return next((r for r in t5.gobgp.routes()
                 if r["type"] == 5 and r["next_hop"] == N1_VTEP), None)


def announce_k(t5: Type5Lab) -> None:
    """GoBGP, standing in for k's FRR, announces k's subnet (adding twice replaces)."""
    t5.gobgp.add_prefix(K_SUBNET, vni=L3_VNI, rd=K_RD, rt=RT, router_mac=K_RMAC,
                        next_hop=K_VTEP)


def ping_ok(host: Host, addr: str, *args: str, count: int = 3) -> tuple[bool, str]:
    out = host.run("ping", "-4", "-n", "-c", str(count), "-i", "0.2", "-W", "2",
                   "-w", str(count + 5), *args, addr, check=False, timeout=count + 15)
    return out.returncode == 0 and f"{count} received" in out.stdout, out.stdout + out.stderr


# -- tests -----------------------------------------------------------------------------------


def test_gobgp_holds_overlayds_type5_route(t5: Type5Lab):
    route = wait(lambda: overlayds_type5(t5), "overlayd's type-5 route in GoBGP",
                 t5.node, t5.gobgp)
    print(f"\nGoBGP's view of overlayd's type-5 route:\n"
          f"{route['prefix']}: {json.dumps(route['raw'])}")
    assert route["ip_prefix"] == N1_SUBNET, route
    assert route["labels"] == [L3_VNI], route  # the L3 VNI in all 24 bits of the label
    assert route["next_hop"] == N1_VTEP, route
    assert route["router_macs"] == [t5.router_mac], route
    assert route["route_targets"] == [RT], route
    assert route["tunnel_types"] == [VXLAN_TUNNEL_TYPE], route
    assert route["gateway"] == "0.0.0.0" and route["etag"] == 0, route
    assert route["raw"]["nlri"]["value"]["esi"] == "single-homed", route
    assert route["rd"] == f"{N1_VTEP}:{L3_VNI}", route
    assert route["best"], route
    assert t5.gobgp.neighbor_state(N1_VTEP) == "established"


def test_gobgp_type5_route_enters_the_subnet_table_and_leaves_it(t5: Type5Lab):
    node, gobgp = t5.node, t5.gobgp
    announce_k(t5)
    row = wait(lambda: route_row(node, K_SUBNET), f"{K_SUBNET} from GoBGP in overlayctl routes",
               node, gobgp)
    assert (row["vtep"], row["router_mac"], row["vni"]) == (K_VTEP, K_RMAC, L3_VNI), row
    assert (row["peer"], row["source"]) == (G_ADDR, "bgp"), row
    print(f"\n$ overlayctl routes   (n1, GoBGP's route in)\n{node.ctl_text('routes')}")

    gobgp.delete_prefix(K_SUBNET, vni=L3_VNI, rd=K_RD)
    wait(lambda: route_row(node, K_SUBNET) is None, f"{K_SUBNET} to leave overlayctl routes",
         node, gobgp)
    # Our own subnet stays, and so does our route in GoBGP.
    assert route_row(node, N1_SUBNET)["vtep"] == "local"
    assert overlayds_type5(t5) is not None


def test_gobgp_type5_route_without_router_mac_is_reported_not_used(t5: Type5Lab):
    """RFC 9136 4.4.1: the interface-less model needs the router's MAC; without it there is
    no inner destination to send to, so overlayd leaves the route out and raises an alarm."""
    node, gobgp = t5.node, t5.gobgp
    prefix, vtep = "10.244.8.0/24", "10.0.0.8"
    rd = f"{vtep}:{L3_VNI}"
    gobgp.add_prefix(prefix, vni=L3_VNI, rd=rd, rt=RT, router_mac=None, next_hop=vtep)
    try:
        alarm = wait(lambda: next((a for a in node.ctl("status")["routing"]["alarms"]
                                   if prefix in a), None),
                     f"an alarm for {prefix} without a router MAC", node, gobgp)
        assert "router MAC" in alarm, alarm
        assert route_row(node, prefix) is None
        assert any(r["prefix"] == prefix and r["type"] == "prefix" for r in node.ctl("rib"))
    finally:
        gobgp.delete_prefix(prefix, vni=L3_VNI, rd=rd)


def test_one_prefix_in_two_gobgp_routes_survives_the_withdrawal_of_one(t5: Type5Lab):
    """GoBGP announces one prefix for two VTEPs (two RDs, one router ID): overlayd uses one,
    reports both, and withdrawing one leaves the other in the table (the RIB still has it)."""
    node, gobgp = t5.node, t5.gobgp
    prefix = "10.244.7.0/24"
    vteps = {"10.0.0.5": "02:00:00:00:07:05", "10.0.0.6": "02:00:00:00:07:06"}
    for vtep, mac in vteps.items():
        gobgp.add_prefix(prefix, vni=L3_VNI, rd=f"{vtep}:{L3_VNI}", rt=RT, router_mac=mac,
                         next_hop=vtep)
    try:
        wait(lambda: any(prefix in a and "10.0.0.5, 10.0.0.6" in a
                         for a in node.ctl("status")["routing"]["alarms"]),
             f"both routes of {prefix} seen and reported", node, gobgp)
        row = route_row(node, prefix)
        assert (row["vtep"], row["router_mac"]) == ("10.0.0.5", vteps["10.0.0.5"]), row
        gobgp.delete_prefix(prefix, vni=L3_VNI, rd=f"10.0.0.5:{L3_VNI}")
        row = wait(lambda: (r := route_row(node, prefix)) and r["vtep"] == "10.0.0.6" and r,
                   f"{prefix} to move to 10.0.0.6", node, gobgp)
        assert row["router_mac"] == vteps["10.0.0.6"], row
    finally:
        for vtep in vteps:
            gobgp.delete_prefix(prefix, vni=L3_VNI, rd=f"{vtep}:{L3_VNI}")
    wait(lambda: route_row(node, prefix) is None, f"{prefix} to leave the table", node, gobgp)


def test_routed_both_ways_with_the_kernels_vxlan_symmetric_irb(t5: Type5Lab):
    node, gobgp = t5.node, t5.gobgp
    announce_k(t5)
    wait(lambda: route_row(node, K_SUBNET), f"{K_SUBNET} in overlayd's subnet table", node, gobgp)
    before = node.counters()
    ok, out = ping_ok(t5.n1, K_POD, "-I", N1_POD)
    assert ok, (f"n1 {N1_POD} -> k {K_POD} over the type-5 routes:\n{out}\n"
                f"{node.log()[-3000:]}")
    # And from k's tenant side: the request now starts in the kernel.
    ok, out = ping_ok(t5.k, N1_POD, "-I", "vrf1" if t5.vrf else K_POD)
    assert ok, f"k {K_POD} -> n1 {N1_POD}:\n{out}"
    after = node.counters()
    # Both pings went through the kernel's VXLAN device on k: 3 + 3 datagrams in, 3 + 3 out.
    [vx1] = t5.k.json_ip("-s", "link", "show", "dev", "vx1")
    stats = vx1["stats64"]
    assert stats["rx"]["packets"] >= 6 and stats["tx"]["packets"] >= 6, stats
    delta = {name: after.get(name, 0) - before.get(name, 0) for name in after}
    assert delta["tx_routed_packets"] >= 6, delta
    assert delta["rx_routed_packets"] >= 6, delta
    # (The kernel's own link-local multicast on ovl0, MLD and router solicitations, may be
    # counted as tx_route_drop_multicast meanwhile: not a loss.)
    assert not {n: v for n, v in delta.items() if v and n != "tx_route_drop_multicast"
                and (n.startswith("rx_route_drop_") or n.startswith("tx_route_drop_"))}, delta
    tenant = "VRF vrf1" if t5.vrf else f"table {K_TABLE} by ip rules (no CONFIG_NET_VRF)"
    print(f"\n[type-5 kernel IRB, tenant {tenant}] counters: tx_routed_packets "
          f"+{delta['tx_routed_packets']}, rx_routed_packets +{delta['rx_routed_packets']}")
    print(f"$ ip route show table {K_TABLE}   (k)\n"
          f"{t5.k.ip('route', 'show', 'table', str(K_TABLE)).stdout}")


def test_capture_decodes_the_type5_updates_cleanly(t5: Type5Lab):
    """tshark finds no malformed packet or error in the session, and decodes overlayd's type-5
    route field for field like GoBGP's: prefix, gateway 0.0.0.0, label, VXLAN, router MAC."""
    announce_k(t5)
    wait(lambda: route_row(t5.node, K_SUBNET) and overlayds_type5(t5),
         "type-5 routes both ways before the capture ends", t5.node, t5.gobgp)
    t5.capture.stop()
    host, pcap = t5.gobgp.host, str(t5.pcap)
    bad = host.run("tshark", "-n", "-r", pcap, "-Y",
                   "_ws.malformed || _ws.expert.severity >= error", timeout=60).stdout
    assert bad.strip() == "", f"tshark flags packets of the BGP capture:\n{bad}"
    # Wireshark 4.0 shows a type-5 label as an MPLS label stack entry; its raw 24 bits
    # (mpls_label_value) are the VNI as both speakers encode it.
    fields = ["ip.src", "bgp.evpn.nlri.ip.addr", "bgp.evpn.nlri.prefix_len",
              "bgp.evpn.nlri.ipv4.gtw_addr", "bgp.update.path_attribute.mpls_label_value",
              "bgp.ext_com.tunnel_type", "bgp.ext_com_evpn.esi.router_mac"]
    out = host.run("tshark", "-n", "-r", pcap, "-Y", "bgp.evpn.nlri.rt == 5", "-T", "fields",
                   "-E", "separator=;", *[arg for f in fields for arg in ("-e", f)],
                   timeout=60).stdout
    print(f"\n[type-5 capture] {';'.join(fields)}\n{out}")
    announced = set()
    for line in out.splitlines():
        src, addr, length, gateway, label, tunnel, rmac = line.split(";")
        if rmac:  # an MP_REACH (the withdrawals' MP_UNREACH carry no attributes)
            announced.add((src, f"{addr}/{length}", gateway, label, tunnel, rmac))
    vni, vxlan = str(L3_VNI), str(VXLAN_TUNNEL_TYPE)
    assert (N1_VTEP, N1_SUBNET, "0.0.0.0", vni, vxlan, t5.router_mac) in announced, announced
    assert (G_ADDR, K_SUBNET, "0.0.0.0", vni, vxlan, K_RMAC) in announced, announced
