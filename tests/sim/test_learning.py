"""Data-plane learning across a mesh: ARP then unicast, aging, a MAC that moves,
and static entries that forged traffic cannot move."""

from overlayd.fabric.fdb import MacMoved, MacRemoved, Source
from overlayd.sim.mesh import Simulator
from overlayd.sim.frames import arp_reply, arp_request, ethernet, mac

H1, H2, H3 = mac(1), mac(2), mac(3)
IP1, IP2, IP3 = "192.168.0.1", "192.168.0.2", "192.168.0.3"


def where(node, vni, host):
    entry = node.fdb(vni, host)
    return None if entry is None else (entry.vtep, entry.source)


def delta(node, before):
    after = node.counters.as_dict()
    return {k: after[k] - before[k] for k in after if after[k] != before[k]}


def ping(src, dst, payload=b"ping"):
    return ethernet(dst, src, 0x0800, payload)


def four(aging_s=300.0):
    """a b c d in a full mesh on VNI 100; host H1 behind a, H3 behind c (both answer ARP)."""
    sim = Simulator(seed=5)
    a, b, c, d = sim.mesh(4, aging_s=aging_s)
    a.attach(100, H1, IP1)
    c.attach(100, H3, IP3)
    return sim, a, b, c, d


def test_arp_exchange_then_unicast_to_the_one_right_vtep():
    sim, a, b, c, d = four()
    request = arp_request(H1, IP1, IP3)
    sim.send(a, 100, request)
    sim.run()
    # The request went everywhere; c's host answered, unicast, to a alone.
    assert b.delivered[100] == c.delivered[100] == d.delivered[100] == [request]
    assert a.delivered[100] == [arp_reply(H3, IP3, H1, IP1)]
    reply = sim.sent[-1]
    assert reply.node == c.name and reply.vteps == (a.vtep,) and not reply.flooded
    assert (c.counters.tx_unicast_frames, c.counters.tx_flood_frames) == (1, 0)

    assert where(a, 100, H1) == (None, Source.LOCAL)
    assert where(a, 100, H3) == (c.vtep, Source.DATA)
    assert where(c, 100, H3) == (None, Source.LOCAL)
    assert where(c, 100, H1) == (a.vtep, Source.DATA)
    for bystander in (b, d):
        assert where(bystander, 100, H1) == (a.vtep, Source.DATA)
        assert where(bystander, 100, H3) is None

    seen = {n.name: len(n.delivered[100]) for n in (a, b, c, d)}
    before = a.counters.as_dict()
    sent = sim.send(a, 100, ping(H1, H3))
    assert sent.vteps == (c.vtep,) and not sent.flooded
    assert delta(a, before) == {
        "tx_frames": 1, "tx_bytes": len(sent.frame), "tx_unicast_frames": 1, "tx_datagrams": 1,
    }
    before = c.counters.as_dict()
    assert sim.send(c, 100, ping(H3, H1, b"pong")).vteps == (a.vtep,)
    sim.run()
    assert c.delivered[100][-1] == ping(H1, H3)
    assert a.delivered[100][-1] == ping(H3, H1, b"pong")
    assert {n.name: len(n.delivered[100]) for n in (b, d)} == {b.name: seen[b.name], d.name: seen[d.name]}
    assert delta(c, before)["tx_unicast_frames"] == 1
    assert a.counters.tx_flood_frames == 1  # the ARP request, nothing since


def test_entries_age_out_and_unicast_floods_again():
    sim, a, b, c, d = four(aging_s=10.0)
    sim.send(a, 100, arp_request(H1, IP1, IP3))
    sim.run(for_s=9.0)
    assert where(a, 100, H3) == (c.vtep, Source.DATA)
    assert where(c, 100, H1) == (a.vtep, Source.DATA)
    for n in (a, b, c, d):
        n.switch.pop_events()
    sim.run(for_s=2.5)  # past 10 s without traffic
    for n in (a, b, c, d):
        assert len(n.switch.fdb) == 0, n
    aged = a.switch.pop_events()
    assert {(e.mac, e.vtep, e.source) for e in aged} == {(H1, None, Source.LOCAL), (H3, c.vtep, Source.DATA)}
    assert all(isinstance(e, MacRemoved) and e.aged for e in aged)

    sent = sim.send(a, 100, ping(H1, H3))
    assert sent.flooded and sent.vteps == (b.vtep, c.vtep, d.vtep)
    assert a.counters.tx_unknown_unicast_frames == 1
    sim.run()
    for n in (b, c, d):
        assert n.delivered[100][-1] == ping(H1, H3)


def test_traffic_keeps_entries_alive():
    sim, a, b, c, d = four(aging_s=10.0)
    sim.send(a, 100, arp_request(H1, IP1, IP3))
    for _ in range(10):
        sim.run(for_s=4.0)
        assert sim.send(a, 100, ping(H1, H3)).vteps == (c.vtep,)
        assert sim.send(c, 100, ping(H3, H1)).vteps == (a.vtep,)
    sim.run()
    assert sim.now > 40.0
    assert a.counters.tx_flood_frames == 1 and c.counters.tx_flood_frames == 0
    assert where(a, 100, H3) == (c.vtep, Source.DATA)
    # b heard from H1 only once, 40 s ago: gone.
    assert where(b, 100, H1) is None


def test_a_moved_mac_is_relearned_where_it_now_lives():
    sim, a, b, c, d = four()
    b.attach(100, H2, IP2)
    sim.send(a, 100, arp_request(H1, IP1, IP2))
    sim.run()
    assert where(a, 100, H2) == (b.vtep, Source.DATA)
    assert where(c, 100, H1) == (a.vtep, Source.DATA)
    a.switch.pop_events()

    b.detach(100, H2)
    c.attach(100, H2, IP2)  # the host (a VM, a pod) comes back up behind c
    sent = sim.send(c, 100, ping(H2, H1, b"i moved"))
    assert sent.vteps == (a.vtep,), "c knows H1 from a's earlier broadcast"
    sim.run()
    assert where(a, 100, H2) == (c.vtep, Source.DATA)
    assert a.switch.pop_events() == [MacMoved(100, H2, b.vtep, Source.DATA, c.vtep, Source.DATA)]
    assert sim.send(a, 100, ping(H1, H2)).vteps == (c.vtep,)

    # b still believes H2 is local until it hears H2 from c: a gratuitous ARP fixes that.
    assert where(b, 100, H2) == (None, Source.LOCAL)
    sim.send(c, 100, arp_request(H2, IP2, IP2))
    sim.run()
    assert where(b, 100, H2) == (c.vtep, Source.DATA)
    assert where(d, 100, H2) == (c.vtep, Source.DATA)
    assert sim.sent[-1].frame == arp_request(H2, IP2, IP2), "nobody answers a gratuitous ARP"


def test_static_entries_are_not_moved_by_forged_frames():
    sim, a, b, c, d = four()
    a.switch.install_mac(100, H2, b.vtep, Source.STATIC, sim.now)
    a.switch.pop_events()
    # d forges H2 as a source, broadcast and unicast.
    sim.send(d, 100, arp_request(H2, IP2, IP1))
    sim.send(d, 100, ping(H2, H1, b"forged"))
    sim.run()
    assert a.counters.rx_frames >= 2, "the frames themselves are delivered"
    assert where(a, 100, H2) == (b.vtep, Source.STATIC)
    assert [e for e in a.switch.pop_events() if e.mac == H2] == []
    assert where(c, 100, H2) == (d.vtep, Source.DATA), "c has no static entry"
    # Not even a host claiming H2 on a's own TAP moves it.
    sim.send(a, 100, ping(H2, H3))
    assert where(a, 100, H2) == (b.vtep, Source.STATIC)
    assert sim.send(a, 100, ping(H1, H2)).vteps == (b.vtep,)


def test_a_static_entry_vouches_for_a_vtep_off_the_flood_list():
    sim = Simulator(seed=2)
    a = sim.add_node("a", "10.0.0.1", [(100, ["10.0.0.2"])])
    sim.add_node("b", "10.0.0.2", [(100, ["10.0.0.1"])])
    x = sim.add_node("x", "10.0.0.9", [(100, ["10.0.0.1"])])
    frame = ping(H3, H1)
    sim.send(x, 100, frame)
    sim.run()
    assert a.counters.rx_drop_unknown_vtep == 1 and a.delivered == {}

    a.switch.install_mac(100, H3, x.vtep, Source.STATIC, sim.now)
    sim.send(x, 100, frame)
    sim.run()
    assert a.delivered[100] == [frame]
    assert sim.send(a, 100, ping(H1, H3)).vteps == (x.vtep,)

    a.switch.withdraw_mac(100, H3, Source.STATIC)
    sim.send(x, 100, frame)
    sim.run()
    assert a.counters.rx_drop_unknown_vtep == 2 and a.delivered[100] == [frame]
