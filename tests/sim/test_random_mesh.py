"""Big meshes under random traffic from a seed: whatever happens, every unicast frame
goes only to the node its destination lives behind, no node gets a frame twice,
and no frame leaves its VNI."""

from collections import Counter

import pytest

from overlayd.fabric.fdb import Source
from overlayd.sim.mesh import Simulator
from overlayd.sim.frames import arp_request, ethernet, mac

VNIS = (100, 200)


def populate(sim, nodes, count):
    """`count` hosts with IPs, alternating VNIs, each behind a node chosen by the seed."""
    hosts = []
    for i in range(count):
        vni, node, host = VNIS[i % 2], sim.rng.choice(nodes), mac(i + 1)
        ip = f"192.168.{vni % 256}.{i + 1}"
        node.attach(vni, host, ip)
        hosts.append((vni, host, ip, node))
    return hosts


def random_traffic(sim, hosts, frames, arp_share=0.1):
    """Random pairs on different nodes: mostly unicast data, some ARP requests."""
    for _ in range(frames):
        vni, src, src_ip, node = sim.rng.choice(hosts)
        peers = [h for h in hosts if h[0] == vni and h[3] is not node]
        _, dst, dst_ip, _ = sim.rng.choice(peers)
        if sim.rng.random() < arp_share:
            sim.send(node, vni, arp_request(src, src_ip, dst_ip))
        else:
            sim.send(node, vni, ethernet(dst, src, 0x0800, b"data"))
        sim.run(for_s=sim.rng.expovariate(200.0))
    sim.run()


def check_invariants(sim, lossless):
    copies = Counter((d.sent.id, d.node) for d in sim.deliveries)
    assert max(copies.values()) == 1, "a node got the same frame twice"
    for d in sim.deliveries:
        assert d.vni == d.sent.vni and d.node != d.sent.node
        if not d.sent.flooded:
            assert sim.where(d.vni, d.frame[0:6]).name == d.node, "unicast to the wrong node"
    if lossless:
        reached = {(d.sent.id, d.node) for d in sim.deliveries}
        for s in sim.sent:
            if s.flooded:
                assert all((s.id, sim.node(v).name) in reached for v in s.vteps)
            if s.frame[0] & 1 == 0:  # every unicast frame reached its destination's node
                assert (s.id, sim.where(s.vni, s.frame[0:6]).name) in reached


@pytest.mark.parametrize("seed, loss", [(1, 0.0), (2, 0.0), (3, 0.2)])
def test_twenty_nodes_fifty_hosts_random_traffic(seed, loss):
    sim = Simulator(seed, loss=loss, jitter_s=0.002)
    nodes = sim.mesh(20, vnis=VNIS)
    hosts = populate(sim, nodes, 50)
    random_traffic(sim, hosts, 2000)
    check_invariants(sim, lossless=loss == 0.0)
    totals = sim.totals()
    assert totals["tx_unicast_frames"] > totals["tx_flood_frames"], "learning made most traffic unicast"
    assert totals["rx_drop_unknown_vtep"] == totals["rx_drop_unknown_vni"] == 0


def test_fifty_nodes_converge_after_one_announcement_each():
    sim = Simulator(seed=50, jitter_s=0.005)
    nodes = sim.mesh(50, vnis=VNIS)
    hosts = populate(sim, nodes, 100)
    for vni, host, ip, node in hosts:  # a gratuitous ARP from every host
        sim.send(node, vni, arp_request(host, ip, ip))
    sim.run()
    assert sim.stats["frames_delivered"] == 100 * 49
    for n in nodes:
        for vni, host, _, home in hosts:
            entry = n.fdb(vni, host)
            expected = (None, Source.LOCAL) if home is n else (home.vtep, Source.DATA)
            assert (entry.vtep, entry.source) == expected
    before = sim.totals()
    random_traffic(sim, hosts, 1000, arp_share=0.0)
    after = sim.totals()
    assert after["tx_flood_frames"] == before["tx_flood_frames"]
    assert after["tx_unicast_frames"] - before["tx_unicast_frames"] == 1000
    check_invariants(sim, lossless=True)
