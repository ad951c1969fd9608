"""What the L2 switch and the L3 router share: the shape of a forwarding
decision on the way out, and what the switch needs of a routed VNI.

    Egress     (VXLAN header, destinations, inner flow hash): the caller sends
               header + frame (or packet) to each destination
    RoutedVni  a VNI the switch hands to someone else on the way in
               (`Switch.add_router`); `dataplane.router.Router` is one
"""

from __future__ import annotations

from typing import Protocol

from overlayd.dataplane.counters import Counters
from overlayd.wire.ethernet import ETH_HEADER_LEN

Address = tuple[str, int]
"""A UDP destination: (VTEP address, port)."""

Egress = tuple[bytes, tuple[Address, ...], int]
"""(VXLAN header, destinations, inner flow hash): send header + frame to each."""

ND_MIN_FRAME = ETH_HEADER_LEN + 40 + 24
"""Ethernet, IPv6 and the fixed part of a neighbour solicitation or advertisement."""


class RoutedVni(Protocol):
    """A routed (L3) VNI as the switch sees it: datagrams of `vni` go to `from_vxlan`."""

    vni: int
    counters: Counters  # the switch hands over its own when the VNI is added

    def from_vxlan(self, vtep: str, data: bytes | memoryview, now: float) -> memoryview | bytes | None: ...
