"""Kernel offloads for the data plane: which ones to ask for, and asking.

    tso       the TAP (IFF_VNET_HDR + TUNSETOFFLOAD CSUM|TSO4|TSO6) hands over TCP
              super-frames of up to 64 KB and leaves checksums to us; they are cut
              into MSS-sized standard VXLAN datagrams (dataplane.offload, NumPy)
    gso       UDP_SEGMENT: up to 64 equal-sized datagrams per sendmsg
    gro       UDP_GRO: up to 64 datagrams of one flow per recvmsg
    coalesce  consecutive TCP segments of one flow, checksums verified, are
              written to the TAP as one super-frame (virtio-net GSO header);
              runs of UDP datagrams of one flow as one UDP GSO frame
    drain     after writing frames to a TAP, read it at once: what the kernel
              answered meanwhile (echo replies, ACKs) leaves without waiting
              for another turn of the event loop

All are on by default. The environment variable OVERLAYD_OFFLOAD picks
others: "none", or a comma-separated list ("tso,gso"). `tso` and `coalesce`
need NumPy, imported at startup only when one of them is on; an offload the
kernel refuses is turned off and said so once in the log at startup;
`overlayctl status` shows what is on.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from overlayd.dataplane.offload import HAVE_NUMPY, load_numpy

log = logging.getLogger("overlayd")

ENV = "OVERLAYD_OFFLOAD"
KNOWN = ("tso", "gso", "gro", "coalesce", "drain")

TUNSETOFFLOAD = 0x400454D0
TUN_F_CSUM, TUN_F_TSO4, TUN_F_TSO6 = 0x01, 0x02, 0x04
SOL_UDP = getattr(socket, "SOL_UDP", 17)
UDP_SEGMENT = getattr(socket, "UDP_SEGMENT", 103)
UDP_GRO = getattr(socket, "UDP_GRO", 104)


def wanted(env: Mapping[str, str] = os.environ) -> frozenset[str]:
    """The offloads OVERLAYD_OFFLOAD asks for (all when unset)."""
    value = env.get(ENV, "").strip().lower()
    if value in ("", "all", "on"):
        return frozenset(KNOWN)
    if value in ("none", "off", "0"):
        return frozenset()
    names = {name.strip() for name in value.split(",") if name.strip()}
    unknown = names - set(KNOWN)
    if unknown:
        log.warning("%s: ignoring unknown offloads %s (known: %s)", ENV,
                    ", ".join(sorted(unknown)), ", ".join(KNOWN))
    return frozenset(names & set(KNOWN))


@dataclass
class Offloads:
    """What is on. `vnet_hdr`: the TAP devices carry a virtio-net header (needed by tso and coalesce)."""

    tso: bool = False
    gso: bool = False
    gro: bool = False
    coalesce: bool = False
    drain: bool = False
    vnet_hdr: bool = False

    @property
    def any(self) -> bool:
        return self.tso or self.gso or self.gro or self.coalesce or self.drain

    def as_dict(self) -> dict[str, bool]:
        return asdict(self)

    def describe(self) -> str:
        on = [name for name in KNOWN if getattr(self, name)]
        return ", ".join(on) if on else "none"


def plan(asked: frozenset[str] | None = None) -> Offloads:
    """What to try, before any device exists: the asked-for offloads this Python can do."""
    asked = wanted() if asked is None else asked
    off = Offloads(**{name: name in asked for name in KNOWN})
    if not HAVE_NUMPY and (off.tso or off.coalesce):
        log.warning("offloads: NumPy is not importable; tso and coalesce are off")
        off.tso = off.coalesce = False
    off.vnet_hdr = off.tso or off.coalesce
    if off.vnet_hdr:
        load_numpy()
    return off


def enable_tap_tso(fd: int) -> bool:
    """Ask the TAP for checksum offload and TSO; False if the kernel refuses."""
    try:
        fcntl.ioctl(fd, TUNSETOFFLOAD, TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6)
    except OSError as err:
        log.warning("offloads: TUNSETOFFLOAD refused (%s); tso off", err.strerror)
        return False
    return True


def enable_udp_gro(sock: socket.socket) -> bool:
    try:
        sock.setsockopt(SOL_UDP, UDP_GRO, 1)
    except OSError as err:
        log.warning("offloads: UDP_GRO refused (%s); gro off", err.strerror)
        return False
    return True


def udp_gso_supported(sock: socket.socket) -> bool:
    """Whether the kernel knows UDP_SEGMENT (the per-call size comes in a control message)."""
    try:
        sock.setsockopt(SOL_UDP, UDP_SEGMENT, 0)
    except OSError as err:
        log.warning("offloads: UDP_SEGMENT refused (%s); gso off", err.strerror)
        return False
    return True


def gso_control(datagram_bytes: int) -> list[tuple[int, int, bytes]]:
    """The sendmsg control message that cuts the data into datagrams of `datagram_bytes`."""
    return [(SOL_UDP, UDP_SEGMENT, datagram_bytes.to_bytes(2, sys.byteorder))]


def gro_segment_size(ancdata: list[tuple[int, int, bytes]], nbytes: int) -> int:
    """The size of the datagrams a UDP_GRO recvmsg returned (all but the last), or nbytes."""
    for level, kind, data in ancdata:
        if level == SOL_UDP and kind == UDP_GRO and len(data) >= 4:
            return int.from_bytes(data[:4], sys.byteorder) or nbytes
    return nbytes
