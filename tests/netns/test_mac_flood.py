"""A pod sending frames from random source MACs, in a three-node BGP EVPN mesh (issue 13, item 12).

Node a's TAP gets MAC_FRAMES broadcasts, each from a new random MAC
(tools/evpn_load.py `macs --random`). Node a learns at most its cap of local
MACs, at its learning rate, and announces only those: the FDB of a, and the
type-2 routes b and c hold from a, stay at the cap. Every entry that was
there before (the three TAP MACs, here and there) survives, the overlay
still pings, and every daemon's RSS stays bounded (printed before and after).

The CI version pushes 100,000 MACs at a cap of CAP (so that the rate of
1000/s reaches it within a second); `make soak` (OVERLAYD_SOAK=1) pushes
1,000,000 at the default cap, 8192. Both at RATE_PPS, which the daemon
keeps up with: what overflows the TAP's queue is lost before overlayd sees
it (printed).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from tests.netns.topology import NAMES, BgpOverlay, add_underlay_host, bgp_node_config, overlay_ip
from tests.support import require_netns
from tools.lab import Lab, wait_for
from tools.nodes import start_overlayd

pytestmark = [pytest.mark.root, pytest.mark.soak]

SOAK = os.environ.get("OVERLAYD_SOAK", "") not in ("", "0")
MAC_FRAMES = 1_000_000 if SOAK else 100_000
CAP = None if SOAK else 1500  # None: the default (8192)
RATE_PPS = 20_000  # what one daemon reads on a loaded 2-core machine; faster overflows the TAP's queue
RSS_GROWTH_MB = 40  # the uncapped daemon grew 75 MB for 32,000 MACs (issue 13)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


@pytest.fixture(scope="module")
def mesh():
    require_netns()
    with Lab() as lab:
        hosts = [add_underlay_host(lab, name, i + 1, 4) for i, name in enumerate(NAMES)]
        configs = [bgp_node_config(i, 4) for i in range(3)]
        if CAP is not None:
            configs[0]["networks"][0]["max_local_macs"] = CAP
        nodes = [start_overlayd(h, c, wait=False, log_level="info") for h, c in zip(hosts, configs)]
        for node in nodes:
            node.wait_ready()
        overlay = BgpOverlay(lab, 4, hosts, nodes)
        overlay.macs = [overlay.query(i, "status")["networks"][0]["mac"] for i in range(3)]
        yield overlay
        for node in nodes:
            node.proc.send_signal(signal.SIGTERM)
        codes = {node.host.name: node.proc.wait(timeout=10) for node in nodes}
        assert set(codes.values()) == {0}, f"overlayd exit codes {codes}"


def settled(read, what: str, quiet_s: float = 1.0, timeout: float = 120.0):
    """Wait until `read()` stops changing for `quiet_s`; its last value."""
    last = [read(), time.monotonic()]

    def still() -> bool:
        now_value = read()
        if now_value != last[0]:
            last[:] = [now_value, time.monotonic()]
        return time.monotonic() - last[1] >= quiet_s

    wait_for(still, timeout, interval=0.2, what=what)
    return last[0]


def from_a(overlay: BgpOverlay, i: int) -> set[str]:
    """The MACs node i's FDB places at node a (for a itself: its local ones)."""
    where = "local" if i == 0 else overlay.vtep(0)
    return {r["mac"] for r in overlay.query(i, "fdb") if r["where"] == where}


def test_random_source_macs_leave_every_fdb_at_the_cap_and_memory_bounded(mesh: BgpOverlay):
    mesh.converge()
    a = mesh.nodes[0]
    limits = mesh.query(0, "status")["networks"][0]["limits"]
    cap = limits["max_local_macs"]
    before_fdb = [{(r["mac"], r["where"]) for r in mesh.query(i, "fdb")} for i in range(3)]
    rss_before = [rss_mb(n.proc.pid) for n in mesh.nodes]
    counters = a.counters()
    a.host.ip("link", "set", "dev", "blue0", "txqueuelen", "10000")
    out = a.host.run(sys.executable, "-m", "tools.evpn_load", "macs", "--dev", "blue0", "--count",
                     str(MAC_FRAMES), "--random", "13", "--rate", str(RATE_PPS), timeout=600).stdout
    settled(lambda: a.counters()["tx_frames"], what="node a to read what its TAP queued")
    dropped = int(a.host.run("cat", "/sys/class/net/blue0/statistics/tx_dropped").stdout)  # the TAP's queue
    # what a learned reaches b and c as type-2 routes: wait until they hold all of it
    wait_for(lambda: all(len(from_a(mesh, i)) == len(from_a(mesh, 0)) for i in (1, 2)), timeout=60,
             what="b and c to hold every MAC a announced")
    moved = {k: v - counters[k] for k, v in a.counters().items() if v != counters[k]}
    fdb_sizes = [len(mesh.query(i, "fdb")) for i in range(3)]
    at_a = [len(from_a(mesh, i)) for i in range(3)]
    rss_after = [rss_mb(n.proc.pid) for n in mesh.nodes]
    print(f"\n{MAC_FRAMES} frames from random source MACs into a's TAP ({out.strip()}): "
          f"{moved['tx_frames']} read by overlayd, {dropped} dropped by the TAP's full queue"
          f"\ncap {cap} local MACs, learning {limits['mac_learn_rate_per_s']:g}/s burst {limits['mac_learn_burst']:g}:"
          f" refused {moved.get('learn_refused_fdb_full', 0)} (cap) + {moved.get('learn_refused_rate', 0)} (rate);"
          f" floods dropped by the rate: {moved.get('tx_drop_flood_rate', 0)}"
          f"\nMACs at a: {at_a[0]} on a, {at_a[1]} on b, {at_a[2]} on c; FDB sizes a/b/c: {fdb_sizes}"
          f"\nRSS MB before -> after: " + ", ".join(f"{n} {x:.1f} -> {y:.1f}" for n, x, y in
                                                    zip(NAMES, rss_before, rss_after)))
    assert moved["tx_frames"] >= 0.9 * MAC_FRAMES
    assert at_a == [cap, cap, cap]
    assert mesh.query(0, "status")["networks"][0]["limits"]["local_macs"] == cap
    assert moved["learn_refused_fdb_full"] > 0 and moved["learn_refused_rate"] > 0
    for i in range(3):  # what was there stayed
        assert before_fdb[i] <= {(r["mac"], r["where"]) for r in mesh.query(i, "fdb")}
        assert rss_after[i] - rss_before[i] < RSS_GROWTH_MB, (NAMES[i], rss_before[i], rss_after[i])
    for i in range(3):
        for j in mesh.others(i):
            assert mesh.hosts[i].ping(overlay_ip(j)), f"{NAMES[i]} -> {NAMES[j]} after the flood"
