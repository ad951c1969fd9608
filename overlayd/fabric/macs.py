"""Stable MACs for the devices overlayd creates, derived from the node and the device.

A TAP device (or a kernel bridge) gets a new random MAC at every start unless
told otherwise; its neighbours' ARP caches then hold a MAC that is gone, and
frames to it are lost until their entries go stale (31 s measured). So
every device overlayd creates without a configured `mac:` gets one derived
from the node's identity and the device's role, the same across restarts
and reboots:

    derive(node, role, attempt) = the first 6 octets of
        SHA-256("overlayd mac" 0 node 0 role 0 attempt), made locally
        administered (bit 1 of the first octet set) and unicast (bit 0 clear)

`role` is the network's name ("network blue"), or "routing". `plan` gives
every device its MAC and where it came from: `config` (its `mac:`), `router`
(the routed device of the `kernel` backend, whose MAC is the router MAC),
or `derived`; a derived MAC that collides with one already taken (a
configured MAC, another device's, a static FDB entry's, a router MAC) is
skipped for the next attempt, and the collision is returned to be logged.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

MAX_ATTEMPTS = 64


def derive(node: str, role: str, attempt: int = 0) -> bytes:
    digest = hashlib.sha256(b"overlayd mac\0" + node.encode() + b"\0" + role.encode() + b"\0"
                            + str(attempt).encode()).digest()
    return bytes([(digest[0] | 0x02) & 0xFE]) + digest[1:6]


@dataclass(frozen=True, slots=True)
class DeviceMac:
    role: str
    mac: bytes
    source: str  # "config", "router" or "derived"
    skipped: tuple[bytes, ...] = ()  # derived MACs passed over: they collided


def plan(node: str, devices: Iterable[tuple[str, bytes | None, str]], taken: Iterable[bytes] = ()) -> dict[str, DeviceMac]:
    """Each device's MAC: `devices` are (role, fixed MAC or None, source of the fixed one);
    `taken`: MACs known to be in use elsewhere (static FDB entries, other nodes' router MACs)."""
    devices = list(devices)
    used = set(taken) | {mac for _, mac, _ in devices if mac is not None}
    out: dict[str, DeviceMac] = {}
    for role, mac, source in devices:
        if mac is not None:
            out[role] = DeviceMac(role, mac, source)
            continue
        skipped = []
        for attempt in range(MAX_ATTEMPTS):
            mac = derive(node, role, attempt)
            if mac not in used:
                break
            skipped.append(mac)
        else:  # 64 collisions in a row: a config error in disguise
            raise ValueError(f"{role}: no free MAC after {MAX_ATTEMPTS} derivations")
        used.add(mac)
        out[role] = DeviceMac(role, mac, "derived", tuple(skipped))
    return out
