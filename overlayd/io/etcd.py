"""etcd v3 over gRPC, the few calls the datastore needs, with aetcd (asyncio).

Why aetcd: it is the maintained asyncio etcd v3 client on PyPI (1.0.0,
2026; the successor of aioetcd3 / etcd3aio), speaks etcd's own gRPC API
(transactions, leases, watches with a start revision, compaction reported
as `RevisionCompactedError`), and its only dependencies are grpcio and
protobuf. It talks to one endpoint and has no TLS switch, so this adapter
keeps the endpoint list (on a failure the next call goes to the next
endpoint) and, with `datastore.tls`, opens the gRPC channel with the
client certificate itself.

Every call has a short deadline (CALL_TIMEOUT_S) and is tried on each
endpoint in turn: an unreachable etcd (or one without quorum) shows as an
`EtcdUnavailable` within seconds, never as a hang.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aetcd
import aetcd.exceptions
import aetcd.rpc
import aetcd.watcher
import grpc

from overlayd.config.datastore import DatastoreConfig

log = logging.getLogger("overlayd.datastore")

CALL_TIMEOUT_S = 3


class EtcdUnavailable(Exception):
    """No endpoint answered (unreachable, no quorum, or a deadline passed)."""


class Compacted(Exception):
    """The watch's start revision was compacted: read everything again."""


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: bytes
    mod_revision: int
    lease: int


@dataclass(frozen=True)
class WatchEvent:
    kind: str  # "PUT" or "DELETE"
    key: str
    value: bytes
    revision: int


class _TlsClient(aetcd.Client):
    """aetcd's client over a TLS channel with a client certificate."""

    def __init__(self, host: str, port: int, credentials: grpc.ChannelCredentials, **kw):
        super().__init__(host, port, **kw)
        self._credentials = credentials

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        self.channel = grpc.aio.secure_channel(f"{self._host}:{self._port}", self._credentials,
                                               options=list(self._options.items()))
        self.kvstub = aetcd.rpc.KVStub(self.channel)
        self.clusterstub = aetcd.rpc.ClusterStub(self.channel)
        self.leasestub = aetcd.rpc.LeaseStub(self.channel)
        self.maintenancestub = aetcd.rpc.MaintenanceStub(self.channel)
        self._watcher = aetcd.watcher.Watcher(aetcd.rpc.WatchStub(self.channel), timeout=self._timeout,
                                              metadata=self.metadata)
        self._connected.set()


def _host_port(endpoint: str) -> tuple[str, int]:
    text = endpoint.split("://", 1)[-1].rstrip("/")
    host, _, port = text.rpartition(":")
    if not host:
        return text, 2379
    return host.strip("[]"), int(port)


class EtcdStore:
    """The datastore's etcd calls; `endpoint` is the one in use."""

    def __init__(self, config: DatastoreConfig):
        self.config = config
        self.index = 0
        self.client: aetcd.Client | None = None
        self._credentials = None
        if config.tls is not None:
            self._credentials = grpc.ssl_channel_credentials(
                root_certificates=Path(config.tls.ca_file).read_bytes(),
                private_key=Path(config.tls.key_file).read_bytes(),
                certificate_chain=Path(config.tls.cert_file).read_bytes(),
            )

    @property
    def endpoint(self) -> str:
        return self.config.endpoints[self.index]

    def _client(self) -> aetcd.Client:
        if self.client is None:
            host, port = _host_port(self.endpoint)
            if self._credentials is not None:
                self.client = _TlsClient(host, port, self._credentials, timeout=CALL_TIMEOUT_S)
            else:
                self.client = aetcd.Client(host, port, timeout=CALL_TIMEOUT_S)
        return self.client

    async def failover(self) -> None:
        """Drop the connection; the next call goes to the next endpoint."""
        client, self.client = self.client, None
        self.index = (self.index + 1) % len(self.config.endpoints)
        if client is not None:
            try:
                await asyncio.wait_for(client.close(), CALL_TIMEOUT_S)
            except Exception as err:  # noqa: BLE001 - closing a broken channel may fail in many ways
                log.debug("datastore: closing the connection: %r", err)

    async def _call(self, what: str, coro_fn):
        """One call, tried on each endpoint in turn until one answers (a member down is no outage)."""
        failures = []
        for _ in self.config.endpoints:
            try:
                return await asyncio.wait_for(coro_fn(self._client()), CALL_TIMEOUT_S + 1)
            except (aetcd.exceptions.ClientError, grpc.RpcError, TimeoutError, OSError) as err:
                if isinstance(err, aetcd.exceptions.RevisionCompactedError):
                    raise
                failures.append(f"{self.endpoint}: {type(err).__name__} {err}".strip())
                await self.failover()
        raise EtcdUnavailable(f"{what}: " + "; ".join(failures))

    async def get(self, key: str) -> KeyValue | None:
        got = await self._call(f"get {key}", lambda c: c.get(key.encode()))
        if got is None:
            return None
        return KeyValue(key, got.value, got.mod_revision, got.lease)

    async def get_prefix(self, prefix: str) -> tuple[list[KeyValue], int]:
        """Every key under `prefix`, and the store's revision they are as of."""
        got = await self._call(f"get --prefix {prefix}", lambda c: c.get_prefix(prefix.encode()))
        kvs = [KeyValue(kv.key.decode(), kv.value, kv.mod_revision, kv.lease) for kv in got]
        return kvs, got.header.revision

    async def grant(self, ttl_s: int) -> int:
        lease = await self._call("lease grant", lambda c: c.lease(ttl_s))
        return lease.id

    async def refresh(self, lease_id: int) -> int:
        """Renew; returns the TTL left, <= 0 when the lease is gone (expired or revoked)."""
        reply = await self._call("lease keep-alive", lambda c: c.refresh_lease(lease_id))
        return reply.TTL if reply is not None else 0

    async def revoke(self, lease_id: int) -> None:
        await self._call("lease revoke", lambda c: c.revoke_lease(lease_id))

    async def create(self, key: str, value: bytes, lease_id: int) -> bool:
        """Put `key` only if it does not exist (a transaction); whether it was created."""
        return await self._put_if(f"create {key}", key, value, lease_id, lambda c: c.transactions.create, 0)

    async def replace(self, key: str, value: bytes, lease_id: int, mod_revision: int) -> bool:
        """Rewrite `key` (our own lease, taken over after a restart) if nobody changed it since."""
        return await self._put_if(f"replace {key}", key, value, lease_id, lambda c: c.transactions.mod,
                                  mod_revision)

    async def _put_if(self, what: str, key: str, value: bytes, lease_id: int, field, revision: int) -> bool:
        """One transaction: put `key` if its create/mod revision (`field`) equals `revision`."""
        async def txn(c):
            ok, _ = await c.transaction(compare=[field(c)(key.encode()) == revision],
                                        success=[c.transactions.put(key.encode(), value, lease=lease_id)],
                                        failure=[])
            return ok
        return await self._call(what, txn)

    async def delete(self, key: str) -> None:
        await self._call(f"delete {key}", lambda c: c.delete(key.encode()))

    async def watch(self, prefix: str, start_revision: int) -> AsyncIterator[WatchEvent]:
        """Every change under `prefix` from `start_revision` on; raises Compacted or EtcdUnavailable."""
        try:
            watch = await asyncio.wait_for(
                self._client().watch_prefix(prefix.encode(), start_revision=start_revision), CALL_TIMEOUT_S + 1)
        except aetcd.exceptions.RevisionCompactedError:
            raise Compacted() from None
        except (aetcd.exceptions.ClientError, grpc.RpcError, TimeoutError, OSError) as err:
            await self.failover()
            raise EtcdUnavailable(f"watch {prefix}: {type(err).__name__} {err}") from None
        try:
            async for event in watch:
                if isinstance(event, aetcd.exceptions.RevisionCompactedError):
                    raise Compacted()
                if isinstance(event, Exception):
                    raise EtcdUnavailable(f"watch {prefix}: {event!r}")
                yield WatchEvent(event.kind, event.kv.key.decode(), event.kv.value, event.kv.mod_revision)
        except aetcd.exceptions.RevisionCompactedError:
            raise Compacted() from None
        except (aetcd.exceptions.ClientError, grpc.RpcError) as err:
            raise EtcdUnavailable(f"watch {prefix}: {type(err).__name__} {err}") from None
        finally:
            try:
                await asyncio.wait_for(watch.cancel(), 1)
            except Exception as err:  # noqa: BLE001 - the channel may be gone already
                log.debug("datastore: cancelling the watch: %r", err)

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            try:
                await asyncio.wait_for(client.close(), CALL_TIMEOUT_S)
            except Exception as err:  # noqa: BLE001 - as in failover
                log.debug("datastore: close: %r", err)
