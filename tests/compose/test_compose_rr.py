"""The Docker demo with its route reflector (docker-compose.rr.yml).

Each node peers only with gobgpd at 10.100.0.10 (configs/compose/rr/), which
reflects every node's type-2/3/5 routes to the others with the next hop
unchanged. Asserted: that is the only session each node has, the subnets
and MACs of the other nodes arrive through it, GoBGP holds every node's
type-5 route, and pods ping across nodes.
"""

from __future__ import annotations

import json

import pytest

from tests.compose.test_compose_demo import (
    BLUE, CONVERGE_S, NODES, SUBNET, VTEP, established, learned_subnets, pod_ping, pods, wait_for,
)
from tools.compose import ComposeProject
from tools.gobgp import SESSION_STATES, summarize

pytestmark = pytest.mark.docker

RR = "10.100.0.10"


def converged_through_rr(demo: ComposeProject) -> bool:
    for node in NODES:
        if established(demo, node) != {RR}:
            return False
        subnets = learned_subnets(demo, node)
        if any(subnets.get(SUBNET[o]) != VTEP[o] for o in NODES if o != node):
            return False
    return True


def test_nodes_learn_each_other_through_the_route_reflector_only(rr_demo: ComposeProject):
    wait_for("every node's only session is the route reflector's, with the others' subnets",
             lambda: converged_through_rr(rr_demo), CONVERGE_S)
    for node in NODES:
        assert [p["neighbor"] for p in rr_demo.ctl(node, "peers")] == [RR]
        rib = rr_demo.ctl(node, "rib")
        for other in NODES:
            if other != node:
                blue = [r for r in rib if r["type"] == "macip" and r["ip"] == BLUE[other] and r["best"]]
                assert blue and blue[0]["next_hop"] == VTEP[other] and blue[0]["peer"] == RR, blue


def test_gobgp_holds_every_nodes_subnet_with_the_node_as_next_hop(rr_demo: ComposeProject):
    wait_for("convergence through the route reflector", lambda: converged_through_rr(rr_demo), CONVERGE_S)
    out = rr_demo.exec("rr", "gobgp", "global", "rib", "-a", "evpn", "-j").stdout
    routes = [summarize(prefix, path) for prefix, paths in json.loads(out).items() for path in paths]
    type5 = {(r["ip_prefix"], r["next_hop"]) for r in routes if r["type"] == 5}
    assert type5 == {(SUBNET[n], VTEP[n]) for n in NODES}, type5
    neighbors = json.loads(rr_demo.exec("rr", "gobgp", "neighbor", "-j").stdout)
    assert sorted(n["conf"]["neighbor_address"] for n in neighbors
                  if SESSION_STATES.get(n.get("state", {}).get("session_state")) == "established") \
        == sorted(VTEP.values())


def test_pods_ping_across_nodes_through_the_reflected_routes(rr_demo: ComposeProject):
    wait_for("convergence through the route reflector", lambda: converged_through_rr(rr_demo), CONVERGE_S)
    all_pods = {n: wait_for(f"{n}'s two pods", lambda n=n: (p := pods(rr_demo, n)) and len(p) == 2 and p, 60)
                for n in NODES}
    failed = [f"{src}/pod1 -> {dst}/{name}" for src in NODES for dst in NODES if dst != src
              for name, ip in all_pods[dst].items()
              if not (pod_ping(rr_demo, src, "pod1", ip) or pod_ping(rr_demo, src, "pod1", ip))]
    assert not failed, f"pod pings that failed: {failed}"
    logs = wait_for("the checker's ALL GOOD", lambda: (out := rr_demo.logs("checker")) and "ALL GOOD" in out
                    and out, 60)
    assert "3/3 BGP sessions Established" in next(line for line in logs.splitlines() if "ALL GOOD" in line)
