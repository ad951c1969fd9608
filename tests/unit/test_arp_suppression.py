"""The Switch's ARP/ND snooping, ARP suppression and `data_learning` switch,
and the daemon writing suppression replies back to the TAP.

Replies are checked by decoding them with the codecs, field by field.
"""

from __future__ import annotations

import ipaddress
import socket
from types import SimpleNamespace

import pytest

from overlayd.dataplane.counters import COUNTERS
from overlayd.dataplane.switch import Switch
from overlayd.dataplane.vlan import Trunk, tagged
from overlayd.dataplane.vlan import tag as vlan_tag
from overlayd.fabric.fdb import MacLearned, MacRemoved, Source
from overlayd.fabric.neighbors import NeighborLearned, NeighborMoved, NeighborRemoved
from overlayd.io.plainpath import PlainPath
from overlayd.wire.arp import OP_REPLY, OP_REQUEST, ArpPacket
from overlayd.wire.ethernet import (
    BROADCAST,
    ETHERTYPE_ARP,
    ETHERTYPE_IPV4,
    ETHERTYPE_IPV6,
    ZERO_MAC,
    EthernetHeader,
    payload,
)
from overlayd.wire.ndp import (
    TYPE_NEIGHBOR_ADVERTISEMENT,
    TYPE_NEIGHBOR_SOLICITATION,
    NeighborMessage,
)
from overlayd.wire.vxlan import encode_header

VNI = 100
REMOTE = "10.0.0.2"
OTHER = "10.0.0.3"
ASKER = bytes.fromhex("020000000001")  # a host on our TAP
HOST = bytes.fromhex("020000000002")  # a host behind REMOTE
NEARBY = bytes.fromhex("020000000003")  # another host on our TAP
IP_ASKER, IP_HOST, IP_NEARBY = (ipaddress.IPv4Address(f"192.168.0.{i}") for i in (1, 2, 3))
IP6_ASKER, IP6_HOST, IP6_NEARBY = (ipaddress.IPv6Address(f"2001:db8::{i}") for i in (1, 2, 3))
UNSPECIFIED6 = ipaddress.IPv6Address("::")


def eth(dst: bytes, src: bytes, ethertype: int, body: bytes) -> bytes:
    return EthernetHeader(dst, src, ethertype).encode() + body


def arp(op, smac, sip, tip, tmac=ZERO_MAC, dst=BROADCAST, src=None) -> bytes:
    packet = ArpPacket(op, smac, ipaddress.IPv4Address(sip), tmac, ipaddress.IPv4Address(tip))
    return eth(dst, smac if src is None else src, ETHERTYPE_ARP, packet.encode())


def solicited_node(ip: ipaddress.IPv6Address) -> tuple[ipaddress.IPv6Address, bytes]:
    group = ipaddress.IPv6Address("ff02::1:ff00:0") + (int(ip) & 0xFFFFFF)
    return group, b"\x33\x33" + group.packed[-4:]


def ns(smac, sip, target, *, sll=True, dst_mac=None, dst_ip=None) -> bytes:
    group, group_mac = solicited_node(target)
    msg = NeighborMessage(
        TYPE_NEIGHBOR_SOLICITATION, sip, dst_ip or group, target, source_lladdr=smac if sll else None
    )
    return eth(dst_mac or group_mac, smac, ETHERTYPE_IPV6, msg.encode())


def na(smac, target, *, tll=True, dst_ip=ipaddress.IPv6Address("ff02::1"), solicited=False) -> bytes:
    msg = NeighborMessage(
        TYPE_NEIGHBOR_ADVERTISEMENT, target, dst_ip, target, target_lladdr=smac if tll else None,
        solicited=solicited, override=True,
    )
    dst_mac = b"\x33\x33" + dst_ip.packed[-4:] if dst_ip.is_multicast else ASKER
    return eth(dst_mac, smac, ETHERTYPE_IPV6, msg.encode())


def make(*, suppression=True, snooping=False) -> Switch:
    """VNI 100 flooding to REMOTE and OTHER; HOST (192.168.0.2, 2001:db8::2) behind REMOTE via BGP."""
    s = Switch(vxlan_port=4789, aging_s=300)
    s.add_segment(VNI, "blue")
    s.add_flood_vtep(VNI, REMOTE, Source.STATIC)
    s.add_flood_vtep(VNI, OTHER, Source.STATIC)
    s.install_mac(VNI, HOST, REMOTE, Source.BGP, 0.0)
    s.install_neighbor(VNI, IP_HOST, HOST, Source.BGP, 0.0)
    s.install_neighbor(VNI, str(IP6_HOST), HOST, Source.BGP, 0.0)
    s.arp_suppression = suppression
    s.neighbor_snooping = snooping
    s.pop_events()
    return s


def tx(s: Switch) -> dict[str, int]:
    return {k: v for k, v in s.counters.as_dict().items() if v and k.startswith("tx_")}


# -- ARP ----------------------------------------------------------------------------------


def test_request_for_a_remote_binding_is_answered_on_the_tap_and_not_flooded():
    s = make()
    request = arp(OP_REQUEST, ASKER, IP_ASKER, IP_HOST)
    assert s.from_tap(VNI, memoryview(bytearray(request)), 1.0) is None
    [(vni, frame)] = s.pop_replies()
    assert vni == VNI and s.replies == []
    header = EthernetHeader.decode(frame)
    assert (header.dst, header.src, header.ethertype, header.vlan) == (ASKER, HOST, ETHERTYPE_ARP, None)
    reply = ArpPacket.decode(payload(frame))
    assert reply == ArpPacket(OP_REPLY, HOST, IP_HOST, ASKER, IP_ASKER)
    assert tx(s) == {"tx_frames": 1, "tx_bytes": len(request), "tx_arp_suppressed": 1}


def test_unicast_request_is_answered_too():
    s = make()
    request = arp(OP_REQUEST, ASKER, IP_ASKER, IP_HOST, dst=HOST)
    assert s.from_tap(VNI, request, 1.0) is None
    [(_, frame)] = s.pop_replies()
    assert ArpPacket.decode(payload(frame)).sender_mac == HOST
    assert s.counters.tx_arp_suppressed == 1 and s.counters.tx_unicast_frames == 0


def test_request_without_binding_is_flooded_and_counted():
    s = make()
    request = arp(OP_REQUEST, ASKER, IP_ASKER, "192.168.0.99")
    header, targets, _ = s.from_tap(VNI, request, 1.0)
    assert header == encode_header(VNI)
    assert [vtep for vtep, _ in targets] == [REMOTE, OTHER]
    assert s.replies == []
    assert tx(s) == {
        "tx_frames": 1, "tx_bytes": len(request), "tx_flood_frames": 1, "tx_datagrams": 2, "tx_arp_flooded": 1,
    }


@pytest.mark.parametrize(
    "setup, why",
    [
        (lambda s: s.install_mac(VNI, HOST, None, Source.STATIC, 0.0), "the MAC lives on this node"),
        (lambda s: s.withdraw_mac(VNI, HOST, Source.BGP), "no FDB entry for the bound MAC"),
        (lambda s: (
            s.install_mac(VNI, ASKER, OTHER, Source.STATIC, 0.0),  # even where the FDB says "remote"
            s.install_neighbor(VNI, IP_HOST, ASKER, Source.STATIC, 0.0),
        ), "bound to the asker itself"),
    ],
    ids=["local-mac", "no-fdb-entry", "the-asker"],
)
def test_bindings_that_cannot_answer_are_forwarded_as_usual(setup, why):
    s = make()
    setup(s)
    assert s.from_tap(VNI, arp(OP_REQUEST, ASKER, IP_ASKER, IP_HOST), 1.0) is not None, why
    assert s.replies == []
    assert (s.counters.tx_arp_suppressed, s.counters.tx_arp_flooded, s.counters.tx_flood_frames) == (0, 1, 1)


def test_a_request_for_a_host_on_this_node_is_not_answered_here():
    s = make(snooping=True)
    s.from_tap(VNI, arp(OP_REQUEST, NEARBY, IP_NEARBY, IP_ASKER), 1.0)  # NEARBY: local binding, local MAC
    assert s.neighbors.lookup(VNI, IP_NEARBY).source is Source.LOCAL
    assert s.from_tap(VNI, arp(OP_REQUEST, ASKER, IP_ASKER, IP_NEARBY), 2.0) is not None
    assert s.replies == [] and s.counters.tx_arp_suppressed == 0


def test_suppression_is_off_by_default():
    s = make(suppression=False)
    assert s.from_tap(VNI, arp(OP_REQUEST, ASKER, IP_ASKER, IP_HOST), 1.0) is not None
    assert s.replies == []
    assert s.counters.tx_arp_suppressed == s.counters.tx_arp_flooded == 0
    assert s.counters.tx_flood_frames == 1


@pytest.mark.parametrize(
    "frame",
    [
        arp(OP_REQUEST, ASKER, "0.0.0.0", IP_HOST),  # an address conflict probe (RFC 5227)
        arp(OP_REQUEST, HOST, IP_HOST, IP_HOST, src=ASKER),  # gratuitous, claiming HOST's address
        arp(OP_REPLY, ASKER, IP_ASKER, IP_HOST),
        arp(OP_REQUEST, ASKER, IP_ASKER, IP_HOST)[:30],  # truncated ARP: forwarded like any frame
        EthernetHeader(BROADCAST, ASKER, ETHERTYPE_ARP, vlan=7).encode()
        + ArpPacket(OP_REQUEST, ASKER, IP_ASKER, ZERO_MAC, IP_HOST).encode(),  # tagged: not looked into
    ],
    ids=["probe", "gratuitous", "reply", "truncated", "vlan-tagged"],
)
def test_probes_gratuitous_replies_and_odd_frames_are_never_answered_or_counted(frame):
    s = make()
    assert s.from_tap(VNI, frame, 1.0) is not None
    assert s.replies == []
    assert s.counters.tx_arp_suppressed == s.counters.tx_arp_flooded == 0


# -- IPv6 neighbour discovery -------------------------------------------------------------


def test_solicitation_for_a_remote_binding_gets_an_advertisement():
    s = make()
    frame = ns(ASKER, IP6_ASKER, IP6_HOST)
    assert s.from_tap(VNI, memoryview(bytearray(frame)), 1.0) is None
    [(vni, reply)] = s.pop_replies()
    header = EthernetHeader.decode(reply)
    assert (vni, header.dst, header.src, header.ethertype) == (VNI, ASKER, HOST, ETHERTYPE_IPV6)
    msg = NeighborMessage.decode(payload(reply))  # checks hop limit 255 and the checksum
    assert msg == NeighborMessage(
        TYPE_NEIGHBOR_ADVERTISEMENT, IP6_HOST, IP6_ASKER, IP6_HOST,
        target_lladdr=HOST, router=False, solicited=True, override=True, hop_limit=255,
    )
    assert tx(s) == {"tx_frames": 1, "tx_bytes": len(frame), "tx_arp_suppressed": 1}


def test_unicast_solicitation_without_option_is_answered_to_its_ethernet_source():
    s = make()
    s.from_tap(VNI, ns(ASKER, IP6_ASKER, IP6_HOST, sll=False, dst_mac=HOST, dst_ip=IP6_HOST), 1.0)
    [(_, reply)] = s.pop_replies()
    assert EthernetHeader.decode(reply).dst == ASKER
    assert NeighborMessage.decode(payload(reply)).dst == IP6_ASKER


def test_solicitation_without_binding_is_flooded_and_counted():
    s = make()
    _, targets, _ = s.from_tap(VNI, ns(ASKER, IP6_ASKER, ipaddress.IPv6Address("2001:db8::99")), 1.0)
    assert len(targets) == 2 and s.replies == []
    assert (s.counters.tx_arp_flooded, s.counters.tx_arp_suppressed, s.counters.tx_flood_frames) == (1, 0, 1)


@pytest.mark.parametrize(
    "frame",
    [
        ns(ASKER, UNSPECIFIED6, IP6_HOST, sll=False),  # duplicate address detection
        na(ASKER, IP6_ASKER),
        ns(ASKER, IP6_ASKER, IP6_HOST)[:-1],  # cut short: not a valid NS
        eth(BROADCAST, ASKER, ETHERTYPE_IPV6, bytes(40)),  # IPv6, but not ICMPv6
    ],
    ids=["dad", "advertisement", "truncated", "not-icmpv6"],
)
def test_dad_advertisements_and_other_ipv6_are_never_answered(frame):
    s = make()
    assert s.from_tap(VNI, frame, 1.0) is not None
    assert s.replies == []
    assert s.counters.tx_arp_suppressed == s.counters.tx_arp_flooded == 0


# -- snooping ---------------------------------------------------------------------------------


def local(s: Switch) -> set:
    return {(b.ip, b.mac) for b in s.neighbors if b.source is Source.LOCAL}


@pytest.mark.parametrize(
    "frame, learned",
    [
        (arp(OP_REQUEST, ASKER, IP_ASKER, IP_HOST), (IP_ASKER, ASKER)),
        (arp(OP_REPLY, ASKER, IP_ASKER, IP_NEARBY, tmac=NEARBY, dst=NEARBY), (IP_ASKER, ASKER)),
        (arp(OP_REQUEST, ASKER, IP_ASKER, IP_ASKER), (IP_ASKER, ASKER)),  # gratuitous request
        (arp(OP_REPLY, ASKER, IP_ASKER, IP_ASKER, tmac=BROADCAST), (IP_ASKER, ASKER)),  # gratuitous reply
        (ns(ASKER, IP6_ASKER, IP6_HOST), (IP6_ASKER, ASKER)),
        (ns(ASKER, IP6_ASKER, IP6_HOST, sll=False, dst_mac=HOST, dst_ip=IP6_HOST), (IP6_ASKER, ASKER)),
        (na(ASKER, IP6_ASKER), (IP6_ASKER, ASKER)),
        (na(ASKER, IP6_ASKER, tll=False, dst_ip=IP6_NEARBY, solicited=True), (IP6_ASKER, ASKER)),
    ],
    ids=["request", "reply", "gratuitous-request", "gratuitous-reply", "ns", "ns-unicast", "na", "na-no-option"],
)
def test_snooping_learns_local_bindings(frame, learned):
    s = make(snooping=True)
    s.from_tap(VNI, memoryview(bytearray(frame)), 1.0)
    assert local(s) == {learned}
    ip, mac = learned
    assert s.pop_events() == [
        MacLearned(VNI, ASKER, None, Source.LOCAL), NeighborLearned(VNI, ip, mac, Source.LOCAL),
    ]


@pytest.mark.parametrize(
    "frame",
    [
        arp(OP_REQUEST, ASKER, "0.0.0.0", IP_HOST),  # probe
        arp(OP_REQUEST, NEARBY, IP_NEARBY, IP_HOST, src=ASKER),  # claims another MAC than its own
        arp(OP_REQUEST, ASKER, "224.0.0.1", IP_HOST),
        arp(OP_REQUEST, ASKER, "255.255.255.255", IP_HOST),
        ns(ASKER, UNSPECIFIED6, IP6_HOST, sll=False),  # DAD
        eth(b"\x33\x33\xff\x00\x00\x02", ASKER, ETHERTYPE_IPV6, NeighborMessage(
            TYPE_NEIGHBOR_SOLICITATION, IP6_ASKER, solicited_node(IP6_HOST)[0], IP6_HOST, source_lladdr=NEARBY,
        ).encode()),  # option names another MAC than the frame's source
        na(NEARBY, IP6_NEARBY)[:6] + ASKER + na(NEARBY, IP6_NEARBY)[12:],  # the same for an NA
        eth(BROADCAST, ASKER, ETHERTYPE_IPV4, bytes(46)),
    ],
    ids=["probe", "foreign-sender", "multicast", "broadcast", "dad", "foreign-sll", "foreign-tll", "ipv4"],
)
def test_snooping_ignores(frame):
    s = make(snooping=True)
    s.from_tap(VNI, frame, 1.0)
    assert local(s) == set()


def test_snooping_is_off_by_default_and_events_stay_as_they_were():
    s = Switch(vxlan_port=4789, aging_s=300)
    s.add_segment(VNI, "blue")
    s.add_flood_vtep(VNI, REMOTE, Source.STATIC)
    s.pop_events()
    s.from_tap(VNI, arp(OP_REQUEST, ASKER, IP_ASKER, IP_HOST), 1.0)
    s.from_tap(VNI, ns(ASKER, IP6_ASKER, IP6_HOST), 1.0)
    assert len(s.neighbors) == 0
    assert s.pop_events() == [MacLearned(VNI, ASKER, None, Source.LOCAL)]
    assert (s.arp_suppression, s.neighbor_snooping, s.data_learning) == (False, False, True)


def test_snooped_binding_moves_refreshes_and_ages():
    s = make(snooping=True)
    s.from_tap(VNI, arp(OP_REQUEST, ASKER, IP_ASKER, IP_HOST), 0.0)
    s.from_tap(VNI, arp(OP_REQUEST, NEARBY, IP_ASKER, IP_ASKER), 100.0)  # the address moved hosts
    events = s.pop_events()
    assert NeighborMoved(VNI, IP_ASKER, ASKER, NEARBY, Source.LOCAL) in events
    s.from_tap(VNI, arp(OP_REPLY, NEARBY, IP_ASKER, IP_ASKER, tmac=BROADCAST), 250.0)
    assert s.expire(399.0) == [MacRemoved(VNI, ASKER, None, Source.LOCAL, aged=True)]
    assert s.neighbors.lookup(VNI, IP_ASKER).mac == NEARBY, "refreshed at 250 s"
    s.pop_events()
    gone = s.expire(550.0)
    assert gone == [MacRemoved(VNI, NEARBY, None, Source.LOCAL, aged=True)], "expire returns FDB changes only"
    assert s.pop_events() == gone + [NeighborRemoved(VNI, IP_ASKER, NEARBY, Source.LOCAL, aged=True)]
    assert s.neighbors.lookup(VNI, IP_HOST).source is Source.BGP, "control-plane bindings do not age"


def test_snooping_and_suppression_together():
    s = make(snooping=True)
    assert s.from_tap(VNI, arp(OP_REQUEST, ASKER, IP_ASKER, IP_HOST), 1.0) is None
    assert local(s) == {(IP_ASKER, ASKER)}
    assert len(s.pop_replies()) == 1
    # a local host claiming the remote host's address is learned, but does not change the answer
    s.from_tap(VNI, arp(OP_REQUEST, NEARBY, IP_HOST, IP_HOST), 2.0)
    assert s.neighbors.get(VNI, IP_HOST, Source.LOCAL).mac == NEARBY
    s.from_tap(VNI, arp(OP_REQUEST, ASKER, IP_ASKER, IP_HOST), 3.0)
    [(_, frame)] = s.pop_replies()
    assert ArpPacket.decode(payload(frame)).sender_mac == HOST


# -- the control plane's bindings ------------------------------------------------------------


def test_install_and_withdraw_neighbor_record_events():
    s = Switch(vxlan_port=4789, aging_s=300)
    s.add_segment(VNI, "blue")
    s.install_neighbor(VNI, "192.168.0.2", HOST, Source.BGP, 5.0)
    s.install_neighbor(VNI, IP_HOST, HOST, Source.BGP, 6.0)  # the same route again: nothing changed
    s.withdraw_neighbor(VNI, IP_HOST, ASKER, Source.BGP)  # names another MAC: ignored
    s.withdraw_neighbor(VNI, IP_HOST, HOST, Source.STATIC)  # another source: ignored
    s.withdraw_neighbor(VNI, "192.168.0.2", HOST, Source.BGP)
    assert s.pop_events() == [
        NeighborLearned(VNI, IP_HOST, HOST, Source.BGP),
        NeighborRemoved(VNI, IP_HOST, HOST, Source.BGP, aged=False),
    ]
    with pytest.raises(ValueError):
        s.install_neighbor(VNI, IP_HOST, HOST, Source.DATA, 0.0)


# -- data_learning -----------------------------------------------------------------------------


def test_without_data_learning_vxlan_frames_teach_the_fdb_nothing():
    s = make()
    s.data_learning = False
    inner = eth(ASKER, NEARBY, ETHERTYPE_IPV4, bytes(46))
    vni, frame = s.from_vxlan(REMOTE, encode_header(VNI) + inner, 1.0)
    assert (vni, bytes(frame)) == (VNI, inner)
    assert s.counters.rx_frames == 1
    assert s.fdb.get(VNI, NEARBY) is None
    assert not [e for e in s.fdb if e.source is Source.DATA]
    assert s.pop_events() == []
    s.from_tap(VNI, eth(NEARBY, ASKER, ETHERTYPE_IPV4, bytes(46)), 2.0)  # the TAP side still learns
    assert s.fdb.get(VNI, ASKER).source is Source.LOCAL
    s.data_learning = True
    s.from_vxlan(REMOTE, encode_header(VNI) + inner, 3.0)
    assert s.fdb.get(VNI, NEARBY).source is Source.DATA


def test_new_counters_are_described():
    for name in ("tx_arp_suppressed", "tx_arp_flooded"):
        assert COUNTERS[name]


# -- the daemon writes the replies back to the TAP they answer -------------------------------


class _Tx:
    def __init__(self):
        self.sent = []

    def sendmsg(self, parts, ancillary, flags, addr):
        self.sent.append((b"".join(bytes(p) for p in parts), addr))


def test_the_plain_path_writes_replies_to_the_tap_and_sends_the_rest():
    ours, tap = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # stands in for the TAP fd
    with ours, tap:
        tap.setblocking(False)
        path = PlainPath(make(), SimpleNamespace(tx=[_Tx()]), {}, {}, lambda: 1.0)
        request = arp(OP_REQUEST, ASKER, IP_ASKER, IP_HOST)
        unknown = arp(OP_REQUEST, ASKER, IP_ASKER, "192.168.0.99")
        for frame in (request, ns(ASKER, IP6_ASKER, IP6_HOST), unknown):
            ours.send(frame)
        path.tap_readable(VNI, tap.fileno())
        arp_reply, nd_reply = ours.recv(2048), ours.recv(2048)
        assert ArpPacket.decode(payload(arp_reply)) == ArpPacket(OP_REPLY, HOST, IP_HOST, ASKER, IP_ASKER)
        assert NeighborMessage.decode(payload(nd_reply)).target_lladdr == HOST
        assert path.switch.replies == []
        sent = path.sockets.tx[0].sent
        assert [addr for _, addr in sent] == [(REMOTE, 4789), (OTHER, 4789)]
        assert all(data == encode_header(VNI) + unknown for data, _ in sent)
        ours.setblocking(False)
        with pytest.raises(BlockingIOError):
            ours.recv(2048)


def test_on_a_vlan_trunk_the_reply_goes_back_in_the_requests_vlan():
    ours, tap = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    with ours, tap:
        tap.setblocking(False)
        path = PlainPath(make(), SimpleNamespace(tx=[_Tx()]), {}, {}, lambda: 1.0)
        trunk = Trunk({10: VNI})
        ours.send(tagged(arp(OP_REQUEST, ASKER, IP_ASKER, IP_HOST), vlan_tag(10, pcp=6)))
        path.tap_readable(0, tap.fileno(), trunk)  # the VNI comes from the tag
        reply = ours.recv(2048)
        assert reply[12:16] == vlan_tag(10)  # tagged as its VLAN (priority 0)
        untagged = reply[:12] + reply[16:]
        assert ArpPacket.decode(payload(untagged)) == ArpPacket(OP_REPLY, HOST, IP_HOST, ASKER, IP_ASKER)
        assert path.switch.counters.tx_arp_suppressed == 1 and path.sockets.tx[0].sent == []
