"""The service table: virtual IPs and ports, their backends, which of those are
healthy, and how a new flow picks one.

A `Service` stands for one VIP:port/protocol. Its backends are named as the
config writes them ("10.244.1.5:8080", "[fd00::5]:8080"); the healthy ones
fill a Maglev table (`fabric.maglev`), rebuilt whenever the healthy set
changes, so that a backend going or coming moves only the flows Maglev must
move. A new flow picks its backend:

  - with `affinity: client-ip`, the backend this client's address was given
    last, while that is healthy and younger than `affinity_timeout`;
  - otherwise the Maglev slot of the flow's hash (the 5-tuple's).

Established flows never ask again: the connection-tracking table
(`fabric.conntrack`) pins them, whatever the table does.

`ServiceTable.replace(services)` takes the whole wanted list (from the
config, or a reloaded services file) and keeps what did not change: a
service whose VIP, port, protocol, backends and settings are the same keeps
its health, affinity and counters; a changed one keeps the health of the
backends it still has. It returns what changed (`ServiceAdded`,
`ServiceChanged`, `ServiceRemoved`). `set_health` takes a health check's
verdict. Time is a parameter; nothing here does I/O.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from overlayd.fabric.endpoint import Endpoint, parse_endpoint
from overlayd.fabric.maglev import MaglevTable

PROTOCOLS = {"tcp": 6, "udp": 17}


class ServiceSpec(Protocol):
    """What the table reads of a service's config (`config.services.ServiceConfig`)."""

    name: str
    vip: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    protocol: str
    backends: tuple  # each str() as "10.244.1.5:8080" / "[fd00::5]:8080"
    affinity: str
    affinity_timeout: float
    maglev_table_size: int


@dataclass
class Service:
    name: str
    vip: bytes  # packed
    vip_text: str
    port: int
    proto: int  # 6 TCP, 17 UDP
    backends: tuple[str, ...]  # as configured, in order
    affinity_timeout_s: float | None  # None: no affinity
    table_size: int
    healthy: set[str] = field(default_factory=set)
    maglev: MaglevTable | None = None
    endpoints: dict[str, Endpoint] = field(default_factory=dict)
    hits: int = 0  # new flows that got a backend
    rejected: int = 0  # new flows refused: no healthy backend
    backend_hits: dict[str, int] = field(default_factory=dict)
    _affinity: dict[bytes, tuple[str, float]] = field(default_factory=dict)  # client -> (backend, expires)

    @property
    def key(self) -> tuple[int, bytes, int]:
        return (self.proto, self.vip, self.port)

    def settings(self) -> tuple:
        """Everything that, changed, makes this another service."""
        return (self.backends, self.affinity_timeout_s, self.table_size)

    def rebuild(self) -> None:
        healthy = [b for b in self.backends if b in self.healthy]
        self.maglev = MaglevTable(healthy, self.table_size) if healthy else None
        for client in [c for c, (b, _) in self._affinity.items() if b not in self.healthy]:
            del self._affinity[client]

    def pick(self, flow_hash: int, client: bytes, now: float) -> Endpoint | None:
        """The backend for a new flow (see the module docstring); None: no healthy backend."""
        if self.maglev is None:
            self.rejected += 1
            return None
        name = None
        if self.affinity_timeout_s is not None:
            held = self._affinity.get(client)
            if held is not None and held[1] > now and held[0] in self.healthy:
                name = held[0]
        if name is None:
            name = self.maglev.lookup(flow_hash)
        if self.affinity_timeout_s is not None:
            self._affinity[client] = (name, now + self.affinity_timeout_s)
        self.hits += 1
        self.backend_hits[name] = self.backend_hits.get(name, 0) + 1
        return self.endpoints[name]

    def expire(self, now: float) -> int:
        """Forget affinities past their timeout; how many went."""
        gone = [c for c, (_, until) in self._affinity.items() if until <= now]
        for client in gone:
            del self._affinity[client]
        return len(gone)

    @property
    def affinities(self) -> int:
        return len(self._affinity)


@dataclass(frozen=True, slots=True)
class ServiceAdded:
    service: Service


@dataclass(frozen=True, slots=True)
class ServiceChanged:
    """`old` became `new` (same VIP:port/protocol); `gone` names the backends it lost."""

    old: Service
    new: Service
    gone: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ServiceRemoved:
    service: Service


ServiceChange = ServiceAdded | ServiceChanged | ServiceRemoved


def _service(spec: ServiceSpec) -> Service:
    backends = tuple(str(b) for b in spec.backends)
    return Service(
        name=spec.name, vip=spec.vip.packed, vip_text=str(spec.vip), port=spec.port,
        proto=PROTOCOLS[spec.protocol], backends=backends,
        affinity_timeout_s=spec.affinity_timeout if spec.affinity == "client-ip" else None,
        table_size=spec.maglev_table_size,
        endpoints={b: parse_endpoint(b) for b in backends},
    )


class ServiceTable:
    def __init__(self) -> None:
        self._by_key: dict[tuple[int, bytes, int], Service] = {}
        self.version = 0  # counts changes of services or health: a reader plans again when it moved

    def lookup(self, proto: int, vip: bytes, port: int) -> Service | None:
        """The per-packet probe: the service at VIP:port/protocol, or None."""
        return self._by_key.get((proto, vip, port))

    def __iter__(self) -> Iterator[Service]:
        return iter(sorted(self._by_key.values(), key=lambda s: (len(s.vip), s.vip, s.port, s.proto)))

    def __len__(self) -> int:
        return len(self._by_key)

    def get(self, name: str) -> Service | None:
        return next((s for s in self._by_key.values() if s.name == name), None)

    def replace(self, specs: Iterable[ServiceSpec]) -> list[ServiceChange]:
        """Make the table hold exactly `specs` (checked already); keep what did not change."""
        wanted = {s.key: s for s in map(_service, specs)}
        changes: list[ServiceChange] = []
        for key, old in list(self._by_key.items()):
            if key not in wanted:
                del self._by_key[key]
                changes.append(ServiceRemoved(old))
        for key, new in wanted.items():
            old = self._by_key.get(key)
            if old is not None and old.name == new.name and old.settings() == new.settings():
                continue
            # a backend starts healthy (the checks take it out); one it had keeps its verdict
            new.healthy = {b for b in new.backends if old is None or b not in old.backends or b in old.healthy}
            if old is not None:
                new.hits, new.rejected, new.backend_hits = old.hits, old.rejected, dict(old.backend_hits)
            new.rebuild()
            self._by_key[key] = new
            if old is None:
                changes.append(ServiceAdded(new))
            else:
                changes.append(ServiceChanged(old, new, tuple(b for b in old.backends if b not in new.backends)))
        if changes:
            self.version += 1
        return changes

    def set_health(self, name: str, backend: str, healthy: bool) -> bool:
        """A health check's verdict on `backend` of service `name`; True when it changed the table."""
        service = self.get(name)
        if service is None or backend not in service.endpoints or (backend in service.healthy) == healthy:
            return False
        if healthy:
            service.healthy.add(backend)
        else:
            service.healthy.discard(backend)
        service.rebuild()
        self.version += 1
        return True

    def expire(self, now: float) -> int:
        return sum(s.expire(now) for s in self._by_key.values())
