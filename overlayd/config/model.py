"""The configuration's schema: frozen pydantic models, each check naming the field it is about.

config/loader.py reads a file into them and words the errors; README.md ("Configuration")
has every key.
"""

from __future__ import annotations

import ipaddress
import platform
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)

from overlayd.config.fields import (
    FilePath,
    Frozen,
    IfName,
    IpAddress,
    IpInterface,
    IpNetwork,
    SocketPath,
    UnicastMac,
)
from overlayd.config.services import (
    ServiceConfig,
    check_services,
    check_services_network,
)
from overlayd.fabric.endpoint import format_endpoint, parse_endpoint
from overlayd.status.protocol import DEFAULT_STATUS_SOCKET
from overlayd.wire.vxlan import VNI_MAX, VXLAN_PORT

# Outer headers added to every inner frame: IP + UDP + VXLAN + inner Ethernet.
ENCAP_OVERHEAD = {4: 20 + 8 + 8 + 14, 6: 40 + 8 + 8 + 14}
# An IP packet inside an IP packet (the `ipip` backend): IPIP over IPv4, ip6tnl over IPv6.
IPIP_OVERHEAD = {4: 20, 6: 40}

# Route protocol numbers assigned in linux/rtnetlink.h and /etc/iproute2/rt_protos:
# `routing.route_protocol` must be none of them, so cleanup by number touches only ours.
ASSIGNED_ROUTE_PROTOCOLS = {
    0: "unspec", 1: "redirect", 2: "kernel", 3: "boot", 4: "static", 8: "gated", 9: "ra", 10: "mrt",
    11: "zebra", 12: "bird", 13: "dnrouted", 14: "xorp", 15: "ntk", 16: "dhcp", 17: "mrouted",
    18: "keepalived", 42: "babel", 99: "openr", 186: "bgp", 187: "isis", 188: "ospf", 189: "rip",
    192: "eigrp",
}
DEFAULT_ROUTE_PROTOCOL = 149
GROUP_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?")  # what shadow's useradd takes, or a gid

# Limits per network (README "Limits and security").
DEFAULT_MAX_LOCAL_MACS = 8192  # local FDB entries (DECISIONS.md, issue 13)
DEFAULT_MAX_LOCAL_IPS = 16384  # local IP bindings (type-2 routes with an IP): two per MAC
DEFAULT_MAC_LEARN_RATE_PER_S = 1000.0  # new local MACs a second (a token bucket per TAP)...
DEFAULT_MAC_LEARN_BURST = 1000  # ... with this many at once
DEFAULT_FLOOD_RATE_PPS = 2000.0  # frames flooded a second (a token bucket per network)...
DEFAULT_FLOOD_BURST = 2000  # ... with this many at once
# Per BGP peer: routes accepted (DECISIONS.md, issue 13), and the idle time after a teardown.
DEFAULT_MAX_PREFIXES = 200_000
DEFAULT_MAX_PREFIXES_RESTART_S = 60.0

Family = Literal["evpn", "ipv4-unicast", "ipv6-unicast"]
TUNNEL_BACKENDS = ("userspace", "kernel", "ipip")



class NodeConfig(Frozen):
    name: str = Field(default_factory=platform.node, min_length=1)
    vtep: IpAddress  # or, found at start (parse_config's vtep_of), the first global address of:
    vtep_interface: IfName | None = None  # this interface (flannel's --iface) ...
    vtep_family: Literal["ipv4", "ipv6"] = "ipv4"  # ... of this family
    vxlan_port: int = Field(default=VXLAN_PORT, ge=1, le=65535)
    status_socket: SocketPath = DEFAULT_STATUS_SOCKET
    status_group: str | int | None = None  # the socket's group (name or gid); default: the daemon's own
    status_max_clients: int = Field(default=64, ge=1, le=4096)
    status_idle_timeout_s: float = Field(default=30.0, gt=0, le=86400)
    status_max_watchers: int = Field(default=16, ge=1, le=1024)  # `overlayctl watch` streams at once
    log_format: Literal["text", "json"] = "text"  # `overlayd --log-format` wins
    fdb_aging: float = Field(default=300.0, gt=0, description="seconds")
    underlay_mtu: int | None = Field(default=None, ge=1280, le=65535)
    udp_source_ports: int = Field(default=16, ge=1, le=256)
    # SIGTERM: `remove` what overlayd made in the kernel (default), or `keep` the kernel backends
    # forwarding (devices, routes, neighbour/FDB entries, nftables) for the next start to adopt
    on_stop: Literal["remove", "keep"] = "remove"

    @field_validator("status_group", mode="before")
    @classmethod
    def _group(cls, v: Any) -> Any:
        ok = (v is None or isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 0xFFFFFFFF
              or isinstance(v, str) and GROUP_NAME.fullmatch(v))
        if not ok:
            raise ValueError(f"{v!r} is not a group name or gid")
        return v

    @field_validator("vtep")
    @classmethod
    def _unicast(cls, v: IpAddress) -> IpAddress:
        if v.is_multicast or v.is_unspecified or v.is_loopback and v.version == 6:
            raise ValueError(f"{v} cannot be a VTEP address")
        return v

    @model_validator(mode="after")
    def _found_on_its_interface(self) -> NodeConfig:
        if self.vtep_interface is not None and self.vtep.version != (4 if self.vtep_family == "ipv4" else 6):
            raise ValueError(f"vtep_family: {self.vtep_interface}'s address {self.vtep} is not {self.vtep_family}")
        return self

    @property
    def family(self) -> int:
        return self.vtep.version


class StaticFdbEntry(Frozen):
    mac: UnicastMac
    vtep: IpAddress

    @property
    def mac_bytes(self) -> bytes:
        return bytes.fromhex(self.mac.replace(":", ""))


class NetworkConfig(Frozen):
    name: str = Field(min_length=1)
    vni: int = Field(ge=1, le=VNI_MAX)
    device: IfName
    address: IpInterface | None = None
    mac: UnicastMac | None = None  # the device's MAC; default: the kernel's random one
    mtu: int | None = Field(default=None, ge=68, le=65535)
    vteps: tuple[IpAddress, ...] = ()
    fdb: tuple[StaticFdbEntry, ...] = ()
    route_target: RouteTargetText = None
    backend: Literal["userspace", "kernel"] = "userspace"
    # Limits (README "Limits and security"): local FDB entries and how fast they are learned,
    # and how many frames a second are flooded (head-end replicated) to the flood list.
    max_local_macs: int = Field(default=DEFAULT_MAX_LOCAL_MACS, ge=1, le=16_777_216)
    max_local_ips: int = Field(default=DEFAULT_MAX_LOCAL_IPS, ge=1, le=16_777_216)
    mac_learn_rate_per_s: float = Field(default=DEFAULT_MAC_LEARN_RATE_PER_S, gt=0)
    mac_learn_burst: int = Field(default=DEFAULT_MAC_LEARN_BURST, ge=1)
    flood_rate_pps: float = Field(default=DEFAULT_FLOOD_RATE_PPS, gt=0)
    flood_burst: int = Field(default=DEFAULT_FLOOD_BURST, ge=1)
    # A VLAN of a trunk (config/trunk.py: set by `vlans`, never by hand): its 802.1Q VLAN ID on
    # the shared device, the trunk's name, and whether untagged frames belong to it.
    vlan: int | None = Field(default=None, ge=1, le=4094)
    trunk: str | None = None
    native: bool = False

    @property
    def vxlan_device(self) -> str:
        """The kernel backend's VXLAN device: vx<VNI> (at most 10 characters, within the 15 allowed)."""
        return f"vx{self.vni}"

    @field_validator("vteps")
    @classmethod
    def _distinct(cls, v: tuple[IpAddress, ...]) -> tuple[IpAddress, ...]:
        seen = set()
        for a in v:
            if a in seen:
                raise ValueError(f"{a} is listed twice")
            seen.add(a)
        return v


def _route_target(v: Any) -> Any:
    if isinstance(v, str):
        admin, sep, number = v.rpartition(":")
        try:
            if not sep:
                raise ValueError
            n = int(number)
            if "." in admin:
                ipaddress.IPv4Address(admin)
                ok = 0 <= n <= 0xFFFF
            else:
                a = int(admin)
                ok = 0 <= a <= 0xFFFFFFFF and 0 <= n <= (0xFFFFFFFF if a <= 0xFFFF else 0xFFFF)
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"{v!r} is not a route target like 65000:100 or 10.0.0.1:100")
    elif v is not None:
        raise ValueError(f"{v!r} is not a route target like 65000:100 or 10.0.0.1:100")
    return v


RouteTargetText = Annotated[str | None, BeforeValidator(_route_target)]


class MaxPrefixesConfig(Frozen):
    """`bgp.neighbors[].max_prefixes`: how many routes one peer may have accepted at once.

    At 90% of `limit` a warning is logged. A route beyond `limit` is refused
    (counted); with `action: teardown` the session is closed with NOTIFICATION
    Cease / Maximum Number of Prefixes Reached (RFC 4486 2) and the peer is
    left Idle for `restart_s` (connections from it refused) before it may
    connect again. Written as a mapping, or as a number (the limit alone).
    """

    limit: int = Field(default=DEFAULT_MAX_PREFIXES, ge=1)
    action: Literal["warn", "teardown"] = "warn"
    restart_s: float = Field(default=DEFAULT_MAX_PREFIXES_RESTART_S, gt=0, description="seconds")


def _max_prefixes(v: Any) -> Any:
    """`max_prefixes: 5000` is `max_prefixes: {limit: 5000}`."""
    return {"limit": v} if isinstance(v, int) and not isinstance(v, bool) else v
TCP_MD5SIG_MAXKEYLEN = 80  # linux/tcp.h


def _password(v: Any) -> Any:
    """`password`: checked without ever echoing it (no input in any error message)."""
    if v is None:
        return v
    if not isinstance(v, str):
        raise ValueError("must be a string (quote it)")
    size = len(v.encode())
    if not 1 <= size <= TCP_MD5SIG_MAXKEYLEN:
        raise ValueError(f"must be 1 to {TCP_MD5SIG_MAXKEYLEN} bytes (the kernel's TCP MD5 key limit), got {size}")
    return SecretStr(v)


class NeighborConfig(Frozen):
    address: IpAddress
    asn: int = Field(ge=1, le=0xFFFFFFFF)
    passive: bool = False
    port: int = Field(default=179, ge=1, le=65535)
    description: str = ""
    families: tuple[Family, ...] = ("evpn",)
    max_prefixes: Annotated[MaxPrefixesConfig, BeforeValidator(_max_prefixes)] = MaxPrefixesConfig()
    # TCP MD5 signatures (RFC 2385) with this key; a SecretStr: it prints as '**********'
    password: Annotated[SecretStr | None, BeforeValidator(_password)] = None
    ttl_security: bool = False  # GTSM (RFC 5082): send with TTL 255, accept only TTL 255 (directly connected)

    @property
    def md5_key(self) -> bytes | None:
        """The TCP MD5 key, for the socket options only."""
        return None if self.password is None else self.password.get_secret_value().encode()

    @field_validator("families")
    @classmethod
    def _families(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("name at least one of evpn, ipv4-unicast, ipv6-unicast")
        if len(set(v)) != len(v):
            raise ValueError(f"{sorted(f for f in v if v.count(f) > 1)[0]} is listed twice")
        return v


class MacMobilityConfig(Frozen):
    max_moves: int = Field(default=5, ge=1)
    window: float = Field(default=180.0, gt=0, description="seconds")
    freeze: float = Field(default=180.0, gt=0, description="seconds a duplicate MAC stays frozen")


class GracefulRestartConfig(Frozen):
    """RFC 4724, both roles: advertised with this restart time, and a peer that advertised it
    keeps its routes (stale) across its restart."""

    restart_time_s: int = Field(ge=1, le=4095, description="seconds (12 bits in the capability)")


class BgpConfig(Frozen):
    asn: int = Field(ge=1, le=0xFFFFFFFF)
    router_id: ipaddress.IPv4Address | None = None
    listen: IpAddress | None = None
    port: int = Field(default=179, ge=1, le=65535)
    hold_time: int = Field(default=9, ge=0, le=65535, description="seconds")
    connect_retry: float = Field(default=5.0, gt=0, description="seconds")
    neighbors: tuple[NeighborConfig, ...] = ()
    mac_mobility: MacMobilityConfig = MacMobilityConfig()
    graceful_restart: GracefulRestartConfig | None = None  # default: not advertised, no helper

    @field_validator("hold_time")
    @classmethod
    def _hold(cls, v: int) -> int:
        if 0 < v < 3:
            raise ValueError("must be 0 or at least 3 seconds (RFC 4271 4.2)")
        return v


class RoutingConfig(Frozen):
    """The routed (L3) overlay: this node's pod subnet(s), announced as EVPN type-5 routes."""

    vni: int = Field(ge=1, le=VNI_MAX)
    device: IfName = "ovl0"
    device_type: Literal["tun", "tap"] = "tun"
    network: IpNetwork
    subnet: IpNetwork | Literal["auto"]
    subnet_size: int | None = Field(default=None, ge=1, le=128, description="prefix length for `auto`")
    network6: IpNetwork | None = None
    subnet6: IpNetwork | None = None
    route_target: RouteTargetText = None
    router_mac: UnicastMac | None = None
    mac: UnicastMac | None = None  # the routing device's MAC (tap); default: the router MAC
    mtu: int | None = Field(default=None, ge=68, le=65535)
    ipmasq: bool = False
    backend: Literal["userspace", "kernel", "host-gw", "ipip", "native"] = "userspace"
    direct_routing: bool = False
    route_protocol: int = Field(default=DEFAULT_ROUTE_PROTOCOL, ge=0, le=255)
    install_routes: bool = False
    env_file: FilePath = "/run/overlayd/subnet.env"
    cni_conflist: FilePath | None = None  # write a bridge + host-local conflist for our subnet here
    cni_bridge: IfName = "cni0"

    @field_validator("route_protocol")
    @classmethod
    def _unassigned(cls, v: int) -> int:
        if v in ASSIGNED_ROUTE_PROTOCOLS:
            raise ValueError(
                f"{v} is the route protocol of {ASSIGNED_ROUTE_PROTOCOLS[v]}; pick an unassigned one "
                f"(default {DEFAULT_ROUTE_PROTOCOL})"
            )
        return v

    @model_validator(mode="after")
    def _backend_keys(self) -> RoutingConfig:
        b = self.backend
        given = self.model_fields_set
        if self.direct_routing and b not in TUNNEL_BACKENDS:
            raise ValueError(f"routing.direct_routing: applies to the tunnel backends "
                             f"({', '.join(TUNNEL_BACKENDS)}), not to backend {b}")
        if self.install_routes and b != "native":
            raise ValueError(f"routing.install_routes: applies to backend native, not to backend {b}")
        if "device_type" in given and b != "userspace":
            raise ValueError(f"routing.device_type: the {b} backend makes no TUN/TAP device; leave it out")
        if "device" in given and b in ("host-gw", "native"):
            raise ValueError(f"routing.device: the {b} backend creates no device; leave it out")
        return self

    @property
    def has_device(self) -> bool:
        """Whether this backend creates the routing device (`device`)."""
        return self.backend in TUNNEL_BACKENDS

    @model_validator(mode="after")
    def _fits(self) -> RoutingConfig:
        if self.subnet != "auto":
            if self.subnet.version != self.network.version or not self.subnet.subnet_of(self.network):
                raise ValueError(f"routing.subnet: {self.subnet} is not inside routing.network {self.network}")
        size = self.prefix_length
        if size < self.network.prefixlen or size > self.network.max_prefixlen:
            raise ValueError(f"routing.subnet_size: /{size} does not fit in routing.network {self.network}")
        if (self.subnet6 is None) != (self.network6 is None):
            raise ValueError("routing.subnet6: give both network6 and subnet6, or neither")
        if self.subnet6 is not None:
            if self.network6.version != 6 or not self.subnet6.subnet_of(self.network6):
                raise ValueError(f"routing.subnet6: {self.subnet6} is not inside routing.network6 {self.network6}")
        return self

    @property
    def prefix_length(self) -> int:
        """The size of a node subnet: the configured one, else `subnet_size`, else /24 (/64 for IPv6)."""
        if self.subnet != "auto":
            return self.subnet.prefixlen
        if self.subnet_size is not None:
            return self.subnet_size
        return 24 if self.network.version == 4 else 64


class ConntrackConfig(Frozen):
    """The userspace service path's connection tracking (`conntrack:`)."""

    max_entries: int = Field(default=65536, ge=16, le=10_000_000)


def _listen(v: Any) -> Any:
    """`metrics.listen`: "127.0.0.1:9477" or "[::1]:9477", an address of this host and a TCP port."""
    if not isinstance(v, str):
        return v  # the str type refuses it
    try:
        return format_endpoint(parse_endpoint(v))
    except ValueError as err:
        raise ValueError(f"{str(err).removeprefix('endpoint ')} (write 127.0.0.1:9477 or [::1]:9477; "
                         f"every address: 0.0.0.0:9477 or [::]:9477)") from None


class MetricsConfig(Frozen):
    """`metrics:`: serve Prometheus metrics over HTTP at `listen` (path /metrics)."""

    listen: Annotated[str, BeforeValidator(_listen)]

    @property
    def address(self) -> str:
        """The address to bind, without brackets."""
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


def _networks(v: Any) -> Any:
    """`services_network`: one CIDR or a list of them."""
    return [v] if isinstance(v, str) else v


class Config(Frozen):
    node: NodeConfig
    networks: tuple[NetworkConfig, ...] = ()
    bgp: BgpConfig | None = None
    routing: RoutingConfig | None = None
    services_network: Annotated[tuple[IpNetwork, ...], BeforeValidator(_networks)] = ()
    services: tuple[ServiceConfig, ...] = ()
    services_file: FilePath | None = None
    conntrack: ConntrackConfig = ConntrackConfig()
    metrics: MetricsConfig | None = None  # default: no metrics endpoint

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        if not self.networks and self.routing is None:
            raise ValueError("networks: required but missing (or configure `routing:`)")
        if self.routing is not None:
            r = self.routing
            if self.bgp is None:
                raise ValueError("routing: needs a `bgp:` section (subnets travel as EVPN type-5 routes)")
            for i, net in enumerate(self.networks):
                if net.vni == r.vni:
                    raise ValueError(f"routing.vni: {r.vni} is already used by networks[{i}]")
                if net.device == r.device and r.has_device:
                    raise ValueError(f"routing.device: {r.device} is already used by networks[{i}]")
            self._check_backends()
        for i, net in enumerate(self.networks):
            if net.backend != "kernel":
                continue
            for j, other in enumerate(self.networks):
                if other.device == net.vxlan_device:
                    raise ValueError(f"networks[{j}].device: {other.device} is the name of networks[{i}]'s "
                                     f"kernel VXLAN device")
            if self.routing is not None and self.routing.has_device and self.routing.device == net.vxlan_device:
                raise ValueError(f"routing.device: {self.routing.device} is the name of networks[{i}]'s "
                                 f"kernel VXLAN device")
        self._check_vxlan_port()
        for key in ("name", "vni", "device"):
            seen: dict[Any, int] = {}
            for i, net in enumerate(self.networks):
                value = getattr(net, key)
                if key == "device" and value in seen and net.trunk is not None \
                        and self.networks[seen[value]].trunk == net.trunk:
                    continue  # the VLANs of one trunk share its device
                if value in seen:
                    raise ValueError(
                        f"networks[{i}].{key}: {value} is already used by networks[{seen[value]}]"
                    )
                seen[value] = i
        family = self.node.family
        for i, net in enumerate(self.networks):
            remotes = [("vteps", a) for a in net.vteps] + [("fdb", e.vtep) for e in net.fdb]
            for field, addr in remotes:
                if addr.version != family:
                    raise ValueError(
                        f"networks[{i}].{field}: {addr} is IPv{addr.version} but node.vtep is IPv{family}"
                    )
                if addr == self.node.vtep:
                    raise ValueError(f"networks[{i}].{field}: {addr} is this node's own VTEP")
        self._check_services()
        if self.bgp is not None:
            if self.bgp.router_id is None and self.node.vtep.version != 4:
                raise ValueError("bgp.router_id: required when node.vtep is not IPv4")
            seen_peers: set[Any] = set()
            own = {self.node.vtep: "node.vtep"}
            if self.bgp.listen is not None:
                own.setdefault(self.bgp.listen, "bgp.listen")
            for i, nb in enumerate(self.bgp.neighbors):
                if nb.address in seen_peers:
                    raise ValueError(f"bgp.neighbors[{i}].address: {nb.address} is listed twice")
                if nb.address in own:
                    raise ValueError(f"bgp.neighbors[{i}].address: {nb.address} is this node's own address "
                                     f"({own[nb.address]})")
                seen_peers.add(nb.address)
        return self

    @property
    def cluster_networks(self) -> tuple:
        """routing.network and routing.network6 (the pods' addresses), or none."""
        r = self.routing
        return () if r is None else tuple(n for n in (r.network, r.network6) if n is not None)

    def _check_services(self) -> None:
        wanted = self.services or self.services_file or self.services_network
        if not wanted:
            return
        if self.routing is None:
            raise ValueError("services: need `routing:` (the VIPs are routed into overlayd's routing device "
                             "or the kernel's NAT on the pods' path)")
        if not self.services_network:
            raise ValueError("services_network: required with services (the VIPs' range)")
        check_services_network(self.services_network, self.cluster_networks)
        check_services(self.services, self.services_network, self.cluster_networks)

    def _check_backends(self) -> None:
        r = self.routing
        assert r is not None and self.bgp is not None
        families = {f for nb in self.bgp.neighbors for f in nb.families}
        if r.backend == "native":
            wanted = f"ipv{r.network.version}-unicast"
            if wanted not in families:
                raise ValueError(f"routing.backend: native announces {r.network} as {wanted} routes, "
                                 f"but no bgp.neighbors[] entry has {wanted} in its families")

    def _check_vxlan_port(self) -> None:
        """A kernel VXLAN device binds node.vxlan_port on every address: no userspace VXLAN beside it."""
        kernel: list[str] = [f"networks[{i}].backend" for i, n in enumerate(self.networks) if n.backend == "kernel"]
        userspace = [f"networks[{i}].backend" for i, n in enumerate(self.networks) if n.backend == "userspace"]
        if self.routing is not None:
            if self.routing.backend == "kernel":
                kernel.append("routing.backend")
            elif self.routing.backend == "userspace":
                userspace.append("routing.backend")
        if kernel and userspace:
            raise ValueError(
                f"{kernel[0]}: kernel VXLAN binds UDP port {self.node.vxlan_port} on every address, and "
                f"{userspace[0]} (userspace) needs that port too: use one VXLAN backend per node"
            )

    def uses_userspace_vxlan(self) -> bool:
        """Whether the daemon moves VXLAN itself (and needs the UDP sockets)."""
        return any(n.backend == "userspace" for n in self.networks) or (
            self.routing is not None and self.routing.backend == "userspace"
        )

    @property
    def router_id(self) -> ipaddress.IPv4Address:
        """The BGP identifier: bgp.router_id, or node.vtep when that is IPv4."""
        assert self.bgp is not None
        rid = self.bgp.router_id or self.node.vtep
        assert isinstance(rid, ipaddress.IPv4Address)
        return rid

    def route_target_for(self, net: NetworkConfig | RoutingConfig) -> str:
        """The network's route target: configured, or <asn>:<vni> (FRR's "auto")."""
        assert self.bgp is not None
        return net.route_target or f"{self.bgp.asn}:{net.vni}"

    def mtu_for(self, net: NetworkConfig, underlay_mtu: int) -> int:
        """The TAP MTU: configured, or what fits in the underlay after encapsulation."""
        return net.mtu or underlay_mtu - ENCAP_OVERHEAD[self.node.family]

    def routing_mtu(self, underlay_mtu: int) -> int:
        """The pods' MTU on the routed network: configured, or what the backend leaves of the underlay's."""
        r = self.routing
        assert r is not None
        if r.mtu:
            return r.mtu
        if r.backend in ("userspace", "kernel"):
            return underlay_mtu - ENCAP_OVERHEAD[self.node.family]
        if r.backend == "ipip":
            return underlay_mtu - IPIP_OVERHEAD[self.node.family]
        return underlay_mtu
