"""`make bench`: overlayd against the Linux kernel's VXLAN, same topology, same run.

    .venv/bin/python tools/bench.py                 # 5 interleaved pairs of everything; tables, JSON, MD, PNG
    .venv/bin/python tools/bench.py --quick         # a short smoke run (1 pair, short tests)
    .venv/bin/python tools/bench.py --runs 7 --seconds 10 --pings 1000
    .venv/bin/python tools/bench.py --only data     # or: routed, table, control, programming, services
    .venv/bin/python tools/bench.py --only data,routed,table --routed-modes vxlan-by-hand,userspace
    .venv/bin/python tools/bench.py --only control --evpn-routes 50000 --evpn-in-routes 10000
    .venv/bin/python tools/bench.py --variants none,all     # overlayd twice: fast paths off / on
    OVERLAYD_OFFLOAD=none .venv/bin/python tools/bench.py   # overlayd with every fast path off

Two labs (tools.lab) live side by side for the whole run, each with hosts
a (underlay 10.0.0.1) and b (10.0.0.2) on a 1500-byte underlay and the
overlay 192.168.100.0/24 at MTU 1450 on top:

    kernel    both ends the kernel's VXLAN device bridged into br100, as in the
              interop tests (VNI 100, port 4789, nolearning, all-zeros FDB
              entry to the other end)
    overlayd  both ends overlayd, TAP blue0, static flood list naming the other

Every measurement is taken for both, back to back, `--runs` times; the
report gives medians and overlayd/kernel ratios (medians of per-pair
ratios, with their spread). `--variants A,B` runs one
overlayd pair per OVERLAYD_OFFLOAD value instead (each its own lab, "+"
separating offloads within one: `none,tso+gso,all`), so techniques are
compared within one run on this shared machine:

    tcp_a_to_b_gbit_s, tcp_b_to_a_gbit_s   one iperf3 TCP stream each way
    udp64_pps                               iperf3 -u -l 64 -b 0, packets/s the receiver got
    ping_p50_us, ping_p99_us                RTT over --pings pings, --ping-interval apart
    cpu_s_per_gb                            overlayd only: CPU seconds (utime + stime of
                                            both daemons) per GB the TCP tests moved

Control-plane numbers (`--only control`), each a median over `--runs`:

    fdb_bytes_per_100k            bytes of FDB per 100k entries (tracemalloc), in this process
    sim_converge_100_nodes_s      wall time of the in-process L2 simulator (overlayd.sim.mesh) until
                                  every node learned every host's gratuitous ARP (--sim-nodes)
    sim_bgp_converge_100_nodes_s  wall time of the BGP simulator (overlayd.sim.bgp): --sim-nodes
                                  real Speakers, clients of one route reflector (overlayd.sim.reflector),
                                  from building them until every node has every other node's
                                  host (type-2) and flood list entry (type-3)
    evpn_routes_in_per_s          type-2 routes/s the overlayd daemon takes in from gobgpd over a
                                  real session (--evpn-in-routes, default 20k)
    evpn_routes_out_per_s         type-2 routes/s from overlayd learning new local MACs on its TAP
                                  until gobgpd has received a route for each (--evpn-routes,
                                  default 100k)

The two EVPN numbers need root and gobgpd (skipped otherwise); how they are
taken, and why GoBGP 3.10 limits the inbound count, is in tools/bench_evpn.py.

The kernel backends (`--only backends`, and in `all`; tools/bench_backends.py):
pod to pod on the routed path, each backend against the same thing done by
hand (kernel / a hand-made kernel VXLAN, host-gw / hand-made static routes,
userspace beside them), and the programming rate: --backend-macs type-2 and
--backend-subnets type-5 routes from a synthetic speaker into the kernel,
and their withdrawal. Services (`--only services`; tools/bench_services.py):
one TCP stream through a VIP against the pod's own address, on the
userspace path and as the kernel backend's nftables rules, and new TCP
connections per second through the userspace VIP against a hand-written
nftables DNAT on the same path.
To add a benchmark, add a function to CONTROL_BENCHES.

The FDB-size part (`--only table`; tools/bench_switch.py `table_size`):
Switch.from_tap's 64-byte known-unicast frames/s with 100,000 FDB entries
against 10, in-process, interleaved rounds.

How the numbers are taken and read (tools/bench_report.py). The run
starts by naming the machine (CPU model, cores, kernel, load average; the
load average again at the end). Each measurement is a pair: the overlayd
side and its kernel reference measured back to back, the order alternating
from pair to pair (A B, B A, ...), so both see the same noise on a shared
machine. A ratio is the median of its `--runs` pairs' ratios (default 5)
with their min-max; one whose spread (max - min) is wider than 30% of its
median is flagged `noisy`, one with fewer than 5 pairs `few pairs`:
printed, not a result.

Results go to bench-results/bench-<time>.json and .md (the ratio table,
with the previous run's medians beside it when a previous JSON is there),
and .png (throughput and RTT, kernel vs each overlayd variant) when
matplotlib is importable (`pip install -e '.[bench]'`; `make bench`
installs it). The machine is shared: read ratios, not absolute numbers.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import gc
import json
import os
import platform
import re
import signal
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tools import bench_report  # noqa: E402
from tools.bench_plot import chart_series, have_matplotlib, render_chart  # noqa: E402,F401
from tools.bench_report import pair_ratios, spread  # noqa: E402

VNI = 100
PORT = 4789
MTU = 1450  # underlay 1500 - 50
IPERF_PORT = 5201
ZERO_MAC = "00:00:00:00:00:00"
MODES = ("kernel", "overlayd")
# What `--only` picks from; `backends` is routed + programming, `all` every part.
PARTS = {
    "data": "L2 segment, overlayd vs kernel VXLAN (root)",
    "routed": "pod to pod on the routed path, tools.bench_backends (root)",
    "table": "Switch 64 B frames/s, 100k vs 10 FDB entries, tools.bench_switch",
    "control": "FDB memory, simulators, EVPN with GoBGP",
    "programming": "kernel backend programming rate (root)",
    "services": "through a VIP, tools.bench_services (root)",
}
ROUTED_DEFAULT = ("vxlan-by-hand", "kernel", "routes-by-hand", "host-gw", "userspace")  # bench_backends.ROUTED_MODES
ROOT_PARTS = ("data", "routed", "programming", "services")


@dataclass(frozen=True)
class Metric:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    digits: int = 2


DATA_METRICS = (
    Metric("tcp_a_to_b_gbit_s", "TCP 1 stream a->b", "Gbit/s", True),
    Metric("tcp_b_to_a_gbit_s", "TCP 1 stream b->a", "Gbit/s", True),
    Metric("udp64_pps", "UDP 64 B delivered", "pkt/s", True, 0),
    Metric("ping_p50_us", "ping RTT p50", "us", False, 0),
    Metric("ping_p99_us", "ping RTT p99", "us", False, 0),
    Metric("cpu_s_per_gb", "overlayd CPU per GB (TCP)", "s/GB", False),
)
CONTROL_METRICS = (
    Metric("fdb_bytes_per_100k", "FDB memory per 100k entries", "MB", False),
    Metric("sim_converge_100_nodes_s", "simulator: 100 nodes converge", "s", False),
    Metric("sim_bgp_converge_100_nodes_s", "BGP simulator: 100 nodes + reflector converge", "s", False),
    Metric("evpn_routes_in_per_s", "EVPN type-2 routes/s in from GoBGP", "routes/s", True, 0),
    Metric("evpn_routes_out_per_s", "EVPN type-2 routes/s out to GoBGP", "routes/s", True, 0),
)


# -- the report: pure, unit-tested on canned numbers -----------------------------


def median(values: list[float | None]) -> float | None:
    got = [v for v in values if v is not None]
    return statistics.median(got) if got else None


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of values, nearest rank."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil
    return ordered[int(rank) - 1]


def summarize(runs: dict[str, dict[str, list[float | None]]]) -> dict[str, Any]:
    """{mode: {metric: [per-run values]}} -> medians per mode, and each overlayd mode's ratios to the kernel.

    Modes are "kernel", "overlayd", or "overlayd[VARIANT]" with --variants. Run i of every mode is
    one pair (measured back to back): a ratio is the median of the per-pair ratios, and `spreads`
    gives its min-max and noisy flag (tools.bench_report).
    """
    medians = {mode: {k: median(v) for k, v in metrics.items()} for mode, metrics in runs.items()}
    ratios: dict[str, dict[str, float | None]] = {}
    spreads: dict[str, dict[str, dict[str, Any]]] = {}
    kernel = runs.get("kernel", {})
    for mode in medians:
        if mode == "kernel":
            continue
        ratios[mode], spreads[mode] = {}, {}
        for m in DATA_METRICS:
            pairs = pair_ratios(runs[mode].get(m.key, []), kernel.get(m.key, []))
            ratios[mode][m.key] = None
            if pairs:
                spreads[mode][m.key] = spread(pairs)
                ratios[mode][m.key] = spreads[mode][m.key]["median"]
    return {"medians": medians, "ratios": ratios, "spreads": spreads}


def _fmt(value: float | None, digits: int) -> str:
    if value is None:
        return "-"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def render_table(results: dict[str, Any]) -> str:
    """The human table of a results dict (as written to JSON)."""
    medians = results["summary"]["medians"]
    ratios = results["summary"]["ratios"]
    runs = results.get("config", {}).get("runs", "?")
    others = [mode for mode in medians if mode != "kernel"] or ["overlayd"]
    head = [f"data plane (median of {runs})", "kernel", *others]
    head += [f"{mode}/kernel" for mode in others]
    rows = [tuple(head)]
    for m in DATA_METRICS:
        row = [f"{m.label} ({m.unit})", _fmt(medians.get("kernel", {}).get(m.key), m.digits)]
        row += [_fmt(medians.get(mode, {}).get(m.key), m.digits) for mode in others]
        for mode in others:
            r = ratios.get(mode, {}).get(m.key)
            row.append("-" if r is None else f"{r:.3f}")
        rows.append(tuple(row))
    blank = ("",) * len(head)
    control = results.get("control_plane", {})
    notes: list[str] = []
    if control:
        rows.append(blank)
        rows.append(("control plane", "", "overlayd") + ("",) * (len(head) - 3))
        for m in CONTROL_METRICS:
            entry = control.get(m.key, {})
            value = entry.get("value")
            if m.key == "fdb_bytes_per_100k" and value is not None:
                value = value / 1e6
            if value is None and entry.get("skipped"):
                notes.append(f"{m.label}: skipped ({entry['skipped']})")
            rows.append((f"{m.label} ({m.unit})", "", _fmt(value, m.digits)) + ("",) * (len(head) - 3))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = []
    for i, row in enumerate(rows):
        lines.append("  ".join(
            cell.ljust(widths[j]) if j == 0 else cell.rjust(widths[j]) for j, cell in enumerate(row)
        ).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    offloads = results.get("overlayd_offloads") or {}
    for mode, on in offloads.items():
        notes.append(f"{mode} offloads: " + (", ".join(k for k, v in on.items() if v is True) or "none"))
    if notes:
        lines.append("")
        lines.extend(notes)
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5,
                   help="interleaved pairs (each side measured back to back) of every measurement (default 5)")
    p.add_argument("--seconds", type=int, default=5, help="length of each iperf3 test (default 5)")
    p.add_argument("--pings", type=int, default=1000, help="pings per RTT measurement (default 1000)")
    p.add_argument("--ping-interval", type=float, default=0.002, help="seconds between pings")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 1 run, 2 s tests, 200 pings, 20-node simulators, "
                        "10k/5k EVPN routes")
    p.add_argument("--only", default="all",
                   help="comma-separated parts: " + ", ".join(f"{k} ({v})" for k, v in PARTS.items())
                        + "; all: every part (default)")
    p.add_argument("--routed-modes", default=",".join(ROUTED_DEFAULT),
                   help="modes of the routed part, from bench_backends.ROUTED_MODES (default: all; "
                        "vxlan-by-hand,userspace gives the routed row alone)")
    p.add_argument("--table-rounds", type=int, default=9,
                   help="interleaved rounds of the FDB-size bench (the table part; default 9)")
    p.add_argument("--backend-macs", type=int, default=10_000,
                   help="type-2 routes for the kernel programming rate (default 10000)")
    p.add_argument("--backend-subnets", type=int, default=1_000,
                   help="type-5 routes for the kernel programming rate (default 1000)")
    p.add_argument("--mode", choices=("both", *MODES), default="both",
                   help="measure only one side (ratios need both)")
    p.add_argument("--out", type=Path, default=ROOT / "bench-results", help="where JSON/PNG go")
    p.add_argument("--sim-nodes", type=int, default=100)
    p.add_argument("--evpn-routes", type=int, default=100_000,
                   help="type-2 routes overlayd originates towards GoBGP (default 100000)")
    p.add_argument("--evpn-in-routes", type=int, default=20_000,
                   help="type-2 routes GoBGP sends overlayd (default 20000: GoBGP 3.10 needs "
                        "quadratic time to learn them first)")
    p.add_argument("--variants", default="",
                   help="comma-separated OVERLAYD_OFFLOAD values, one overlayd pair each "
                        "('+' joins offloads: none,tso+gso,all)")
    args = p.parse_args(argv)
    if args.quick:
        args.runs, args.seconds, args.pings, args.sim_nodes = 1, 2, 200, 20
        args.evpn_routes, args.evpn_in_routes = 10_000, 5_000
    if args.runs < 1 or args.seconds < 1 or args.pings < 2:
        p.error("--runs, --seconds must be >= 1 and --pings >= 2")
    if args.evpn_routes < 1 or args.evpn_in_routes < 1:
        p.error("--evpn-routes and --evpn-in-routes must be >= 1")
    args.variant_list = [v.strip().replace("+", ",") for v in args.variants.split(",") if v.strip()]
    parts = {x.strip() for x in args.only.split(",") if x.strip()}
    unknown = parts - set(PARTS) - {"all", "backends"}
    if unknown or not parts:
        p.error(f"--only: unknown part(s) {', '.join(sorted(unknown)) or '(none given)'}; "
                f"known: {', '.join(PARTS)}, backends (routed + programming), all")
    args.parts = [k for k in PARTS if "all" in parts or k in parts
                  or (k in ("routed", "programming") and "backends" in parts)]
    args.routed_mode_list = tuple(m.strip() for m in args.routed_modes.split(",") if m.strip())
    if args.quick:
        args.table_rounds = min(args.table_rounds, 3)
    return args


# -- the data plane: two labs -------------------------------------------------------


@dataclass
class Pair:
    mode: str
    lab: Any
    a: Any
    b: Any
    daemons: list[Any] = field(default_factory=list)  # tools.nodes.Overlayd, overlayd mode only

    def pids(self) -> list[int]:
        return [d.proc.pid for d in self.daemons]


def _overlay_ip(i: int) -> str:
    return f"192.168.100.{i + 1}"


def build_kernel(lab: Any) -> Pair:
    hosts = [lab.add_host(n, v4=f"10.0.0.{i + 1}/24") for i, n in enumerate("ab")]
    for i, h in enumerate(hosts):
        other = hosts[1 - i]
        h.ip("link", "add", "vx100", "mtu", str(MTU), "type", "vxlan", "id", str(VNI),
             "local", h.v4, "dstport", str(PORT), "nolearning", "udpcsum")
        h.ip("link", "add", "br100", "mtu", str(MTU), "type", "bridge")
        h.ip("link", "set", "vx100", "master", "br100")
        h.run("bridge", "fdb", "append", ZERO_MAC, "dev", "vx100", "dst", other.v4)
        h.ip("addr", "add", f"{_overlay_ip(i)}/24", "dev", "br100")
        h.ip("link", "set", "vx100", "up")
        h.ip("link", "set", "br100", "up")
    return Pair("kernel", lab, *hosts)


def build_overlayd(lab: Any, offload: str | None = None, mode: str = "overlayd") -> Pair:
    from tools.nodes import start_overlayd

    hosts = [lab.add_host(n, v4=f"10.0.0.{i + 1}/24") for i, n in enumerate("ab")]
    daemons = []
    for i, h in enumerate(hosts):
        daemons.append(start_overlayd(h, {
            "node": {"vtep": h.v4, "vxlan_port": PORT},
            "networks": [{"name": "blue", "vni": VNI, "device": "blue0", "mtu": MTU,
                          "address": f"{_overlay_ip(i)}/24", "vteps": [hosts[1 - i].v4]}],
        }, wait=False, log_level="info",
            env={"OVERLAYD_OFFLOAD": offload} if offload is not None else None))
    for d in daemons:
        d.wait_ready()
    return Pair(mode, lab, *hosts, daemons=daemons)


def cpu_seconds(pids: list[int]) -> float:
    """utime + stime of the processes, in seconds."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rpartition(")")[2].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)
    return total / tick


@contextlib.contextmanager
def iperf3_server(host: Any, bind: str) -> Iterator[None]:
    from tools.lab import wait_for

    proc = host.popen("iperf3", "-s", "-B", bind, "-p", str(IPERF_PORT))

    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"iperf3 -s exited {proc.returncode}:\n{host.log(proc)}")
        return f"{bind}:{IPERF_PORT}" in host.run("ss", "-Hltn").stdout

    try:
        wait_for(listening, timeout=10, what="iperf3 server")
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)


def iperf3(host: Any, server: str, seconds: int, *args: str) -> dict[str, Any]:
    cmd = ["iperf3", "-c", server, "-p", str(IPERF_PORT), "-t", str(seconds), "--json",
           "--connect-timeout", "5000", *args]
    for attempt in range(4):
        done = host.run(*cmd, check=False, timeout=seconds + 40)
        try:
            result = json.loads(done.stdout)
        except json.JSONDecodeError:
            raise RuntimeError(f"{' '.join(cmd)}: no JSON\n{done.stdout}\n{done.stderr}") from None
        error = result.get("error")
        if error and attempt < 3:
            time.sleep(1)
            continue
        if error:
            raise RuntimeError(f"{' '.join(cmd)}: {error}")
        return result
    raise AssertionError("unreachable")


def measure_tcp(pair: Pair, reverse: bool, seconds: int) -> tuple[float, float | None]:
    """(Gbit/s received, overlayd CPU seconds per GB or None)."""
    pids = pair.pids()
    cpu0 = cpu_seconds(pids) if pids else 0.0
    result = iperf3(pair.a, _overlay_ip(1), seconds, *(["-R"] if reverse else []))
    cpu1 = cpu_seconds(pids) if pids else 0.0
    received = result["end"]["sum_received"]
    gbytes = received["bytes"] / 1e9
    return received["bits_per_second"] / 1e9, ((cpu1 - cpu0) / gbytes if pids and gbytes else None)


def measure_udp64(pair: Pair, seconds: int) -> float:
    result = iperf3(pair.a, _overlay_ip(1), seconds, "-u", "-l", "64", "-b", "0")
    end = result["end"]
    got = end.get("sum_received")
    if got and got.get("packets"):
        return (got["packets"] - got.get("lost_packets", 0)) / got["seconds"]
    s = end["sum"]
    return (s["packets"] - s["lost_packets"]) / s["seconds"]


_RTT = re.compile(r"time=([\d.]+) ms")


def measure_ping(pair: Pair, count: int, interval: float) -> tuple[float, float]:
    """(p50, p99) RTT in microseconds."""
    out = pair.a.run("ping", "-n", "-c", str(count), "-i", str(interval), "-W", "1",
                     _overlay_ip(1), check=False, timeout=count * (interval + 0.01) + 30).stdout
    rtts = [float(x) * 1000 for x in _RTT.findall(out)]
    if len(rtts) < count // 2:
        raise RuntimeError(f"ping: only {len(rtts)}/{count} replies\n{out[-2000:]}")
    return percentile(rtts, 50), percentile(rtts, 99)


def run_data_plane(args: argparse.Namespace, log: Callable[[str], None]) -> tuple[dict, dict]:
    from tools.lab import Lab

    builders: dict[str, Callable[[Any], Pair]] = {}
    if args.mode in ("both", "kernel"):
        builders["kernel"] = build_kernel
    if args.mode in ("both", "overlayd"):
        if args.variant_list:
            for v in args.variant_list:
                name = f"overlayd[{v.replace(',', '+')}]"
                builders[name] = lambda lab, v=v, name=name: build_overlayd(lab, v, name)
        else:
            builders["overlayd"] = build_overlayd
    runs: dict[str, dict[str, list]] = {m: {x.key: [] for x in DATA_METRICS} for m in builders}
    offloads: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        pairs: dict[str, Pair] = {}
        for mode, build in builders.items():
            pairs[mode] = build(stack.enter_context(Lab()))
        for mode, pair in pairs.items():
            if not pair.a.ping(_overlay_ip(1), count=3, timeout=10):
                raise RuntimeError(f"{mode}: the overlay does not carry ping")
            if pair.daemons:
                offloads[mode] = pair.daemons[0].ctl("status").get("offloads", {})
        order = list(pairs)
        for i in range(args.runs):
            log(f"run {i + 1}/{args.runs}")
            # Each run starts with the next mode: the machine's load drifts, and this spreads it.
            for mode in order[i % len(order):] + order[: i % len(order)]:
                pair = pairs[mode]
                with iperf3_server(pair.b, _overlay_ip(1)):
                    fwd, cpu_f = measure_tcp(pair, False, args.seconds)
                    rev, cpu_r = measure_tcp(pair, True, args.seconds)
                    pps = measure_udp64(pair, args.seconds)
                p50, p99 = measure_ping(pair, args.pings, args.ping_interval)
                r = runs[mode]
                r["tcp_a_to_b_gbit_s"].append(round(fwd, 3))
                r["tcp_b_to_a_gbit_s"].append(round(rev, 3))
                r["udp64_pps"].append(round(pps))
                r["ping_p50_us"].append(round(p50, 1))
                r["ping_p99_us"].append(round(p99, 1))
                cpus = [c for c in (cpu_f, cpu_r) if c is not None]
                r["cpu_s_per_gb"].append(round(sum(cpus) / len(cpus), 3) if cpus else None)
                log(f"  {mode:18s} tcp {fwd:6.2f} / {rev:6.2f} Gbit/s  udp64 {pps:9,.0f} pps  "
                    f"rtt p50 {p50:6.0f} us p99 {p99:6.0f} us"
                    + (f"  cpu {r['cpu_s_per_gb'][-1]} s/GB" if cpus else ""))
    return runs, offloads


# -- the control plane: in this process ------------------------------------------


class Skipped(Exception):
    """A benchmark that cannot run here; the message says why."""


def bench_fdb_memory() -> float:
    """Bytes the FDB holds for 100k data-plane entries (tracemalloc, after the empty table)."""
    from overlayd.fabric.fdb import Fdb, Source

    gc.collect()
    tracemalloc.start()
    try:
        fdb = Fdb(300.0)
        base = tracemalloc.get_traced_memory()[0]
        vteps = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(100)]
        for i in range(100_000):
            fdb.learn(100, b"\x02\x00" + i.to_bytes(4, "big"), vteps[i % 100], Source.DATA, 1.0)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
    finally:
        tracemalloc.stop()
    assert len(fdb) == 100_000
    return float(used)


def bench_sim_convergence(nodes: int = 100) -> float:
    """Wall seconds for `nodes` simulated nodes to learn every node's host from a gratuitous ARP."""
    from overlayd.sim.mesh import Simulator
    from overlayd.sim.frames import arp_request, mac

    started = time.perf_counter()
    sim = Simulator(seed=1)
    mesh = sim.mesh(nodes)
    for i, node in enumerate(mesh):
        ip = f"192.168.{i // 250}.{i % 250 + 1}"
        node.attach(100, mac(i + 1), ip)
        sim.send(node, 100, arp_request(mac(i + 1), ip, ip))  # gratuitous: asks for itself
    sim.run()
    elapsed = time.perf_counter() - started
    missing = sum(1 for n in mesh for i in range(nodes) if n.fdb(100, mac(i + 1)) is None)
    if missing:
        raise RuntimeError(f"simulator did not converge: {missing} (node, host) pairs unknown")
    return elapsed


SIM_RR = "10.255.0.1"


def bench_sim_bgp_convergence(nodes: int = 100) -> float:
    """Wall seconds for `nodes` BGP speakers, clients of one route reflector, to build their
    sessions and learn every other node's host (announced by a gratuitous ARP) from type-2
    routes, with each other in the flood list from type-3 routes."""
    from overlayd.sim.frames import arp_request, mac
    from overlayd.sim.bgp import BgpSimulator, bgp_fdb

    started = time.perf_counter()
    sim = BgpSimulator(seed=1)
    mesh = sim.bgp_mesh(nodes, route_reflectors=[SIM_RR])
    sim.add_route_reflector("rr", SIM_RR, mesh)
    for i, node in enumerate(mesh):
        ip = f"192.168.{i // 250}.{i % 250 + 1}"
        node.attach(100, mac(i + 1), ip)
        sim.send(node, 100, arp_request(mac(i + 1), ip, ip))
    sim.run_until(lambda: sim.flood_converged() and all(len(bgp_fdb(n)) == nodes - 1 for n in mesh),
                  timeout_s=60, step_s=0.01)
    elapsed = time.perf_counter() - started
    if not sim.converged():
        raise RuntimeError("BGP simulator: FDBs differ from what the nodes announce")
    return elapsed


def bench_evpn_gobgp(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, dict]:
    """Type-2 routes per second from gobgpd into the overlayd daemon and back (tools.bench_evpn)."""
    import shutil

    if os.geteuid() != 0:
        raise Skipped("needs root (network namespaces)")
    missing = [p for p in ("gobgpd", "gobgp") if shutil.which(p) is None]
    if missing:
        raise Skipped(f"{' and '.join(missing)} not installed")
    from tools import bench_evpn

    return bench_evpn.run(args.evpn_in_routes, args.evpn_routes, args.runs, log)


def _repeated(key: str, fn: Callable[[argparse.Namespace], float],
              **facts: Callable[[argparse.Namespace], Any]) -> Callable[..., dict[str, dict]]:
    """A benchmark measured once per run: {key: {"runs": [...], fact: value}}."""
    def bench(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, dict]:
        return {key: {"runs": [fn(args) for _ in range(args.runs)],
                      **{name: f(args) for name, f in facts.items()}}}
    return bench


# (the metrics it gives) -> fn(args, log) -> {metric: {"runs": [per-run values], facts...}}
CONTROL_BENCHES: dict[tuple[str, ...], Callable[[argparse.Namespace, Callable[[str], None]], dict[str, dict]]] = {
    ("fdb_bytes_per_100k",): _repeated("fdb_bytes_per_100k", lambda args: bench_fdb_memory()),
    ("sim_converge_100_nodes_s",): _repeated(
        "sim_converge_100_nodes_s", lambda args: bench_sim_convergence(args.sim_nodes),
        nodes=lambda args: args.sim_nodes),
    ("sim_bgp_converge_100_nodes_s",): _repeated(
        "sim_bgp_converge_100_nodes_s", lambda args: bench_sim_bgp_convergence(args.sim_nodes),
        nodes=lambda args: args.sim_nodes),
    ("evpn_routes_in_per_s", "evpn_routes_out_per_s"): bench_evpn_gobgp,
}


def run_control_plane(args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for keys, fn in CONTROL_BENCHES.items():
        try:
            got = fn(args, log)
        except Skipped as why:
            for key in keys:
                out[key] = {"value": None, "skipped": str(why)}
                log(f"  {key}: skipped ({why})")
            continue
        for key in keys:
            out[key] = {"value": median(got[key]["runs"]), **got[key]}
            log(f"  {key}: {out[key]['value']:.3f}")
    return out


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError):
        model = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo")
                      if line.startswith("model name")), "")
    return {"kernel": platform.release(), "python": platform.python_version(),
            "cpus": os.cpu_count(), "cpu_model": model, "loadavg_before": loadavg()}


def loadavg() -> list[float]:
    """The 1, 5 and 15 minute load averages."""
    return [round(x, 2) for x in os.getloadavg()]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def log(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    if os.geteuid() != 0 and any(p in ROOT_PARTS for p in args.parts):
        print(f"bench: {', '.join(p for p in args.parts if p in ROOT_PARTS)} need root (network namespaces); "
              f"--only table,control runs without", file=sys.stderr)
        return 2
    results: dict[str, Any] = {
        "when": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "config": {"runs": args.runs, "seconds": args.seconds, "pings": args.pings,
                   "ping_interval_s": args.ping_interval, "mtu": MTU, "quick": args.quick,
                   "OVERLAYD_OFFLOAD": os.environ.get("OVERLAYD_OFFLOAD", ""),
                   "variants": args.variant_list, "parts": args.parts},
        "runs": {},
    }
    log(f"machine: {bench_report.machine_line(results['machine'])}")
    log(f"parts: {', '.join(args.parts)}; {args.runs} interleaved pairs each")
    if "data" in args.parts:
        log("data plane: kernel VXLAN and overlayd, two hosts each")
        results["runs"], results["overlayd_offloads"] = run_data_plane(args, log)
    if "routed" in args.parts or "programming" in args.parts:
        from tools import bench_backends

        results["backends"] = {}
        if "routed" in args.parts:
            log(f"routed pod to pod: {', '.join(args.routed_mode_list)}")
            results["backends"]["routed"] = bench_backends.routed_pod_to_pod(
                args.runs, args.seconds, min(args.pings, 500), args.ping_interval, log, args.routed_mode_list)
        if "programming" in args.parts:
            log("kernel backend: the programming rate")
            results["backends"]["programming"] = bench_backends.programming_rate(
                args.backend_macs, args.backend_subnets, 100, log)
    if "table" in args.parts:
        from tools import bench_switch

        log(f"Switch: 64 B known unicast with 10 and 100,000 FDB entries, {args.table_rounds} interleaved rounds")
        results["table_size"] = bench_switch.table_size(rounds=args.table_rounds, log=log)
    if "control" in args.parts:
        log("control plane")
        results["control_plane"] = run_control_plane(args, log)
    if "services" in args.parts:
        from tools import bench_services

        log("services: through a VIP against the pod directly and against the kernel's DNAT")
        results["services"] = bench_services.run(args.runs, args.seconds, 300, log)
    results["machine"]["loadavg_after"] = loadavg()
    results["summary"] = summarize(results["runs"])
    write_report(results, args.out)
    return 0


def write_report(results: dict[str, Any], out: Path) -> Path:
    """Print the tables (the last run's ratios beside), write JSON, Markdown and PNG; the stem written."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / ("bench-" + time.strftime("%Y%m%d-%H%M%S"))
    previous = bench_report.previous_results(out, before=stem.name + ".json")
    rows = bench_report.ratio_rows(results, DATA_METRICS)
    previous_rows = bench_report.ratio_rows(previous, DATA_METRICS) if previous else None
    print(f"machine: {bench_report.machine_line(results['machine'])}")
    if results["runs"] or results.get("control_plane"):
        print("\n" + render_table(results))
    if results.get("backends"):
        from tools import bench_backends

        print("\n" + bench_backends.render(results["backends"]))
    if results.get("services"):
        from tools import bench_services

        print("\n" + bench_services.render(results["services"]))
    if rows:
        print("\n" + bench_report.render_ratios(rows, previous_rows))
        if previous:
            print(f"(last run: {previous['_path']}, {previous.get('when', '?')})")
    stem.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    stem.with_suffix(".md").write_text(bench_report.render_markdown(results, rows, previous, previous_rows))
    print(f"\nwrote {stem.with_suffix('.json')}\nwrote {stem.with_suffix('.md')}")
    if render_chart(results, stem.with_suffix(".png")):
        print(f"wrote {stem.with_suffix('.png')}")
    elif not have_matplotlib():
        print("no plot: matplotlib is not installed (pip install -e '.[bench]')")
    return stem


if __name__ == "__main__":
    sys.exit(main())
