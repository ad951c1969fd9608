"""The kernel devices of the kernel backends: create them, adopt them after a crash, remove them.

Every device overlayd creates carries the alias `overlayd` (IFLA_IFALIAS,
`ip link show` prints it). That is how a start tells a device left by an
earlier run of overlayd that was killed (adopted: set up again as
configured, its entries reconciled by diff) from somebody else's device of
the same name (refused, as for a TAP: the name must not be taken). A left
device whose type or VXLAN identity (VNI, local address, port) differs from
the config is deleted and made again.

    DeviceSpec("ovl0", "vxlan", mtu=1450, mac=..., vni=1, local=10.0.0.1, port=4789)
    DeviceSpec("br-blue", "bridge", mtu=1450, address=192.168.100.1/24)
    DeviceSpec("vx100", "vxlan", ..., master="br-blue", neigh_suppress=True)
    DeviceSpec("ovl0", "ipip", mtu=1480, local=10.0.0.1)
    DeviceSpec("ovl0", "ip6tnl", mtu=1460)                    # external: routes name the remote
"""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import dataclass
from typing import Literal

from overlayd.io.netlink import announce_changes

log = logging.getLogger("overlayd.kernel")

OWNER_ALIAS = "overlayd"
IP6_TNL_F_IGN_ENCAP_LIMIT = 0x1
IFA_F_NODAD = 0x02

Kind = Literal["vxlan", "bridge", "ipip", "ip6tnl"]


class DeviceTaken(Exception):
    """A device of that name exists and is not one overlayd made."""


@dataclass(frozen=True)
class DeviceSpec:
    name: str
    kind: Kind
    mtu: int
    mac: str | None = None
    vni: int | None = None  # vxlan
    local: ipaddress.IPv4Address | ipaddress.IPv6Address | None = None  # vxlan, ipip, ip6tnl
    port: int | None = None  # vxlan
    master: str | None = None  # the bridge a VXLAN device is a port of
    neigh_suppress: bool = False  # as a bridge port
    address: ipaddress.IPv4Interface | ipaddress.IPv6Interface | None = None

    def create_args(self) -> dict:
        args: dict = {"ifname": self.name, "kind": self.kind, "mtu": self.mtu}
        if self.mac:
            args["address"] = self.mac
        if self.kind == "vxlan":
            args.update(vxlan_id=self.vni, vxlan_local=str(self.local), vxlan_port=self.port, vxlan_learning=0,
                        vxlan_udp_csum=1, vxlan_udp_zero_csum6_tx=0, vxlan_udp_zero_csum6_rx=0)
        elif self.kind == "bridge":
            args["br_stp_state"] = 0
        elif self.kind == "ipip":
            args["ipip_local"] = str(self.local)
        elif self.kind == "ip6tnl":
            # external (collect_md): each route names its remote (`encap ip6 dst`); any inner
            # family (proto 0); no encapsulation limit option, so the overhead is 40 octets
            args.update(ip6tnl_collect_metadata=True, ip6tnl_proto=0, ip6tnl_flags=IP6_TNL_F_IGN_ENCAP_LIMIT)
        return args


def _info(link) -> tuple[str | None, dict]:
    linkinfo = link.get("IFLA_LINKINFO")
    if not linkinfo:
        return None, {}
    data = linkinfo.get("IFLA_INFO_DATA")
    attrs = dict(data["attrs"]) if data and "attrs" in data else {}
    return linkinfo.get("IFLA_INFO_KIND"), attrs


def same_identity(spec: DeviceSpec, link) -> bool:
    """Whether an existing link is the device `spec` describes, as far as its type and tunnel go."""
    kind, data = _info(link)
    if kind != spec.kind:
        return False
    if spec.kind == "vxlan":
        local = data.get("IFLA_VXLAN_LOCAL") or data.get("IFLA_VXLAN_LOCAL6")
        return (data.get("IFLA_VXLAN_ID") == spec.vni and data.get("IFLA_VXLAN_PORT") == spec.port
                and local is not None and ipaddress.ip_address(local) == spec.local)
    if spec.kind == "ipip":
        local = data.get("IFLA_IPTUN_LOCAL")
        return local is not None and ipaddress.ip_address(local) == spec.local
    if spec.kind == "ip6tnl":
        return "IFLA_IP6TNL_COLLECT_METADATA" in data
    return True


async def _link(ipr, name: str):
    found = await ipr.link_lookup(ifname=name)
    if not found:
        return None
    async for link in await ipr.get_links(found[0]):
        return link
    return None


async def ensure(ipr, spec: DeviceSpec) -> tuple[int, str]:
    """Make the device exist as `spec` says, up; returns (index, "created" | "adopted" | "recreated").

    Raises DeviceTaken for a device of that name overlayd did not make.
    """
    how = "created"
    link = await _link(ipr, spec.name)
    if link is not None:
        if link.get("IFLA_IFALIAS") != OWNER_ALIAS:
            raise DeviceTaken(f"{spec.name} already exists")
        if same_identity(spec, link):
            how = "adopted"
        else:
            log.warning("%s: left by an earlier run with another identity: made again", spec.name)
            await ipr.link("del", index=link["index"])
            link, how = None, "recreated"
    if link is None:
        await ipr.link("add", **spec.create_args())
        link = await _link(ipr, spec.name)
        assert link is not None
    index = link["index"]
    if spec.kind == "bridge":
        announce_changes(spec.name)
    await ipr.link("set", index=index, ifalias=OWNER_ALIAS, mtu=spec.mtu)
    if spec.mac and spec.mac.lower() != str(link.get("IFLA_ADDRESS", "")).lower():
        # only when it differs: setting a device's address, even to the one it has, flushes the
        # neighbours learned on it, and an adopting restart must keep those
        await ipr.link("set", index=index, address=spec.mac)
    elif spec.kind == "bridge" and how != "adopted":
        # A bridge without a MAC of its own takes its lowest port's, and changes it when ports
        # come and go; set its first one, so that it stays.
        await ipr.link("set", index=index, address=link.get("IFLA_ADDRESS"))
    if spec.master:
        (master,) = await ipr.link_lookup(ifname=spec.master)
        await ipr.link("set", index=index, master=master)
        if spec.neigh_suppress:
            await ipr.brport("set", index=index, neigh_suppress=1)
    if spec.address is not None:
        extra = {"flags": IFA_F_NODAD} if spec.address.version == 6 else {}
        await ipr.addr("replace", index=index, address=str(spec.address.ip),
                       prefixlen=spec.address.network.prefixlen, **extra)
    await ipr.link("set", index=index, state="up")
    return index, how


async def mac_of(ipr, name: str) -> bytes:
    link = await _link(ipr, name)
    mac = link.get("IFLA_ADDRESS") if link is not None else None
    return bytes.fromhex(mac.replace(":", "")) if mac else b""


async def remove(ipr, name: str) -> bool:
    """Delete the device if it is ours; True if something was deleted."""
    link = await _link(ipr, name)
    if link is None or link.get("IFLA_IFALIAS") != OWNER_ALIAS:
        return False
    await ipr.link("del", index=link["index"])
    return True
