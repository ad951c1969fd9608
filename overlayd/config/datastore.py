"""`datastore:`: cluster state in etcd, in flannel's keys and meaning.

With a datastore, `routing:` may leave out `network`, `subnet`, `vni` and
`backend`: the network config at `<prefix>/config` (flannel's JSON) gives
them, and the subnet is this node's lease under `<prefix>/subnets/`.
So a config with a datastore is validated in two steps: `Config` keeps the
document it was given (`datastore_source`) and leaves `routing` empty; once
the daemon has read `<prefix>/config` and taken a lease, `resolve()` fills
`routing` in and validates the whole document again, through the same
model, so every error names the field, and the etcd key where the value
came from.

flannel's network config (https://github.com/flannel-io/flannel, docs/configuration.md):

    {"Network": "10.244.0.0/16", "SubnetLen": 24,
     "Backend": {"Type": "vxlan", "VNI": 1, "Port": 8472, "DirectRouting": false}}

`Backend.Type`: `vxlan` -> VXLAN (overlayd's `userspace` or `kernel`, as
`routing.backend` says locally; default userspace), `host-gw` -> host-gw,
`ipip` -> ipip. `udp` is flannel's own encapsulation, not VXLAN: refused.
Missing `VNI` means 1, missing `Port` 8472, missing `SubnetLen` 24 (as flannel).
"""

from __future__ import annotations

import copy
import ipaddress
import json
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from overlayd.config.fields import ConfigError, FilePath, Frozen

FLANNEL_VXLAN_PORT = 8472
BACKEND_OF_FLANNEL = {"vxlan": None, "host-gw": "host-gw", "ipip": "ipip"}  # None: keep the local choice
VXLAN_BACKENDS = ("userspace", "kernel")


class DatastoreTls(Frozen):
    """etcd's TLS client certificate (all three, or none)."""

    ca_file: FilePath
    cert_file: FilePath
    key_file: FilePath


class DatastoreConfig(Frozen):
    type: Literal["etcd"]
    endpoints: tuple[str, ...] = Field(min_length=1)  # host:port (or http(s)://host:port)
    prefix: str = "/coreos.com/network"
    lease_ttl: int = Field(default=86400, ge=5, le=10 * 86400, description="seconds")
    release_on_stop: bool = False
    prefer: Literal["etcd", "bgp"] = "etcd"  # where BGP and etcd name the same subnet
    tls: DatastoreTls | None = None

    @property
    def config_key(self) -> str:
        return f"{self.prefix.rstrip('/')}/config"

    @property
    def subnets_prefix(self) -> str:
        return f"{self.prefix.rstrip('/')}/subnets/"


@dataclass(frozen=True)
class FlannelNetwork:
    """`<prefix>/config`, validated."""

    network: ipaddress.IPv4Network
    subnet_len: int
    backend_type: str  # vxlan, host-gw, ipip
    vni: int
    port: int
    direct_routing: bool


def parse_flannel_config(text: bytes | str, key: str) -> FlannelNetwork:
    """flannel's network config JSON; a bad value raises ConfigError naming `key` and the field."""
    try:
        doc = json.loads(text)
    except (ValueError, UnicodeDecodeError) as err:
        raise ConfigError(f"{key}: not valid JSON: {err}") from None
    if not isinstance(doc, dict):
        raise ConfigError(f"{key}: must be a JSON object with Network, SubnetLen and Backend")
    if doc.get("EnableIPv6") or doc.get("IPv6Network"):
        raise ConfigError(f"{key}: IPv6Network: IPv6 leases are not supported yet; leave it out")
    raw = doc.get("Network")
    if not isinstance(raw, str):
        raise ConfigError(f"{key}: Network: required, a string such as \"10.244.0.0/16\"; got {raw!r}")
    try:
        network = ipaddress.IPv4Network(raw)
    except ValueError as err:
        raise ConfigError(f"{key}: Network: {raw!r} is not an IPv4 network: {err}") from None
    subnet_len = doc.get("SubnetLen", 24)
    if not isinstance(subnet_len, int) or isinstance(subnet_len, bool) or not network.prefixlen < subnet_len <= 30:
        raise ConfigError(f"{key}: SubnetLen: {subnet_len!r} must be an integer longer than Network's "
                          f"/{network.prefixlen} and at most 30")
    backend = doc.get("Backend", {"Type": "vxlan"})
    if not isinstance(backend, dict):
        raise ConfigError(f"{key}: Backend: must be an object with Type")
    kind = backend.get("Type", "vxlan")
    if kind == "udp":
        raise ConfigError(f"{key}: Backend.Type: udp is flannel's own encapsulation, not VXLAN; overlayd "
                          f"does not speak it (use vxlan, host-gw or ipip)")
    if kind not in BACKEND_OF_FLANNEL:
        raise ConfigError(f"{key}: Backend.Type: {kind!r} is not one of vxlan, host-gw, ipip")
    vni = backend.get("VNI", 1)
    if not isinstance(vni, int) or isinstance(vni, bool) or not 1 <= vni <= 0xFFFFFF:
        raise ConfigError(f"{key}: Backend.VNI: {vni!r} must be an integer from 1 to 16777215")
    port = backend.get("Port", FLANNEL_VXLAN_PORT)
    if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
        raise ConfigError(f"{key}: Backend.Port: {port!r} must be a UDP port, 1 to 65535")
    direct = backend.get("DirectRouting", False)
    if not isinstance(direct, bool):
        raise ConfigError(f"{key}: Backend.DirectRouting: {direct!r} must be true or false")
    return FlannelNetwork(network, subnet_len, kind, vni, port, direct)


def routing_of(source: dict, net: FlannelNetwork, subnet: ipaddress.IPv4Network, key: str) -> dict:
    """The `routing:` section from the local one and the network config (what `resolve` validates)."""
    local = dict(source.get("routing") or {})
    if "subnet" in local or "subnet_size" in local:
        raise ConfigError("routing.subnet: with a datastore the subnet is this node's lease; leave it "
                          "(and subnet_size) out")
    for field, value in (("network", net.network), ("vni", net.vni)):
        if field in local and str(local[field]) != str(value):
            raise ConfigError(f"routing.{field}: {local[field]} differs from {value} in {key}; leave it out")
    wanted = BACKEND_OF_FLANNEL[net.backend_type]
    backend = local.get("backend")
    if wanted is None:  # vxlan: userspace or kernel, as the local config says
        if backend is not None and backend not in VXLAN_BACKENDS:
            raise ConfigError(f"routing.backend: {backend} is not a VXLAN backend, but {key} says "
                              f"Backend.Type vxlan (use userspace or kernel)")
        backend = backend or "userspace"
    elif backend is not None and backend != wanted:
        raise ConfigError(f"routing.backend: {backend} differs from Backend.Type {net.backend_type} in {key}")
    else:
        backend = wanted
    merged = {**local, "network": str(net.network), "subnet": str(subnet), "vni": net.vni, "backend": backend}
    if net.direct_routing and backend in VXLAN_BACKENDS:
        merged["direct_routing"] = True
    return merged


def resolve(config: Any, net: FlannelNetwork, subnet: ipaddress.IPv4Network, key: str) -> Any:
    """The complete Config: the document the daemon was given, with `routing:` from `net` and our lease
    `subnet`, `node.vxlan_port` from Backend.Port (unless set locally), and a BGP speaker without
    neighbors when the document has no `bgp:` (the subnet table and the backends hang off it)."""
    from overlayd.config import parse_config

    source = copy.deepcopy(config.datastore_source)
    source["routing"] = routing_of(source, net, subnet, key)
    node = dict(source.get("node") or {})
    if net.backend_type == "vxlan" and "vxlan_port" not in node:
        node["vxlan_port"] = net.port
    source["node"] = node
    if source.get("bgp") is None:
        source["bgp"] = {"asn": 64512, "neighbors": []}
    source["datastore_key"] = key
    source.pop("datastore_source", None)
    try:
        return parse_config(source)
    except ConfigError as err:
        raise ConfigError(f"{err} (with the network config from {key})") from None
