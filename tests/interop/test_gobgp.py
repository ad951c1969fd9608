"""overlayd speaks BGP EVPN with GoBGP (Debian's gobgpd), directly and via a GoBGP route reflector.

Two labs, each built once for the module:

`peering`: overlayd and gobgpd in one AS (iBGP), plus a host without overlayd
or BGP that runs the kernel's VXLAN device:

    n1: overlayd, VTEP 10.0.0.1, TAP blue0 192.168.100.1/24 + fd10::1/64, neighbor 10.0.0.9
    g:  gobgpd 10.0.0.9, neighbor 10.0.0.1 (l2vpn-evpn)
    k:  vx100 (kernel VXLAN, VNI 100, nolearning) in br100 192.168.100.4/24 with
        MAC K_MAC; its all-zeros FDB entry sends everything to n1's VTEP

GoBGP learns overlayd's type-3 and type-2 routes (MAC only, MAC + IPv4, MAC +
IPv6); routes an operator adds in GoBGP for k (type-2 for br100's MAC with its
IPv4 and IPv6 addresses, type-3 with ingress replication to 10.0.0.4) steer
overlayd's FDB, ARP suppression and flood list, and so the ping to k; their
withdrawal takes them out again. A type-3 route for an IPv6 VTEP, which this
IPv4 node cannot reach, is counted as rejected and not used.

`reflector`: two overlayd nodes that know only a GoBGP route reflector:

    a: overlayd 10.0.0.1, 192.168.100.1/24     b: overlayd 10.0.0.2, 192.168.100.2/24
    rr: gobgpd 10.0.0.9, both nodes route-reflector clients; tcpdump of port 179 on eth0

Both ends of each session connect actively, so a connection collision (RFC
4271 6.8) may happen; its Cease is the only NOTIFICATION the capture may hold.
The capture is checked last: tshark decodes every BGP message of the run
without a malformed packet or an error.
"""

from __future__ import annotations

import json
import time
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
VNI = 100
RT = "65000:100"
VXLAN_TUNNEL_TYPE = 8  # RFC 9012 / IANA BGP tunnel encapsulation types
PMSI_INGRESS_REPLICATION = 6
VXLAN_PORT = 4789
HOLD_TIME = 9
CONVERGE_S = 20.0  # generous: a loaded 2-core machine runs three daemons per lab
MTU = 1450
ZERO_MAC = "00:00:00:00:00:00"

N1_VTEP, G_ADDR, K_VTEP = "10.0.0.1", "10.0.0.9", "10.0.0.4"
N1_IP, K_IP = "192.168.100.1", "192.168.100.4"
N1_IP6, K_IP6 = "fd10::1", "fd10::4"  # overlay IPv6 (the underlay here is IPv4)
K_MAC = "02:00:00:00:01:04"
K_RD = f"{K_VTEP}:{VNI}"


def overlayd_config(vtep: str, ip: str, peers: list[str]) -> dict[str, Any]:
    return {
        "node": {"vtep": vtep, "vxlan_port": VXLAN_PORT},
        "bgp": {
            "asn": ASN, "hold_time": HOLD_TIME, "connect_retry": 1,
            "neighbors": [{"address": p, "asn": ASN} for p in peers],
        },
        "networks": [{"name": "blue", "vni": VNI, "device": "blue0", "address": f"{ip}/24",
                      "mtu": MTU, "route_target": RT}],
    }


def wait(predicate, what: str, *logs: Any, timeout: float = CONVERGE_S) -> Any:
    return wait_showing_logs(predicate, what, *logs, timeout=timeout)


def ping_ok(host: Host, addr: str, count: int = 3) -> tuple[bool, str]:
    out = host.run("ping", "-4", "-n", "-c", str(count), "-i", "0.2", "-W", "2",
                   "-w", str(count + 5), addr, check=False, timeout=count + 15)
    return out.returncode == 0 and f"{count} received" in out.stdout, out.stdout


# -- lab 1: overlayd <-> gobgpd, and a kernel VXLAN host advertised through GoBGP ----------


@dataclass
class Peering:
    lab: Lab
    n1: Host
    k: Host
    node: Overlayd
    gobgp: GoBgp


@pytest.fixture(scope="module")
def peering() -> Iterator[Peering]:
    require_netns()
    require_programs("gobgpd", "gobgp", "ethtool", "bridge", "ping")
    with Lab() as lab:
        n1 = lab.add_host("n1", v4=f"{N1_VTEP}/24")
        g = lab.add_host("g", v4=f"{G_ADDR}/24")
        k = lab.add_host("k", v4=f"{K_VTEP}/24")
        gobgp = start_gobgpd(g, ASN, [Neighbor(N1_VTEP, ASN)], hold_time=HOLD_TIME)
        node = start_overlayd(n1, overlayd_config(N1_VTEP, N1_IP, [G_ADDR]))
        n1.ip("-6", "addr", "add", f"{N1_IP6}/64", "dev", "blue0", "nodad")
        # The README's kernel recipe; the bridge's MAC is fixed, so GoBGP can advertise it.
        k.ip("link", "add", "vx100", "mtu", str(MTU), "type", "vxlan", "id", str(VNI),
             "local", K_VTEP, "dstport", str(VXLAN_PORT), "nolearning")
        k.ip("link", "add", "br100", "mtu", str(MTU), "address", K_MAC, "type", "bridge")
        k.ip("link", "set", "vx100", "master", "br100")
        k.run("bridge", "fdb", "append", ZERO_MAC, "dev", "vx100", "dst", N1_VTEP)
        k.ip("addr", "add", f"{K_IP}/24", "dev", "br100")
        k.ip("link", "set", "vx100", "up")
        k.ip("link", "set", "br100", "up")
        # Lab only: finish inner checksums before the veth (see test_kernel_vxlan.py).
        k.run("ethtool", "-K", "eth0", "tx", "off")
        yield Peering(lab, n1, k, node, gobgp)
        code = node.stop()
        assert code == 0, node.log()
        gobgp.stop()


def gobgp_routes_from(peering: Peering, vtep: str) -> list[dict[str, Any]]:
    return [r for r in peering.gobgp.routes() if r["next_hop"] == vtep]


def test_session_reaches_established_on_both_sides(peering: Peering):
    wait(lambda: peering.node.established(G_ADDR) and
         peering.gobgp.neighbor_state(N1_VTEP) == "established",
         "overlayd <-> gobgpd Established", peering.node, peering.gobgp)
    [row] = peering.node.ctl("peers")
    assert (row["neighbor"], row["asn"], row["last_error"]) == (G_ADDR, ASN, ""), row
    assert row["attribute_errors"] == row["treated_as_withdraw"] == 0, row
    [nb] = peering.gobgp.neighbors()
    assert nb["state"]["peer_asn"] == ASN and nb["state"]["router_id"] == N1_VTEP, nb["state"]
    families = [(f["config"]["family"]["afi"], f["config"]["family"]["safi"])
                for f in nb["afi_safis"] if f["state"].get("enabled")]
    assert families == [(25, 70)], nb["afi_safis"]  # L2VPN / EVPN negotiated


def test_gobgp_holds_overlayds_type3_route(peering: Peering):
    def imet() -> dict[str, Any] | None:
        return next((r for r in gobgp_routes_from(peering, N1_VTEP) if r["type"] == 3), None)

    route = wait(imet, "overlayd's type-3 route in GoBGP", peering.node, peering.gobgp)
    print(f"\nGoBGP's view of overlayd's type-3 route:\n"
          f"{route['prefix']}: {json.dumps(route['raw'])}")
    assert route["rd"] == f"{N1_VTEP}:{VNI}" and route["etag"] == 0, route
    assert route["ip"] == N1_VTEP, route  # originating router's IP
    assert route["route_targets"] == [RT], route
    assert route["tunnel_types"] == [VXLAN_TUNNEL_TYPE], route
    pmsi = route["pmsi"]
    assert pmsi is not None, route
    assert (pmsi["tunnel-type"], pmsi["label"], pmsi["tunnel-id"]) == (
        PMSI_INGRESS_REPLICATION, VNI, N1_VTEP), pmsi
    assert route["best"], route


def test_gobgp_holds_overlayds_type2_routes_for_the_tap(peering: Peering):
    mac = peering.node.tap_mac()
    # Make the TAP's kernel speak: ARP requests and neighbour solicitations for
    # addresses nobody has carry the TAP's MAC and IP, which overlayd learns
    # (MAC) and snoops (IP bindings).
    peering.n1.run("ping", "-4", "-c", "1", "-W", "1", "192.168.100.99", check=False)
    peering.n1.run("ping", "-6", "-c", "1", "-W", "1", "fd10::99", check=False)

    def macadv() -> dict[str | None, dict[str, Any]] | None:
        routes = {r["ip"]: r for r in gobgp_routes_from(peering, N1_VTEP)
                  if r["type"] == 2 and r["mac"] == mac}
        return routes if {None, N1_IP, N1_IP6} <= routes.keys() else None

    routes = wait(macadv, f"type-2 routes for {mac} (MAC only, {N1_IP}, {N1_IP6}) in GoBGP",
                  peering.node, peering.gobgp)
    print(f"\nGoBGP's view of overlayd's type-2 route:\n"
          f"{routes[N1_IP]['prefix']}: {json.dumps(routes[N1_IP]['raw'])}")
    for route in routes.values():
        assert route["rd"] == f"{N1_VTEP}:{VNI}" and route["etag"] == 0, route
        assert route["labels"] == [VNI], route  # the VNI in the label field (RFC 8365 5.1.3)
        assert route["route_targets"] == [RT], route
        assert route["tunnel_types"] == [VXLAN_TUNNEL_TYPE], route
        assert route["next_hop"] == N1_VTEP and route["pmsi"] is None, route
        assert route["raw"]["nlri"]["value"]["esi"] == "single-homed", route
    # overlayd's own view agrees: local routes, sent to GoBGP.
    [row] = peering.node.ctl("peers")
    assert row["routes_sent"] >= 4, row


def test_gobgp_routes_steer_overlayd_and_carry_traffic(peering: Peering):
    node, gobgp = peering.node, peering.gobgp
    gobgp.add_macadv(K_MAC, K_IP, vni=VNI, rd=K_RD, rt=RT, next_hop=K_VTEP)
    gobgp.add_macadv(K_MAC, K_IP6, vni=VNI, rd=K_RD, rt=RT, next_hop=K_VTEP)
    gobgp.add_multicast(K_VTEP, vni=VNI, rd=K_RD, rt=RT, next_hop=K_VTEP)

    row = wait(lambda: (r := node.fdb_row(K_MAC)) and r["learned"] == "bgp" and r,
               f"{K_MAC} from GoBGP in overlayd's FDB", node, gobgp)
    assert (row["where"], row["vni"]) == (K_VTEP, VNI), row
    wait(lambda: K_VTEP in node.flood_list(), f"{K_VTEP} on overlayd's flood list", node, gobgp)
    want = {("macip", K_MAC, K_IP), ("macip", K_MAC, K_IP6), ("imet", None, K_VTEP)}

    def rib_from_gobgp() -> list[dict[str, Any]] | None:
        rows = [r for r in node.ctl("rib") if r["peer"] == G_ADDR]
        return rows if want <= {(r["type"], r["mac"], r["ip"]) for r in rows} else None

    rib = wait(rib_from_gobgp, "GoBGP's type-2 (IPv4, IPv6) and type-3 routes in overlayd's RIB",
               node, gobgp)
    for r in rib:
        assert (r["vni"], r["next_hop"], r["rd"], r["best"]) == (VNI, K_VTEP, K_RD, True), r

    before = node.counters()
    ok, out = ping_ok(peering.n1, K_IP)
    assert ok, (f"overlayd -> kernel host over the GoBGP-advertised routes:\n{out}\n"
                f"{node.log()[-3000:]}")
    ok, out = ping_ok(peering.k, N1_IP)
    assert ok, f"kernel host -> overlayd:\n{out}"
    after = node.counters()
    assert after["tx_unicast_frames"] - before["tx_unicast_frames"] >= 6, (before, after)
    assert after["rx_frames"] - before["rx_frames"] >= 6, (before, after)
    assert after.get("rx_drop_unknown_vtep", 0) == before.get("rx_drop_unknown_vtep", 0)
    # n1 asked for K_IP once: answered from GoBGP's MAC/IP binding, not flooded.
    assert after["tx_arp_suppressed"] > before["tx_arp_suppressed"], (before, after)
    # Remote MACs come from BGP only: still the GoBGP entry, not a data-plane one.
    assert node.fdb_row(K_MAC)["learned"] == "bgp"


def test_withdrawal_in_gobgp_leaves_overlayds_tables(peering: Peering):
    node, gobgp = peering.node, peering.gobgp
    # (Again, so that this test also runs alone; adding a route twice replaces it.)
    gobgp.add_macadv(K_MAC, K_IP, vni=VNI, rd=K_RD, rt=RT, next_hop=K_VTEP)
    gobgp.add_macadv(K_MAC, K_IP6, vni=VNI, rd=K_RD, rt=RT, next_hop=K_VTEP)
    gobgp.add_multicast(K_VTEP, vni=VNI, rd=K_RD, rt=RT, next_hop=K_VTEP)
    wait(lambda: node.fdb_row(K_MAC) and K_VTEP in node.flood_list(),
         "GoBGP's routes in overlayd", node, gobgp)

    gobgp.delete_macadv(K_MAC, K_IP, vni=VNI, rd=K_RD)
    gobgp.delete_macadv(K_MAC, K_IP6, vni=VNI, rd=K_RD)
    wait(lambda: node.fdb_row(K_MAC) is None, f"{K_MAC} to leave overlayd's FDB", node, gobgp)
    gobgp.delete_multicast(K_VTEP, rd=K_RD)
    wait(lambda: K_VTEP not in node.flood_list(), f"{K_VTEP} to leave the flood list", node, gobgp)
    assert not [r for r in node.ctl("rib") if r["peer"] == G_ADDR]
    # The session survived the withdrawals, and overlayd's own routes are still in GoBGP.
    assert gobgp.neighbor_state(N1_VTEP) == "established"
    assert any(r["type"] == 3 for r in gobgp_routes_from(peering, N1_VTEP))


def test_a_vtep_of_the_other_address_family_is_not_imported(peering: Peering):
    """A type-3 route for an IPv6 VTEP cannot be served by IPv4-only overlayd: counted, not used."""
    node, gobgp = peering.node, peering.gobgp
    v6_vtep, rd = "fd00::11", "10.0.0.11:100"
    [before] = node.ctl("peers")
    gobgp.add_multicast(v6_vtep, vni=VNI, rd=rd, rt=RT, next_hop=v6_vtep)
    try:
        row = wait(lambda: (r := node.ctl("peers")[0])["routes_rejected"]
                   > before["routes_rejected"] and r,
                   "overlayd to reject the IPv6 VTEP's type-3 route", node, gobgp)
        assert row["state"] == "Established", row
        assert v6_vtep not in node.flood_list()
        assert not [r for r in node.ctl("rib") if r["ip"] == v6_vtep]
    finally:
        gobgp.delete_multicast(v6_vtep, rd=rd)


# -- lab 2: two overlayd nodes behind a GoBGP route reflector ---------------------------------


A_VTEP, B_VTEP, RR_ADDR = "10.0.0.1", "10.0.0.2", "10.0.0.9"
A_IP, B_IP = "192.168.100.1", "192.168.100.2"


@dataclass
class Reflector:
    lab: Lab
    rr: GoBgp
    a: Overlayd
    b: Overlayd
    pcap: Path
    capture: Capture



@pytest.fixture(scope="module")
def reflector() -> Iterator[Reflector]:
    require_netns()
    require_programs("gobgpd", "gobgp", "tcpdump", "tshark", "ping")
    with Lab() as lab:
        rr_host = lab.add_host("rr", v4=f"{RR_ADDR}/24")
        a_host = lab.add_host("a", v4=f"{A_VTEP}/24")
        b_host = lab.add_host("b", v4=f"{B_VTEP}/24")
        pcap = lab.tmpdir / "bgp.pcap"
        capture = rr_host.capture(pcap, "tcp port 179")
        rr = start_gobgpd(rr_host, ASN, [Neighbor(A_VTEP, ASN, rr_client=True),
                                         Neighbor(B_VTEP, ASN, rr_client=True)],
                          hold_time=HOLD_TIME)
        a = start_overlayd(a_host, overlayd_config(A_VTEP, A_IP, [RR_ADDR]), wait=False)
        b = start_overlayd(b_host, overlayd_config(B_VTEP, B_IP, [RR_ADDR]), wait=False)
        a.wait_ready()
        b.wait_ready()
        setup = Reflector(lab, rr, a, b, pcap, capture)
        yield setup
        codes = {"a": a.stop(), "b": b.stop()}
        setup.capture.stop()
        rr.stop()
        assert set(codes.values()) == {0}, codes


def test_both_nodes_established_with_the_reflector(reflector: Reflector):
    rr, a, b = reflector.rr, reflector.a, reflector.b
    wait(lambda: a.established(RR_ADDR) and b.established(RR_ADDR)
         and rr.neighbor_state(A_VTEP) == rr.neighbor_state(B_VTEP) == "established",
         "both overlayd nodes Established with the reflector", a, b, rr)
    for nb in rr.neighbors():
        assert nb["route_reflector"]["route_reflector_client"], nb["route_reflector"]


def test_nodes_behind_the_reflector_exchange_traffic(reflector: Reflector):
    rr, a, b = reflector.rr, reflector.a, reflector.b
    # Type-3 routes, reflected: each node floods to the other.
    wait(lambda: a.flood_list() == [B_VTEP] and b.flood_list() == [A_VTEP],
         "flood lists from reflected type-3 routes", a, b, rr)
    start = time.monotonic()
    attempts: list[str] = []

    def a_pings_b() -> bool:
        ok, out = ping_ok(a.host, B_IP)
        attempts.append(out)
        return ok

    wait(a_pings_b, "a to ping b across the overlay", a, b, rr)
    took = time.monotonic() - start
    ok, out = ping_ok(b.host, A_IP)
    assert ok, f"b -> a:\n{out}"
    mac_a, mac_b = a.tap_mac(), b.tap_mac()
    row = wait(lambda: (r := a.fdb_row(mac_b)) and r["learned"] == "bgp" and r,
               f"b's MAC {mac_b} in a's FDB via the reflector", a, b, rr)
    assert row["where"] == B_VTEP, row
    row = wait(lambda: (r := b.fdb_row(mac_a)) and r["learned"] == "bgp" and r,
               f"a's MAC {mac_a} in b's FDB via the reflector", a, b, rr)
    assert row["where"] == A_VTEP, row
    # a's RIB: b's routes, received from the reflector with b's VTEP as next hop.
    wait(lambda: {("macip", mac_b, B_IP), ("imet", None, B_VTEP)}
         <= {(r["type"], r["mac"], r["ip"]) for r in a.ctl("rib") if r["peer"] == RR_ADDR},
         "b's type-2 (MAC/IP) and type-3 in a's RIB", a, b, rr)
    for r in a.ctl("rib"):
        if r["peer"] == RR_ADDR:
            assert r["next_hop"] == B_VTEP and r["vni"] == VNI and r["best"], r
    # GoBGP holds both nodes' routes.
    hops = {r["next_hop"] for r in rr.routes()}
    assert {A_VTEP, B_VTEP} <= hops, hops
    print(f"\n[gobgp route reflector] ping a -> b answered after {took:.1f} s, "
          f"{len(attempts)} attempt(s)"
          + (f"; the first:\n{attempts[0]}" if len(attempts) > 1 else ""))
    print(f"\n$ overlayctl peers   (node a)\n{a.ctl_text('peers')}")
    print(f"$ overlayctl rib     (node a)\n{a.ctl_text('rib')}")
    print(f"$ gobgp global rib -a evpn   (reflector)\n"
          f"{rr.cli('global', 'rib', '-a', 'evpn').stdout}")


def test_capture_of_the_sessions_decodes_cleanly(reflector: Reflector):
    """tshark finds no malformed packet or error in the BGP of both sessions, and sees
    every speaker send OPEN, UPDATE and KEEPALIVE (the first one confirms the OPEN)."""
    a, b, rr = reflector.a, reflector.b, reflector.rr
    wait(lambda: a.established(RR_ADDR) and b.established(RR_ADDR),
         "sessions up before the capture ends", a, b, rr)
    reflector.capture.stop()
    host, pcap = rr.host, str(reflector.pcap)
    bad = host.run("tshark", "-n", "-r", pcap, "-Y",
                   "_ws.malformed || _ws.expert.severity >= error", timeout=60).stdout
    assert bad.strip() == "", f"tshark flags packets of the BGP capture:\n{bad}"

    fields = ["ip.src", "ip.dst", "bgp.type", "bgp.notify.major_error",
              "bgp.notify.minor_error_cease", "bgp.update.path_attribute.originator_id"]
    out = host.run("tshark", "-n", "-r", pcap, "-Y", "bgp", "-T", "fields", "-E", "separator=;",
                   *[arg for f in fields for arg in ("-e", f)], timeout=60).stdout
    sent: dict[str, list[int]] = {}
    notifications, originators = [], set()
    for line in out.splitlines():
        src, dst, kinds, major, cease, originator = line.split(";")
        sent.setdefault(src, []).extend(int(t) for t in kinds.split(","))
        if major:
            notifications.append((src, major, cease))
        if originator:
            originators |= {(dst, o) for o in originator.split(",")}
    for src in (A_VTEP, B_VTEP, RR_ADDR):  # OPEN 1, UPDATE 2, KEEPALIVE 4
        assert {1, 2, 4} <= set(sent.get(src, [])), (src, sent)
    # The reflector passed each node's routes to the other with ORIGINATOR_ID (RFC 4456),
    # so the run really went through reflection.
    assert {(A_VTEP, B_VTEP), (B_VTEP, A_VTEP)} <= originators, originators
    # The only NOTIFICATION allowed is Cease (6) / connection collision resolution (7).
    assert all((major, cease) == ("6", "7") for _, major, cease in notifications), notifications
    counts = {name: sum(kinds.count(code) for kinds in sent.values())
              for name, code in (("OPEN", 1), ("UPDATE", 2), ("NOTIFICATION", 3), ("KEEPALIVE", 4))}
    print(f"\n[gobgp route reflector] capture: {counts}, notifications {notifications}")
