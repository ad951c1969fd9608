"""The three-node overlay of the netns tests: addresses, configs, hosts.

Nodes are numbered 0, 1, 2 (hosts a, b, c); node i has underlay address
10.0.0.{i+1} or fd00::{i+1} and TAP blue0 (VNI 100) with 192.168.100.{i+1}/24,
and its static flood list names the other nodes' VTEPs (`node_config`). The
BGP variant (`bgp_node_config`, `BgpOverlay`) has no static flood list: the
nodes are an iBGP full mesh in AS 65000 and learn it all from EVPN routes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from overlayd.status.client import request
from tools.lab import Host, Lab, wait_for
from tools.nodes import Overlayd, start_overlayd

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


# -- the same three nodes with BGP EVPN instead of static flood lists ---------------------

ASN = 65000
HOLD_TIME_S = 3  # the shortest RFC 4271 allows: keepalives every second


def router_id(i: int) -> str:
    """Node i's BGP identifier when set explicitly (an IPv6 VTEP cannot be one)."""
    return f"10.255.255.{i + 1}"


def bgp_node_config(i: int, family: int, count: int = 3, hold_time: int = HOLD_TIME_S) -> dict[str, Any]:
    """Node i's config with iBGP to every other node and no static flood list.

    The flood list can only come from the others' type-3 routes, remote MACs
    only from their type-2 routes. The router ID is set explicitly on an IPv6
    underlay (where it must be) and left to default to the VTEP on IPv4.
    """
    vtep, _ = UNDERLAY[family]
    config = node_config(i, family, count)
    del config["networks"][0]["vteps"]
    config["bgp"] = {
        "asn": ASN,
        "hold_time": hold_time,
        "connect_retry": 1,
        "neighbors": [{"address": vtep.format(j + 1), "asn": ASN} for j in range(count) if j != i],
    }
    if family == 6:
        config["bgp"]["router_id"] = router_id(i)
    return config


@dataclass
class BgpOverlay:
    """Hosts a, b, c each running overlayd with `bgp_node_config`; see conftest.bgp_overlay."""

    lab: Lab
    family: int
    hosts: list[Host]
    nodes: list[Overlayd]
    macs: list[str | None] = field(default_factory=lambda: [None, None, None])

    def vtep(self, i: int) -> str:
        return UNDERLAY[self.family][0].format(i + 1)

    def others(self, i: int) -> list[int]:
        return [j for j in range(len(self.nodes)) if j != i]

    def query(self, i: int, command: str) -> Any:
        """The status socket's answer, asked directly: cheaper than `overlayctl` for polling."""
        return request(self.nodes[i].socket, command)

    def start(self, i: int) -> Overlayd:
        """(Re)start node i's daemon with its config; a new TAP means a new MAC."""
        node = start_overlayd(self.hosts[i], bgp_node_config(i, self.family))
        self.nodes[i] = node
        self.macs[i] = self.query(i, "status")["networks"][0]["mac"]
        return node

    def sessions_up(self) -> bool:
        """Every node has every other node Established."""
        return all(
            {p["neighbor"]: p["state"] for p in self.query(i, "peers")}
            == {self.vtep(j): "Established" for j in self.others(i)}
            for i in range(len(self.nodes))
        )

    def flood_lists_full(self) -> bool:
        return all(
            sorted(self.query(i, "status")["networks"][0]["flood_list"])
            == sorted(self.vtep(j) for j in self.others(i))
            for i in range(len(self.nodes))
        )

    def macs_known(self) -> bool:
        """Every node's FDB has every other node's TAP MAC from BGP, and its IP binding in the RIB."""
        for i in range(len(self.nodes)):
            fdb = {(r["mac"], r["where"], r["learned"]) for r in self.query(i, "fdb")}
            rib = {(r["mac"], r["ip"], r["next_hop"]) for r in self.query(i, "rib")
                   if r["type"] == "macip" and r["best"]}
            for j in self.others(i):
                if (self.macs[j], self.vtep(j), "bgp") not in fdb:
                    return False
                if (self.macs[j], overlay_ip(j), self.vtep(j)) not in rib:
                    return False
        return True

    def counters(self) -> list[dict[str, int]]:
        """Every node's counters (`overlayctl stats`), in node order."""
        return [self.query(i, "stats")["counters"] for i in range(len(self.nodes))]

    def converge(self, timeout: float = 20.0) -> None:
        """Sessions up, flood lists full, every MAC and its IP binding announced and imported.

        A TAP's MAC and IP are only known once its kernel has sent something, so
        unless every node already knows them, every pair pings once first.
        Cheap when already converged: a few status queries.
        """
        wait_for(self.sessions_up, timeout, what="every BGP session to be Established")
        wait_for(self.flood_lists_full, timeout, what="flood lists built from type-3 routes")
        if self.macs_known():
            return
        for i in range(len(self.nodes)):
            for j in self.others(i):
                wait_for(lambda: self.hosts[i].ping(overlay_ip(j), timeout=2), timeout,
                         what=f"{self.hosts[i].name} to ping {overlay_ip(j)}")
        wait_for(self.macs_known, timeout, what="every TAP MAC and IP announced in type-2 routes")
