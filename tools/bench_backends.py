"""`make bench` for the kernel backends: each against the same thing done by hand, same run.

Pod to pod on the routed path (`routed_pod_to_pod`). Each mode is its own lab
with nodes a (10.0.0.1) and b (10.0.0.2), a bridge cni0 on each with the
node's pod subnet (10.244.1.0/24, 10.244.2.0/24) and one pod on it:

    vxlan-by-hand   flannel's vxlan backend written by hand: a kernel VXLAN device
                    ovl0 (VNI 1, nolearning) with one route, one permanent
                    neighbour and one FDB entry for the other node
    kernel          overlayd, `routing.backend: kernel` (the same entries, from BGP)
    routes-by-hand  host-gw by hand: `10.244.2.0/24 via 10.0.0.2`
    host-gw         overlayd, `routing.backend: host-gw`
    userspace       overlayd, `routing.backend: userspace` (the TUN device ovl0)

Each run measures every mode back to back (the order rotating from run to run,
so drifting load spreads over all): one iperf3 TCP stream from a's pod to b's
(Gbit/s) and ping RTT p50/p99 between them. Ratios: kernel / vxlan-by-hand,
host-gw / routes-by-hand, userspace / vxlan-by-hand, with the min-max spread
of the per-run ratios; a spread wider than 30% of the median is flagged noisy.

Programming rate (`programming_rate`): one overlayd node with an L2 network
and the routed network on the kernel backend, and the synthetic EVPN speaker
(`tools/evpn_load.py`) announcing `macs` type-2 routes and `subnets` type-5
routes from 100 VTEPs. Timed from the session's first UPDATE to the moment
the kernel holds every entry they imply (per MAC a FDB entry of the VXLAN
device and one of the bridge; per subnet a route and a neighbour; per
router MAC a FDB entry), read with
iproute2; then every route is withdrawn and the time until the kernel holds
none of them is taken.
"""

from __future__ import annotations

import json
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from tools.bench_report import pair_ratios, spread
from tools.lab import Host, Lab, wait_for
from tools.nodes import start_overlayd

ASN = 65000
ROUTED_MODES = ("vxlan-by-hand", "kernel", "routes-by-hand", "host-gw", "userspace")
RATIOS = {"kernel": "vxlan-by-hand", "host-gw": "routes-by-hand", "userspace": "vxlan-by-hand"}
MTU_VXLAN = 1450


def subnet(i: int) -> str:
    return f"10.244.{i + 1}.0/24"


def _nodes(lab: Lab) -> list[Host]:
    hosts = [lab.add_host(n, v4=f"10.0.0.{i + 1}/24") for i, n in enumerate("ab")]
    for h in hosts:
        h.sysctl("net.ipv4.ip_forward", 1)
    return hosts


def _pods(lab: Lab, hosts: list[Host], mtu: int) -> list[Host]:
    pods = []
    for i, h in enumerate(hosts):
        h.ip("link", "add", "cni0", "mtu", str(mtu), "type", "bridge")
        h.ip("addr", "add", f"10.244.{i + 1}.1/24", "dev", "cni0")
        h.ip("link", "set", "cni0", "up")
        pods.append(lab.add_pod(h, "p1", "cni0", f"10.244.{i + 1}.2/24", f"10.244.{i + 1}.1", mtu))
    return pods


def _overlayd(lab: Lab, hosts: list[Host], backend: str) -> list[Any]:
    daemons = []
    for i, h in enumerate(hosts):
        daemons.append(start_overlayd(h, {
            "node": {"vtep": h.v4},
            "bgp": {"asn": ASN, "hold_time": 9, "connect_retry": 1,
                    "neighbors": [{"address": hosts[1 - i].v4, "asn": ASN}]},
            "routing": {"vni": 1, "network": "10.244.0.0/16", "subnet": subnet(i), "backend": backend,
                        "env_file": str(lab.tmpdir / f"{h.name}.env")},
        }, wait=False, log_level="info"))
    for d in daemons:
        d.wait_ready()
    return daemons


def build_routed(lab: Lab, mode: str) -> tuple[list[Host], list[Any]]:
    """The two nodes of `mode`, and their pods; daemons are kept alive by the lab."""
    hosts = _nodes(lab)
    if mode == "vxlan-by-hand":
        for i, h in enumerate(hosts):
            other, gw = hosts[1 - i], f"10.244.{2 - i}.0"
            mac = f"02:00:0a:00:00:0{2 - i}"
            h.ip("link", "add", "ovl0", "mtu", str(MTU_VXLAN), "address", f"02:00:0a:00:00:0{i + 1}", "type",
                 "vxlan", "id", "1", "local", h.v4, "dstport", "4789", "nolearning")
            h.ip("addr", "add", f"10.244.{i + 1}.0/32", "dev", "ovl0")
            h.ip("link", "set", "ovl0", "up")
            h.ip("route", "add", subnet(1 - i), "via", gw, "dev", "ovl0", "onlink")
            h.ip("neigh", "add", gw, "lladdr", mac, "dev", "ovl0", "nud", "permanent")
            h.run("bridge", "fdb", "append", mac, "dev", "ovl0", "dst", other.v4)
    elif mode == "routes-by-hand":
        for i, h in enumerate(hosts):
            h.ip("route", "add", subnet(1 - i), "via", hosts[1 - i].v4)
    else:
        daemons = _overlayd(lab, hosts, mode)
        wait_for(lambda: all(len(d.ctl("routes")) == 2 for d in daemons), timeout=20, what=f"{mode}: routes")
    mtu = 1500 if mode in ("routes-by-hand", "host-gw") else MTU_VXLAN
    return hosts, _pods(lab, hosts, mtu)


def measure(pods: list[Host], seconds: int, pings: int, interval: float) -> dict[str, float]:
    from tools.bench import iperf3, iperf3_server, percentile

    server, client = pods[1], pods[0]
    with iperf3_server(server, server.v4):
        result = iperf3(client, server.v4, seconds)
    out = client.run("ping", "-n", "-c", str(pings), "-i", str(interval), "-W", "1", server.v4,
                     check=False, timeout=pings * (interval + 0.01) + 30).stdout
    rtts = [float(x.split("=")[1]) * 1000 for x in out.split() if x.startswith("time=")]
    if len(rtts) < pings // 2:
        raise RuntimeError(f"ping: only {len(rtts)}/{pings} replies")
    return {"tcp_gbit_s": round(result["end"]["sum_received"]["bits_per_second"] / 1e9, 3),
            "ping_p50_us": round(percentile(rtts, 50), 1), "ping_p99_us": round(percentile(rtts, 99), 1)}


def routed_pod_to_pod(runs: int, seconds: int, pings: int, interval: float,
                      log: Callable[[str], None], modes: tuple[str, ...] = ROUTED_MODES) -> dict[str, Any]:
    """{"runs": {mode: {metric: [values]}}, "ratios": {mode: {metric: {median, min, max, noisy}}}}.

    `modes`: a subset of ROUTED_MODES (`make bench`'s --routed-modes), e.g. userspace and
    vxlan-by-hand alone for the routed row of the main table.
    """
    import contextlib

    unknown = set(modes) - set(ROUTED_MODES)
    if unknown:
        raise ValueError(f"unknown routed modes {sorted(unknown)}; known: {', '.join(ROUTED_MODES)}")
    per_run: dict[str, list[dict[str, float]]] = {m: [] for m in ROUTED_MODES if m in modes}
    with contextlib.ExitStack() as stack:
        pods = {m: build_routed(stack.enter_context(Lab()), m)[1] for m in per_run}
        for mode, (a, b) in pods.items():
            if not a.ping(b.v4, count=3, timeout=10):
                raise RuntimeError(f"{mode}: pod to pod does not ping")
        order = list(per_run)
        for i in range(runs):
            log(f"routed run {i + 1}/{runs}")
            for mode in order[i % len(order):] + order[: i % len(order)]:
                got = measure(pods[mode], seconds, pings, interval)
                per_run[mode].append(got)
                log(f"  {mode:15s} tcp {got['tcp_gbit_s']:6.2f} Gbit/s  rtt p50 {got['ping_p50_us']:5.0f} us "
                    f"p99 {got['ping_p99_us']:5.0f} us")
    return {"runs": {m: {k: [r[k] for r in rs] for k in rs[0]} for m, rs in per_run.items()},
            "ratios": ratios(per_run)}


def ratios(per_run: dict[str, list[dict[str, float]]]) -> dict[str, dict[str, dict[str, Any]]]:
    """Per compared mode and metric: the median, min and max of the per-run ratios to its reference."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for mode, ref in RATIOS.items():
        if not per_run.get(mode) or not per_run.get(ref):
            continue
        out[mode] = {}
        for key in per_run[mode][0]:
            values = pair_ratios([m[key] for m in per_run[mode]], [r[key] for r in per_run[ref]])
            if values:
                out[mode][key] = spread(values) | {"reference": ref}
    return out


# -- programming rate -----------------------------------------------------------------------


def kernel_counts(h: Host) -> tuple[int, int, int, int]:
    """(FDB entries on vx100: its own with a remote and the bridge's extern_learn ones; routes of
    protocol 149; permanent neighbours on ovl0; FDB entries with a remote on ovl0)."""
    def lines(*cmd: str) -> list[str]:
        return [line for line in h.run(*cmd, check=False).stdout.splitlines() if line.strip()]

    vx = [x for x in lines("bridge", "fdb", "show", "dev", "vx100")
          if (" dst " in x and not x.startswith("00:00")) or "extern_learn" in x]
    routes = lines("ip", "route", "show", "proto", "149")
    neigh = lines("ip", "neigh", "show", "dev", "ovl0", "nud", "permanent")
    rmac = [x for x in lines("bridge", "fdb", "show", "dev", "ovl0") if " dst " in x]
    return len(vx), len(routes), len(neigh), len(rmac)


def programmed(node: Any) -> tuple[int, int, int]:
    """(FDB entries, routes, neighbours) overlayd has programmed, as the kernel acknowledged."""
    from overlayd.status.client import request

    p = request(node.socket, "status")["kernel"]["programmed"]
    return p["fdb"], p["routes"], p["neighbors"]


def programming_rate(macs: int, subnets: int, vteps: int, log: Callable[[str], None]) -> dict[str, Any]:
    from tools.bench import cpu_seconds

    with Lab() as lab:
        n = lab.add_host("n", v4="10.0.0.1/24")
        s = lab.add_host("s", v4="10.0.0.3/24")
        node = start_overlayd(n, {
            "node": {"vtep": "10.0.0.1"},
            # max_prefixes raised: --macs may ask for more routes than the default 200,000
            "bgp": {"asn": ASN, "hold_time": 90, "neighbors": [{"address": "10.0.0.3", "asn": ASN, "passive": True,
                                                                "max_prefixes": 1 << 24}]},
            "networks": [{"name": "blue", "vni": 100, "device": "br-blue", "backend": "kernel"}],
            "routing": {"vni": 1, "network": "10.128.0.0/9", "subnet": "10.128.0.0/24", "backend": "kernel",
                        "env_file": str(lab.tmpdir / "n.env")},
        }, log_level="info")
        want = (2 * macs, subnets, subnets, min(vteps, subnets))
        load = s.popen(sys.executable, "-m", "tools.evpn_load", "announce", "--peer", "10.0.0.1",
                       "--local", "10.0.0.3", "--asn", str(ASN), "--routes", str(macs), "--subnets", str(subnets),
                       "--vteps", str(vteps), "--rt", "65000:100", "--l3-rt", "65000:1", "--l3-vni", "1",
                       stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        cpu0 = cpu_seconds([node.proc.pid])
        first = json.loads(load.stdout.readline())
        # The kernel acknowledged each entry to overlayd, which counts them in its status: asking it
        # costs little, where iproute2 reading 12,000 entries 20 times a second would load the machine.
        acked = (2 * macs + min(vteps, subnets), subnets, subnets)  # self and master entry per MAC
        wait_for(lambda: programmed(node) == acked, timeout=120, interval=0.02,
                 what=f"overlayd to have programmed {acked} (has {programmed(node)})")
        done = time.monotonic()
        cpu_s = cpu_seconds([node.proc.pid]) - cpu0
        if kernel_counts(n) != want:
            raise RuntimeError(f"overlayd says programmed, but the kernel holds {kernel_counts(n)}, not {want}")
        entries = sum(want)
        program_s = done - first["established"]
        log(f"  programmed {entries} entries in {program_s:.2f} s: {entries / program_s:,.0f} entries/s "
            f"(overlayd busy {cpu_s:.2f} s of it)")
        load.send_signal(signal.SIGUSR1)
        withdrawn = json.loads(load.stdout.readline())["withdrawn"]
        wait_for(lambda: programmed(node) == (0, 0, 0), timeout=60, interval=0.02,
                 what="overlayd to have removed them all")
        withdraw_s = time.monotonic() - withdrawn
        if kernel_counts(n) != (0, 0, 0, 0):
            raise RuntimeError(f"overlayd says removed, but the kernel holds {kernel_counts(n)}")
        log(f"  withdrawn: the kernel held none of them {withdraw_s:.2f} s later")
        node.stop()
        load.terminate()
        return {"entries": entries, "macs": macs, "subnets": subnets, "program_s": round(program_s, 3),
                "program_entries_per_s": round(entries / program_s), "program_cpu_s": round(cpu_s, 2),
                "withdraw_s": round(withdraw_s, 3)}


def render(results: dict[str, Any]) -> str:
    """The backends part of the bench table."""
    lines = []
    routed = results.get("routed")
    if routed:
        modes = [m for m in ROUTED_MODES if m in routed["runs"]]
        lines.append("routed, pod to pod (median of runs)   " + "  ".join(f"{m:>14s}" for m in modes))
        for key, label in (("tcp_gbit_s", "TCP 1 stream (Gbit/s)"), ("ping_p50_us", "ping RTT p50 (us)"),
                           ("ping_p99_us", "ping RTT p99 (us)")):
            meds = [statistics.median(routed["runs"][m][key]) for m in modes]
            lines.append(f"{label:37s} " + "  ".join(f"{v:14.2f}" for v in meds))
        lines.append("")
        for mode, per in routed["ratios"].items():
            for key, r in per.items():
                flag = "  noisy" if r["noisy"] else ""
                lines.append(f"{mode}/{r['reference']} {key}: {r['median']:.3f} (runs {r['min']:.3f}-{r['max']:.3f}){flag}")
    rate = results.get("programming")
    if rate:
        lines.append(f"kernel programming: {rate['entries']} entries ({rate['macs']} MACs, {rate['subnets']} subnets) "
                     f"in {rate['program_s']:.2f} s = {rate['program_entries_per_s']:,} entries/s; "
                     f"all withdrawn -> kernel empty in {rate['withdraw_s']:.2f} s")
    return "\n".join(lines)
