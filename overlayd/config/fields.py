"""Field types every part of the config shares: addresses, networks, MACs, interface
names, and the frozen base model. Each validator names what is wrong with the value; the
caller's location (`networks[1].vni`) is added by `overlayd.config`."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict

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
IFNAMSIZ = 16  # linux/if.h: 15 characters and the terminating NUL
IFNAME_CHARS = re.compile(r"[A-Za-z0-9_.-]+")
SYSCTL_CONF_NAMES = ("all", "default")  # /proc/sys/net/ipv{4,6}/conf/<name>: not an interface's


def ifname_problem(name: str) -> str | None:
    """Why `name` cannot be an interface name overlayd creates or writes about; None if it can.

    The kernel's own rule first (net/core/dev.c, dev_valid_name(): not empty, at most
    IFNAMSIZ - 1 bytes, not "." or "..", no '/', ':' or white space; and "all" and "default",
    which it refuses because they name /proc/sys/net/*/conf entries), then overlayd's,
    narrower: only ASCII letters, digits, '_', '.' and '-' ('%' would be a kernel name
    template, '@' is `ip`'s link@peer), and no leading '-' (an option to ip, tc, ethtool).
    So a name is never a path: it cannot climb out of /proc/sys/net/ipv4/conf/<name>/.
    """
    if not isinstance(name, str) or name == "":
        return "it is empty"
    size = len(name.encode("utf-8", "surrogatepass"))
    if size >= IFNAMSIZ:
        return f"{size} bytes long, the kernel takes at most {IFNAMSIZ - 1}"
    if name in (".", ".."):
        return "a path component, which the kernel refuses"
    if name in SYSCTL_CONF_NAMES:
        return "it names the defaults in /proc/sys/net/*/conf/, which the kernel refuses"
    bad = next((c for c in name if c == "/" or c == ":" or c.isspace()), None)
    if bad is not None:
        return f"it contains {bad!r}, which the kernel refuses"
    if not IFNAME_CHARS.fullmatch(name):
        bad = next(c for c in name if not IFNAME_CHARS.fullmatch(c))
        return f"it contains {bad!r}; use A-Z a-z 0-9 _ . - only"
    if name.startswith("-"):
        return "it starts with '-', which tools would read as an option"
    return None


def _ifname(v: Any) -> Any:
    if isinstance(v, str):
        problem = ifname_problem(v)
        if problem is not None:
            raise ValueError(f"{v!r} is not a valid interface name: {problem} (1-15 of A-Z a-z 0-9 _ . -)")
    return v


IfName = Annotated[str, AfterValidator(_ifname)]

UNIX_PATH_MAX = 108  # sizeof(sockaddr_un.sun_path), with its terminating NUL


def path_problem(path: str) -> str | None:
    """Why `path` cannot be a file overlayd reads or writes; None if it can: absolute, without
    NUL or control characters, without '.' or '..' components, not a directory (ends in '/')."""
    if not path.startswith("/"):
        return f"{path!r} is not an absolute path"
    bad = next((c for c in path if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        return f"{path!r} contains the control character {bad!r}"
    if any(part in (".", "..") for part in path.split("/")):
        return f"{path!r} has a '.' or '..' component: write the path it means"
    if path.endswith("/"):
        return f"{path!r} names a directory, not a file"
    return None


def _file_path(v: Any) -> Any:
    if isinstance(v, str):
        problem = path_problem(v)
        if problem is not None:
            raise ValueError(problem)
    return v


FilePath = Annotated[str, AfterValidator(_file_path)]


def _socket_path(v: Any) -> Any:
    v = _file_path(v)
    if isinstance(v, str) and len(v.encode()) >= UNIX_PATH_MAX:
        raise ValueError(f"{v!r} is {len(v.encode())} bytes long; a Unix socket path takes at most "
                         f"{UNIX_PATH_MAX - 1}")
    return v


SocketPath = Annotated[str, AfterValidator(_socket_path)]


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
