"""Graphviz reads the DOT of `overlayctl topology` (status/topology.py) without a complaint, and
`--format svg` is its picture."""

from __future__ import annotations

import subprocess

import pytest

from overlayd.status import ctl, topology
from tests.support import require_programs
from tests.unit.test_topology import facts  # noqa: F401 - the fixture: a mesh with a session down

pytestmark = pytest.mark.peer

TRICKY = {"node": {"name": 'a "quoted" \\ name {x}', "vtep": "fd00::1", "asn": 4200000000,
                   "router_id": "10.255.255.1"},
          "networks": [{"name": "blue", "vni": 100, "device": "blue0", "backend": "kernel", "address": None,
                        "flood_list": ["fd00::2"]}],
          "routing": {"vni": 1, "backend": "userspace", "network": "10.244.0.0/16", "subnets": ["10.244.1.0/24"]},
          "sessions": [{"neighbor": "fd00::9", "asn": 65009, "state": "Connect", "uptime_s": None,
                        "families": ["evpn"], "last_error": "connect failed: Connection refused"}],
          "vteps": [{"vtep": "fd00::2", "router_id": "10.255.255.2", "networks": ["blue"], "macs": 3,
                     "subnets": ["10.244.2.0/24"], "neighbor": False}]}


def render(dot: str) -> subprocess.CompletedProcess:
    return subprocess.run(["dot", "-Tsvg"], input=dot, capture_output=True, text=True, timeout=60,
                          check=False)


@pytest.mark.parametrize("case", ["mesh", "tricky"])
def test_graphviz_parses_the_dot(case, facts):  # noqa: F811
    require_programs("dot")
    done = render(topology.dot(facts if case == "mesh" else TRICKY))
    assert (done.returncode, done.stderr) == (0, "")
    assert done.stdout.lstrip().startswith("<?xml") and "<svg" in done.stdout
    for vtep in (["10.0.0.1", "10.0.0.2", "10.0.0.3"] if case == "mesh" else ["fd00::1", "fd00::2", "fd00::9"]):
        assert f"<title>{vtep}</title>" in done.stdout


def test_overlayctl_topology_svg_runs_dot(monkeypatch, capsys, facts):  # noqa: F811
    require_programs("dot")
    monkeypatch.setattr(ctl, "request", lambda path, command, **args: facts)
    assert ctl.main(["topology", "--format", "svg"]) == 0
    svg = capsys.readouterr().out
    assert "<svg" in svg and "BGP Established" in svg
