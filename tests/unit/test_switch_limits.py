"""A network's limits in the data plane: local MACs capped and rate-limited (frames still
forwarded), flooding rate-limited (known unicast untouched), in the Switch and in the fast path."""

from __future__ import annotations

import ipaddress
import socket
from types import SimpleNamespace

from overlayd.dataplane.switch import Switch
from overlayd.fabric.fdb import MacLearned, Source
from overlayd.io.fastpath import FastPath
from overlayd.io.offload import Offloads
from overlayd.sim.frames import ethernet
from overlayd.wire.arp import OP_REQUEST, ArpPacket
from overlayd.wire.ethernet import ETHERTYPE_ARP
from overlayd.wire.vxlan import encode_header

VNI = 100
A, B = "10.0.0.2", "10.0.0.3"
OWN = bytes.fromhex("020000000a01")
REMOTE = bytes.fromhex("020000000201")
BROADCAST = b"\xff" * 6


def src(i: int) -> bytes:
    return (0x020400000000 + i).to_bytes(6, "big")


def frame(dst: bytes, source: bytes, size: int = 60) -> bytes:
    return dst + source + b"\x08\x00" + b"\x45" + bytes(size - 15)


def switch(**limits) -> Switch:
    sw = Switch(4789, 300.0)
    sw.add_segment(VNI, "blue", own_macs=[OWN])
    sw.add_flood_vtep(VNI, A, Source.STATIC)
    sw.add_flood_vtep(VNI, B, Source.STATIC)
    sw.install_mac(VNI, REMOTE, A, Source.STATIC, 0.0)
    args = {"max_local_macs": 8192, "learn_rate_per_s": None, "learn_burst": None, "flood_rate_pps": None,
            "flood_burst": None, "now": 0.0}
    sw.set_limits(VNI, **{**args, **limits})
    sw.pop_events()
    return sw


def test_source_macs_beyond_the_cap_are_not_learned_nor_announced_but_their_frames_go_on():
    sw = switch(max_local_macs=3)
    out = [sw.from_tap(VNI, frame(REMOTE, src(i)), 1.0) for i in range(5)]
    assert all(o is not None and o[1] == ((A, 4789),) for o in out)  # every frame forwarded
    assert [type(e) for e in sw.pop_events()] == [MacLearned] * 3  # only what was learned is announced
    assert sw.fdb.local_count(VNI) == 3 and sw.counters.learn_refused_fdb_full == 2
    assert sw.fdb.get(VNI, src(4)) is None
    # the old ones stay and refresh; the TAP's own MAC is never refused
    sw.from_tap(VNI, frame(REMOTE, src(0)), 200.0)
    sw.from_tap(VNI, frame(REMOTE, OWN), 200.0)
    assert sw.fdb.get(VNI, src(0)).updated == 200.0 and sw.fdb.get(VNI, OWN) is not None
    assert len(sw.expire(350.0)) == 2  # src(1), src(2) aged; src(0) and OWN stay
    assert sw.fdb.local_count(VNI) == 2


def test_new_source_macs_are_learned_at_the_rate_per_tap():
    sw = switch(learn_rate_per_s=100, learn_burst=10)
    for i in range(1000):  # 1000 new MACs in 1 s
        sw.from_tap(VNI, frame(REMOTE, src(i)), 1.0 + i / 1000)
    learned = sw.fdb.local_count(VNI)
    print(f"\n1000 new source MACs in 1 s, 100/s burst 10: {learned} learned, "
          f"{sw.counters.learn_refused_rate} refused by the rate")
    assert 105 <= learned <= 111 and sw.counters.learn_refused_rate == 1000 - learned
    assert sw.counters.tx_frames == 1000 and sw.counters.tx_unicast_frames == 1000


def test_kernel_bridge_macs_beyond_the_cap_are_not_taken():
    sw = Switch(4789, 300.0)
    sw.add_kernel_segment(VNI, "blue", own_macs=[OWN])
    sw.set_limits(VNI, max_local_macs=2, learn_rate_per_s=None, learn_burst=None, flood_rate_pps=None,
                  flood_burst=None, now=0.0)
    for i in range(4):
        sw.learn_local(VNI, src(i), 1.0)
    sw.learn_local(VNI, OWN, 1.0)  # the bridge's own MAC: never refused, but it takes a place
    assert sw.fdb.local_count(VNI) == 3 and sw.counters.learn_refused_fdb_full == 2
    sw.forget_local(VNI, src(0))
    sw.learn_local(VNI, src(3), 2.0)
    assert sw.fdb.get(VNI, src(3)) is None
    sw.forget_local(VNI, src(1))
    sw.learn_local(VNI, src(3), 2.0)  # room again: the bridge's next report of it is taken
    assert sw.fdb.get(VNI, src(3)) is not None


def test_flooding_beyond_the_rate_is_dropped_and_known_unicast_is_untouched():
    sw = switch(flood_rate_pps=1000, flood_burst=100)
    storm = frame(BROADCAST, src(1))
    sent = dropped = unicast = 0
    for i in range(10_000):  # a 10k pps broadcast storm for one second, a unicast frame every tenth
        now = i / 10_000
        sent += sw.from_tap(VNI, storm, now) is not None
        if i % 10 == 0:
            unicast += sw.from_tap(VNI, frame(REMOTE, src(2)), now) is not None
    dropped = sw.counters.tx_drop_flood_rate
    print(f"\n10,000 broadcasts in 1 s at 1000 pps burst 100: {sent} flooded, {dropped} dropped; "
          f"1000 unicast frames alongside: {unicast} forwarded")
    assert 1095 <= sent <= 1101 and sent + dropped == 10_000
    assert unicast == 1000
    assert sw.counters.tx_flood_frames == sent and sw.counters.tx_datagrams == 2 * sent + unicast


def test_unknown_unicast_and_multicast_count_against_the_flood_rate_too():
    sw = switch(flood_rate_pps=1, flood_burst=2)
    assert sw.from_tap(VNI, frame(src(9), src(1)), 0.0) is not None  # unknown unicast: flooded
    assert sw.from_tap(VNI, frame(bytes.fromhex("01005e000001"), src(1)), 0.0) is not None
    assert sw.from_tap(VNI, frame(BROADCAST, src(1)), 0.0) is None
    assert sw.counters.tx_drop_flood_rate == 1 and sw.counters.tx_unknown_unicast_frames == 1


class Tx:
    def __init__(self):
        self.sent = []

    def sendmsg(self, parts, ancillary, flags, addr):
        self.sent.append((b"".join(bytes(p) for p in parts), addr))


def test_the_fast_path_asks_the_switch_for_every_flooded_frame_and_reuses_unicast_answers():
    sw = switch(flood_rate_pps=1, flood_burst=3)
    ours, tap = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)  # stands in for the TAP fd
    with ours, tap:
        tap.setblocking(False)
        tx = Tx()
        fp = FastPath(sw, {VNI: SimpleNamespace(fd=tap.fileno())}, SimpleNamespace(tx=[tx]),
                      Offloads(drain=True), False, lambda: 1.0)
        for _ in range(10):  # identical broadcasts: the header cache must not let them past the limit
            ours.send(frame(BROADCAST, src(1)))
        for _ in range(10):
            ours.send(frame(REMOTE, src(1)))
        fp.tap_readable(VNI, tap.fileno())
    flooded = [addr for data, addr in tx.sent if data[8:14] == BROADCAST]
    assert len(flooded) == 2 * 3 and sw.counters.tx_drop_flood_rate == 7
    assert sum(1 for data, _ in tx.sent if data[8:14] == REMOTE) == 10
    assert sw.counters.tx_unicast_frames == 10 and sw.counters.tx_flood_frames == 3
    assert all(data.startswith(encode_header(VNI)) for data, _ in tx.sent)


def arp_claim(mac: bytes, ip: str) -> bytes:
    """A gratuitous ARP: `mac` says it has `ip`."""
    a = ipaddress.IPv4Address(ip)
    return ethernet(BROADCAST, mac, ETHERTYPE_ARP, ArpPacket(OP_REQUEST, mac, a, bytes(6), a).encode())


def test_a_host_claiming_address_after_address_binds_no_more_than_the_networks_max_local_ips():
    sw = switch(max_local_ips=5)
    sw.neighbor_snooping = True
    for i in range(50):  # one MAC, fifty addresses (gratuitous ARP for each)
        sw.from_tap(VNI, arp_claim(src(1), f"192.168.100.{100 + i}"), 1.0)
    bindings = [e for e in sw.pop_events() if type(e).__name__ == "NeighborLearned"]
    print(f"\none MAC claiming 50 addresses, max_local_ips 5: {len(bindings)} bound, "
          f"{sw.counters.learn_refused_ips} refused")
    assert len(bindings) == 5 and sw.neighbors.local_count(VNI) == 5 and sw.counters.learn_refused_ips == 45
    sw.from_tap(VNI, arp_claim(src(2), "192.168.100.100"), 2.0)  # an address moving to another MAC: not one more
    assert sw.neighbors.lookup(VNI, ipaddress.IPv4Address("192.168.100.100")).mac == src(2)
    assert sw.neighbors.local_count(VNI) == 5


def test_a_mac_that_was_not_learned_gets_no_address_either():
    sw = switch(max_local_macs=1)
    sw.neighbor_snooping = True
    sw.from_tap(VNI, frame(REMOTE, src(1)), 1.0)
    sw.from_tap(VNI, arp_claim(src(2), "192.168.100.7"), 1.0)  # src(2) refused: the table is full
    assert sw.fdb.get(VNI, src(2)) is None and sw.neighbors.local_count(VNI) == 0
