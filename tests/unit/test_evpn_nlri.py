"""EVPN NLRI codec (overlayd.wire.bgp.evpn): route distinguishers, route types 2, 3, 5."""

from __future__ import annotations

import ipaddress
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlayd.wire.bgp.errors import BgpError
from overlayd.wire.bgp.evpn import (
    ImetRoute,
    MacIpRoute,
    PrefixRoute,
    RouteDistinguisher,
    UnknownRoute,
    decode_nlri,
    encode_nlri,
)
from overlayd.wire.bgp.update import decode_update
from overlayd.wire.errors import DecodeError
from tests.unit.bgp_describe import BGP_UPDATE_VECTORS, update_body
from tests.unit.bgp_strategies import routes

RD = RouteDistinguisher.parse("10.0.0.1:100")
MAC = bytes.fromhex("020000000001")
V4 = ipaddress.ip_address("192.168.1.10")
V6 = ipaddress.ip_address("fd00::10")


# -- route distinguishers ----------------------------------------------------------


@pytest.mark.parametrize(
    "text, kind, admin, number, octets",
    [
        ("10.0.0.1:100", 1, "10.0.0.1", 100, "0001 0a000001 0064"),
        ("65000:100", 0, "65000", 100, "0000 fde8 00000064"),
        ("65000:4294967295", 0, "65000", 4294967295, "0000 fde8 ffffffff"),
        ("4200000000:7", 2, "4200000000", 7, "0002 fa56ea00 0007"),
        ("65536:1", 2, "65536", 1, "0002 00010000 0001"),
        (" 010:5 ", 0, "10", 5, "0000 000a 00000005"),
    ],
)
def test_rd_parse_picks_the_type_by_the_admin_value(text, kind, admin, number, octets):
    rd = RouteDistinguisher.parse(text)
    assert rd == RouteDistinguisher(kind, admin, number)
    assert rd.encode() == bytes.fromhex(octets)
    assert RouteDistinguisher.decode(rd.encode()) == rd
    assert str(rd) == f"{admin}:{number}"


@pytest.mark.parametrize(
    "text", ["", "100", "10.0.0.1", "10.0.0.1:65536", "4200000000:65536", "4294967296:1", "a:1", "1:-1", "1:x", "10.0.0.256:1"]
)
def test_rd_parse_rejects(text):
    with pytest.raises(ValueError):
        RouteDistinguisher.parse(text)


def test_rd_for_vtep_is_type_1():
    assert RouteDistinguisher.for_vtep(ipaddress.IPv4Address("10.0.0.1"), 100) == RD


def test_rd_of_unknown_type_does_not_decode():
    with pytest.raises(DecodeError, match="route distinguisher type 7 is not 0, 1 or 2"):
        RouteDistinguisher.decode(bytes.fromhex("0007 0a000001 0064"))
    with pytest.raises(ValueError):
        RouteDistinguisher(3, "1", 1).encode()


# -- the route types: layout and lengths ------------------------------------------------


@pytest.mark.parametrize(
    "route, length",
    [
        (MacIpRoute(RD, MAC, None, 100), 33),
        (MacIpRoute(RD, MAC, V4, 100), 37),
        (MacIpRoute(RD, MAC, V6, 100), 49),
        (MacIpRoute(RD, MAC, None, 100, 5000), 36),
        (MacIpRoute(RD, MAC, V4, 100, 5000), 40),
        (MacIpRoute(RD, MAC, V6, 100, 5000), 52),
        (ImetRoute(RD, ipaddress.ip_address("10.0.0.1")), 17),
        (ImetRoute(RD, ipaddress.ip_address("fd00::1")), 29),
        (PrefixRoute(RD, ipaddress.ip_network("10.244.1.0/24"), 5000), 34),
        (PrefixRoute(RD, ipaddress.ip_network("fd00:244:1::/64"), 5000), 58),
    ],
)
def test_route_lengths(route, length):
    """RFC 7432 7.2 / 7.3, RFC 9136 3.1."""
    octets = encode_nlri(route)
    assert octets[0] == route.route_type and octets[1] == length == len(octets) - 2
    assert decode_nlri(octets) == [route]


def test_vni_travels_as_the_raw_24_bits():
    """RFC 8365 5.1.3: the label field is the VNI, not an MPLS label shifted by 4."""
    octets = encode_nlri(MacIpRoute(RD, MAC, None, 0xABCDEF, 0x123456))
    assert octets.endswith(bytes.fromhex("abcdef 123456"))
    octets = encode_nlri(PrefixRoute(RD, ipaddress.ip_network("10.0.0.0/8"), 0xABCDEF))
    assert octets.endswith(bytes.fromhex("abcdef"))


def test_type5_gateway_zero_is_none_and_host_bits_are_masked():
    body = "0001 0a000001 0064" + "00" * 10 + "00000000" + "18 0af40107 00000000 001388"
    (route,) = decode_nlri(bytes.fromhex("05 22" + body))
    assert route.prefix == ipaddress.ip_network("10.244.1.0/24")
    assert route.gateway is None and route.vni == 5000


def test_route_keys_leave_out_what_is_not_the_route():
    a = MacIpRoute(RD, MAC, V4, 100)
    assert a.key == MacIpRoute(RD, MAC, V4, 200, 5000).key
    assert a.key != MacIpRoute(RD, MAC, None, 100).key
    p = PrefixRoute(RD, ipaddress.ip_network("10.0.0.0/8"), 1)
    assert p.key == PrefixRoute(RD, p.prefix, 2, ipaddress.ip_address("10.0.0.1")).key


def test_unknown_route_types_are_returned_and_skipped_over():
    type1 = bytes.fromhex("01 19" + "0001 0a000001 0064" + "00" * 10 + "ffffffff 000000")
    type2 = encode_nlri(MacIpRoute(RD, MAC, None, 100))
    decoded = decode_nlri(type1 + type2 + bytes.fromhex("07 00"))
    assert decoded == [UnknownRoute(1, type1[2:]), MacIpRoute(RD, MAC, None, 100), UnknownRoute(7, b"")]
    assert encode_nlri(decoded[0]) == type1


@pytest.mark.parametrize(
    "route, message",
    [
        (MacIpRoute(RD, MAC[:5], None, 1), "MAC address of 5 octets"),
        (MacIpRoute(RD, MAC, None, 1 << 24), "VNI 16777216 does not fit"),
        (MacIpRoute(RD, MAC, None, 1, esi=b"\x00"), "ESI of 1 octets"),
        (ImetRoute(RD, ipaddress.ip_address("10.0.0.1"), 1 << 32), "Ethernet tag"),
        (PrefixRoute(RD, ipaddress.ip_network("10.0.0.0/8"), 1, ipaddress.ip_address("fd00::1")), "same family"),
        (MacIpRoute(RouteDistinguisher(0, "65536", 1), MAC), "RD AS 65536"),
    ],
)
def test_encode_refuses_what_does_not_fit(route, message):
    with pytest.raises(ValueError, match=message):
        encode_nlri(route)


# -- malformed NLRI: DecodeError naming the field ---------------------------------


def _t2(fields: str) -> str:
    body = bytes.fromhex("0001 0a000001 0064" + "00" * 10 + "00000000" + fields)
    return f"02{len(body):02x}" + body.hex()


@pytest.mark.parametrize(
    "nlri, reason",
    [
        ("02", "NLRI at octet 0: 1 octet left, too few for route type and length"),
        ("02 21 00", "route type 2 at octet 0: length 33 overruns the 1 octets left"),
        ("02 05 0001020304", "type-2 route of 5 octets is shorter than the 33"),
        (_t2("28 020000000001 00 000064"), "type-2 route: MAC address length 40 bits, expected 48"),
        (_t2("30 020000000001 10 c0a8 000064"), "type-2 route: IP address length 16 bits, expected 0, 32 or 128"),
        (_t2("30 020000000001 20 c0a8010a 0000"), "type-2 route: length 36 with a 32-bit IP address leaves 2 octets"),
        (_t2("30 020000000001 80 c0a8010a 000064"), "type-2 route: length 37 is too short for a 128-bit IP address"),
        ("03 11 0001 0a000001 0064 00000000 80 0a000001", "type-3 route: originator length 128 bits does not match route length 17"),
        ("03 12 0001 0a000001 0064 00000000 20 0a000001 00", "type-3 route of 18 octets, expected 17 (IPv4) or 29 (IPv6)"),
        ("05 1e" + "0001 0a000001 0064" + "00" * 10 + "00000000 18 0af40100 001388", "type-5 route of 30 octets"),
        ("05 22" + "0001 0a000001 0064" + "00" * 10 + "00000000 21 0af40100 00000000 001388", "IP prefix length 33 exceeds 32"),
        ("02 21 0009" + "00" * 31, "route distinguisher type 9 is not 0, 1 or 2"),
    ],
)
def test_malformed_nlri_names_the_field(nlri, reason):
    with pytest.raises(DecodeError) as err:
        decode_nlri(bytes.fromhex(nlri))
    assert err.value.layer == "evpn"
    assert reason in err.value.reason


# -- the golden vectors, route by route ------------------------------------------------


def _vector_routes():
    for path in sorted(BGP_UPDATE_VECTORS.glob("*.json")):
        for vector in json.loads(path.read_text())["vectors"]:
            if "reset" in vector["expect"]:
                continue
            update = decode_update(update_body(vector), vector.get("four_octet_as", True))
            for route in update.announced + update.withdrawn:
                yield pytest.param(route, bytes.fromhex(vector["hex"]), id=f"{vector['name']}-{route.route_type}")


@pytest.mark.parametrize("route, message", list(_vector_routes()))
def test_vector_routes_encode_to_their_octets(route, message):
    """Each route of every vector encodes to octets found in the vector's message."""
    octets = encode_nlri(route)
    assert octets in message
    assert decode_nlri(octets) == [route]


# -- properties -----------------------------------------------------------------------


@given(st.lists(routes, max_size=10))
def test_round_trip(rs):
    assert decode_nlri(b"".join(encode_nlri(r) for r in rs)) == rs


@given(st.binary(max_size=200))
def test_random_octets_raise_only_decode_error(data):
    try:
        decoded = decode_nlri(data)
    except DecodeError:
        return
    for route in decoded:  # whatever decodes, encodes back to the same octets
        assert decode_nlri(encode_nlri(route)) == [route]


@given(routes, st.data())
def test_corrupted_routes_raise_only_decode_error(route, data):
    octets = bytearray(encode_nlri(route))
    i = data.draw(st.integers(0, len(octets) - 1))
    octets[i] = data.draw(st.integers(0, 255))
    try:
        decode_nlri(bytes(octets))
    except DecodeError:
        pass


def test_decode_error_is_not_a_session_error():
    """decode_nlri knows nothing of sessions; update.py turns its DecodeError into a reset."""
    assert not issubclass(DecodeError, BgpError)
