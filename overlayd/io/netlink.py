"""Every netlink change overlayd makes, through pyroute2: find the underlay,
set MTU and addresses on our devices, bring them up."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from pyroute2 import AsyncIPRoute, IPRoute

from overlayd.config.fields import ifname_problem

IFA_F_NODAD = 0x02


@dataclass(frozen=True)
class Underlay:
    """The interface that holds the VTEP address."""

    ifname: str
    ifindex: int
    mtu: int


def announce_changes(name: str) -> None:
    """Have the kernel announce `name`'s addresses when it comes up or its MAC or addresses
    change: a gratuitous ARP (arp_notify) and an unsolicited neighbour advertisement
    (ndisc_notify). Quietly skipped where the family is off.

    `name` becomes part of a path under /proc/sys: anything that is not an interface name
    (config.fields.ifname_problem: '..', 'a/b', 'all', ...) is refused with ValueError
    before a file is opened. The config refuses such names already; this is the backstop."""
    problem = ifname_problem(name)
    if problem is not None:
        raise ValueError(f"{name!r} is not a valid interface name: {problem}")
    for path in (f"/proc/sys/net/ipv4/conf/{name}/arp_notify", f"/proc/sys/net/ipv6/conf/{name}/ndisc_notify"):
        try:
            with open(path, "w") as f:
                f.write("1")
        except OSError:
            pass


RT_SCOPE_UNIVERSE = 0  # a global address (not link-local, host or site)


def global_addresses(addr_msgs, index: int, family: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """Interface `index`'s global addresses of `family` (4 or 6), in the kernel's order."""
    found = []
    for msg in addr_msgs:
        local = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
        if msg["index"] == index and msg["scope"] == RT_SCOPE_UNIVERSE and local:
            address = ipaddress.ip_address(local)
            if address.version == family:
                found.append(address)
    return found


def interface_address(name: str, family: int) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """The first global IPv`family` address of interface `name` (`node.vtep_interface`);
    LookupError naming what is missing."""
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=name)
        if not index:
            raise LookupError(f"{name}: no such interface on this host")
        addresses = global_addresses(ipr.get_addr(family=2 if family == 4 else 10), index[0], family)
    if not addresses:
        raise LookupError(f"{name} has no global IPv{family} address")
    return addresses[0]


class Netlink:
    """An rtnetlink socket for the daemon's setup; use as `async with Netlink() as nl`."""

    def __init__(self) -> None:
        self._ipr = AsyncIPRoute()

    async def __aenter__(self) -> Netlink:
        await self._ipr.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._ipr.__aexit__(*exc)

    async def global_addresses(self, name: str, family: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        """Interface `name`'s global addresses of `family` (none if it is gone)."""
        index = await self._ipr.link_lookup(ifname=name)
        if not index:
            return []
        msgs = [m async for m in await self._ipr.get_addr(family=2 if family == 4 else 10)]
        return global_addresses(msgs, index[0], family)

    async def link_exists(self, name: str) -> bool:
        return bool(await self._ipr.link_lookup(ifname=name))

    async def _link(self, index: int):
        async for link in await self._ipr.get_links(index):
            return link
        raise LookupError(f"no link with index {index}")

    async def underlay_for(
        self, address: ipaddress.IPv4Address | ipaddress.IPv6Address
    ) -> Underlay | None:
        family = 2 if address.version == 4 else 10
        found = None
        async for msg in await self._ipr.get_addr(family=family):
            local = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
            if found is None and local and ipaddress.ip_address(local) == address:
                found = msg["index"]
        if found is None:
            return None
        link = await self._link(found)
        return Underlay(link.get("IFLA_IFNAME"), found, link.get("IFLA_MTU"))

    async def configure(
        self,
        name: str,
        mtu: int,
        address: ipaddress.IPv4Interface | ipaddress.IPv6Interface | None,
        gso_max_size: int | None = None,
        mac: str | None = None,
    ) -> bytes:
        """Set MTU, address, MAC (and the largest TSO frame) on `name`, bring it up; return its MAC."""
        (index,) = await self._ipr.link_lookup(ifname=name)
        announce_changes(name)
        await self._ipr.link("set", index=index, mtu=mtu)
        if mac is not None:
            await self._ipr.link("set", index=index, address=mac)
        if gso_max_size is not None:
            await self._ipr.link("set", index=index, gso_max_size=gso_max_size)
        if address is not None:
            extra = {"flags": IFA_F_NODAD} if address.version == 6 else {}
            await self._ipr.addr(
                "add",
                index=index,
                address=str(address.ip),
                prefixlen=address.network.prefixlen,
                **extra,
            )
        await self._ipr.link("set", index=index, state="up")
        link = await self._link(index)
        if link.get("IFLA_ADDRESS") is None:  # a TUN device has no MAC
            return b""
        return bytes.fromhex(link.get("IFLA_ADDRESS").replace(":", ""))

    async def local_routes(self, version: int, skip_protocol: int | None = None
                           ) -> list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str]]:
        """The main table's routes of one family, but those of `skip_protocol`: (destination, device name)."""
        names = {}
        async for link in await self._ipr.get_links():
            names[link["index"]] = link.get("IFLA_IFNAME")
        out = []
        async for msg in await self._ipr.get_routes(family=2 if version == 4 else 10, table=254):
            dst = msg.get("RTA_DST")
            if dst is None or msg["proto"] == skip_protocol:
                continue
            out.append((ipaddress.ip_network(f"{dst}/{msg['dst_len']}", strict=False),
                        names.get(msg.get("RTA_OIF"), "?")))
        return out

    async def add_address(self, name: str, address: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None:
        (index,) = await self._ipr.link_lookup(ifname=name)
        extra = {"flags": IFA_F_NODAD} if address.version == 6 else {}
        await self._ipr.addr("add", index=index, address=str(address.ip),
                             prefixlen=address.network.prefixlen, **extra)

    async def del_address(self, name: str, address: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> None:
        (index,) = await self._ipr.link_lookup(ifname=name)
        await self._ipr.addr("del", index=index, address=str(address.ip), prefixlen=address.network.prefixlen)
