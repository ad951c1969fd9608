"""Fixtures of the netns tier.

`overlay` (module scope, once per underlay family) is a lab with hosts a, b
and c, each running overlayd with network `blue` (VNI 100, device blue0,
192.168.100.{1,2,3}/24) whose static flood list names the other two VTEPs,
and an outsider d on the same underlay that no node knows. IPv6 is off on
the TAP devices, so the only frames in the overlay are the ones a test sends.
"""

from __future__ import annotations

import pytest

from tests.netns.topology import NAMES, Overlay, add_underlay_host, node_config
from tests.support import require_netns
from tools.lab import Lab
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
        macs = [n.ctl("status")["networks"][0]["mac"] for n in nodes]
        yield Overlay(lab, family, hosts, nodes, outsider, macs)
        codes = {node.host.name: node.stop() for node in nodes}
        assert set(codes.values()) == {0}, f"overlayd exit codes {codes}"
