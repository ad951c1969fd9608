"""The ARP/ND binding table: examples of its rules, then random operations
against a deliberately naive model (a flat dict keyed by VNI, IP and source)."""

from __future__ import annotations

import ipaddress
from collections import Counter

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.fabric.fdb import Source
from overlayd.fabric.neighbors import (
    LOCAL_FULL,
    Neighbors,
    NeighborLearned,
    NeighborMoved,
    NeighborRemoved,
)

V4 = ipaddress.IPv4Address("192.168.0.2")
V6 = ipaddress.IPv6Address("2001:db8::2")
A, B, C = (bytes.fromhex(f"02000000000{i}") for i in (1, 2, 3))


def test_learn_refresh_move_remove():
    t = Neighbors(aging_s=300)
    assert t.learn(100, V4, A, Source.LOCAL, 1.0) == NeighborLearned(100, V4, A, Source.LOCAL)
    assert t.learn(100, V4, A, Source.LOCAL, 2.0) is None  # a refresh
    assert t.get(100, V4, Source.LOCAL).updated == 2.0
    assert t.learn(100, V4, B, Source.LOCAL, 3.0) == NeighborMoved(100, V4, A, B, Source.LOCAL)
    assert t.lookup(100, V4).mac == B
    assert t.remove(100, V4, Source.LOCAL) == NeighborRemoved(100, V4, B, Source.LOCAL, aged=False)
    assert t.lookup(100, V4) is None and len(t) == 0
    assert t.remove(100, V4, Source.LOCAL) is None


def test_vnis_are_separate_tables():
    t = Neighbors()
    t.learn(100, V4, A, Source.BGP, 0.0)
    assert t.lookup(200, V4) is None
    assert t.learn(200, V4, B, Source.BGP, 0.0) == NeighborLearned(200, V4, B, Source.BGP)
    assert (t.lookup(100, V4).mac, t.lookup(200, V4).mac) == (A, B)


def test_higher_source_speaks_for_the_address_and_the_lower_one_is_kept():
    t = Neighbors()
    t.learn(100, V4, A, Source.LOCAL, 0.0)
    assert t.learn(100, V4, B, Source.BGP, 1.0) == NeighborLearned(100, V4, B, Source.BGP)
    assert t.lookup(100, V4).mac == B and t.lookup(100, V4).source is Source.BGP
    assert t.get(100, V4, Source.LOCAL).mac == A, "the snooped binding stays, shadowed"
    # snooping again neither moves nor overrides the control plane's binding
    assert t.learn(100, V4, A, Source.LOCAL, 2.0) is None
    assert t.lookup(100, V4).mac == B
    t.learn(100, V4, C, Source.STATIC, 3.0)
    assert t.lookup(100, V4).mac == C
    t.remove(100, V4, Source.STATIC)
    t.remove(100, V4, Source.BGP)
    assert t.lookup(100, V4).mac == A, "withdrawn: what we heard here speaks again"
    assert len(t) == 1


def test_a_withdraw_for_another_mac_or_source_changes_nothing():
    t = Neighbors()
    t.learn(100, V6, B, Source.BGP, 0.0)
    t.learn(100, V6, A, Source.LOCAL, 0.0)
    assert t.remove(100, V6, Source.BGP, mac=A) is None, "a stale withdraw of an older route"
    assert t.remove(100, V6, Source.STATIC) is None
    assert t.remove(100, V6, Source.BGP, mac=B) == NeighborRemoved(100, V6, B, Source.BGP, aged=False)
    assert t.lookup(100, V6).mac == A


def test_only_local_bindings_age_and_refreshing_keeps_them():
    t = Neighbors(aging_s=10)
    t.learn(100, V4, A, Source.LOCAL, 0.0)
    t.learn(100, V6, A, Source.LOCAL, 5.0)
    t.learn(100, ipaddress.ip_address("192.168.0.9"), C, Source.BGP, 0.0)
    assert t.expire(9.9) == []
    t.learn(100, V4, A, Source.LOCAL, 8.0)  # snooped again
    assert t.expire(15.0) == [NeighborRemoved(100, V6, A, Source.LOCAL, aged=True)]
    assert t.expire(18.0) == [NeighborRemoved(100, V4, A, Source.LOCAL, aged=True)]
    assert t.expire(1e9) == []
    assert [b.ip for b in t] == [ipaddress.ip_address("192.168.0.9")]


def test_for_mac_lists_every_address_of_a_host():
    t = Neighbors()
    t.learn(100, V6, A, Source.LOCAL, 0.0)
    t.learn(100, V4, A, Source.LOCAL, 0.0)
    t.learn(100, ipaddress.ip_address("192.168.0.1"), B, Source.LOCAL, 0.0)
    t.learn(100, V4, A, Source.BGP, 0.0)
    assert [(b.ip, b.source) for b in t.for_mac(100, A)] == [
        (V4, Source.LOCAL), (V4, Source.BGP), (V6, Source.LOCAL),
    ]
    assert [b.ip for b in t.for_mac(100, A, Source.LOCAL)] == [V4, V6]
    t.learn(100, V6, C, Source.LOCAL, 1.0)  # the address moved to another host
    assert [b.ip for b in t.for_mac(100, A, Source.LOCAL)] == [V4]
    assert [b.ip for b in t.for_mac(100, C)] == [V6]
    assert t.for_mac(200, A) == []


def test_flush_by_vni_and_source():
    t = Neighbors()
    t.learn(100, V4, A, Source.LOCAL, 0.0)
    t.learn(100, V4, B, Source.BGP, 0.0)
    t.learn(200, V4, B, Source.BGP, 0.0)
    assert t.flush(source=Source.BGP) == [
        NeighborRemoved(100, V4, B, Source.BGP, aged=False),
        NeighborRemoved(200, V4, B, Source.BGP, aged=False),
    ]
    assert t.flush(vni=100) == [NeighborRemoved(100, V4, A, Source.LOCAL, aged=False)]
    assert len(t) == 0


def test_data_plane_learning_is_not_a_binding_source_and_aging_must_be_positive():
    with pytest.raises(ValueError):
        Neighbors().learn(100, V4, A, Source.DATA, 0.0)
    with pytest.raises(ValueError):
        Neighbors(aging_s=0)


# -- against a naive model ----------------------------------------------------------


class Model:
    """A flat dict (vni, ip, source) -> (mac, updated); everything done the slow, obvious way.
    `limits`: VNI -> the most local bindings it may hold."""

    def __init__(self, aging_s: float, limits: dict | None = None):
        self.aging_s = aging_s
        self.limits = limits or {}
        self.d: dict = {}

    def learn(self, vni, ip, mac, source, now):
        old = self.d.get((vni, ip, source))
        if old is None and source is Source.LOCAL and vni in self.limits:
            if sum(1 for (v, _, s) in self.d if v == vni and s is Source.LOCAL) >= self.limits[vni]:
                return LOCAL_FULL
        self.d[(vni, ip, source)] = (mac, now)
        if old is None:
            return NeighborLearned(vni, ip, mac, source)
        if old[0] == mac:
            return None
        return NeighborMoved(vni, ip, old[0], mac, source)

    def remove(self, vni, ip, source, mac):
        old = self.d.get((vni, ip, source))
        if old is None or (mac is not None and old[0] != mac):
            return None
        del self.d[(vni, ip, source)]
        return NeighborRemoved(vni, ip, old[0], source, aged=False)

    def expire(self, now):
        stale = sorted(
            (updated, vni, ip.version, ip, mac)
            for (vni, ip, source), (mac, updated) in self.d.items()
            if source is Source.LOCAL and updated <= now - self.aging_s
        )
        for _, vni, _, ip, _ in stale:
            del self.d[(vni, ip, Source.LOCAL)]
        return [NeighborRemoved(vni, ip, mac, Source.LOCAL, aged=True) for _, vni, _, ip, mac in stale]

    def lookup(self, vni, ip):
        found = [(s.rank, m) for (v, i, s), (m, _) in self.d.items() if v == vni and i == ip]
        return max(found)[1] if found else None

    def for_mac(self, vni, mac):
        return sorted(
            (i.version, i, s.rank) for (v, i, s), (m, _) in self.d.items() if v == vni and m == mac
        )


IPS = [
    ipaddress.ip_address(a) for a in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "2001:db8::1", "fe80::1")
]
MACS = [A, B, C]
SOURCES = [Source.LOCAL, Source.BGP, Source.STATIC]
vni = st.sampled_from([100, 200])
ip = st.sampled_from(IPS)
mac = st.sampled_from(MACS)
op = st.one_of(
    st.tuples(st.just("learn"), vni, ip, mac, st.sampled_from(SOURCES)),
    st.tuples(st.just("remove"), vni, ip, st.sampled_from(SOURCES), st.none() | mac),
    st.tuples(st.just("expire")),
    st.tuples(st.just("tick"), st.sampled_from([0.0, 0.5, 1.0, 2.0, 5.0, 7.0])),
)


@settings(max_examples=300)
@given(ops=st.lists(op, max_size=60), limit=st.none() | st.integers(1, 4))
def test_table_agrees_with_naive_model(ops, limit):
    table, model = Neighbors(aging_s=5.0), Model(aging_s=5.0, limits={100: limit} if limit else None)
    if limit:  # VNI 100's local bindings capped (max_local_ips), VNI 200's not
        table.limit_local(100, limit)
    now = 0.0
    for o in ops:
        match o:
            case ("learn", v, i, m, s):
                assert table.learn(v, i, m, s, now) == model.learn(v, i, m, s, now)
            case ("remove", v, i, s, m):
                assert table.remove(v, i, s, m) == model.remove(v, i, s, m)
            case ("expire",):
                assert table.expire(now) == model.expire(now)
            case ("tick", dt):  # time passes, then the periodic aging runs
                now += dt
                assert table.expire(now) == model.expire(now)
        assert len(table) == len(model.d)
        assert +table.counts == Counter((v, s) for v, _, s in model.d)  # (+: without the keys back at 0)
        assert table.local_count(100) == sum(1 for (v, _, src) in model.d if v == 100 and src is Source.LOCAL)
        for v in (100, 200):
            for i in IPS:
                got = table.lookup(v, i)
                assert (got.mac if got else None) == model.lookup(v, i)
            for m in MACS:
                assert [(b.ip.version, b.ip, b.source.rank) for b in table.for_mac(v, m)] == model.for_mac(v, m)
    assert sorted((b.vni, str(b.ip), b.source.rank, b.mac, b.updated) for b in table) == sorted(
        (v, str(i), s.rank, m, u) for (v, i, s), (m, u) in model.d.items()
    )
