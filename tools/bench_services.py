"""`make bench` for services: a VIP against the same path without one, same run.

Two nodes a (10.0.0.1) and b (10.0.0.2), each a bridge cni0 with a pod; the
pod on b runs iperf3 and tests/netns/svc_peer.py; service `bench` at
10.96.0.10 sends port 5201 (iperf3) and port 80 (svc_peer, on 8080) to it.
Three labs, measured interleaved, `runs` times:

    userspace  overlayd, routing.backend userspace, the service in its data path
    kernel     overlayd, routing.backend kernel, the service as nftables rules
    by-hand    overlayd userspace routing, and on node a a hand-written nftables
               DNAT rule for the VIP (what kube-proxy's nftables mode writes):
               the kernel's NAT on the same path, same client, same backend

What is measured in each, and the ratios reported:

    tcp_vip_gbit_s / tcp_direct_gbit_s   one iperf3 TCP stream to the VIP / to the pod's
                                         own address, in the same lab (goal: userspace
                                         >= 0.9, kernel >= 0.95)
    conn_per_s                           new TCP connections per second to the VIP
                                         (svc_peer: connect, read the answer, close);
                                         userspace / by-hand reported (goal >= 0.5)
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any


from tests.netns import svc_peer
from tools.bench_report import spread
from tools.lab import Host, Lab, wait_for
from tools.nodes import start_overlayd

ASN = 65000
VIP = "10.96.0.10"
MODES = ("userspace", "kernel", "by-hand")
BY_HAND_DNAT = f"""table ip bench-dnat {{
  chain prerouting {{
    type nat hook prerouting priority dstnat; policy accept;
    ip daddr {VIP} tcp dport 80 dnat to 10.244.2.2:8080
    ip daddr {VIP} tcp dport 5201 dnat to 10.244.2.2:5201
  }}
}}
"""


def build(lab: Lab, mode: str) -> tuple[Host, Host]:
    hosts = []
    for i in range(2):
        h = lab.add_host(f"n{i + 1}", v4=f"10.0.0.{i + 1}/24")
        h.sysctl("net.ipv4.ip_forward", 1)
        h.ip("route", "add", "default", "via", "10.0.0.254")
        h.ip("link", "add", "cni0", "type", "bridge")
        h.ip("addr", "add", f"10.244.{i + 1}.1/24", "dev", "cni0")
        h.ip("link", "set", "cni0", "up")
        hosts.append(h)
    pods = [lab.add_pod(h, "p1", "cni0", f"10.244.{i + 1}.2/24", f"10.244.{i + 1}.1", mtu=1450)
            for i, h in enumerate(hosts)]
    backend = "userspace" if mode == "by-hand" else mode
    service = [{"name": "bench", "vip": VIP, "port": p, "backends": [f"10.244.2.2:{b}"],
                "health": {"type": "none"}} for p, b in ((80, 8080), (5201, 5201))]
    for i, s in enumerate(service):
        s["name"] = f"bench{i}"
    daemons = [start_overlayd(h, {
        "node": {"vtep": h.v4},
        "bgp": {"asn": ASN, "hold_time": 9, "connect_retry": 1,
                "neighbors": [{"address": hosts[1 - i].v4, "asn": ASN}]},
        "routing": {"vni": 1, "network": "10.244.0.0/16", "subnet": f"10.244.{i + 1}.0/24", "backend": backend,
                    "env_file": str(lab.tmpdir / f"{h.name}.env")},
        "services_network": "10.96.0.0/16",
        "services": service if mode != "by-hand" else [],
    }, wait=False, log_level="info") for i, h in enumerate(hosts)]
    for d in daemons:
        d.wait_ready()
    wait_for(lambda: all(len(d.ctl("routes")) == 2 for d in daemons), timeout=20, what=f"{mode}: routes")
    if mode == "by-hand":
        hosts[0].run("nft", "-f", "-", input=BY_HAND_DNAT)
    server = pods[1]
    server.popen("iperf3", "-s", "-B", server.v4)
    peer = server.popen(sys.executable, svc_peer.__file__, "serve", "b", "8080")
    wait_for(lambda: "listening" in server.log(peer), timeout=10, what="svc_peer")
    wait_for(lambda: "LISTEN" in server.run("ss", "-Hltn", "sport", "=", ":5201").stdout, timeout=10,
             what="iperf3 server")
    return pods[0], pods[1]


def measure(client: Host, server: Host, seconds: int, connections: int, mode: str) -> dict[str, float]:
    from tools.bench import iperf3

    got = {}
    got["tcp_vip_gbit_s"] = iperf3(client, VIP, seconds)["end"]["sum_received"]["bits_per_second"] / 1e9
    got["tcp_direct_gbit_s"] = iperf3(client, server.v4, seconds)["end"]["sum_received"]["bits_per_second"] / 1e9
    start = time.monotonic()
    out = client.run(sys.executable, svc_peer.__file__, "tcp", VIP, "80", str(connections), timeout=300)
    took = time.monotonic() - start
    answered = len(json.loads(out.stdout)["answers"])
    if answered != connections:
        raise RuntimeError(f"{mode}: {answered} of {connections} connections answered")
    got["conn_per_s"] = connections / took
    return {k: round(v, 3) for k, v in got.items()}


def run(runs: int, seconds: int, connections: int, log: Callable[[str], None]) -> dict[str, Any]:
    per_run: dict[str, list[dict[str, float]]] = {m: [] for m in MODES}
    with contextlib.ExitStack() as stack:
        pairs = {m: build(stack.enter_context(Lab()), m) for m in MODES}
        for i in range(runs):
            log(f"services run {i + 1}/{runs}")
            for mode in MODES[i % 3:] + MODES[: i % 3]:
                got = measure(*pairs[mode], seconds, connections, mode)
                per_run[mode].append(got)
                log(f"  {mode:10s} tcp vip {got['tcp_vip_gbit_s']:6.2f} / direct {got['tcp_direct_gbit_s']:6.2f} "
                    f"Gbit/s  {got['conn_per_s']:7.0f} conn/s")
    ratios = {
        f"{m}: vip/direct tcp": spread([r["tcp_vip_gbit_s"] / r["tcp_direct_gbit_s"] for r in per_run[m]])
        for m in ("userspace", "kernel")
    }
    ratios["userspace/by-hand conn/s"] = spread(
        [u["conn_per_s"] / h["conn_per_s"] for u, h in zip(per_run["userspace"], per_run["by-hand"])])
    ratios["kernel/by-hand conn/s"] = spread(
        [k["conn_per_s"] / h["conn_per_s"] for k, h in zip(per_run["kernel"], per_run["by-hand"])])
    return {"runs": per_run, "ratios": ratios}


def render(results: dict[str, Any]) -> str:
    lines = ["services (median of runs):"]
    for mode, runs in results["runs"].items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        lines.append(f"  {mode:10s} TCP to the VIP {med['tcp_vip_gbit_s']:.2f} Gbit/s, to the pod "
                     f"{med['tcp_direct_gbit_s']:.2f} Gbit/s; {med['conn_per_s']:.0f} new connections/s")
    for name, r in results["ratios"].items():
        lines.append(f"  {name}: {r['median']:.3f} (runs {r['min']:.3f}-{r['max']:.3f}){'  noisy' if r['noisy'] else ''}")
    return "\n".join(lines)

