"""EVPN NLRI (RFC 7432 section 7) for AFI 25 (L2VPN) / SAFI 70 (EVPN).

    +-----------------------------------+
    |    Route Type (1 octet)           |
    |    Length (1 octet)               |
    |    Route Type specific (variable) |

overlayd speaks route types 2 (MAC/IP advertisement), 3 (inclusive
multicast Ethernet tag) and 5 (IP prefix, RFC 9136). With VXLAN
encapsulation the 3-octet label fields carry the VNI itself (RFC 8365
section 5.1.3), not an MPLS label shifted by four bits.

Routes are frozen dataclasses; `key` is the part of the NLRI that identifies
the route for BGP (RFC 7432 7.2, RFC 9136 3.1), so two announcements with
the same key replace each other.

`encode_nlri(route)` gives one route's octets; `decode_nlri(data)` reads the
concatenation found in MP_REACH_NLRI / MP_UNREACH_NLRI. Other route types
(1, 4, 6, ...) decode as `UnknownRoute` so the rest can still be read; RFC
7606 5.4 says to discard them. A route whose own fields are wrong raises
`DecodeError` (layer "evpn") naming the route type and the field.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Union

from overlayd.wire.errors import DecodeError

AFI_L2VPN = 25
SAFI_EVPN = 70

ROUTE_TYPE_MAC_IP = 2
ROUTE_TYPE_IMET = 3
ROUTE_TYPE_IP_PREFIX = 5

ZERO_ESI = bytes(10)
RD_LEN = 8

RD_AS2 = 0  # 2-octet AS : 4-octet number
RD_IPV4 = 1  # IPv4 address : 2-octet number
RD_AS4 = 2  # 4-octet AS : 2-octet number
# RD type -> (struct of type, admin and number, bits of the number)
_RD_LAYOUT = {RD_AS2: ("!HHI", 32), RD_IPV4: ("!H4sH", 16), RD_AS4: ("!HIH", 16)}

IpAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IpNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

_LAYER = "evpn"


@dataclass(frozen=True, slots=True)
class RouteDistinguisher:
    """RFC 4364 4.2: type 0 (2-octet AS : 4-octet number), 1 (IPv4 : 2-octet), 2 (4-octet AS : 2-octet)."""

    kind: int
    admin: str  # the AS number in decimal, or the IPv4 address
    number: int

    def __str__(self) -> str:
        return f"{self.admin}:{self.number}"

    @classmethod
    def for_vtep(cls, router_id: ipaddress.IPv4Address, number: int) -> RouteDistinguisher:
        """The usual type-1 RD of a VTEP: its router ID and a per-network number."""
        return cls(1, str(router_id), number)

    @classmethod
    def parse(cls, text: str) -> RouteDistinguisher:
        """`"10.0.0.1:100"` -> type 1, `"65000:100"` -> type 0, `"4200000000:100"` -> type 2.

        Raises ValueError when the text is not `admin:number` or a part does not fit its type.
        """
        admin, sep, number_text = text.strip().rpartition(":")
        if not sep or not number_text.isdigit():
            raise ValueError(f"route distinguisher {text!r} is not <AS or IPv4>:<number>")
        number = int(number_text)
        if "." in admin:
            rd = cls(RD_IPV4, str(ipaddress.IPv4Address(admin)), number)
        elif admin.isdigit():
            asn = int(admin)
            rd = cls(RD_AS2 if asn <= 0xFFFF else RD_AS4, str(asn), number)
        else:
            raise ValueError(f"route distinguisher {text!r}: {admin!r} is neither an AS number nor IPv4")
        rd.encode()  # range checks
        return rd

    def encode(self) -> bytes:
        """The 8 octets: 2-octet type, 6-octet value. ValueError if a part does not fit."""
        if self.kind not in _RD_LAYOUT:
            raise ValueError(f"route distinguisher type {self.kind} is not 0, 1 or 2")
        layout, bits = _RD_LAYOUT[self.kind]
        if self.kind == RD_IPV4:
            admin: int | bytes = ipaddress.IPv4Address(self.admin).packed
        else:
            admin = _fit(int(self.admin), 48 - bits, "RD AS")
        return struct.pack(layout, self.kind, admin, _fit(self.number, bits, "RD number"))

    @classmethod
    def decode(cls, data: bytes | memoryview) -> RouteDistinguisher:
        """The RD in the first 8 octets of `data`; DecodeError for another type than 0, 1, 2."""
        if len(data) < RD_LEN:
            raise DecodeError(_LAYER, f"route distinguisher of {len(data)} octets, expected 8")
        kind = struct.unpack_from("!H", data)[0]
        if kind not in _RD_LAYOUT:
            raise DecodeError(_LAYER, f"route distinguisher type {kind} is not 0, 1 or 2")
        _, admin, number = struct.unpack_from(_RD_LAYOUT[kind][0], data)
        return cls(kind, str(ipaddress.IPv4Address(admin)) if kind == RD_IPV4 else str(admin), number)


@dataclass(frozen=True, slots=True)
class MacIpRoute:
    """Route type 2: `mac` (and optionally `ip`) is reachable behind the route's next hop."""

    rd: RouteDistinguisher
    mac: bytes  # 6 octets
    ip: IpAddress | None = None
    vni: int = 0  # label 1: the L2 VNI
    vni2: int | None = None  # label 2: the L3 VNI, for symmetric IRB
    esi: bytes = ZERO_ESI
    ethernet_tag: int = 0

    route_type = ROUTE_TYPE_MAC_IP

    @property
    def key(self) -> tuple:
        return (ROUTE_TYPE_MAC_IP, self.rd, self.ethernet_tag, self.mac, self.ip)


@dataclass(frozen=True, slots=True)
class ImetRoute:
    """Route type 3: `originator` wants a copy of the VNI's broadcast, unknown unicast and multicast."""

    rd: RouteDistinguisher
    originator: IpAddress
    ethernet_tag: int = 0

    route_type = ROUTE_TYPE_IMET

    @property
    def key(self) -> tuple:
        return (ROUTE_TYPE_IMET, self.rd, self.ethernet_tag, self.originator)


@dataclass(frozen=True, slots=True)
class PrefixRoute:
    """Route type 5 (RFC 9136): `prefix` is reachable behind the next hop, on L3 VNI `vni`."""

    rd: RouteDistinguisher
    prefix: IpNetwork
    vni: int = 0
    gateway: IpAddress | None = None  # None encodes as the all-zero address
    esi: bytes = ZERO_ESI
    ethernet_tag: int = 0

    route_type = ROUTE_TYPE_IP_PREFIX

    @property
    def key(self) -> tuple:
        return (ROUTE_TYPE_IP_PREFIX, self.rd, self.ethernet_tag, self.prefix)


@dataclass(frozen=True, slots=True)
class UnknownRoute:
    """A route type overlayd does not speak (1, 4, 6, ...): `raw` is its body, after type and length.

    decode_nlri returns it so the routes after it can still be read; callers
    discard it (RFC 7606 5.4) and may count it.
    """

    route_type: int
    raw: bytes


EvpnRoute = Union[MacIpRoute, ImetRoute, PrefixRoute]


# -- encoding ------------------------------------------------------------------


def _fit(value: int, bits: int, what: str) -> int:
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{what} {value} does not fit in {bits} bits")
    return value


def _label(vni: int) -> bytes:
    return _fit(vni, 24, "VNI").to_bytes(3, "big")


def _octets(value: bytes, size: int, what: str) -> bytes:
    if len(value) != size:
        raise ValueError(f"{what} of {len(value)} octets, expected {size}")
    return bytes(value)


def _ip_with_length(ip: IpAddress | None) -> bytes:
    """The 1-octet length in bits, then the address (RFC 7432 7.2/7.3)."""
    if ip is None:
        return b"\x00"
    return bytes([ip.max_prefixlen]) + ip.packed


def _encode_body(route: EvpnRoute | UnknownRoute) -> bytes:
    if isinstance(route, MacIpRoute):
        return b"".join((
            route.rd.encode(),
            _octets(route.esi, 10, "ESI"),
            _fit(route.ethernet_tag, 32, "Ethernet tag").to_bytes(4, "big"),
            bytes([48]),
            _octets(route.mac, 6, "MAC address"),
            _ip_with_length(route.ip),
            _label(route.vni),
            b"" if route.vni2 is None else _label(route.vni2),
        ))
    if isinstance(route, ImetRoute):
        return b"".join((
            route.rd.encode(),
            _fit(route.ethernet_tag, 32, "Ethernet tag").to_bytes(4, "big"),
            _ip_with_length(route.originator),
        ))
    if isinstance(route, PrefixRoute):
        prefix = route.prefix
        gateway = route.gateway
        if gateway is not None and gateway.version != prefix.version:
            raise ValueError(f"gateway {gateway} is not of the same family as prefix {prefix}")
        return b"".join((
            route.rd.encode(),
            _octets(route.esi, 10, "ESI"),
            _fit(route.ethernet_tag, 32, "Ethernet tag").to_bytes(4, "big"),
            bytes([prefix.prefixlen]),
            prefix.network_address.packed,
            bytes(len(prefix.network_address.packed)) if gateway is None else gateway.packed,
            _label(route.vni),
        ))
    if isinstance(route, UnknownRoute):
        return bytes(route.raw)
    raise TypeError(f"not an EVPN route: {route!r}")


def encode_nlri(route: EvpnRoute | UnknownRoute) -> bytes:
    """One route as it appears in MP_REACH_NLRI / MP_UNREACH_NLRI: type, length, body.

    Raises ValueError when a field does not fit its octets (a local bug, not the peer's).
    """
    body = _encode_body(route)
    if len(body) > 255:
        raise ValueError(f"route body of {len(body)} octets does not fit a 1-octet length")
    return bytes([route.route_type, len(body)]) + body


# -- decoding ------------------------------------------------------------------


def _ip(data: bytes, what: str) -> IpAddress:
    if len(data) == 4:
        return ipaddress.IPv4Address(data)
    if len(data) == 16:
        return ipaddress.IPv6Address(data)
    raise DecodeError(_LAYER, f"{what} of {len(data)} octets is neither IPv4 nor IPv6")


def _decode_mac_ip(body: bytes) -> MacIpRoute:
    """RFC 7432 7.2: RD(8) ESI(10) tag(4) MAC len(1) MAC(6) IP len(1) IP(0/4/16) label1(3) [label2(3)]."""
    size = len(body)
    if size < 33:
        raise DecodeError(_LAYER, f"type-2 route of {size} octets is shorter than the 33 of a MAC-only route")
    rd = RouteDistinguisher.decode(body)
    esi = body[8:18]
    ethernet_tag = int.from_bytes(body[18:22], "big")
    if body[22] != 48:
        raise DecodeError(_LAYER, f"type-2 route: MAC address length {body[22]} bits, expected 48")
    mac = body[23:29]
    ip_bits = body[29]
    if ip_bits not in (0, 32, 128):
        raise DecodeError(_LAYER, f"type-2 route: IP address length {ip_bits} bits, expected 0, 32 or 128")
    ip_end = 30 + ip_bits // 8
    labels = size - ip_end
    if labels < 0:
        raise DecodeError(_LAYER, f"type-2 route: length {size} is too short for a {ip_bits}-bit IP address")
    if labels not in (3, 6):
        raise DecodeError(
            _LAYER,
            f"type-2 route: length {size} with a {ip_bits}-bit IP address leaves {labels} octets "
            f"for labels, expected 3 or 6",
        )
    ip = _ip(body[30:ip_end], "type-2 IP address") if ip_bits else None
    vni = int.from_bytes(body[ip_end : ip_end + 3], "big")
    vni2 = int.from_bytes(body[ip_end + 3 :], "big") if labels == 6 else None
    return MacIpRoute(rd, mac, ip, vni, vni2, esi, ethernet_tag)


def _decode_imet(body: bytes) -> ImetRoute:
    """RFC 7432 7.3: RD(8) tag(4) IP len(1) originating router's IP(4/16)."""
    size = len(body)
    if size not in (17, 29):
        raise DecodeError(_LAYER, f"type-3 route of {size} octets, expected 17 (IPv4) or 29 (IPv6)")
    ip_bits = body[12]
    if ip_bits != (size - 13) * 8:
        raise DecodeError(
            _LAYER, f"type-3 route: originator length {ip_bits} bits does not match route length {size}"
        )
    rd = RouteDistinguisher.decode(body)
    ethernet_tag = int.from_bytes(body[8:12], "big")
    return ImetRoute(rd, _ip(body[13:], "type-3 originator"), ethernet_tag)


def _decode_prefix(body: bytes) -> PrefixRoute:
    """RFC 9136 3.1: RD(8) ESI(10) tag(4) prefix len(1) prefix(4/16) gateway(4/16) label(3)."""
    size = len(body)
    if size not in (34, 58):
        raise DecodeError(_LAYER, f"type-5 route of {size} octets, expected 34 (IPv4) or 58 (IPv6)")
    width = 4 if size == 34 else 16
    rd = RouteDistinguisher.decode(body)
    esi = body[8:18]
    ethernet_tag = int.from_bytes(body[18:22], "big")
    prefix_len = body[22]
    if prefix_len > width * 8:
        raise DecodeError(_LAYER, f"type-5 route: IP prefix length {prefix_len} exceeds {width * 8}")
    address = _ip(body[23 : 23 + width], "type-5 prefix")
    gateway_octets = body[23 + width : 23 + 2 * width]
    gateway = None if not any(gateway_octets) else _ip(gateway_octets, "type-5 gateway")
    vni = int.from_bytes(body[23 + 2 * width :], "big")
    # host bits past the prefix length are not part of the route: mask them
    prefix = ipaddress.ip_network((address, prefix_len), strict=False)
    return PrefixRoute(rd, prefix, vni, gateway, esi, ethernet_tag)


_DECODERS = {
    ROUTE_TYPE_MAC_IP: _decode_mac_ip,
    ROUTE_TYPE_IMET: _decode_imet,
    ROUTE_TYPE_IP_PREFIX: _decode_prefix,
}


def decode_nlri(data: bytes | memoryview) -> list[EvpnRoute | UnknownRoute]:
    """Every route in a concatenation of EVPN NLRI, in order.

    Route types overlayd does not speak come back as `UnknownRoute`. Raises
    DecodeError (layer "evpn") when a length overruns the data or a route's
    fields are wrong; the reason names the route type and the field.
    """
    data = bytes(data)
    routes: list[EvpnRoute | UnknownRoute] = []
    offset = 0
    while offset < len(data):
        left = len(data) - offset
        if left < 2:
            raise DecodeError(_LAYER, f"NLRI at octet {offset}: 1 octet left, too few for route type and length")
        route_type, length = data[offset], data[offset + 1]
        if length > left - 2:
            raise DecodeError(
                _LAYER,
                f"route type {route_type} at octet {offset}: length {length} overruns the {left - 2} octets left",
            )
        body = data[offset + 2 : offset + 2 + length]
        decoder = _DECODERS.get(route_type)
        routes.append(decoder(body) if decoder else UnknownRoute(route_type, body))
        offset += 2 + length
    return routes
