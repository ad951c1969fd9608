"""Two BGP EVPN nodes on a balance-xor LAG, with containers on macvlan and ipvlan over the TAP.

Hosts a and b are joined by a static LAG: two veth links (lag0, lag1)
straight from a to b, enslaved at both ends to bond0 in `balance-xor` mode
with `xmit_hash_policy layer3+4`; bond0 carries the underlay address
10.0.0.{1,2}/24. The nodes run tests/netns/topology.py's BGP config (iBGP,
no static flood list: ARP suppression is on): network blue, VNI 100, TAP
blue0 with 192.168.100.{1,2}/24.

On a, two containers reach blue0 through macvlan in bridge mode (each its own
MAC); on b, three containers reach it through ipvlan in l2 mode: three IPs
behind blue0's one MAC, so b announces one MAC with three IP bindings and a
must keep all three to answer ARP for each.

One pair of daemons serves both sets of tests.
"""

from __future__ import annotations

import re

import pytest

from tests.netns.topology import DEVICE, bgp_node_config, overlay_ip
from tests.support import require_netns
from tests.vm.guest.guest import pings, query, start_nodes, stop_nodes
from tests.vm.report import note
from tools.lab import Host, Lab, wait_for

SLAVES = ("lag0", "lag1")
MACVLAN_IPS = ("192.168.100.11", "192.168.100.12")  # containers on a
IPVLAN_IPS = ("192.168.100.21", "192.168.100.22", "192.168.100.23")  # containers on b, one MAC
FLOWS = 32
IPERF_SECONDS = 8
MIN_SHARE = 0.10


def add_lag_host(lab: Lab, name: str) -> Host:
    """A host with IPv6 off (no ND/MLD in the counters); its links and bond come later."""
    host = lab.add_host(name)
    host.sysctl("net.ipv6.conf.all.disable_ipv6", 1)
    host.sysctl("net.ipv6.conf.default.disable_ipv6", 1)
    return host


def make_bond(host: Host, vtep: str) -> None:
    host.ip("link", "add", "bond0", "type", "bond", "mode", "balance-xor",
            "xmit_hash_policy", "layer3+4", "miimon", "100")
    for slave in SLAVES:
        host.ip("link", "set", slave, "master", "bond0")
    host.ip("addr", "add", f"{vtep}/24", "dev", "bond0")
    host.ip("link", "set", "bond0", "up")


def tx_bytes(host: Host, device: str) -> int:
    [link] = host.json_ip("-s", "link", "show", "dev", device)
    return link["stats64"]["tx"]["bytes"]


def sessions_up(nodes) -> bool:
    return all([p["state"] for p in query(n, "peers")] == ["Established"] for n in nodes)


def tap_mac(node) -> str:
    return query(node, "status")["networks"][0]["mac"]


def macip(node, mac: str) -> set[str]:
    """The IPs bound to `mac` in the node's best type-2 routes."""
    return {r["ip"] for r in query(node, "rib")
            if r["type"] == "macip" and r["best"] and r["mac"] == mac and r["ip"]}


@pytest.fixture(scope="module")
def lag():
    """Hosts a, b on the LAG with overlayd (BGP) running, and their containers."""
    require_netns()
    with Lab() as lab:
        a, b = add_lag_host(lab, "a"), add_lag_host(lab, "b")
        for slave in SLAVES:
            lab.add_link(a, b, slave)
        for i, host in enumerate((a, b)):
            make_bond(host, f"10.0.0.{i + 1}")
        wait_for(lambda: a.ping("10.0.0.2", timeout=2), timeout=30, what="the underlay over the LAG")
        nodes = start_nodes([(host, bgp_node_config(i, 4, count=2, hold_time=30))
                             for i, host in enumerate((a, b))])
        macvlans = [lab.add_container(a, f"mv{k}", DEVICE, ("type", "macvlan", "mode", "bridge"), f"{ip}/24")
                    for k, ip in enumerate(MACVLAN_IPS)]
        ipvlans = [lab.add_container(b, f"iv{k}", DEVICE, ("type", "ipvlan", "mode", "l2"), f"{ip}/24")
                   for k, ip in enumerate(IPVLAN_IPS)]
        wait_for(lambda: sessions_up(nodes), timeout=120, what="the BGP session to be Established")
        yield (a, b), nodes, macvlans, ipvlans
        codes = stop_nodes(nodes)
        assert set(codes.values()) == {0}, f"overlayd exit codes {codes}"


def test_the_underlay_is_a_balance_xor_lag_hashing_layer3_4(lag):
    hosts, _, _, _ = lag
    for i, host in enumerate(hosts):
        [route] = host.json_ip("route", "get", f"10.0.0.{2 - i}")
        assert route["dev"] == "bond0", route
        [bond] = host.json_ip("-d", "link", "show", "dev", "bond0")
        data = bond["linkinfo"]["info_data"]
        assert (data["mode"], data["xmit_hash_policy"]) == ("balance-xor", "layer3+4"), data
        assert sorted(link["ifname"] for link in host.json_ip("link", "show", "master", "bond0")) == list(SLAVES)


def test_macvlan_and_ipvlan_containers_ping_across(lag):
    """Every macvlan container on a pings every ipvlan container on b and back; b's one MAC
    carries all three IPs in a's RIB, and a answers ARP for each from its own tables."""
    _, nodes, macvlans, ipvlans = lag
    mac_b = tap_mac(nodes[1])
    for c in ipvlans:  # ipvlan: the containers share blue0's MAC
        [link] = c.json_ip("link", "show", "dev", "eth0")
        assert link["address"] == mac_b, link
    mv_macs = {c.json_ip("link", "show", "dev", "eth0")[0]["address"] for c in macvlans}
    assert len(mv_macs) == len(macvlans) and mac_b not in mv_macs  # macvlan: a MAC each

    before = [query(n, "stats")["counters"] for n in nodes]
    replies = sum(pings(mv, ip, 3) for mv in macvlans for ip in IPVLAN_IPS)
    replies += sum(pings(iv, ip, 3) for iv in ipvlans for ip in MACVLAN_IPS)
    after = [query(n, "stats")["counters"] for n in nodes]
    for i in range(2):  # per reply, one node sent the request and the other the reply
        moved = {k: after[i][k] - before[i][k] for k in ("tx_datagrams", "rx_frames")}
        assert moved["tx_datagrams"] >= replies and moved["rx_frames"] >= replies, (i, replies, moved)

    # What crossed in BGP: b's one MAC with every ipvlan IP, each macvlan MAC with its IP.
    wait_for(lambda: macip(nodes[0], mac_b) >= set(IPVLAN_IPS), timeout=30,
             what="a's RIB to bind every ipvlan IP to b's MAC")
    fdb_a = [r for r in query(nodes[0], "fdb") if r["mac"] == mac_b]
    assert [(r["where"], r["learned"]) for r in fdb_a] == [("10.0.0.2", "bgp")], fdb_a
    for mv, ip in zip(macvlans, MACVLAN_IPS):
        mac = mv.json_ip("link", "show", "dev", "eth0")[0]["address"]
        wait_for(lambda mac=mac, ip=ip: ip in macip(nodes[1], mac), timeout=30,
                 what=f"b's RIB to bind {ip} to {mac}")
    bound = sorted(macip(nodes[0], mac_b))
    note(f"macvlan/ipvlan: a's RIB binds b's one MAC {mac_b} to {', '.join(bound)}")

    # ARP suppression keeps every binding: with the containers' caches flushed, each
    # ARP request for an ipvlan IP is answered by a's overlayd, and the other way by b's.
    for c in (*macvlans, *ipvlans):
        c.ip("neigh", "flush", "dev", "eth0")
    before = [query(n, "stats")["counters"] for n in nodes]
    for mv in macvlans:
        for ip in IPVLAN_IPS:
            pings(mv, ip, 1)
    for iv in ipvlans:
        for ip in MACVLAN_IPS:
            pings(iv, ip, 1)
    after = [query(n, "stats")["counters"] for n in nodes]
    suppressed = [after[i]["tx_arp_suppressed"] - before[i]["tx_arp_suppressed"] for i in range(2)]
    flooded = [after[i]["tx_arp_flooded"] - before[i]["tx_arp_flooded"] for i in range(2)]
    note(f"macvlan/ipvlan: ARP after a flush: suppressed a={suppressed[0]} b={suppressed[1]}, "
         f"flooded a={flooded[0]} b={flooded[1]}")
    assert suppressed[0] >= len(macvlans) * len(ipvlans), (suppressed, flooded)
    assert suppressed[1] >= len(ipvlans) * len(macvlans), (suppressed, flooded)


def test_32_inner_tcp_flows_spread_over_both_links(lag):
    """iperf3 -P 32 from a's TAP to b's: each flow's outer UDP source port differs, so the
    layer3+4 hash puts at least 10% of the bytes on each link, at both ends."""
    (a, b), _, _, _ = lag
    server = b.popen("iperf3", "-s", "-1", "-B", overlay_ip(1))
    wait_for(lambda: b.run("ss", "-Hltn", "sport = :5201").stdout.strip(), timeout=60,
             interval=1, what="iperf3 -s on b to listen")  # its own words sit in a buffer: not a tty
    before = {h.name: {s: tx_bytes(h, s) for s in SLAVES} for h in (a, b)}
    client = a.run("iperf3", "-c", overlay_ip(1), "-B", overlay_ip(0), "-P", str(FLOWS),
                   "-t", str(IPERF_SECONDS), "--connect-timeout", "30000", check=False,
                   timeout=IPERF_SECONDS + 120)
    server.wait(timeout=30)
    assert client.returncode == 0, f"iperf3 -c:\n{client.stdout}\n{client.stderr}"
    streams = len(re.findall(r"^\[\s*\d+\].*sender$", client.stdout, re.MULTILINE))
    assert streams >= FLOWS, client.stdout  # one line per stream, and [SUM]
    moved = {h.name: {s: tx_bytes(h, s) - before[h.name][s] for s in SLAVES} for h in (a, b)}
    shares = {}
    for name, per_slave in moved.items():
        total = sum(per_slave.values())
        shares[name] = {s: per_slave[s] / total for s in SLAVES}
        note(f"balance-xor layer3+4, {FLOWS} inner TCP flows: {name} sent "
             + ", ".join(f"{s} {per_slave[s]} B ({shares[name][s]:.0%})" for s in SLAVES))
    summary = re.search(r"^\[SUM\].*sender$", client.stdout, re.MULTILINE)
    note(f"balance-xor: iperf3 {summary.group(0) if summary else '(no SUM line)'}")
    for name, share in shares.items():
        assert min(share.values()) >= MIN_SHARE, (name, moved[name])
