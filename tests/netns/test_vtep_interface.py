"""The underlay chosen by interface: `node.vtep_interface` (flannel's --iface) instead of
`node.vtep`.

Two lab hosts on one bridge; node a names its underlay interface (`eth0`,
MTU 1400 here) and node b its address. a's VTEP is eth0's first global IPv4
address, its TAP's default MTU is eth0's less 50, and the overlay pings. When
eth0's address changes under it, the daemon says so (log, `overlayctl
status`) and keeps its VTEP until a restart. An interface that is missing or
has no address of the family is a config error naming `node.vtep_interface`.
"""

from __future__ import annotations

import pytest

from tests.netns.topology import DEVICE, VNI, overlay_ip
from tests.support import require_netns
from tools.lab import Lab, wait_for
from tools.nodes import start_overlayd

pytestmark = pytest.mark.root

UNDERLAY_MTU = 1400


def config(i: int, **node) -> dict:
    other = 2 - i
    return {
        "node": node or {"vtep": f"10.0.0.{i + 1}"},
        "networks": [{"name": "blue", "vni": VNI, "device": DEVICE, "address": f"{overlay_ip(i)}/24",
                      "vteps": [f"10.0.0.{other}"]}],
    }


@pytest.fixture
def lab():
    require_netns()
    with Lab() as lab:
        for name, n in (("a", 1), ("b", 2)):
            host = lab.add_host(name, v4=f"10.0.0.{n}/24")
            host.ip("link", "set", "dev", "eth0", "mtu", str(UNDERLAY_MTU))
        yield lab


def test_the_vtep_and_the_mtu_come_from_the_interface_and_a_change_is_shown_not_followed(lab: Lab):
    a_host, b_host = lab.hosts["a"], lab.hosts["b"]
    a = start_overlayd(a_host, config(0, vtep_interface="eth0"))
    b = start_overlayd(b_host, config(1))
    status = a.ctl("status")
    assert (status["vtep"], status["vtep_interface"], status["vtep_interface_now"]) == ("10.0.0.1", "eth0", None)
    assert status["networks"][0]["mtu"] == UNDERLAY_MTU - 50
    assert "vtep 10.0.0.1 (on eth0)" in a.ctl_text("status")
    assert a_host.ping(overlay_ip(1)) and b_host.ping(overlay_ip(0))
    # the address moves: shown and logged, not followed
    a_host.ip("addr", "add", "10.0.1.11/24", "dev", "eth0")  # another subnet: it outlives 10.0.0.1
    a_host.ip("addr", "del", "10.0.0.1/24", "dev", "eth0")
    now = wait_for(lambda: a.ctl("status")["vtep_interface_now"], timeout=12,
                   what="status to show eth0's new address")
    assert now == ["10.0.1.11"] and a.ctl("status")["vtep"] == "10.0.0.1"
    assert "eth0's addresses are now 10.0.1.11; overlayd goes on with 10.0.0.1 until a restart" in a.ctl_text("status")
    assert "node.vtep_interface eth0: its addresses are now 10.0.1.11, not 10.0.0.1" in a.log()
    a_host.ip("addr", "add", "10.0.0.1/24", "dev", "eth0")
    wait_for(lambda: a.ctl("status")["vtep_interface_now"] is None, timeout=12, what="the warning to clear")
    assert a.stop() == 0 and b.stop() == 0


@pytest.mark.parametrize("node, message", [
    ({"vtep_interface": "eth7"}, "node.vtep_interface: eth7: no such interface on this host"),
    ({"vtep_interface": "eth0", "vtep_family": "ipv6"}, "node.vtep_interface: eth0 has no global IPv6 address"),
], ids=["missing", "no-address-of-the-family"])
def test_an_interface_without_an_address_exits_2_naming_it(lab: Lab, node: dict, message: str):
    host = lab.hosts["a"]
    host.sysctl("net.ipv6.conf.eth0.disable_ipv6", 1)
    daemon = start_overlayd(host, config(0, **node), wait=False)
    assert daemon.proc.wait(timeout=15) == 2, daemon.log()
    assert message in daemon.log(), daemon.log()
    assert host.ip("link", "show", "dev", DEVICE, check=False).returncode != 0  # nothing made
