"""What a BGP session tells the speaker, as small frozen facts (after aioquic's events.py).

`Session.next_event()` and `Peer.next_event()` return these, oldest first.
Every event names its neighbor by `peer`, the configured address
(`SessionConfig.peer_address`), so one queue can carry many neighbors.

    SessionEstablished    the session reached Established: routes may flow
    SessionDown           a session that had a TCP connection is gone
    UpdateReceived        an UPDATE arrived in Established (decoded)
    EndOfRibReceived      the peer finished its initial table (RFC 4724 2)
    RouteRefreshReceived  the peer asks for our routes again (RFC 2918)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Union

from overlayd.wire.bgp.messages import Capability
from overlayd.wire.bgp.update import Update


@dataclass(frozen=True, slots=True)
class SessionEstablished:
    """The session with `peer` reached Established.

    peer:             the neighbor's configured address
    remote_asn:       the peer's AS number (its 4-octet AS when it sent one)
    remote_router_id: the BGP identifier in the peer's OPEN
    hold_time_s:      the negotiated hold time, the smaller of both; 0 = no hold timer, no keepalives
    four_octet_as:    both sides advertised RFC 6793 support: AS_PATH carries 4-octet ASNs
    capabilities:     every capability in the peer's OPEN, in order
    """

    peer: str
    remote_asn: int
    remote_router_id: ipaddress.IPv4Address
    hold_time_s: int
    four_octet_as: bool
    capabilities: tuple[Capability, ...]


@dataclass(frozen=True, slots=True)
class SessionDown:
    """A session with `peer` that had a TCP connection lost it; the peer's routes are gone.

    peer:                  the neighbor's configured address
    reason:                what happened, in words ("hold timer expired", "peer sent ...")
    notification_sent:     (code, subcode) of the NOTIFICATION we sent, or None
    notification_received: (code, subcode) of the NOTIFICATION the peer sent, or None
    was_established:       the session had reached Established (the peer's routes must be
                           withdrawn); False for a failure during the OPEN exchange
    """

    peer: str
    reason: str
    notification_sent: tuple[int, int] | None = None
    notification_received: tuple[int, int] | None = None
    was_established: bool = False


@dataclass(frozen=True, slots=True)
class UpdateReceived:
    """`peer` sent an UPDATE, decoded with the negotiated AS width and families.

    peer:   the neighbor's configured address
    update: the decoded UPDATE; RFC 7606 outcomes (`treat_as_withdraw`,
            `errors`) are in it for the speaker to apply and count
    """

    peer: str
    update: Update


@dataclass(frozen=True, slots=True)
class EndOfRibReceived:
    """`peer` sent End-of-RIB for (`afi`, `safi`): its initial table is complete (RFC 4724 2).

    peer:      the neighbor's configured address
    afi, safi: the address family: (25, 70) L2VPN/EVPN, (1, 1) IPv4 unicast, (2, 1) IPv6 unicast
    """

    peer: str
    afi: int
    safi: int


@dataclass(frozen=True, slots=True)
class RouteRefreshReceived:
    """`peer` asks for all our routes of (`afi`, `safi`) again (RFC 2918 4).

    Only sent for a family both sides negotiated; others are ignored as RFC 2918 says.

    peer:      the neighbor's configured address
    afi, safi: the address family to send again
    """

    peer: str
    afi: int
    safi: int


Event = Union[SessionEstablished, SessionDown, UpdateReceived, EndOfRibReceived, RouteRefreshReceived]
