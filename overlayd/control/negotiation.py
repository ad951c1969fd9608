"""What a session is configured with, the OPEN it sends, and what it agrees with the peer.

    SessionConfig            one neighbor's settings (frozen)
    local_open(config)       the OPEN we send: all our capabilities
    negotiate(config, open)  check the peer's OPEN against our configuration -> Negotiated,
                             or BgpError with the NOTIFICATION to send
    Backoff                  connect retry delays: doubling, capped, jittered from a seed

The checks that need no configuration (version, zero BGP identifier, AS 0,
My AS against the 4-octet AS capability) already happened in
`overlayd.wire.bgp.messages.decode_open`.
"""

from __future__ import annotations

import ipaddress
import random
import zlib
from dataclasses import dataclass, field

from overlayd.wire.bgp import errors as E
from overlayd.wire.bgp.errors import BgpError
from overlayd.wire.bgp.messages import (
    AS_TRANS,
    Capability,
    FourOctetAs,
    GracefulRestart,
    Multiprotocol,
    Open,
    RouteRefreshCapability,
    encode_capability,
)
from overlayd.wire.bgp.unicast import IPV4_UNICAST
from overlayd.wire.bgp.update import FAMILY_NAMES, L2VPN_EVPN, Family

OPEN_HOLD_TIME_S = 30.0  # until the peer's OPEN arrives; RFC 4271 8.2.2 suggests 4 minutes, but a
# connection that says nothing for 30 s is a stranger or a broken peer, not worth a socket (issue 13)
FAMILIES_BY_NAME: dict[str, Family] = {name: family for family, name in FAMILY_NAMES.items()}
"""A neighbor's `families` in the config ("evpn", "ipv4-unicast", "ipv6-unicast") -> (AFI, SAFI)."""


def families_named(names: tuple[str, ...] | list[str]) -> tuple[Family, ...]:
    """The (AFI, SAFI) of each config name, in order; KeyError for a name overlayd does not carry."""
    return tuple(FAMILIES_BY_NAME[name] for name in names)


@dataclass(frozen=True)
class SessionConfig:
    """One neighbor.

    local_asn, peer_asn:      our AS and the one the peer must have (equal = iBGP)
    router_id:                our BGP identifier
    peer_address:             the neighbor's address; names the session in events
    hold_time_s:              the hold time we offer; 0 (no keepalives) or 3..65535
    min_hold_time_s:          a peer offering less (but not 0) is refused, OPEN error 6
    passive:                  never connect out, only accept
    connect_retry_s:          the first connect retry delay; doubles per failure ...
    connect_retry_max_s:      ... up to this; each delay is jittered to 75-100 % (RFC 4271 10)
    jitter_seed:              seeds the jitter; None derives one from `peer_address`
    graceful_restart_time_s:  None: no RFC 4724 capability (and no helper role either);
                              else the restart time advertised in it
    forwarding_preserved:     the capability's F bit for every family: our forwarding
                              state survives our restart (False: overlayd's userspace data
                              plane stops with the process)
    families:                 (afi, safi) we carry; the peer must support every one (a peer
                              with no multiprotocol capability at all carries IPv4 unicast only,
                              RFC 4760 8)
    four_octet_as:            advertise RFC 6793 support (must be True for an AS above 65535)
    open_hold_time_s:         the hold timer between sending our OPEN and receiving theirs
    """

    local_asn: int
    peer_asn: int
    router_id: ipaddress.IPv4Address
    peer_address: str
    hold_time_s: int = 9
    min_hold_time_s: int = 3
    passive: bool = False
    connect_retry_s: float = 5.0
    connect_retry_max_s: float = 60.0
    jitter_seed: int | None = None
    graceful_restart_time_s: int | None = None
    forwarding_preserved: bool = False
    families: tuple[Family, ...] = (L2VPN_EVPN,)
    four_octet_as: bool = True
    open_hold_time_s: float = OPEN_HOLD_TIME_S

    def __post_init__(self) -> None:
        if not isinstance(self.router_id, ipaddress.IPv4Address):
            object.__setattr__(self, "router_id", ipaddress.IPv4Address(self.router_id))
        for name in ("local_asn", "peer_asn"):
            if not 1 <= getattr(self, name) <= 0xFFFFFFFF:
                raise ValueError(f"{name} {getattr(self, name)} is not an AS number")
        if self.local_asn > 0xFFFF and not self.four_octet_as:
            raise ValueError(f"AS {self.local_asn} needs the 4-octet AS capability")
        if self.hold_time_s != 0 and not 3 <= self.hold_time_s <= 0xFFFF:
            raise ValueError(f"hold time {self.hold_time_s}: 0 or 3..65535 seconds (RFC 4271 4.2)")
        if not 0 <= self.min_hold_time_s <= 0xFFFF:
            raise ValueError(f"minimum hold time {self.min_hold_time_s} out of range")
        if int(self.router_id) == 0:
            raise ValueError("router ID 0.0.0.0 is not a BGP identifier")
        if self.graceful_restart_time_s is not None and not 0 <= self.graceful_restart_time_s <= 0xFFF:
            raise ValueError(f"graceful restart time {self.graceful_restart_time_s}: 0..4095 seconds")
        if not 0 < self.connect_retry_s <= self.connect_retry_max_s:
            raise ValueError("need 0 < connect_retry_s <= connect_retry_max_s")
        if not self.families:
            raise ValueError("a session must carry at least one address family")

    @property
    def internal(self) -> bool:
        """iBGP: both sides in the same AS."""
        return self.local_asn == self.peer_asn


def local_open(config: SessionConfig, restarting: bool = False) -> Open:
    """The OPEN we send: multiprotocol for each family, route refresh, 4-octet AS, and graceful
    restart when configured (R bit = `restarting`, F bit = `config.forwarding_preserved`)."""
    caps: list[Capability] = [Multiprotocol(afi, safi) for afi, safi in config.families]
    caps.append(RouteRefreshCapability())
    if config.four_octet_as:
        caps.append(FourOctetAs(config.local_asn))
    if config.graceful_restart_time_s is not None:
        caps.append(
            GracefulRestart(
                config.graceful_restart_time_s,
                restarting=restarting,
                families=tuple((afi, safi, config.forwarding_preserved) for afi, safi in config.families),
            )
        )
    return Open(config.local_asn, config.hold_time_s, config.router_id, tuple(caps))


@dataclass(frozen=True)
class Negotiated:
    """What both sides agreed in the OPEN exchange.

    remote_asn, remote_router_id: from the peer's OPEN
    hold_time_s:     the smaller of both offers; 0 = no hold timer and no keepalives
    keepalive_s:     hold_time_s / 3, or None when the hold time is 0
    four_octet_as:   both advertised RFC 6793
    route_refresh:   the peer advertised RFC 2918 (we always do)
    families:        the (afi, safi) both carry: all of ours
    graceful_restart: the peer's RFC 4724 capability, or None
    capabilities:    every capability in the peer's OPEN
    """

    remote_asn: int
    remote_router_id: ipaddress.IPv4Address
    hold_time_s: int
    keepalive_s: float | None
    four_octet_as: bool
    route_refresh: bool
    families: tuple[tuple[int, int], ...]
    graceful_restart: GracefulRestart | None
    capabilities: tuple[Capability, ...] = field(default=())


def negotiate(config: SessionConfig, peer: Open) -> Negotiated:
    """Check the peer's OPEN against `config` (RFC 4271 6.2); raises BgpError."""
    # Without RFC 6793 ourselves we are an "old" speaker: the peer's AS is its My AS field,
    # AS_TRANS for a 4-octet AS (decode_open checked that field against the capability).
    remote_asn = peer.asn if config.four_octet_as or peer.asn <= 0xFFFF else AS_TRANS
    if remote_asn != config.peer_asn:
        data = (remote_asn if remote_asn <= 0xFFFF else AS_TRANS).to_bytes(2, "big")
        raise BgpError(E.OPEN_MESSAGE_ERROR, E.BAD_PEER_AS, f"peer AS {remote_asn}, expected {config.peer_asn}", data)
    if config.internal and peer.router_id == config.router_id:  # RFC 6286 2.2
        raise BgpError(E.OPEN_MESSAGE_ERROR, E.BAD_BGP_IDENTIFIER, f"iBGP peer has our BGP identifier {peer.router_id}")
    offered = peer.hold_time_s
    if offered in (1, 2) or (offered != 0 and offered < config.min_hold_time_s):
        raise BgpError(
            E.OPEN_MESSAGE_ERROR, E.UNACCEPTABLE_HOLD_TIME,
            f"hold time {offered} s, the least we accept is {max(config.min_hold_time_s, 3)} s",
        )
    caps = peer.capabilities
    carried = {(c.afi, c.safi) for c in caps if isinstance(c, Multiprotocol)} or {IPV4_UNICAST}
    missing = [family for family in config.families if family not in carried]
    if missing:
        # RFC 5492 5: the data names the capabilities we need and the peer lacks
        data = b"".join(encode_capability(Multiprotocol(afi, safi)) for afi, safi in missing)
        names = ", ".join(f"AFI {afi} SAFI {safi}" for afi, safi in missing)
        raise BgpError(E.OPEN_MESSAGE_ERROR, E.UNSUPPORTED_CAPABILITY, f"peer does not carry {names}", data)
    hold = min(config.hold_time_s, offered)
    return Negotiated(
        remote_asn=remote_asn,
        remote_router_id=peer.router_id,
        hold_time_s=hold,
        keepalive_s=hold / 3 if hold else None,
        four_octet_as=config.four_octet_as and any(isinstance(c, FourOctetAs) for c in caps),
        route_refresh=RouteRefreshCapability() in caps,
        families=config.families,
        graceful_restart=next((c for c in caps if isinstance(c, GracefulRestart)), None),
        capabilities=caps,
    )


class Backoff:
    """Connect retry delays (RFC 4271 8: ConnectRetryTimer, IdleHoldTimer) for one neighbor.

    `failed()` records a failure and returns how long to wait: connect_retry_s,
    then doubling per consecutive failure up to connect_retry_max_s, each
    multiplied by a factor in [0.75, 1.0) from a seeded generator, so runs
    repeat exactly and neighbors restarting together do not stay in step.
    `reset()` after a session reaches Established.
    """

    def __init__(self, base_s: float, max_s: float, seed: int) -> None:
        self.base_s = base_s
        self.max_s = max_s
        self.failures = 0
        self.delay_s = 0.0  # the delay the last failure asked for; 0 after reset
        self._rng = random.Random(seed)

    @classmethod
    def for_config(cls, config: SessionConfig) -> Backoff:
        seed = config.jitter_seed
        if seed is None:
            seed = zlib.crc32(f"{config.router_id}>{config.peer_address}".encode())
        return cls(config.connect_retry_s, config.connect_retry_max_s, seed)

    def failed(self) -> float:
        self.failures += 1
        raw = min(self.base_s * 2 ** min(self.failures - 1, 32), self.max_s)
        self.delay_s = raw * self._rng.uniform(0.75, 1.0)
        return self.delay_s

    def reset(self) -> None:
        self.failures = 0
        self.delay_s = 0.0
