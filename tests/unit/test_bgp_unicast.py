"""IPv4 / IPv6 unicast NLRI (overlayd.wire.bgp.unicast) and UPDATEs carrying them
(overlayd.wire.bgp.update): round trips, the minimal prefix octets, malformed
prefixes, End-of-RIB per family, each route's next hop, and the RFC 7606
outcomes the golden vectors (tests/vectors/bgp_update/unicast*.json) do not
show. The vectors themselves are checked in test_bgp_update.py.
"""

from __future__ import annotations

import dataclasses
import ipaddress

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlayd.wire.bgp.attributes import PathAttributes
from overlayd.wire.bgp.errors import BgpError
from overlayd.wire.bgp.evpn import (
    ImetRoute,
    MacIpRoute,
    PrefixRoute,
    RouteDistinguisher,
)
from overlayd.wire.bgp.messages import UPDATE, decode_message
from overlayd.wire.bgp.unicast import (
    AFI_IPV4,
    AFI_IPV6,
    IPV4_UNICAST,
    IPV6_UNICAST,
    UnicastRoute,
    decode_nlri,
    encode_nlri,
)
from overlayd.wire.bgp.update import (
    FAMILY_NAMES,
    L2VPN_EVPN,
    Update,
    decode_update,
    encode_update,
    family_name,
    route_family,
    split_update,
)
from overlayd.wire.errors import DecodeError
from tests.unit.bgp_strategies import (
    path_attributes,
    routes,
    unicast_routes,
    unicast_updates,
)

ALL = tuple(FAMILY_NAMES)
V4 = UnicastRoute("192.0.2.0/24")
V6 = UnicastRoute("2001:db8::/32")
HOP4 = ipaddress.IPv4Address("10.0.0.1")
ATTRS = PathAttributes(next_hop=HOP4, local_pref=100)
RD = RouteDistinguisher.parse("10.0.0.1:1")
TYPE5 = PrefixRoute(RD, ipaddress.ip_network("10.244.1.0/24"), vni=1)


# -- the route and its NLRI ---------------------------------------------------------------


def test_route_key_family_and_normalisation():
    route = UnicastRoute("10.244.1.7/24")
    assert route.prefix == ipaddress.ip_network("10.244.1.0/24")
    assert route == UnicastRoute(ipaddress.ip_network("10.244.1.0/24"))
    assert route.key == ("unicast", route.prefix)
    assert (route.family, V6.family) == (IPV4_UNICAST, IPV6_UNICAST)
    assert route_family(route) == IPV4_UNICAST and route_family(TYPE5) == L2VPN_EVPN
    assert [family_name(f) for f in (L2VPN_EVPN, IPV4_UNICAST, IPV6_UNICAST, (1, 128))] == [
        "evpn", "ipv4-unicast", "ipv6-unicast", "AFI 1 / SAFI 128"]


@given(routes)
def test_a_unicast_key_never_equals_an_evpn_key(evpn_route):
    prefix = getattr(evpn_route, "prefix", ipaddress.ip_network("10.0.0.0/8"))
    assert UnicastRoute(prefix).key != evpn_route.key


@pytest.mark.parametrize(
    "prefix, octets",
    [
        ("0.0.0.0/0", "00"),
        ("10.128.0.0/9", "09 0a80"),
        ("10.244.1.0/24", "18 0af401"),
        ("203.0.113.7/32", "20 cb007107"),
        ("::/0", "00"),
        ("fd00:244:1::/64", "40 fd00024400010000"),
        ("2001:db8::1/128", "80 20010db8000000000000000000000001"),
    ],
)
def test_prefix_takes_the_fewest_octets(prefix, octets):
    route = UnicastRoute(prefix)
    assert encode_nlri(route) == bytes.fromhex(octets)
    assert decode_nlri(bytes.fromhex(octets), route.afi) == [route]


@given(st.lists(unicast_routes(), max_size=20))
def test_nlri_round_trip(routes_):
    for afi in (AFI_IPV4, AFI_IPV6):
        mine = [r for r in routes_ if r.afi == afi]
        assert decode_nlri(b"".join(encode_nlri(r) for r in mine), afi) == mine


def test_host_bits_are_masked():
    assert decode_nlri(bytes.fromhex("17 c00003"), AFI_IPV4) == [UnicastRoute("192.0.2.0/23")]


@pytest.mark.parametrize(
    "afi, data, reason",
    [
        (AFI_IPV4, "21 c0000201 00", "IPv4 prefix at octet 0: length 33 bits exceeds 32"),
        (AFI_IPV6, "81" + "00" * 17, "IPv6 prefix at octet 0: length 129 bits exceeds 128"),
        (AFI_IPV4, "18 c00002 18 c633", "IPv4 prefix at octet 4: /24 needs 3 octets, 2 left"),
        (AFI_IPV6, "40 fd000244", "IPv6 prefix at octet 0: /64 needs 8 octets, 4 left"),
        (AFI_IPV4, "08", "IPv4 prefix at octet 0: /8 needs 1 octets, 0 left"),
    ],
)
def test_malformed_nlri_raises_decode_error(afi, data, reason):
    with pytest.raises(DecodeError) as err:
        decode_nlri(bytes.fromhex(data), afi)
    assert (err.value.layer, err.value.reason) == ("unicast", reason)


@given(st.binary(max_size=64), st.sampled_from([AFI_IPV4, AFI_IPV6]))
def test_random_nlri_raises_only_decode_error(data, afi):
    try:
        decode_nlri(data, afi)
    except DecodeError:
        pass


# -- UPDATEs ------------------------------------------------------------------------------


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.booleans().flatmap(lambda four: st.tuples(st.just(four), unicast_updates(four))))
def test_update_round_trip(case):
    four, update = case
    assert decode_update(encode_update(update, four), four, ALL) == update


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(unicast_updates(), st.data())
def test_corrupted_unicast_updates_raise_only_bgp_error(update, data):
    body = bytearray(encode_update(update))
    for _ in range(data.draw(st.integers(1, 4))):
        if body:
            body[data.draw(st.integers(0, len(body) - 1))] = data.draw(st.integers(0, 255))
    try:
        result = decode_update(bytes(body[: data.draw(st.integers(0, len(body)))]), True, ALL)
    except BgpError as e:
        assert e.code in (1, 3) and str(e)
        return
    assert not result.treat_as_withdraw or result.errors


@pytest.mark.parametrize(
    "family, body",
    [
        (IPV4_UNICAST, "0000 0000"),
        (IPV6_UNICAST, "0000 0006 800f 03 0002 01"),
        (L2VPN_EVPN, "0000 0006 800f 03 0019 46"),
    ],
)
def test_end_of_rib_per_family(family, body):
    eor = Update(end_of_rib=True, end_of_rib_family=family)
    assert encode_update(eor) == bytes.fromhex(body)
    assert decode_update(bytes.fromhex(body), True, ALL) == eor
    assert split_update(eor) == [eor]


def test_the_empty_update_is_no_end_of_rib_without_ipv4_unicast():
    assert decode_update(bytes(4)) == Update()
    assert Update(end_of_rib=True).end_of_rib_family == L2VPN_EVPN


def test_ipv4_unicast_goes_in_the_nlri_field_with_next_hop():
    body = encode_update(Update(announced=(V4,), attributes=ATTRS))
    assert body == bytes.fromhex("0000 0015 400101 00 400200 400304 0a000001 400504 00000064 18 c00002")
    assert encode_update(Update(withdrawn=(V4,))) == bytes.fromhex("0004 18c00002 0000")


def test_ipv6_unicast_goes_in_mp_reach_nlri():
    body = encode_update(Update(announced=(V6,), attributes=dataclasses.replace(ATTRS, next_hop=ipaddress.ip_address("fd00::1"))))
    mp_reach = bytes.fromhex("800e 1a 0002 01 10 fd000000000000000000000000000001 00 20 20010db8")
    assert body == bytes.fromhex("0000 002b") + mp_reach + bytes.fromhex("400101 00 400200 400504 00000064")


@pytest.mark.parametrize(
    "update, message",
    [
        (Update(announced=(V4, V6), attributes=ATTRS), "2 address families: one per UPDATE"),
        (Update(announced=(V4, TYPE5), attributes=ATTRS), "one per UPDATE"),
        (Update(withdrawn=(V6, TYPE5)), "one per UPDATE"),
        (Update(announced=(V4,), withdrawn=(V4,), attributes=ATTRS), "separate UPDATEs"),
        (Update(announced=(V4,), attributes=dataclasses.replace(ATTRS, next_hop=ipaddress.ip_address("fd00::1"))),
         "not an IPv4 address"),
        (Update(announced=(V4,), attributes=dataclasses.replace(ATTRS, next_hop=None)), "NEXT_HOP"),
        (Update(end_of_rib=True, end_of_rib_family=IPV4_UNICAST, withdrawn=(V4,)), "End-of-RIB"),
    ],
)
def test_encode_refuses(update, message):
    with pytest.raises(ValueError, match=message):
        encode_update(update)


def test_each_announced_route_knows_its_next_hop():
    mixed = Update(announced=(TYPE5, V4), attributes=ATTRS, nlri_next_hop=ipaddress.IPv4Address("10.0.0.2"))
    assert mixed.next_hop_of(TYPE5) == HOP4 and mixed.attributes_of(TYPE5) is ATTRS
    assert mixed.next_hop_of(V4) == ipaddress.IPv4Address("10.0.0.2")
    assert mixed.attributes_of(V4) == dataclasses.replace(ATTRS, next_hop=ipaddress.IPv4Address("10.0.0.2"))
    plain = Update(announced=(V4,), attributes=ATTRS)
    assert plain.attributes_of(V4) is ATTRS
    assert Update(withdrawn=(V4,)).next_hop_of(V4) is None


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=40)
@given(
    st.lists(st.one_of(routes, unicast_routes()), max_size=40),
    st.lists(st.one_of(routes, unicast_routes()), max_size=40),
    path_attributes(),
    st.none() | st.builds(ipaddress.IPv4Address, st.integers(1 << 24, 0xDFFFFFFF)),
)
def test_split_update_makes_one_family_per_update_and_keeps_next_hops(announced, withdrawn, attributes, nlri_hop):
    if attributes.next_hop.version != 4 and nlri_hop is None:
        nlri_hop = HOP4  # IPv4 unicast in the NLRI field needs an IPv4 NEXT_HOP
    update = Update(announced=tuple(announced), withdrawn=tuple(withdrawn), attributes=attributes,
                    nlri_next_hop=nlri_hop)
    parts = split_update(update)
    decoded = [decode_update(encode_update(p), True, ALL) for p in parts]
    assert all(len({route_family(r) for r in d.announced + d.withdrawn}) <= 1 for d in decoded)
    assert all(not (d.announced and d.withdrawn) for d in decoded)
    for family in ALL:
        assert [r for d in decoded for r in d.withdrawn if route_family(r) == family] == [
            r for r in withdrawn if route_family(r) == family]
        assert [(r, d.attributes_of(r)) for d in decoded for r in d.announced if route_family(r) == family] == [
            (r, update.attributes_of(r)) for r in announced if route_family(r) == family]


# -- what the decoder does with families and RFC 7606 -----------------------------------------

OVERRUN = bytes.fromhex("0000 0015 400101 00 400200 400304 0a000001 400509 00000064 18 c00002")


def test_an_overrun_on_an_ipv4_only_session_is_treat_as_withdraw():
    """RFC 7606 4: the total attribute length still locates the NLRI field."""
    update = decode_update(OVERRUN, True, (IPV4_UNICAST,))
    assert update.treat_as_withdraw and update.announced == (V4,)
    assert update.errors == (
        "LOCAL_PREF: length 9 overruns the 4 octets left in the path attributes (treat-as-withdraw)",)


def test_an_overrun_before_any_mp_attribute_resets_when_one_could_hide_behind_it():
    with pytest.raises(BgpError) as err:
        decode_update(OVERRUN, True, (L2VPN_EVPN, IPV4_UNICAST))
    assert (err.value.code, err.value.subcode) == (3, 1)


def test_next_hop_is_ignored_without_routes_in_the_nlri_field():
    """RFC 4760 3: an UPDATE with only MP_REACH_NLRI routes may carry NEXT_HOP; it is ignored."""
    v6_attrs = dataclasses.replace(ATTRS, next_hop=ipaddress.ip_address("fd00::1"))
    body = bytearray(encode_update(Update(announced=(V6,), attributes=v6_attrs)))
    next_hop = bytes.fromhex("400305 0a00000100")  # malformed too: it is not read
    body[4:4] = next_hop
    body[2:4] = (int.from_bytes(body[2:4], "big") + len(next_hop)).to_bytes(2, "big")
    update = decode_update(bytes(body), True, ALL)
    assert update == Update(announced=(V6,), attributes=v6_attrs)


def test_classic_nlri_beside_mp_reach_of_ipv4_unicast_is_noted_and_ignored():
    """Which next hop would 192.0.2.0/24 have: MP_REACH_NLRI's or NEXT_HOP? Neither: it is left out."""
    body = bytes.fromhex("0000 0025 800e0d 0001 01 04 0a000009 00 18 c63364 400101 00 400200 400304 0a000001"
                         "400504 00000064 18 c00002")
    update = decode_update(body, True, ALL)
    assert update.announced == (UnicastRoute("198.51.100.0/24"),) and update.nlri_next_hop is None
    assert update.errors == ("NLRI: 1 IPv4 unicast route(s) ignored: MP_REACH_NLRI carries IPv4 unicast too",)


def test_decode_message_passes_the_families_on():
    body = encode_update(Update(announced=(V4,), attributes=ATTRS))
    assert decode_message(UPDATE, body, True, (IPV4_UNICAST,)).announced == (V4,)
    assert decode_message(UPDATE, body).announced == ()


def test_unicast_and_evpn_withdrawals_in_one_update_are_both_read():
    imet = ImetRoute(RD, HOP4)
    evpn = encode_update(Update(withdrawn=(imet,)))
    body = bytes.fromhex("0004 18c00002") + evpn[2:]
    assert decode_update(body, True, ALL).withdrawn == (V4, imet)
    assert decode_update(body).withdrawn == (imet,)
    mac = MacIpRoute(RD, bytes(6), None, 1)
    assert split_update(Update(withdrawn=(V4, mac, V6))) == [
        Update(withdrawn=(V4,)), Update(withdrawn=(mac,)), Update(withdrawn=(V6,))]
