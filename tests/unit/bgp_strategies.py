"""Hypothesis strategies for EVPN and unicast routes, path attributes and UPDATEs that overlayd can encode."""

from __future__ import annotations

import dataclasses
import ipaddress

from hypothesis import strategies as st

from overlayd.wire.bgp.attributes import (
    AS4_AGGREGATOR,
    AS_SEQUENCE,
    AS_SET,
    ATOMIC_AGGREGATE,
    AGGREGATOR,
    COMMUNITIES,
    AsPathSegment,
    Encapsulation,
    MacMobility,
    OtherExtCommunity,
    PathAttributes,
    PmsiTunnel,
    RawAttribute,
    RouterMac,
    RouteTarget,
)
from overlayd.wire.bgp.evpn import ImetRoute, MacIpRoute, PrefixRoute, RouteDistinguisher
from overlayd.wire.bgp.unicast import IPV4_UNICAST, IPV6_UNICAST, UnicastRoute
from overlayd.wire.bgp.update import Update

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u24 = st.integers(0, 0xFFFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
ipv4 = st.builds(ipaddress.IPv4Address, u32)
ipv6 = st.builds(ipaddress.IPv6Address, st.integers(0, (1 << 128) - 1))
ip = st.one_of(ipv4, ipv6)
macs = st.binary(min_size=6, max_size=6)
esis = st.one_of(st.just(bytes(10)), st.binary(min_size=10, max_size=10))

rds = st.one_of(
    st.builds(lambda a, n: RouteDistinguisher(0, str(a), n), u16, u32),
    st.builds(lambda a, n: RouteDistinguisher(1, str(a), n), ipv4, u16),
    st.builds(lambda a, n: RouteDistinguisher(2, str(a), n), u32, u16),
)

mac_ip_routes = st.builds(
    MacIpRoute, rd=rds, mac=macs, ip=st.none() | ip, vni=u24, vni2=st.none() | u24, esi=esis, ethernet_tag=u32
)
imet_routes = st.builds(ImetRoute, rd=rds, originator=ip, ethernet_tag=u32)


@st.composite
def prefix_routes(draw):
    address = draw(ip)
    prefix = ipaddress.ip_network((address, draw(st.integers(0, address.max_prefixlen))), strict=False)
    gateway = draw(st.none() | (ipv4 if prefix.version == 4 else ipv6).filter(lambda a: int(a) != 0))
    return PrefixRoute(draw(rds), prefix, draw(u24), gateway, draw(esis), draw(u32))


routes = st.one_of(mac_ip_routes, imet_routes, prefix_routes())


def _route_target(kind, admin, number):
    return RouteTarget(str(admin), number, kind)


route_targets = st.one_of(
    st.builds(_route_target, st.just(0), u16, u32),
    st.builds(_route_target, st.just(1), ipv4, u16),
    st.builds(_route_target, st.just(2), u32, u16),
    st.builds(_route_target, st.none(), u16, u32),  # as from RouteTarget.parse
)
# raw communities that do not look like one overlayd interprets
other_communities = st.binary(min_size=8, max_size=8).filter(
    lambda b: not (b[1] == 2 and b[0] in (0, 1, 2)) and b[:2] not in (b"\x03\x0c", b"\x06\x00", b"\x06\x03")
).map(OtherExtCommunity)
ext_communities = st.one_of(
    route_targets,
    st.builds(Encapsulation, u16),
    st.builds(MacMobility, u32, st.booleans()),
    st.builds(RouterMac, macs),
    other_communities,
)


def as_paths(max_asn: int = 0xFFFFFFFF, kinds=(AS_SET, AS_SEQUENCE)):
    return st.lists(
        st.builds(AsPathSegment, st.sampled_from(kinds), st.lists(st.integers(0, max_asn), min_size=1, max_size=8).map(tuple)),
        max_size=4,
    ).map(tuple)


@st.composite
def raw_attributes(draw, four_octet_as: bool = True):
    """`other`: kept-raw recognised attributes and unknown optional ones, in type code order."""
    out = []
    if draw(st.booleans()):
        out.append(RawAttribute(0x40, ATOMIC_AGGREGATE, b""))
    if draw(st.booleans()):
        out.append(RawAttribute(0xC0, AGGREGATOR, draw(st.binary(min_size=8 if four_octet_as else 6, max_size=8 if four_octet_as else 6))))
    if draw(st.booleans()):
        out.append(RawAttribute(0xC0, COMMUNITIES, draw(st.binary(min_size=1, max_size=8).map(lambda b: b * 4))))
    if not four_octet_as and draw(st.booleans()):
        out.append(RawAttribute(0xC0, AS4_AGGREGATOR, draw(st.binary(min_size=8, max_size=8))))
    codes = draw(st.lists(st.integers(23, 255), max_size=3, unique=True))
    for code in sorted(codes):
        flags = draw(st.sampled_from([0x80, 0xC0, 0xE0, 0x90, 0xD0]))
        out.append(RawAttribute(flags, code, draw(st.binary(max_size=300))))
    return tuple(sorted(out, key=lambda a: a.type_code))


@st.composite
def path_attributes(draw, four_octet_as: bool = True):
    return PathAttributes(
        origin=draw(st.integers(0, 2)),
        as_path=draw(as_paths()),
        next_hop=draw(ip.filter(lambda a: not (a.is_unspecified or a.is_multicast))),
        med=draw(st.none() | u32),
        local_pref=draw(st.none() | u32),
        ext_communities=tuple(draw(st.lists(ext_communities, max_size=40))),
        pmsi_tunnel=draw(st.none() | st.builds(PmsiTunnel, u8, u24, ip, u8)),
        originator_id=draw(st.none() | ipv4),
        cluster_list=tuple(draw(st.lists(ipv4, max_size=4))),
        other=draw(raw_attributes(four_octet_as)),
    )


def updates(four_octet_as: bool = True):
    return st.one_of(
        st.builds(Update, announced=st.lists(routes, max_size=8).map(tuple), attributes=path_attributes(four_octet_as)),
        st.builds(Update, withdrawn=st.lists(routes, min_size=1, max_size=8).map(tuple)),
        st.just(Update(end_of_rib=True)),
    )


@st.composite
def unicast_routes(draw, version: int | None = None):
    address = draw({4: ipv4, 6: ipv6}.get(version, ip))
    return UnicastRoute(ipaddress.ip_network((address, draw(st.integers(0, address.max_prefixlen))), strict=False))


@st.composite
def unicast_updates(draw, four_octet_as: bool = True):
    """Announcements or withdrawals of one unicast family (IPv4 with an IPv4 next hop), or its End-of-RIB."""
    version = draw(st.sampled_from([4, 6]))
    kind = draw(st.sampled_from(["announce", "withdraw", "end-of-rib"]))
    if kind == "end-of-rib":
        return Update(end_of_rib=True, end_of_rib_family=IPV6_UNICAST if version == 6 else IPV4_UNICAST)
    routes = tuple(draw(st.lists(unicast_routes(version), min_size=1, max_size=20)))
    if kind == "withdraw":
        return Update(withdrawn=routes)
    attributes = draw(path_attributes(four_octet_as))
    if version == 4 and attributes.next_hop.version != 4:
        attributes = dataclasses.replace(attributes, next_hop=draw(ipv4.filter(lambda a: not (a.is_unspecified or a.is_multicast))))
    return Update(announced=routes, attributes=attributes)
