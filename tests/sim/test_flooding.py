"""Broadcast and unknown unicast: head-end replication to the flood list, once to each
member, nothing to anyone else, and every VNI on its own."""

from overlayd.fabric.fdb import Source
from overlayd.sim.mesh import Simulator
from overlayd.sim.frames import arp_request, ethernet, mac

H1, H2 = mac(1), mac(2)
VTEP = {name: f"10.0.0.{i + 1}" for i, name in enumerate("abcde")}


def topology() -> Simulator:
    """a, b, c, d flood VNI 100 to each other. e is on VNI 100 too, but on nobody's
    flood list (its own list is just a). VNI 200 joins a, b and e."""
    sim = Simulator(seed=7)

    def peers(me: str, members: str) -> list[str]:
        return [VTEP[m] for m in members if m != me]

    for n in "abcd":
        networks = [(100, peers(n, "abcd"))]
        if n in "ab":
            networks.append((200, peers(n, "abe")))
        sim.add_node(n, VTEP[n], networks)
    sim.add_node("e", VTEP["e"], [(100, [VTEP["a"]]), (200, peers("e", "abe"))])
    return sim


def test_broadcast_reaches_each_flood_list_member_once():
    sim = topology()
    request = arp_request(H1, "192.168.0.1", "192.168.0.99")
    sent = sim.send("a", 100, request)
    assert sent.flooded
    assert sent.vteps == (VTEP["b"], VTEP["c"], VTEP["d"])
    sim.run()
    for n in "bcd":
        assert sim.nodes[n].delivered == {100: [request]}
        c = sim.nodes[n].counters
        assert (c.rx_datagrams, c.rx_frames, c.tx_frames) == (1, 1, 0)
    assert sim.nodes["a"].delivered == {}
    assert sim.nodes["e"].delivered == {}, "e is not on a's flood list"
    assert sim.nodes["e"].counters.rx_datagrams == 0
    a = sim.nodes["a"].counters
    assert (a.tx_frames, a.tx_flood_frames, a.tx_datagrams, a.tx_unicast_frames) == (1, 1, 3, 0)
    assert a.tx_unknown_unicast_frames == 0
    assert sim.stats == {"datagrams_sent": 3, "datagrams_arrived": 3, "frames_delivered": 3}


def test_unknown_unicast_is_flooded_like_a_broadcast():
    sim = topology()
    frame = ethernet(H2, H1, 0x0800, b"hello")
    sent = sim.send("a", 100, frame)
    assert sent.flooded and sent.vteps == (VTEP["b"], VTEP["c"], VTEP["d"])
    sim.run()
    assert [n for n, node in sim.nodes.items() if node.delivered.get(100)] == ["b", "c", "d"]
    a = sim.nodes["a"].counters
    assert (a.tx_unknown_unicast_frames, a.tx_flood_frames, a.tx_datagrams) == (1, 1, 3)


def test_every_node_broadcasting_in_a_full_mesh():
    sim = Simulator(seed=1)
    nodes = sim.mesh(6)
    frames = {n.name: arp_request(mac(i + 1), f"192.168.0.{i + 1}", "192.168.0.200")
              for i, n in enumerate(nodes)}
    for n in nodes:
        sim.send(n, 100, frames[n.name])
    sim.run()
    for n in nodes:
        assert sorted(n.delivered[100]) == sorted(f for name, f in frames.items() if name != n.name)
        assert (n.counters.tx_flood_frames, n.counters.tx_datagrams) == (1, 5)
        assert n.counters.rx_frames == 5
    totals = sim.totals()
    assert totals["tx_datagrams"] == totals["rx_datagrams"] == 6 * 5


def test_vnis_are_isolated():
    sim = topology()
    on_200 = arp_request(H1, "192.168.2.1", "192.168.2.99")
    assert sim.send("a", 200, on_200).vteps == (VTEP["b"], VTEP["e"])
    sim.run()
    assert sim.nodes["b"].delivered == {200: [on_200]}
    assert sim.nodes["e"].delivered == {200: [on_200]}
    assert sim.nodes["c"].delivered == {} and sim.nodes["d"].delivered == {}
    # The same MAC on two VNIs is two different hosts: one behind a, one behind b.
    on_100 = arp_request(H1, "192.168.1.1", "192.168.1.99")
    sim.send("b", 100, on_100)
    sim.run()
    b, c, e = sim.nodes["b"], sim.nodes["c"], sim.nodes["e"]
    assert b.fdb(200, H1).vtep == VTEP["a"]
    assert b.fdb(100, H1).vtep is None  # local to b on VNI 100
    assert c.fdb(100, H1).vtep == VTEP["b"] and c.fdb(200, H1) is None
    assert e.fdb(200, H1).vtep == VTEP["a"] and e.fdb(100, H1) is None
    assert sim.nodes["a"].delivered == {100: [on_100]}


def test_datagrams_from_a_vtep_off_the_flood_list_are_dropped():
    sim = topology()
    sent = sim.send("e", 100, arp_request(H2, "192.168.0.2", "192.168.0.1"))
    assert sent.vteps == (VTEP["a"],)
    sim.run()
    a = sim.nodes["a"]
    assert a.counters.rx_drop_unknown_vtep == 1
    assert a.delivered == {} and a.fdb(100, H2) is None


def test_datagrams_for_a_vni_the_receiver_lacks_are_dropped():
    sim = Simulator(seed=1)
    a = sim.add_node("a", "10.0.0.1", [(100, ["10.0.0.2"]), (300, ["10.0.0.2"])])
    b = sim.add_node("b", "10.0.0.2", [(100, ["10.0.0.1"])])
    sim.send(a, 300, arp_request(H1, "192.168.0.1", "192.168.0.2"))
    sim.run()
    assert b.counters.rx_drop_unknown_vni == 1 and b.delivered == {}


def test_a_frame_from_our_own_tap_mac_is_a_loop():
    sim = topology()
    a = sim.nodes["a"]
    sim.send("b", 100, ethernet(b"\xff" * 6, a.tap_mac(100), 0x0800, b"looped"))
    sim.run()
    assert a.counters.rx_drop_own_mac == 1 and a.delivered == {}
    assert len(sim.nodes["c"].delivered[100]) == 1 and len(sim.nodes["d"].delivered[100]) == 1


def test_nothing_to_flood_to():
    sim = Simulator(seed=1)
    alone = sim.add_node("alone", "10.0.0.1", [(100, [])])
    sent = sim.send(alone, 100, arp_request(H1, "192.168.0.1", "192.168.0.2"))
    assert sent.vteps == () and not sent.flooded
    assert alone.counters.tx_drop_no_flood_list == 1
    assert sim.stats["datagrams_sent"] == 0


def test_a_network_added_after_its_flood_list_and_static_macs_uses_them():
    """The control plane (or a config reload) may name VTEPs for a VNI before the node has
    a segment for it; the segment must start with them, not with an empty flood list."""
    sim = Simulator(seed=1)
    a = sim.add_node("a", "10.0.0.1", [(100, ["10.0.0.2"])])
    b = sim.add_node("b", "10.0.0.2", [(100, ["10.0.0.1"])])
    x = sim.add_node("x", "10.0.0.9", [(300, ["10.0.0.1"])])
    a.switch.add_flood_vtep(300, b.vtep, Source.STATIC)
    a.switch.install_mac(300, H2, x.vtep, Source.STATIC, sim.now)
    a.switch.add_segment(300, "late", own_macs=[a.tap_mac(300)])
    b.switch.add_segment(300, "late")
    b.switch.add_flood_vtep(300, a.vtep, Source.STATIC)
    assert sim.send(a, 300, arp_request(H1, "192.168.3.1", "192.168.3.2")).vteps == (b.vtep,)
    sim.send(x, 300, ethernet(H1, H2, 0x0800, b"from x"))
    sim.run()
    assert len(b.delivered[300]) == 1
    assert a.delivered[300] == [ethernet(H1, H2, 0x0800, b"from x")], "x is vouched for by H2's entry"
    a.switch.withdraw_mac(300, H2, Source.STATIC)
    sim.send(x, 300, ethernet(H1, H2, 0x0800, b"from x"))
    sim.run()
    assert a.counters.rx_drop_unknown_vtep == 1
