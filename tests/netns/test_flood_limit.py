"""A broadcast storm from one pod leaves another pod's unicast traffic lossless (issue 13, item 13).

Three nodes with static flood lists (IPv4 underlay). On node a, blue0 is a
port of a bridge with two pods: p1 storms (STORM_PPS broadcasts a second,
tests/netns/storm.py), p2 pings node b's TAP address the whole time. Node a
floods at most its `flood_rate_pps` (the default, 2000) of the storm and
drops the rest (`tx_drop_flood_rate`); p2's unicast path never waits behind
it: no ping is lost. The figures are printed.
"""

from __future__ import annotations

import re
import sys

import pytest

from tests.netns import storm
from tests.netns.topology import DEVICE, NAMES, add_underlay_host, node_config, overlay_ip
from tests.support import require_netns
from tools.lab import Lab
from tools.nodes import start_overlayd

pytestmark = pytest.mark.root

STORM_PPS = 10_000
STORM_S = 8
PINGS = 500  # every 10 ms: 5 s, inside the storm
POD_MTU = 1450  # the TAP's: a 1500-byte underlay less VXLAN's 50


@pytest.fixture
def nodes():
    require_netns()
    with Lab() as lab:
        hosts = [add_underlay_host(lab, name, i + 1, 4) for i, name in enumerate(NAMES)]
        configs = [node_config(i, 4) for i in range(3)]
        del configs[0]["networks"][0]["address"]  # a's TAP is a bridge port: the pods carry the addresses
        daemons = [start_overlayd(h, c, wait=False, log_level="info") for h, c in zip(hosts, configs)]
        for d in daemons:
            d.wait_ready()
        a = hosts[0]
        a.ip("link", "add", "brblue", "mtu", str(POD_MTU), "type", "bridge")
        a.ip("link", "set", DEVICE, "master", "brblue")
        a.ip("link", "set", "brblue", "up")
        pods = [lab.add_pod(a, name, "brblue", v4=f"192.168.100.{11 + k}/24", mtu=POD_MTU)
                for k, name in enumerate(("p1", "p2"))]
        yield daemons, hosts, pods
        codes = {d.host.name: d.stop() for d in daemons}
        assert set(codes.values()) == {0}, f"overlayd exit codes {codes}"


def test_a_broadcast_storm_leaves_another_pods_unicast_lossless(nodes):
    daemons, _, (stormer, pinger) = nodes
    target = overlay_ip(1)
    assert pinger.ping(target, count=3), "no unicast path before the storm"
    before = [d.counters() for d in daemons]
    flood = daemons[0].ctl("status")["networks"][0]["limits"]
    proc = stormer.popen(sys.executable, storm.__file__, "eth0", str(STORM_PPS), str(STORM_S))
    try:
        pinger.run("sleep", "1")  # the storm under way
        out = pinger.run("ping", "-4", "-q", "-n", "-c", str(PINGS), "-i", "0.01", "-W", "1", target,
                         check=False, timeout=60).stdout
    finally:
        proc.wait(timeout=STORM_S + 30)
    sent = stormer.log(proc).strip().splitlines()[-1]
    moved = [{k: v - b[k] for k, v in d.counters().items() if v != b[k]} for b, d in zip(before, daemons)]
    received = int(re.search(r"(\d+) received", out).group(1))
    rtt = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)", out)
    loss = 100 * (PINGS - received) / PINGS
    print(f"\nstorm from pod p1 on a: {sent}; a's flood limit {flood['flood_rate_pps']:g} pps burst "
          f"{flood['flood_burst']:g}: flooded {moved[0].get('tx_flood_frames', 0)}, dropped "
          f"{moved[0].get('tx_drop_flood_rate', 0)}; b and c wrote {moved[1].get('rx_frames', 0)} and "
          f"{moved[2].get('rx_frames', 0)} frames to their TAPs"
          f"\npod p2 -> {target} during it: {PINGS} pings, {received} answered, loss {loss:g}%, rtt "
          f"min/avg/max {rtt.group(1)}/{rtt.group(2)}/{rtt.group(3)} ms" if rtt else out)
    assert received == PINGS, out
    assert moved[0]["tx_drop_flood_rate"] > 0
    # what a flooded is the limit's worth over the storm, and no more (the burst on top)
    assert moved[0]["tx_flood_frames"] <= flood["flood_burst"] + flood["flood_rate_pps"] * (STORM_S + 1) + 2 * PINGS
