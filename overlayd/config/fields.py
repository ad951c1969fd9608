"""Field types every part of the config shares: addresses, networks, MACs, interface
names, and the frozen base model. Each validator names what is wrong with the value; the
caller's location (`networks[1].vni`) is added by `overlayd.config`."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict

from overlayd.wire.ethernet import is_multicast, parse_mac


def _ip_address(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return ipaddress.ip_address(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an IPv4 or IPv6 address") from None
    return v


def _ip_interface(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return ipaddress.ip_interface(v)
        except ValueError:
            raise ValueError(f"{v!r} is not an address with prefix length, like 192.168.100.1/24") from None
    return v


IpAddress = Annotated[
    ipaddress.IPv4Address | ipaddress.IPv6Address, BeforeValidator(_ip_address)
]
IpInterface = Annotated[
    ipaddress.IPv4Interface | ipaddress.IPv6Interface, BeforeValidator(_ip_interface)
]
IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")


def _unicast_mac(v: Any) -> Any:
    """'02-00-00-00-00-01' or '02:00:00:00:00:01' -> '02:00:00:00:00:01'; unicast, not all zeros."""
    if isinstance(v, int):  # unquoted in YAML, 12:34:56:00:00:01 reads as a base-60 number
        raise ValueError(f'write the MAC in quotes, like "02:00:00:00:00:01" (YAML read a number, {v})')
    if not isinstance(v, str):
        return v  # the str type refuses it
    raw = parse_mac(v)
    if is_multicast(raw) or raw == bytes(6):
        raise ValueError(f"{v} is not a unicast MAC address")
    return raw.hex(":")


UnicastMac = Annotated[str, BeforeValidator(_unicast_mac)]


class ConfigError(Exception):
    """The config file cannot be used; the message lists every problem, one per line."""


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)



def _network(v: Any) -> Any:
    if isinstance(v, str) and v != "auto":
        try:
            return ipaddress.ip_network(v)
        except ValueError:
            raise ValueError(f"{v!r} is not a network like 10.244.0.0/16 (host bits must be zero)") from None
    return v


IpNetwork = Annotated[
    ipaddress.IPv4Network | ipaddress.IPv6Network, BeforeValidator(_network)
]
