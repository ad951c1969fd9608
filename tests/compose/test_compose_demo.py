"""`docker compose up`: the demo of README "Demo with Docker", run for real.

Three overlayd containers (configs/compose/nodeN.yaml) peer over BGP EVPN on
the compose network, each with two pods made by the CNI plugins from its
node subnet 10.244.N.0/24 and an address 192.168.100.N on the L2 segment
"blue"; the checker service prints what works. The tests run in order on
one project (the `demo` fixture): convergence seen through `overlayctl
--json` inside the containers, pod pings across nodes, the checker's
summary, then node2 stopped (its routes must leave the others) and started
again (they must come back).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest

from tools.compose import ComposeError, ComposeProject, run
from tools.lab import wait_for as lab_wait_for

pytestmark = pytest.mark.docker

NODES = ("node1", "node2", "node3")
SUBNET = {n: f"10.244.{i}.0/24" for i, n in enumerate(NODES, 1)}
VTEP = {n: f"10.100.0.1{i}" for i, n in enumerate(NODES, 1)}
BLUE = {n: f"192.168.100.{i}" for i, n in enumerate(NODES, 1)}
CONVERGE_S = 90  # the first start includes each node's pods and a BGP connect retry
WITHDRAW_S = 10
CAP_NET_ADMIN, CAP_SYS_ADMIN = 12, 21  # bit numbers in /proc/PID/status CapEff (linux/capability.h)  # node2 stops with a Cease: the others drop it at once, not after the hold time


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    """tools.lab.wait_for, failing the test with `what` and the last value seen.

    A command failing inside a container (the daemon not up yet) counts as "not yet".
    """
    last: list[Any] = [None]

    def attempt() -> Any:
        try:
            last[0] = check()
        except ComposeError as err:
            last[0] = err
            return None
        return last[0]

    try:
        return lab_wait_for(attempt, timeout, interval=every, what=what)
    except TimeoutError:
        pytest.fail(f"after {timeout:g} s, still not: {what} (last: {last[0]!r})", pytrace=False)


def established(demo: ComposeProject, node: str) -> set[str]:
    return {p["neighbor"] for p in demo.ctl(node, "peers") if p["state"] == "Established"}


def learned_subnets(demo: ComposeProject, node: str) -> dict[str, str]:
    """prefix -> VTEP of the subnets `node` learned from peers."""
    return {r["prefix"]: r["vtep"] for r in demo.ctl(node, "routes") if r["vtep"] != "local"}


def pods(demo: ComposeProject, node: str) -> dict[str, str]:
    """pod name -> IPv4 address, from `demo-node pods` inside `node`."""
    out = demo.exec(node, "demo-node", "pods").stdout
    return {line.split()[0]: line.split()[1] for line in out.splitlines() if line.strip()}


def pod_ping(demo: ComposeProject, node: str, pod: str, ip: str) -> bool:
    proc = demo.exec(node, "demo-node", "exec", pod, "ping", "-c", "1", "-W", "2", "-n", ip, check=False)
    return proc.returncode == 0


def converged(demo: ComposeProject, up: tuple[str, ...]) -> dict[str, Any]:
    """Every node in `up` has a session with, and the subnet of, every other; {} if not yet."""
    state = {}
    for node in up:
        others = [n for n in up if n != node]
        peers = established(demo, node)
        subnets = learned_subnets(demo, node)
        if not {VTEP[n] for n in others} <= peers or any(subnets.get(SUBNET[n]) != VTEP[n] for n in others):
            return {}
        state[node] = {"peers": peers, "subnets": subnets}
    return state


def test_nodes_peer_and_learn_each_others_subnets(demo: ComposeProject):
    state = wait_for("three nodes in full mesh, each with the others' subnets",
                     lambda: converged(demo, NODES), CONVERGE_S)
    for node in NODES:
        others = {n for n in NODES if n != node}
        assert state[node]["peers"] == {VTEP[n] for n in others}
        assert state[node]["subnets"] == {SUBNET[n]: VTEP[n] for n in others}


def test_the_l2_segment_carries_type2_routes_and_pings(demo: ComposeProject):
    wait_for("convergence", lambda: converged(demo, NODES), CONVERGE_S)
    for node in NODES:
        rib = demo.ctl(node, "rib")
        for other in NODES:
            if other == node:
                continue
            macip = [r for r in rib if r["type"] == "macip" and r["ip"] == BLUE[other] and r["best"]]
            assert macip and macip[0]["next_hop"] == VTEP[other], f"{node}: no type-2 for {BLUE[other]}"
            assert demo.exec(node, "ping", "-c", "1", "-W", "2", "-n", BLUE[other], check=False).returncode == 0, \
                f"{node} cannot ping {other} on blue ({BLUE[other]})"


def test_every_pod_pings_every_pod_on_the_other_nodes(demo: ComposeProject):
    wait_for("convergence", lambda: converged(demo, NODES), CONVERGE_S)
    all_pods = {n: wait_for(f"{n}'s two pods", lambda n=n: (p := pods(demo, n)) and len(p) == 2 and p, 60)
                for n in NODES}
    for node, mine in all_pods.items():
        for name, ip in mine.items():
            assert ip.startswith(SUBNET[node].rsplit(".", 2)[0] + "."), f"{node}/{name} {ip} not in {SUBNET[node]}"
    failed = []
    for src, mine in all_pods.items():
        for pod in mine:
            for dst, theirs in all_pods.items():
                if dst == src:
                    continue
                for name, ip in theirs.items():
                    # the first ping of a pair may wait for ARP on both bridges: one retry
                    if not (pod_ping(demo, src, pod, ip) or pod_ping(demo, src, pod, ip)):
                        failed.append(f"{src}/{pod} -> {dst}/{name} {ip}")
    assert not failed, f"pod pings that failed: {failed}"


def test_the_checker_reports_all_good(demo: ComposeProject):
    logs = wait_for("the checker's ALL GOOD summary",
                    lambda: (out := demo.logs("checker")) and "ALL GOOD" in out and out, 60)
    summary = next(line for line in logs.splitlines() if "ALL GOOD" in line)
    print(summary)
    assert "3/3 nodes up, 6/6 BGP sessions Established, 6/6 remote subnets known" in summary
    assert "docker compose exec node1 overlayctl peers" in logs


def test_a_stopped_node_leaves_the_others_and_comes_back(demo: ComposeProject):
    wait_for("convergence", lambda: converged(demo, NODES), CONVERGE_S)
    stopped = time.monotonic()
    demo.compose("stop", "node2", timeout=60)

    def gone() -> bool:
        for node in ("node1", "node3"):
            if SUBNET["node2"] in learned_subnets(demo, node):
                return False
            if any(r["next_hop"] == VTEP["node2"] for r in demo.ctl(node, "rib")):
                return False
        return True

    wait_for("node2's subnet and EVPN routes gone from node1 and node3", gone, WITHDRAW_S, every=0.5)
    print(f"node2's routes left the others {time.monotonic() - stopped:.1f} s after `compose stop`")
    assert converged(demo, ("node1", "node3"))
    all_pods = {n: pods(demo, n) for n in ("node1", "node3")}
    assert pod_ping(demo, "node1", "pod1", all_pods["node3"]["pod1"]), "node1 -> node3 broke when node2 left"
    wait_for("the checker's summary with node2 down",
             lambda: "SETTLED: 2/3 nodes up (node2 down)" in demo.logs("checker"), 30)

    demo.compose("start", "node2", timeout=60)
    wait_for("node2 back in full mesh with its subnet", lambda: converged(demo, NODES), CONVERGE_S)
    node2_pods = wait_for("node2's pods again", lambda: (p := pods(demo, "node2")) and len(p) == 2 and p, 60)
    assert pod_ping(demo, "node1", "pod1", node2_pods["pod1"]) or pod_ping(demo, "node1", "pod1", node2_pods["pod1"])
    # blue0 came back with its configured MAC, so node1's ARP entry for node2 is still right
    assert demo.exec("node2", "cat", "/sys/class/net/blue0/address").stdout.strip() == "02:00:00:00:64:02"
    assert demo.exec("node1", "ping", "-c", "1", "-W", "2", "-n", BLUE["node2"], check=False).returncode == 0


def test_nodes_are_not_privileged_and_overlayd_runs_without_sys_admin(demo: ComposeProject):
    wait_for("convergence", lambda: converged(demo, NODES), CONVERGE_S)
    container = demo.compose("ps", "-q", "node1").stdout.strip()
    [info] = json.loads(run("docker", "inspect", container).stdout)
    host = info["HostConfig"]
    assert host["Privileged"] is False
    assert sorted(host["CapAdd"]) == ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"] or \
        sorted(host["CapAdd"]) == ["NET_ADMIN", "SYS_ADMIN"], host["CapAdd"]
    assert [d["PathOnHost"] for d in host["Devices"]] == ["/dev/net/tun"]
    # the pods need SYS_ADMIN (namespaces); overlayd runs with it dropped, and NET_ADMIN kept
    status = demo.exec("node1", "sh", "-c", 'cat /proc/$(pgrep -o -f "overlayd -c")/status').stdout
    cap_eff = int(next(line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")), 16)
    assert cap_eff & (1 << CAP_NET_ADMIN), f"overlayd lacks NET_ADMIN: CapEff {cap_eff:#x}"
    assert not cap_eff & (1 << CAP_SYS_ADMIN), f"overlayd has SYS_ADMIN: CapEff {cap_eff:#x}"
