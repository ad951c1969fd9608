"""A degraded underlay with netem (issue 13, item 4): delay 50ms 10ms, loss 5%, reorder 25%.

The host's kernel has no netem (the host part, loss alone, is
tests/netns/test_soak.py); Debian's has. Two nodes a and b in iBGP (hold time
9 s: the emulated guest is slow), network blue with a TAP each. Once they
have converged, netem goes on both hosts' underlay links (so each direction
is delayed, jittered, reordered and loses 5%), and a pings b over the
underlay and over the overlay side by side, 50 a second each, for 15 s
(`make soak`, OVERLAYD_SOAK=full: 5 minutes). Zero BGP flaps (both
sessions' uptime covers the run) and overlay ping loss within underlay ping
loss + 1 point (with the binomial margin of tests/soak.py).
"""

from __future__ import annotations

import time

import pytest

from tests.netns.topology import add_underlay_host, bgp_node_config, overlay_ip
from tests.soak import check_ping_loss, ping_side_by_side, size
from tests.support import require_netns
from tests.vm.guest.guest import query, start_nodes, stop_nodes
from tests.vm.report import note
from tools.lab import Lab, wait_for

NETEM = ("delay", "50ms", "10ms", "loss", "5%", "reorder", "25%")
DURATION_S = size(15, 300)
INTERVAL_S = 0.02
HOLD_S = 9


@pytest.fixture(scope="module")
def pair():
    require_netns()
    with Lab() as lab:
        hosts = [add_underlay_host(lab, name, i + 1, 4) for i, name in enumerate("ab")]
        nodes = start_nodes([(h, bgp_node_config(i, 4, count=2, hold_time=HOLD_S)) for i, h in enumerate(hosts)])
        wait_for(lambda: all(len(query(n, "status")["networks"][0]["flood_list"]) == 1 for n in nodes),
                 timeout=120, what="the session up and the flood lists built")
        yield hosts, nodes
        codes = stop_nodes(nodes)
        assert set(codes.values()) == {0}, f"overlayd exit codes {codes}"


def test_netem_underlay_no_flaps_and_overlay_loss_within_underlay_loss(pair):
    (a, b), nodes = pair
    wait_for(lambda: a.ping(overlay_ip(1), timeout=5), timeout=60, what="a to ping b over the overlay")
    for host in (a, b):
        host.run("tc", "qdisc", "add", "dev", "eth0", "root", "netem", *NETEM)
    start = time.monotonic()
    try:
        underlay, overlay = ping_side_by_side(a, [b.v4, overlay_ip(1)], INTERVAL_S, DURATION_S, reply_wait_s=2)
    finally:
        for host in (a, b):
            host.run("tc", "qdisc", "del", "dev", "eth0", "root", check=False)
    took = time.monotonic() - start
    line = check_ping_loss(underlay, overlay, f"netem {' '.join(NETEM)} each way, {took:.0f} s")
    note(line)
    peers = [(n.host.name, p["neighbor"], p["state"], p["uptime_s"]) for n in nodes for p in query(n, "peers")]
    note("BGP sessions after it: " + ", ".join(f"{h}->{nb} {s} up {u} s" for h, nb, s, u in peers))
    flapped = [p for p in peers if p[2] != "Established" or (p[3] or 0) < took]
    assert not flapped, f"sessions that went down under netem: {flapped}"
