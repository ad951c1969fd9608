"""BGP message framing (RFC 4271 4.1) and the messages other than UPDATE's body:
OPEN with capabilities (RFC 5492), KEEPALIVE, NOTIFICATION, ROUTE-REFRESH (RFC 2918).

    encode_message(msg, four_octet_as) -> bytes     the whole message, header included
    decode_message(type, body, four_octet_as, families)  one message body -> Open, Update, ...
    MessageReader                                    a TCP byte stream -> (type, body) frames

Every error in bytes from the peer raises `BgpError` carrying the
NOTIFICATION to send (code, subcode, data); nothing else escapes a decoder.
Encoding something that cannot be sent (a message over 4096 octets, a field
out of range) raises ValueError: that is our bug, not the peer's.

Which checks live here: the ones about the bytes alone (header, lengths,
version, a zero BGP identifier, AS 0, My AS against the 4-octet AS
capability, optional parameter types). The ones that need configuration
(peer AS, hold time, our own BGP identifier, required capabilities) are the
session's, in overlayd/control/negotiation.py.

OPEN encoding: every capability goes in an optional parameter of its own,
as FRR does (GoBGP puts all in one; old speakers read only the first
capability of a parameter). Decoding accepts any number of capabilities per
parameter, any number of parameters, and the RFC 9072 extended format.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Iterable, Iterator, NamedTuple, Union

from overlayd.wire.bgp import errors as E
from overlayd.wire.bgp import update as _update
from overlayd.wire.bgp.errors import BgpError
from overlayd.wire.bgp.attributes import AS_TRANS
from overlayd.wire.bgp.update import Update

MARKER = b"\xff" * 16
HEADER_LEN = 19
MAX_MESSAGE_LEN = 4096
BGP_VERSION = 4

OPEN = 1
UPDATE = 2
NOTIFICATION = 3
KEEPALIVE = 4
ROUTE_REFRESH = 5

MESSAGE_NAMES = {
    OPEN: "OPEN",
    UPDATE: "UPDATE",
    NOTIFICATION: "NOTIFICATION",
    KEEPALIVE: "KEEPALIVE",
    ROUTE_REFRESH: "ROUTE-REFRESH",
}

# Smallest whole message (header included) of each type, RFC 4271 4.2-4.5, RFC 2918 3.
MIN_LENGTH = {OPEN: 29, UPDATE: 23, NOTIFICATION: 21, KEEPALIVE: 19, ROUTE_REFRESH: 23}

OPT_PARAM_CAPABILITIES = 2  # RFC 5492; type 1 (authentication) is deprecated
OPT_PARAM_EXTENDED_LENGTH = 255  # RFC 9072

CAP_MULTIPROTOCOL = 1
CAP_ROUTE_REFRESH = 2
CAP_GRACEFUL_RESTART = 64
CAP_FOUR_OCTET_AS = 65

GR_RESTART_STATE = 0x8  # R bit, in the top four bits of the restart flags/time field
GR_FORWARDING_STATE = 0x80  # F bit, in the per-family flags

_OPEN_FIXED = struct.Struct("!BHH4sB")  # version, My AS, hold time, BGP identifier, opt param len
_HEADER = struct.Struct("!16sHB")


@dataclass(frozen=True, slots=True)
class Multiprotocol:
    """RFC 4760 8: the speaker carries routes of this address family."""

    afi: int
    safi: int


@dataclass(frozen=True, slots=True)
class RouteRefreshCapability:
    """RFC 2918 2: the speaker answers ROUTE-REFRESH messages."""


@dataclass(frozen=True, slots=True)
class FourOctetAs:
    """RFC 6793 3: the speaker handles 4-octet AS numbers; `asn` is its real AS number."""

    asn: int


@dataclass(frozen=True, slots=True)
class GracefulRestart:
    """RFC 4724 3: restart time, the R bit, and per family whether forwarding state is kept."""

    restart_time_s: int
    restarting: bool = False
    families: tuple[tuple[int, int, bool], ...] = ()  # (afi, safi, forwarding state preserved)


@dataclass(frozen=True, slots=True)
class UnknownCapability:
    """A capability overlayd does not interpret, kept as its code and value."""

    code: int
    value: bytes


Capability = Union[Multiprotocol, RouteRefreshCapability, FourOctetAs, GracefulRestart, UnknownCapability]


@dataclass(frozen=True, slots=True)
class Open:
    asn: int  # the real AS number; encoded as AS_TRANS in `My AS` when it needs 4 octets
    hold_time_s: int
    router_id: ipaddress.IPv4Address
    capabilities: tuple[Capability, ...] = ()
    version: int = 4


@dataclass(frozen=True, slots=True)
class Keepalive:
    pass


@dataclass(frozen=True, slots=True)
class Notification:
    code: int
    subcode: int
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class RouteRefresh:
    afi: int
    safi: int
    subtype: int = 0


Message = Union[Open, Update, Keepalive, Notification, RouteRefresh]


class RawMessage(NamedTuple):
    """One whole message cut from the stream: its type and the body after the header."""

    type: int
    body: bytes


# -- encoding ------------------------------------------------------------------------


def encode_message(msg: Message, four_octet_as: bool = True) -> bytes:
    """The whole message, marker and header included.

    `four_octet_as` only matters for UPDATE (AS_PATH width): whether both
    speakers advertised the 4-octet AS capability.
    """
    if isinstance(msg, Open):
        msg_type, body = OPEN, encode_open(msg)
    elif isinstance(msg, Update):
        msg_type, body = UPDATE, _update.encode_update(msg, four_octet_as)
    elif isinstance(msg, Keepalive):
        msg_type, body = KEEPALIVE, b""
    elif isinstance(msg, Notification):
        msg_type, body = NOTIFICATION, struct.pack("!BB", msg.code, msg.subcode) + msg.data
    elif isinstance(msg, RouteRefresh):
        msg_type, body = ROUTE_REFRESH, struct.pack("!HBB", msg.afi, msg.subtype, msg.safi)
    else:
        raise TypeError(f"not a BGP message: {msg!r}")
    return frame(msg_type, body)


def frame(msg_type: int, body: bytes) -> bytes:
    """Marker and header in front of `body`."""
    length = HEADER_LEN + len(body)
    if length > MAX_MESSAGE_LEN:
        raise ValueError(f"{MESSAGE_NAMES.get(msg_type, msg_type)} of {length} octets exceeds {MAX_MESSAGE_LEN}")
    return _HEADER.pack(MARKER, length, msg_type) + body


def encode_capability(cap: Capability) -> bytes:
    """One capability as code, length, value (RFC 5492 4)."""
    if isinstance(cap, Multiprotocol):
        code, value = CAP_MULTIPROTOCOL, struct.pack("!HBB", cap.afi, 0, cap.safi)
    elif isinstance(cap, RouteRefreshCapability):
        code, value = CAP_ROUTE_REFRESH, b""
    elif isinstance(cap, FourOctetAs):
        code, value = CAP_FOUR_OCTET_AS, struct.pack("!I", cap.asn)
    elif isinstance(cap, GracefulRestart):
        if not 0 <= cap.restart_time_s <= 0xFFF:
            raise ValueError(f"graceful restart time {cap.restart_time_s} does not fit in 12 bits")
        flags = GR_RESTART_STATE if cap.restarting else 0
        value = struct.pack("!H", flags << 12 | cap.restart_time_s) + b"".join(
            struct.pack("!HBB", afi, safi, GR_FORWARDING_STATE if kept else 0) for afi, safi, kept in cap.families
        )
        code = CAP_GRACEFUL_RESTART
    elif isinstance(cap, UnknownCapability):
        code, value = cap.code, cap.value
    else:
        raise TypeError(f"not a capability: {cap!r}")
    if len(value) > 255:
        raise ValueError(f"capability {code} value of {len(value)} octets does not fit")
    return bytes((code, len(value))) + value


def encode_open(msg: Open) -> bytes:
    """The OPEN body: one optional parameter per capability, RFC 9072 format if they need it."""
    my_as = msg.asn if msg.asn <= 0xFFFF else AS_TRANS
    caps = [encode_capability(c) for c in msg.capabilities]
    params = b"".join(bytes((OPT_PARAM_CAPABILITIES, len(c))) + c for c in caps)
    if len(params) <= 254:  # 255 in the length octet announces the RFC 9072 format
        opt = bytes((len(params),)) + params
    else:
        params = b"".join(struct.pack("!BH", OPT_PARAM_CAPABILITIES, len(c)) + c for c in caps)
        opt = struct.pack("!BBH", 255, OPT_PARAM_EXTENDED_LENGTH, len(params)) + params
    fixed = struct.pack("!BHH4s", msg.version, my_as, msg.hold_time_s, msg.router_id.packed)
    return fixed + opt


# -- decoding ------------------------------------------------------------------------


def decode_message(
    msg_type: int, body: bytes | memoryview, four_octet_as: bool = True,
    families: Iterable[tuple[int, int]] = (_update.L2VPN_EVPN,),
) -> Message:
    """One message body (after the header) of type `msg_type`; raises BgpError.

    `four_octet_as` and `families` (the (AFI, SAFI) negotiated) only matter for UPDATE.
    """
    body = bytes(body)
    check_length(msg_type, HEADER_LEN + len(body), body)
    if msg_type == OPEN:
        return decode_open(body)
    if msg_type == UPDATE:
        return _update.decode_update(body, four_octet_as, families)
    if msg_type == KEEPALIVE:
        return Keepalive()
    if msg_type == NOTIFICATION:
        return Notification(body[0], body[1], body[2:])
    afi, subtype, safi = struct.unpack("!HBB", body)
    return RouteRefresh(afi, safi, subtype)


def _length_error(length: int, what: str) -> BgpError:
    return BgpError(E.MESSAGE_HEADER_ERROR, E.BAD_MESSAGE_LENGTH, what, struct.pack("!H", length & 0xFFFF))


def check_length(msg_type: int, length: int, body: bytes = b"") -> None:
    """RFC 4271 6.1 / RFC 7313 5: is `length` (header included) right for `msg_type`?

    `body` is only needed for ROUTE-REFRESH, whose error depends on its subtype.
    """
    if msg_type not in MIN_LENGTH:
        raise BgpError(E.MESSAGE_HEADER_ERROR, E.BAD_MESSAGE_TYPE, f"unknown message type {msg_type}", bytes((msg_type,)))
    name = MESSAGE_NAMES[msg_type]
    if msg_type == ROUTE_REFRESH:
        if length != MIN_LENGTH[ROUTE_REFRESH]:
            if len(body) >= 3 and body[2] in (1, 2):  # enhanced route refresh BoRR/EoRR: RFC 7313 5
                raise BgpError(
                    E.ROUTE_REFRESH_ERROR, 1, f"ROUTE-REFRESH subtype {body[2]} of {length} octets, not 23",
                    frame(ROUTE_REFRESH, body) if length <= MAX_MESSAGE_LEN else b"",
                )
            # no ORF (RFC 5291) was negotiated, so a plain route refresh has exactly 4 octets
            raise _length_error(length, f"ROUTE-REFRESH of {length} octets, not 23")
    elif length < MIN_LENGTH[msg_type]:
        raise _length_error(length, f"{name} of {length} octets is shorter than {MIN_LENGTH[msg_type]}")
    elif msg_type == KEEPALIVE and length != HEADER_LEN:
        raise _length_error(length, f"KEEPALIVE of {length} octets, not {HEADER_LEN}")


def _open_error(subcode: int, message: str, data: bytes = b"") -> BgpError:
    return BgpError(E.OPEN_MESSAGE_ERROR, subcode, message, data)


MALFORMED_OPEN = 0  # OPEN message error subcode 0, "unspecific" (IANA; RFC 4271 names none)


def decode_open(body: bytes) -> Open:
    """An OPEN body; raises BgpError for what is wrong whatever our configuration."""
    if len(body) < _OPEN_FIXED.size:
        raise _length_error(HEADER_LEN + len(body), f"OPEN body of {len(body)} octets")
    version, my_as, hold_time, bgp_id, opt_len = _OPEN_FIXED.unpack_from(body)
    if version != BGP_VERSION:
        raise _open_error(E.UNSUPPORTED_VERSION_NUMBER, f"BGP version {version}", struct.pack("!H", BGP_VERSION))
    router_id = ipaddress.IPv4Address(bgp_id)
    if int(router_id) == 0:
        raise _open_error(E.BAD_BGP_IDENTIFIER, "BGP identifier 0.0.0.0")
    capabilities = tuple(_decode_opt_params(body, opt_len))
    asn = my_as
    four = next((c for c in capabilities if isinstance(c, FourOctetAs)), None)
    if four is not None:
        asn = four.asn
        # RFC 6793 4.1: My AS is the AS itself when it fits in 2 octets, AS_TRANS otherwise
        if my_as != (four.asn if four.asn <= 0xFFFF else AS_TRANS):
            raise _open_error(
                E.BAD_PEER_AS, f"My AS {my_as} disagrees with the 4-octet AS capability {four.asn}",
                struct.pack("!H", my_as),
            )
    if asn == 0:  # RFC 7607
        raise _open_error(E.BAD_PEER_AS, "AS number 0", struct.pack("!H", my_as))
    return Open(asn, hold_time, router_id, capabilities, version)


def _decode_opt_params(body: bytes, opt_len: int) -> Iterator[Capability]:
    pos = _OPEN_FIXED.size
    extended = opt_len == 255 and len(body) > pos and body[pos] == OPT_PARAM_EXTENDED_LENGTH
    if extended:  # RFC 9072: 255, 255, then a 2-octet length and 2-octet parameter lengths
        if len(body) < pos + 3:
            raise _open_error(MALFORMED_OPEN, "extended optional parameters length cut short")
        (opt_len,) = struct.unpack_from("!H", body, pos + 1)
        pos += 3
    end = pos + opt_len
    if end != len(body):
        raise _open_error(MALFORMED_OPEN, f"optional parameters length {opt_len}, {len(body) - pos} octets follow")
    head = struct.Struct("!BH" if extended else "!BB")
    while pos < end:
        if pos + head.size > end:
            raise _open_error(MALFORMED_OPEN, "optional parameter header cut short")
        ptype, plen = head.unpack_from(body, pos)
        pos += head.size
        if pos + plen > end:
            raise _open_error(MALFORMED_OPEN, f"optional parameter of {plen} octets overruns the OPEN")
        if ptype != OPT_PARAM_CAPABILITIES:
            raise _open_error(E.UNSUPPORTED_OPTIONAL_PARAMETER, f"optional parameter type {ptype}")
        yield from _decode_capabilities(body[pos : pos + plen])
        pos += plen


def _decode_capabilities(data: bytes) -> Iterator[Capability]:
    pos = 0
    while pos < len(data):
        if pos + 2 > len(data):
            raise _open_error(MALFORMED_OPEN, "capability header cut short")
        code, length = data[pos], data[pos + 1]
        value = data[pos + 2 : pos + 2 + length]
        if len(value) != length:
            raise _open_error(MALFORMED_OPEN, f"capability {code} of {length} octets overruns its parameter")
        yield decode_capability(code, value)
        pos += 2 + length


def decode_capability(code: int, value: bytes) -> Capability:
    """One capability's value; a known capability with a malformed value raises BgpError."""

    def bad(what: str) -> BgpError:
        return _open_error(MALFORMED_OPEN, f"{what} capability of {len(value)} octets is malformed")

    if code == CAP_MULTIPROTOCOL:
        if len(value) != 4:
            raise bad("multiprotocol")
        afi, _reserved, safi = struct.unpack("!HBB", value)
        return Multiprotocol(afi, safi)
    if code == CAP_ROUTE_REFRESH:
        if value:
            raise bad("route refresh")
        return RouteRefreshCapability()
    if code == CAP_FOUR_OCTET_AS:
        if len(value) != 4:
            raise bad("4-octet AS")
        return FourOctetAs(struct.unpack("!I", value)[0])
    if code == CAP_GRACEFUL_RESTART:
        if len(value) < 2 or (len(value) - 2) % 4:
            raise bad("graceful restart")
        (word,) = struct.unpack_from("!H", value)
        families = tuple(
            (afi, safi, bool(flags & GR_FORWARDING_STATE))
            for afi, safi, flags in struct.iter_unpack("!HBB", value[2:])
        )
        return GracefulRestart(word & 0xFFF, bool(word >> 12 & GR_RESTART_STATE), families)
    return UnknownCapability(code, bytes(value))


# -- the stream ----------------------------------------------------------------------


class MessageReader:
    """Cuts a TCP byte stream into whole messages.

        reader.feed(data)
        for msg_type, body in reader:     # RawMessage(type, body), body without header
            ...

    Iteration stops when the buffer holds no whole message; feed more and
    iterate again. A bad header raises BgpError as soon as its 19 octets are
    in, without waiting for the body; after that the stream is unusable.
    """

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes | memoryview) -> None:
        self._buf += data

    @property
    def buffered(self) -> int:
        """Octets received but not yet returned as a message."""
        return len(self._buf)

    def __iter__(self) -> MessageReader:
        return self

    def __next__(self) -> RawMessage:
        buf = self._buf
        if len(buf) < HEADER_LEN:
            raise StopIteration
        marker, length, msg_type = _HEADER.unpack_from(buf)
        if marker != MARKER:
            raise BgpError(E.MESSAGE_HEADER_ERROR, E.CONNECTION_NOT_SYNCHRONIZED, "marker is not all ones")
        if not HEADER_LEN <= length <= MAX_MESSAGE_LEN:
            raise _length_error(length, f"message length {length}")
        if msg_type not in MIN_LENGTH:
            raise BgpError(E.MESSAGE_HEADER_ERROR, E.BAD_MESSAGE_TYPE, f"unknown message type {msg_type}", bytes((msg_type,)))
        if len(buf) < length:
            if msg_type != ROUTE_REFRESH:  # whose error depends on its subtype, in the body
                check_length(msg_type, length)
            raise StopIteration
        body = bytes(buf[HEADER_LEN:length])
        check_length(msg_type, length, body)
        del buf[:length]
        return RawMessage(msg_type, body)


# -- words for NOTIFICATIONs ---------------------------------------------------------

SUBCODE_NAMES: dict[int, dict[int, str]] = {
    E.MESSAGE_HEADER_ERROR: {1: "connection not synchronized", 2: "bad message length", 3: "bad message type"},
    E.OPEN_MESSAGE_ERROR: {
        0: "unspecific",
        1: "unsupported version number",
        2: "bad peer AS",
        3: "bad BGP identifier",
        4: "unsupported optional parameter",
        6: "unacceptable hold time",
        7: "unsupported capability",
        11: "role mismatch",
    },
    E.UPDATE_MESSAGE_ERROR: {
        1: "malformed attribute list",
        2: "unrecognized well-known attribute",
        3: "missing well-known attribute",
        4: "attribute flags error",
        5: "attribute length error",
        6: "invalid ORIGIN attribute",
        8: "invalid NEXT_HOP attribute",
        9: "optional attribute error",
        10: "invalid network field",
        11: "malformed AS_PATH",
    },
    E.FSM_ERROR: {
        0: "unspecified",
        1: "unexpected message in OpenSent",
        2: "unexpected message in OpenConfirm",
        3: "unexpected message in Established",
    },
    E.CEASE: {
        1: "maximum number of prefixes reached",
        2: "administrative shutdown",
        3: "peer de-configured",
        4: "administrative reset",
        5: "connection rejected",
        6: "other configuration change",
        7: "connection collision resolution",
        8: "out of resources",
        9: "hard reset",
        10: "BFD down",
    },
    E.ROUTE_REFRESH_ERROR: {1: "invalid message length"},
}


def describe_notification(code: int, subcode: int, data: bytes = b"") -> str:
    """`cease/administrative shutdown: "maintenance"`: a NOTIFICATION in words.

    The RFC 9003 shutdown communication of a Cease/2 or Cease/4 is quoted.
    """
    name = E.ERROR_NAMES.get(code, f"error code {code}")
    sub = SUBCODE_NAMES.get(code, {}).get(subcode, f"subcode {subcode}" if subcode else "")
    text = f"{name}/{sub}" if sub else name
    if code == E.CEASE and subcode in (E.CEASE_ADMIN_SHUTDOWN, E.CEASE_ADMIN_RESET) and data:
        length = data[0]
        if 0 < length <= len(data) - 1:
            message = data[1 : 1 + length].decode("utf-8", errors="replace")
            text += f": {message!r}"
    return text


def shutdown_communication(text: str) -> bytes:
    """RFC 9003 2: the NOTIFICATION data of a Cease/2 or /4, a length octet and UTF-8 text."""
    raw = text.encode("utf-8")[:255]
    while raw:
        try:
            raw.decode("utf-8")
            break
        except UnicodeDecodeError:  # cut in the middle of a character
            raw = raw[:-1]
    return bytes((len(raw),)) + raw if raw else b""
