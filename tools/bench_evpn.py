"""The EVPN part of `make bench` (tools/bench.py): overlayd's daemon and GoBGP over real TCP sessions.

One lab for all runs (needs root and gobgpd):

    n1: overlayd 10.0.0.1, network blue (VNI 100, route target 65000:100), neighbor g
    s:  tools.evpn_load announce 10.0.0.3: a synthetic iBGP speaker, neighbor g
    g:  gobgpd 10.0.0.9, AS 65000; s is a route-reflector client; n1's routes
        stay in its Adj-RIB-In (`Neighbor.adj_in_only`)

First s gives gobgpd `routes_in` MAC-only type-2 routes from 100 VTEPs
(10.1.0.1 ...), and the bench waits until gobgpd's RIB holds them all. That
time is gobgpd's own, reported as `gobgpd_load_s` and not counted. GoBGP
3.10 needs O(N^2) time for it (tools/gobgp.py says why): 20k routes take
30 to 75 s here, 35k three minutes, and the rate keeps falling, so
`routes_in` is 20k by default rather than the 100k of the outbound
direction. (`gobgp mrt inject`, the other fast way in, takes IPv4 and IPv6
unicast records only.) Then, each run:

    in   overlayd starts; from its session with g reaching Established until
         `peers` says it holds all routes_in routes from g (RIB and FDB are
         updated together; `status` confirms the FDB afterwards):
         routes_in / that time. Polled every POLL_S through the status socket;
         the elapsed time is the row's `uptime_s` (0.1 s resolution).
    out  tools.evpn_load macs writes routes_out frames with distinct source
         MACs into blue0 (its txqueuelen raised so the kernel drops none);
         overlayd learns each MAC and originates a type-2 route (the network's
         MAC and flood limits raised for it: RAISED_LIMITS). From the
         first frame until gobgpd's Adj-RIB-In for n1 has grown by routes_out
         (`gobgp neighbor -j`, polled every POLL_S): routes_out / that time.
         gobgpd parses every route but does not put it in its RIB, so this
         measures overlayd, not GoBGP's quadratic RIB.

and overlayd stops (its routes leave gobgpd with the session).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from overlayd.status.client import request
from tools.gobgp import Neighbor, start_gobgpd
from tools.lab import Lab
from tools.nodes import start_overlayd, wait_showing_logs

ROOT = Path(__file__).resolve().parents[1]
ASN = 65000
VNI = 100
RT = "65000:100"
NODE, SENDER, GOBGP = "10.0.0.1", "10.0.0.3", "10.0.0.9"
HOLD_TIME = 30  # an overlayd busy with 100k routes must not miss a keepalive
SENDER_VTEPS = 100
POLL_S = 0.1
LOAD_TIMEOUT_S = 900.0
RUN_TIMEOUT_S = 600.0


@dataclass
class Program:
    """A tools.evpn_load process in a lab host (anything with .host and .log() for
    wait_showing_logs)."""

    host: Any
    proc: subprocess.Popen

    def log(self) -> str:
        return self.host.log(self.proc)

    def check_running(self, done_ok: bool = False) -> None:
        code = self.proc.poll()
        if code is not None and not (done_ok and code == 0):
            raise RuntimeError(f"{' '.join(self.proc.args[4:7])} exited {code}:\n{self.log()}")

    def report(self) -> dict[str, Any]:
        """Its JSON line on stdout (the log holds stdout and stderr)."""
        return next(json.loads(line) for line in self.log().splitlines() if line.startswith("{"))


def node_config() -> dict[str, Any]:
    return {
        "node": {"vtep": NODE, "vxlan_port": 4789},
        "bgp": {"asn": ASN, "hold_time": HOLD_TIME, "connect_retry": 1,
                "neighbors": [{"address": GOBGP, "asn": ASN, "max_prefixes": RAISED_MAX_PREFIXES}]},
        "networks": [{"name": "blue", "vni": VNI, "device": "blue0", "mtu": 1450,
                      "address": "192.168.100.1/24", "route_target": RT, **RAISED_LIMITS}],
    }


# `out` learns 100k MACs from one TAP as fast as they come: far beyond a network's default
# limits (8192 local MACs, 1000 new a second, 2000 floods a second; README "Limits and
# security"), which this bench raises so that it measures what it did before them.
RAISED_LIMITS = {"max_local_macs": 1 << 20, "mac_learn_rate_per_s": 1e9, "mac_learn_burst": 1 << 30,
                 "flood_rate_pps": 1e9, "flood_burst": 1 << 30}
RAISED_MAX_PREFIXES = 1 << 24  # `in` may be asked for more routes than the default 200,000


def load_gobgpd(sender: Any, gobgp: Any, routes: int) -> float:
    """Start the synthetic speaker; seconds from its session's Established until gobgpd's RIB
    holds all `routes`."""
    load = Program(sender, sender.popen(
        sys.executable, "-m", "tools.evpn_load", "announce", "--peer", GOBGP, "--local", SENDER,
        "--asn", str(ASN), "--routes", str(routes), "--vni", str(VNI), "--rt", RT,
        "--vteps", str(SENDER_VTEPS), "--hold-time", str(HOLD_TIME), cwd=str(ROOT)))

    def loaded() -> float | None:
        load.check_running()
        out = gobgp.cli("global", "rib", "summary", "-a", "evpn").stdout
        return time.monotonic() if f"Path: {routes}" in out else None

    done = wait_showing_logs(loaded, f"{routes} routes in gobgpd's RIB", load, gobgp,
                             timeout=LOAD_TIMEOUT_S, interval=POLL_S)
    return done - load.report()["established"]


def ingest_s(node: Any, gobgp: Any, routes: int) -> float:
    """Seconds from Established with gobgpd until overlayd holds `routes` routes from it."""

    def holding() -> float | None:
        [row] = request(node.socket, "peers")
        if row["state"] == "Established" and row["routes_received"] >= routes:
            return row["uptime_s"]
        return None

    elapsed = wait_showing_logs(holding, f"overlayd to hold {routes} routes from gobgpd", node, gobgp,
                                timeout=RUN_TIMEOUT_S, interval=POLL_S)
    fdb = request(node.socket, "status")["fdb_entries"]
    if fdb < routes:
        raise RuntimeError(f"overlayd holds {routes} routes but only {fdb} FDB entries")
    return elapsed


def originate_s(n1: Any, node: Any, gobgp: Any, routes: int) -> float:
    """Seconds from the first of `routes` frames with new source MACs until gobgpd has
    received a type-2 route for each."""
    n1.ip("link", "set", "blue0", "txqueuelen", str(routes + 1000))
    before = gobgp.adj_in_count(NODE) or 0
    frames = Program(n1, n1.popen(sys.executable, "-m", "tools.evpn_load", "macs", "--dev", "blue0",
                                  "--count", str(routes), cwd=str(ROOT)))

    def received() -> float | None:
        frames.check_running(done_ok=True)
        return time.monotonic() if (gobgp.adj_in_count(NODE) or 0) >= before + routes else None

    done = wait_showing_logs(received, f"gobgpd to receive {routes} routes from overlayd", node, gobgp,
                             frames, timeout=RUN_TIMEOUT_S, interval=POLL_S)
    frames.proc.wait(timeout=30)
    return done - frames.report()["first_frame"]


def run(routes_in: int, routes_out: int, runs: int, log: Callable[[str], None]) -> dict[str, dict]:
    """{metric: {"runs": [...], facts}} for evpn_routes_in_per_s and evpn_routes_out_per_s."""
    ins: list[float] = []
    outs: list[float] = []
    with Lab() as lab:
        n1 = lab.add_host("n1", v4=f"{NODE}/24")
        sender = lab.add_host("s", v4=f"{SENDER}/24")
        g = lab.add_host("g", v4=f"{GOBGP}/24")
        gobgp = start_gobgpd(g, ASN, [Neighbor(NODE, ASN, adj_in_only=True),
                                      Neighbor(SENDER, ASN, rr_client=True)],
                             hold_time=HOLD_TIME, log_level="info")
        load = load_gobgpd(sender, gobgp, routes_in)
        log(f"  gobgpd learned {routes_in} routes in {load:.1f} s (not counted)")
        for i in range(runs):
            node = start_overlayd(n1, node_config(), log_level="info")
            t_in = ingest_s(node, gobgp, routes_in)
            t_out = originate_s(n1, node, gobgp, routes_out)
            ins.append(round(routes_in / t_in))
            outs.append(round(routes_out / t_out))
            log(f"  run {i + 1}/{runs}: in {routes_in} routes in {t_in:.2f} s, "
                f"out {routes_out} routes in {t_out:.2f} s")
            code = node.stop(timeout=30)
            if code != 0:
                raise RuntimeError(f"overlayd exited {code}:\n{node.log()[-4000:]}")
        gobgp.stop()
    return {
        "evpn_routes_in_per_s": {"runs": ins, "routes": routes_in, "gobgpd_load_s": round(load, 2)},
        "evpn_routes_out_per_s": {"runs": outs, "routes": routes_out},
    }
