"""The subnet table against a deliberately naive model, plus its rules as examples.

The model keeps every announcement in a list and answers a lookup by
scanning all of them for the longest prefix containing the address, as
wireguard-go checks its trie against a slow sorted list
(allowedips_rand_test.go). Prefixes are drawn from a few spots inside
10.244.0.0/16 and fd00::/16, with lengths all over, so they overlap a lot.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from overlayd.fabric.fdb import Source
from overlayd.fabric.prefixes import (
    Conflict,
    ConflictReason,
    PrefixEntry,
    PrefixInstalled,
    PrefixRemoved,
    PrefixReplaced,
    PrefixTable,
    conflicts,
)

NET4 = ip_network("10.244.0.0/16")
NET6 = ip_network("fd00::/16")
MAC_A, MAC_B = b"\x02\x00\x00\x00\x00\x0a", b"\x02\x00\x00\x00\x00\x0b"
# 10.0.0.9 < 10.0.0.10 as addresses but not as text; "edge" is no address at all
NODES = ["10.0.0.1", "10.0.0.9", "10.0.0.10", "edge"]
VTEPS = ["192.0.2.1", "192.0.2.2", "2001:db8::1"]


def entry(prefix, node="10.0.0.1", vtep="192.0.2.1", source=Source.BGP, mac=MAC_A, vni=1, peer="10.0.0.254"):
    if source is Source.LOCAL:
        vtep, peer = None, "local"
    return PrefixEntry(ip_network(prefix), vtep, mac, vni, node, peer, source)


def raw(address: str) -> bytes:
    return ip_address(address).packed


# -- the model ----------------------------------------------------------------------------


class NaiveTable:
    """Every announcement in a list; everything answered by scanning it."""

    RANK = {Source.LOCAL: 0, Source.STATIC: 1, Source.BGP: 2}

    def __init__(self):
        self.rows: list[PrefixEntry] = []

    @classmethod
    def better(cls, e: PrefixEntry) -> tuple:
        try:
            node = (0, int(ipaddress.IPv4Address(e.node)))
        except ValueError:
            node = (1, e.node)
        return (cls.RANK[e.source], node)

    def routed(self, prefix):
        """The announcement `prefix` goes to: the best of its rows."""
        rows = [r for r in self.rows if r.prefix == prefix]
        return min(rows, key=self.better) if rows else None

    def prefixes(self):
        return {r.prefix for r in self.rows}

    def lookup(self, address: bytes):
        version, n = (4 if len(address) == 4 else 6), int.from_bytes(address)
        best = None
        for prefix in self.prefixes():
            first, last = int(prefix.network_address), int(prefix.broadcast_address)
            if prefix.version == version and first <= n <= last:
                if best is None or prefix.prefixlen > best.prefixlen:
                    best = prefix
        return None if best is None else self.routed(best)

    def change(self, prefix, before):
        after = self.routed(prefix)
        if before == after:
            return None
        if before is None:
            return PrefixInstalled(after)
        if after is None:
            return PrefixRemoved(before)
        return PrefixReplaced(before, after)

    def install(self, e: PrefixEntry, now):
        before = self.routed(e.prefix)
        for i, r in enumerate(self.rows):
            if (r.prefix, r.source, r.node) == (e.prefix, e.source, e.node):
                if (r.vtep, r.router_mac, r.vni, r.peer) == (e.vtep, e.router_mac, e.vni, e.peer):
                    return None
                del self.rows[i]
                break
        self.rows.append(PrefixEntry(e.prefix, e.vtep, e.router_mac, e.vni, e.node, e.peer, e.source, now))
        return self.change(e.prefix, before)

    def remove(self, prefix, source, node):
        before = self.routed(prefix)
        self.rows = [
            r
            for r in self.rows
            if not (r.prefix == prefix and source in (None, r.source) and node in (None, r.node))
        ]
        return self.change(prefix, before)

    def flush(self, source, node, peer):
        befores = {p: self.routed(p) for p in self.prefixes()}
        self.rows = [
            r
            for r in self.rows
            if not (source in (None, r.source) and node in (None, r.node) and peer in (None, r.peer))
        ]
        changes = [self.change(p, b) for p, b in befores.items()]
        return [c for c in changes if c is not None]


# -- random operations against the model ----------------------------------------------------


def _v4(third, fourth, length):
    return IPv4Network((f"10.244.{third}.{fourth}", length), strict=False)


def _v6(third, fourth, length):
    return IPv6Network((f"fd00:0:{third:x}:{fourth:x}::", length), strict=False)


# strategies built once: drawing is the expensive part of the state machine
prefixes = st.builds(
    _v4,
    st.sampled_from([0, 1, 2, 3, 128, 255]),
    st.sampled_from([0, 1, 64, 128, 255]),
    st.sampled_from([0, 8, 32]) | st.integers(16, 28),
) | st.builds(
    _v6,
    st.sampled_from([0, 1, 0x80, 0xFFFF]),
    st.sampled_from([0, 1, 0x8000]),
    st.sampled_from([0, 128]) | st.integers(16, 72),
)
entries = st.builds(
    entry,
    prefixes,
    node=st.sampled_from(NODES),
    vtep=st.sampled_from(VTEPS),
    source=st.sampled_from([Source.BGP, Source.BGP, Source.STATIC, Source.LOCAL]),
    mac=st.sampled_from([MAC_A, MAC_B, None]),
    vni=st.sampled_from([1, 2]),
    peer=st.sampled_from(["10.0.0.254", "10.0.0.253"]),
)


@st.composite
def addresses(draw):
    """Destination addresses near the prefixes above (and anywhere at all)."""
    kind = draw(st.integers(0, 2))
    if kind == 0:
        third = draw(st.sampled_from([0, 1, 2, 3, 4, 128, 255]))
        fourth = draw(st.sampled_from([0, 1, 64, 65, 128, 200, 255]))
        return bytes([10, 244, third, fourth])
    if kind == 1:
        third = draw(st.sampled_from([0, 1, 0x80, 0xFFFF, 7]))
        fourth = draw(st.sampled_from([0, 1, 0x8000, 3]))
        host = draw(st.integers(0, (1 << 64) - 1))
        return IPv6Network((f"fd00:0:{third:x}:{fourth:x}::", 64)).network_address.packed[:8] + host.to_bytes(8)
    return draw(st.binary(min_size=4, max_size=4) | st.binary(min_size=16, max_size=16))


sources = st.none() | st.sampled_from([Source.BGP, Source.STATIC, Source.LOCAL])
nodes = st.none() | st.sampled_from(NODES)


class PrefixMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.table = PrefixTable()
        self.model = NaiveTable()
        self.replayed: dict = {}  # the changes applied to an empty map
        self.now = 0.0

    def replay(self, change):
        if isinstance(change, PrefixRemoved):
            assert self.replayed.pop(change.prefix) == change.entry
        elif isinstance(change, PrefixReplaced):
            assert self.replayed[change.prefix] == change.old
            self.replayed[change.prefix] = change.new
        elif isinstance(change, PrefixInstalled):
            assert change.prefix not in self.replayed
            self.replayed[change.prefix] = change.entry

    @rule(e=entries, step=st.integers(0, 5))
    def install(self, e, step):
        self.now += step
        change = self.table.install(e, self.now)
        assert change == self.model.install(e, self.now)
        if change is not None:
            self.replay(change)

    @rule(data=st.data(), source=sources, node=nodes)
    def remove(self, data, source, node):
        known = sorted(self.model.prefixes(), key=str)
        prefix = data.draw(st.sampled_from(known) if known and data.draw(st.booleans()) else prefixes)
        change = self.table.remove(prefix, source=source, node=node)
        assert change == self.model.remove(prefix, source, node)
        if change is not None:
            self.replay(change)

    @rule(source=sources, node=nodes, peer=st.none() | st.sampled_from(["10.0.0.254", "10.0.0.253", "local"]))
    def flush(self, source, node, peer):
        changes = self.table.flush(source=source, node=node, peer=peer)
        assert set(changes) == set(self.model.flush(source, node, peer))
        assert len(changes) == len(set(c.prefix for c in changes))
        for change in changes:
            self.replay(change)

    @rule(address=addresses())
    def lookup(self, address):
        assert self.table.lookup(address) == self.model.lookup(address)

    @rule(candidate=entries)
    def conflicts_agree(self, candidate):
        """Conflicts found through the table's index equal those found by scanning every announcement."""
        by_index = conflicts(self.table, candidate, (NET4, NET6))
        by_scan = conflicts(list(self.model.rows), candidate, (NET4, NET6))
        assert by_index == by_scan

    @invariant()
    def lookups_of_every_prefix_agree(self):
        for prefix in self.model.prefixes():
            for address in (prefix.network_address, prefix.broadcast_address):
                assert self.table.lookup(address.packed) == self.model.lookup(address.packed)

    @invariant()
    def same_table(self):
        routed = [self.model.routed(p) for p in self.model.prefixes()]
        assert len(self.table) == len(routed)
        by_address = sorted(routed, key=lambda e: (e.prefix.version, e.prefix.network_address, e.prefix.prefixlen))
        assert list(self.table) == by_address
        for e in routed:
            assert self.table.get(e.prefix) == e
        assert sorted(self.table.candidates(), key=repr) == sorted(self.model.rows, key=repr)

    @invariant()
    def changes_replay_to_the_table(self):
        assert self.replayed == {e.prefix: e for e in self.table}

    @invariant()
    def vteps_are_every_remote_vtep(self):
        assert self.table.vteps() == frozenset(r.vtep for r in self.model.rows if r.vtep is not None)


TestPrefixTableAgainstModel = PrefixMachine.TestCase
TestPrefixTableAgainstModel.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


@settings(max_examples=200, deadline=None)
@given(st.lists(entries, max_size=30), st.lists(addresses(), max_size=30), st.randoms())
def test_arrival_order_does_not_matter(es, probes, rnd):
    """The routed entries depend on the set of announcements, not their order."""
    one, two = PrefixTable(), PrefixTable()
    last = {}
    for e in es:
        last[(e.prefix, e.source, e.node)] = e  # a later announcement replaces an earlier one
    final = list(last.values())
    for e in final:
        one.install(e, 0)
    rnd.shuffle(final)
    for e in final:
        two.install(e, 0)
    assert list(one) == list(two)
    assert one.vteps() == two.vteps()
    for a in probes:
        assert one.lookup(a) == two.lookup(a)


# -- the rules, one example each ------------------------------------------------------------


def test_longest_prefix_wins():
    t = PrefixTable()
    t.install(entry("10.244.0.0/16", node="10.0.0.1", vtep="192.0.2.1"), 0)
    t.install(entry("10.244.1.0/24", node="10.0.0.2", vtep="192.0.2.2"), 0)
    t.install(entry("10.244.1.128/25", node="10.0.0.3", vtep="192.0.2.3"), 0)
    assert t.lookup(raw("10.244.1.200")).node == "10.0.0.3"
    assert t.lookup(raw("10.244.1.5")).node == "10.0.0.2"
    assert t.lookup(raw("10.244.7.5")).node == "10.0.0.1"
    assert t.lookup(raw("10.245.0.1")) is None
    assert t.lookup(raw("::1")) is None
    assert t.lookup(memoryview(bytearray(raw("10.244.1.5")))).node == "10.0.0.2"


def test_ipv6_and_host_and_default_routes():
    t = PrefixTable()
    t.install(entry("fd00:0:1::/64", node="10.0.0.1"), 0)
    t.install(entry("fd00:0:1::7/128", node="10.0.0.2", vtep="192.0.2.2"), 0)
    t.install(entry("::/0", node="10.0.0.3", vtep="192.0.2.3"), 0)
    assert t.lookup(raw("fd00:0:1::8")).node == "10.0.0.1"
    assert t.lookup(raw("fd00:0:1::7")).node == "10.0.0.2"
    assert t.lookup(raw("2001:db8::1")).node == "10.0.0.3"
    assert t.lookup(raw("10.0.0.1")) is None  # ::/0 is not an IPv4 default route


def test_lookup_wants_4_or_16_octets():
    with pytest.raises(ValueError, match="4 or 16 octets"):
        PrefixTable().lookup(b"\x0a\x00\x00")


def test_install_is_idempotent_and_keeps_its_age():
    t = PrefixTable()
    e = entry("10.244.1.0/24")
    assert t.install(e, 5) == PrefixInstalled(dataclasses.replace(e, installed=5))
    assert t.install(e, 9) is None
    assert t.get("10.244.1.0/24").installed == 5
    assert t.get("10.244.2.0/24") is None


def test_a_new_router_mac_replaces_the_entry():
    t = PrefixTable()
    t.install(entry("10.244.1.0/24", mac=MAC_A), 1)
    change = t.install(entry("10.244.1.0/24", mac=MAC_B), 2)
    assert isinstance(change, PrefixReplaced)
    assert (change.old.router_mac, change.new.router_mac, change.new.installed) == (MAC_A, MAC_B, 2)


def test_duplicate_goes_to_the_lower_router_id_compared_as_addresses():
    t = PrefixTable()
    assert isinstance(t.install(entry("10.244.1.0/24", node="10.0.0.10", vtep="192.0.2.10"), 0), PrefixInstalled)
    change = t.install(entry("10.244.1.0/24", node="10.0.0.9", vtep="192.0.2.9"), 1)
    assert isinstance(change, PrefixReplaced) and change.new.node == "10.0.0.9"
    assert t.install(entry("10.244.1.0/24", node="10.0.0.11", vtep="192.0.2.11"), 2) is None  # loses
    assert t.vteps() == {"192.0.2.9", "192.0.2.10", "192.0.2.11"}
    assert [e.node for e in t.candidates("10.244.1.0/24")] == ["10.0.0.9", "10.0.0.10", "10.0.0.11"]
    # the winner withdraws: the next one takes over at once
    change = t.remove("10.244.1.0/24", source=Source.BGP, node="10.0.0.9")
    assert isinstance(change, PrefixReplaced) and change.new.node == "10.0.0.10"
    assert t.vteps() == {"192.0.2.10", "192.0.2.11"}
    assert t.remove("10.244.1.0/24", node="10.0.0.11") is None  # not the routed one
    assert t.remove("10.244.1.0/24", node="10.0.0.12") is None  # never there
    assert isinstance(t.remove("10.244.1.0/24"), PrefixRemoved)
    assert len(t) == 0 and t.vteps() == frozenset()


def test_our_own_subnet_is_never_taken_over():
    t = PrefixTable()
    t.install(entry("10.244.1.0/24", node="10.0.0.5", source=Source.LOCAL), 0)
    assert t.install(entry("10.244.1.0/24", node="0.0.0.1", vtep="192.0.2.1"), 0) is None
    assert t.install(entry("10.244.1.0/24", node="0.0.0.1", source=Source.STATIC), 0) is None
    assert t.lookup(raw("10.244.1.1")).is_local
    assert t.vteps() == {"192.0.2.1"}


def test_static_beats_bgp():
    t = PrefixTable()
    t.install(entry("10.244.1.0/24", node="10.0.0.1", vtep="192.0.2.1"), 0)
    change = t.install(entry("10.244.1.0/24", node="10.0.0.2", vtep="192.0.2.2", source=Source.STATIC), 0)
    assert isinstance(change, PrefixReplaced) and change.new.source is Source.STATIC


def test_bad_entries_are_refused():
    t = PrefixTable()
    with pytest.raises(ValueError):
        t.install(entry("10.244.1.0/24", source=Source.DATA), 0)
    with pytest.raises(ValueError):
        t.install(PrefixEntry(NET4, None, None, 1, "10.0.0.1", "p", Source.BGP), 0)
    with pytest.raises(ValueError):
        t.install(PrefixEntry(NET4, "192.0.2.1", None, 1, "10.0.0.1", "local", Source.LOCAL), 0)
    assert len(t) == 0


def test_flush_a_peer():
    t = PrefixTable()
    t.install(entry("10.244.1.0/24", node="10.0.0.1", peer="p1"), 0)
    t.install(entry("10.244.1.0/24", node="10.0.0.2", vtep="192.0.2.2", peer="p2"), 0)
    t.install(entry("10.244.2.0/24", node="10.0.0.3", vtep="192.0.2.3", peer="p1"), 0)
    changes = t.flush(peer="p1")
    assert [type(c) for c in changes] == [PrefixReplaced, PrefixRemoved]
    assert [e.node for e in t] == ["10.0.0.2"]
    assert t.vteps() == {"192.0.2.2"}


def test_iteration_is_sorted_ipv4_first():
    t = PrefixTable()
    for p in ["fd00::/64", "10.244.2.0/24", "10.244.0.0/16", "10.244.1.0/24"]:
        t.install(entry(p), 0)
    assert [str(e.prefix) for e in t] == ["10.244.0.0/16", "10.244.1.0/24", "10.244.2.0/24", "fd00::/64"]


# -- conflicts ---------------------------------------------------------------------------------


def reasons(found):
    return [(c.reason, c.refused, c.other.node if c.other else None) for c in found]


def test_outside_the_network_is_refused():
    found = conflicts(PrefixTable(), entry("10.245.1.0/24"), NET4)
    assert reasons(found) == [(ConflictReason.OUTSIDE_NETWORK, True, None)]
    assert "outside the cluster network" in str(found[0])
    # IPv6 needs network6 to be given
    assert reasons(conflicts([], entry("fd00::/64"), NET4)) == [(ConflictReason.OUTSIDE_NETWORK, True, None)]
    assert conflicts([], entry("fd00::/64"), (NET4, NET6)) == []
    assert conflicts([], entry("fd00::/64"), (NET4, None)) != []
    assert conflicts([], entry("192.0.2.0/24"), None) == []


def test_duplicate_names_who_keeps_it():
    t = PrefixTable()
    t.install(entry("10.244.1.0/24", node="10.0.0.9"), 0)
    found = conflicts(t, entry("10.244.1.0/24", node="10.0.0.10"), NET4)
    assert reasons(found) == [(ConflictReason.DUPLICATE, False, "10.0.0.9")]
    assert found[0].keeps == "10.0.0.9"
    assert str(found[0]) == (
        "subnet 10.244.1.0/24 from node 10.0.0.10 (peer 10.0.0.254) is also announced by node 10.0.0.9: "
        "10.0.0.9 keeps it"
    )
    assert conflicts(t, entry("10.244.1.0/24", node="10.0.0.1"), NET4)[0].keeps == "10.0.0.1"
    # the same node announcing again (a new MAC, another peer) is no conflict
    assert conflicts(t, entry("10.244.1.0/24", node="10.0.0.9", mac=MAC_B, peer="x"), NET4) == []


def test_duplicate_of_our_own_subnet():
    t = PrefixTable()
    t.install(entry("10.244.1.0/24", node="10.0.0.5", source=Source.LOCAL), 0)
    found = conflicts(t, entry("10.244.1.0/24", node="10.0.0.1"), NET4)
    assert reasons(found) == [(ConflictReason.DUPLICATE, False, "10.0.0.5")]
    assert found[0].keeps == "us"


def test_overlaps():
    t = PrefixTable()
    t.install(entry("10.244.1.0/24", node="10.0.0.5", source=Source.LOCAL), 0)
    t.install(entry("10.244.8.0/22", node="10.0.0.2", vtep="192.0.2.2"), 0)
    # inside our own subnet: refused, our addresses are ours
    found = conflicts(t, entry("10.244.1.128/25", node="10.0.0.1"), NET4)
    assert reasons(found) == [(ConflictReason.OVERLAP, True, "10.0.0.5")]
    assert str(found[0]).endswith("overlaps our own subnet: refused")
    # containing our own subnet: installed, the longer prefix wins
    found = conflicts(t, entry("10.244.0.0/20", node="10.0.0.1"), NET4)
    assert reasons(found) == [
        (ConflictReason.OVERLAP, False, "10.0.0.5"),
        (ConflictReason.OVERLAP, False, "10.0.0.2"),
    ]
    # inside another node's subnet: installed and reported
    assert reasons(conflicts(t, entry("10.244.9.0/24", node="10.0.0.1"), NET4)) == [
        (ConflictReason.OVERLAP, False, "10.0.0.2")
    ]
    # the same node's own nested prefixes are fine
    assert conflicts(t, entry("10.244.9.0/24", node="10.0.0.2", vtep="192.0.2.2"), NET4) == []
    assert conflicts(t, entry("10.244.2.0/24", node="10.0.0.1"), NET4) == []


def test_several_conflicts_at_once():
    t = PrefixTable()
    t.install(entry("10.245.1.0/24", node="10.0.0.2", vtep="192.0.2.2"), 0)
    found = conflicts(t, entry("10.245.1.0/24", node="10.0.0.3"), NET4)
    assert [c.reason for c in found] == [ConflictReason.OUTSIDE_NETWORK, ConflictReason.DUPLICATE]
    assert any(c.refused for c in found)
    assert all(isinstance(c, Conflict) for c in found)


def test_an_entry_takes_its_prefix_as_text_too():
    e = PrefixEntry("10.244.1.0/24", "192.0.2.1", MAC_A, 1, "10.0.0.1", "p", Source.BGP)
    assert e.prefix == ip_network("10.244.1.0/24")
    with pytest.raises(ValueError):
        PrefixEntry("10.244.1.1/24", "192.0.2.1", MAC_A, 1, "10.0.0.1", "p", Source.BGP)
