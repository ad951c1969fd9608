"""Two overlayd nodes whose VTEP addresses sit on bond0.100: VLAN 100 on an active-backup bond.

Each of hosts a and b has two links to the lab's underlay bridge (eth0 and
eth1), enslaved to bond0 (active-backup, miimon 100 ms); bond0.100 carries
the underlay address 10.0.0.{1,2}/24, and eth0, eth1 and bond0 have none, so
VXLAN can only leave through the VLAN. The nodes run tests/netns/topology.py's
BGP config (iBGP, hold time 9 s, no static flood list): network blue, VNI
100, TAP blue0 with 192.168.100.{1,2}/24. When a's active link fails under
a ping every 20 ms over the overlay, at most 1 s of pings goes unanswered
and the BGP session holds (no flap: both sessions' uptime covers the
failover).
"""

from __future__ import annotations

import itertools
import re
import subprocess
import time

import pytest

from tests.netns.topology import DEVICE, bgp_node_config, overlay_ip
from tests.soak import ping_counts
from tests.support import require_netns
from tests.vm.guest.guest import pings, query, start_nodes, stop_nodes
from tests.vm.report import note
from tools.lab import Host, Lab, run, wait_for

VLAN = 100
PINGS = 5
HOLD_S = 9
FAILOVER_PING_S = 0.02
FAILOVER_RUN_S = 8  # ping's deadline: 2 s before the cut, the rest after it


def add_bonded_host(lab: Lab, name: str, vtep: str) -> Host:
    """A host whose only address, `vtep`/24, is on bond0.100 over eth0 + eth1."""
    host = lab.add_host(name)
    host.sysctl("net.ipv6.conf.all.disable_ipv6", 1)  # no ND/MLD chatter in the counters
    host.sysctl("net.ipv6.conf.default.disable_ipv6", 1)
    lab.add_port(host, "eth1")
    host.ip("link", "add", "bond0", "type", "bond", "mode", "active-backup", "miimon", "100")
    for slave in ("eth0", "eth1"):
        host.ip("link", "set", slave, "down")
        host.ip("link", "set", slave, "master", "bond0")
    host.ip("link", "set", "bond0", "up")
    host.ip("link", "add", "link", "bond0", "name", f"bond0.{VLAN}", "type", "vlan", "id", str(VLAN))
    host.ip("addr", "add", f"{vtep}/24", "dev", f"bond0.{VLAN}")
    host.ip("link", "set", f"bond0.{VLAN}", "up")
    return host


def sessions(nodes) -> list[tuple[str, str, str, float | None]]:
    """(host, neighbor, state, uptime) of every node's sessions."""
    return [(n.host.name, p["neighbor"], p["state"], p["uptime_s"]) for n in nodes for p in query(n, "peers")]


def active_slave(host: Host) -> str:
    return host.run("cat", "/sys/class/net/bond0/bonding/active_slave").stdout.strip()


def link_stats(host: Host, device: str) -> dict[str, int]:
    [link] = host.json_ip("-s", "link", "show", "dev", device)
    return {"tx_packets": link["stats64"]["tx"]["packets"], "rx_packets": link["stats64"]["rx"]["packets"]}


@pytest.fixture(scope="module")
def bonded():
    """Hosts a and b on bond0.100 with overlayd running; stopped cleanly after the module."""
    require_netns()
    with Lab() as lab:
        hosts = [add_bonded_host(lab, name, f"10.0.0.{i + 1}") for i, name in enumerate(("a", "b"))]
        wait_for(lambda: hosts[0].ping("10.0.0.2", timeout=2), timeout=30,
                 what="the underlay over bond0.100 to answer a ping")
        nodes = start_nodes([(host, bgp_node_config(i, 4, count=2, hold_time=HOLD_S))
                             for i, host in enumerate(hosts)])
        wait_for(lambda: all(len(query(n, "status")["networks"][0]["flood_list"]) == 1 for n in nodes),
                 timeout=120, what="the session up and the flood lists built")
        yield hosts, nodes
        codes = stop_nodes(nodes)
        assert set(codes.values()) == {0}, f"overlayd exit codes {codes}"


def test_the_underlay_is_the_vlan_on_the_bond(bonded):
    hosts, _ = bonded
    for i, host in enumerate(hosts):
        [route] = host.json_ip("route", "get", f"10.0.0.{2 - i}")
        assert route["dev"] == f"bond0.{VLAN}", route
        [vlan] = host.json_ip("-d", "link", "show", "dev", f"bond0.{VLAN}")
        assert vlan["linkinfo"]["info_data"]["id"] == VLAN, vlan
        [bond] = host.json_ip("-d", "link", "show", "dev", "bond0")
        assert bond["linkinfo"]["info_data"]["mode"] == "active-backup", bond
        assert active_slave(host) in ("eth0", "eth1")


def test_taps_ping_across_the_overlay_on_bond0_100(bonded):
    hosts, nodes = bonded
    for host in hosts:  # the TAP's default MTU: bond0.100's 1500 less VXLAN over IPv4's 50
        [tap] = host.json_ip("link", "show", "dev", DEVICE)
        assert tap["mtu"] == 1450, tap
    counters = [query(n, "stats")["counters"] for n in nodes]
    vlan = [link_stats(h, f"bond0.{VLAN}") for h in hosts]
    for i, host in enumerate(hosts):
        pings(host, overlay_ip(1 - i), PINGS)
    after = [query(n, "stats")["counters"] for n in nodes]
    vlan_after = [link_stats(h, f"bond0.{VLAN}") for h in hosts]
    for i in range(2):
        moved = {k: after[i][k] - counters[i][k] for k in ("tx_datagrams", "rx_frames")}
        # Each node sent its requests and the other's replies, and received as many.
        assert moved["tx_datagrams"] >= 2 * PINGS and moved["rx_frames"] >= 2 * PINGS, (i, moved)
        sent = vlan_after[i]["tx_packets"] - vlan[i]["tx_packets"]
        received = vlan_after[i]["rx_packets"] - vlan[i]["rx_packets"]
        assert sent >= 2 * PINGS and received >= 2 * PINGS, (hosts[i].name, sent, received)


def test_the_overlay_survives_a_failover_of_the_bond(bonded):
    """a's active link loses its carrier under a ping every 20 ms over the overlay: the bond moves
    to the other link, at most 1 s of pings goes unanswered, and the BGP session holds."""
    hosts, nodes = bonded
    a = hosts[0]
    start = time.monotonic()
    before = active_slave(a)
    port = "v-a" if before == "eth0" else "v1-a"  # the underlay end of a's active link
    ping = a.popen("ping", "-n", "-i", str(FAILOVER_PING_S), "-w", str(FAILOVER_RUN_S), overlay_ip(1),
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(2)  # answered pings before the cut
    run("ip", "-n", a.lab.underlay, "link", "set", port, "down")
    try:
        wait_for(lambda: active_slave(a) not in ("", before), timeout=10,
                 what="a's bond to fail over to its other link")
        out = ping.communicate(timeout=FAILOVER_RUN_S + 60)[0]
        for i, host in enumerate(hosts):
            pings(host, overlay_ip(1 - i), PINGS)
    finally:
        run("ip", "-n", a.lab.underlay, "link", "set", port, "up")
    took = time.monotonic() - start
    sent, _ = ping_counts(out)
    answered = sorted({int(seq) for seq in re.findall(r"icmp_seq=(\d+)", out)})
    assert answered, out[-2000:]
    # the longest run of unanswered pings (icmp_seq counts from 1), the last ones in flight at the end aside
    runs = [answered[0] - 1] + [later - earlier - 1 for earlier, later in itertools.pairwise(answered)]
    outage_s = max(runs) * FAILOVER_PING_S
    note(f"bond failover under a {FAILOVER_PING_S * 1000:.0f} ms ping over the overlay: {sent} sent, "
         f"{len(answered)} answered, the longest outage {outage_s * 1000:.0f} ms "
         f"({active_slave(a)} active after it, was {before})")
    assert outage_s <= 1.0, f"{outage_s:.2f} s without replies over the failover"
    flapped = [p for p in sessions(nodes) if p[2] != "Established" or (p[3] or 0) < took]
    assert not flapped, f"sessions that went down over the failover: {flapped}"
