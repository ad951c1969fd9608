"""The UPDATE message body (RFC 4271 4.3) carrying EVPN routes in
MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760), with RFC 7606 error handling.

    withdrawn routes length (2) | withdrawn routes | total path attribute length (2)
    | path attributes | NLRI

EVPN routes travel only inside MP_REACH_NLRI / MP_UNREACH_NLRI for AFI 25 /
SAFI 70; the withdrawn routes and NLRI fields are IPv4 unicast, a family
overlayd never negotiates, so on receipt they are ignored (and noted).

How a received problem is handled (RFC 7606):

  session reset (BgpError)  the NLRI cannot be located or read: withdrawn
                            routes or total attribute length overrun the
                            message; an attribute overruns the list before
                            any MP_REACH_NLRI / MP_UNREACH_NLRI was found;
                            either of those malformed (7.11, 5.3) or repeated
                            (3.g); an unrecognised well-known attribute.
  treat-as-withdraw         `Update.treat_as_withdraw`, routes in `announced`:
                            a malformed ORIGIN, AS_PATH, MED, LOCAL_PREF, ...
                            (see attributes.py), ORIGIN or AS_PATH missing
                            when routes are announced (3.d), an attribute
                            overrunning the list after MP_* was found (4),
                            a next hop that is not a unicast address (7.11).
  attribute-discard         the attribute is dropped and named in `errors`;
                            so are repeats of an attribute (3.g).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import struct
from dataclasses import dataclass

from overlayd.wire.bgp.attributes import (
    FLAG_EXTENDED_LENGTH,
    FLAG_OPTIONAL,
    FLAG_TRANSITIVE,
    MP_REACH_NLRI,
    MP_UNREACH_NLRI,
    TREAT_AS_WITHDRAW,
    AS_PATH,
    ORIGIN,
    FramedAttribute,
    PathAttributes,
    attribute_name,
    decode_path_attributes,
    encode_attribute,
    encode_path_attributes,
)
from overlayd.wire.bgp.errors import (
    BAD_MESSAGE_LENGTH,
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
    decode_nlri,
    encode_nlri,
)
from overlayd.wire.errors import DecodeError

HEADER_LEN = 19
MAX_BODY_LEN = 4096 - HEADER_LEN  # RFC 4271 4.1: a message is at most 4096 octets


@dataclass(frozen=True, slots=True)
class Update:
    """One UPDATE: EVPN routes announced with `attributes`, and routes withdrawn.

    As received, `treat_as_withdraw` is True when RFC 7606 says the
    announced routes must be handled as withdrawn (the caller does that),
    and `errors` names every problem found (attributes discarded included).
    `ignored` names what was skipped without anything being wrong: EVPN route
    types overlayd does not speak (1, 4, ...) and families not negotiated.
    `end_of_rib` is the RFC 4724 marker for L2VPN/EVPN: an MP_UNREACH_NLRI
    with no routes.

    `attributes` is set exactly when the UPDATE has an EVPN MP_REACH_NLRI
    (its next hop is `attributes.next_hop`); a withdrawal has None.
    """

    announced: tuple[EvpnRoute, ...] = ()
    withdrawn: tuple[EvpnRoute, ...] = ()
    attributes: PathAttributes | None = None
    end_of_rib: bool = False
    treat_as_withdraw: bool = False
    errors: tuple[str, ...] = ()
    ignored: tuple[str, ...] = ()


# -- encoding ------------------------------------------------------------------


def _mp_reach(next_hop: IpAddress | None, nlri: bytes) -> bytes:
    if next_hop is None:
        raise ValueError("announced routes need attributes.next_hop for MP_REACH_NLRI")
    hop = next_hop.packed
    value = struct.pack("!HBB", AFI_L2VPN, SAFI_EVPN, len(hop)) + hop + b"\x00" + nlri
    return encode_attribute(FLAG_OPTIONAL, MP_REACH_NLRI, value)


def _mp_unreach(nlri: bytes) -> bytes:
    return encode_attribute(FLAG_OPTIONAL, MP_UNREACH_NLRI, struct.pack("!HB", AFI_L2VPN, SAFI_EVPN) + nlri)


def encode_update(update: Update, four_octet_as: bool = True) -> bytes:
    """The UPDATE body (everything after the 19-octet header).

    Announcements (attributes set) go in MP_REACH_NLRI followed by the path
    attributes; withdrawals in MP_UNREACH_NLRI alone; an End-of-RIB is an
    empty MP_UNREACH_NLRI. RFC 7606 5.1 forbids both MP attributes in one
    UPDATE, so an Update with announced and withdrawn routes is a ValueError:
    `split_update` makes the UPDATEs to send. ValueError too when the body
    would pass MAX_BODY_LEN or a field does not fit (local bugs).
    """
    if update.end_of_rib:
        if update.announced or update.withdrawn or update.attributes is not None:
            raise ValueError("an End-of-RIB carries no routes and no attributes")
        attributes = _mp_unreach(b"")
    elif update.attributes is not None:
        if update.withdrawn:
            raise ValueError("RFC 7606 5.1: MP_REACH_NLRI and MP_UNREACH_NLRI go in separate UPDATEs")
        nlri = b"".join(encode_nlri(r) for r in update.announced)
        attributes = _mp_reach(update.attributes.next_hop, nlri) + encode_path_attributes(
            update.attributes, four_octet_as
        )
    elif update.announced:
        raise ValueError("announced routes need attributes")
    elif update.withdrawn:
        attributes = _mp_unreach(b"".join(encode_nlri(r) for r in update.withdrawn))
    else:
        raise ValueError("an Update with no routes, no attributes and no End-of-RIB says nothing")
    body = struct.pack("!HH", 0, len(attributes)) + attributes
    if len(body) > MAX_BODY_LEN:
        raise ValueError(f"UPDATE body of {len(body)} octets exceeds {MAX_BODY_LEN}; use split_update")
    return body


def split_update(update: Update, four_octet_as: bool = True, max_body_len: int = MAX_BODY_LEN) -> list[Update]:
    """The UPDATEs that carry `update`: withdrawals first, then announcements,
    each body at most `max_body_len` octets (RFC 7606 5.1, RFC 4271 4.1)."""
    if update.end_of_rib:
        return [Update(end_of_rib=True)]
    out = [Update(withdrawn=chunk) for chunk in _chunks(update.withdrawn, max_body_len - 4 - 4 - 3)]
    if update.attributes is not None:
        fixed = 4 + len(_mp_reach(update.attributes.next_hop, b"")) + 1  # +1: the length may need 2 octets
        fixed += len(encode_path_attributes(update.attributes, four_octet_as))
        for chunk in _chunks(update.announced, max_body_len - fixed) or [()]:
            out.append(Update(announced=chunk, attributes=update.attributes))
    elif update.announced:
        raise ValueError("announced routes need attributes")
    return out


def _chunks(routes: tuple[EvpnRoute, ...], room: int) -> list[tuple[EvpnRoute, ...]]:
    chunks: list[tuple[EvpnRoute, ...]] = []
    current: list[EvpnRoute] = []
    used = 0
    for route in routes:
        size = len(encode_nlri(route))
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


def _routes(attr: FramedAttribute, nlri: bytes, ignored: list[str]) -> tuple[EvpnRoute, ...]:
    """The EVPN routes in an MP attribute's NLRI; unknown route types noted and skipped (RFC 7606 5.4)."""
    name = attribute_name(attr.type_code)
    try:
        decoded = decode_nlri(nlri)
    except DecodeError as e:  # RFC 7606 5.3: the NLRI cannot be read
        raise _reset(OPTIONAL_ATTRIBUTE_ERROR, f"{name}: {e.reason}", attr.raw) from None
    skipped: dict[int, int] = {}
    for route in decoded:
        if isinstance(route, UnknownRoute):
            skipped[route.route_type] = skipped.get(route.route_type, 0) + 1
    for route_type, count in sorted(skipped.items()):
        ignored.append(f"{name}: skipped {count} EVPN route(s) of type {route_type}, not supported (RFC 7606 5.4)")
    return tuple(r for r in decoded if not isinstance(r, UnknownRoute))


def _family(attr: FramedAttribute, minimum: int, errors: list[str]) -> bool:
    """Check the AFI/SAFI at the start of an MP attribute; False (noted) when it is not EVPN."""
    name = attribute_name(attr.type_code)
    if len(attr.value) < minimum:
        raise _reset(
            OPTIONAL_ATTRIBUTE_ERROR, f"{name}: length {len(attr.value)} is shorter than its {minimum} fixed octets",
            attr.raw,
        )
    afi, safi = struct.unpack_from("!HB", attr.value)
    if (afi, safi) != (AFI_L2VPN, SAFI_EVPN):
        errors.append(f"{name}: AFI {afi} / SAFI {safi} was not negotiated; ignored")
        return False
    return True


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


def decode_update(body: bytes | memoryview, four_octet_as: bool = True) -> Update:
    """Decode an UPDATE body; raises BgpError only where RFC 7606 says reset the session."""
    data = bytes(body)
    if len(data) < 4:
        raise BgpError(
            MESSAGE_HEADER_ERROR, BAD_MESSAGE_LENGTH,
            f"UPDATE of {len(data) + HEADER_LEN} octets is shorter than the minimum 23",
            struct.pack("!H", len(data) + HEADER_LEN),
        )
    errors: list[str] = []
    ignored: list[str] = []
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
    if withdrawn_len:
        errors.append(f"withdrawn routes: {withdrawn_len} octets of IPv4 unicast ignored (family not negotiated)")
    nlri_len = len(data) - attrs_start - attrs_len
    if nlri_len:
        errors.append(f"NLRI: {nlri_len} octets of IPv4 unicast ignored (family not negotiated)")

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
        if not mp:
            raise _reset(MALFORMED_ATTRIBUTE_LIST, f"{overrun}, before any MP_REACH_NLRI or MP_UNREACH_NLRI")
        errors.append(f"{overrun} ({TREAT_AS_WITHDRAW})")
        withdraw = True

    announced: tuple[EvpnRoute, ...] = ()
    withdrawn: tuple[EvpnRoute, ...] = ()
    next_hop = None
    reach_nlri = b""
    reach = mp.get(MP_REACH_NLRI)
    if reach is not None and _family(reach, 5, errors):
        next_hop, reach_nlri = _next_hop(reach)
        announced = _routes(reach, reach_nlri, ignored)
        if next_hop.is_unspecified or next_hop.is_multicast:
            errors.append(f"MP_REACH_NLRI: next hop {next_hop} is not a unicast address ({TREAT_AS_WITHDRAW})")
            withdraw = True
    else:
        reach = None
    end_of_rib = False
    unreach = mp.get(MP_UNREACH_NLRI)
    if unreach is not None and _family(unreach, 3, errors):
        withdrawn = _routes(unreach, unreach.value[3:], ignored)
        end_of_rib = reach is None and len(unreach.value) == 3

    # the other attributes are read even without routes, so their problems are seen
    decoded = decode_path_attributes(first.values(), four_octet_as)
    errors.extend(decoded.errors)
    withdraw |= decoded.treat_as_withdraw
    attributes = None
    if reach is not None:
        attributes = dataclasses.replace(decoded.attributes, next_hop=next_hop)
        for code in (ORIGIN, AS_PATH) if reach_nlri else ():
            if code not in decoded.present:  # RFC 7606 3.d
                errors.append(f"{attribute_name(code)}: missing, and routes are announced ({TREAT_AS_WITHDRAW})")
                withdraw = True
    return Update(
        announced=announced,
        withdrawn=withdrawn,
        attributes=attributes,
        end_of_rib=end_of_rib,
        treat_as_withdraw=withdraw and reach is not None,
        errors=tuple(errors),
        ignored=tuple(ignored),
    )
