"""Fixtures of the netns tier.

`overlay` (module scope, once per underlay family) is a lab with hosts a, b
and c, each running overlayd with network `blue` (VNI 100, device blue0,
192.168.100.{1,2,3}/24) whose static flood list names the other two VTEPs,
and an outsider d on the same underlay that no node knows. IPv6 is off on
the TAP devices, so the only frames in the overlay are the ones a test sends.

`bgp_overlay` (module scope, once per underlay family) is the same three
hosts with no static flood list: the daemons are an iBGP full mesh (AS 65000,
hold time 3 s) and learn flood lists and MACs from each other's EVPN routes.
It yields as soon as the daemons are ready; tests call `converge()` first.
Tests that stop a node start it again (`BgpOverlay.start`) before they end.
"""

from __future__ import annotations

import signal

import pytest

from tests.netns.topology import (
    NAMES,
    BgpOverlay,
    Overlay,
    add_underlay_host,
    bgp_node_config,
    node_config,
)
from tests.support import require_netns
from tools.lab import Lab, wait_for
from tools.nodes import start_overlayd


@pytest.fixture(scope="module", params=[4, 6], ids=["ipv4-underlay", "ipv6-underlay"])
def overlay(request: pytest.FixtureRequest):
    require_netns()
    family = request.param
    with Lab() as lab:
        hosts = [add_underlay_host(lab, name, i + 1, family) for i, name in enumerate(NAMES)]
        outsider = add_underlay_host(lab, "d", 4, family)
        nodes = [start_overlayd(h, node_config(i, family), wait=False) for i, h in enumerate(hosts)]
        for node in nodes:
            node.wait_ready()
        # Each node announces its TAP address (a gratuitous ARP, flooded) once its flood list is
        # set; the tests count flood frames, so they start after it.
        wait_for(lambda: all(n.counters().get("tx_flood_frames", 0) >= 1 for n in nodes), 5,
                 what="every node's gratuitous ARP")
        macs = [n.ctl("status")["networks"][0]["mac"] for n in nodes]
        yield Overlay(lab, family, hosts, nodes, outsider, macs)
        codes = {node.host.name: node.stop() for node in nodes}
        assert set(codes.values()) == {0}, f"overlayd exit codes {codes}"


@pytest.fixture(scope="module", params=[4, 6], ids=["ipv4-underlay", "ipv6-underlay"])
def bgp_overlay(request: pytest.FixtureRequest):
    require_netns()
    family = request.param
    with Lab() as lab:
        hosts = [add_underlay_host(lab, name, i + 1, family) for i, name in enumerate(NAMES)]
        nodes = [start_overlayd(h, bgp_node_config(i, family), wait=False) for i, h in enumerate(hosts)]
        for node in nodes:
            node.wait_ready()
        overlay = BgpOverlay(lab, family, hosts, nodes)
        overlay.macs = [overlay.query(i, "status")["networks"][0]["mac"] for i in range(len(nodes))]
        yield overlay
        for node in overlay.nodes:  # all at once: each takes a moment to say goodbye
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGCONT)  # in case a test left one stopped
                node.proc.send_signal(signal.SIGTERM)
        codes = {node.host.name: node.proc.wait(timeout=10) for node in overlay.nodes}
        assert set(codes.values()) == {0}, f"overlayd exit codes {codes}"
