"""`services:` (and `services_file`): virtual IPs load-balanced to backends.

    services_network: 10.96.0.0/16        # one CIDR or a list, at most one per family
    services:
      - name: web
        vip: 10.96.0.10
        port: 80
        protocol: tcp                     # tcp | udp
        backends: ["10.244.1.5:8080", "10.244.2.7:8080", "[fd00:244:0:1::5]:8080"]
        affinity: none                    # none | client-ip
        affinity_timeout: 10800           # seconds, with client-ip
        health: {type: tcp, interval: 1, timeout: 0.5, fall: 2, rise: 2, port: 8080}
        maglev_table_size: 16381          # a prime

A service alone is checked by `ServiceConfig`; `check_services` checks a list
of them against the rest of the config (the VIP inside `services_network`,
each backend inside the cluster network, no VIP:port:protocol twice, no name
twice), the same for the config file and for a `services_file`
(`parse_services_file`, which names the file in every error).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from overlayd.config.fields import ConfigError, Frozen, IpAddress
from overlayd.fabric.maglev import is_prime

DEFAULT_MAGLEV_TABLE_SIZE = 16381
DEFAULT_AFFINITY_TIMEOUT_S = 10800.0
_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?$")



class Backend(Frozen):
    """One backend: an address and port (written "10.244.1.5:8080" or "[fd00::5]:8080")."""

    ip: IpAddress
    port: int = Field(ge=1, le=65535)

    def __str__(self) -> str:
        return f"[{self.ip}]:{self.port}" if self.ip.version == 6 else f"{self.ip}:{self.port}"


def _backend(v: Any) -> Any:
    if not isinstance(v, str):
        return v
    host, sep, port = v.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ValueError(f"{v!r}: write an IPv6 backend in brackets, like [fd00::5]:8080")
    try:
        if not sep:
            raise ValueError
        return {"ip": ipaddress.ip_address(host), "port": int(port)}
    except ValueError:
        raise ValueError(f"{v!r} is not a backend like 10.244.1.5:8080 or [fd00::5]:8080") from None


class HealthConfig(Frozen):
    type: Literal["tcp", "none"]
    interval: float = Field(default=1.0, gt=0, description="seconds between checks")
    timeout: float = Field(default=0.5, gt=0, description="seconds a check may take")
    fall: int = Field(default=2, ge=1)
    rise: int = Field(default=2, ge=1)
    port: int | None = Field(default=None, ge=1, le=65535, description="default: the backend's port")

    @model_validator(mode="after")
    def _timeout(self) -> HealthConfig:
        if self.timeout > self.interval:
            raise ValueError(f"timeout: {self.timeout} s is longer than interval {self.interval} s")
        return self


class ServiceConfig(Frozen):
    name: str
    vip: IpAddress
    port: int = Field(ge=1, le=65535)
    protocol: Literal["tcp", "udp"] = "tcp"
    backends: tuple[Backend, ...] = ()
    affinity: Literal["none", "client-ip"] = "none"
    affinity_timeout: float = Field(default=DEFAULT_AFFINITY_TIMEOUT_S, gt=0, description="seconds")
    health: HealthConfig | None = None  # None: {type: tcp} for TCP, {type: none} for UDP
    maglev_table_size: int = Field(default=DEFAULT_MAGLEV_TABLE_SIZE, ge=3, le=1_000_003)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(f"{v!r} is not a service name (1-63 of A-Z a-z 0-9 _ . -, starting and "
                             f"ending with a letter or digit)")
        return v

    @field_validator("backends", mode="before")
    @classmethod
    def _backends(cls, v: Any) -> Any:
        return tuple(_backend(b) for b in v) if isinstance(v, list | tuple) else v

    @field_validator("maglev_table_size")
    @classmethod
    def _prime(cls, v: int) -> int:
        if not is_prime(v):
            raise ValueError(f"{v} is not a prime (Maglev needs one; the default is {DEFAULT_MAGLEV_TABLE_SIZE})")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ServiceConfig:
        seen: set[Backend] = set()
        for j, b in enumerate(self.backends):
            if b.ip.version != self.vip.version:
                raise ValueError(f"backends[{j}]: {b} is IPv{b.ip.version}, the VIP {self.vip} IPv{self.vip.version}")
            if b in seen:
                raise ValueError(f"backends[{j}]: {b} is listed twice")
            seen.add(b)
        if self.protocol == "udp" and self.health is not None and self.health.type == "tcp" \
                and self.health.port is None:
            raise ValueError("health.port: a TCP check of a UDP service needs the port to connect to")
        return self

    @property
    def checks(self) -> HealthConfig:
        """The health check in force: as configured, or the protocol's default."""
        if self.health is not None:
            return self.health
        return HealthConfig(type="tcp" if self.protocol == "tcp" else "none")

    @property
    def key(self) -> tuple[str, int, str]:
        return (str(self.vip), self.port, self.protocol)


Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network


def check_services_network(networks: Sequence[Prefix], cluster: Iterable[Prefix | None]) -> None:
    """At most one per family, none overlapping the cluster network; ValueError naming the field."""
    seen: dict[int, Prefix] = {}
    for net in networks:
        if net.version in seen:
            raise ValueError(f"services_network: {seen[net.version]} and {net} are both IPv{net.version}; "
                             f"give one per family")
        seen[net.version] = net
        for c in cluster:
            if c is not None and c.version == net.version and c.overlaps(net):
                raise ValueError(f"services_network: {net} overlaps the cluster network {c}")


def check_services(services: Sequence[ServiceConfig], services_network: Sequence[Prefix],
                   cluster: Iterable[Prefix | None], where: str = "services") -> None:
    """A list of services against the rest of the config; ValueError naming `where[i].field`."""
    cluster = [c for c in cluster if c is not None]
    keys: dict[tuple, int] = {}
    names: dict[str, int] = {}
    for i, s in enumerate(services):
        if not any(n.version == s.vip.version and s.vip in n for n in services_network):
            nets = ", ".join(map(str, services_network)) or "none configured"
            raise ValueError(f"{where}[{i}].vip: {s.vip} is not inside services_network ({nets})")
        for j, b in enumerate(s.backends):
            if not any(c.version == b.ip.version and b.ip in c for c in cluster):
                nets = ", ".join(map(str, cluster)) or "none"
                raise ValueError(f"{where}[{i}].backends[{j}]: {b} is not inside the cluster network ({nets})")
        if s.key in keys:
            raise ValueError(f"{where}[{i}]: {s.vip}:{s.port}/{s.protocol} is already {where}[{keys[s.key]}]")
        keys[s.key] = i
        if s.name in names:
            raise ValueError(f"{where}[{i}].name: {s.name} is already {where}[{names[s.name]}]")
        names[s.name] = i


def parse_services_file(data: Any, path: str, services_network: Sequence[Prefix],
                        cluster: Iterable[Prefix | None]) -> tuple[ServiceConfig, ...]:
    """The services of a `services_file` (a YAML list, or a mapping with `services:`), checked
    exactly as those of the config; ConfigError naming the file and the field."""
    from overlayd.config.loader import (
        explain_errors,  # the config's error wording, shared
    )

    if isinstance(data, dict) and set(data) <= {"services"}:
        data = data.get("services") or []
    if data is None:
        data = []
    if not isinstance(data, list):
        raise ConfigError(f"{path}: a services file holds a list of services (or `services:` with one)")
    services = []
    problems = []
    for i, item in enumerate(data):
        try:
            services.append(ServiceConfig.model_validate(item))
        except ValidationError as err:
            for line in explain_errors(err).splitlines():
                line = line.removeprefix("config: ")
                problems.append(f"{path}: services[{i}]{'' if line.startswith('[') else '.'}{line}")
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        check_services(services, services_network, cluster)
    except ValueError as err:
        raise ConfigError(f"{path}: {err}") from None
    return tuple(services)
