"""The simulator itself: its clock, its frames, its bookkeeping."""

import ipaddress

import pytest

from overlayd.fabric.fdb import Source
from overlayd.sim.mesh import Simulator
from overlayd.sim.frames import arp_reply, arp_request, ethernet, mac, parse_arp
from overlayd.wire.arp import OP_REPLY, OP_REQUEST
from overlayd.wire.ethernet import BROADCAST, ETHERTYPE_ARP, EthernetHeader


def test_frame_builders_use_the_wire_codecs():
    request = arp_request(mac(1), "10.1.0.1", "10.1.0.2")
    assert len(request) == 14 + 28
    assert EthernetHeader.decode(request) == EthernetHeader(BROADCAST, mac(1), ETHERTYPE_ARP)
    arp = parse_arp(request)
    assert (arp.op, arp.sender_mac, arp.target_ip) == (OP_REQUEST, mac(1), ipaddress.IPv4Address("10.1.0.2"))
    reply = parse_arp(arp_reply(mac(2), "10.1.0.2", mac(1), "10.1.0.1"))
    assert (reply.op, reply.sender_mac, reply.target_mac) == (OP_REPLY, mac(2), mac(1))
    assert parse_arp(ethernet(mac(2), mac(1), 0x0800, bytes(28))) is None
    assert parse_arp(ethernet(BROADCAST, mac(1), ETHERTYPE_ARP, b"short")) is None
    tagged = EthernetHeader(BROADCAST, mac(1), ETHERTYPE_ARP, vlan=7).encode() + request[14:]
    assert parse_arp(tagged) == arp
    assert mac(0x0102) == bytes.fromhex("020000000102")


def test_the_clock_only_moves_in_run():
    sim = Simulator(seed=1)
    a, b = sim.mesh(2, aging_s=1.0)
    sim.run()
    assert sim.now == 0.0
    sim.send(a, 100, arp_request(mac(1), "10.1.0.1", "10.1.0.2"))
    assert sim.in_flight() == 1 and b.delivered == {}
    sim.run()
    assert sim.now == 0.001 and sim.in_flight() == 0
    sim.run(for_s=0.5)
    assert sim.now == 0.501
    assert b.fdb(100, mac(1)) is not None and a.fdb(100, mac(1)) is not None
    sim.run(until=1.5)  # the tick at 1.0 ages what a learned at 0.0, not b's entry from 0.001
    assert a.fdb(100, mac(1)) is None and b.fdb(100, mac(1)) is not None
    sim.run(until=2.0)
    assert b.fdb(100, mac(1)) is None
    with pytest.raises(ValueError):
        sim.run(until=1.0)


def test_datagrams_nobody_owns_are_counted_unroutable():
    sim = Simulator(seed=1)
    a = sim.add_node("a", "10.0.0.1", [(100, ["10.0.0.2", "10.0.0.3", "10.9.9.9"])])
    sim.add_node("b", "10.0.0.2", [(100, ["10.0.0.1"])])
    sim.add_node("c", "10.0.0.3", [(100, ["10.0.0.1"])], vxlan_port=4790)
    sim.send(a, 100, arp_request(mac(1), "10.1.0.1", "10.1.0.2"))
    sim.run()
    assert sim.stats == {
        "datagrams_sent": 3, "datagrams_unroutable": 2, "datagrams_arrived": 1, "frames_delivered": 1,
    }


def test_only_the_host_with_the_asked_ip_answers():
    sim = Simulator(seed=1)
    a, b, c = sim.mesh(3)
    b.attach(100, mac(2), "10.1.0.2")
    b.attach(100, mac(3))  # no IP: never answers
    c.attach(100, mac(4), "10.1.0.4")
    sim.send(a, 100, arp_request(mac(1), "10.1.0.1", "10.1.0.4"))
    sim.run()
    answers = [(s.node, s.frame) for s in sim.sent[1:]]
    assert answers == [(c.name, arp_reply(mac(4), "10.1.0.4", mac(1), "10.1.0.1"))]
    assert sim.where(100, mac(4)) is c and sim.where(100, mac(9)) is None and sim.where(200, mac(4)) is None


def test_nodes_by_name_or_vtep_and_bad_settings():
    sim = Simulator(seed=1)
    a = sim.add_node("a", "10.0.0.1", [(100, [])])
    assert sim.node("a") is sim.node("10.0.0.1") is sim.node(a) is a
    with pytest.raises(ValueError):
        sim.add_node("a", "10.0.0.2")
    with pytest.raises(ValueError):
        sim.add_node("z", "10.0.0.1")
    b = sim.add_node("b", "10.0.0.2")
    with pytest.raises(TypeError):
        sim.set_link(a, b, lossy=1)
    sim.set_link(a, b, loss=0.5, both_ways=False)
    assert (sim.link(a, b).loss, sim.link(b, a).loss) == (0.5, 0.0)
    assert sim.default_link.loss == 0.0


def test_setup_is_what_the_daemon_does():
    sim = Simulator(seed=1)
    a = sim.add_node("a", "10.0.0.1", [(100, ["10.0.0.2"]), (200, [])], aging_s=42.0)
    assert a.switch.fdb.aging_s == 42.0 and a.switch.vxlan_port == 4789
    assert [s.vni for s in a.switch.segments()] == [100, 200]
    assert a.switch.segment(100).own_macs == {a.tap_mac(100)}
    assert a.switch.flood.sources(100, "10.0.0.2") == {Source.STATIC}
    assert a.switch.pop_events() == []


def test_calls_share_the_clock_with_datagrams():
    sim = Simulator(seed=1, delay_s=0.5)
    a, b = sim.mesh(2)
    seen = []
    sim.call_at(0.5, lambda: seen.append(("call", sim.now, len(b.delivered[100]))))
    sim.send(a, 100, arp_request(mac(1), "10.1.0.1", "10.1.0.2"))  # arrives at 0.5, sent after the call was made
    sim.call_at(0.25, lambda: seen.append(("early", sim.now)))
    sim.run()
    assert seen == [("early", 0.25), ("call", 0.5, 0)]  # same instant: in the order scheduled
    assert len(b.delivered[100]) == 1
    sim.call_at(3.0, lambda: seen.append(("late", sim.now)))
    sim.run()  # without `until`: only while datagrams are in flight
    assert seen[-1] == ("call", 0.5, 0)
    sim.run(until=3.0)
    assert seen[-1] == ("late", 3.0)
    with pytest.raises(ValueError):
        sim.call_at(1.0, lambda: None)
