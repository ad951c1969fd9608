"""The guest's kernel has the Linux devices the host's minimal kernel lacks.

The development and CI machines' kernel answers "Unknown device type" for
these; this tier exists for them. Each device is created in a lab host (a
network namespace) and read back with `ip -d link`, so a kernel that accepted
the command but made something else fails. netem is proved by its effect: the
round trip of a ping through a 50 ms delay.
"""

from __future__ import annotations

import json
import re

import pytest

from tests.support import require_netns
from tools.lab import Host, Lab

# name: (the `ip` arguments that create it in host a, the device, its linkinfo kind)
DEVICES = {
    "ipip": (["link", "add", "tun0", "type", "ipip", "local", "10.0.0.1", "remote", "10.0.0.2"],
             "tun0", "ipip"),
    "ip6tnl": (["link", "add", "tun6", "type", "ip6tnl", "local", "fd00::1", "remote", "fd00::2"],
               "tun6", "ip6tnl"),
    "gre": (["link", "add", "gre1", "type", "gre", "local", "10.0.0.1", "remote", "10.0.0.2"],
            "gre1", "gre"),
    "bond": (["link", "add", "bond0", "type", "bond", "mode", "active-backup", "miimon", "100"],
             "bond0", "bond"),
    "vlan": (["link", "add", "link", "eth0", "name", "eth0.100", "type", "vlan", "id", "100"],
             "eth0.100", "vlan"),
    "ipvlan": (["link", "add", "link", "eth0", "name", "ipvl0", "type", "ipvlan", "mode", "l2"],
               "ipvl0", "ipvlan"),
    "dummy": (["link", "add", "dummy0", "type", "dummy"], "dummy0", "dummy"),
    "vrf": (["link", "add", "vrf0", "type", "vrf", "table", "10"], "vrf0", "vrf"),
    "bridge-vlan-filtering": (["link", "add", "brv", "type", "bridge", "vlan_filtering", "1"],
                              "brv", "bridge"),
}
NETEM_DELAY_MS = 50


@pytest.fixture(scope="module")
def hosts():
    """Hosts a (10.0.0.1, fd00::1) and b (10.0.0.2, fd00::2) on the lab's underlay bridge."""
    require_netns()
    with Lab() as lab:
        yield (lab.add_host("a", v4="10.0.0.1/24", v6="fd00::1/64"),
               lab.add_host("b", v4="10.0.0.2/24", v6="fd00::2/64"))


def link_details(host: Host, device: str) -> dict:
    [link] = host.json_ip("-d", "link", "show", "dev", device)
    return link


@pytest.mark.parametrize("name", DEVICES)
def test_the_guest_kernel_creates(hosts: tuple[Host, Host], name: str):
    a, _ = hosts
    args, device, kind = DEVICES[name]
    a.ip(*args)
    link = link_details(a, device)
    assert link["linkinfo"]["info_kind"] == kind, link
    if name == "vlan":
        assert link["linkinfo"]["info_data"]["id"] == 100, link
    if name == "bridge-vlan-filtering":
        assert link["linkinfo"]["info_data"]["vlan_filtering"] == 1, link
    a.ip("link", "del", device)


def test_netem_delays_what_leaves(hosts: tuple[Host, Host]):
    a, b = hosts
    a.run("tc", "qdisc", "add", "dev", "eth0", "root", "netem", "delay", f"{NETEM_DELAY_MS}ms")
    try:
        qdiscs = json.loads(a.run("tc", "-j", "qdisc", "show", "dev", "eth0").stdout)
        assert [q["kind"] for q in qdiscs if q.get("root")] == ["netem"], qdiscs
        out = a.run("ping", "-4", "-n", "-c", "3", "-i", "0.2", "-w", "20", b.v4, check=False).stdout
        rtt = re.search(r"= ([\d.]+)/([\d.]+)/([\d.]+)", out)
        assert rtt, f"no reply from {b.v4} through netem:\n{out}"
        assert float(rtt.group(1)) >= NETEM_DELAY_MS, f"min RTT below the {NETEM_DELAY_MS} ms delay:\n{out}"
    finally:
        a.run("tc", "qdisc", "del", "dev", "eth0", "root", check=False)

