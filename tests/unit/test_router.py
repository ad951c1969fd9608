"""The routed VNI's data plane: packets to the node owning their subnet, and back, counted."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.dataplane.counters import COUNTERS, Counters
from overlayd.dataplane.router import Router, ip_flow_hash
from overlayd.dataplane.switch import Switch
from overlayd.fabric.fdb import Source
from overlayd.fabric.prefixes import PrefixEntry, PrefixTable
from overlayd.wire.arp import OP_REPLY, OP_REQUEST, ArpPacket
from overlayd.wire.ethernet import (
    BROADCAST,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    EthernetHeader,
)
from overlayd.wire.ndp import (
    TYPE_NEIGHBOR_SOLICITATION,
    UNSPECIFIED,
    NeighborMessage,
)
from overlayd.wire.vxlan import VxlanHeader, encode_header

PORT = 4789
VNI = 1
B, C, D, E = "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5"  # remote VTEPs (E: a lost duplicate)
STRANGER = "192.0.2.99"
OURS = bytes.fromhex("02aa00000001")  # our router MAC
MAC_B, MAC_C = bytes.fromhex("02bb00000001"), bytes.fromhex("02cc00000001")
DEV = bytes.fromhex("02dd00000001")  # the tap routing device's own MAC
POD = bytes.fromhex("02ee00000001")  # some other MAC on the device's link
NETWORK, NETWORK6 = ipaddress.ip_network("10.244.0.0/16"), ipaddress.ip_network("fd00:244::/48")
LOCAL, LOCAL6 = ipaddress.ip_network("10.244.1.0/24"), ipaddress.ip_network("fd00:244:0:1::/64")

ROUTE_TX = (
    "tx_routed_packets", "tx_route_drop_runt", "tx_route_drop_not_ip", "tx_route_drop_bad_version",
    "tx_route_drop_not_router_mac", "tx_route_drop_no_route", "tx_route_drop_local",
    "tx_route_drop_no_router_mac", "tx_route_arp_answered", "tx_route_arp_ignored",
)
ROUTE_RX = (
    "rx_routed_packets", "rx_route_drop_unknown_vtep", "rx_route_drop_runt", "rx_route_drop_not_router_mac",
    "rx_route_drop_not_ip", "rx_route_drop_bad_version", "rx_route_drop_not_local",
)


def entry(prefix: str, vtep: str | None, mac: bytes | None, vni: int = VNI, node: str | None = None,
          source: Source | None = None) -> PrefixEntry:
    source = source or (Source.LOCAL if vtep is None else Source.BGP)
    return PrefixEntry(ipaddress.ip_network(prefix), vtep, mac, vni, node or vtep or "192.0.2.1",
                       "local" if vtep is None else "rr", source)


def make_table() -> PrefixTable:
    """Ours: 10.244.1/24 and fd00:244:0:1::/64. B: 10.244.2/24 and :2::/64; C: 10.244.3/24 on VNI 7;
    D: 10.244.4/24 without a router MAC; E: announces B's 10.244.2/24 too but loses it."""
    t = PrefixTable()
    for e in (
        entry(str(LOCAL), None, None), entry(str(LOCAL6), None, None),
        entry("10.244.2.0/24", B, MAC_B), entry("fd00:244:0:2::/64", B, MAC_B),
        entry("10.244.3.0/24", C, MAC_C, vni=7), entry("10.244.4.0/24", D, None),
        entry("10.244.2.0/24", E, MAC_C),
    ):
        t.install(e, now=0)
    return t


def make_router(mode: str = "tun", table: PrefixTable | None = None, **kw) -> Router:
    return Router(VNI, OURS, mode, table if table is not None else make_table(), PORT, (LOCAL, LOCAL6),
                  DEV if mode == "tap" else None, networks=kw.pop("networks", (NETWORK, NETWORK6)), **kw)


def ipv4(src: str, dst: str, proto: int = 17, sport: int = 1000, dport: int = 2000, ttl: int = 64,
         body: bytes = b"overlayd", flags_frag: int = 0, ident: int = 1) -> bytes:
    l4 = struct.pack("!HH", sport, dport) + body
    header = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(l4), ident, flags_frag, ttl, proto, 0,
                         ipaddress.IPv4Address(src).packed, ipaddress.IPv4Address(dst).packed)
    return header + l4


def ipv6(src: str, dst: str, proto: int = 6, sport: int = 1000, dport: int = 2000, hops: int = 64,
         body: bytes = b"overlayd") -> bytes:
    l4 = struct.pack("!HH", sport, dport) + body
    return struct.pack("!IHBB16s16s", 6 << 28, len(l4), proto, hops, ipaddress.IPv6Address(src).packed,
                       ipaddress.IPv6Address(dst).packed) + l4


def eth(dst: bytes, src: bytes, ethertype: int, body: bytes) -> bytes:
    return EthernetHeader(dst, src, ethertype).encode() + body


def routed(vni: int, dst_mac: bytes, src_mac: bytes, ethertype: int, packet: bytes) -> bytes:
    """A datagram as a remote VTEP sends it on the L3 VNI."""
    return encode_header(vni) + eth(dst_mac, src_mac, ethertype, packet)


def outcomes(counters: Counters, names=ROUTE_TX + ROUTE_RX) -> dict[str, int]:
    d = counters.as_dict()
    return {k: d[k] for k in names if d[k]}


def arp_request(sender_ip: str, target_ip: str, sender_mac: bytes = POD, op: int = OP_REQUEST,
                dst: bytes = BROADCAST) -> bytes:
    packet = ArpPacket(op, sender_mac, ipaddress.IPv4Address(sender_ip), bytes(6),
                       ipaddress.IPv4Address(target_ip))
    return eth(dst, sender_mac, ETHERTYPE_ARP, packet.encode())


def solicited_node(target: str) -> ipaddress.IPv6Address:
    return ipaddress.IPv6Address(b"\xff\x02" + bytes(9) + b"\x01\xff" + ipaddress.IPv6Address(target).packed[13:])


def neighbor_solicitation(src: str, target: str, mac: bytes = POD, dst_mac: bytes | None = None,
                          unicast: bool = False) -> bytes:
    src_ip = ipaddress.IPv6Address(src)
    dst_ip = ipaddress.IPv6Address(target) if unicast else solicited_node(target)
    msg = NeighborMessage(TYPE_NEIGHBOR_SOLICITATION, src_ip, dst_ip, ipaddress.IPv6Address(target),
                          source_lladdr=None if src_ip == UNSPECIFIED else mac)
    dst_mac = dst_mac or b"\x33\x33" + dst_ip.packed[12:]
    return eth(dst_mac, mac, ETHERTYPE_IPV6, msg.encode())


# -- tun: out of the device ------------------------------------------------------------------


def test_tun_ipv4_to_a_remote_subnet_goes_to_its_vtep_with_the_symmetric_irb_header():
    r = make_router()
    header, dests, flow = r.from_device(ipv4("10.244.1.5", "10.244.2.9"), now=1)
    assert VxlanHeader.decode(header[:8]).vni == VNI
    assert EthernetHeader.decode(header[8:]) == EthernetHeader(MAC_B, OURS, ETHERTYPE_IPV4)
    assert len(header) == 22 and dests == ((B, PORT),)
    assert r.payload_offset == 0
    assert outcomes(r.counters) == {"tx_routed_packets": 1}
    assert r.counters.tx_routed_bytes == len(ipv4("10.244.1.5", "10.244.2.9"))
    assert flow == ip_flow_hash(ipv4("10.244.1.5", "10.244.2.9"), 4)


def test_tun_ipv6_to_a_remote_subnet_goes_to_its_vtep():
    r = make_router()
    header, dests, _ = r.from_device(ipv6("fd00:244:0:1::5", "fd00:244:0:2::9"), now=1)
    assert VxlanHeader.decode(header).vni == VNI
    assert EthernetHeader.decode(header[8:]) == EthernetHeader(MAC_B, OURS, ETHERTYPE_IPV6)
    assert dests == ((B, PORT),)
    assert outcomes(r.counters) == {"tx_routed_packets": 1}


def test_the_header_carries_the_vni_of_the_route():
    header, dests, _ = make_router().from_device(ipv4("10.244.1.5", "10.244.3.1"), now=1)
    assert VxlanHeader.decode(header).vni == 7
    assert EthernetHeader.decode(header[8:]).dst == MAC_C and dests == ((C, PORT),)


def test_headers_are_built_once_per_next_hop_and_follow_the_table():
    table = make_table()
    r = make_router(table=table)
    first = r.from_device(ipv4("10.244.1.5", "10.244.2.9"), now=1)
    again = r.from_device(memoryview(bytearray(ipv4("10.244.1.6", "10.244.2.10", sport=7))), now=2)
    assert first[0] is again[0] and first[1] is again[1]  # cached, not rebuilt per packet
    new_mac = bytes.fromhex("02bb000000ff")
    table.install(entry("10.244.2.0/24", B, new_mac), now=3)  # B's router MAC changed
    header, _, _ = r.from_device(ipv4("10.244.1.5", "10.244.2.9"), now=4)
    assert EthernetHeader.decode(header[8:]).dst == new_mac
    table.remove("10.244.2.0/24", Source.BGP, B)  # withdrawn: E's duplicate takes over
    header, dests, _ = r.from_device(ipv4("10.244.1.5", "10.244.2.9"), now=5)
    assert dests == ((E, PORT),) and EthernetHeader.decode(header[8:]).dst == MAC_C


def test_flow_hash_is_stable_per_flow_and_differs_between_flows():
    r = make_router()

    def flow(packet) -> int:
        return r.from_device(packet, now=1)[2]

    base = flow(ipv4("10.244.1.5", "10.244.2.9"))
    assert flow(ipv4("10.244.1.5", "10.244.2.9", ttl=3, ident=99, body=b"other payload")) == base
    assert flow(memoryview(ipv4("10.244.1.5", "10.244.2.9"))) == base
    assert flow(ipv4("10.244.1.5", "10.244.2.9", sport=1001)) != base
    assert flow(ipv4("10.244.1.6", "10.244.2.9")) != base
    assert flow(ipv4("10.244.1.5", "10.244.2.9", proto=6)) != base
    # Fragments carry no ports past the first: every fragment of a datagram hashes alike.
    frag = flow(ipv4("10.244.1.5", "10.244.2.9", flags_frag=0x2000))
    assert flow(ipv4("10.244.1.5", "10.244.2.9", flags_frag=0x2000, sport=5)) == frag
    # Options: the ports follow them.
    def with_options(packet: bytes) -> bytes:
        return bytes([0x46]) + packet[1:20] + b"\x01\x01\x01\x00" + packet[20:]
    opt = flow(with_options(ipv4("10.244.1.5", "10.244.2.9")))
    assert flow(with_options(ipv4("10.244.1.5", "10.244.2.9", body=b"x"))) == opt
    assert flow(with_options(ipv4("10.244.1.5", "10.244.2.9", sport=5))) != opt
    b6 = flow(ipv6("fd00:244:0:1::5", "fd00:244:0:2::9"))
    assert flow(ipv6("fd00:244:0:1::5", "fd00:244:0:2::9", hops=2, body=b"x")) == b6
    assert flow(ipv6("fd00:244:0:1::5", "fd00:244:0:2::9", dport=1)) != b6
    assert 0 <= base < 2**32


@pytest.mark.parametrize(
    "packet, counter",
    [
        (ipv4("10.244.1.5", "10.9.0.1"), "tx_route_drop_no_route"),  # outside every subnet
        (ipv4("10.244.1.5", "10.244.1.7"), "tx_route_drop_local"),  # our own subnet
        (ipv6("fd00:244:0:1::5", "fd00:244:0:1::7"), "tx_route_drop_local"),
        (ipv6("fd00:244:0:1::5", "fd00:244:0:9::7"), "tx_route_drop_no_route"),
        (ipv4("10.244.1.5", "10.244.4.1"), "tx_route_drop_no_router_mac"),
        (ipv4("10.244.1.5", "10.244.2.9")[:19], "tx_route_drop_runt"),
        (ipv6("fd00:244:0:1::5", "fd00:244:0:2::9")[:39], "tx_route_drop_runt"),
        (b"", "tx_route_drop_runt"),
        (b"\x50" + bytes(40), "tx_route_drop_not_ip"),
    ],
)
def test_tun_drops_are_counted(packet, counter):
    r = make_router()
    assert r.from_device(packet, now=1) is None
    assert outcomes(r.counters) == {counter: 1}
    assert r.replies == []


def test_ttl_and_hop_limit_are_left_to_the_kernels():
    """The packet crosses unchanged: the egress header is sent in front of the input, untouched."""
    r = make_router()
    packet = bytearray(ipv4("10.244.1.5", "10.244.2.9", ttl=1))
    r.from_device(packet, now=1)
    assert packet == ipv4("10.244.1.5", "10.244.2.9", ttl=1)
    back = make_router().from_vxlan(B, routed(VNI, OURS, MAC_B, ETHERTYPE_IPV4,
                                              ipv4("10.244.2.9", "10.244.1.5", ttl=1)), now=1)
    assert back[8] == 1


# -- tap: out of the device ----------------------------------------------------------------


def test_tap_answers_arp_for_a_cluster_address_with_the_router_mac():
    r = make_router("tap")
    assert r.from_device(arp_request("10.244.1.0", "10.244.2.9"), now=1) is None
    [(vni, reply)] = r.pop_replies()
    assert vni == VNI and r.replies == []
    assert EthernetHeader.decode(reply) == EthernetHeader(POD, OURS, ETHERTYPE_ARP)
    answer = ArpPacket.decode(reply[14:])
    assert answer.op == OP_REPLY and answer.sender_mac == OURS
    assert answer.sender_ip == ipaddress.IPv4Address("10.244.2.9")
    assert answer.target_mac == POD and answer.target_ip == ipaddress.IPv4Address("10.244.1.0")
    assert outcomes(r.counters) == {"tx_route_arp_answered": 1}


def test_tap_answers_arp_for_addresses_without_a_route_too():
    """The neighbour entry stays valid; the packets then count as tx_route_drop_no_route."""
    r = make_router("tap")
    r.from_device(arp_request("10.244.1.0", "10.244.77.1"), now=1)
    assert len(r.pop_replies()) == 1


@pytest.mark.parametrize(
    "frame",
    [
        arp_request("10.244.1.0", "10.244.1.7"),  # our own subnet: on the pod bridge, not here
        arp_request("10.244.1.0", "192.168.1.1"),  # outside the cluster network
        arp_request("0.0.0.0", "10.244.2.9"),  # a probe
        arp_request("10.244.2.9", "10.244.2.9"),  # gratuitous
        arp_request("10.244.1.0", "10.244.2.9", op=OP_REPLY),
        arp_request("10.244.1.0", "10.244.2.9")[:30],  # truncated
        neighbor_solicitation("fd00:244:0:1::", "fd00:244:0:1::7"),  # own subnet
        neighbor_solicitation("::", "fd00:244:0:2::9"),  # DAD
        neighbor_solicitation("fe80::1", "fe80::2"),  # link-local: not ours to answer
    ],
)
def test_tap_does_not_answer_for_its_own_subnet_or_foreign_addresses(frame):
    r = make_router("tap")
    assert r.from_device(frame, now=1) is None
    assert r.replies == []
    assert outcomes(r.counters) == {"tx_route_arp_ignored": 1}


def test_tap_answers_for_any_non_local_unicast_address_without_networks_and_for_gateways():
    r = make_router("tap", networks=(), gateways=("10.244.1.1",))
    for target in ("192.168.1.1", "10.244.1.1"):  # no network given; a gateway even in our subnet
        r.from_device(arp_request("10.244.1.0", target), now=1)
    r.from_device(arp_request("10.244.1.0", "10.244.1.7"), now=1)
    r.from_device(arp_request("10.244.1.0", "224.0.0.1"), now=1)
    assert [ArpPacket.decode(f[14:]).sender_ip for _, f in r.pop_replies()] == [
        ipaddress.IPv4Address("192.168.1.1"), ipaddress.IPv4Address("10.244.1.1")]
    assert outcomes(r.counters) == {"tx_route_arp_answered": 2, "tx_route_arp_ignored": 2}


@pytest.mark.parametrize("unicast", [False, True])
def test_tap_answers_neighbor_solicitations_with_the_router_mac(unicast):
    """Multicast resolution, and unicast reachability probes sent to the router MAC."""
    r = make_router("tap")
    ns = neighbor_solicitation("fd00:244:0:1::", "fd00:244:0:2::9", dst_mac=OURS if unicast else None,
                               unicast=unicast)
    assert r.from_device(ns, now=1) is None
    [(vni, reply)] = r.pop_replies()
    assert EthernetHeader.decode(reply) == EthernetHeader(POD, OURS, ETHERTYPE_IPV6)
    na = NeighborMessage.decode(reply[14:])
    assert na.is_advertisement and na.solicited and na.override
    assert na.target == ipaddress.IPv6Address("fd00:244:0:2::9") and na.target_lladdr == OURS
    assert na.dst == ipaddress.IPv6Address("fd00:244:0:1::")
    assert outcomes(r.counters) == {"tx_route_arp_answered": 1}


def test_tap_routes_frames_sent_to_the_router_mac_like_tun_packets():
    tap, tun = make_router("tap"), make_router("tun")
    for packet, ethertype in ((ipv4("10.244.1.5", "10.244.2.9"), ETHERTYPE_IPV4),
                              (ipv6("fd00:244:0:1::5", "fd00:244:0:2::9"), ETHERTYPE_IPV6)):
        frame = eth(OURS, POD, ethertype, packet)
        got = tap.from_device(frame, now=1)
        assert got == tun.from_device(packet, now=1)
        assert frame[tap.payload_offset:] == packet  # what the caller sends after the header
    assert tap.payload_offset == 14
    assert outcomes(tap.counters) == {"tx_routed_packets": 2}
    assert tap.counters.tx_routed_bytes == tun.counters.tx_routed_bytes


@pytest.mark.parametrize(
    "frame, counter",
    [
        (eth(POD, DEV, ETHERTYPE_IPV4, ipv4("10.244.1.5", "10.244.2.9")), "tx_route_drop_not_router_mac"),
        (eth(BROADCAST, DEV, ETHERTYPE_IPV4, ipv4("10.244.1.5", "10.244.2.9")), "tx_route_drop_not_router_mac"),
        (eth(OURS, DEV, 0x88B5, b"overlayd" * 4), "tx_route_drop_not_ip"),
        (eth(OURS, DEV, ETHERTYPE_IPV4, ipv6("fd00:244:0:1::5", "fd00:244:0:2::9")), "tx_route_drop_bad_version"),
        (eth(OURS, DEV, ETHERTYPE_IPV6, ipv4("10.244.1.5", "10.244.2.9") * 2), "tx_route_drop_bad_version"),
        (eth(OURS, DEV, ETHERTYPE_IPV4, bytes(19)), "tx_route_drop_runt"),
        (eth(OURS, DEV, ETHERTYPE_IPV6, bytes(39)), "tx_route_drop_runt"),
        (OURS + DEV, "tx_route_drop_runt"),
        (eth(OURS, DEV, ETHERTYPE_IPV4, ipv4("10.244.1.5", "10.244.1.9")), "tx_route_drop_local"),
    ],
)
def test_tap_drops_are_counted(frame, counter):
    r = make_router("tap")
    assert r.from_device(frame, now=1) is None
    assert outcomes(r.counters) == {counter: 1}


# -- into the device ---------------------------------------------------------------------


def test_tun_receives_the_ip_packet_as_a_slice_of_the_datagram():
    r = make_router()
    packet = ipv4("10.244.2.9", "10.244.1.5")
    buf = bytearray(routed(VNI, OURS, MAC_B, ETHERTYPE_IPV4, packet))
    got = r.from_vxlan(B, memoryview(buf), now=1)
    assert type(got) is memoryview and got.obj is buf and got == packet  # no copy
    assert bytes(buf) == routed(VNI, OURS, MAC_B, ETHERTYPE_IPV4, packet)  # untouched
    packet6 = ipv6("fd00:244:0:2::9", "fd00:244:0:1::5")
    assert r.from_vxlan(B, routed(VNI, OURS, MAC_B, ETHERTYPE_IPV6, packet6), now=1) == packet6
    assert outcomes(r.counters) == {"rx_routed_packets": 2}
    assert r.counters.rx_routed_bytes == len(packet) + len(packet6)


def test_a_lost_duplicate_announcer_is_still_a_vtep_we_accept():
    assert make_router().from_vxlan(E, routed(VNI, OURS, MAC_C, ETHERTYPE_IPV4,
                                              ipv4("10.244.2.9", "10.244.1.5")), now=1) is not None


@pytest.mark.parametrize("ethertype, packet", [
    (ETHERTYPE_IPV4, ipv4("10.244.2.9", "10.244.1.5")),
    (ETHERTYPE_IPV6, ipv6("fd00:244:0:2::9", "fd00:244:0:1::5")),
])
def test_tap_receives_a_frame_for_the_device_rewritten_in_place(ethertype, packet):
    r = make_router("tap")
    buf = bytearray(routed(VNI, OURS, MAC_B, ethertype, packet))
    got = r.from_vxlan(B, memoryview(buf), now=1)
    assert type(got) is memoryview and got.obj is buf  # the caller's buffer, no copy
    assert EthernetHeader.decode(got) == EthernetHeader(DEV, OURS, ethertype)
    assert got[14:] == packet
    # Read-only input (bytes): a new frame, the same bytes.
    data = routed(VNI, OURS, MAC_B, ethertype, packet)
    again = r.from_vxlan(B, data, now=2)
    assert type(again) is bytes and again == bytes(got)
    assert data == routed(VNI, OURS, MAC_B, ethertype, packet)
    assert outcomes(r.counters) == {"rx_routed_packets": 2}


@pytest.mark.parametrize(
    "vtep, data, counter",
    [
        (STRANGER, routed(VNI, OURS, MAC_B, ETHERTYPE_IPV4, ipv4("10.244.2.9", "10.244.1.5")),
         "rx_route_drop_unknown_vtep"),
        (B, routed(VNI, OURS, MAC_B, ETHERTYPE_IPV4, ipv4("10.244.2.9", "10.244.1.5"))[:41], "rx_route_drop_runt"),
        (B, routed(VNI, OURS, MAC_B, ETHERTYPE_IPV6, bytes(39)), "rx_route_drop_runt"),
        (B, encode_header(VNI), "rx_route_drop_runt"),
        (B, routed(VNI, MAC_C, MAC_B, ETHERTYPE_IPV4, ipv4("10.244.2.9", "10.244.1.5")),
         "rx_route_drop_not_router_mac"),
        (B, routed(VNI, BROADCAST, MAC_B, ETHERTYPE_ARP, bytes(28)), "rx_route_drop_not_router_mac"),
        (B, routed(VNI, OURS, MAC_B, ETHERTYPE_ARP, bytes(28)), "rx_route_drop_not_ip"),
        (B, routed(VNI, OURS, MAC_B, ETHERTYPE_IPV4, ipv6("fd00:244:0:2::9", "fd00:244:0:1::5")),
         "rx_route_drop_bad_version"),
        (B, routed(VNI, OURS, MAC_B, ETHERTYPE_IPV6, ipv4("10.244.2.9", "10.244.1.5") * 2),
         "rx_route_drop_bad_version"),
        (B, routed(VNI, OURS, MAC_B, ETHERTYPE_IPV4, ipv4("10.244.2.9", "10.244.3.5")), "rx_route_drop_not_local"),
        (B, routed(VNI, OURS, MAC_B, ETHERTYPE_IPV6, ipv6("fd00:244:0:2::9", "fd00:244:0:3::5")),
         "rx_route_drop_not_local"),
    ],
)
@pytest.mark.parametrize("mode", ["tun", "tap"])
def test_every_receive_drop_is_counted(mode, vtep, data, counter):
    r = make_router(mode)
    buf = bytearray(data)
    assert r.from_vxlan(vtep, memoryview(buf), now=1) is None
    assert outcomes(r.counters) == {counter: 1}
    assert buf == data  # a dropped datagram is not rewritten


def test_local_subnets_can_change():
    r = make_router("tap")
    r.set_local_subnets(["10.244.9.0/24"])  # `subnet: auto` moved us
    to_old = routed(VNI, OURS, MAC_B, ETHERTYPE_IPV4, ipv4("10.244.2.9", "10.244.1.5"))
    to_new = routed(VNI, OURS, MAC_B, ETHERTYPE_IPV4, ipv4("10.244.2.9", "10.244.9.5"))
    assert r.from_vxlan(B, to_old, now=1) is None and r.from_vxlan(B, to_new, now=1) is not None
    r.from_device(arp_request("10.244.9.0", "10.244.1.7"), now=1)  # no longer ours: answered
    r.from_device(arp_request("10.244.9.0", "10.244.9.7"), now=1)
    assert outcomes(r.counters) == {"rx_route_drop_not_local": 1, "rx_routed_packets": 1,
                                    "tx_route_arp_answered": 1, "tx_route_arp_ignored": 1}


def test_without_a_local_subnet_of_a_family_nothing_of_it_is_delivered():
    r = Router(VNI, OURS, "tun", make_table(), PORT, (LOCAL,))
    assert r.from_vxlan(B, routed(VNI, OURS, MAC_B, ETHERTYPE_IPV6,
                                  ipv6("fd00:244:0:2::9", "fd00:244:0:1::5")), now=1) is None
    assert outcomes(r.counters) == {"rx_route_drop_not_local": 1}


# -- construction and the switch -----------------------------------------------------------


@pytest.mark.parametrize("args", [
    dict(mode="tup"),
    dict(router_mac=BROADCAST),
    dict(router_mac=bytes(6)),
    dict(router_mac=b"\x02\x00"),
    dict(mode="tap", device_mac=None),
])
def test_bad_construction_is_refused(args):
    kw = dict(vni=VNI, router_mac=OURS, mode="tun", table=make_table(), vxlan_port=PORT,
              local_subnets=(LOCAL,), device_mac=None) | args
    with pytest.raises(ValueError):
        Router(**kw)


def test_from_device_dispatches_by_mode_when_called_through_the_class():
    packet = ipv4("10.244.1.5", "10.244.2.9")
    assert Router.from_device(make_router(), packet, 1) == make_router().from_device(packet, 1)
    frame = eth(OURS, POD, ETHERTYPE_IPV4, packet)
    assert Router.from_device(make_router("tap"), frame, 1) == make_router().from_device(packet, 1)


def make_switch_with_router(mode: str = "tun") -> tuple[Switch, Router]:
    sw = Switch(vxlan_port=PORT, aging_s=300)
    sw.add_segment(100, "blue")
    sw.add_flood_vtep(100, B, Source.STATIC)
    r = make_router(mode)
    sw.add_router(r)
    return sw, r


@pytest.mark.parametrize("mode", ["tun", "tap"])
def test_the_switch_hands_routed_vni_datagrams_to_the_router(mode):
    sw, r = make_switch_with_router(mode)
    assert sw.routers == {VNI: r} and r.counters is sw.counters
    packet = ipv4("10.244.2.9", "10.244.1.5")
    vni, payload = sw.from_vxlan(B, memoryview(bytearray(routed(VNI, OURS, MAC_B, ETHERTYPE_IPV4, packet))), now=1)
    assert vni == VNI
    assert payload == (packet if mode == "tun" else DEV + OURS + b"\x08\x00" + packet)
    assert sw.from_vxlan(STRANGER, routed(VNI, OURS, MAC_B, ETHERTYPE_IPV4, packet), now=1) is None
    bad = bytearray(routed(VNI, OURS, MAC_B, ETHERTYPE_IPV4, packet))
    bad[7] = 1  # reserved bits: the switch's own VXLAN checks come first
    assert sw.from_vxlan(B, bad, now=1) is None
    assert sw.from_vxlan(B, routed(300, OURS, MAC_B, ETHERTYPE_IPV4, packet), now=1) is None
    c = sw.counters
    assert (c.rx_datagrams, c.rx_routed_packets, c.rx_route_drop_unknown_vtep) == (4, 1, 1)
    assert (c.rx_drop_reserved_bits, c.rx_drop_unknown_vni, c.rx_frames) == (1, 1, 0)
    # The L2 segment is unaffected.
    vni, inner = sw.from_vxlan(B, encode_header(100) + eth(POD, MAC_B, 0x88B5, b"l2"), now=2)
    assert vni == 100 and c.rx_frames == 1


def test_a_vni_is_either_a_segment_or_routed():
    sw, r = make_switch_with_router()
    with pytest.raises(ValueError, match="router"):
        sw.add_router(make_router())
    with pytest.raises(ValueError, match="routed"):
        sw.add_segment(VNI, "red")
    with pytest.raises(ValueError, match="segment"):
        sw.add_router(Router(100, OURS, "tun", make_table(), PORT, (LOCAL,)))


def test_route_counters_are_documented():
    assert set(ROUTE_TX) | set(ROUTE_RX) | {"tx_routed_bytes", "rx_routed_bytes"} <= set(COUNTERS)
    assert all(COUNTERS[name] for name in COUNTERS)
    assert Counters().as_dict() == dict.fromkeys(COUNTERS, 0)


# -- fuzz: never raise, exactly one outcome per packet, frame or datagram -------------------------

addresses4 = st.sampled_from(["10.244.1.5", "10.244.2.9", "10.244.3.1", "10.244.4.1", "10.9.0.1", "0.0.0.0"])
addresses6 = st.sampled_from(["fd00:244:0:1::5", "fd00:244:0:2::9", "fe80::1", "::", "fd00:244:0:9::1"])
ip_packets = st.one_of(
    st.binary(max_size=80),
    st.builds(ipv4, addresses4, addresses4, st.sampled_from([1, 6, 17]), body=st.binary(max_size=8),
              flags_frag=st.sampled_from([0, 0x2000, 1])),
    st.builds(ipv6, addresses6, addresses6, st.sampled_from([6, 17, 58]), body=st.binary(max_size=8)),
    st.tuples(st.sampled_from([0x45, 0x60, 0x4F, 0x00]), st.binary(max_size=60)).map(lambda t: bytes([t[0]]) + t[1]),
)
macs = st.sampled_from([OURS, DEV, POD, MAC_B, BROADCAST, b"\x33\x33\x00\x00\x00\x01"])
ethertypes = st.sampled_from([ETHERTYPE_IPV4, ETHERTYPE_IPV6, ETHERTYPE_ARP, 0x88B5])
frames = st.one_of(
    st.binary(max_size=80),
    st.builds(eth, macs, macs, ethertypes, ip_packets),
    st.builds(arp_request, addresses4, addresses4, op=st.sampled_from([OP_REQUEST, OP_REPLY, 3])),
    st.builds(neighbor_solicitation, addresses6.filter(lambda a: a != "fe80::1"),
              st.sampled_from(["fd00:244:0:2::9", "fd00:244:0:1::3", "fe80::2"])),
    st.builds(neighbor_solicitation, addresses6, st.just("fd00:244:0:2::9")).map(
        lambda f: f[:60] + bytes([f[60] ^ 1]) + f[61:]),  # a broken checksum
)
datagrams = st.one_of(
    st.binary(max_size=90),
    st.builds(routed, st.just(VNI), macs, macs, ethertypes, ip_packets),
    st.tuples(st.binary(min_size=22, max_size=22), ip_packets).map(lambda t: t[0] + t[1]),
)


def exactly_one(before: dict[str, int], after: dict[str, int], names) -> str:
    bumped = {k: after[k] - before[k] for k in names if after[k] != before[k]}
    assert len(bumped) == 1 and set(bumped.values()) == {1}, bumped
    return next(iter(bumped))


@given(st.sampled_from(["tun", "tap"]), st.lists(st.one_of(ip_packets, frames), max_size=12),
       st.booleans())
@settings(max_examples=300, deadline=None)
def test_from_device_never_raises_and_counts_one_outcome(mode, batch, writable):
    r = make_router(mode)
    for data in batch:
        before = r.counters.as_dict()
        result = r.from_device(memoryview(bytearray(data)) if writable else data, now=1)
        after = r.counters.as_dict()
        outcome = exactly_one(before, after, ROUTE_TX)
        assert (result is not None) == (outcome == "tx_routed_packets")
        assert bool(r.replies) == (outcome == "tx_route_arp_answered")
        if result is not None:
            header, dests, flow = result
            assert len(header) == 22 and len(dests) == 1 and 0 <= flow < 2**32
            assert header[8:14] in (MAC_B, MAC_C) and header[14:20] == OURS
        r.replies.clear()
    assert {k for k, v in outcomes(r.counters).items() if v} <= set(ROUTE_TX)


@given(st.sampled_from(["tun", "tap"]), st.lists(st.tuples(st.sampled_from([B, C, E, STRANGER]), datagrams),
                                                 max_size=12), st.booleans())
@settings(max_examples=300, deadline=None)
def test_from_vxlan_never_raises_and_counts_one_outcome(mode, batch, writable):
    r = make_router(mode)
    for vtep, data in batch:
        before = r.counters.as_dict()
        result = r.from_vxlan(vtep, memoryview(bytearray(data)) if writable else data, now=1)
        after = r.counters.as_dict()
        outcome = exactly_one(before, after, ROUTE_RX)
        assert (result is not None) == (outcome == "rx_routed_packets")
        if result is not None:
            if mode == "tun":
                assert bytes(result) == data[22:]
            else:
                assert bytes(result) == DEV + OURS + data[20:]
    assert {k for k, v in outcomes(r.counters).items() if v} <= set(ROUTE_RX)


SWITCH_RX = ("rx_frames", "rx_drop_runt", "rx_drop_i_flag_clear", "rx_drop_reserved_bits",
             "rx_drop_unknown_vni", "rx_drop_unknown_vtep", "rx_drop_bad_src_mac", "rx_drop_own_mac")


@given(st.lists(st.tuples(st.sampled_from([B, STRANGER]), st.sampled_from([VNI, 100, 300, None]), datagrams),
                max_size=12))
@settings(max_examples=200, deadline=None)
def test_switch_from_vxlan_with_a_router_never_raises_and_counts_one_outcome(batch):
    sw, _ = make_switch_with_router("tap")
    for vtep, vni, data in batch:
        if vni is not None and len(data) >= 8:
            data = encode_header(vni) + data[8:]
        before = sw.counters.as_dict()
        got = sw.from_vxlan(vtep, data, now=1)
        after = sw.counters.as_dict()
        assert after["rx_datagrams"] == before["rx_datagrams"] + 1
        outcome = exactly_one(before, after, SWITCH_RX + ROUTE_RX)
        assert (got is not None) == (outcome in ("rx_frames", "rx_routed_packets"))
        assert got is None or got[0] == (VNI if outcome == "rx_routed_packets" else 100)

def test_the_next_hop_cache_starts_over_when_full(monkeypatch):
    monkeypatch.setattr("overlayd.dataplane.router._CACHE_MAX", 1)
    r = make_router()
    for dst, vtep in (("10.244.2.9", B), ("10.244.3.1", C), ("10.244.2.9", B)):
        assert r.from_device(ipv4("10.244.1.5", dst), now=1)[1] == ((vtep, PORT),)
    assert len(r._next_hops) == 1


def test_multicast_on_the_device_is_counted_apart_from_missing_routes():
    from overlayd.dataplane.router import Router
    from overlayd.fabric.prefixes import PrefixTable

    router = Router(1, b"\x02\x00\x0a\x00\x00\x01", "tun", PrefixTable(), 4789, ["10.244.1.0/24"])
    mld = bytes([0x60, 0, 0, 0, 0, 8, 0, 1]) + bytes.fromhex("fe80" + "00" * 13 + "01") \
        + bytes.fromhex("ff02" + "00" * 13 + "16") + bytes(8)
    v4_multicast = bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 1, 17, 0, 0, 10, 244, 1, 1, 224, 0, 0, 251]) + bytes(8)
    unrouted = bytes([0x45, 0, 0, 28, 0, 0, 0, 0, 64, 17, 0, 0, 10, 244, 1, 1, 10, 244, 9, 9]) + bytes(8)
    for packet in (mld, v4_multicast, unrouted):
        assert router.from_device(packet, 0.0) is None
    assert router.counters.tx_route_drop_multicast == 2
    assert router.counters.tx_route_drop_no_route == 1
