"""The three-node overlay of the netns tests: addresses, configs, hosts.

Nodes are numbered 0, 1, 2 (hosts a, b, c); node i has underlay address
10.0.0.{i+1} or fd00::{i+1} and TAP blue0 (VNI 100) with 192.168.100.{i+1}/24,
and its static flood list names the other nodes' VTEPs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tools.lab import Host, Lab
from tools.nodes import Overlayd

VNI = 100
DEVICE = "blue0"
NAMES = ("a", "b", "c")
UNDERLAY = {4: ("10.0.0.{}", 24), 6: ("fd00::{}", 64)}


def overlay_ip(i: int) -> str:
    """The TAP address of node i (0-based)."""
    return f"192.168.100.{i + 1}"


def node_config(i: int, family: int, count: int = 3) -> dict[str, Any]:
    """The config of node i of `count` nodes, the flood list naming all the others."""
    vtep, _ = UNDERLAY[family]
    return {
        "node": {"vtep": vtep.format(i + 1)},
        "networks": [{
            "name": "blue",
            "vni": VNI,
            "device": DEVICE,
            "address": f"{overlay_ip(i)}/24",
            "vteps": [vtep.format(j + 1) for j in range(count) if j != i],
        }],
    }


def add_underlay_host(lab: Lab, name: str, n: int, family: int) -> Host:
    """Host `name` with underlay address number n; new devices there get no IPv6."""
    vtep, plen = UNDERLAY[family]
    addr = f"{vtep.format(n)}/{plen}"
    host = lab.add_host(name, **({"v4": addr} if family == 4 else {"v6": addr}))
    host.sysctl("net.ipv6.conf.default.disable_ipv6", 1)  # no ND/MLD chatter on the TAP
    return host


@dataclass
class Overlay:
    lab: Lab
    family: int
    hosts: list[Host]
    nodes: list[Overlayd]
    outsider: Host  # on the underlay, in no flood list
    macs: list[str]  # TAP MAC of each node, from `overlayctl status --json`

    def vtep(self, i: int) -> str:
        return UNDERLAY[self.family][0].format(i + 1)
