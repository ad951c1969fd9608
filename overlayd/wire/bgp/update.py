"""The UPDATE message body (RFC 4271 4.3) carrying EVPN (AFI 25 / SAFI 70)
and IPv4 / IPv6 unicast (AFI 1 / 2, SAFI 1) routes, with RFC 7606 error handling.

    withdrawn routes length (2) | withdrawn routes | total path attribute length (2)
    | path attributes | NLRI

Where each family travels (RFC 4760):

    EVPN, IPv6 unicast  MP_REACH_NLRI / MP_UNREACH_NLRI, the next hop inside MP_REACH_NLRI
    IPv4 unicast        the withdrawn routes and NLRI fields, the next hop in NEXT_HOP (what
                        FRR and GoBGP send); read in MP_REACH_NLRI / MP_UNREACH_NLRI too

`decode_update` is told the families the session negotiated (`families`,
L2VPN/EVPN alone by default). Routes of any other family are not read and
are noted in `errors` ("... was not negotiated; ignored"), as are the
withdrawn routes and NLRI fields when IPv4 unicast was not negotiated.

The `Update` (decoded, or to encode):

  announced, withdrawn   routes of any family, `EvpnRoute` or `UnicastRoute`
                         (`route_family(route)` says which). Announced: those of
                         MP_REACH_NLRI, then those of the NLRI field. Withdrawn:
                         those of the withdrawn routes field, then MP_UNREACH_NLRI's.
  attributes             set exactly when routes are announced (an MP_REACH_NLRI of
                         a negotiated family, or IPv4 unicast in the NLRI field).
                         `attributes.next_hop` is MP_REACH_NLRI's next hop, or
                         NEXT_HOP's when there is no MP_REACH_NLRI.
  nlri_next_hop          NEXT_HOP, only when the NLRI field's routes share the UPDATE
                         with an MP_REACH_NLRI whose next hop is another; else None.
                         `next_hop_of(route)` / `attributes_of(route)` resolve it, so
                         each announced route knows its next hop.
  end_of_rib             the RFC 4724 End-of-RIB of `end_of_rib_family`: for IPv4
                         unicast the empty UPDATE, for the others an empty
                         MP_UNREACH_NLRI. `Update(end_of_rib=True)` is L2VPN/EVPN's.

To be encoded an Update holds one thing, as RFC 7606 5.1 asks (an UPDATE
SHOULD NOT carry more than one of withdrawn routes, NLRI, MP_REACH_NLRI and
MP_UNREACH_NLRI): an End-of-RIB, withdrawals of one family, or
announcements of one family. IPv4 unicast goes in the withdrawn routes /
NLRI fields with NEXT_HOP, the others in MP_REACH_NLRI / MP_UNREACH_NLRI.
`split_update` cuts any Update, a decoded one included, into such UPDATEs.

How a received problem is handled (RFC 7606):

  session reset (BgpError)  the NLRI cannot be located or read: withdrawn
                            routes or total attribute length overrun the
                            message; an attribute overruns the list before
                            any MP_REACH_NLRI / MP_UNREACH_NLRI was found (unless
                            IPv4 unicast is the only family negotiated: then the
                            NLRI field is found by the total attribute length and
                            it is treat-as-withdraw, RFC 7606 4); either of those
                            malformed (7.11, 5.3) or repeated (3.g); a prefix in
                            the withdrawn routes or NLRI field that cannot be read
                            (Invalid Network Field, RFC 4271 6.3, RFC 7606 5.3);
                            an unrecognised well-known attribute.
  treat-as-withdraw         `Update.treat_as_withdraw`, routes in `announced`:
                            a malformed ORIGIN, AS_PATH, MED, LOCAL_PREF, ...
                            (see attributes.py), ORIGIN or AS_PATH missing
                            when routes are announced (3.d), an attribute
                            overrunning the list after MP_* was found (4),
                            a next hop that is not a unicast address (7.11);
                            for routes in the NLRI field, NEXT_HOP missing (3.d),
                            not 4 octets long or not a unicast address (7.3).
  attribute-discard         the attribute is dropped and named in `errors`;
                            so are repeats of an attribute (3.g).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from collections.abc import Iterable
from dataclasses import dataclass

from overlayd.wire.bgp import evpn, unicast
from overlayd.wire.bgp.attributes import (
    AS_PATH,
    FLAG_EXTENDED_LENGTH,
    FLAG_OPTIONAL,
    FLAG_TRANSITIVE,
    MP_REACH_NLRI,
    MP_UNREACH_NLRI,
    NEXT_HOP,
    ORIGIN,
    TREAT_AS_WITHDRAW,
    FramedAttribute,
    PathAttributes,
    attribute_name,
    decode_path_attributes,
    encode_attribute,
    encode_path_attributes,
)
from overlayd.wire.bgp.errors import (
    BAD_MESSAGE_LENGTH,
    INVALID_NETWORK_FIELD,
    MALFORMED_ATTRIBUTE_LIST,
    MESSAGE_HEADER_ERROR,
    OPTIONAL_ATTRIBUTE_ERROR,
    UPDATE_MESSAGE_ERROR,
    BgpError,
)
from overlayd.wire.bgp.evpn import (
    AFI_L2VPN,
    SAFI_EVPN,
    EvpnRoute,
    IpAddress,
    UnknownRoute,
)
from overlayd.wire.bgp.unicast import AFI_IPV4, IPV4_UNICAST, IPV6_UNICAST, UnicastRoute
from overlayd.wire.errors import DecodeError

HEADER_LEN = 19
MAX_BODY_LEN = 4096 - HEADER_LEN  # RFC 4271 4.1: a message is at most 4096 octets

Family = tuple[int, int]  # (AFI, SAFI)
L2VPN_EVPN: Family = (AFI_L2VPN, SAFI_EVPN)
Route = EvpnRoute | UnicastRoute
FAMILY_NAMES: dict[Family, str] = {L2VPN_EVPN: "evpn", IPV4_UNICAST: "ipv4-unicast", IPV6_UNICAST: "ipv6-unicast"}
"""The families overlayd reads, by the names the config's `bgp.neighbors[].families` uses."""


def family_name(family: Family) -> str:
    """The family's name in FAMILY_NAMES, or "AFI x / SAFI y" for any other."""
    return FAMILY_NAMES.get(family, f"AFI {family[0]} / SAFI {family[1]}")


def route_family(route: Route | UnknownRoute) -> Family:
    """The (AFI, SAFI) a route belongs to."""
    return route.family if isinstance(route, UnicastRoute) else L2VPN_EVPN


@dataclass(frozen=True, slots=True)
class Update:
    """One UPDATE: routes announced with `attributes`, and routes withdrawn (see the module docstring).

    As received, `treat_as_withdraw` is True when RFC 7606 says the
    announced routes must be handled as withdrawn (the caller does that),
    and `errors` names every problem found (attributes discarded included).
    `ignored` names what was skipped without anything being wrong: EVPN route
    types overlayd does not speak (1, 4, ...).
    """

    announced: tuple[Route, ...] = ()
    withdrawn: tuple[Route, ...] = ()
    attributes: PathAttributes | None = None
    end_of_rib: bool = False
    treat_as_withdraw: bool = False
    errors: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()
    unknown_routes: int = 0  # EVPN routes of types overlayd does not speak, discarded (RFC 7606 5.4)
    end_of_rib_family: Family = L2VPN_EVPN
    nlri_next_hop: ipaddress.IPv4Address | None = None

    def next_hop_of(self, route: Route) -> IpAddress | None:
        """The next hop `route` was announced with (None when nothing is announced)."""
        if self.attributes is None:
            return None
        if self.nlri_next_hop is not None and route_family(route) == IPV4_UNICAST:
            return self.nlri_next_hop
        return self.attributes.next_hop

    def attributes_of(self, route: Route) -> PathAttributes | None:
        """`attributes` with the next hop `route` was announced with."""
        attributes = self.attributes
        hop = self.next_hop_of(route)
        if attributes is None or hop == attributes.next_hop:
            return attributes
        return dataclasses.replace(attributes, next_hop=hop)


# -- encoding ------------------------------------------------------------------


def _nlri(route: Route | UnknownRoute) -> bytes:
    return unicast.encode_nlri(route) if isinstance(route, UnicastRoute) else evpn.encode_nlri(route)


def _mp_reach(family: Family, next_hop: IpAddress | None, nlri: bytes) -> bytes:
    if next_hop is None:
        raise ValueError("announced routes need attributes.next_hop for MP_REACH_NLRI")
    hop = next_hop.packed
    value = struct.pack("!HBB", family[0], family[1], len(hop)) + hop + b"\x00" + nlri
    return encode_attribute(FLAG_OPTIONAL, MP_REACH_NLRI, value)


def _mp_unreach(family: Family, nlri: bytes) -> bytes:
    return encode_attribute(FLAG_OPTIONAL, MP_UNREACH_NLRI, struct.pack("!HB", *family) + nlri)


def _body(withdrawn: bytes = b"", attributes: bytes = b"", nlri: bytes = b"") -> bytes:
    return struct.pack("!H", len(withdrawn)) + withdrawn + struct.pack("!H", len(attributes)) + attributes + nlri


def _by_family(routes: Iterable[Route]) -> dict[Family, list[Route]]:
    groups: dict[Family, list[Route]] = {}
    for route in routes:
        groups.setdefault(route_family(route), []).append(route)
    return groups


def _one_family(routes: tuple[Route, ...], what: str) -> Family:
    groups = _by_family(routes)
    if len(groups) > 1:
        raise ValueError(f"{what} of {len(groups)} address families: one per UPDATE (use split_update)")
    return next(iter(groups), L2VPN_EVPN)


def _announcement(family: Family, routes: Iterable[Route], attributes: PathAttributes,
                  nlri_next_hop: ipaddress.IPv4Address | None, four_octet_as: bool) -> bytes:
    nlri = b"".join(_nlri(r) for r in routes)
    if family == IPV4_UNICAST:
        hop = nlri_next_hop or attributes.next_hop
        if hop is None:
            raise ValueError("IPv4 unicast routes need attributes.next_hop for NEXT_HOP")
        return _body(attributes=encode_path_attributes(attributes, four_octet_as, next_hop=hop), nlri=nlri)
    mp = _mp_reach(family, attributes.next_hop, nlri)
    return _body(attributes=mp + encode_path_attributes(attributes, four_octet_as))


def _withdrawal(family: Family, routes: Iterable[Route]) -> bytes:
    nlri = b"".join(_nlri(r) for r in routes)
    return _body(withdrawn=nlri) if family == IPV4_UNICAST else _body(attributes=_mp_unreach(family, nlri))


def encode_update(update: Update, four_octet_as: bool = True) -> bytes:
    """The UPDATE body (everything after the 19-octet header).

    Announcements (attributes set): IPv4 unicast in the NLRI field with
    NEXT_HOP, other families in MP_REACH_NLRI, first, then the path
    attributes. Withdrawals: IPv4 unicast in the withdrawn routes field,
    other families in MP_UNREACH_NLRI alone. End-of-RIB: the empty UPDATE
    (IPv4 unicast) or an empty MP_UNREACH_NLRI. An Update with announced and
    withdrawn routes, or routes of two families, is a ValueError (RFC 7606
    5.1): `split_update` makes the UPDATEs to send. ValueError too when the
    body would pass MAX_BODY_LEN or a field does not fit (local bugs).
    """
    if update.end_of_rib:
        if update.announced or update.withdrawn or update.attributes is not None:
            raise ValueError("an End-of-RIB carries no routes and no attributes")
        body = _withdrawal(update.end_of_rib_family, ())
    elif update.attributes is not None:
        if update.withdrawn:
            raise ValueError("RFC 7606 5.1: withdrawals and announcements go in separate UPDATEs")
        family = _one_family(update.announced, "announced routes")
        body = _announcement(family, update.announced, update.attributes, update.nlri_next_hop, four_octet_as)
    elif update.announced:
        raise ValueError("announced routes need attributes")
    elif update.withdrawn:
        body = _withdrawal(_one_family(update.withdrawn, "withdrawn routes"), update.withdrawn)
    else:
        raise ValueError("an Update with no routes, no attributes and no End-of-RIB says nothing")
    if len(body) > MAX_BODY_LEN:
        raise ValueError(f"UPDATE body of {len(body)} octets exceeds {MAX_BODY_LEN}; use split_update")
    return body


def split_update(update: Update, four_octet_as: bool = True, max_body_len: int = MAX_BODY_LEN) -> list[Update]:
    """The UPDATEs that carry `update`: withdrawals first, then announcements,
    one family each, each body at most `max_body_len` octets (RFC 7606 5.1,
    RFC 4271 4.1). Announcements keep the next hop each route came with."""
    if update.end_of_rib:
        return [Update(end_of_rib=True, end_of_rib_family=update.end_of_rib_family)]
    out = []
    for family, routes in _by_family(update.withdrawn).items():
        fixed = len(_withdrawal(family, ())) + (family != IPV4_UNICAST)  # +1: the length may need 2 octets
        out += [Update(withdrawn=chunk) for chunk in _chunks(routes, max_body_len - fixed)]
    if update.attributes is not None:
        for family, routes in (_by_family(update.announced) or {L2VPN_EVPN: []}).items():
            attributes = update.attributes_of(routes[0]) if routes else update.attributes
            assert attributes is not None
            fixed = len(_announcement(family, (), attributes, None, four_octet_as)) + (family != IPV4_UNICAST)
            for chunk in _chunks(routes, max_body_len - fixed) or [()]:
                out.append(Update(announced=chunk, attributes=attributes))
    elif update.announced:
        raise ValueError("announced routes need attributes")
    return out


def _chunks(routes: list[Route], room: int) -> list[tuple[Route, ...]]:
    chunks: list[tuple[Route, ...]] = []
    current: list[Route] = []
    used = 0
    for route in routes:
        size = len(_nlri(route))
        if size > room:
            raise ValueError(f"a {size}-octet route does not fit in {room} octets")
        if used + size > room:
            chunks.append(tuple(current))
            current, used = [], 0
        current.append(route)
        used += size
    if current:
        chunks.append(tuple(current))
    return chunks


# -- decoding ------------------------------------------------------------------


def _reset(subcode: int, message: str, data: bytes = b"") -> BgpError:
    return BgpError(UPDATE_MESSAGE_ERROR, subcode, message, data)


def _frame(data: bytes) -> tuple[list[FramedAttribute], str | None]:
    """Split the path attributes; the second item describes an overrun (RFC 7606 4), if any."""
    found = []
    offset = 0
    while offset < len(data):
        left = len(data) - offset
        flags = data[offset]
        header = 4 if flags & FLAG_EXTENDED_LENGTH else 3
        if left < header:
            return found, f"{left} octet(s) left at the end of the path attributes, too few for an attribute header"
        type_code = data[offset + 1]
        length = int.from_bytes(data[offset + 2 : offset + header], "big")
        if length > left - header:
            return found, (
                f"{attribute_name(type_code)}: length {length} overruns the {left - header} octets "
                f"left in the path attributes"
            )
        end = offset + header + length
        found.append(FramedAttribute(flags, type_code, data[offset + header : end], data[offset:end]))
        offset = end
    return found, None


def _routes(attr: FramedAttribute, family: Family, nlri: bytes, ignored: list[str],
            unknown: list[int] | None = None) -> tuple[Route, ...]:
    """The routes in an MP attribute's NLRI; unknown EVPN route types noted and skipped (RFC 7606 5.4)."""
    name = attribute_name(attr.type_code)
    try:
        decoded = evpn.decode_nlri(nlri) if family == L2VPN_EVPN else unicast.decode_nlri(nlri, family[0])
    except DecodeError as e:  # RFC 7606 5.3: the NLRI cannot be read
        raise _reset(OPTIONAL_ATTRIBUTE_ERROR, f"{name}: {e.reason}", attr.raw) from None
    skipped: dict[int, int] = {}
    for route in decoded:
        if isinstance(route, UnknownRoute):
            skipped[route.route_type] = skipped.get(route.route_type, 0) + 1
    for route_type, count in sorted(skipped.items()):
        ignored.append(f"{name}: skipped {count} EVPN route(s) of type {route_type}, not supported (RFC 7606 5.4)")
        if unknown is not None:
            unknown.append(count)
    return tuple(r for r in decoded if not isinstance(r, UnknownRoute))


def _field(data: bytes, name: str) -> list[UnicastRoute]:
    """The IPv4 prefixes of the withdrawn routes or NLRI field; unreadable ones reset (RFC 7606 5.3)."""
    try:
        return unicast.decode_nlri(data, AFI_IPV4)
    except DecodeError as e:
        raise _reset(INVALID_NETWORK_FIELD, f"{name}: {e.reason}") from None


def _family(attr: FramedAttribute, minimum: int, errors: list[str], families: frozenset[Family]) -> Family | None:
    """The AFI/SAFI at the start of an MP attribute; None (noted) when it was not negotiated."""
    name = attribute_name(attr.type_code)
    if len(attr.value) < minimum:
        raise _reset(
            OPTIONAL_ATTRIBUTE_ERROR, f"{name}: length {len(attr.value)} is shorter than its {minimum} fixed octets",
            attr.raw,
        )
    family = struct.unpack_from("!HB", attr.value)
    if family not in families:
        errors.append(f"{name}: AFI {family[0]} / SAFI {family[1]} was not negotiated; ignored")
        return None
    return family


def _unicast_address(address: IpAddress) -> bool:
    return not (address.is_unspecified or address.is_multicast)


def _next_hop(attr: FramedAttribute) -> tuple[IpAddress, bytes]:
    """MP_REACH_NLRI's next hop and NLRI; a bad next hop length means the NLRI cannot be found (7.11)."""
    value = attr.value
    size = value[3]
    if size not in (4, 16, 32):
        raise _reset(
            OPTIONAL_ATTRIBUTE_ERROR,
            f"MP_REACH_NLRI: next hop length {size} is not 4 (IPv4), 16 or 32 (IPv6 and link-local)",
            attr.raw,
        )
    if 4 + size + 1 > len(value):
        raise _reset(
            OPTIONAL_ATTRIBUTE_ERROR,
            f"MP_REACH_NLRI: next hop length {size} overruns the {len(value)}-octet attribute",
            attr.raw,
        )
    hop = value[4 : 4 + min(size, 16)]  # of 32 octets, the global address; the link-local is not used
    address = ipaddress.IPv4Address(hop) if size == 4 else ipaddress.IPv6Address(hop)
    return address, value[5 + size :]  # the reserved octet is ignored (RFC 4760 3)


def _nlri_next_hop(attr: FramedAttribute | None, errors: list[str]) -> tuple[ipaddress.IPv4Address | None, bool]:
    """NEXT_HOP for the routes of the NLRI field, and whether it is usable (RFC 7606 3.d, 7.3)."""
    if attr is None:
        errors.append(f"NEXT_HOP: missing, and the NLRI field announces routes ({TREAT_AS_WITHDRAW})")
        return None, False
    if len(attr.value) != 4:
        errors.append(f"NEXT_HOP: length {len(attr.value)}, expected 4 ({TREAT_AS_WITHDRAW})")
        return None, False
    hop = ipaddress.IPv4Address(attr.value)
    if not _unicast_address(hop):
        errors.append(f"NEXT_HOP: {hop} is not a unicast address ({TREAT_AS_WITHDRAW})")
        return hop, False
    return hop, True


def decode_update(
    body: bytes | memoryview, four_octet_as: bool = True, families: Iterable[Family] = (L2VPN_EVPN,)
) -> Update:
    """Decode an UPDATE body of a session that negotiated `families`; raises BgpError only
    where RFC 7606 says reset the session."""
    data = bytes(body)
    if len(data) < 4:
        raise BgpError(
            MESSAGE_HEADER_ERROR, BAD_MESSAGE_LENGTH,
            f"UPDATE of {len(data) + HEADER_LEN} octets is shorter than the minimum 23",
            struct.pack("!H", len(data) + HEADER_LEN),
        )
    readable = frozenset(f for f in families if f in FAMILY_NAMES)
    errors: list[str] = []
    ignored: list[str] = []
    unknown: list[int] = []
    withdrawn_len = struct.unpack_from("!H", data)[0]
    if 4 + withdrawn_len > len(data):
        raise _reset(
            MALFORMED_ATTRIBUTE_LIST,
            f"withdrawn routes length {withdrawn_len} overruns the {len(data) - 4} octets after the length fields",
        )
    attrs_start = 4 + withdrawn_len
    attrs_len = struct.unpack_from("!H", data, attrs_start - 2)[0]
    if attrs_start + attrs_len > len(data):
        raise _reset(
            MALFORMED_ATTRIBUTE_LIST,
            f"total path attribute length {attrs_len} overruns the {len(data) - attrs_start} octets left",
        )
    withdrawn_field = data[2:attrs_start - 2]
    nlri_field = data[attrs_start + attrs_len :]
    if IPV4_UNICAST not in readable:
        if withdrawn_field:
            errors.append(f"withdrawn routes: {len(withdrawn_field)} octets of IPv4 unicast ignored "
                          f"(family not negotiated)")
        if nlri_field:
            errors.append(f"NLRI: {len(nlri_field)} octets of IPv4 unicast ignored (family not negotiated)")
        withdrawn_field = nlri_field = b""
    elif len(data) == 4:
        return Update(end_of_rib=True, end_of_rib_family=IPV4_UNICAST)

    found, overrun = _frame(data[attrs_start : attrs_start + attrs_len])
    mp: dict[int, FramedAttribute] = {}
    first: dict[int, FramedAttribute] = {}
    withdraw = False
    for attr in found:
        name = attribute_name(attr.type_code)
        if attr.type_code in (MP_REACH_NLRI, MP_UNREACH_NLRI):
            if attr.type_code in mp:
                raise _reset(MALFORMED_ATTRIBUTE_LIST, f"{name} appears more than once (RFC 7606 3.g)")
            mp[attr.type_code] = attr
            if attr.flags & (FLAG_OPTIONAL | FLAG_TRANSITIVE) != FLAG_OPTIONAL:
                errors.append(f"{name}: flags {attr.flags:#04x} are not optional non-transitive ({TREAT_AS_WITHDRAW})")
                withdraw = True
        elif attr.type_code in first:
            errors.append(f"{name}: appears more than once; all but the first discarded (RFC 7606 3.g)")
        else:
            first[attr.type_code] = attr
    if overrun is not None:
        if not mp and readable - {IPV4_UNICAST}:  # an MP attribute we read may be past the overrun
            raise _reset(MALFORMED_ATTRIBUTE_LIST, f"{overrun}, before any MP_REACH_NLRI or MP_UNREACH_NLRI")
        errors.append(f"{overrun} ({TREAT_AS_WITHDRAW})")
        withdraw = True
    withdrawn: list[Route] = list(_field(withdrawn_field, "withdrawn routes"))
    in_nlri: list[Route] = list(_field(nlri_field, "NLRI"))

    announced: list[Route] = []
    mp_hop: IpAddress | None = None
    reach_nlri = b""
    reach = mp.get(MP_REACH_NLRI)
    reach_family = _family(reach, 5, errors, readable) if reach is not None else None
    if reach is not None and reach_family is not None:
        mp_hop, reach_nlri = _next_hop(reach)
        announced += _routes(reach, reach_family, reach_nlri, ignored, unknown)
        if not _unicast_address(mp_hop):
            errors.append(f"MP_REACH_NLRI: next hop {mp_hop} is not a unicast address ({TREAT_AS_WITHDRAW})")
            withdraw = True
    else:
        reach = None
    if in_nlri and reach_family == IPV4_UNICAST:
        errors.append(f"NLRI: {len(in_nlri)} IPv4 unicast route(s) ignored: MP_REACH_NLRI carries IPv4 unicast too")
        in_nlri = []
    nlri_hop = None
    if in_nlri:
        nlri_hop, usable = _nlri_next_hop(first.get(NEXT_HOP), errors)
        withdraw |= not usable
        announced += in_nlri
    end_of_rib = False
    unreach = mp.get(MP_UNREACH_NLRI)
    unreach_family = _family(unreach, 3, errors, readable) if unreach is not None else None
    if unreach is not None and unreach_family is not None:
        withdrawn += _routes(unreach, unreach_family, unreach.value[3:], ignored, unknown)
        end_of_rib = reach is None and len(unreach.value) == 3 and not (withdrawn_field or nlri_field)

    # the other attributes are read even without routes, so their problems are seen
    decoded = decode_path_attributes(first.values(), four_octet_as)
    errors.extend(decoded.errors)
    withdraw |= decoded.treat_as_withdraw
    attributes = None
    nlri_next_hop = None
    announcing = reach is not None or bool(in_nlri)
    if announcing:
        attributes = dataclasses.replace(decoded.attributes, next_hop=mp_hop if reach is not None else nlri_hop)
        if reach is not None and in_nlri and nlri_hop != mp_hop:
            nlri_next_hop = nlri_hop
        for code in (ORIGIN, AS_PATH) if reach_nlri or in_nlri else ():
            if code not in decoded.present:  # RFC 7606 3.d
                errors.append(f"{attribute_name(code)}: missing, and routes are announced ({TREAT_AS_WITHDRAW})")
                withdraw = True
    return Update(
        announced=tuple(announced),
        withdrawn=tuple(withdrawn),
        attributes=attributes,
        end_of_rib=end_of_rib,
        treat_as_withdraw=withdraw and announcing,
        errors=tuple(errors),
        ignored=tuple(ignored),
        unknown_routes=sum(unknown),
        end_of_rib_family=unreach_family if end_of_rib and unreach_family else L2VPN_EVPN,
        nlri_next_hop=nlri_next_hop,
    )
