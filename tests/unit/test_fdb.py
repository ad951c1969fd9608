"""The FDB against a deliberately naive model, plus the rules spelled out as examples.

The model is a plain list of rows scanned linearly; it knows the rules from the
module's docstring (and README "Precedence") and nothing about dicts or keys.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from overlayd.fabric.fdb import Fdb, MacLearned, MacMoved, MacRefused, MacRemoved, Source

A, B = "10.0.0.2", "10.0.0.3"
MAC1, MAC2 = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"
AGING = 100


# -- the model -------------------------------------------------------------------------


@dataclass
class Row:
    vni: int
    mac: bytes
    vtep: str | None
    source: Source
    updated: float


class NaiveFdb:
    """Rows in a list. Who may overwrite whom: a source of equal or higher rank,
    and a MAC seen locally replaces what BGP said (the host moved here). A VNI
    in `max_local` holds at most that many local rows: one more is refused."""

    RANK = {Source.LOCAL: 0, Source.DATA: 0, Source.BGP: 1, Source.STATIC: 2}
    AGES = {Source.LOCAL, Source.DATA}

    def __init__(self, aging_s: float, max_local: dict[int, int] | None = None):
        self.aging_s = aging_s
        self.rows: list[Row] = []
        self.max_local = max_local or {}

    def local_rows(self, vni):
        return [r for r in self.rows if r.vni == vni and r.source == Source.LOCAL]

    def full(self, vni):
        return vni in self.max_local and len(self.local_rows(vni)) >= self.max_local[vni]

    def find(self, vni, mac):
        for row in self.rows:
            if row.vni == vni and row.mac == mac:
                return row
        return None

    def learn(self, vni, mac, vtep, source, now):
        row = self.find(vni, mac)
        if row is None:
            if source == Source.LOCAL and self.full(vni):
                return MacRefused.FULL
            self.rows.append(Row(vni, mac, vtep, source, now))
            return MacLearned(vni, mac, vtep, source)
        if (row.vtep, row.source) == (vtep, source):
            row.updated = now
            return None
        moved_here = source == Source.LOCAL and row.source == Source.BGP
        if self.RANK[source] < self.RANK[row.source] and not moved_here:
            return None
        if source == Source.LOCAL and row.source != Source.LOCAL and self.full(vni):
            return MacRefused.FULL
        change = MacMoved(vni, mac, row.vtep, row.source, vtep, source)
        row.vtep, row.source, row.updated = vtep, source, now
        return change

    def remove(self, vni, mac, source):
        row = self.find(vni, mac)
        if row is None or row.source != source:
            return None
        self.rows.remove(row)
        return MacRemoved(vni, mac, row.vtep, row.source, aged=False)

    def expire(self, now):
        old = [r for r in self.rows if r.source in self.AGES and now - r.updated >= self.aging_s]
        self.rows = [r for r in self.rows if r not in old]
        return old

    def flush(self, vni, source):
        gone = [r for r in self.rows if vni in (None, r.vni) and source in (None, r.source)]
        self.rows = [r for r in self.rows if r not in gone]
        return gone


def removed(rows, aged):
    return {MacRemoved(r.vni, r.mac, r.vtep, r.source, aged) for r in rows}


# -- random operations against the model ---------------------------------------------------

vnis = st.sampled_from([1, 2])
mac_values = st.sampled_from([MAC1, MAC2, b"\x02\x00\x00\x00\x00\x03"])
# where a MAC can be said to be, by whom: local MACs have no VTEP, the rest name one
placements = st.sampled_from(
    [(None, Source.LOCAL)]
    + [(v, s) for v in (A, B) for s in (Source.DATA, Source.BGP, Source.STATIC)]
)
sources = st.sampled_from(list(Source))


class FdbMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.fdb = Fdb(aging_s=AGING)
        self.fdb.limit_local(1, max_macs=2)  # VNI 1: at most 2 local MACs of the 3; VNI 2 unbounded
        self.model = NaiveFdb(AGING, max_local={1: 2})
        self.now = 0

    @rule(step=st.integers(0, 60))
    def time_passes(self, step):
        self.now += step

    @rule(vni=vnis, mac=mac_values, where=placements)
    def learn(self, vni, mac, where):
        vtep, source = where
        assert self.fdb.learn(vni, mac, vtep, source, self.now) == self.model.learn(vni, mac, vtep, source, self.now)

    @rule(vni=vnis, mac=mac_values, source=sources)
    def remove(self, vni, mac, source):
        assert self.fdb.remove(vni, mac, source) == self.model.remove(vni, mac, source)

    @rule()
    def expire(self):
        want = self.model.expire(self.now)
        got = self.fdb.expire(self.now)
        assert len(got) == len(want)
        assert set(got) == removed(want, aged=True)
        # oldest first
        updated = {(r.vni, r.mac): r.updated for r in want}
        ages = [updated[(c.vni, c.mac)] for c in got]
        assert ages == sorted(ages)

    @precondition(lambda self: self.model.rows)
    @rule(vni=st.none() | vnis, source=st.none() | sources)
    def flush(self, vni, source):
        want = self.model.flush(vni, source)
        got = self.fdb.flush(vni=vni, source=source)
        assert len(got) == len(want)
        assert set(got) == removed(want, aged=False)

    @invariant()
    def same_table(self):
        table = sorted((e.vni, e.mac, e.vtep or "", e.source.label, e.updated) for e in self.fdb)
        model = sorted((r.vni, r.mac, r.vtep or "", r.source.label, r.updated) for r in self.model.rows)
        assert table == model
        assert len(self.fdb) == len(self.model.rows)
        counts = Counter((r.vni, r.source) for r in self.model.rows)
        assert +self.fdb.counts == counts  # (+: without the keys that went back to 0)
        for vni in (1, 2):
            assert self.fdb.local_count(vni) == len(self.model.local_rows(vni))
        assert self.fdb.local_count(1) <= 2

    @invariant()
    def lookups_agree(self):
        for vni in (1, 2):
            for mac in (MAC1, MAC2, b"\x02\x00\x00\x00\x00\x03"):
                entry, row = self.fdb.get(vni, mac), self.model.find(vni, mac)
                assert (entry is None) == (row is None)
                if entry is not None:
                    assert (entry.vtep, entry.source, entry.updated) == (row.vtep, row.source, row.updated)
                    assert entry.is_local == (row.vtep is None)


TestFdbAgainstModel = FdbMachine.TestCase
TestFdbAgainstModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


# -- the rules, one example each ---------------------------------------------------------------

ORDER = [Source.LOCAL, Source.DATA, Source.BGP, Source.STATIC]


@pytest.mark.parametrize("old", ORDER)
@pytest.mark.parametrize("new", ORDER)
def test_precedence(old, new):
    fdb = Fdb()
    fdb.learn(1, MAC1, A, old, now=0)
    change = fdb.learn(1, MAC1, B, new, now=1)
    entry = fdb.get(1, MAC1)
    if new.rank >= old.rank or (new, old) == (Source.LOCAL, Source.BGP):
        assert change == MacMoved(1, MAC1, A, old, B, new)
        assert (entry.vtep, entry.source, entry.updated) == (B, new, 1)
    else:  # a lower rank never overrides, and does not even refresh
        assert change is None
        assert (entry.vtep, entry.source, entry.updated) == (A, old, 0)


def test_static_beats_bgp_beats_data_plane():
    assert Source.STATIC.rank > Source.BGP.rank > Source.LOCAL.rank == Source.DATA.rank
    assert [s for s in Source if s.ages] == [Source.LOCAL, Source.DATA]


def test_refresh_without_change_returns_none_and_postpones_aging():
    fdb = Fdb(aging_s=AGING)
    assert fdb.learn(1, MAC1, None, Source.LOCAL, now=0) == MacLearned(1, MAC1, None, Source.LOCAL)
    assert fdb.learn(1, MAC1, None, Source.LOCAL, now=90) is None
    assert fdb.get(1, MAC1).updated == 90
    assert fdb.expire(now=150) == []
    assert fdb.expire(now=190) == [MacRemoved(1, MAC1, None, Source.LOCAL, aged=True)]


def test_same_vtep_other_source_is_a_move():
    fdb = Fdb()
    fdb.learn(1, MAC1, A, Source.DATA, now=0)
    assert fdb.learn(1, MAC1, A, Source.BGP, now=1) == MacMoved(1, MAC1, A, Source.DATA, A, Source.BGP)


def test_local_and_data_move_freely_between_each_other():
    fdb = Fdb()
    fdb.learn(1, MAC1, None, Source.LOCAL, now=0)
    assert fdb.learn(1, MAC1, A, Source.DATA, now=1) == MacMoved(1, MAC1, None, Source.LOCAL, A, Source.DATA)
    assert fdb.learn(1, MAC1, None, Source.LOCAL, now=2) == MacMoved(1, MAC1, A, Source.DATA, None, Source.LOCAL)


def test_same_mac_in_two_vnis_is_two_entries():
    fdb = Fdb()
    fdb.learn(1, MAC1, A, Source.BGP, now=0)
    fdb.learn(2, MAC1, None, Source.LOCAL, now=0)
    assert len(fdb) == 2
    assert fdb.get(1, MAC1).vtep == A and fdb.get(2, MAC1).is_local


def test_aging_applies_only_to_data_plane_entries():
    fdb = Fdb(aging_s=AGING)
    fdb.learn(1, MAC1, A, Source.STATIC, now=0)
    fdb.learn(1, MAC2, B, Source.BGP, now=0)
    fdb.learn(2, MAC1, None, Source.LOCAL, now=0)
    fdb.learn(2, MAC2, A, Source.DATA, now=10)
    assert fdb.expire(now=99) == []
    assert fdb.expire(now=100) == [MacRemoved(2, MAC1, None, Source.LOCAL, aged=True)]  # exactly aging_s old
    assert fdb.expire(now=10**9) == [MacRemoved(2, MAC2, A, Source.DATA, aged=True)]
    assert {(e.vni, e.mac) for e in fdb} == {(1, MAC1), (1, MAC2)}


def test_expire_returns_oldest_first():
    fdb = Fdb(aging_s=1)
    for i, now in enumerate([5, 1, 3, 2, 4]):
        fdb.learn(1, bytes([2, 0, 0, 0, 0, i]), None, Source.LOCAL, now=now)
    assert [c.mac[-1] for c in fdb.expire(now=100)] == [1, 3, 2, 4, 0]


def test_remove_needs_the_source_that_holds_the_entry():
    fdb = Fdb()
    fdb.learn(1, MAC1, A, Source.STATIC, now=0)
    assert fdb.remove(1, MAC1, Source.BGP) is None  # a BGP withdraw never removes static
    assert fdb.get(1, MAC1) is not None
    assert fdb.remove(1, MAC1, Source.STATIC) == MacRemoved(1, MAC1, A, Source.STATIC, aged=False)
    assert fdb.get(1, MAC1) is None
    assert fdb.remove(1, MAC1, Source.STATIC) is None


def test_flush_by_vni_and_source():
    fdb = Fdb()
    fdb.learn(1, MAC1, A, Source.BGP, now=0)
    fdb.learn(1, MAC2, None, Source.LOCAL, now=0)
    fdb.learn(2, MAC1, B, Source.BGP, now=0)
    assert fdb.flush(vni=1, source=Source.BGP) == [MacRemoved(1, MAC1, A, Source.BGP, aged=False)]
    assert set(fdb.flush(source=Source.BGP)) == {MacRemoved(2, MAC1, B, Source.BGP, aged=False)}
    assert fdb.flush() == [MacRemoved(1, MAC2, None, Source.LOCAL, aged=False)]
    assert len(fdb) == 0


def test_iterating_is_a_snapshot():
    fdb = Fdb()
    fdb.learn(1, MAC1, None, Source.LOCAL, now=0)
    fdb.learn(1, MAC2, None, Source.LOCAL, now=0)
    for entry in fdb:
        fdb.remove(entry.vni, entry.mac, entry.source)
    assert len(fdb) == 0


@pytest.mark.parametrize("aging", [0, -1])
def test_aging_must_be_positive(aging):
    with pytest.raises(ValueError, match="aging_s"):
        Fdb(aging_s=aging)


# -- bounds on local entries ----------------------------------------------------------------


def macs(n: int, base: int = 0x020500000000) -> list[bytes]:
    return [(base + i).to_bytes(6, "big") for i in range(n)]


def test_a_full_vni_refuses_new_local_macs_keeps_and_refreshes_the_old_ones():
    fdb = Fdb(aging_s=AGING)
    limit = fdb.limit_local(1, max_macs=3)
    first, extra = macs(3), macs(2, base=0x020600000000)
    assert all(isinstance(fdb.learn(1, m, None, Source.LOCAL, 0), MacLearned) for m in first)
    assert [fdb.learn(1, m, None, Source.LOCAL, 1) for m in extra] == [MacRefused.FULL] * 2
    assert fdb.local_count(1) == 3 and limit.refused_full == 2
    assert all(fdb.learn(1, m, None, Source.LOCAL, 50) is None for m in first)  # refreshed, not refused
    assert fdb.expire(now=120) == []  # the refresh counted
    # other sources and other VNIs are not bounded by it
    assert isinstance(fdb.learn(1, extra[0], A, Source.BGP, 2), MacLearned)
    assert isinstance(fdb.learn(2, extra[0], None, Source.LOCAL, 2), MacLearned)
    # a MAC moving here from a remote VTEP would be one more local entry: refused, stays remote
    assert fdb.learn(1, extra[0], None, Source.LOCAL, 3) is MacRefused.FULL
    assert fdb.get(1, extra[0]).vtep == A
    # a local entry that ages out makes room
    fdb.learn(1, first[0], None, Source.LOCAL, 200)
    gone = fdb.expire(now=200 + AGING - 1)
    assert sorted(r.mac for r in gone if r.vni == 1) == first[1:]
    assert fdb.local_count(1) == 1
    assert isinstance(fdb.learn(1, extra[1], None, Source.LOCAL, 300), MacLearned)


def test_exempt_macs_are_never_refused():
    fdb = Fdb()
    own = b"\x02\x00\x00\x00\x0a\x01"
    fdb.limit_local(1, max_macs=1, rate_per_s=1, burst=1, exempt={own})
    assert isinstance(fdb.learn(1, MAC1, None, Source.LOCAL, 0), MacLearned)
    assert isinstance(fdb.learn(1, own, None, Source.LOCAL, 0), MacLearned)
    assert fdb.local_count(1) == 2


def test_new_local_macs_are_rate_limited_per_vni_by_a_token_bucket():
    fdb = Fdb(aging_s=10_000)
    limit = fdb.limit_local(1, max_macs=1000, rate_per_s=10, burst=5, now=0.0)
    got = [fdb.learn(1, m, None, Source.LOCAL, 0.0) for m in macs(8)]
    assert [isinstance(c, MacLearned) for c in got] == [True] * 5 + [False] * 3
    assert got[5:] == [MacRefused.RATE] * 3 and limit.refused_rate == 3
    # a refused MAC is learned once it sends again after the bucket refilled
    assert isinstance(fdb.learn(1, macs(8)[5], None, Source.LOCAL, 0.1), MacLearned)
    # a second of random MACs at 10,000/s: the rate (plus nothing: the burst was spent) gets in
    learned = sum(isinstance(fdb.learn(1, m, None, Source.LOCAL, 0.1 + i / 10_000), MacLearned)
                  for i, m in enumerate(macs(10_000, base=0x020700000000)))
    print(f"\n10,000 new MACs in 1 s at 10/s, burst 5: {learned} learned, {limit.refused_rate} refused by rate")
    assert 9 <= learned <= 11
    assert fdb.local_count(1) == 6 + learned


def test_a_new_limit_keeps_the_refusal_counts_and_the_entries():
    fdb = Fdb()
    fdb.limit_local(1, max_macs=1, rate_per_s=100)
    fdb.learn(1, MAC1, None, Source.LOCAL, 0)
    fdb.learn(1, MAC2, None, Source.LOCAL, 0)
    limit = fdb.limit_local(1, max_macs=1, rate_per_s=200)
    assert limit.refused_full == 1 and fdb.local_count(1) == 1
    with pytest.raises(ValueError):
        fdb.limit_local(1, max_macs=0)
