"""IPv4 and IPv6 unicast NLRI (RFC 4271 4.3, RFC 4760 5): AFI 1 / 2, SAFI 1.

    +---------------------------+
    |   Length (1 octet)        |   the prefix length in bits
    +---------------------------+
    |   Prefix (variable)       |   the fewest octets that hold it: ceil(length / 8)
    +---------------------------+

The same encoding fills the UPDATE's Withdrawn Routes and NLRI fields (IPv4
only) and the NLRI of MP_REACH_NLRI / MP_UNREACH_NLRI (IPv4 or IPv6). Bits
past the prefix length are not part of the route: decoding masks them, as
it does for EVPN type-5 prefixes, so a `UnicastRoute` always holds a network
and encodes back to the minimal octets.

`UnicastRoute.key` is ("unicast", prefix): an EVPN route's key starts with
its route type number, so the two never collide and share one RIB.

`decode_nlri(data, afi)` reads a concatenation of prefixes; a length past
32 / 128 bits or a prefix running past the data raises `DecodeError` (layer
"unicast"), which the UPDATE decoder turns into a session reset (RFC 7606
5.3: NLRI that cannot be parsed).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from overlayd.wire.bgp.evpn import IpNetwork
from overlayd.wire.errors import DecodeError

AFI_IPV4 = 1
AFI_IPV6 = 2
SAFI_UNICAST = 1
IPV4_UNICAST = (AFI_IPV4, SAFI_UNICAST)
IPV6_UNICAST = (AFI_IPV6, SAFI_UNICAST)

_BITS = {AFI_IPV4: 32, AFI_IPV6: 128}
_LAYER = "unicast"


@dataclass(frozen=True, slots=True)
class UnicastRoute:
    """`prefix` is reachable behind the route's next hop (IPv4 or IPv6 unicast, SAFI 1).

    A string or an address with host bits is accepted and turned into the
    network it names (`UnicastRoute("10.244.1.7/24").prefix` is 10.244.1.0/24).
    """

    prefix: IpNetwork

    def __post_init__(self) -> None:
        if not isinstance(self.prefix, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
            object.__setattr__(self, "prefix", ipaddress.ip_network(self.prefix, strict=False))

    @property
    def key(self) -> tuple:
        return ("unicast", self.prefix)

    @property
    def afi(self) -> int:
        return AFI_IPV4 if self.prefix.version == 4 else AFI_IPV6

    @property
    def family(self) -> tuple[int, int]:
        """(AFI, SAFI): IPV4_UNICAST or IPV6_UNICAST."""
        return (self.afi, SAFI_UNICAST)


def encode_nlri(route: UnicastRoute) -> bytes:
    """One prefix as length in bits and the fewest octets that hold it."""
    prefix = route.prefix
    size = (prefix.prefixlen + 7) // 8
    return bytes([prefix.prefixlen]) + prefix.network_address.packed[:size]


def decode_nlri(data: bytes | memoryview, afi: int) -> list[UnicastRoute]:
    """Every prefix in a concatenation of unicast NLRI of `afi` (AFI_IPV4 or AFI_IPV6), in order.

    Raises DecodeError when a length exceeds the address size or a prefix
    runs past the data; the reason names the octet where it starts.

    A prefix costs one integer and one network built from it (not
    `ip_network` on an address, which formats and parses it again: ~150 us
    for IPv6), and a prefix repeated in the same data is built once: a
    4096-octet UPDATE holds up to ~4000 prefixes, all ::/0 if its sender
    likes, and must not hold the event loop for a second.
    """
    bits = _BITS.get(afi)
    if bits is None:
        raise ValueError(f"AFI {afi} is not IPv4 (1) or IPv6 (2)")
    network = ipaddress.IPv4Network if afi == AFI_IPV4 else ipaddress.IPv6Network
    family = "IPv4" if afi == AFI_IPV4 else "IPv6"
    data = bytes(data)
    routes = []
    built: dict[bytes, UnicastRoute] = {}
    offset = 0
    while offset < len(data):
        length = data[offset]
        if length > bits:
            raise DecodeError(_LAYER, f"{family} prefix at octet {offset}: length {length} bits exceeds {bits}")
        size = (length + 7) // 8
        end = offset + 1 + size
        if end > len(data):
            raise DecodeError(
                _LAYER,
                f"{family} prefix at octet {offset}: /{length} needs {size} octets, "
                f"{len(data) - offset - 1} left",
            )
        raw = data[offset:end]
        route = built.get(raw)
        if route is None:
            value = int.from_bytes(raw[1:], "big") << (bits - 8 * size)
            value &= ((1 << length) - 1) << (bits - length)  # bits past the length are not the route's
            route = built[raw] = UnicastRoute(network((value, length)))
        routes.append(route)
        offset = end
    return routes
