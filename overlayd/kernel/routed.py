"""The kernel's share of the routed subnets, per backend, without I/O.

Input: the subnet table (`fabric.prefixes`, one preferred entry per prefix:
our own subnets and every other node's, with its VTEP and router MAC), and
what the host looks like (`Host`: its directly connected networks, its
default gateways, the unicast routes BGP learned). Output (`RoutedPlan`):
the `KernelState` to program and, for every prefix, the way it goes
(`RouteWay`), which `overlayctl routes` shows.

Per remote subnet, by backend (flannel's and cilium's backends):

  kernel     route SUBNET via GW dev DEVICE onlink, GW = the subnet's
             network address; a permanent neighbour GW -> the node's router
             MAC on DEVICE; an FDB entry router MAC -> the node's VTEP on
             DEVICE (a kernel VXLAN device: flannel's flannel.1)
  host-gw    route SUBNET via VTEP dev <the interface of that connected
             network>, only when the node's VTEP is on a directly connected
             network of this host (flannel's rule); otherwise no route, and
             the way says why
  ipip       over IPv4: route SUBNET via VTEP dev DEVICE onlink (an IPIP
             device, IPv4 subnets only); over IPv6: route SUBNET encap ip6
             dst VTEP dev DEVICE (an ip6tnl device in external mode, which
             carries IPv4 and IPv6 subnets alike: an IPv6 onlink next hop on
             the tunnel is refused when the VTEP's network is connected)
  native     no per-node route: the cluster network goes to the default
             gateway (`network via GW`), which learns the pod subnets from
             BGP unicast; with `install_routes`, every learned unicast
             route instead (`PREFIX via NEXT_HOP`, when the next hop is on
             a connected network)
  userspace  no per-node route: `network dev DEVICE` hands the cluster to
             overlayd's own TUN/TAP device (and `services_network`: the VIPs)

`direct_routing` (tunnel backends): a node whose VTEP is on a directly
connected network gets the host-gw route instead of the tunnel.

Mixed clusters: every node's type-5 route says how it takes traffic
(`encap`: VXLAN for userspace and kernel nodes, IP in IP for ipip nodes,
none for host-gw and native nodes). A tunnel is used only toward a node
that takes it; any other node gets the host-gw route when it is on a
directly connected network, and no route (with the reason) otherwise.

Our own subnets are `local`: the pods' bridge holds their route. The
devices of `kernel` and `ipip` carry each of our subnets' network address
(as a /32 or /128), as flannel.1 does, so the kernel has a source address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from overlayd.kernel.state import Address, FdbEntry, IpAddress, KernelState, Neighbor, Prefix, Route

Backend = Literal["userspace", "kernel", "host-gw", "ipip", "native"]
Way = Literal["local", "vxlan", "host-gw", "ipip", "native", "userspace", "none"]


class TableEntry(Protocol):
    """What the planner reads of a subnet table entry (`fabric.prefixes.PrefixEntry`)."""

    prefix: Prefix
    vtep: str | None  # None: our own subnet
    router_mac: bytes | None
    vni: int
    node: str
    encap: str  # "vxlan", "ipip" or "none": how the node takes traffic


@dataclass(frozen=True, slots=True)
class Connected:
    """A network this host is directly attached to (an address on `device`)."""

    network: Prefix
    device: str


@dataclass(frozen=True, slots=True)
class Gateway:
    """The default route of one family: `default via address dev device`."""

    address: IpAddress
    device: str


@dataclass(frozen=True)
class Host:
    """The host around the tables: what the planner needs of the kernel, read by `io`."""

    connected: tuple[Connected, ...] = ()
    gateways: Mapping[int, Gateway] = field(default_factory=dict)  # by IP version
    unicast: Mapping[Prefix, IpAddress] = field(default_factory=dict)  # BGP unicast: prefix -> next hop

    def on_link(self, address: IpAddress) -> Connected | None:
        """The connected network `address` is on (the longest), or None."""
        best = None
        for c in self.connected:
            if c.network.version == address.version and address in c.network:
                if best is None or c.network.prefixlen > best.network.prefixlen:
                    best = c
        return best


@dataclass(frozen=True)
class RoutedSpec:
    """The config of the routed backend (from `routing:` and `node:`)."""

    backend: Backend
    device: str
    vtep: IpAddress
    vni: int
    networks: tuple[Prefix, ...]  # routing.network and network6
    direct_routing: bool = False
    install_routes: bool = False
    services_networks: tuple[Prefix, ...] = ()  # userspace: VIPs go to the device too


@dataclass(frozen=True, slots=True)
class RouteWay:
    """How the kernel routes one prefix: `way`, the route (if any), and why not (if none)."""

    way: Way
    route: Route | None = None
    reason: str = ""


@dataclass
class RoutedPlan:
    state: KernelState
    ways: dict[Prefix, RouteWay]


def device_address(subnet: Prefix) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """The subnet's network address as a host route: 10.244.1.0/32 (flannel.1 carries the same)."""
    return ipaddress.ip_interface((subnet.network_address, subnet.max_prefixlen))


def plan_routed(spec: RoutedSpec, table: Iterable[TableEntry], host: Host) -> RoutedPlan:
    """The desired kernel state and the way of every prefix (see the module docstring)."""
    state = KernelState()
    ways: dict[Prefix, RouteWay] = {}
    router_macs: dict[bytes, str] = {}  # kernel backend: one FDB entry per router MAC
    for entry in table:
        if entry.vtep is None:
            ways[entry.prefix] = RouteWay("local")
            if spec.backend in ("kernel", "ipip") and _carries(spec, entry.prefix):
                state.add(Address(spec.device, device_address(entry.prefix)))
            continue
        vtep = ipaddress.ip_address(entry.vtep)
        way = _direct(spec, entry.prefix, vtep, host) if spec.direct_routing else None
        if way is None:
            way = _tunnel(spec, entry, vtep, host, state, router_macs)
        elif way.route is not None:
            state.add(way.route)
        ways[entry.prefix] = way
    if spec.backend == "userspace":
        for network in (*spec.networks, *spec.services_networks):
            state.add(Route(network, device=spec.device))
    elif spec.backend == "native" and not spec.install_routes:
        for network in spec.networks:
            gw = host.gateways.get(network.version)
            if gw is not None:
                state.add(Route(network, gw.address, gw.device))
    elif spec.backend == "native":
        ours = [p for p, w in ways.items() if w.way == "local"]
        for prefix, next_hop in host.unicast.items():
            if any(prefix.version == o.version and prefix.subnet_of(o) for o in ours):
                continue  # our own subnet's addresses stay on our bridge
            link = host.on_link(next_hop)
            if link is None:
                continue  # the kernel takes only a next hop on a connected network
            state.add(Route(prefix, next_hop, link.device))
    return RoutedPlan(state, ways)


def _carries(spec: RoutedSpec, prefix: Prefix) -> bool:
    """Whether the backend's device carries subnets of this family (IPIP over IPv4: IPv4 only)."""
    return spec.backend == "kernel" or spec.vtep.version == 6 or prefix.version == 4


def _direct(spec: RoutedSpec, prefix: Prefix, vtep: IpAddress, host: Host) -> RouteWay | None:
    """The host-gw way, when the node is on a connected network and the families agree; else None."""
    link = host.on_link(vtep) if vtep.version == prefix.version else None
    if link is None:
        return None
    return RouteWay("host-gw", Route(prefix, vtep, link.device))


def _tunnel(spec: RoutedSpec, entry: TableEntry, vtep: IpAddress, host: Host, state: KernelState,
            router_macs: dict[bytes, str]) -> RouteWay:
    prefix = entry.prefix
    b = spec.backend
    wanted = TUNNEL_ENCAP.get(b)
    if wanted is not None and entry.encap != wanted:
        way = _direct(spec, prefix, vtep, host)
        if way is None:
            return RouteWay("none", reason=f"node {entry.node} takes {ENCAP_NAME[entry.encap]}, not {ENCAP_NAME[wanted]}, "
                                           f"and is not on a directly connected network")
        state.add(way.route)
        return way
    if b == "userspace":
        return RouteWay("userspace")
    if b == "native":
        gw = host.gateways.get(prefix.version)
        if gw is None:
            return RouteWay("none", reason=f"no IPv{prefix.version} default route to send it to")
        return RouteWay("native", Route(_network_of(spec, prefix) or prefix, gw.address, gw.device))
    if b == "host-gw":
        if vtep.version != prefix.version:
            return RouteWay("none", reason=f"host-gw needs an IPv{prefix.version} next hop; node {entry.node} "
                                           f"has VTEP {vtep}")
        way = _direct(spec, prefix, vtep, host)
        if way is None:
            return RouteWay("none", reason=f"node {entry.node} ({vtep}) is not on a directly connected network")
        state.add(way.route)
        return way
    if vtep.version != spec.vtep.version:
        return RouteWay("none", reason=f"VTEP {vtep} is not of our underlay's family")
    if b == "ipip":
        if vtep.version == 6:  # ip6tnl in external mode: any family, the remote per route
            route = Route(prefix, None, spec.device, encap=vtep)
        elif prefix.version != 4:
            return RouteWay("none", reason="IPIP carries only IPv4 subnets (an IPv6 underlay carries both)")
        else:
            route = Route(prefix, vtep, spec.device, onlink=True)
        state.add(route)
        return RouteWay("ipip", route)
    # kernel VXLAN
    if entry.router_mac is None:
        return RouteWay("none", reason="the route carries no router MAC")
    if entry.vni != spec.vni:
        return RouteWay("none", reason=f"VNI {entry.vni} is not our L3 VNI {spec.vni}")
    owner = router_macs.setdefault(entry.router_mac, entry.node)
    if owner != entry.node:
        return RouteWay("none", reason=f"router MAC {entry.router_mac.hex(':')} is node {owner}'s too")
    gateway = prefix.network_address
    route = Route(prefix, gateway, spec.device, onlink=True)
    state.add(route)
    state.add(Neighbor(spec.device, gateway, entry.router_mac))
    state.add(FdbEntry(spec.device, entry.router_mac, vtep))
    return RouteWay("vxlan", route)


TUNNEL_ENCAP = {"userspace": "vxlan", "kernel": "vxlan", "ipip": "ipip"}
ENCAP_NAME = {"vxlan": "VXLAN", "ipip": "IP in IP", "none": "no tunnel"}


def _network_of(spec: RoutedSpec, prefix: Prefix) -> Prefix | None:
    return next((n for n in spec.networks if n.version == prefix.version and prefix.subnet_of(n)), None)
