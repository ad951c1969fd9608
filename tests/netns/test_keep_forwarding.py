"""A restart of overlayd with a kernel backend that loses no packet (issue 13, item 6).

Three nodes with `routing.backend: kernel`, an iBGP full mesh with graceful
restart (`bgp.graceful_restart`) and `node.on_stop: keep`, a pod per node made
by the CNI plugins (the topology of test_backends.py). A pod on node1 pings the
pod on node2 every 10 ms while node2's overlayd is stopped (SIGTERM, or
SIGKILL) and started again:

- the stop leaves node2's kernel VXLAN device, routes and neighbour entries
  forwarding, and resets its sessions without a NOTIFICATION, so node1 keeps
  node2's routes as stale (its kernel routes stay);
- the new run adopts what the kernel holds, sets the F bit in its OPENs (the
  kernel kept forwarding), and node1 keeps the stale routes until node2's
  End-of-RIB, then they are fresh again;
- not one ping is lost, and the tables end equal to the RIB.
"""

from __future__ import annotations

import signal
import subprocess
import time
from typing import Any

import pytest

from tests.netns.cni import CniPods, require_cni
from tests.netns.test_backends import DEVICE, PROTO, Cluster, add_underlay, tables_match
from tests.support import require_netns, require_programs
from tools.lab import Lab, wait_for
from tools.nodes import wait_showing_logs

pytestmark = pytest.mark.root

PINGS = 800  # 8 s at 10 ms


class KeepCluster(Cluster):
    def config(self, i: int) -> dict[str, Any]:
        config = super().config(i)
        config["node"]["on_stop"] = "keep"
        config["bgp"]["graceful_restart"] = {"restart_time_s": 30}
        return config


@pytest.fixture(scope="module")
def cluster():
    require_netns()
    require_cni()
    require_programs("ping", "ethtool", "bridge")
    with Lab() as lab:
        c = KeepCluster("keep", lab, ("kernel",) * 3, False, False, False, *add_underlay(lab, False))
        pods = CniPods(lab)
        try:
            c.start_all(pods)
            yield c
        finally:
            pods.close()
            for node in c.nodes:
                if node.proc.poll() is None:
                    node.proc.send_signal(signal.SIGTERM)
            for node in c.nodes:
                node.proc.wait(timeout=15)


def peer_row(cluster: Cluster, i: int, address: str) -> dict[str, Any]:
    return next(p for p in cluster.nodes[i].ctl("peers") if p["neighbor"] == address)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_restart_with_on_stop_keep_loses_no_packet(cluster: Cluster, sig: int):
    src, dst = cluster.pods[0], cluster.pods[1]
    b, b_host = cluster.nodes[1], cluster.hosts[1]
    restarts_before = peer_row(cluster, 0, cluster.vtep(1))["graceful_restarts"]
    ping = src.host.popen("ping", "-n", "-q", "-c", str(PINGS), "-i", "0.01", "-W", "1", dst.v4,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1)
    code = b.stop(sig)
    assert code == (0 if sig == signal.SIGTERM else -signal.SIGKILL), b.log()
    if sig == signal.SIGTERM:
        assert "left forwarding (node.on_stop: keep)" in b.log(), b.log()
    assert b_host.json_ip("link", "show", "dev", DEVICE), "the kernel VXLAN device stays"
    assert b_host.json_ip("route", "show", "proto", str(PROTO)), "its routes stay"
    stale = wait_for(lambda: peer_row(cluster, 0, cluster.vtep(1))["stale_routes"], timeout=3,
                     what="node1 to keep node2's routes as stale")
    down = time.monotonic()
    time.sleep(1)
    node = cluster.start(1)
    node.wait_ready()
    up = time.monotonic()
    wait_showing_logs(lambda: tables_match(cluster, 1) and tables_match(cluster, 0),
                      "node1's and node2's tables to equal the RIB", node, timeout=15)
    wait_for(lambda: peer_row(cluster, 0, cluster.vtep(1))["stale_routes"] == 0, timeout=10,
             what="node2's End-of-RIB to make its routes fresh on node1")
    out, _ = ping.communicate(timeout=30)
    log = node.log()
    assert "graceful restart F bit set" in log, log
    row = peer_row(cluster, 0, cluster.vtep(1))
    assert row["graceful_restarts"] == restarts_before + 1 and row["stale_removed"] == 0, row
    summary = next(line for line in out.splitlines() if "transmitted" in line)
    print(f"\n{signal.Signals(sig).name} + restart of node2 (on_stop keep, GR): node2 away "
          f"{up - down + 1:.1f} s, {stale} routes stale on node1; pod ping every 10 ms: {summary}")
    assert f"{PINGS} packets transmitted, {PINGS} received" in summary, out
