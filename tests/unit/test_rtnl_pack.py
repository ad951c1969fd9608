"""io.rtnl: the hand-packed netlink requests are byte for byte what pyroute2 encodes."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.io.rtnl import Devices, encode, pack
from overlayd.kernel.state import Address, BridgeFdbEntry, FdbEntry, Neighbor, Op, Route

DEVICES = Devices({"ovl0": 7, "vx100": 12, "br-blue": 65535, "eth0": 2}, owned={"ovl0", "vx100", "br-blue"})
v4 = st.integers(0, 2**32 - 1).map(ipaddress.IPv4Address)
v6 = st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address)
ips = st.one_of(v4, v6)
macs = st.one_of(st.just(bytes(6)), st.binary(min_size=6, max_size=6))
devices = st.sampled_from(sorted(DEVICES.index))


@st.composite
def routes(draw):
    version = draw(st.sampled_from([4, 6]))
    length = draw(st.integers(0, 32 if version == 4 else 128))
    address = draw(v4 if version == 4 else v6)
    dst = ipaddress.ip_network((address, length), strict=False)
    return Route(dst, draw(st.none() | ips), draw(st.none() | devices), draw(st.booleans()), draw(st.none() | ips))


@st.composite
def addresses(draw):
    ip = draw(ips)
    return Address(draw(devices), ipaddress.ip_interface((ip, draw(st.integers(0, ip.max_prefixlen)))))


entries = st.one_of(
    routes(),
    st.builds(Neighbor, devices, ips, macs, st.booleans()),
    st.builds(FdbEntry, devices, macs, ips),
    st.builds(BridgeFdbEntry, devices, macs),
    addresses(),
)


@settings(max_examples=500)
@given(st.sampled_from(["add", "replace", "delete"]), entries, st.integers(1, 2**31 - 1), st.integers(0, 255))
def test_pack_writes_what_pyroute2_encodes(action, entry, sequence, protocol):
    op = Op(action, entry)
    assert pack(op, DEVICES, protocol, sequence) == encode(op, DEVICES, protocol, sequence)


@given(st.builds(Neighbor, devices, ips, macs, st.booleans()), st.integers(1, 2**31 - 1))
def test_a_probe_is_packed_as_pyroute2_encodes_it(entry, sequence):
    op = Op("probe", entry)
    assert pack(op, DEVICES, 149, sequence) == encode(op, DEVICES, 149, sequence)


@settings(max_examples=300)
@given(st.one_of(st.builds(Neighbor, st.just("ovl0"), ips, st.binary(min_size=6, max_size=6), st.booleans()),
                 st.builds(FdbEntry, st.just("vx100"), macs, ips),
                 st.builds(BridgeFdbEntry, st.just("vx100"), st.binary(min_size=6, max_size=6))))
def test_the_monitor_reads_back_what_was_written(entry):
    """A notification carries the request's body: the fast reader gives the same entry back."""
    from overlayd.io.rtnl import _HEADER, _owned_neighbor, neighbor_of
    from pyroute2.netlink.rtnl.ndmsg import ndmsg

    data = pack(Op("add", entry), DEVICES, 149, 1)
    body = memoryview(data)[_HEADER.size:]
    assert _owned_neighbor(body, entry.device) == entry
    msg = ndmsg(data)
    msg.decode()
    assert neighbor_of(msg, DEVICES) == entry


@settings(max_examples=300)
@given(routes())
def test_a_route_reads_back_as_written(route):
    """What `route_of` makes of a route message is the route (the dump repeats the request's fields)."""
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    from overlayd.io.rtnl import route_of

    msg = rtmsg(pack(Op("add", route), DEVICES, 149, 1))
    msg.decode()
    assert route_of(msg, DEVICES) == route
