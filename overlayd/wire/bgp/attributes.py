"""BGP path attributes (RFC 4271 4.3 / 5) for EVPN and unicast routes.

The decoded form is one frozen `PathAttributes`; the next hop (of
MP_REACH_NLRI, or NEXT_HOP for IPv4 unicast in the NLRI field) lands in
`next_hop`, the routes in the `Update` (see update.py, which frames the
attribute list, handles MP_REACH_NLRI / MP_UNREACH_NLRI and NEXT_HOP, and
calls `decode_path_attributes` for the rest).

What each attribute turns into when it is malformed follows RFC 7606:
ORIGIN, AS_PATH, MED, LOCAL_PREF, COMMUNITIES, ORIGINATOR_ID, CLUSTER_LIST,
EXTENDED_COMMUNITIES and PMSI_TUNNEL -> treat-as-withdraw; ATOMIC_AGGREGATE,
AGGREGATOR, AS4_PATH and AS4_AGGREGATOR -> attribute-discard; Optional or
Transitive flag bits that contradict the attribute's definition ->
treat-as-withdraw (RFC 7606 3.c); an unrecognised well-known attribute ->
session reset (RFC 4271 6.3). NEXT_HOP is read by update.py, and only when
the NLRI field carries IPv4 unicast routes; otherwise the next hop travels
in MP_REACH_NLRI and NEXT_HOP is ignored (RFC 4760 3).

ATOMIC_AGGREGATE, AGGREGATOR, COMMUNITIES and AS4_AGGREGATOR are recognised
but kept as `RawAttribute`s in `other`, as are attributes overlayd does not
know (optional ones; they are kept with their flags as received). Whoever
passes a learned route on to another peer must first call `readvertised()`,
which sets the Partial bit on unrecognised optional transitive attributes
and drops unrecognised non-transitive ones (RFC 4271 5). overlayd is an
iBGP speaker that does not reflect, so today its export never re-advertises
a learned route; a route reflector built on this module would.

LOCAL_PREF is decoded whatever the session; RFC 4271 5.1.5 says to ignore
it from an external peer, which only the session knows.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Union

from overlayd.wire.bgp.errors import UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE, UPDATE_MESSAGE_ERROR, BgpError
from overlayd.wire.bgp.evpn import IpAddress

# Attribute type codes
ORIGIN = 1
AS_PATH = 2
NEXT_HOP = 3
MULTI_EXIT_DISC = 4
LOCAL_PREF = 5
ATOMIC_AGGREGATE = 6
AGGREGATOR = 7
COMMUNITIES = 8
ORIGINATOR_ID = 9
CLUSTER_LIST = 10
MP_REACH_NLRI = 14
MP_UNREACH_NLRI = 15
EXTENDED_COMMUNITIES = 16
AS4_PATH = 17
AS4_AGGREGATOR = 18
PMSI_TUNNEL = 22

# Attribute flags
FLAG_OPTIONAL = 0x80
FLAG_TRANSITIVE = 0x40
FLAG_PARTIAL = 0x20
FLAG_EXTENDED_LENGTH = 0x10

ORIGIN_IGP = 0
ORIGIN_EGP = 1
ORIGIN_INCOMPLETE = 2

AS_SET = 1
AS_SEQUENCE = 2
AS_CONFED_SEQUENCE = 3  # RFC 5065
AS_CONFED_SET = 4
AS_TRANS = 23456  # RFC 6793: stands in for a 4-octet AS on a 2-octet session

TUNNEL_TYPE_VXLAN = 8  # RFC 9012 BGP Tunnel Encapsulation Attribute Tunnel Types
TUNNEL_TYPE_IPIP = 7  # RFC 9012: IP in IP
PMSI_INGRESS_REPLICATION = 6  # RFC 6514 5

ATTRIBUTE_NAMES = {
    ORIGIN: "ORIGIN", AS_PATH: "AS_PATH", NEXT_HOP: "NEXT_HOP", MULTI_EXIT_DISC: "MULTI_EXIT_DISC",
    LOCAL_PREF: "LOCAL_PREF", ATOMIC_AGGREGATE: "ATOMIC_AGGREGATE", AGGREGATOR: "AGGREGATOR",
    COMMUNITIES: "COMMUNITIES", ORIGINATOR_ID: "ORIGINATOR_ID", CLUSTER_LIST: "CLUSTER_LIST",
    MP_REACH_NLRI: "MP_REACH_NLRI", MP_UNREACH_NLRI: "MP_UNREACH_NLRI",
    EXTENDED_COMMUNITIES: "EXTENDED_COMMUNITIES", AS4_PATH: "AS4_PATH", AS4_AGGREGATOR: "AS4_AGGREGATOR",
    PMSI_TUNNEL: "PMSI_TUNNEL",
}

_WELL_KNOWN = FLAG_TRANSITIVE  # the Optional and Transitive bits of each recognised attribute
_OPTIONAL = FLAG_OPTIONAL
_OPTIONAL_TRANSITIVE = FLAG_OPTIONAL | FLAG_TRANSITIVE
EXPECTED_FLAGS = {
    ORIGIN: _WELL_KNOWN, AS_PATH: _WELL_KNOWN, NEXT_HOP: _WELL_KNOWN, MULTI_EXIT_DISC: _OPTIONAL,
    LOCAL_PREF: _WELL_KNOWN, ATOMIC_AGGREGATE: _WELL_KNOWN, AGGREGATOR: _OPTIONAL_TRANSITIVE,
    COMMUNITIES: _OPTIONAL_TRANSITIVE, ORIGINATOR_ID: _OPTIONAL, CLUSTER_LIST: _OPTIONAL,
    MP_REACH_NLRI: _OPTIONAL, MP_UNREACH_NLRI: _OPTIONAL, EXTENDED_COMMUNITIES: _OPTIONAL_TRANSITIVE,
    AS4_PATH: _OPTIONAL_TRANSITIVE, AS4_AGGREGATOR: _OPTIONAL_TRANSITIVE, PMSI_TUNNEL: _OPTIONAL_TRANSITIVE,
}
# recognised, but carried in PathAttributes.other as received
KEPT_RAW = frozenset({ATOMIC_AGGREGATE, AGGREGATOR, COMMUNITIES, AS4_AGGREGATOR})

TREAT_AS_WITHDRAW = "treat-as-withdraw"
ATTRIBUTE_DISCARD = "attribute-discard"


def attribute_name(type_code: int) -> str:
    return ATTRIBUTE_NAMES.get(type_code, f"attribute {type_code}")


@dataclass(frozen=True, slots=True)
class AsPathSegment:
    kind: int  # AS_SET or AS_SEQUENCE (or a confederation segment, RFC 5065)
    asns: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """RFC 4360 route target, `admin:number`; admin is an AS number (2 or 4 octets) or an IPv4 address.

    `kind` is the extended community type it came in (0x00, 0x01, 0x02), so it
    encodes back the same; None (as from `parse`) picks by the admin value on
    encode. It takes no part in equality: `65000:100` is one route target to
    overlayd whichever type carried it.
    """

    admin: str
    number: int
    kind: int | None = field(default=None, compare=False)

    def __str__(self) -> str:
        return f"{self.admin}:{self.number}"

    @classmethod
    def parse(cls, text: str) -> RouteTarget:
        """`"65000:100"`, `"4200000000:100"` or `"10.0.0.1:100"`; ValueError if it cannot be encoded."""
        admin, sep, number = text.strip().rpartition(":")
        if not sep or not number.isdigit():
            raise ValueError(f"route target {text!r} is not <AS or IPv4>:<number>")
        if "." in admin:
            admin = str(ipaddress.IPv4Address(admin))
        elif admin.isdigit():
            admin = str(int(admin))
        else:
            raise ValueError(f"route target {text!r}: {admin!r} is neither an AS number nor IPv4")
        rt = cls(admin, int(number))
        encode_ext_community(rt)  # range checks
        return rt


@dataclass(frozen=True, slots=True)
class Encapsulation:
    """RFC 9012 4.1 (was RFC 5512): the tunnel type the route's traffic uses."""

    tunnel_type: int = TUNNEL_TYPE_VXLAN


@dataclass(frozen=True, slots=True)
class MacMobility:
    """RFC 7432 7.7: how many times the MAC has moved; sticky MACs never move."""

    sequence: int
    sticky: bool = False


@dataclass(frozen=True, slots=True)
class RouterMac:
    """RFC 9135 8.1: the MAC to use as inner destination when routing to this VTEP."""

    mac: bytes


@dataclass(frozen=True, slots=True)
class OtherExtCommunity:
    """An extended community overlayd does not interpret, kept as its 8 octets."""

    raw: bytes


ExtCommunity = Union[RouteTarget, Encapsulation, MacMobility, RouterMac, OtherExtCommunity]


@dataclass(frozen=True, slots=True)
class PmsiTunnel:
    """RFC 6514 5 / RFC 8365 5.1.3: how to reach the originator with BUM traffic."""

    tunnel_type: int  # PMSI_INGRESS_REPLICATION
    vni: int  # the label field carries the VNI
    tunnel_id: IpAddress  # the originator's VTEP
    flags: int = 0


@dataclass(frozen=True, slots=True)
class RawAttribute:
    """An attribute overlayd does not interpret, passed on if optional transitive."""

    flags: int
    type_code: int
    value: bytes


@dataclass(frozen=True, slots=True)
class PathAttributes:
    origin: int = ORIGIN_IGP
    as_path: tuple[AsPathSegment, ...] = ()
    next_hop: IpAddress | None = None  # from MP_REACH_NLRI, or NEXT_HOP (see update.py)
    med: int | None = None
    local_pref: int | None = None
    ext_communities: tuple[ExtCommunity, ...] = ()
    pmsi_tunnel: PmsiTunnel | None = None
    originator_id: ipaddress.IPv4Address | None = None
    cluster_list: tuple[ipaddress.IPv4Address, ...] = ()
    other: tuple[RawAttribute, ...] = ()

    def route_targets(self) -> tuple[RouteTarget, ...]:
        return tuple(c for c in self.ext_communities if isinstance(c, RouteTarget))

    def mac_mobility(self) -> MacMobility | None:
        return next((c for c in self.ext_communities if isinstance(c, MacMobility)), None)

    def router_mac(self) -> bytes | None:
        return next((c.mac for c in self.ext_communities if isinstance(c, RouterMac)), None)

    def as_path_length(self) -> int:
        """RFC 4271 9.1.2.2: an AS_SET counts as 1, each AS in a sequence as 1."""
        return sum(len(s.asns) if s.kind == AS_SEQUENCE else 1 for s in self.as_path)


def readvertised(attributes: PathAttributes) -> PathAttributes:
    """The attributes to send when passing a learned route on (RFC 4271 5).

    Unrecognised optional transitive attributes get the Partial bit;
    unrecognised optional non-transitive ones are dropped. Recognised ones
    kept raw (AGGREGATOR, COMMUNITIES, ...) go on unchanged.
    """
    kept = []
    for attr in attributes.other:
        if attr.type_code in KEPT_RAW:
            kept.append(attr)
        elif attr.flags & FLAG_OPTIONAL and attr.flags & FLAG_TRANSITIVE:
            kept.append(dataclasses.replace(attr, flags=attr.flags | FLAG_PARTIAL))
    return dataclasses.replace(attributes, other=tuple(kept))


# -- extended communities (RFC 4360) ---------------------------------------------

EXT_TYPE_AS2 = 0x00
EXT_TYPE_IPV4 = 0x01
EXT_TYPE_AS4 = 0x02
EXT_TYPE_OPAQUE = 0x03
EXT_TYPE_EVPN = 0x06
EXT_SUBTYPE_ROUTE_TARGET = 0x02
EXT_SUBTYPE_ENCAPSULATION = 0x0C  # opaque
EXT_SUBTYPE_MAC_MOBILITY = 0x00  # EVPN
EXT_SUBTYPE_ROUTER_MAC = 0x03  # EVPN
MAC_MOBILITY_STICKY = 0x01
# route target type -> (struct of the admin and number fields, bits of the number)
_RT_LAYOUT = {EXT_TYPE_AS2: ("!HI", 32), EXT_TYPE_IPV4: ("!4sH", 16), EXT_TYPE_AS4: ("!IH", 16)}


def _fit(value: int, bits: int, what: str) -> int:
    if not 0 <= value < 1 << bits:
        raise ValueError(f"{what} {value} does not fit in {bits} bits")
    return value


def _route_target_kind(rt: RouteTarget) -> int:
    if rt.kind is not None:
        return rt.kind
    if "." in rt.admin:
        return EXT_TYPE_IPV4
    return EXT_TYPE_AS2 if int(rt.admin) <= 0xFFFF else EXT_TYPE_AS4


def encode_ext_community(community: ExtCommunity) -> bytes:
    """The 8 octets of one extended community; ValueError if a field does not fit."""
    if isinstance(community, RouteTarget):
        kind = _route_target_kind(community)
        if kind not in _RT_LAYOUT:
            raise ValueError(f"route target type {kind:#04x} is not 0x00, 0x01 or 0x02")
        layout, bits = _RT_LAYOUT[kind]
        if kind == EXT_TYPE_IPV4:
            admin: int | bytes = ipaddress.IPv4Address(community.admin).packed
        else:
            admin = _fit(int(community.admin), 48 - bits, "RT AS")
        number = _fit(community.number, bits, "RT number")
        return bytes([kind, EXT_SUBTYPE_ROUTE_TARGET]) + struct.pack(layout, admin, number)
    if isinstance(community, Encapsulation):
        return bytes([EXT_TYPE_OPAQUE, EXT_SUBTYPE_ENCAPSULATION, 0, 0, 0, 0]) + struct.pack(
            "!H", _fit(community.tunnel_type, 16, "tunnel type")
        )
    if isinstance(community, MacMobility):
        flags = MAC_MOBILITY_STICKY if community.sticky else 0
        return bytes([EXT_TYPE_EVPN, EXT_SUBTYPE_MAC_MOBILITY, flags, 0]) + struct.pack(
            "!I", _fit(community.sequence, 32, "MAC mobility sequence")
        )
    if isinstance(community, RouterMac):
        if len(community.mac) != 6:
            raise ValueError(f"router's MAC of {len(community.mac)} octets, expected 6")
        return bytes([EXT_TYPE_EVPN, EXT_SUBTYPE_ROUTER_MAC]) + bytes(community.mac)
    if isinstance(community, OtherExtCommunity):
        if len(community.raw) != 8:
            raise ValueError(f"extended community of {len(community.raw)} octets, expected 8")
        return bytes(community.raw)
    raise TypeError(f"not an extended community: {community!r}")


def decode_ext_community(raw: bytes) -> ExtCommunity:
    """One 8-octet extended community; the kinds overlayd does not use become OtherExtCommunity."""
    kind, subtype = raw[0], raw[1]
    if subtype == EXT_SUBTYPE_ROUTE_TARGET and kind in _RT_LAYOUT:
        admin, number = struct.unpack_from(_RT_LAYOUT[kind][0], raw, 2)
        return RouteTarget(str(ipaddress.IPv4Address(admin)) if kind == EXT_TYPE_IPV4 else str(admin), number, kind)
    if kind == EXT_TYPE_OPAQUE and subtype == EXT_SUBTYPE_ENCAPSULATION:
        return Encapsulation(struct.unpack_from("!H", raw, 6)[0])  # 4 reserved octets ignored
    if kind == EXT_TYPE_EVPN and subtype == EXT_SUBTYPE_MAC_MOBILITY:
        return MacMobility(struct.unpack_from("!I", raw, 4)[0], bool(raw[2] & MAC_MOBILITY_STICKY))
    if kind == EXT_TYPE_EVPN and subtype == EXT_SUBTYPE_ROUTER_MAC:
        return RouterMac(bytes(raw[2:8]))
    return OtherExtCommunity(bytes(raw))


# -- AS paths (RFC 4271 4.3, RFC 6793) -------------------------------------------


def encode_as_path(segments: Iterable[AsPathSegment], four_octet: bool) -> bytes:
    """AS_PATH's value with 4- or 2-octet ASNs; on 2 octets a larger AS becomes AS_TRANS."""
    out = bytearray()
    for seg in segments:
        if not 1 <= len(seg.asns) <= 255:
            raise ValueError(f"AS path segment of {len(seg.asns)} ASNs; a segment holds 1 to 255")
        out += bytes([_fit(seg.kind, 8, "segment type"), len(seg.asns)])
        for asn in seg.asns:
            _fit(asn, 32, "AS number")
            out += struct.pack("!I", asn) if four_octet else struct.pack("!H", asn if asn <= 0xFFFF else AS_TRANS)
    return bytes(out)


class _Malformed(Exception):
    """One attribute's value is wrong; the message says how, update.py decides what follows."""


def decode_as_path(value: bytes, four_octet: bool) -> tuple[AsPathSegment, ...]:
    """AS_PATH or AS4_PATH's value; raises _Malformed per RFC 7606 7.2."""
    width = 4 if four_octet else 2
    segments = []
    offset = 0
    while offset < len(value):
        number = len(segments) + 1
        if len(value) - offset < 2:
            raise _Malformed(f"1 octet left after segment {number - 1}, too few for a segment header")
        kind, count = value[offset], value[offset + 1]
        if kind not in (AS_SET, AS_SEQUENCE, AS_CONFED_SEQUENCE, AS_CONFED_SET):
            raise _Malformed(f"segment {number} has unknown type {kind}")
        if count == 0:
            raise _Malformed(f"segment {number} has length 0")
        end = offset + 2 + count * width
        if end > len(value):
            raise _Malformed(
                f"segment {number} of {count} {width}-octet ASNs overruns the {len(value)}-octet attribute"
            )
        asns = struct.unpack_from(f"!{count}{'I' if four_octet else 'H'}", value, offset + 2)
        segments.append(AsPathSegment(kind, tuple(asns)))
        offset = end
    return tuple(segments)


def _counted(segments: Iterable[AsPathSegment]) -> int:
    """RFC 6793 4.2.3: an AS_SET counts 1, confederation segments 0."""
    return sum(len(s.asns) if s.kind == AS_SEQUENCE else 1 if s.kind == AS_SET else 0 for s in segments)


def merge_as4_path(as_path: tuple[AsPathSegment, ...], as4_path: tuple[AsPathSegment, ...]) -> tuple[AsPathSegment, ...]:
    """RFC 6793 4.2.3: the leading ASes of AS_PATH that AS4_PATH lacks, then AS4_PATH."""
    keep = _counted(as_path) - _counted(as4_path)
    if keep < 0:
        return as_path  # AS4_PATH is longer: ignore it
    leading: list[AsPathSegment] = []
    for seg in as_path:
        if keep <= 0:
            break
        if seg.kind == AS_SEQUENCE:
            leading.append(AsPathSegment(AS_SEQUENCE, seg.asns[:keep]))
            keep -= len(seg.asns[:keep])
        else:
            leading.append(seg)
            keep -= seg.kind == AS_SET
    return tuple(leading) + as4_path


# -- PMSI tunnel (RFC 6514 5) ------------------------------------------------------


def encode_pmsi_tunnel(pmsi: PmsiTunnel) -> bytes:
    return (
        bytes([_fit(pmsi.flags, 8, "PMSI flags"), _fit(pmsi.tunnel_type, 8, "PMSI tunnel type")])
        + _fit(pmsi.vni, 24, "VNI").to_bytes(3, "big")
        + pmsi.tunnel_id.packed
    )


def decode_pmsi_tunnel(value: bytes) -> PmsiTunnel:
    if len(value) < 5:
        raise _Malformed(f"length {len(value)} is shorter than the 5 octets before the tunnel identifier")
    tunnel_id = value[5:]
    if len(tunnel_id) == 4:
        address: IpAddress = ipaddress.IPv4Address(tunnel_id)
    elif len(tunnel_id) == 16:
        address = ipaddress.IPv6Address(tunnel_id)
    else:
        raise _Malformed(f"tunnel identifier of {len(tunnel_id)} octets is neither an IPv4 nor an IPv6 address")
    return PmsiTunnel(value[1], int.from_bytes(value[2:5], "big"), address, value[0])


# -- the attribute list ----------------------------------------------------------------


def encode_attribute(flags: int, type_code: int, value: bytes) -> bytes:
    """Flags, type, 1- or 2-octet length (Extended Length set when the value needs it), value."""
    if len(value) > 0xFFFF:
        raise ValueError(f"{attribute_name(type_code)} value of {len(value)} octets is too long")
    if len(value) > 255 or flags & FLAG_EXTENDED_LENGTH:
        return struct.pack("!BBH", flags | FLAG_EXTENDED_LENGTH, type_code, len(value)) + value
    return struct.pack("!BBB", flags, type_code, len(value)) + value


_NOT_IN_OTHER = frozenset(EXPECTED_FLAGS) - KEPT_RAW


def encode_path_attributes(
    attributes: PathAttributes, four_octet_as: bool = True, next_hop: ipaddress.IPv4Address | None = None
) -> bytes:
    """Every attribute but MP_REACH_NLRI / MP_UNREACH_NLRI, in type code order.

    ORIGIN and AS_PATH are always there; on a 2-octet session an AS_PATH with
    ASes above 65535 is sent with AS_TRANS and an AS4_PATH (RFC 6793 4.2.2).
    NEXT_HOP is there when `next_hop` is given (routes in the NLRI field);
    `attributes.next_hop` is left to MP_REACH_NLRI.
    """
    a = attributes
    values = {ORIGIN: bytes([_fit(a.origin, 8, "ORIGIN")]), AS_PATH: encode_as_path(a.as_path, four_octet_as)}
    if next_hop is not None:
        if next_hop.version != 4:
            raise ValueError(f"NEXT_HOP {next_hop} is not an IPv4 address (RFC 4271 5.1.3)")
        values[NEXT_HOP] = next_hop.packed
    if not four_octet_as and any(asn > 0xFFFF for seg in a.as_path for asn in seg.asns):
        values[AS4_PATH] = encode_as_path([s for s in a.as_path if s.kind in (AS_SET, AS_SEQUENCE)], True)
    if a.med is not None:
        values[MULTI_EXIT_DISC] = struct.pack("!I", _fit(a.med, 32, "MED"))
    if a.local_pref is not None:
        values[LOCAL_PREF] = struct.pack("!I", _fit(a.local_pref, 32, "LOCAL_PREF"))
    if a.originator_id is not None:
        values[ORIGINATOR_ID] = a.originator_id.packed
    if a.cluster_list:
        values[CLUSTER_LIST] = b"".join(c.packed for c in a.cluster_list)
    if a.ext_communities:
        values[EXTENDED_COMMUNITIES] = b"".join(encode_ext_community(c) for c in a.ext_communities)
    if a.pmsi_tunnel is not None:
        values[PMSI_TUNNEL] = encode_pmsi_tunnel(a.pmsi_tunnel)
    out = [(code, encode_attribute(EXPECTED_FLAGS[code], code, value)) for code, value in values.items()]
    for raw in a.other:
        if raw.type_code in _NOT_IN_OTHER:
            raise ValueError(f"{attribute_name(raw.type_code)} belongs in its own field, not in `other`")
        out.append((raw.type_code, encode_attribute(raw.flags, raw.type_code, bytes(raw.value))))
    out.sort(key=lambda item: item[0])  # stable: `other` keeps its order within a type code
    return b"".join(encoded for _, encoded in out)


@dataclass(frozen=True, slots=True)
class FramedAttribute:
    """One attribute as found in the UPDATE: its header fields, value, and all its octets."""

    flags: int
    type_code: int
    value: bytes
    raw: bytes  # header and value: the data of a NOTIFICATION about it


@dataclass(frozen=True, slots=True)
class DecodedAttributes:
    """What `decode_path_attributes` made of the list (next_hop is left to update.py)."""

    attributes: PathAttributes
    errors: tuple[str, ...]
    treat_as_withdraw: bool
    present: frozenset[int]  # type codes found, malformed ones included (RFC 7606 3.d)


def _fixed(value: bytes, size: int) -> bytes:
    if len(value) != size:
        raise _Malformed(f"length {len(value)}, expected {size}")
    return value


def _multiple(value: bytes, size: int) -> bytes:
    if not value or len(value) % size:
        raise _Malformed(f"length {len(value)} is not a positive multiple of {size}")
    return value


def _origin(value: bytes) -> int:
    origin = _fixed(value, 1)[0]
    if origin > ORIGIN_INCOMPLETE:
        raise _Malformed(f"value {origin} is not IGP (0), EGP (1) or INCOMPLETE (2)")
    return origin


def decode_path_attributes(found: Iterable[FramedAttribute], four_octet_as: bool = True) -> DecodedAttributes:
    """Interpret the attributes other than MP_REACH_NLRI / MP_UNREACH_NLRI (first instances only).

    Raises BgpError for an unrecognised well-known attribute; every other
    problem becomes an error string (attribute name, what is wrong, the RFC
    7606 action) and either treat-as-withdraw or the attribute dropped.
    """
    fields: dict = {}
    other: list[RawAttribute] = []
    errors: list[str] = []
    withdraw = False
    present = set()
    as4_path: tuple[AsPathSegment, ...] | None = None

    for attr in found:
        code, value, name = attr.type_code, attr.value, attribute_name(attr.type_code)
        present.add(code)
        expected = EXPECTED_FLAGS.get(code)
        if expected is None:
            if not attr.flags & FLAG_OPTIONAL:
                raise BgpError(
                    UPDATE_MESSAGE_ERROR, UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
                    f"{name}: flagged well-known, but overlayd does not know it", attr.raw,
                )
            other.append(RawAttribute(attr.flags, code, value))
            continue
        if attr.flags & _OPTIONAL_TRANSITIVE != expected:
            errors.append(
                f"{name}: flags {attr.flags:#04x} say {_flag_words(attr.flags)}, expected "
                f"{_flag_words(expected)} ({TREAT_AS_WITHDRAW})"
            )
            withdraw = True
            continue
        try:
            if code == ORIGIN:
                fields["origin"] = _origin(value)
            elif code == AS_PATH:
                fields["as_path"] = decode_as_path(value, four_octet_as)
            elif code == NEXT_HOP:
                pass  # update.py reads it when the NLRI field needs it; else RFC 4760 3 says ignore it
            elif code == MULTI_EXIT_DISC:
                fields["med"] = struct.unpack("!I", _fixed(value, 4))[0]
            elif code == LOCAL_PREF:
                fields["local_pref"] = struct.unpack("!I", _fixed(value, 4))[0]
            elif code == ATOMIC_AGGREGATE:
                other.append(RawAttribute(attr.flags, code, _fixed(value, 0)))
            elif code == AGGREGATOR:
                other.append(RawAttribute(attr.flags, code, _fixed(value, 8 if four_octet_as else 6)))
            elif code == COMMUNITIES:
                other.append(RawAttribute(attr.flags, code, _multiple(value, 4)))
            elif code == ORIGINATOR_ID:
                fields["originator_id"] = ipaddress.IPv4Address(_fixed(value, 4))
            elif code == CLUSTER_LIST:
                v = _multiple(value, 4)
                fields["cluster_list"] = tuple(ipaddress.IPv4Address(v[i : i + 4]) for i in range(0, len(v), 4))
            elif code == EXTENDED_COMMUNITIES:
                v = _multiple(value, 8)
                fields["ext_communities"] = tuple(decode_ext_community(v[i : i + 8]) for i in range(0, len(v), 8))
            elif code == PMSI_TUNNEL:
                fields["pmsi_tunnel"] = decode_pmsi_tunnel(value)
            elif code in (AS4_PATH, AS4_AGGREGATOR) and four_octet_as:
                errors.append(f"{name}: not expected on a 4-octet AS session (RFC 6793 4.1) ({ATTRIBUTE_DISCARD})")
            elif code == AS4_PATH:
                as4_path = decode_as_path(value, True)
            elif code == AS4_AGGREGATOR:
                other.append(RawAttribute(attr.flags, code, _fixed(value, 8)))
            else:  # MP_REACH_NLRI / MP_UNREACH_NLRI belong to update.py
                raise ValueError(f"{name} is not decoded here")
        except _Malformed as problem:
            discard = code in (ATOMIC_AGGREGATE, AGGREGATOR, AS4_PATH, AS4_AGGREGATOR)
            errors.append(f"{name}: {problem} ({ATTRIBUTE_DISCARD if discard else TREAT_AS_WITHDRAW})")
            withdraw |= not discard

    if as4_path is not None and "as_path" in fields:
        fields["as_path"] = merge_as4_path(fields["as_path"], as4_path)
    return DecodedAttributes(PathAttributes(**fields, other=tuple(other)), tuple(errors), withdraw, frozenset(present))


def _flag_words(flags: int) -> str:
    optional = "optional" if flags & FLAG_OPTIONAL else "well-known"
    transitive = "transitive" if flags & FLAG_TRANSITIVE else "non-transitive"
    return f"{optional} {transitive}"
