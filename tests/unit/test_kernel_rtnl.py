"""io.rtnl without a socket: the requests `encode` builds, and what `neighbor_of` reads back."""

from __future__ import annotations

import ipaddress

import pytest
from pyroute2.netlink.rtnl import RTM_DELNEIGH, RTM_NEWNEIGH
from pyroute2.netlink.rtnl.ndmsg import ndmsg

from overlayd.io.rtnl import (
    AF_BRIDGE,
    NTF_EXT_LEARNED,
    NTF_MASTER,
    NTF_SELF,
    NUD_NOARP,
    NUD_PERMANENT,
    NUD_PROBE,
    NUD_REACHABLE,
    Devices,
    encode,
    neighbor_of,
)
from overlayd.kernel.state import BridgeFdbEntry, FdbEntry, Neighbor, Op

DEVICES = Devices({"br-blue": 7, "vx100": 8, "veth0": 9}, owned=["br-blue", "vx100"])
MAC = bytes([2, 0, 0, 0, 3, 1])
VTEP = ipaddress.ip_address("10.0.0.3")


def decoded(data: bytes) -> ndmsg:
    msg = ndmsg(data)
    msg.decode()
    return msg


def kernel_says(ifindex: int, flags: int, state: int, **attrs) -> ndmsg:
    """An RTM_NEWNEIGH of family AF_BRIDGE as the kernel sends it, decoded."""
    msg = ndmsg()
    msg["family"] = AF_BRIDGE
    msg["ifindex"] = ifindex
    msg["flags"] = flags
    msg["state"] = state
    msg["attrs"] = [(name, value) for name, value in attrs.items()]
    msg["header"]["type"] = RTM_NEWNEIGH
    msg.encode()
    return decoded(bytes(msg.data))


def test_a_bridge_entry_goes_to_the_bridge_as_extern_learn_on_the_vxlan_port():
    msg = decoded(encode(Op("add", BridgeFdbEntry("vx100", MAC)), DEVICES, 149, 1))
    assert msg["header"]["type"] == RTM_NEWNEIGH
    assert (msg["family"], msg["ifindex"]) == (AF_BRIDGE, 8)
    assert msg["flags"] == NTF_MASTER | NTF_EXT_LEARNED  # not NTF_SELF: the VXLAN device's entry is another
    assert msg["state"] == NUD_REACHABLE
    assert msg.get_attr("NDA_LLADDR") == "02:00:00:00:03:01"
    assert msg.get_attr("NDA_DST") is None

    gone = decoded(encode(Op("delete", BridgeFdbEntry("vx100", MAC)), DEVICES, 149, 2))
    assert gone["header"]["type"] == RTM_DELNEIGH
    assert gone["flags"] & NTF_MASTER and not gone["flags"] & NTF_SELF


def test_the_vxlan_devices_entry_is_still_self_with_its_vtep():
    msg = decoded(encode(Op("add", FdbEntry("vx100", MAC, VTEP)), DEVICES, 149, 1))
    assert msg["flags"] == NTF_SELF
    assert msg.get_attr("NDA_DST") == "10.0.0.3"


def test_a_probe_hands_our_neighbour_to_the_hosts_table_which_asks_at_once():
    entry = Neighbor("br-blue", ipaddress.ip_address("192.168.100.22"), MAC, extern_learn=True)
    ours = decoded(encode(Op("add", entry), DEVICES, 149, 1))
    assert (ours["state"], ours["flags"]) == (NUD_NOARP, NTF_EXT_LEARNED)  # NOARP: ARP never changes it
    msg = decoded(encode(Op("probe", entry), DEVICES, 149, 2))
    assert msg["header"]["type"] == RTM_NEWNEIGH and msg["ifindex"] == 7
    assert (msg["state"], msg["flags"]) == (NUD_PROBE, 0)  # no longer extern_learn: not ours
    assert msg.get_attr("NDA_LLADDR") == "02:00:00:00:03:01" and msg.get_attr("NDA_DST") == "192.168.100.22"
    with pytest.raises(TypeError):
        encode(Op("probe", FdbEntry("vx100", MAC, VTEP)), DEVICES, 149, 3)


def test_reading_back_tells_our_entries_from_what_the_bridge_learned():
    lladdr = "02:00:00:00:03:01"
    # ours: the VXLAN device's remote, and the bridge's extern_learn entry on the VXLAN port
    assert neighbor_of(kernel_says(8, NTF_SELF, NUD_PERMANENT, NDA_LLADDR=lladdr, NDA_DST="10.0.0.3"),
                       DEVICES) == FdbEntry("vx100", MAC, VTEP)
    assert neighbor_of(kernel_says(8, NTF_EXT_LEARNED, NUD_REACHABLE, NDA_LLADDR=lladdr, NDA_MASTER=7),
                       DEVICES) == BridgeFdbEntry("vx100", MAC)
    # not ours: the bridge learned the MAC from traffic (on the VXLAN port or a local one)
    assert neighbor_of(kernel_says(8, 0, NUD_REACHABLE, NDA_LLADDR=lladdr, NDA_MASTER=7), DEVICES) is None
    assert neighbor_of(kernel_says(9, NTF_EXT_LEARNED, NUD_REACHABLE, NDA_LLADDR=lladdr, NDA_MASTER=7),
                       DEVICES) is None
    # the VXLAN port's own address in the bridge
    assert neighbor_of(kernel_says(8, 0, NUD_PERMANENT, NDA_LLADDR=lladdr, NDA_MASTER=7), DEVICES) is None
