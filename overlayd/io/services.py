"""Services at run time: the table from the config and `services_file`, health checks,
and what a change does to the flows.

`Services` owns the `ServiceTable` (fabric/services.py), the connection
tracking (fabric/conntrack.py) and one `HealthChecker` per service
(fabric/health.py), and drives them on the real clock:

- the services are the config's plus those of `services_file`, read at
  start and again whenever the file's modification time changes (checked
  every FILE_CHECK_S). A file that cannot be read or does not pass the
  config's checks is refused, the reason logged and shown in `overlayctl
  status`, and the running table kept. The table is replaced as a whole;
  what did not change keeps its health, affinity and flows.
- health: each checker's due probes open a TCP connection from this node
  (`asyncio.open_connection`, `timeout` seconds); the verdicts (`fall` /
  `rise` in a row) take a backend out of the Maglev table and put it back.
  A backend that goes down, or leaves its service, gets its TCP flows
  reset and its UDP flows dropped (`ServicePath.backend_down`); the flows of
  a service that is removed go with it.
- every second, conntrack and affinities past their timeouts are expired.

The userspace path (`routing.backend: userspace`) reads the table per
packet through a `ServicePath` (dataplane/services.py) attached to the
Router; the kernel backends read it through `KernelBackend`, which plans
the nftables rules from the healthy backends whenever `table.version`
moves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

import yaml

from overlayd.config import Config, ConfigError
from overlayd.config.services import check_services, parse_services_file
from overlayd.fabric.conntrack import Conntrack
from overlayd.fabric.endpoint import parse_endpoint
from overlayd.fabric.health import BackendDown, BackendUp, HealthChecker, HealthConfig
from overlayd.fabric.services import ServiceAdded, ServiceChanged, ServiceRemoved, ServiceTable

log = logging.getLogger("overlayd.services")

FILE_CHECK_S = 1.0
TICK_S = 1.0


def health_of(spec) -> HealthConfig:
    h = spec.checks
    return HealthConfig(type=h.type, interval_s=h.interval, timeout_s=h.timeout, fall=h.fall, rise=h.rise,
                        port=h.port)


class Services:
    def __init__(self, config: Config, clock: Callable[[], float]):
        self.config = config
        self.clock = clock
        self.table = ServiceTable()
        self.conntrack = Conntrack(config.conntrack.max_entries)
        self.path = None  # dataplane.services.ServicePath, when the userspace path carries them
        self.checkers: dict[str, HealthChecker] = {}
        self.file_services: tuple = ()
        self.file_error = ""
        self.file_loaded_at: float | None = None
        self._file_mtime: float | None = None
        self._wake = asyncio.Event()
        self._probes: set[asyncio.Task] = set()

    @property
    def wanted(self) -> bool:
        return bool(self.config.services or self.config.services_file)

    # -- the table ------------------------------------------------------------------------

    def load(self) -> None:
        """Read `services_file` (if any) and make the table what config and file say."""
        self._read_file(force=True)
        self.apply()

    def apply(self) -> None:
        now = self.clock()
        specs = {s.name: s for s in self.config.services + self.file_services}
        for change in self.table.replace(specs.values()):
            match change:
                case ServiceAdded(service):
                    log.info("service %s: %s:%d/%s -> %s", service.name, service.vip_text, service.port,
                             "tcp" if service.proto == 6 else "udp", ", ".join(service.backends) or "no backends")
                    self.checkers[service.name] = HealthChecker(service.name, health_of(specs[service.name]),
                                                                service.backends, now)
                case ServiceChanged(_, new, gone):
                    log.info("service %s: now -> %s", new.name, ", ".join(new.backends) or "no backends")
                    self.checkers[new.name] = HealthChecker(new.name, health_of(specs[new.name]), new.backends, now)
                    for backend in gone:
                        self._flows_gone(new.name, backend)
                case ServiceRemoved(service):
                    log.info("service %s: removed", service.name)
                    self.checkers.pop(service.name, None)
                    for flow in self.conntrack.flows(service=service.name):
                        self.conntrack.remove(flow)
        self._wake.set()

    def _flows_gone(self, service: str, backend: str) -> None:
        endpoint = parse_endpoint(backend)
        if self.path is not None:
            n = self.path.backend_down(service, endpoint)
        else:
            flows = self.conntrack.flows_of_backend(endpoint, service)
            for flow in flows:
                self.conntrack.remove(flow)
            n = len(flows)
        if n:
            log.info("service %s: %d flow(s) to %s reset or dropped", service, n, backend)

    def _read_file(self, force: bool = False) -> bool:
        """Read `services_file` when it changed; True when the services it holds changed."""
        path = self.config.services_file
        if path is None:
            return False
        try:
            mtime = os.stat(path).st_mtime
        except OSError as err:
            mtime = None
            if force or self._file_mtime is not None:
                self._refuse(f"{path}: cannot read: {err.strerror}")
            self._file_mtime = None
            return False
        if not force and mtime == self._file_mtime:
            return False
        self._file_mtime = mtime
        try:
            with open(path) as f:
                data = yaml.safe_load(f)
            services = parse_services_file(data, path, self.config.services_network, self.config.cluster_networks)
            check_services(self.config.services + services, self.config.services_network,
                           self.config.cluster_networks, where="services (config and services_file)")
        except yaml.YAMLError as err:
            self._refuse(f"{path}: not valid YAML: {err}")
            return False
        except (ConfigError, ValueError, OSError) as err:
            self._refuse(str(err))
            return False
        changed = services != self.file_services
        self.file_services, self.file_error, self.file_loaded_at = services, "", self.clock()
        if changed and not force:
            log.info("%s: %d service(s) read", path, len(services))
        return changed

    def _refuse(self, why: str) -> None:
        if why != self.file_error:
            log.error("services file refused, the running services kept: %s", why)
        self.file_error = why

    # -- running ------------------------------------------------------------------------

    async def run(self) -> None:
        next_file = next_tick = self.clock()
        while True:
            now = self.clock()
            for checker in self.checkers.values():
                for probe in checker.due(now):
                    task = asyncio.create_task(self._probe(checker, probe))
                    self._probes.add(task)
                    task.add_done_callback(self._probes.discard)
                self._health(checker.service, checker.expire(now))
            if now >= next_tick:
                next_tick = now + TICK_S
                self.conntrack.expire(now)
                self.table.expire(now)
            if now >= next_file:
                next_file = now + FILE_CHECK_S
                if self._read_file():
                    self.apply()
            deadlines = [d for c in self.checkers.values() if (d := c.deadline()) is not None]
            wake = min([next_tick, next_file, *deadlines]) - self.clock()
            self._wake.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.01, wake))

    async def _probe(self, checker: HealthChecker, probe) -> None:
        ok = False
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(probe.address, probe.port),
                                               max(0.0, probe.deadline - self.clock()))
            writer.close()
            ok = True
        except (OSError, asyncio.TimeoutError):
            ok = False
        if self.checkers.get(checker.service) is checker:
            self._health(checker.service, checker.result(probe, ok, self.clock()))

    def _health(self, service: str, changes) -> None:
        for change in changes:
            if isinstance(change, BackendDown):
                log.warning("service %s: backend %s down (%d checks failed)", service, change.backend,
                            change.failures)
                self.table.set_health(service, change.backend, False)
                self._flows_gone(service, change.backend)
            elif isinstance(change, BackendUp):
                log.info("service %s: backend %s up (%d checks passed)", service, change.backend, change.successes)
                self.table.set_health(service, change.backend, True)

    async def close(self) -> None:
        for task in list(self._probes):
            task.cancel()
        if self._probes:
            await asyncio.gather(*self._probes, return_exceptions=True)
