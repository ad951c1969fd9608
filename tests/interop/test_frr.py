"""overlayd speaks BGP EVPN with FRR 8.4 (Debian's frr) as a VTEP, and the FRR harness works.

Three labs, each built once for the module (FRR runs through tools/frr.py):

`vtep`: overlayd and FRR in one AS (iBGP), FRR a VTEP with the kernel's VXLAN:

    n1: overlayd, VTEP 10.0.0.1, TAP blue0 192.168.100.1/24, neighbor 10.0.0.2
    f:  FRR 10.0.0.2 (zebra + bgpd, `advertise-all-vni`), neighbor 10.0.0.1 (l2vpn evpn);
        vx100 (kernel VXLAN, VNI 100, local 10.0.0.2, nolearning) and h0 in bridge br100,
        br100 192.168.100.2/24 (the VNI's SVI, where zebra learns MAC/IP bindings)
    h:  a host on br100 (its eth0 is h0's peer), 192.168.100.5/24, MAC H_MAC

FRR holds overlayd's type-3 and type-2 routes (RD, RT, VNI, next hop, PMSI) and
zebra programs them into the kernel (remote MAC and head-end replication entries
on vx100, the MAC/IP binding as a neighbour on br100); overlayd holds FRR's
type-3 and the type-2 routes (MAC, MAC + IP) of h that zebra saw on the bridge;
pings cross both ways, n1's ARP for h answered by overlayd from FRR's binding;
SIGTERM of overlayd takes its routes out of FRR and of f's kernel at once
(Cease, no graceful-restart retention).

`unicast`: the harness for IPv4 unicast, FRR against gobgpd (tools/gobgp.py):

    f: FRR 10.0.0.2, neighbor 10.0.0.9 (ipv4 unicast)    g: gobgpd 10.0.0.9, neighbor 10.0.0.2

A route injected in gobgp reaches FRR's RIB and, through zebra, the kernel of
f's namespace (proto bgp); one FRR announces reaches gobgp; withdrawn, both go.
staticd runs too: its static route reaches the kernel. When FRR stops, zebra
takes its routes out of the kernel.

`bad`: a config FRR rejects fails `start_frr` with vtysh's message and the logs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support import require_netns, require_programs, unmet
from tools import frr as frrlib
from tools.frr import Frr, FrrError, Neighbor, bgp_config, start_frr
from tools.gobgp import GoBgp, start_gobgpd
from tools.gobgp import Neighbor as GoBgpNeighbor
from tools.lab import Host, Lab
from tools.nodes import Overlayd, start_overlayd, wait_showing_logs

pytestmark = [pytest.mark.root, pytest.mark.peer]

ASN = 65000
VNI = 100
RT = "65000:100"  # overlayd's default <asn>:<vni>, FRR's auto RT
VXLAN_PORT = 4789
HOLD_TIME = 9
CONVERGE_S = 20.0  # generous: a loaded 2-core machine
MTU = 1450
ZERO_MAC = "00:00:00:00:00:00"

N1_VTEP, F_VTEP = "10.0.0.1", "10.0.0.2"
N1_IP, F_SVI_IP, H_IP = "192.168.100.1", "192.168.100.2", "192.168.100.5"
H_MAC = "02:00:00:00:01:05"
N1_RD = f"{N1_VTEP}:{VNI}"


def require_frr() -> None:
    require_netns()
    reason = frrlib.missing()
    if reason:
        unmet(reason)


def wait(predicate, what: str, *daemons: Any, timeout: float = CONVERGE_S) -> Any:
    return wait_showing_logs(predicate, what, *daemons, timeout=timeout)


def ping_ok(host: Host, addr: str, count: int = 3) -> tuple[bool, str]:
    out = host.run("ping", "-4", "-n", "-c", str(count), "-i", "0.2", "-W", "2",
                   "-w", str(count + 5), addr, check=False, timeout=count + 15)
    return out.returncode == 0 and f"{count} received" in out.stdout, out.stdout


# -- lab 1: overlayd <-> FRR as a VTEP with the kernel's VXLAN ---------------------------------


@dataclass
class Vtep:
    lab: Lab
    n1: Host
    f: Host
    h: Host
    node: Overlayd
    frr: Frr


@pytest.fixture(scope="module")
def vtep() -> Iterator[Vtep]:
    require_frr()
    require_programs("bridge", "ping")
    with Lab() as lab:
        n1 = lab.add_host("n1", v4=f"{N1_VTEP}/24")
        f = lab.add_host("f", v4=f"{F_VTEP}/24")
        h = lab.add_host("h")
        h.ip("link", "del", "eth0")  # h hangs off f's bridge, not off the underlay
        # FRR's L2 VNI as the FRR documentation builds it: a VXLAN device with a local
        # address and no learning (zebra programs its FDB from BGP), in a bridge.
        f.ip("link", "add", "vx100", "mtu", str(MTU), "type", "vxlan", "id", str(VNI),
             "local", F_VTEP, "dstport", str(VXLAN_PORT), "nolearning")
        f.ip("link", "add", "br100", "mtu", str(MTU), "type", "bridge")
        f.ip("link", "set", "vx100", "master", "br100")
        f.ip("link", "add", "h0", "mtu", str(MTU), "type", "veth", "peer", "name", "eth0",
             "address", H_MAC, "mtu", str(MTU), "netns", h.netns)
        f.ip("link", "set", "h0", "master", "br100")
        f.ip("addr", "add", f"{F_SVI_IP}/24", "dev", "br100")
        for dev in ("vx100", "br100", "h0"):
            f.ip("link", "set", dev, "up")
        h.ip("addr", "add", f"{H_IP}/24", "dev", "eth0")
        h.ip("link", "set", "eth0", "up")
        frr = start_frr(f, bgp_config(ASN, F_VTEP, [Neighbor(N1_VTEP, ASN)], hold_time=HOLD_TIME,
                                      advertise_all_vni=True,
                                      debug=("bgp neighbor-events", "bgp updates", "bgp zebra",
                                             "zebra vxlan")))
        node = start_overlayd(n1, {
            "node": {"vtep": N1_VTEP, "vxlan_port": VXLAN_PORT},
            "bgp": {"asn": ASN, "hold_time": HOLD_TIME, "connect_retry": 1,
                    "neighbors": [{"address": F_VTEP, "asn": ASN}]},
            "networks": [{"name": "blue", "vni": VNI, "device": "blue0",
                          "address": f"{N1_IP}/24", "mtu": MTU, "route_target": RT}],
        })
        setup = Vtep(lab, n1, f, h, node, frr)
        yield setup
        if node.proc.poll() is None:
            assert node.stop() == 0, node.log()
        frr.stop()


def frr_routes_from(vtep: Vtep, next_hop: str) -> list[dict[str, Any]]:
    return [r for r in vtep.frr.evpn_routes() if r["next_hop"] == next_hop]


def kernel_fdb(host: Host, dev: str) -> list[dict[str, Any]]:
    return json.loads(host.run("bridge", "-j", "fdb", "show", "dev", dev).stdout or "[]")


def overlayd_holds_h(vtep: Vtep) -> list[dict[str, Any]]:
    """Make FRR announce h (MAC only and MAC + IP) and wait until overlayd holds both
    routes (and FRR's type-3); its RIB rows from FRR."""
    # f asks h for its MAC: br100 learns H_MAC on h0 (zebra: a local MAC) and the kernel
    # keeps H_IP -> H_MAC as a neighbour of the SVI (zebra: a local MAC/IP binding).
    vtep.f.run("ping", "-4", "-c", "1", "-W", "2", H_IP)
    want = {("imet", None, F_VTEP), ("macip", H_MAC, None), ("macip", H_MAC, H_IP)}

    def rib_from_frr() -> list[dict[str, Any]] | None:
        rows = [r for r in vtep.node.ctl("rib") if r["peer"] == F_VTEP]
        return rows if want <= {(r["type"], r["mac"], r["ip"]) for r in rows} else None

    return wait(rib_from_frr, "FRR's type-3 and h's type-2 (MAC, MAC + IP) in overlayd's RIB",
                vtep.node, vtep.frr)


def test_session_reaches_established_on_both_sides(vtep: Vtep):
    node, frr = vtep.node, vtep.frr
    wait(lambda: node.established(F_VTEP) and frr.neighbor_state(N1_VTEP) == "Established",
         "overlayd <-> FRR Established", node, frr)
    [row] = node.ctl("peers")
    assert (row["neighbor"], row["asn"], row["last_error"]) == (F_VTEP, ASN, ""), row
    assert row["attribute_errors"] == row["treated_as_withdraw"] == 0, row
    summary = frr.bgp_summary()
    assert list(summary) == ["l2VpnEvpn"], summary  # the only family negotiated
    peer = summary["l2VpnEvpn"]["peers"][N1_VTEP]
    assert (peer["remoteAs"], peer["state"]) == (ASN, "Established"), peer
    info = frr.vtysh_json(f"show bgp neighbors {N1_VTEP} json")[N1_VTEP]
    assert info["remoteRouterId"] == N1_VTEP, info
    # graceful restart is off unless configured: overlayd advertises no capability, so FRR
    # sees the remote side's GR disabled (and only helps a peer that asks for it)
    gr = info["gracefulRestartInfo"]
    assert gr["remoteGrMode"] == "Disable", gr


def test_frr_vtep_sees_its_vni(vtep: Vtep):
    """zebra found vx100 in br100 and told bgpd: FRR is a VTEP for VNI 100 at 10.0.0.2."""
    frr = vtep.frr
    vni = wait(lambda: frr.vtysh_json(f"show bgp l2vpn evpn vni {VNI} json").get("inKernel")
               == "True" and frr.vtysh_json(f"show bgp l2vpn evpn vni {VNI} json"),
               "FRR to take VNI 100 from zebra", frr)
    assert (vni["type"], vni["originatorIp"]) == ("L2", F_VTEP), vni
    assert vni["importRts"] == vni["exportRts"] == [RT], vni
    assert frr.evpn_vnis()[str(VNI)]["vxlanIf"] == "vx100"


def test_frr_holds_overlayds_type3_route(vtep: Vtep):
    frr, node = vtep.frr, vtep.node

    def imet() -> dict[str, Any] | None:
        return next((r for r in frr_routes_from(vtep, N1_VTEP) if r["type"] == 3), None)

    route = wait(imet, "overlayd's type-3 route in FRR", node, frr)
    print(f"\nFRR's view of overlayd's type-3 route:\n{route['rd']} {route['prefix']}: "
          f"{json.dumps(route['raw'])}")
    assert (route["rd"], route["etag"], route["ip"]) == (N1_RD, 0, N1_VTEP), route
    assert route["route_targets"] == [RT] and route["encapsulations"] == ["8"], route
    assert route["pmsi"] == {"tunnelType": "Ingress Replication", "label": VNI}, route
    assert (route["peer"], route["valid"], route["best"]) == (N1_VTEP, True, True), route
    # zebra put overlayd's VTEP on VNI 100's flood list: a head-end replication entry.
    wait(lambda: N1_VTEP in frr.evpn_vnis().get(str(VNI), {}).get("remoteVteps", []),
         "overlayd's VTEP among zebra's remote VTEPs for VNI 100", node, frr)
    wait(lambda: any(e["mac"] == ZERO_MAC and e.get("dst") == N1_VTEP
                     for e in kernel_fdb(vtep.f, "vx100")),
         "the all-zeros FDB entry to overlayd's VTEP on vx100", node, frr)


def test_frr_holds_overlayds_type2_routes_for_the_tap(vtep: Vtep):
    frr, node = vtep.frr, vtep.node
    mac = node.tap_mac()
    # The TAP's kernel speaks (an ARP request for an address nobody has): overlayd learns
    # the MAC and snoops the IP binding.
    vtep.n1.run("ping", "-4", "-c", "1", "-W", "1", "192.168.100.99", check=False)

    def macadv() -> dict[str | None, dict[str, Any]] | None:
        routes = {r["ip"]: r for r in frr_routes_from(vtep, N1_VTEP)
                  if r["type"] == 2 and r["mac"] == mac}
        return routes if {None, N1_IP} <= routes.keys() else None

    routes = wait(macadv, f"type-2 routes for {mac} (MAC only, MAC + {N1_IP}) in FRR", node, frr)
    print(f"\nFRR's view of overlayd's type-2 route:\n{routes[N1_IP]['rd']} "
          f"{routes[N1_IP]['prefix']}: {json.dumps(routes[N1_IP]['raw'])}")
    for route in routes.values():
        assert (route["rd"], route["etag"], route["vni"]) == (N1_RD, 0, VNI), route
        assert route["route_targets"] == [RT] and route["encapsulations"] == ["8"], route
        assert (route["next_hop"], route["pmsi"]) == (N1_VTEP, None), route
        assert (route["peer"], route["valid"], route["best"]) == (N1_VTEP, True, True), route
    # zebra took the MAC into VNI 100 as remote, behind overlayd's VTEP, and into vx100's FDB.
    entry = wait(lambda: frr.evpn_macs().get(str(VNI), {}).get("macs", {}).get(mac),
                 f"{mac} in zebra's MAC table", node, frr)
    assert (entry["type"], entry["remoteVtep"]) == ("remote", N1_VTEP), entry
    fdb = wait(lambda: [e for e in kernel_fdb(vtep.f, "vx100") if e["mac"] == mac and "dst" in e],
               f"{mac} -> {N1_VTEP} in vx100's FDB", node, frr)
    assert fdb[0]["dst"] == N1_VTEP and "extern_learn" in fdb[0]["flags"], fdb
    # ... and the MAC/IP binding into its ARP cache for the VNI, and the SVI's neighbours.
    arp = wait(lambda: frr.vtysh_json(f"show evpn arp-cache vni {VNI} json").get(N1_IP),
               f"{N1_IP} in zebra's ARP cache for VNI 100", node, frr)
    assert (arp["type"], arp["mac"], arp["remoteVtep"]) == ("remote", mac, N1_VTEP), arp
    [neigh] = wait(lambda: vtep.f.json_ip("neigh", "show", N1_IP, "dev", "br100"),
                   f"{N1_IP} as a neighbour of br100", node, frr)
    assert (neigh["lladdr"], neigh.get("protocol")) == (mac, "zebra"), neigh


def test_overlayd_holds_frrs_type3_and_the_bridged_hosts_type2(vtep: Vtep):
    frr, node = vtep.frr, vtep.node
    frr_rd = wait(lambda: frr.vtysh_json(f"show bgp l2vpn evpn vni {VNI} json").get("rd"),
                  "FRR's RD for VNI 100", frr)
    assert frr_rd.startswith(f"{F_VTEP}:"), frr_rd  # auto RD: router ID : a local number
    rib = overlayd_holds_h(vtep)
    print(f"\n$ overlayctl rib   (n1)\n{node.ctl_text('rib')}")
    for r in rib:
        assert (r["vni"], r["label"], r["next_hop"], r["rd"]) == (VNI, VNI, F_VTEP, frr_rd), r
        assert (r["route_targets"], r["best"], r["esi"] or "0") == ([RT], True, "0"), r
    # They steer overlayd: FRR's VTEP on the flood list, h's MAC behind it in the FDB.
    assert F_VTEP in node.flood_list()
    row = node.fdb_row(H_MAC)
    assert row and (row["learned"], row["where"], row["vni"]) == ("bgp", F_VTEP, VNI), row
    # FRR's side of the same routes: zebra's local MAC and binding for h.
    macs = frr.evpn_macs()[str(VNI)]["macs"]
    assert (macs[H_MAC]["type"], macs[H_MAC]["intf"]) == ("local", "h0"), macs
    arp = frr.vtysh_json(f"show evpn arp-cache vni {VNI} json")[H_IP]
    assert (arp["type"], arp["mac"]) == ("local", H_MAC), arp


def test_ping_crosses_between_the_tap_and_the_bridged_host(vtep: Vtep):
    node, frr = vtep.node, vtep.frr
    overlayd_holds_h(vtep)
    wait(lambda: any(e["mac"] == ZERO_MAC and e.get("dst") == N1_VTEP
                     for e in kernel_fdb(vtep.f, "vx100")),
         "overlayd's VTEP on FRR's flood list", node, frr)
    before = node.counters()
    attempts: list[str] = []

    def n1_pings_h() -> bool:
        ok, out = ping_ok(vtep.n1, H_IP)
        attempts.append(out)
        return ok

    start = time.monotonic()
    wait(n1_pings_h, f"n1 ({N1_IP}, overlayd's TAP) to ping h ({H_IP}) behind FRR's bridge",
         node, frr)
    took = time.monotonic() - start
    ok, out = ping_ok(vtep.h, N1_IP)
    assert ok, f"h -> n1 across FRR's VXLAN and overlayd:\n{out}\n{node.log()[-3000:]}"
    after = node.counters()
    assert after["rx_frames"] - before["rx_frames"] >= 6, (before, after)
    # n1 asked for H_IP: answered by overlayd from FRR's MAC/IP route, not flooded.
    assert after["tx_arp_suppressed"] > before["tx_arp_suppressed"], (before, after)
    assert after.get("rx_drop_unknown_vtep", 0) == before.get("rx_drop_unknown_vtep", 0)
    # Remote MACs from BGP only: h's entry is still FRR's route, not a data-plane one.
    row = node.fdb_row(H_MAC)
    assert (row["learned"], row["where"]) == ("bgp", F_VTEP), row
    print(f"\n[frr vtep] ping n1 -> h answered after {took:.1f} s, {len(attempts)} attempt(s)")


def test_sigterm_of_overlayd_takes_its_routes_out_of_frr(vtep: Vtep):
    """Last in this lab: it stops overlayd."""
    node, frr = vtep.node, vtep.frr
    mac = node.tap_mac()
    wait(lambda: any(r["type"] == 3 for r in frr_routes_from(vtep, N1_VTEP)),
         "overlayd's routes in FRR before the stop", node, frr)
    assert node.stop() == 0, node.log()
    start = time.monotonic()
    wait(lambda: not frr_routes_from(vtep, N1_VTEP), "overlayd's routes to leave FRR", node, frr)
    took = time.monotonic() - start
    wait(lambda: mac not in frr.evpn_macs().get(str(VNI), {}).get("macs", {})
         and N1_VTEP not in frr.evpn_vnis().get(str(VNI), {}).get("remoteVteps", []),
         "overlayd's MAC and VTEP to leave zebra", node, frr)
    wait(lambda: not [e for e in kernel_fdb(vtep.f, "vx100") if e.get("dst") == N1_VTEP],
         "vx100's FDB entries to overlayd's VTEP to go", node, frr)
    info = frr.vtysh_json(f"show bgp neighbors {N1_VTEP} json")[N1_VTEP]
    assert info["bgpState"] != "Established", info
    assert info["lastResetDueTo"] == "BGP Notification received", info
    # Withdrawn at once, not kept as stale for overlayd's 120 s restart time.
    assert took < HOLD_TIME, took
    # FRR's own routes are still there.
    assert any(r["type"] == 3 and r["local"] for r in frr.evpn_routes())
    print(f"\n[frr vtep] overlayd's routes left FRR {took:.2f} s after its SIGTERM")


# -- lab 2: the harness over IPv4 unicast, FRR <-> gobgpd -----------------------------------------


G_ADDR = "10.0.0.9"
G_PREFIX = "10.9.0.0/24"  # gobgp announces it, next hop itself
F_PREFIX = "10.8.0.0/24"  # FRR announces it (configured while running)
STATIC_PREFIX = "10.7.0.0/24"  # a static route of staticd's


@dataclass
class Unicast:
    lab: Lab
    f: Host
    frr: Frr
    gobgp: GoBgp


@pytest.fixture(scope="module")
def unicast() -> Iterator[Unicast]:
    require_frr()
    require_programs("gobgpd", "gobgp")
    with Lab() as lab:
        f = lab.add_host("f", v4=f"{F_VTEP}/24")
        g = lab.add_host("g", v4=f"{G_ADDR}/24")
        config = bgp_config(ASN, F_VTEP, [Neighbor(G_ADDR, ASN, families=("ipv4-unicast",))],
                            hold_time=HOLD_TIME,
                            debug=("bgp neighbor-events", "bgp updates", "zebra rib"))
        frr = start_frr(f, config + f"ip route {STATIC_PREFIX} blackhole\n",
                        daemons=("zebra", "bgpd", "staticd"))
        gobgp = start_gobgpd(g, ASN, [GoBgpNeighbor(F_VTEP, ASN, families=("ipv4-unicast",))],
                             hold_time=HOLD_TIME)
        yield Unicast(lab, f, frr, gobgp)
        gobgp.stop()
        frr.stop()


def kernel_route(host: Host, prefix: str) -> dict[str, Any] | None:
    return next(iter(host.json_ip("route", "show", prefix)), None)


def test_frr_installs_a_gobgp_route_in_the_namespace_kernel(unicast: Unicast):
    frr, gobgp, f = unicast.frr, unicast.gobgp, unicast.f
    wait(lambda: frr.neighbor_state(G_ADDR) == "Established"
         and gobgp.neighbor_state(F_VTEP) == "established",
         "FRR <-> gobgpd Established (ipv4 unicast)", frr, gobgp)
    assert list(frr.bgp_summary()) == ["ipv4Unicast"]
    gobgp.add_unicast(G_PREFIX, next_hop=G_ADDR)

    def in_rib() -> dict[str, Any] | None:
        return next((r for r in frr.ip_routes().get(G_PREFIX, [])
                     if r["protocol"] == "bgp" and r.get("installed")), None)

    route = wait(in_rib, f"{G_PREFIX} from gobgp installed in FRR's RIB", frr, gobgp)
    assert route["selected"] and route["nexthops"][0]["ip"] == G_ADDR, route
    kernel = wait(lambda: kernel_route(f, G_PREFIX), f"{G_PREFIX} in f's kernel", frr, gobgp)
    assert (kernel["protocol"], kernel["gateway"], kernel["dev"]) == ("bgp", G_ADDR, "eth0"), kernel
    print(f"\n$ ip route   (f, FRR's namespace)\n{f.ip('route').stdout}")

    gobgp.delete_unicast(G_PREFIX)
    wait(lambda: G_PREFIX not in frr.ip_routes(), f"{G_PREFIX} to leave FRR's RIB", frr, gobgp)
    wait(lambda: kernel_route(f, G_PREFIX) is None, f"{G_PREFIX} to leave f's kernel", frr, gobgp)


def test_staticd_routes_reach_the_namespace_kernel(unicast: Unicast):
    frr, f = unicast.frr, unicast.f
    [route] = frr.ip_routes()[STATIC_PREFIX]
    assert (route["protocol"], route["installed"]) == ("static", True), route
    kernel = wait(lambda: kernel_route(f, STATIC_PREFIX), f"{STATIC_PREFIX} in f's kernel", frr)
    assert (kernel["type"], kernel["protocol"]) == ("blackhole", "static"), kernel


def test_a_route_configured_in_frr_reaches_gobgp(unicast: Unicast):
    frr, gobgp = unicast.frr, unicast.gobgp

    def gobgp_has() -> list[dict[str, Any]]:
        out = gobgp.cli("global", "rib", "-a", "ipv4", "-j").stdout.strip()
        return json.loads(out).get(F_PREFIX, []) if out.startswith("{") else []

    frr.configure(f"router bgp {ASN}\n address-family ipv4 unicast\n  network {F_PREFIX}\n"
                  f" exit-address-family\nexit\n")
    [path] = wait(gobgp_has, f"{F_PREFIX} from FRR in gobgp", frr, gobgp)
    next_hop = next(a["nexthop"] for a in path["attrs"] if a["type"] == 3)
    assert next_hop == F_VTEP, path
    frr.configure(f"router bgp {ASN}\n address-family ipv4 unicast\n  no network {F_PREFIX}\n"
                  f" exit-address-family\nexit\n")
    wait(lambda: not gobgp_has(), f"{F_PREFIX} withdrawn from gobgp", frr, gobgp)


def test_zebra_takes_its_routes_out_of_the_kernel_when_frr_stops(unicast: Unicast):
    """Last in this lab: it stops FRR."""
    frr, gobgp, f = unicast.frr, unicast.gobgp, unicast.f
    gobgp.add_unicast(G_PREFIX, next_hop=G_ADDR)
    wait(lambda: kernel_route(f, G_PREFIX), f"{G_PREFIX} in f's kernel", frr, gobgp)
    assert frr.stop() == {"staticd": 0, "bgpd": 0, "zebra": 0}, frr.log()
    assert kernel_route(f, G_PREFIX) is None, f.ip("route").stdout
    assert kernel_route(f, STATIC_PREFIX) is None, f.ip("route").stdout


# -- the harness's failure: a config FRR rejects ---------------------------------------------------


def test_a_rejected_config_fails_the_start_with_the_logs():
    require_frr()
    with Lab() as lab:
        f = lab.add_host("f", v4=f"{F_VTEP}/24")
        with pytest.raises(FrrError) as err:
            start_frr(f, f"router bgp {ASN}\n no such command\nexit\n")
    message = str(err.value)
    assert "vtysh -b rejected" in message and "no such command" in message, message
    assert "--- zebra ---" in message and "--- bgpd ---" in message, message
