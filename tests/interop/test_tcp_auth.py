"""Issue 13, item 15: TCP MD5 (RFC 2385) and GTSM (RFC 5082) between overlayd and FRR 8.4 and
GoBGP 3.10 configured the same, in one lab:

    n1  overlayd 10.0.0.1, every neighbor below in one config (iBGP, AS 65000)
    f   FRR    10.0.0.2  right password, ttl-security hops 1     -> Established
    g   GoBGP  10.0.0.3  right password, ttl-security ttl-min 255 -> Established
    f2  FRR    10.0.0.4  wrong password                           -> never Established
    g2  GoBGP  10.0.0.5  wrong password                           -> never Established
    r   a router, 10.0.0.254 on the underlay and 10.0.1.254 behind it
    x   FRR    10.0.1.2  behind r, ttl-security on both sides     -> never Established
    y   GoBGP  10.0.1.3  behind r, ttl-security on both sides     -> never Established

The refusals are the kernels' (the segments are dropped before any BGP code sees them): the
test prints nstat's TcpExtTCPMD5Failure / TCPMD5NotFound and TcpExtTCPMinTTLDrop in n1 and in
the peers. A capture shows the MD5 option on the working sessions, and the password appears
neither in overlayd's debug log nor in anything overlayctl prints.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.support import require_netns, require_programs, unmet
from tools import frr as frrlib
from tools.frr import Frr, bgp_config, start_frr
from tools.frr import Neighbor as FrrNeighbor
from tools.gobgp import GoBgp, start_gobgpd
from tools.gobgp import Neighbor as GoBgpNeighbor
from tools.lab import Capture, Host, Lab, wait_for
from tools.nodes import Overlayd, start_overlayd, wait_showing_logs

pytestmark = [pytest.mark.root, pytest.mark.peer]

ASN = 65000
PASSWORD = "0verlay-md5-Secret"
WRONG = "not-the-password"
NEVER_S = 12.0  # several connect retries (1 s) on every side, and more than a hold time (9 s)
N1 = "10.0.0.1"
PEERS = {  # name: (address, software, password on the peer's side, GTSM, far)
    "f": ("10.0.0.2", "frr", PASSWORD, True, False),
    "g": ("10.0.0.3", "gobgp", PASSWORD, True, False),
    "f2": ("10.0.0.4", "frr", WRONG, False, False),
    "g2": ("10.0.0.5", "gobgp", WRONG, False, False),
    "x": ("10.0.1.2", "frr", None, True, True),
    "y": ("10.0.1.3", "gobgp", None, True, True),
}


@dataclass
class Site:
    lab: Lab
    n1: Host
    node: Overlayd
    hosts: dict[str, Host]
    daemons: dict[str, Frr | GoBgp]
    capture: Capture
    started: float

    def state(self, name: str) -> tuple[str | None, str | None]:
        """(overlayd's state for the peer, the peer's state for overlayd), both lower case."""
        address = PEERS[name][0]
        ours = next((p["state"] for p in self.node.ctl("peers") if p["neighbor"] == address), None)
        theirs = self.daemons[name].neighbor_state(N1)
        return (ours or "").lower() or None, (theirs or "").lower() or None


def nstat(host: Host) -> dict[str, int]:
    out = host.run("nstat", "-az", "--json").stdout
    kernel = json.loads(out)["kernel"]
    return {k: kernel.get(k, 0) for k in ("TcpExtTCPMD5Failure", "TcpExtTCPMD5NotFound",
                                          "TcpExtTCPMD5Unexpected", "TcpExtTCPMinTTLDrop")}


def overlayd_config() -> dict:
    neighbors = []
    for address, _, peer_password, gtsm, far in PEERS.values():
        nb = {"address": address, "asn": ASN}
        if peer_password is not None:
            nb["password"] = PASSWORD  # ours is always the right one
        if gtsm:
            nb["ttl_security"] = True
        neighbors.append(nb)
    return {
        "node": {"vtep": N1},
        "networks": [{"name": "blue", "vni": 100, "device": "blue0", "address": "192.168.100.1/24"}],
        "bgp": {"asn": ASN, "hold_time": 9, "connect_retry": 1, "neighbors": neighbors},
    }


@pytest.fixture(scope="module")
def site() -> Iterator[Site]:
    require_netns()
    require_programs("gobgpd", "gobgp", "nstat", "tcpdump")
    reason = frrlib.missing()
    if reason:
        unmet(reason)
    with Lab() as lab:
        n1 = lab.add_host("n1", v4=f"{N1}/24")
        r = lab.add_host("r", v4="10.0.0.254/24")
        r.sysctl("net.ipv4.ip_forward", 1)
        r.ip("link", "add", "brf", "type", "bridge")
        r.ip("addr", "add", "10.0.1.254/24", "dev", "brf")
        r.ip("link", "set", "brf", "up")
        n1.ip("route", "add", "10.0.1.0/24", "via", "10.0.0.254")
        hosts = {}
        for name, (address, _, _, _, far) in PEERS.items():
            if far:
                hosts[name] = lab.add_pod(r, name, "brf", v4=f"{address}/24", gateway="10.0.1.254")
            else:
                hosts[name] = lab.add_host(name, v4=f"{address}/24")
        wait_for(lambda: n1.ping("10.0.1.2", timeout=2), 10, what="n1 to reach x through r")
        capture = n1.capture(lab.tmpdir / "bgp.pcap", "tcp port 179")
        daemons: dict[str, Frr | GoBgp] = {}
        for name, (address, kind, password, gtsm, _) in PEERS.items():
            if kind == "frr":
                daemons[name] = start_frr(hosts[name], bgp_config(ASN, address, [
                    FrrNeighbor(N1, ASN, password=password, ttl_security=gtsm)]))
            else:
                daemons[name] = start_gobgpd(hosts[name], ASN, [
                    GoBgpNeighbor(N1, ASN, password=password, ttl_security=gtsm)], router_id=address)
        node = start_overlayd(n1, overlayd_config())
        yield Site(lab, n1, node, hosts, daemons, capture, time.monotonic())
        capture.stop()
        assert node.stop() == 0
        for name, d in daemons.items():
            d.stop()


def test_the_same_password_and_gtsm_on_both_sides_reach_established(site: Site):
    for name in ("f", "g"):
        wait_showing_logs(lambda n=name: site.state(n) == ("established", "established"),
                          f"overlayd and {name} Established with MD5 and GTSM", site.node, site.daemons[name],
                          timeout=30)
    took = time.monotonic() - site.started
    rows = {p["neighbor"]: p for p in site.node.ctl("peers")}
    assert rows["10.0.0.2"]["tcp_md5"] and rows["10.0.0.2"]["ttl_security"]
    assert "md5+gtsm" in site.node.ctl_text("peers")
    # the MD5 option is on the wire: tcpdump decodes it (and says whether the signature is valid
    # when given the secret; here: that it is there)
    site.capture.stop()
    text = site.n1.run("tcpdump", "-r", str(site.capture.path), "-n", "-v", "host 10.0.0.2 or host 10.0.0.3",
                       timeout=60).stdout
    segments = [line for line in text.splitlines() if ": Flags [" in line and " > " in line]
    signed = [line for line in segments if "md5" in line]
    assert segments and len(signed) == len(segments), "\n".join(l for l in segments if "md5" not in l)[:3000]
    ttls = {line.split("ttl ")[1].split(",")[0] for line in text.splitlines() if " ttl " in line}
    assert ttls == {"255"}, ttls
    print(f"\nMD5 + GTSM: FRR and GoBGP Established {took:.1f} s after overlayd was ready; "
          f"{len(signed)}/{len(segments)} segments with them carry the MD5 option, all with TTL 255")


def never_established(site: Site, names: tuple[str, ...]) -> dict[str, set]:
    """Sample every peer's state on both sides until NEVER_S after overlayd's start."""
    seen: dict[str, set] = {n: set() for n in names}
    while True:
        for n in names:
            seen[n].update(site.state(n))
        if time.monotonic() - site.started >= NEVER_S:
            return seen
        time.sleep(0.5)


def test_a_wrong_password_never_reaches_established(site: Site):
    seen = never_established(site, ("f2", "g2"))
    counts = {"n1": nstat(site.n1), "f2": nstat(site.hosts["f2"]), "g2": nstat(site.hosts["g2"])}
    for name, states in seen.items():
        assert "established" not in states, (name, states)
    dropped = counts["n1"]["TcpExtTCPMD5Failure"] + counts["n1"]["TcpExtTCPMD5NotFound"]
    peer_dropped = sum(c["TcpExtTCPMD5Failure"] + c["TcpExtTCPMD5NotFound"] for k, c in counts.items() if k != "n1")
    assert dropped > 0 and peer_dropped > 0, counts
    print(f"\nwrong password: FRR and GoBGP never Established in {NEVER_S:.0f} s (states seen: "
          f"{ {n: sorted(s - {None}) for n, s in seen.items()} }); segments dropped for a bad or missing "
          f"signature: {dropped} by n1's kernel, {peer_dropped} by the peers'")


def test_a_peer_one_hop_further_never_reaches_established_with_gtsm(site: Site):
    assert site.hosts["x"].ping(N1) and site.hosts["y"].ping(N1)  # the router forwards
    seen = never_established(site, ("x", "y"))
    for name, states in seen.items():
        assert "established" not in states, (name, states)
    n1_drops = nstat(site.n1)["TcpExtTCPMinTTLDrop"]
    peer_drops = nstat(site.hosts["x"])["TcpExtTCPMinTTLDrop"] + nstat(site.hosts["y"])["TcpExtTCPMinTTLDrop"]
    assert n1_drops > 0 and peer_drops > 0, (n1_drops, peer_drops)
    print(f"\nGTSM, a peer one router away (TTL 254 on arrival): FRR and GoBGP never Established in "
          f"{NEVER_S:.0f} s; segments dropped for their TTL: {n1_drops} by n1's kernel, {peer_drops} by the peers'")


def test_the_password_never_appears_in_logs_or_status(site: Site):
    texts = {"overlayd log": site.node.log()}
    for command in ("status", "peers", "rib", "stats", "fdb"):
        texts[f"overlayctl {command}"] = site.node.ctl_text(command)
        texts[f"overlayctl {command} --json"] = json.dumps(site.node.ctl(command))
    check = site.n1.run(sys.executable, "-m", "overlayd", "-c", str(site.node.config_path), "--check")
    texts["overlayd --check"] = check.stdout + check.stderr
    leaked = [where for where, text in texts.items() if PASSWORD in text]
    assert leaked == [], leaked
    assert "password" not in texts["overlayd log"].lower() or PASSWORD not in texts["overlayd log"]
    print(f"\nthe password appears in none of {len(texts)} outputs (overlayd's debug log, {len(texts) - 2} "
          f"overlayctl outputs, --check)")
