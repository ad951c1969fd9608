"""What the fuzzers found (tests/fuzz), each pinned by a test besides its corpus entry.

1. Unicast NLRI decoding cost ~150-300 us per prefix (`ip_network` on an
   address formats and parses it again), and a 4096-octet UPDATE carries up to
   ~4000 prefixes: one MP_UNREACH_NLRI full of ::/0 held the event loop for
   over a second (found by `make fuzz`, target unicast_nlri, as an input over
   100 ms). Now a prefix is built from an integer, once per distinct prefix.
"""

from __future__ import annotations

import ipaddress
import struct
import time

from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.wire.bgp import unicast
from overlayd.wire.bgp.unicast import IPV4_UNICAST, IPV6_UNICAST, UnicastRoute
from overlayd.wire.bgp.update import L2VPN_EVPN, decode_update
from overlayd.wire.errors import DecodeError


def fastest_ms(fn, tries: int = 3) -> float:
    best = float("inf")
    for _ in range(tries):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def worst_update(afi: int) -> bytes:
    """A whole 4096-octet UPDATE body: one MP_UNREACH_NLRI of as many /0 prefixes as fit."""
    mp = struct.pack("!HB", afi, 1) + bytes(4096 - 19 - 4 - 4 - 3)
    attr = bytes((0x90, 15)) + struct.pack("!H", len(mp)) + mp
    return struct.pack("!HH", 0, len(attr)) + attr


def test_an_update_full_of_default_routes_decodes_in_well_under_100_ms():
    for afi in (1, 2):
        body = worst_update(afi)
        update = decode_update(body, True, (L2VPN_EVPN, IPV4_UNICAST, IPV6_UNICAST))
        assert len(update.withdrawn) == 4066
        took = fastest_ms(lambda body=body: decode_update(body, True, (L2VPN_EVPN, IPV4_UNICAST, IPV6_UNICAST)))
        print(f"AFI {afi}: 4066 withdrawn /0 prefixes in one UPDATE decode in {took:.1f} ms")
        assert took < 100


def test_distinct_prefixes_decode_in_well_under_100_ms():
    data = b"".join(bytes((16,)) + struct.pack("!H", i) for i in range(1360))  # 4080 octets, all distinct
    for afi in (1, 2):
        took = fastest_ms(lambda afi=afi: unicast.decode_nlri(data, afi))
        print(f"AFI {afi}: 1360 distinct /16 prefixes decode in {took:.1f} ms")
        assert took < 100


def naive(data: bytes, afi: int) -> list[UnicastRoute]:
    """The decoder as it was: ip_network on the address, strict=False to drop the host bits."""
    bits, width = (32, 4) if afi == 1 else (128, 16)
    routes, offset = [], 0
    while offset < len(data):
        length = data[offset]
        if length > bits:
            raise DecodeError("unicast", "too long")
        size = (length + 7) // 8
        if offset + 1 + size > len(data):
            raise DecodeError("unicast", "overrun")
        address = data[offset + 1 : offset + 1 + size] + bytes(width - size)
        routes.append(UnicastRoute(ipaddress.ip_network((ipaddress.ip_address(address), length), strict=False)))
        offset += 1 + size
    return routes


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 129), st.binary(max_size=17)), max_size=8), st.sampled_from([1, 2]))
def test_the_fast_decoder_agrees_with_the_naive_one(prefixes, afi):
    data = b"".join(bytes((length,)) + raw[: (length + 7) // 8] for length, raw in prefixes)
    try:
        want = naive(data, afi)
    except DecodeError:
        try:
            unicast.decode_nlri(data, afi)
        except DecodeError:
            return
        raise AssertionError("the fast decoder accepted what the naive one refused")
    assert unicast.decode_nlri(data, afi) == want
