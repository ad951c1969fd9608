"""The forwarding decision: where frames go, what is learned, and a counter for every drop."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from overlayd.dataplane.counters import COUNTERS, Counters
from overlayd.dataplane.switch import Switch
from overlayd.fabric.fdb import MacLearned, MacMoved, MacRemoved, Source
from overlayd.fabric.flood import FloodMemberAdded, FloodMemberRemoved
from overlayd.wire.arp import ArpPacket
from overlayd.wire.ethernet import BROADCAST, ZERO_MAC, EthernetHeader, payload
from overlayd.wire.ndp import NeighborMessage
from overlayd.wire.vxlan import encode_header

PORT = 4789
A, B, C, STRANGER = "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.99"
OWN = bytes.fromhex("020000000a01")  # our TAP's MAC on VNI 100
H1, H2, H3 = (bytes.fromhex(f"02000000010{i}") for i in (1, 2, 3))  # hosts
MCAST = bytes.fromhex("333300000001")

TX_OUTCOMES = ("tx_unicast_frames", "tx_flood_frames", "tx_drop_runt", "tx_drop_bad_src_mac",
               "tx_drop_local_dst", "tx_drop_no_flood_list")
RX_OUTCOMES = ("rx_frames", "rx_drop_runt", "rx_drop_i_flag_clear", "rx_drop_reserved_bits",
               "rx_drop_unknown_vni", "rx_drop_unknown_vtep", "rx_drop_bad_src_mac", "rx_drop_own_mac")


def frame(dst: bytes, src: bytes, ethertype: int = 0x88B5, body: bytes = b"overlayd") -> bytes:
    return dst + src + ethertype.to_bytes(2, "big") + body


def vxlan(vni: int, inner: bytes) -> bytes:
    return encode_header(vni) + inner


def make_switch() -> Switch:
    """VNI 100 floods to A and B; VNI 200 has no flood list."""
    sw = Switch(vxlan_port=PORT, aging_s=300)
    sw.add_segment(100, "blue", own_macs=[OWN])
    sw.add_segment(200, "red")
    sw.add_flood_vtep(100, A, Source.STATIC)
    sw.add_flood_vtep(100, B, Source.STATIC)
    sw.pop_events()
    return sw


def nonzero(sw: Switch, names) -> dict[str, int]:
    counters = sw.counters.as_dict()
    return {k: counters[k] for k in names if counters[k]}


@pytest.fixture
def sw() -> Switch:
    return make_switch()


# -- out of a TAP -------------------------------------------------------------------------


def test_learns_the_local_source_mac_once(sw):
    sw.from_tap(100, frame(BROADCAST, H1), now=1)
    entry = sw.fdb.get(100, H1)
    assert entry.is_local and entry.source is Source.LOCAL and entry.updated == 1
    assert sw.pop_events() == [MacLearned(100, H1, None, Source.LOCAL)]
    sw.from_tap(100, frame(BROADCAST, H1), now=2)
    assert sw.pop_events() == []  # a refresh is not an event
    assert sw.fdb.get(100, H1).updated == 2


def test_broadcast_is_flooded_to_the_flood_list(sw):
    f = frame(BROADCAST, H1)
    header, dests, flow = sw.from_tap(100, f, now=1)
    assert header == encode_header(100)
    assert dests == ((A, PORT), (B, PORT))
    assert isinstance(flow, int)
    assert nonzero(sw, TX_OUTCOMES) == {"tx_flood_frames": 1}
    c = sw.counters
    assert (c.tx_frames, c.tx_bytes, c.tx_datagrams, c.tx_unknown_unicast_frames) == (1, len(f), 2, 0)


def test_multicast_is_flooded_but_is_not_unknown_unicast(sw):
    _, dests, _ = sw.from_tap(100, frame(MCAST, H1), now=1)
    assert dests == ((A, PORT), (B, PORT))
    assert sw.counters.tx_flood_frames == 1
    assert sw.counters.tx_unknown_unicast_frames == 0


def test_unknown_unicast_is_flooded_and_counted(sw):
    _, dests, _ = sw.from_tap(100, frame(H2, H1), now=1)
    assert dests == ((A, PORT), (B, PORT))
    assert sw.counters.tx_flood_frames == 1
    assert sw.counters.tx_unknown_unicast_frames == 1
    assert sw.counters.tx_datagrams == 2


def test_known_unicast_goes_to_the_one_vtep(sw):
    assert sw.from_vxlan(B, vxlan(100, frame(H1, H2)), now=1) is not None  # H2 is behind B
    header, dests, _ = sw.from_tap(100, frame(H2, H1), now=2)
    assert header == encode_header(100)
    assert dests == ((B, PORT),)
    assert nonzero(sw, TX_OUTCOMES) == {"tx_unicast_frames": 1}
    assert sw.counters.tx_datagrams == 1


def test_known_unicast_to_a_static_mac(sw):
    sw.install_mac(100, H3, C, Source.STATIC, now=0)
    _, dests, _ = sw.from_tap(100, frame(H3, H1), now=1)
    assert dests == ((C, PORT),)


@pytest.mark.parametrize(
    "data, counter",
    [
        (b"", "tx_drop_runt"),
        (frame(BROADCAST, H1)[:13], "tx_drop_runt"),
        (frame(BROADCAST, MCAST), "tx_drop_bad_src_mac"),
        (frame(BROADCAST, BROADCAST), "tx_drop_bad_src_mac"),
        (frame(BROADCAST, ZERO_MAC), "tx_drop_bad_src_mac"),
    ],
    ids=["empty", "13-bytes", "multicast-src", "broadcast-src", "zero-src"],
)
def test_tx_drops(sw, data, counter):
    assert sw.from_tap(100, data, now=1) is None
    assert nonzero(sw, TX_OUTCOMES) == {counter: 1}
    assert len(sw.fdb) == 0 and sw.pop_events() == []  # nothing learned from a bad frame


def test_tx_runts_are_not_counted_as_frames_read(sw):
    sw.from_tap(100, b"\x00" * 13, now=1)
    assert (sw.counters.tx_frames, sw.counters.tx_bytes) == (0, 0)


def test_tx_drop_local_dst(sw):
    sw.from_tap(100, frame(BROADCAST, H2), now=1)  # H2 is local
    assert sw.from_tap(100, frame(H2, H1), now=2) is None
    assert nonzero(sw, TX_OUTCOMES) == {"tx_flood_frames": 1, "tx_drop_local_dst": 1}


@pytest.mark.parametrize("dst", [BROADCAST, MCAST, H2], ids=["broadcast", "multicast", "unknown-unicast"])
def test_tx_drop_no_flood_list(sw, dst):
    assert sw.from_tap(200, frame(dst, H1), now=1) is None
    assert nonzero(sw, TX_OUTCOMES) == {"tx_drop_no_flood_list": 1}
    assert sw.counters.tx_datagrams == 0
    assert sw.counters.tx_unknown_unicast_frames == 0  # counts flooded frames only
    assert sw.fdb.get(200, H1).is_local  # the source is still learned


# -- into a TAP ------------------------------------------------------------------------------


def test_rx_delivers_the_inner_frame_and_learns_its_source(sw):
    inner = frame(H1, H2)
    vni, out = sw.from_vxlan(A, vxlan(100, inner), now=5)
    assert vni == 100 and bytes(out) == inner
    entry = sw.fdb.get(100, H2)
    assert (entry.vtep, entry.source, entry.updated) == (A, Source.DATA, 5)
    assert sw.pop_events() == [MacLearned(100, H2, A, Source.DATA)]
    assert nonzero(sw, RX_OUTCOMES) == {"rx_frames": 1}
    assert (sw.counters.rx_datagrams, sw.counters.rx_bytes) == (1, len(inner))


def test_rx_learning_moves_a_data_plane_mac(sw):
    sw.from_tap(100, frame(BROADCAST, H2), now=1)  # H2 local...
    sw.from_vxlan(A, vxlan(100, frame(BROADCAST, H2)), now=2)  # ...then seen behind A
    sw.from_vxlan(B, vxlan(100, frame(BROADCAST, H2)), now=3)  # ...then behind B
    assert sw.pop_events() == [
        MacLearned(100, H2, None, Source.LOCAL),
        MacMoved(100, H2, None, Source.LOCAL, A, Source.DATA),
        MacMoved(100, H2, A, Source.DATA, B, Source.DATA),
    ]


@pytest.mark.parametrize(
    "vtep, data, counter",
    [
        (A, vxlan(100, frame(H1, H2))[:21], "rx_drop_runt"),
        (A, encode_header(100), "rx_drop_runt"),
        (A, b"", "rx_drop_runt"),
        (A, bytes.fromhex("00000000 00006400") + frame(H1, H2), "rx_drop_i_flag_clear"),
        (A, bytes.fromhex("0c000000 00006400") + frame(H1, H2), "rx_drop_reserved_bits"),
        (A, bytes.fromhex("08800000 00006400") + frame(H1, H2), "rx_drop_reserved_bits"),
        (A, bytes.fromhex("08008000 00006400") + frame(H1, H2), "rx_drop_reserved_bits"),
        (A, bytes.fromhex("08000000 00006480") + frame(H1, H2), "rx_drop_reserved_bits"),
        (A, vxlan(300, frame(H1, H2)), "rx_drop_unknown_vni"),
        (STRANGER, vxlan(100, frame(H1, H2)), "rx_drop_unknown_vtep"),
        (A, vxlan(200, frame(H1, H2)), "rx_drop_unknown_vtep"),  # A floods VNI 100, not 200
        (A, vxlan(100, frame(H1, MCAST)), "rx_drop_bad_src_mac"),
        (A, vxlan(100, frame(H1, BROADCAST)), "rx_drop_bad_src_mac"),
        (A, vxlan(100, frame(H1, ZERO_MAC)), "rx_drop_bad_src_mac"),
        (A, vxlan(100, frame(BROADCAST, OWN)), "rx_drop_own_mac"),
    ],
    ids=["21-bytes", "header-only", "empty", "i-flag-clear", "reserved-flag-bits", "reserved-byte-1",
         "reserved-16", "reserved-last-byte", "unknown-vni", "unknown-vtep", "vtep-of-another-vni",
         "multicast-src", "broadcast-src", "zero-src", "own-mac"],
)
def test_rx_drops(sw, vtep, data, counter):
    assert sw.from_vxlan(vtep, data, now=1) is None
    assert nonzero(sw, RX_OUTCOMES) == {counter: 1}
    assert sw.counters.rx_datagrams == 1
    assert len(sw.fdb) == 0 and sw.pop_events() == []


def test_own_macs_can_be_set_after_the_segment(sw):
    other = bytes.fromhex("020000000a02")
    sw.set_own_macs(100, [other])
    assert sw.from_vxlan(A, vxlan(100, frame(BROADCAST, other)), now=1) is None
    assert sw.from_vxlan(A, vxlan(100, frame(BROADCAST, OWN)), now=1) is not None
    assert sw.counters.rx_drop_own_mac == 1


@pytest.mark.parametrize("source", [Source.STATIC, Source.BGP])
def test_vxlan_learning_never_moves_static_or_bgp_entries(sw, source):
    sw.install_mac(100, H3, C, source, now=0)
    sw.pop_events()
    # a remote VTEP claims H3 as inner source: the frame is delivered, the entry stays
    assert sw.from_vxlan(A, vxlan(100, frame(H1, H3)), now=1) is not None
    entry = sw.fdb.get(100, H3)
    assert (entry.vtep, entry.source, entry.updated) == (C, source, 0)
    assert sw.pop_events() == []
    _, dests, _ = sw.from_tap(100, frame(H3, H1), now=3)
    assert dests == ((C, PORT),)


def test_a_frame_from_our_tap_never_moves_a_static_entry(sw):
    sw.install_mac(100, H3, C, Source.STATIC, now=0)
    sw.pop_events()
    assert sw.from_tap(100, frame(BROADCAST, H3), now=2) is not None
    entry = sw.fdb.get(100, H3)
    assert (entry.vtep, entry.source, entry.updated) == (C, Source.STATIC, 0)
    assert sw.pop_events() == []


def test_a_host_seen_on_our_tap_moved_here_from_its_bgp_vtep(sw):
    sw.install_mac(100, H3, C, Source.BGP, now=0)
    assert C in sw.segment(100).allowed
    sw.pop_events()
    assert sw.from_tap(100, frame(BROADCAST, H3), now=2) is not None
    entry = sw.fdb.get(100, H3)
    assert (entry.vtep, entry.source) == (None, Source.LOCAL)
    assert sw.pop_events() == [MacMoved(100, H3, C, Source.BGP, None, Source.LOCAL)]
    # C vouched for by nothing else any more: no longer accepted
    assert C not in sw.segment(100).allowed


def test_bgp_does_not_override_static_but_static_overrides_bgp(sw):
    sw.install_mac(100, H3, C, Source.STATIC, now=0)
    sw.install_mac(100, H3, A, Source.BGP, now=1)
    assert sw.fdb.get(100, H3).vtep == C
    sw.install_mac(100, H2, A, Source.BGP, now=1)
    sw.install_mac(100, H2, C, Source.STATIC, now=2)
    assert sw.fdb.get(100, H2).source is Source.STATIC


# -- which VTEPs may send to a VNI ------------------------------------------------------------


def test_static_fdb_vtep_is_accepted_until_its_last_mac_goes(sw):
    assert C not in sw.segment(100).allowed
    sw.install_mac(100, H2, C, Source.STATIC, now=0)
    sw.install_mac(100, H3, C, Source.BGP, now=0)
    assert C in sw.segment(100).allowed
    assert sw.from_vxlan(C, vxlan(100, frame(H1, H2)), now=1) is not None
    sw.withdraw_mac(100, H2, Source.STATIC)
    assert C in sw.segment(100).allowed  # H3 still vouches for C
    sw.withdraw_mac(100, H3, Source.BGP)
    assert C not in sw.segment(100).allowed
    assert sw.from_vxlan(C, vxlan(100, frame(H1, H2)), now=2) is None
    assert sw.counters.rx_drop_unknown_vtep == 1


def test_moving_a_static_mac_moves_the_vouch(sw):
    sw.install_mac(200, H2, C, Source.STATIC, now=0)
    sw.install_mac(200, H2, A, Source.STATIC, now=1)
    assert sw.segment(200).allowed == {A}


def test_a_withdraw_by_the_wrong_source_changes_nothing(sw):
    sw.install_mac(200, H2, C, Source.STATIC, now=0)
    sw.pop_events()
    sw.withdraw_mac(200, H2, Source.BGP)
    assert sw.segment(200).allowed == {C}
    assert sw.pop_events() == []


def test_flood_list_changes_update_targets_allowed_and_events(sw):
    sw.add_flood_vtep(200, C, Source.STATIC)
    _, dests, _ = sw.from_tap(200, frame(BROADCAST, H1), now=1)
    assert dests == ((C, PORT),)
    assert C in sw.segment(200).allowed
    sw.remove_flood_vtep(200, C, Source.STATIC)
    assert sw.from_tap(200, frame(BROADCAST, H1), now=2) is None
    assert C not in sw.segment(200).allowed
    assert [e for e in sw.pop_events() if not isinstance(e, MacLearned)] == [
        FloodMemberAdded(200, C),
        FloodMemberRemoved(200, C),
    ]


def test_expire_ages_out_data_plane_entries_only(sw):
    sw.install_mac(100, H3, C, Source.STATIC, now=0)
    sw.from_tap(100, frame(BROADCAST, H1), now=0)
    sw.from_vxlan(A, vxlan(100, frame(H1, H2)), now=100)
    sw.pop_events()
    assert sw.expire(now=299) == []
    gone = sw.expire(now=400)
    assert gone == [MacRemoved(100, H1, None, Source.LOCAL, aged=True), MacRemoved(100, H2, A, Source.DATA, aged=True)]
    assert sw.pop_events() == gone
    assert [(e.mac, e.source) for e in sw.fdb] == [(H3, Source.STATIC)]


def test_segments_are_unique_and_listed_in_vni_order():
    sw = Switch(PORT, 300)
    sw.add_segment(200, "red")
    sw.add_segment(100, "blue")
    with pytest.raises(ValueError, match="100"):
        sw.add_segment(100, "again")
    assert [s.vni for s in sw.segments()] == [100, 200]
    assert sw.segment(100).header == encode_header(100)


def test_counters_are_the_documented_ones():
    c = Counters()
    assert c.as_dict() == dict.fromkeys(COUNTERS, 0)
    assert set(TX_OUTCOMES) | set(RX_OUTCOMES) <= set(COUNTERS)
    assert all(COUNTERS[name] for name in COUNTERS)  # every counter is explained


# -- fuzz: never raise, exactly one outcome per frame or datagram -------------------------------

known_macs = st.sampled_from([H1, H2, H3, OWN, MCAST, BROADCAST, ZERO_MAC])
frames = st.one_of(
    st.binary(max_size=64),
    st.tuples(known_macs, known_macs, st.binary(max_size=40)).map(lambda t: t[0] + t[1] + t[2]),
)
datagrams = st.one_of(
    st.binary(max_size=64),
    st.tuples(st.sampled_from([0, 1, 100, 200, 300]), frames).map(lambda t: encode_header(t[0]) + t[1]),
    st.tuples(st.binary(min_size=8, max_size=8), frames).map(lambda t: t[0] + t[1]),
)


@given(st.lists(st.tuples(st.sampled_from([100, 200]), frames), max_size=20))
@settings(max_examples=200, deadline=None)
def test_from_tap_never_raises_and_counts_one_outcome_per_frame(batch):
    sw = make_switch()
    for n, (vni, data) in enumerate(batch, 1):
        before = sw.counters.as_dict()
        result = sw.from_tap(vni, data, now=n)
        after = sw.counters.as_dict()
        bumped = {k: after[k] - before[k] for k in TX_OUTCOMES if after[k] != before[k]}
        assert len(bumped) == 1 and set(bumped.values()) == {1}
        outcome = next(iter(bumped))
        assert (result is not None) == (outcome in ("tx_unicast_frames", "tx_flood_frames"))
        if result is not None:
            assert after["tx_datagrams"] - before["tx_datagrams"] == len(result[1])
    c = sw.counters
    assert c.tx_frames + c.tx_drop_runt == len(batch)
    assert c.tx_unknown_unicast_frames <= c.tx_flood_frames


@given(st.lists(st.tuples(st.sampled_from([A, B, C, STRANGER]), datagrams), max_size=20))
@settings(max_examples=200, deadline=None)
def test_from_vxlan_never_raises_and_counts_one_outcome_per_datagram(batch):
    sw = make_switch()
    sw.install_mac(200, H3, C, Source.STATIC, now=0)
    for n, (vtep, data) in enumerate(batch, 1):
        before = sw.counters.as_dict()
        result = sw.from_vxlan(vtep, data, now=n)
        after = sw.counters.as_dict()
        bumped = {k: after[k] - before[k] for k in RX_OUTCOMES if after[k] != before[k]}
        assert len(bumped) == 1 and set(bumped.values()) == {1}
        assert (result is not None) == ("rx_frames" in bumped)
        if result is not None:
            vni, inner = result
            assert vni in (100, 200) and bytes(inner) == data[8:]
    assert sw.counters.rx_datagrams == len(batch)


# -- the accepted VTEPs follow the tables, whatever happens -------------------------------------

the_vnis = st.sampled_from([100, 200])
the_vteps = st.sampled_from([A, B, C])
the_hosts = st.sampled_from([H1, H2, H3])
placers = st.sampled_from([Source.STATIC, Source.BGP])


class AllowedMachine(RuleBasedStateMachine):
    """Segment.allowed == flood list + VTEPs of the config/control-plane FDB entries of that VNI."""

    def __init__(self):
        super().__init__()
        self.sw = Switch(PORT, aging_s=50)
        for vni in (100, 200):
            self.sw.add_segment(vni, f"net{vni}")
        self.now = 0

    @rule(vni=the_vnis, vtep=the_vteps, source=placers)
    def add_flood(self, vni, vtep, source):
        self.sw.add_flood_vtep(vni, vtep, source)

    @rule(vni=the_vnis, vtep=the_vteps, source=placers)
    def remove_flood(self, vni, vtep, source):
        self.sw.remove_flood_vtep(vni, vtep, source)

    @rule(vni=the_vnis, mac=the_hosts, vtep=the_vteps, source=placers)
    def install(self, vni, mac, vtep, source):
        self.sw.install_mac(vni, mac, vtep, source, self.now)

    @rule(vni=the_vnis, mac=the_hosts, source=st.sampled_from(list(Source)))
    def withdraw(self, vni, mac, source):
        self.sw.withdraw_mac(vni, mac, source)

    @rule(vni=the_vnis, mac=the_hosts, vtep=the_vteps)
    def traffic_in(self, vni, mac, vtep):
        self.sw.from_vxlan(vtep, vxlan(vni, frame(BROADCAST, mac)), self.now)

    @rule(vni=the_vnis, mac=the_hosts)
    def traffic_out(self, vni, mac):
        self.sw.from_tap(vni, frame(BROADCAST, mac), self.now)

    @rule(step=st.integers(0, 40))
    def tick(self, step):
        self.now += step
        self.sw.expire(self.now)

    @invariant()
    def allowed_follows_tables(self):
        for vni in (100, 200):
            vouched = {e.vtep for e in self.sw.fdb if e.vni == vni and e.source.rank > 0}
            assert self.sw.segment(vni).allowed == set(self.sw.flood.targets(vni)) | vouched


TestAllowedVteps = AllowedMachine.TestCase
TestAllowedVteps.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


# -- the same fuzz with ARP/ND snooping and suppression on (the BGP mode) -------------------------

IPS = [ipaddress.IPv4Address(f"192.168.100.{i}") for i in (0, 1, 2, 3, 255)]
IP6S = [ipaddress.IPv6Address(a) for a in ("::", "fd00::1", "fd00::2", "fd00::3")]


def _arp_frame(t):
    eth_src, op, smac, sip, tip = t
    body = struct.pack("!HHBBH", 1, 0x0800, 6, 4, op) + smac + sip.packed + ZERO_MAC + tip.packed
    return BROADCAST + eth_src + b"\x08\x06" + body


def _ns_frame(t):
    eth_src, src, target, sll = t
    msg = NeighborMessage(135, src, ipaddress.IPv6Address("ff02::1:ff00:2"), target,
                          source_lladdr=None if src.is_unspecified else sll)
    return bytes.fromhex("3333ff000002") + eth_src + b"\x86\xdd" + msg.encode()


arp_frames = st.tuples(known_macs, st.sampled_from([0, 1, 2, 3]), known_macs, st.sampled_from(IPS),
                       st.sampled_from(IPS)).map(_arp_frame)
ns_frames = st.tuples(known_macs, st.sampled_from(IP6S), st.sampled_from(IP6S[1:]), known_macs).map(_ns_frame)
TX_OUTCOMES_BGP = TX_OUTCOMES + ("tx_arp_suppressed",)


def make_bgp_mode_switch() -> Switch:
    """Snooping and suppression on, no data-plane learning; H3 is a remote host at C by BGP."""
    sw = make_switch()
    sw.neighbor_snooping = sw.arp_suppression = True
    sw.data_learning = False
    sw.install_mac(100, H3, C, Source.BGP, now=0)
    sw.install_neighbor(100, "192.168.100.3", H3, Source.BGP, now=0)
    sw.install_neighbor(100, "fd00::3", H3, Source.BGP, now=0)
    sw.pop_events()
    return sw


@given(st.lists(st.tuples(st.sampled_from([100, 200]), frames | arp_frames | ns_frames), max_size=20))
@settings(max_examples=200, deadline=None)
def test_from_tap_with_suppression_never_raises_and_counts_one_outcome(batch):
    sw = make_bgp_mode_switch()
    for n, (vni, data) in enumerate(batch, 1):
        before = sw.counters.as_dict()
        result = sw.from_tap(vni, data, now=n)
        after = sw.counters.as_dict()
        bumped = {k: after[k] - before[k] for k in TX_OUTCOMES_BGP if after[k] != before[k]}
        assert len(bumped) == 1 and set(bumped.values()) == {1}
        replies = sw.pop_replies()
        if "tx_arp_suppressed" in bumped:
            assert result is None
            ((reply_vni, reply),) = replies
            assert reply_vni == vni
            header = EthernetHeader.decode(reply)
            assert header.src == H3  # the remote host's MAC answers
            if header.ethertype == 0x0806:  # to the ARP sender hardware address
                answer = ArpPacket.decode(payload(reply))
                assert header.dst == data[22:28] == answer.target_mac
                assert (answer.op, answer.sender_mac, answer.sender_ip) == (2, H3, IPS[3])
            else:
                answer = NeighborMessage.decode(payload(reply))
                assert (answer.type, answer.target, answer.target_lladdr) == (136, IP6S[3], H3)
        else:
            assert replies == []
    assert sw.counters.tx_unknown_unicast_frames <= sw.counters.tx_flood_frames


def test_suppression_answers_an_arp_request_for_a_remote_host():
    sw = make_bgp_mode_switch()
    request = _arp_frame((H1, 1, H1, IPS[1], IPS[3]))  # who has .3? tell .1
    assert sw.from_tap(100, request, now=1) is None
    ((vni, reply),) = sw.pop_replies()
    assert vni == 100
    assert EthernetHeader.decode(reply) == EthernetHeader(H1, H3, 0x0806)
    assert ArpPacket.decode(payload(reply)) == ArpPacket(2, H3, IPS[3], H1, IPS[1])
    assert sw.counters.tx_arp_suppressed == 1 and sw.counters.tx_flood_frames == 0
