"""IPv4 and IPv6 unicast (RFC 4271, RFC 4760) against GoBGP: overlayd announces its
pod subnets to a site router and learns the router's routes.

One lab for the module:

    n1: overlayd, VTEP 10.0.0.1, routing (userspace backend) subnet 10.244.1.0/24,
        neighbor 10.0.0.9 with families [ipv4-unicast]
    n6: overlayd, VTEP fd00::6 (router ID 10.0.0.6), routing subnets 10.244.6.0/24 and
        fd00:244:0:6::/64, neighbor fd00::9 with families [ipv6-unicast]: an IPv6 session
    g:  gobgpd 10.0.0.9 / fd00::9, neighbors 10.0.0.1 (ipv4-unicast) and fd00::6
        (ipv6-unicast); tcpdump of port 179 on eth0

GoBGP's RIB holds each node's subnet with the node's underlay address as next
hop (iBGP: empty AS_PATH, LOCAL_PREF 100, ORIGIN IGP) and no EVPN route; a
route added in GoBGP shows up in `overlayctl rib` as best, from GoBGP, with the
next hop GoBGP gave it, and leaves it when deleted there; tshark decodes the
session without complaint, overlayd's UPDATEs as the prefix and next hop it
sent; a SIGTERM to overlayd takes its route out of GoBGP's RIB.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import require_netns, require_programs
from tools.gobgp import GoBgp, Neighbor, start_gobgpd
from tools.lab import Capture, Lab
from tools.nodes import Overlayd, start_overlayd, wait_showing_logs

pytestmark = [pytest.mark.root, pytest.mark.peer]

ASN = 65000
HOLD_TIME = 9
CONVERGE_S = 20.0
N1, N6, G4, G6 = "10.0.0.1", "fd00::6", "10.0.0.9", "fd00::9"
N1_SUBNET, N6_SUBNET = "10.244.1.0/24", "fd00:244:0:6::/64"
ROUTER_V4, ROUTER_V6 = "192.0.2.0/24", "2001:db8:9::/48"  # what the router announces
ROUTER_V4_HOP, ROUTER_V6_HOP = "10.0.0.99", "fd00::99"


def node_config(lab: Lab, name: str, vtep: str, neighbor: str, family: str, routing: dict[str, Any],
                **bgp: Any) -> dict[str, Any]:
    return {
        "node": {"vtep": vtep},
        "bgp": {"asn": ASN, "hold_time": HOLD_TIME, "connect_retry": 1, **bgp,
                "neighbors": [{"address": neighbor, "asn": ASN, "families": [family]}]},
        "routing": {"vni": 1, "backend": "userspace", "device": "ovl0",
                    "env_file": str(lab.tmpdir / f"{name}-subnet.env"), **routing},
    }


@dataclass
class UnicastLab:
    lab: Lab
    n1: Overlayd
    n6: Overlayd
    gobgp: GoBgp
    pcap: Path
    capture: Capture


@pytest.fixture(scope="module")
def uc() -> Iterator[UnicastLab]:
    require_netns()
    require_programs("gobgpd", "gobgp", "tcpdump", "tshark")
    with Lab() as lab:
        h1 = lab.add_host("n1", v4=f"{N1}/24")
        h6 = lab.add_host("n6", v6=f"{N6}/64")
        g = lab.add_host("g", v4=f"{G4}/24", v6=f"{G6}/64")
        pcap = lab.tmpdir / "bgp-unicast.pcap"
        capture = g.capture(pcap, "tcp port 179")
        gobgp = start_gobgpd(g, ASN, [Neighbor(N1, ASN, families=("ipv4-unicast",)),
                                      Neighbor(N6, ASN, families=("ipv6-unicast",))], hold_time=HOLD_TIME)
        n1 = start_overlayd(h1, node_config(lab, "n1", N1, G4, "ipv4-unicast",
                                            {"network": "10.244.0.0/16", "subnet": N1_SUBNET}))
        n6 = start_overlayd(h6, node_config(lab, "n6", N6, G6, "ipv6-unicast",
                                            {"network": "10.244.0.0/16", "subnet": "10.244.6.0/24",
                                             "network6": "fd00:244::/32", "subnet6": N6_SUBNET},
                                            router_id="10.0.0.6"))
        setup = UnicastLab(lab, n1, n6, gobgp, pcap, capture)
        yield setup
        codes = [n.stop() for n in (n1, n6)]
        capture.stop()
        gobgp.stop()
        assert codes == [0, 0], n1.log()[-3000:] + n6.log()[-3000:]


def wait(predicate, what: str, *logs: Any, timeout: float = CONVERGE_S) -> Any:
    return wait_showing_logs(predicate, what, *logs, timeout=timeout)


def gobgp_path(uc: UnicastLab, prefix: str) -> dict[str, Any] | None:
    """GoBGP's best path for `prefix`, or None."""
    paths = uc.gobgp.unicast_routes("ipv6" if ":" in prefix else "ipv4").get(prefix, [])
    return next((p for p in paths if p["best"]), None)


def rib_row(node: Overlayd, prefix: str) -> dict[str, Any] | None:
    """The best row of `overlayctl rib` for a unicast prefix, or None."""
    return next((r for r in node.ctl("rib") if r["prefix"] == prefix and r["type"].endswith("-unicast")
                 and r["best"]), None)


# -- tests -----------------------------------------------------------------------------------


def test_each_session_carries_its_one_unicast_family(uc: UnicastLab):
    for node, neighbor, family in ((uc.n1, G4, "ipv4-unicast"), (uc.n6, G6, "ipv6-unicast")):
        [peer] = wait(lambda node=node: [p for p in node.ctl("peers") if p["state"] == "Established"],
                      f"{node.host.name}'s session with GoBGP", node, uc.gobgp)
        assert (peer["neighbor"], peer["families"]) == (neighbor, [family]), peer
    print(f"\n$ overlayctl peers   (n1)\n{uc.n1.ctl_text('peers')}")


def test_gobgp_holds_our_ipv4_subnet_with_our_underlay_address_as_next_hop(uc: UnicastLab):
    path = wait(lambda: gobgp_path(uc, N1_SUBNET), f"{N1_SUBNET} in GoBGP's IPv4 RIB", uc.n1, uc.gobgp)
    print(f"\nGoBGP's view of n1's route: {path['raw']}")
    assert (path["next_hop"], path["neighbor"]) == (N1, N1), path
    assert (path["as_path"], path["local_pref"], path["origin"]) == ([], 100, 0), path  # iBGP, ORIGIN IGP
    assert uc.gobgp.routes() == []  # no EVPN route went to a unicast-only neighbor


def test_gobgp_holds_our_ipv6_subnet_from_the_ipv6_session(uc: UnicastLab):
    path = wait(lambda: gobgp_path(uc, N6_SUBNET), f"{N6_SUBNET} in GoBGP's IPv6 RIB", uc.n6, uc.gobgp)
    assert (path["next_hop"], path["neighbor"]) == (N6, N6), path
    assert (path["as_path"], path["local_pref"]) == ([], 100), path
    # n6's IPv4 subnet is not announced on its IPv6-only session
    assert gobgp_path(uc, "10.244.6.0/24") is None


@pytest.mark.parametrize("family", ["ipv4", "ipv6"])
def test_a_gobgp_route_is_best_in_overlayctl_rib_until_gobgp_withdraws_it(uc: UnicastLab, family: str):
    node, prefix, hop, router = ((uc.n1, ROUTER_V4, ROUTER_V4_HOP, G4) if family == "ipv4"
                                 else (uc.n6, ROUTER_V6, ROUTER_V6_HOP, G6))
    uc.gobgp.add_unicast(prefix, next_hop=hop)
    row = wait(lambda: rib_row(node, prefix), f"{prefix} from GoBGP in overlayctl rib", node, uc.gobgp)
    assert (row["type"], row["next_hop"], row["peer"]) == (f"{family}-unicast", hop, router), row
    print(f"\n$ overlayctl rib   ({node.host.name}, GoBGP's route in)\n{node.ctl_text('rib')}")
    uc.gobgp.delete_unicast(prefix)
    wait(lambda: not any(r["prefix"] == prefix for r in node.ctl("rib")),
         f"{prefix} to leave overlayctl rib", node, uc.gobgp)


def test_capture_decodes_the_unicast_updates_cleanly(uc: UnicastLab):
    """tshark finds nothing malformed in either session, and reads overlayd's UPDATEs as the
    prefix and next hop overlayd sent: NLRI field + NEXT_HOP for IPv4, MP_REACH_NLRI for IPv6."""
    wait(lambda: gobgp_path(uc, N1_SUBNET) and gobgp_path(uc, N6_SUBNET),
         "both subnets in GoBGP before the capture ends", uc.n1, uc.n6, uc.gobgp)
    uc.capture.stop()
    host, pcap = uc.gobgp.host, str(uc.pcap)
    bad = host.run("tshark", "-n", "-r", pcap, "-Y", "_ws.malformed || _ws.expert.severity >= error",
                   timeout=60).stdout
    assert bad.strip() == "", f"tshark flags packets of the BGP capture:\n{bad}"
    fields = ["ip.src", "ipv6.src", "bgp.nlri_prefix", "bgp.mp_reach_nlri_ipv6_prefix", "bgp.prefix_length",
              "bgp.update.path_attribute.next_hop", "bgp.update.path_attribute.mp_reach_nlri.next_hop.ipv6"]
    out = host.run("tshark", "-n", "-r", pcap, "-Y", "bgp.type == 2 && (ip.src == 10.0.0.1 || ipv6.src == fd00::6)",
                   "-T", "fields", "-E", "separator=;", *[a for f in fields for a in ("-e", f)], timeout=60).stdout
    print(f"\n[unicast capture from overlayd] {';'.join(fields)}\n{out}")
    seen = {tuple(line.split(";")) for line in out.splitlines()}
    assert (N1, "", "10.244.1.0", "", "24", N1, "") in seen, seen
    assert ("", N6, "", "fd00:244:0:6::", "64", "", N6) in seen, seen


def test_sigterm_takes_our_routes_out_of_gobgp(uc: UnicastLab):
    for node, prefix in ((uc.n1, N1_SUBNET), (uc.n6, N6_SUBNET)):
        wait(lambda prefix=prefix: gobgp_path(uc, prefix), f"{prefix} in GoBGP first", node, uc.gobgp)
        assert node.stop() == 0, node.log()[-3000:]
        wait(lambda prefix=prefix: gobgp_path(uc, prefix) is None, f"{prefix} to leave GoBGP's RIB",
             node, uc.gobgp)
