"""The etcd datastore at run time: network config, our lease, the others' leases.

`start()` (before setup): read `<prefix>/config`, take a subnet lease (our
own one again if etcd still has it, see control/leases.py) and return the
complete config (`config.datastore.resolve`). `attach()` (after setup):
feed the other nodes' leases into the subnet table. `run()`: renew, watch,
and come back after an outage:

- Renewal: a keep-alive every third of the TTL. While etcd does not answer
  (unreachable, no quorum) the state is `unavailable` since the first
  failure; nothing is withdrawn, forwarding goes on with the last table,
  and the keep-alive is retried every RETRY_S. When it answers again and
  our lease ran out meanwhile, the same subnet is taken again if still
  free; if another node took it, the node takes a new subnet (re-addresses
  its device, rewrites subnet.env, announces it), logs an error and says in
  status that its pods must be restarted.
- Watch: from the revision after the last one seen, so a reconnect loses no
  change; a compacted revision reads every lease again and applies the
  difference.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
from collections.abc import Callable

from overlayd.config import Config
from overlayd.config.datastore import FlannelNetwork, parse_flannel_config, resolve
from overlayd.config.fields import ConfigError
from overlayd.control.leases import (
    DatastoreSubnets,
    LeaseAdded,
    LeaseAttrs,
    LeaseValueError,
    RemoteLeases,
    Renewal,
    choose_subnet,
    lease_key,
    own_attrs,
    subnet_of_key,
)
from overlayd.control.routed import default_router_mac
from overlayd.fabric.prefixes import PrefixTable
from overlayd.io.etcd import Compacted, EtcdStore, EtcdUnavailable

log = logging.getLogger("overlayd.datastore")

START_TRIES = 30  # start: how many times to try etcd (a second apart) before giving up
CLAIM_TRIES = 64  # start: how many lost races before giving up


class DatastoreError(Exception):
    """The datastore refused us or never answered at start (the message names the key or endpoint)."""


class Datastore:
    def __init__(self, config: Config, clock: Callable[[], float], preferred: ipaddress.IPv4Network | None = None):
        assert config.datastore is not None
        self.ds = config.datastore
        self.config = config
        self.clock = clock
        self.preferred = preferred
        self.store = EtcdStore(self.ds)
        self.state = "connecting"
        self.since = clock()
        self.error: str | None = None
        self.network: FlannelNetwork | None = None  # `<prefix>/config`, as read at start
        self.subnet: ipaddress.IPv4Network | None = None
        self.key: str | None = None
        self.lease_id: int | None = None
        self.attrs: LeaseAttrs | None = None
        self.renewal: Renewal | None = None
        self.revision = 0
        self.remote = RemoteLeases(self.ds.subnets_prefix)
        self.subnets: DatastoreSubnets | None = None
        self.alarms: list[str] = []  # what an operator must act on (shown in status until a restart)
        self.on_move: Callable[[ipaddress.IPv4Network], None] | None = None  # the daemon follows a new subnet
        self.router_id: ipaddress.IPv4Address | None = None
        self.tasks: list[asyncio.Task] = []
        self._watch_task: asyncio.Task | None = None
        self._version = -1

    # -- start ---------------------------------------------------------------------------

    async def start(self) -> Config:
        last = None
        for _ in range(START_TRIES):
            try:
                return await self._start()
            except EtcdUnavailable as err:
                last = err
                self._unavailable(str(err))
                await asyncio.sleep(1)
        raise DatastoreError(f"datastore: no etcd endpoint answered ({', '.join(self.ds.endpoints)}): {last}")

    async def _start(self) -> Config:
        key = self.ds.config_key
        got = await self.store.get(key)
        if got is None:
            raise DatastoreError(f"{key}: missing; write flannel's network config there first "
                                 f"(etcdctl put {key} '{{\"Network\": \"10.244.0.0/16\", \"Backend\": "
                                 f"{{\"Type\": \"vxlan\"}}}}')")
        try:
            net = parse_flannel_config(got.value, key)
        except ConfigError as err:
            raise DatastoreError(str(err)) from None
        source = self.config
        public_ip = ipaddress.IPv4Address(str(source.node.vtep))
        router_id = source.bgp.router_id if source.bgp is not None and source.bgp.router_id else public_ip
        self.router_id = router_id
        for lost in range(CLAIM_TRIES):
            leases, raw = await self._leases()
            subnet, ours = choose_subnet(net.network, net.subnet_len, leases, public_ip, router_id,
                                         self.preferred, lost)
            try:
                resolved = resolve(source, net, subnet, key)
            except ConfigError as err:
                raise DatastoreError(str(err)) from None
            r = resolved.routing
            mac = bytes.fromhex(r.router_mac.replace(":", "")) if r.router_mac else default_router_mac(
                resolved.router_id)
            attrs = own_attrs(r.backend, public_ip, r.vni, mac)
            lease_id = await self.store.grant(self.ds.lease_ttl)
            skey = lease_key(self.ds.subnets_prefix, subnet)
            if ours:
                taken = await self.store.replace(skey, attrs.encode(), lease_id, raw[subnet].mod_revision)
            else:
                taken = await self.store.create(skey, attrs.encode(), lease_id)
            if taken:
                self.subnet, self.key, self.lease_id, self.attrs = subnet, skey, lease_id, attrs
                self.renewal = Renewal(self.ds.lease_ttl, self.clock())
                self._available()
                log.info("datastore: %s %s (lease %x, TTL %d s) of %s from %s", "kept" if ours else "took",
                         skey, lease_id, self.ds.lease_ttl, net.network, key)
                self.network = net
                return resolved
            await self.store.revoke(lease_id)
            log.info("datastore: %s was taken by another node first; choosing again", skey)
        raise DatastoreError(f"datastore: lost the race for a subnet {CLAIM_TRIES} times")

    async def _leases(self) -> tuple[dict, dict]:
        """Every lease in etcd: {subnet: LeaseAttrs} and {subnet: KeyValue}; bad ones logged and left out."""
        kvs, _ = await self.store.get_prefix(self.ds.subnets_prefix)
        leases, raw = {}, {}
        for kv in kvs:
            try:
                subnet = subnet_of_key(self.ds.subnets_prefix, kv.key)
                leases[subnet] = LeaseAttrs.decode(kv.value, kv.key)
                raw[subnet] = kv
            except LeaseValueError as err:
                log.warning("datastore: %s", err)
        return leases, raw

    # -- the others' leases -----------------------------------------------------------------

    async def attach(self, table: PrefixTable) -> None:
        """Read every lease into the subnet table; then `run()` keeps it current."""
        assert self.subnet is not None
        self.remote.own = self.subnet
        self.subnets = DatastoreSubnets(table, self.network.vni, self.subnet, self.ds.prefer)
        await self._reread()

    async def _reread(self) -> None:
        kvs, revision = await self.store.get_prefix(self.ds.subnets_prefix)
        snapshot = [(kv.key, kv.value) for kv in kvs if kv.key != self.key]
        assert self.subnets is not None
        self.subnets.apply(self.remote.reset(snapshot), self.clock())
        self.revision = revision
        self._report_errors()

    def _report_errors(self) -> None:
        while self.remote.errors:
            log.warning("datastore: ignored: %s", self.remote.errors.pop(0))

    async def _watch(self) -> None:
        assert self.subnets is not None
        failing = False  # log a broken watch once, not every second
        while True:
            try:
                async for ev in self.store.watch(self.ds.subnets_prefix, self.revision + 1):
                    failing = False
                    self.revision = max(self.revision, ev.revision)
                    if ev.key == self.key:
                        if ev.kind == "DELETE":
                            log.warning("datastore: our lease %s was deleted", ev.key)
                        continue
                    changes = self.remote.put(ev.key, ev.value) if ev.kind == "PUT" else self.remote.delete(ev.key)
                    for change in changes:
                        log.info("datastore: %s %s (%s)", "lease" if isinstance(change, LeaseAdded) else "lease gone:",
                                 change.subnet, change.attrs.public_ip)
                    self.subnets.apply(changes, self.clock())
                    self._report_errors()
                raise EtcdUnavailable("watch ended")
            except Compacted:
                log.warning("datastore: watch revision %d was compacted: reading every lease again",
                            self.revision + 1)
                try:
                    await self._reread()
                except EtcdUnavailable as err:
                    self._unavailable(str(err))
                    await asyncio.sleep(1)
            except EtcdUnavailable as err:  # the state follows the renewals; this only retries
                if not failing:
                    log.warning("datastore: watch: %s; retrying every second from revision %d",
                                err, self.revision + 1)
                failing = True
                await asyncio.sleep(1)
                continue
            failing = False

    # -- renewal --------------------------------------------------------------------------

    async def run(self) -> None:
        self._watch_task = asyncio.get_running_loop().create_task(self._watch())
        try:
            while True:
                await asyncio.sleep(0.5)
                if self.subnets is not None and self.subnets.table.version != self._version:
                    self._version = self.subnets.table.version
                    self.subnets.settle(self.clock())  # BGP changed: `prefer` and the conflicts
                    self._version = self.subnets.table.version
                if self.renewal is not None and self.renewal.due(self.clock()):
                    await self._renew()
        finally:
            self._watch_task.cancel()

    async def _renew(self) -> None:
        assert self.renewal is not None and self.lease_id is not None
        now = self.clock()
        try:
            left = await self.store.refresh(self.lease_id)
            if left <= 0:
                await self._retake()
            else:
                if self.state != "available":
                    log.info("datastore: etcd answers again at %s; lease renewed", self.store.endpoint)
                self.renewal.renewed(now)
                self._available()
        except EtcdUnavailable as err:
            self.renewal.failed(now)
            self._unavailable(str(err))

    async def _retake(self) -> None:
        """Our lease ran out while etcd was away: take the same subnet again if it is free."""
        assert self.key is not None and self.attrs is not None and self.renewal is not None
        lease_id = await self.store.grant(self.ds.lease_ttl)
        if await self.store.create(self.key, self.attrs.encode(), lease_id):
            self.lease_id = lease_id
            self.renewal.renewed(self.clock())
            self._available()
            log.warning("datastore: our lease had expired; took %s again", self.key)
            return
        await self.store.revoke(lease_id)
        got = await self.store.get(self.key)
        holder = LeaseAttrs.decode(got.value, self.key).public_ip if got is not None else "?"
        if got is not None and str(holder) == str(self.attrs.public_ip):  # our own key after all: adopt it
            self.lease_id = got.lease
            self.renewal.renewed(self.clock())
            self._available()
            return
        await self._move(holder)

    async def _move(self, holder) -> None:
        """Another node took our subnet while our lease had expired: take a new one, as at start."""
        assert self.attrs is not None and self.renewal is not None and self.subnet is not None
        old = self.subnet
        for lost in range(CLAIM_TRIES):
            leases, _ = await self._leases()
            leases = {s: a for s, a in leases.items() if a.public_ip != self.attrs.public_ip or s == old}
            subnet, _ = choose_subnet(self.network.network, self.network.subnet_len, leases, self.attrs.public_ip,
                                      self.router_id, None, lost)
            lease_id = await self.store.grant(self.ds.lease_ttl)
            key = lease_key(self.ds.subnets_prefix, subnet)
            if await self.store.create(key, self.attrs.encode(), lease_id):
                break
            await self.store.revoke(lease_id)
        else:
            raise EtcdUnavailable(f"lost the race for a new subnet {CLAIM_TRIES} times")
        self.subnet, self.key, self.lease_id = subnet, key, lease_id
        self.renewal.renewed(self.clock())
        self.remote.own = subnet
        if self.subnets is not None:
            self.subnets.move(subnet, self.clock())
        if self.on_move is not None:
            self.on_move(subnet)
        self._available()
        self.alarms.append(f"our subnet {old} was taken by {holder} while our lease had expired: moved to "
                           f"{subnet}; restart this node's pods (their addresses are in {old})")
        del self.alarms[:-10]
        log.error("datastore: %s", self.alarms[-1])

    # -- state --------------------------------------------------------------------------

    def _set(self, state: str, error: str | None) -> None:
        if state != self.state:
            self.since = self.clock()
        self.state, self.error = state, error

    def _available(self) -> None:
        self._set("available", None)

    def _unavailable(self, why: str) -> None:
        if self.state != "unavailable":
            log.error("datastore: etcd unavailable (%s); forwarding goes on with the last known state", why)
        self._set("unavailable", why)

    def summary(self, now: float) -> dict:
        return {
            "type": self.ds.type,
            "endpoints": list(self.ds.endpoints),
            "endpoint": self.store.endpoint,
            "prefix": self.ds.prefix,
            "state": self.state,
            "since_s": round(now - self.since, 1),
            "error": self.error,
            "lease": self.key,
            "lease_ttl_s": self.ds.lease_ttl,
            "lease_expires_in_s": round(max(0.0, self.renewal.expires_at - now), 1) if self.renewal else None,
            "revision": self.revision,
            "leases": len(self.remote.leases),
            "prefer": self.ds.prefer,
            "conflicts": list(self.subnets.conflicts) if self.subnets else [],
            "alarms": list(self.alarms),
        }

    async def close(self) -> None:
        for task in (self._watch_task, *self.tasks):
            if task is not None:
                task.cancel()
        if self.ds.release_on_stop and self.key is not None and self.lease_id is not None:
            try:
                await self.store.revoke(self.lease_id)  # deletes our key with it
                log.info("datastore: released %s (datastore.release_on_stop)", self.key)
            except EtcdUnavailable as err:
                log.warning("datastore: could not release %s: %s", self.key, err)
        await self.store.close()
