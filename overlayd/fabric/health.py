"""Health of a service's backends, sans I/O: which to probe when, and what the answers mean.

One `HealthChecker` per service, holding its `HealthConfig` (the config's
`health: {type, interval, timeout, fall, rise, port}`) and its backends by
name ("10.244.1.5:8080"). It does no I/O and reads no clock: the caller
(`io/`) asks `due(now)` for the probes to start, makes a TCP connection
for each to `probe.address`:`probe.port`, reports each outcome with
`result(probe, ok, now)`, calls `expire(now)` when a probe's deadline
passes unanswered, and arms one timer for `deadline()`. The way aioquic's
connection is driven: nothing happens between calls.

Theory of operation. Every backend is probed every `interval` seconds,
the first probe at once when it is added; one probe at a time, and a probe
counts as failed unless it succeeds before its deadline (`timeout` after
it started; at most `interval`, so a probe always ends before the next is
due). The checker counts consecutive outcomes: a healthy backend that
fails `fall` probes in a row is down (`BackendDown`), a down backend that
passes `rise` in a row is up again (`BackendUp`). Those two facts are all
it returns; the service table stops giving a down backend new flows, and
the data path resets the flows pinned to it.

A backend starts healthy. A backend in the config is there because
someone says it serves (Kubernetes lists ready endpoints only), and
starting it down would refuse every connection to a new service, after
every reload and every restart, for `rise` x `interval` seconds. One that
is in fact down from the start gets flows until it falls: its first
probe starts when it is added, so it is down after `fall` failed probes,
(fall - 1) x interval + timeout at the latest (sooner when its connection
is refused rather than unanswered). Likewise a backend that dies is down
at most fall x interval + timeout later. `type: none` never probes: its
backends are always healthy.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from overlayd.fabric.endpoint import format_address, parse_endpoint

TYPES = ("tcp", "none")


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """How a service's backends are checked (the config's `health:`); plain numbers, seconds."""

    type: str = "tcp"  # "tcp": a TCP connection must open; "none": always healthy
    interval_s: float = 1.0  # from the start of one probe to the start of the next
    timeout_s: float = 0.5  # a probe not answered by then failed; at most interval_s
    fall: int = 2  # consecutive failures that take a healthy backend down
    rise: int = 2  # consecutive successes that bring a down backend back
    port: int | None = None  # the port probed; None: the backend's own

    def __post_init__(self) -> None:
        if self.type not in TYPES:
            raise ValueError(f"health.type {self.type!r} is not one of {', '.join(TYPES)}")
        if not self.interval_s > 0:
            raise ValueError("health.interval must be positive")
        if not 0 < self.timeout_s <= self.interval_s:
            raise ValueError("health.timeout must be positive and at most health.interval")
        for name in ("fall", "rise"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ValueError(f"health.{name} must be a whole number, at least 1")
        if self.port is not None and not 1 <= self.port <= 65535:
            raise ValueError(f"health.port {self.port} is not in 1..65535")


@dataclass(frozen=True, slots=True)
class Probe:
    """Open a TCP connection to `address`:`port`; report the outcome by `deadline`."""

    service: str
    backend: str  # the backend's name, "10.244.1.5:8080"
    address: str  # its address, "10.244.1.5"
    port: int  # the port to probe: health.port, or the backend's
    deadline: float  # not answered by then: failed
    serial: int  # tells this probe from earlier ones of the same backend


@dataclass(frozen=True, slots=True)
class BackendDown:
    """`backend` of `service` failed `failures` (= fall) probes in a row: no new flows, reset its own."""

    service: str
    backend: str
    failures: int


@dataclass(frozen=True, slots=True)
class BackendUp:
    """`backend` of `service`, down until now, passed `successes` (= rise) probes in a row."""

    service: str
    backend: str
    successes: int


HealthChange = BackendDown | BackendUp


@dataclass(frozen=True, slots=True)
class BackendHealth:
    """What `overlayctl services` shows of one backend."""

    backend: str
    healthy: bool
    failures: int  # consecutive, up to now
    successes: int
    probing: bool  # a probe is out


class _Target:
    __slots__ = ("address", "backend", "failures", "healthy", "next_due", "port", "probe", "successes")

    def __init__(self, backend: str, address: str, port: int, next_due: float | None):
        self.backend, self.address, self.port = backend, address, port
        self.healthy = True
        self.failures = self.successes = 0
        self.next_due = next_due  # None: never probed (type none)
        self.probe: Probe | None = None


class HealthChecker:
    """The backends of one service and their health."""

    def __init__(self, service: str, config: HealthConfig, backends: Iterable[str] = (), now: float = 0.0):
        self.service = service
        self.config = config
        self._targets: dict[str, _Target] = {}
        self._serial = 0
        for backend in backends:
            self.add(backend, now)

    # -- reading -------------------------------------------------------------------------

    def healthy(self, backend: str) -> bool:
        """Whether `backend` may take new flows (KeyError if it is not a backend here)."""
        return self._targets[backend].healthy

    def healthy_backends(self) -> list[str]:
        """The backends that may take new flows, in the order they were added."""
        return [t.backend for t in self._targets.values() if t.healthy]

    def __contains__(self, backend: object) -> bool:
        return backend in self._targets

    def __len__(self) -> int:
        return len(self._targets)

    def __iter__(self) -> Iterator[BackendHealth]:
        return iter([BackendHealth(t.backend, t.healthy, t.failures, t.successes, t.probe is not None)
                     for t in self._targets.values()])

    def deadline(self) -> float | None:
        """When `due` or `expire` next has work: the earliest probe due or deadline; None: never."""
        times = [t.probe.deadline if t.probe else t.next_due for t in self._targets.values()]
        return min((x for x in times if x is not None), default=None)

    # -- changing ------------------------------------------------------------------------

    def add(self, backend: str, now: float) -> bool:
        """Check `backend` too (healthy, first probe due now); False if it is checked already."""
        if backend in self._targets:
            return False
        packed, port = parse_endpoint(backend)
        due = None if self.config.type == "none" else now
        self._targets[backend] = _Target(backend, format_address(packed), self.config.port or port, due)
        return True

    def remove(self, backend: str) -> bool:
        """Stop checking `backend` (a result of its outstanding probe is then ignored)."""
        return self._targets.pop(backend, None) is not None

    def due(self, now: float) -> list[Probe]:
        """The probes to start now, in the order the backends were added."""
        probes = []
        for t in self._targets.values():
            if t.probe is None and t.next_due is not None and t.next_due <= now:
                self._serial += 1
                t.probe = Probe(self.service, t.backend, t.address, t.port, now + self.config.timeout_s,
                                self._serial)
                t.next_due = now + self.config.interval_s
                probes.append(t.probe)
        return probes

    def result(self, probe: Probe, ok: bool, now: float) -> list[HealthChange]:
        """The outcome of `probe`: `ok` if the connection opened. An answer at or after the
        deadline is a failure; one for a probe already expired, or of a removed backend, is ignored."""
        t = self._targets.get(probe.backend)
        if t is None or t.probe != probe:
            return []
        t.probe = None
        return self._count(t, ok and now < probe.deadline)

    def expire(self, now: float) -> list[HealthChange]:
        """Fail the probes whose deadline has come unanswered."""
        changes: list[HealthChange] = []
        for t in self._targets.values():
            if t.probe is not None and t.probe.deadline <= now:
                t.probe = None
                changes += self._count(t, False)
        return changes

    def _count(self, t: _Target, ok: bool) -> list[HealthChange]:
        if ok:
            t.successes, t.failures = t.successes + 1, 0
            if not t.healthy and t.successes >= self.config.rise:
                t.healthy = True
                return [BackendUp(self.service, t.backend, t.successes)]
        else:
            t.failures, t.successes = t.failures + 1, 0
            if t.healthy and t.failures >= self.config.fall:
                t.healthy = False
                return [BackendDown(self.service, t.backend, t.failures)]
        return []
