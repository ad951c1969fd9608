"""Subnet leases in etcd, flannel's way, without I/O.

flannel keeps one lease per node under `<prefix>/subnets/`, the subnet in
the key with `-` for `/` (`/coreos.com/network/subnets/10.244.1.0-24`) and
the node in the value (flannel's `LeaseAttrs`, pkg/lease/lease.go):

    {"PublicIP": "192.0.2.1", "PublicIPv6": null, "BackendType": "vxlan",
     "BackendData": {"VNI": 1, "VtepMAC": "02:00:c0:00:02:01"}}

The key is bound to an etcd lease with the TTL, so etcd deletes it when the
node stops renewing. This module holds the decisions; `io/etcd.py` moves
the bytes:

- `choose_subnet`: which subnet to claim. Our own lease first (a key whose
  PublicIP is ours: the same node after a restart keeps its subnet), then
  the subnet from before (subnet.env), then a free one picked by
  `fabric.subnets.SubnetLease` (a hash of the router ID, so nodes tend to
  pick apart). The claim itself is an etcd transaction "create only if
  absent"; a node that loses it chooses again with the winner's key taken.
- `Renewal`: when to renew (a third of the TTL after the last success, and
  every few seconds after a failure), and when the lease has expired
  (renewal failed for a whole TTL: take it again when etcd is back).
- `RemoteLeases`: the other nodes' leases, from a full read (`reset`) and
  from watch events (`put`, `delete`); each returns the changes for the
  subnet table, so the same leases give the same table whatever the order.
  A value that does not parse is reported with its key and ignored.
- `DatastoreSubnets`: applies those changes to the subnet table
  (`fabric.prefixes`) as `Source.STATIC` candidates, so a subnet that etcd
  and a BGP type-5 route both name goes to etcd's node (`prefer: etcd`), or
  to BGP's (`prefer: bgp`: the lease's candidate stays out while a BGP
  candidate exists); either way the conflict is listed in `conflicts`.

Time is a parameter everywhere.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network

from overlayd.fabric.fdb import Source
from overlayd.fabric.prefixes import PrefixEntry, PrefixTable
from overlayd.fabric.subnets import SubnetLease

ENCAP_OF_BACKEND_TYPE = {"vxlan": "vxlan", "ipip": "ipip", "host-gw": "none"}
BACKEND_TYPE_OF_BACKEND = {"userspace": "vxlan", "kernel": "vxlan", "ipip": "ipip", "host-gw": "host-gw"}
RETRY_S = 2.0  # renewal retry after a failure (at most; a short TTL retries sooner)


class LeaseValueError(ValueError):
    """A lease under `<prefix>/subnets/` that is not flannel's layout; the message names the key."""


def lease_key(subnets_prefix: str, subnet: IPv4Network) -> str:
    """`<prefix>/subnets/10.244.1.0-24`."""
    return f"{subnets_prefix}{subnet.network_address}-{subnet.prefixlen}"


def subnet_of_key(subnets_prefix: str, key: str) -> IPv4Network:
    if not key.startswith(subnets_prefix):
        raise LeaseValueError(f"{key}: not under {subnets_prefix}")
    name = key[len(subnets_prefix):]
    address, dash, length = name.rpartition("-")
    try:
        if not dash:
            raise ValueError("no '-'")
        return IPv4Network(f"{address}/{int(length)}")
    except ValueError as err:
        raise LeaseValueError(f"{key}: not a subnet key like 10.244.1.0-24: {err}") from None


@dataclass(frozen=True, slots=True)
class LeaseAttrs:
    """flannel's LeaseAttrs: who holds a subnet and how it takes traffic."""

    public_ip: IPv4Address
    backend_type: str  # vxlan, host-gw, ipip
    vni: int | None = None  # BackendData.VNI (vxlan)
    vtep_mac: str | None = None  # BackendData.VtepMAC (vxlan), aa:bb:cc:dd:ee:ff

    def encode(self) -> bytes:
        doc: dict = {"PublicIP": str(self.public_ip), "PublicIPv6": None, "BackendType": self.backend_type}
        if self.backend_type == "vxlan":
            doc["BackendData"] = {"VNI": self.vni, "VtepMAC": self.vtep_mac}
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, value: bytes | str, key: str) -> LeaseAttrs:
        try:
            doc = json.loads(value)
            public_ip = IPv4Address(doc["PublicIP"])
            kind = doc.get("BackendType") or "vxlan"
            data = doc.get("BackendData") or {}
            if not isinstance(data, dict):
                raise TypeError("BackendData is not an object")
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
            raise LeaseValueError(f"{key}: not a flannel lease: {err!r}") from None
        if kind not in ENCAP_OF_BACKEND_TYPE:
            raise LeaseValueError(f"{key}: BackendType {kind!r}: not vxlan, host-gw or ipip")
        vni, mac = data.get("VNI"), data.get("VtepMAC")
        if kind == "vxlan" and (
            not isinstance(vni, int) or not isinstance(mac, str) or len(bytes.fromhex(_hex(mac, key))) != 6
        ):
            raise LeaseValueError(f"{key}: BackendData: VNI and VtepMAC are required for vxlan, got {data!r}")
        return cls(public_ip, kind, vni if kind == "vxlan" else None, mac if kind == "vxlan" else None)


def _hex(mac: str, key: str) -> str:
    text = mac.replace(":", "")
    try:
        bytes.fromhex(text)
    except ValueError:
        raise LeaseValueError(f"{key}: BackendData.VtepMAC {mac!r} is not a MAC address") from None
    return text


def choose_subnet(
    network: IPv4Network,
    subnet_len: int,
    leases: Mapping[IPv4Network, LeaseAttrs],
    public_ip: IPv4Address,
    router_id: IPv4Address,
    preferred: IPv4Network | None = None,
    lost: int = 0,
) -> tuple[IPv4Network, bool]:
    """The subnet to claim and whether it is already ours (a lease with our PublicIP).

    As flannel, the network's first subnet (holding the network address) is never leased.
    Raises `fabric.subnets.NetworkExhausted` when none is free.
    """
    for subnet, attrs in sorted(leases.items()):
        if attrs.public_ip == public_ip and subnet.subnet_of(network) and subnet.prefixlen == subnet_len:
            return subnet, True
    if preferred is not None and (preferred.prefixlen != subnet_len or not preferred.subnet_of(network)):
        preferred = None
    picker = SubnetLease(network, subnet_len, router_id, preferred=preferred)
    picker.lost = lost
    first = next(network.subnets(new_prefix=subnet_len))
    return picker.choose([first, *leases]), False


@dataclass
class Renewal:
    """When our lease is renewed, and whether it has run out (fake time: pass `now`)."""

    ttl_s: float
    granted_at: float
    last_ok: float = field(init=False)
    failing_since: float | None = None
    next_at: float = field(init=False)

    def __post_init__(self) -> None:
        self.last_ok = self.granted_at
        self.next_at = self.granted_at + self.ttl_s / 3

    @property
    def expires_at(self) -> float:
        return self.last_ok + self.ttl_s

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def renewed(self, now: float) -> None:
        self.last_ok = now
        self.failing_since = None
        self.next_at = now + self.ttl_s / 3

    def failed(self, now: float) -> None:
        if self.failing_since is None:
            self.failing_since = now
        self.next_at = now + min(RETRY_S, self.ttl_s / 10)

    def expired(self, now: float) -> bool:
        return now >= self.expires_at


@dataclass(frozen=True, slots=True)
class LeaseAdded:
    subnet: IPv4Network
    attrs: LeaseAttrs


@dataclass(frozen=True, slots=True)
class LeaseRemoved:
    subnet: IPv4Network
    attrs: LeaseAttrs


LeaseChange = LeaseAdded | LeaseRemoved


class RemoteLeases:
    """Every other node's lease, as etcd has them; changes come back as LeaseAdded / LeaseRemoved."""

    def __init__(self, subnets_prefix: str, own: IPv4Network | None = None):
        self.subnets_prefix = subnets_prefix
        self.own = own
        self.leases: dict[IPv4Network, LeaseAttrs] = {}
        self.errors: list[str] = []  # the last bad values, by key

    def reset(self, snapshot: Iterable[tuple[str, bytes]]) -> list[LeaseChange]:
        """A full read (the first, or after a compacted watch): the changes from what we had."""
        new: dict[IPv4Network, LeaseAttrs] = {}
        for key, value in snapshot:
            parsed = self._parse(key, value)
            if parsed is not None:
                new[parsed[0]] = parsed[1]
        changes: list[LeaseChange] = []
        for subnet, attrs in sorted(self.leases.items()):
            if new.get(subnet) != attrs:
                changes.append(LeaseRemoved(subnet, attrs))
        for subnet, attrs in sorted(new.items()):
            if self.leases.get(subnet) != attrs:
                changes.append(LeaseAdded(subnet, attrs))
        self.leases = new
        return changes

    def put(self, key: str, value: bytes) -> list[LeaseChange]:
        parsed = self._parse(key, value)
        if parsed is None:
            return self.delete(key)
        subnet, attrs = parsed
        old = self.leases.get(subnet)
        if old == attrs:
            return []
        self.leases[subnet] = attrs
        return ([LeaseRemoved(subnet, old)] if old is not None else []) + [LeaseAdded(subnet, attrs)]

    def delete(self, key: str) -> list[LeaseChange]:
        try:
            subnet = subnet_of_key(self.subnets_prefix, key)
        except LeaseValueError:
            return []
        old = self.leases.pop(subnet, None)
        return [LeaseRemoved(subnet, old)] if old is not None else []

    def _parse(self, key: str, value: bytes) -> tuple[IPv4Network, LeaseAttrs] | None:
        try:
            subnet = subnet_of_key(self.subnets_prefix, key)
            attrs = LeaseAttrs.decode(value, key)
        except LeaseValueError as err:
            self.errors.append(str(err))
            del self.errors[:-20]
            return None
        return subnet, attrs


def entry_of(subnet: IPv4Network, attrs: LeaseAttrs, default_vni: int) -> PrefixEntry:
    """The subnet table's candidate for another node's lease."""
    mac = bytes.fromhex(attrs.vtep_mac.replace(":", "")) if attrs.vtep_mac else None
    return PrefixEntry(
        prefix=subnet, vtep=str(attrs.public_ip), router_mac=mac,
        vni=attrs.vni if attrs.vni is not None else default_vni, node=str(attrs.public_ip), peer="etcd",
        source=Source.STATIC, encap=ENCAP_OF_BACKEND_TYPE[attrs.backend_type],
    )


class DatastoreSubnets:
    """Keeps the subnet table's etcd candidates equal to the other nodes' leases (see the module docstring)."""

    def __init__(self, table: PrefixTable, vni: int, own: IPv4Network, prefer: str = "etcd"):
        self.table = table
        self.vni = vni
        self.own = own
        self.prefer = prefer
        self.leases: dict[IPv4Network, LeaseAttrs] = {}
        self.installed: dict[IPv4Network, PrefixEntry] = {}
        self.conflicts: list[str] = []

    def apply(self, changes: Iterable[LeaseChange], now: float) -> None:
        for change in changes:
            if isinstance(change, LeaseAdded):
                self.leases[change.subnet] = change.attrs
            elif self.leases.get(change.subnet) == change.attrs:
                del self.leases[change.subnet]
        self.settle(now)

    def settle(self, now: float) -> None:
        """Install what should be installed, remove the rest; list the conflicts with BGP."""
        conflicts: list[str] = []
        wanted: dict[IPv4Network, PrefixEntry] = {}
        for subnet, attrs in sorted(self.leases.items()):
            if subnet.overlaps(self.own):
                conflicts.append(f"etcd lease {subnet} of {attrs.public_ip} overlaps our subnet {self.own}: "
                                 f"ignored")
                continue
            entry = entry_of(subnet, attrs, self.vni)
            bgp = [c for c in self.table.candidates(subnet) if c.source is Source.BGP and c.node != entry.node]
            if bgp:
                winner = "etcd" if self.prefer == "etcd" else "BGP"
                conflicts.append(f"subnet {subnet}: etcd says node {entry.node}, BGP says node "
                                 f"{', '.join(c.node for c in bgp)}; {winner} wins (datastore.prefer)")
                if self.prefer == "bgp":
                    continue
            wanted[subnet] = entry
        for subnet, entry in list(self.installed.items()):
            if wanted.get(subnet) != entry:
                self.table.remove(subnet, source=Source.STATIC, node=entry.node)
                del self.installed[subnet]
        for subnet, entry in wanted.items():
            if subnet not in self.installed:
                self.table.install(entry, now)
                self.installed[subnet] = entry
        self.conflicts = conflicts

    def move(self, own: IPv4Network, now: float) -> None:
        self.own = own
        self.settle(now)


def own_attrs(backend: str, public_ip: IPv4Address | str, vni: int, router_mac: bytes) -> LeaseAttrs:
    """Our lease's value: BackendType from our backend, VtepMAC = our router MAC."""
    kind = BACKEND_TYPE_OF_BACKEND[backend]
    mac = ":".join(f"{b:02x}" for b in router_mac)
    return LeaseAttrs(ipaddress.IPv4Address(public_ip), kind, vni if kind == "vxlan" else None,
                      mac if kind == "vxlan" else None)
