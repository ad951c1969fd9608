"""Bad BGP input, table-driven (issue 13 item 8, RFC 7606): one overlayd node and a peer played by
hand. Each case sends one bad UPDATE, then a valid sentinel route (on the same session, or on the
next one where RFC 7606 says reset). Pass: the sentinel is in the FDB, the bad route is in
neither the RIB nor the FDB (nor the flood list), the node took the action the RFC names, and
the per-peer counter that `overlayctl peers --json` shows moved.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from overlayd.control.session import State
from overlayd.sim.frames import mac
from overlayd.status.bgp_view import peer_rows
from overlayd.wire.bgp.attributes import (
    Encapsulation,
    PmsiTunnel,
    RouteTarget,
    encode_attribute,
    encode_ext_community,
    encode_pmsi_tunnel,
)
from overlayd.wire.bgp.evpn import (
    ImetRoute,
    MacIpRoute,
    PrefixRoute,
    RouteDistinguisher,
    UnknownRoute,
    encode_nlri,
)
from overlayd.wire.bgp.messages import Notification, frame
from tests.unit.bgp_scripted import NODE, PEER, PEER_ID, VNI, Scripted

RD = RouteDistinguisher.for_vtep(PEER_ID, VNI)
BAD = mac(0x66)
SENTINEL = mac(0x77)
ZERO, BROADCAST, MULTICAST = bytes(6), b"\xff" * 6, bytes.fromhex("01005e000001")
ip = ipaddress.ip_address

TAW, DISCARD, RESET, IGNORE = "treat-as-withdraw", "attribute-discard", "session reset", "discard route"


def origin(flags: int = 0x40, value: bytes = b"\x00") -> bytes:
    return encode_attribute(flags, 1, value)


def common(**override: bytes) -> list[bytes]:
    """ORIGIN, AS_PATH (empty: iBGP), LOCAL_PREF, route target + VXLAN encapsulation."""
    ext = b"".join(encode_ext_community(c) for c in (RouteTarget.parse(f"65000:{VNI}"), Encapsulation()))
    attrs = {
        "origin": origin(),
        "as_path": encode_attribute(0x40, 2, b""),
        "local_pref": encode_attribute(0x40, 5, struct.pack("!I", 100)),
        "ext": encode_attribute(0xC0, 16, ext),
    }
    attrs.update(override)
    return [a for a in attrs.values() if a]


def mp_reach(nlri: bytes, next_hop: str = PEER, hop_len: int | None = None) -> bytes:
    hop = ip(next_hop).packed
    return encode_attribute(0x80, 14, struct.pack("!HBB", 25, 70, hop_len or len(hop)) + hop + b"\0" + nlri)


def update(attrs: list[bytes], withdrawn_len: int | None = None) -> bytes:
    body = b"".join(attrs)
    withdrawn = struct.pack("!H", withdrawn_len or 0)
    return frame(2, withdrawn + struct.pack("!H", len(body)) + body)


def macip(m: bytes = BAD, tag: int = 0) -> bytes:
    return encode_nlri(MacIpRoute(RD, m, None, vni=VNI, ethernet_tag=tag))


def announce(m: bytes = BAD, next_hop: str = PEER, tag: int = 0, **override: bytes) -> bytes:
    return update([*common(**override), mp_reach(macip(m, tag), next_hop)])


def imet_with_tunnel(endpoint: str) -> bytes:
    pmsi = encode_attribute(0xC0, 22, encode_pmsi_tunnel(PmsiTunnel(6, VNI, ip(endpoint))))
    return update([*common(), pmsi, mp_reach(encode_nlri(ImetRoute(RD, ip(PEER))))])


def prefix_length_33() -> bytes:
    nlri = bytearray(encode_nlri(PrefixRoute(RD, ipaddress.ip_network("10.244.1.0/24"), VNI, ip("0.0.0.0"))))
    nlri[2 + 22] = 33  # type, length, then RD(8) ESI(10) tag(4): the prefix length
    return update([*common(), mp_reach(bytes(nlri))])


def short_header() -> bytes:
    msg = bytearray(announce())
    msg[16:18] = struct.pack("!H", 18)  # a length below the 19-octet header
    return bytes(msg)


@dataclass(frozen=True)
class Case:
    name: str
    message: Callable[[], bytes]
    action: str  # what RFC 7606 (or RFC 4271 where 7606 keeps it) says
    counter: str  # the peers row counter that moves
    bad_mac: bytes | None = BAD  # the MAC that must not be installed (None: an IMET route)
    notification: tuple[int, int] | None = None  # for RESET: (code, subcode) sent


CASES = [
    Case("MAC zero", lambda: announce(ZERO), TAW, "routes_rejected", ZERO),
    Case("MAC broadcast", lambda: announce(BROADCAST), TAW, "routes_rejected", BROADCAST),
    Case("MAC multicast", lambda: announce(MULTICAST), TAW, "routes_rejected", MULTICAST),
    Case("Ethernet tag 2^24", lambda: announce(tag=1 << 24), TAW, "routes_rejected"),
    Case("next hop is our VTEP", lambda: announce(next_hop=NODE), TAW, "routes_rejected"),
    Case("next hop loopback", lambda: announce(next_hop="127.0.0.1"), TAW, "routes_rejected"),
    Case("next hop multicast", lambda: announce(next_hop="224.0.0.5"), TAW, "treated_as_withdraw"),
    Case("next hop unspecified", lambda: announce(next_hop="0.0.0.0"), TAW, "treated_as_withdraw"),
    Case("PMSI tunnel endpoint loopback", lambda: imet_with_tunnel("127.0.0.1"), TAW, "routes_rejected", None),
    Case("ORIGIN flags say optional", lambda: announce(origin=origin(flags=0xC0)), TAW, "treated_as_withdraw"),
    Case("ORIGIN length 2", lambda: announce(origin=origin(value=b"\0\0")), TAW, "treated_as_withdraw"),
    Case("ORIGIN value 3", lambda: announce(origin=origin(value=b"\x03")), TAW, "treated_as_withdraw"),
    Case("ORIGIN missing", lambda: announce(origin=b""), TAW, "treated_as_withdraw"),
    Case("LOCAL_PREF length 3", lambda: announce(local_pref=encode_attribute(0x40, 5, b"\0\0\x64")), TAW,
         "treated_as_withdraw"),
    Case("ATOMIC_AGGREGATE length 1", lambda: announce(atomic=encode_attribute(0x40, 6, b"\x01")), DISCARD,
         "attribute_errors"),
    Case("unknown route type 9", lambda: update([*common(), mp_reach(encode_nlri(UnknownRoute(9, b"\0" * 8)))]),
         IGNORE, "unknown_routes"),
    Case("type-5 prefix length 33", prefix_length_33, RESET, "session_resets", notification=(3, 9)),
    Case("MP_REACH next hop length 5", lambda: update([*common(), mp_reach(macip(), hop_len=5)]), RESET,
         "session_resets", notification=(3, 9)),
    Case("withdrawn routes length overruns", lambda: update(common(), withdrawn_len=500), RESET, "session_resets",
         notification=(3, 1)),
    Case("unrecognized well-known attribute", lambda: announce(odd=encode_attribute(0x40, 99, b"")), RESET,
         "session_resets", notification=(3, 2)),
    Case("message length below the header", short_header, RESET, "session_resets", notification=(1, 2)),
]


def row(n: Scripted) -> dict:
    [r] = peer_rows(n.speaker, n.now)  # what `overlayctl peers --json` shows
    return r


def in_rib(n: Scripted, m: bytes | None) -> bool:
    if m is None:
        return any(isinstance(p.route, ImetRoute) for p in n.speaker.rib.paths_from(PEER))
    return any(isinstance(p.route, MacIpRoute) and p.route.mac == m for p in n.speaker.rib.paths_from(PEER))


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_update_then_sentinel(case: Case):
    n = Scripted()
    n.connect()
    before = row(n)
    conn = n.conn
    n.received.clear()
    n.send(case.message())
    after = row(n)
    if case.action == RESET:
        assert n.peer.state is not State.ESTABLISHED and conn in n.closed
        [sent] = [m for m in n.received if isinstance(m, Notification)]
        assert (sent.code, sent.subcode) == case.notification
        n.connect()  # the peer comes back; the sentinel travels on the new session
    else:
        assert n.peer.state is State.ESTABLISHED and n.conn == conn, n.peer.last_error
        assert not any(isinstance(m, Notification) for m in n.received)
    n.send(n.announce(SENTINEL))
    assert n.fdb().get(SENTINEL) == PEER, "the sentinel route after the bad one was not installed"
    if case.action == DISCARD:  # the route stays, without the attribute
        assert n.fdb().get(BAD) == PEER and in_rib(n, BAD)
    else:
        assert not in_rib(n, case.bad_mac)
        if case.bad_mac is not None:
            assert case.bad_mac not in n.fdb()
        else:
            assert n.flood() == []
    moved = after[case.counter] - before[case.counter]
    assert moved >= 1, (case.counter, before, after)
    print(f"{case.name}: {case.action}, {case.counter} +{moved}, sentinel installed")


def test_withdrawal_of_a_route_by_a_later_bad_update_of_the_same_key():
    # treat-as-withdraw is a withdrawal: a good route replaced by a bad copy leaves the FDB
    n = Scripted()
    n.connect()
    n.send(announce(BAD))
    assert n.fdb().get(BAD) == PEER
    n.send(announce(BAD, next_hop="127.0.0.1"))
    assert BAD not in n.fdb() and not in_rib(n, BAD)
    n.send(n.announce(SENTINEL))
    assert n.fdb().get(SENTINEL) == PEER
