"""`overlayctl topology`: the daemon's facts (status/facts.py) from a fake-clock mesh, rendered as
text and DOT (status/topology.py); svg without Graphviz is a clear error."""

from __future__ import annotations

import json
import re

import pytest

from overlayd.sim.frames import ethernet
from overlayd.status import ctl, topology
from overlayd.status.view import SwitchView
from overlayd.wire.ethernet import BROADCAST
from tests.unit.test_speaker import H2, Mesh


@pytest.fixture
def facts() -> dict:
    """Node 1 of a three-node mesh whose session with node 3 is down; node 2 has a MAC."""
    m = Mesh(3)
    m[2].tap(ethernet(BROADCAST, H2, 0x0800, b"x" * 46), m.now)
    m.pump()
    m.links = [link for link in m.links if "10.0.0.3" not in (link[0].peer, link[2].peer)]
    m.pump(3.5)  # node 1's hold timer for node 3 expires
    node = m[1]
    view = SwitchView(node.config, node.switch, started=0.0, mtus={100: 1450}, speaker=node.speaker)
    return json.loads(json.dumps(view.topology(m.now)))


def test_facts_list_every_session_with_its_state_and_every_vtep(facts):
    assert facts["node"] == {"name": "n1", "vtep": "10.0.0.1", "asn": 65000, "router_id": "10.0.0.1"}
    assert [(s["neighbor"], s["state"]) for s in facts["sessions"]] == [("10.0.0.2", "Established"),
                                                                        ("10.0.0.3", "Idle")]
    assert facts["sessions"][1]["last_error"].startswith("hold timer expired")
    assert facts["vteps"] == [{"vtep": "10.0.0.2", "router_id": "10.0.0.2", "networks": ["blue"], "macs": 1,
                               "subnets": [], "neighbor": True}]
    assert facts["networks"] == [{"name": "blue", "vni": 100, "device": "blue0", "backend": "userspace",
                                  "address": None, "flood_list": ["10.0.0.2"]}]


def test_text_shows_sessions_and_vteps(facts):
    out = topology.text(facts).splitlines()
    assert out[0] == "node n1  vtep 10.0.0.1  AS 65000  router ID 10.0.0.1"
    assert out[1] == "network blue: vni 100 on blue0 (userspace); floods to 10.0.0.2"
    assert re.match(r"10\.0\.0\.2 +65000 +Established ", out[4])
    assert re.match(r"10\.0\.0\.3 +65000 +Idle .*hold timer expired", out[5])
    assert out[7].split() == ["VTEP", "ROUTER", "ID", "NETWORKS", "MACS", "SUBNETS", "SESSION"]
    assert out[8].split() == ["10.0.0.2", "10.0.0.2", "blue", "1", "-", "Established"]


def test_dot_has_a_node_per_vtep_and_an_edge_per_session_and_tunnel(facts):
    dot = topology.dot(facts)
    assert dot.startswith('graph "overlay seen from n1" {') and dot.rstrip().endswith("}")
    assert '"10.0.0.1" -- "10.0.0.2" [label="BGP Established", color=darkgreen' in dot
    assert '"10.0.0.1" -- "10.0.0.3" [label="BGP Idle", color=red' in dot
    assert '"10.0.0.1" -- "10.0.0.2" [label="VXLAN blue (vni 100)", style=dashed];' in dot
    # a neighbor that is no VTEP (down, nothing learned from it) still is a node of its own
    assert '"10.0.0.3" [label="10.0.0.3\\nAS 65000", shape=ellipse];' in dot


def test_dot_quotes_what_it_did_not_write():
    facts = {"node": {"name": 'we"ird\\name', "vtep": "10.0.0.1", "asn": None, "router_id": None},
             "networks": [], "routing": None, "sessions": [], "vteps": []}
    dot = topology.dot(facts)
    assert 'graph "overlay seen from we\\"ird\\\\name" {' in dot


@pytest.fixture
def canned(monkeypatch, facts):
    monkeypatch.setattr(ctl, "request", lambda path, command, **args: facts)
    return facts


def test_overlayctl_topology_formats(canned, capsys):
    assert ctl.main(["topology"]) == 0
    assert capsys.readouterr().out.startswith("node n1  vtep 10.0.0.1")
    assert ctl.main(["topology", "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == canned
    assert ctl.main(["topology", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == canned
    assert ctl.main(["topology", "--format", "dot"]) == 0
    assert capsys.readouterr().out == topology.dot(canned)


def test_svg_without_graphviz_names_the_missing_program(canned, capsys, monkeypatch):
    monkeypatch.setattr(ctl.shutil, "which", lambda name: None)
    assert ctl.main(["topology", "--format", "svg"]) == ctl.EXIT_NO_PICTURE == 1
    err = capsys.readouterr().err
    assert "Graphviz's `dot`" in err and "not installed" in err and "--format dot" in err
