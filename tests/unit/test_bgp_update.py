"""The UPDATE codec (overlayd.wire.bgp.update, .attributes) against the golden
vectors in tests/vectors/bgp_update/, plus properties: round trips and
fuzzing that never ends in anything but BgpError.

The vectors were checked against tshark's BGP dissector
(tests/vectors/check_bgp_tshark.py, recorded in each file's `checked_with`).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlayd.wire.bgp.attributes import (
    AS_SEQUENCE,
    AS_SET,
    AS_TRANS,
    FLAG_EXTENDED_LENGTH,
    FLAG_PARTIAL,
    AsPathSegment,
    Encapsulation,
    MacMobility,
    OtherExtCommunity,
    PathAttributes,
    RawAttribute,
    RouterMac,
    RouteTarget,
    decode_ext_community,
    encode_ext_community,
    merge_as4_path,
    readvertised,
)
from overlayd.wire.bgp.errors import BgpError
from overlayd.wire.bgp.evpn import ImetRoute, MacIpRoute, RouteDistinguisher
from overlayd.wire.bgp.update import MAX_BODY_LEN, Update, decode_update, encode_update, split_update
from tests.unit.bgp_describe import BGP_UPDATE_VECTORS, describe_update, update_body, vector_families
from tests.unit.bgp_strategies import path_attributes, routes, updates

FILES = sorted(BGP_UPDATE_VECTORS.glob("*.json"))


def _vectors():
    for path in FILES:
        for vector in json.loads(path.read_text())["vectors"]:
            yield pytest.param(vector, id=f"{path.stem}-{vector['name']}")


VECTORS = list(_vectors())


def _well_formed(expect: dict) -> bool:
    """Re-encodes to the same bytes: nothing wrong, and nothing skipped on the way in."""
    return not ("reset" in expect or expect.get("errors") or expect.get("ignored")
                or expect.get("treat_as_withdraw"))


# -- the files ----------------------------------------------------------------------


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_vector_file_was_checked_against_tshark(path):
    doc = json.loads(path.read_text())
    assert str(doc["checked_with"]).startswith("tshark "), "run tests/vectors/check_bgp_tshark.py --record"
    names = [v["name"] for v in doc["vectors"]]
    assert len(names) == len(set(names)), "vector names must be unique"


def test_vectors_cover_each_rfc7606_outcome():
    expects = [p.values[0]["expect"] for p in VECTORS]
    assert any("reset" in e for e in expects)
    assert any(e.get("treat_as_withdraw") for e in expects)
    assert any(e.get("errors") and not e.get("treat_as_withdraw") and "attributes" in e for e in expects)
    assert any(e.get("end_of_rib") for e in expects)


# -- decode(vector) == expect, encode(decoded) == vector ------------------------------------


@pytest.mark.parametrize("vector", VECTORS)
def test_vector_decodes_as_expected(vector):
    body = update_body(vector)
    four = vector.get("four_octet_as", True)
    families = vector_families(vector)
    expect = vector["expect"]
    if "reset" in expect:
        with pytest.raises(BgpError) as err:
            decode_update(body, four, families)
        reset = expect["reset"]
        assert (err.value.code, err.value.subcode) == (reset["code"], reset["subcode"])
        assert str(err.value) == reset["message"]
        assert err.value.data.hex() == reset["data"]
        return
    update = decode_update(body, four, families)
    assert describe_update(update) == expect
    if not _well_formed(expect):
        return
    reencode = vector.get("reencode", True)
    if reencode == "split":  # more than one kind of routes: one UPDATE each, every route with its next hop
        with pytest.raises(ValueError, match="separate UPDATEs|one per UPDATE"):
            encode_update(update, four)
        parts = [decode_update(encode_update(p, four), four, families) for p in split_update(update, four)]
        assert [r for p in parts for r in p.withdrawn] == list(update.withdrawn)
        announced = [(r, p.attributes_of(r)) for p in parts for r in p.announced]
        assert sorted(announced, key=repr) == sorted(((r, update.attributes_of(r)) for r in update.announced), key=repr)
        return
    again = encode_update(update, four)
    if reencode:
        assert again == body
    else:  # legal, but overlayd orders and sizes attributes its own way
        assert again != body and decode_update(again, four, families) == update


# -- properties ------------------------------------------------------------------------


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(updates(four_octet_as=True))
def test_round_trip_4_octet_session(update):
    assert decode_update(encode_update(update, True), True) == update


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(updates(four_octet_as=False))
def test_round_trip_2_octet_session(update):
    """ASes above 65535 go as AS_TRANS plus AS4_PATH, and merge back (RFC 6793)."""
    assert decode_update(encode_update(update, False), False) == update


@given(st.binary(max_size=300), st.booleans())
def test_random_bodies_raise_only_bgp_error(body, four):
    try:
        decode_update(body, four)
    except BgpError:
        pass


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(updates(), st.data(), st.booleans())
def test_corrupted_updates_raise_only_bgp_error(update, data, four):
    body = bytearray(encode_update(update, four))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(body) - 1))
        body[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(body)))
    try:
        result = decode_update(bytes(body[:cut] if data.draw(st.booleans()) else body), four)
    except BgpError as e:
        assert e.code in (1, 3) and str(e)
        return
    assert all(isinstance(error, str) and error for error in result.errors)
    if result.treat_as_withdraw:
        assert result.errors


@pytest.mark.parametrize(
    "vector", [p for p in VECTORS if _well_formed(p.values[0]["expect"]) and p.values[0]["expect"]["announced"]]
)
def test_every_truncation_of_an_announcement_is_handled(vector):
    body = update_body(vector)
    for cut in range(len(body)):
        try:
            decode_update(body[:cut], vector.get("four_octet_as", True), vector_families(vector))
        except BgpError:
            pass


# -- encoding rules ------------------------------------------------------------------------

RD = RouteDistinguisher.parse("10.0.0.1:100")
ROUTE = MacIpRoute(RD, bytes.fromhex("020000000001"), None, 100)
ATTRS = PathAttributes(next_hop=ipaddress.ip_address("10.0.0.1"), local_pref=100,
                       ext_communities=(RouteTarget.parse("65000:100"), Encapsulation()))


def test_mp_reach_comes_first_and_origin_as_path_only_when_announcing():
    body = encode_update(Update(announced=(ROUTE,), attributes=ATTRS))
    assert body[4:6] == bytes([0x80, 14])  # RFC 7606 5.1
    withdraw = encode_update(Update(withdrawn=(ROUTE,)))
    assert withdraw[4:6] == bytes([0x80, 15])
    assert withdraw == bytes.fromhex("0000 0029 800f 26 0019 46") + bytes.fromhex("0221") + withdraw[-33:]


def test_end_of_rib():
    assert encode_update(Update(end_of_rib=True)) == bytes.fromhex("0000 0006 800f 03 0019 46")
    assert decode_update(bytes.fromhex("0000 0006 800f 03 0019 46")) == Update(end_of_rib=True)


@pytest.mark.parametrize(
    "update, message",
    [
        (Update(announced=(ROUTE,), withdrawn=(ROUTE,), attributes=ATTRS), "separate UPDATEs"),
        (Update(announced=(ROUTE,)), "need attributes"),
        (Update(announced=(ROUTE,), attributes=dataclasses.replace(ATTRS, next_hop=None)), "next_hop"),
        (Update(), "says nothing"),
        (Update(end_of_rib=True, withdrawn=(ROUTE,)), "End-of-RIB"),
        (Update(announced=(ROUTE,) * 130, attributes=ATTRS), "exceeds 4077"),
        (Update(announced=(ROUTE,), attributes=dataclasses.replace(ATTRS, other=(RawAttribute(0x40, 1, b"\x00"),))), "own field"),
        (Update(announced=(ROUTE,), attributes=dataclasses.replace(ATTRS, as_path=(AsPathSegment(AS_SEQUENCE, ()),))), "1 to 255"),
    ],
)
def test_encode_refuses(update, message):
    with pytest.raises(ValueError, match=message):
        encode_update(update)


@given(st.lists(routes, max_size=300), st.lists(routes, max_size=300), path_attributes())
def test_split_update_fits_and_keeps_every_route(announced, withdrawn, attributes):
    parts = split_update(Update(announced=tuple(announced), withdrawn=tuple(withdrawn), attributes=attributes))
    bodies = [encode_update(p) for p in parts]
    assert all(len(b) <= MAX_BODY_LEN for b in bodies)
    decoded = [decode_update(b) for b in bodies]
    assert [r for d in decoded for r in d.withdrawn] == withdrawn
    assert [r for d in decoded for r in d.announced] == announced
    assert all(d.attributes == attributes for d in decoded if d.announced)
    first_announcement = next((i for i, d in enumerate(decoded) if d.attributes is not None), len(decoded))
    assert all(d.attributes is None for d in decoded[:first_announcement])
    assert all(not d.withdrawn for d in decoded[first_announcement:])


def test_extended_length_when_the_value_needs_it():
    many = tuple(RouteTarget("65000", n) for n in range(40))  # 320 octets
    body = encode_update(Update(announced=(ROUTE,), attributes=dataclasses.replace(ATTRS, ext_communities=many)))
    i = body.index(bytes([0xC0 | FLAG_EXTENDED_LENGTH, 16]))
    assert struct.unpack_from("!H", body, i + 2)[0] == 320
    assert decode_update(body).attributes.ext_communities == many


def test_treat_as_withdraw_keeps_the_routes_to_withdraw():
    body = bytearray(encode_update(Update(announced=(ROUTE,), attributes=ATTRS)))
    origin = body.index(bytes([0x40, 1, 1, 0]))
    body[origin + 3] = 9
    update = decode_update(bytes(body))
    assert update.treat_as_withdraw and update.announced == (ROUTE,)
    assert update.errors == ("ORIGIN: value 9 is not IGP (0), EGP (1) or INCOMPLETE (2) (treat-as-withdraw)",)


# -- attributes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, octets",
    [
        ("65000:100", "0002 fde8 00000064"),
        ("10.0.0.1:100", "0102 0a000001 0064"),
        ("4200000000:100", "0202 fa56ea00 0064"),
        ("65000:4294967295", "0002 fde8 ffffffff"),
    ],
)
def test_route_target_parse_picks_the_type(text, octets):
    rt = RouteTarget.parse(text)
    assert rt.kind is None and str(rt) == text
    assert encode_ext_community(rt) == bytes.fromhex(octets)
    back = decode_ext_community(bytes.fromhex(octets))
    assert back == rt and back.kind == bytes.fromhex(octets)[0]


@pytest.mark.parametrize("text", ["65000", "4200000000:65536", "10.0.0.1:65536", "x:1", "65000:", "4294967296:1"])
def test_route_target_parse_rejects(text):
    with pytest.raises(ValueError):
        RouteTarget.parse(text)


def test_route_target_keeps_its_wire_type():
    """A type 0x02 RT with a small AS encodes back as 0x02, and still equals the parsed one."""
    octets = bytes.fromhex("0202 0000fde8 0064")
    rt = decode_ext_community(octets)
    assert encode_ext_community(rt) == octets
    assert rt == RouteTarget.parse("65000:100") and hash(rt) == hash(RouteTarget.parse("65000:100"))


@pytest.mark.parametrize(
    "community, octets",
    [
        (Encapsulation(8), "030c 00000000 0008"),
        (MacMobility(3), "0600 00 00 00000003"),
        (MacMobility(0, sticky=True), "0600 01 00 00000000"),
        (RouterMac(bytes.fromhex("0200000000aa")), "0603 0200000000aa"),
        (OtherExtCommunity(bytes.fromhex("4002fde800000064")), "4002 fde8 00000064"),  # non-transitive RT: not one
    ],
)
def test_ext_communities(community, octets):
    assert encode_ext_community(community) == bytes.fromhex(octets)
    assert decode_ext_community(bytes.fromhex(octets)) == community


def test_path_attributes_helpers():
    a = PathAttributes(
        as_path=(AsPathSegment(AS_SEQUENCE, (1, 2, 3)), AsPathSegment(AS_SET, (4, 5))),
        ext_communities=(RouteTarget.parse("1:1"), MacMobility(7), RouterMac(b"\x02" * 6), RouteTarget.parse("2:2")),
    )
    assert a.as_path_length() == 4
    assert a.route_targets() == (RouteTarget.parse("1:1"), RouteTarget.parse("2:2"))
    assert a.mac_mobility() == MacMobility(7) and a.router_mac() == b"\x02" * 6


def test_readvertised_sets_partial_and_drops_non_transitive():
    a = PathAttributes(other=(
        RawAttribute(0x40, 6, b""),  # ATOMIC_AGGREGATE: recognised, unchanged
        RawAttribute(0xC0, 7, bytes(8)),  # AGGREGATOR: recognised, unchanged
        RawAttribute(0xC0, 32, b"x" * 12),  # unknown optional transitive: Partial
        RawAttribute(0x80, 99, b"y"),  # unknown optional non-transitive: dropped
    ))
    assert readvertised(a).other == (
        RawAttribute(0x40, 6, b""), RawAttribute(0xC0, 7, bytes(8)), RawAttribute(0xC0 | FLAG_PARTIAL, 32, b"x" * 12),
    )


@pytest.mark.parametrize(
    "as_path, as4_path, merged",
    [
        ([(2, (65001, AS_TRANS))], [(2, (65001, 4200000000))], [(2, (65001, 4200000000))]),
        ([(2, (100, 200, AS_TRANS))], [(2, (4200000000,))], [(2, (100, 200)), (2, (4200000000,))]),
        ([(2, (100,))], [(2, (1, 2))], [(2, (100,))]),  # AS4_PATH longer: ignored
        ([(2, (100, AS_TRANS)), (1, (AS_TRANS, 7))], [(2, (4200000000,)), (1, (4200000001, 7))],
         [(2, (100,)), (2, (4200000000,)), (1, (4200000001, 7))]),
    ],
)
def test_merge_as4_path(as_path, as4_path, merged):
    """RFC 6793 4.2.3."""
    seg = lambda segs: tuple(AsPathSegment(k, a) for k, a in segs)  # noqa: E731
    assert merge_as4_path(seg(as_path), seg(as4_path)) == seg(merged)


def test_two_octet_session_sends_as_trans_and_as4_path():
    attrs = dataclasses.replace(ATTRS, as_path=(AsPathSegment(AS_SEQUENCE, (65001, 4200000000)),))
    body = encode_update(Update(announced=(ImetRoute(RD, ipaddress.ip_address("10.0.0.1")),), attributes=attrs), False)
    assert bytes.fromhex("4002 06 0202 fde9 5ba0") in body
    assert bytes.fromhex("c011 0a 0202 0000fde9 fa56ea00") in body
    assert decode_update(body, False).attributes == attrs
    assert decode_update(encode_update(Update(announced=(), attributes=attrs), True), True).attributes == attrs
