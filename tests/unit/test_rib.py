"""The EVPN RIB: the decision order as examples, then the RIB and the MAC view
against a deliberately naive model on random input.

The model keeps every announcement as a row in a flat list and, when asked,
sorts the rows of a key by the criteria written out as one tuple, with the
MED rule spelled as "no path from the same neighbouring AS has a lower MED".
It knows nothing about Adj-RIB-Ins, incremental updates or events.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections import Counter
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from overlayd.fabric.rib import (
    LOCAL,
    BestPathChanged,
    MacLocationChanged,
    MacSelection,
    Path,
    Rib,
    RibEntry,
    decide,
    decide_mac,
    route_kind,
)
from overlayd.wire.bgp.attributes import (
    AS_SEQUENCE,
    AS_SET,
    AsPathSegment,
    MacMobility,
    PathAttributes,
    RouteTarget,
)
from overlayd.wire.bgp.evpn import ImetRoute, MacIpRoute, PrefixRoute, RouteDistinguisher
from overlayd.wire.bgp.unicast import UnicastRoute

RT100, RT200, RT_OTHER = RouteTarget("65000", 100), RouteTarget("65000", 200), RouteTarget("65000", 999)
MAC1, MAC2 = b"\x02\x00\x00\x00\x00\x01", b"\x02\x00\x00\x00\x00\x02"


def rd(n: int) -> RouteDistinguisher:
    return RouteDistinguisher.for_vtep(IPv4Address(f"10.0.0.{n}"), 100)


def domain_of(path: Path) -> int | None:
    """The importer's job, in miniature: route target -> VNI."""
    for rt in path.attributes.route_targets():
        if rt == RT100:
            return 100
        if rt == RT200:
            return 200
    return None


def seq_path(seq: AsPathSegment | tuple = ()) -> tuple[AsPathSegment, ...]:
    return (AsPathSegment(AS_SEQUENCE, tuple(seq)),) if seq else ()


@dataclass(frozen=True)
class Peer:
    id: str
    router_id: IPv4Address
    address: IPv4Address | IPv6Address | None
    ebgp: bool


PEERS = [
    Peer("p1", IPv4Address("10.0.0.1"), ip_address("10.0.0.1"), False),
    Peer("p2", IPv4Address("10.0.0.2"), ip_address("10.0.0.2"), False),
    Peer("p3", IPv4Address("10.0.0.2"), ip_address("10.0.0.3"), True),  # same router ID as p2
    Peer("p4", IPv4Address("10.0.0.4"), ip_address("fd00::4"), False),
    Peer("p5", IPv4Address("10.0.0.2"), ip_address("9.0.0.5"), False),  # like p2, but a lower address
    Peer(LOCAL, IPv4Address("10.0.0.9"), None, False),
]
PEER = {p.id: p for p in PEERS}


def make_path(route, attrs: PathAttributes, peer: str = "p1", received: float = 0.0) -> Path:
    p = PEER[peer]
    return Path(route, attrs, p.id, p.router_id, p.address, p.ebgp, received)


# -- the decision order, one step at a time ---------------------------------------------
#
# For step i the winner is better at step i and worse at every later step; the
# loser the opposite; both are equal at the earlier steps. So each test shows
# the step decides, and that it outranks everything after it.


def _mm(kw, sticky=None, seq=None):
    cur = kw.get("mm", MacMobility(0))
    kw["mm"] = MacMobility(cur.sequence if seq is None else seq, cur.sticky if sticky is None else sticky)


def _set(**fields):
    def apply(kw, good):
        for name, (g, b) in fields.items():
            kw[name] = g if good else b

    return apply


STEP = {
    "local": lambda kw, good: kw.update(peer=LOCAL, address=None) if good else None,
    "sticky": lambda kw, good: _mm(kw, sticky=good),
    "sequence": lambda kw, good: _mm(kw, seq=7 if good else 3),
    "next_hop": _set(next_hop=(ip_address("10.0.0.1"), ip_address("10.0.0.8"))),
    "local_pref": _set(local_pref=(200, None)),
    "as_path": _set(as_path=(seq_path((65001,)), seq_path((65001, 65002)))),
    "origin": _set(origin=(0, 2)),
    "med": _set(med=(None, 50)),
    "ebgp": _set(ebgp=(True, False)),
    "router_id": _set(router_id=(IPv4Address("1.1.1.1"), IPv4Address("9.9.9.9"))),
    "originator_id": _set(originator_id=(IPv4Address("1.1.1.1"), None)),  # vs router_id 5.5.5.5
    "cluster_list": _set(cluster_list=((), (IPv4Address("1.1.1.1"),))),
    "peer_address": _set(address=(ip_address("10.1.0.1"), ip_address("10.1.0.9"))),
    "peer": _set(peer=("pa", "pb")),
    "route": _set(rd=(rd(1), rd(2))),
}

KEY_ORDER = ["local", "sticky", "sequence", "next_hop", "local_pref", "as_path", "origin", "med",
             "ebgp", "router_id", "cluster_list", "peer_address", "peer"]  # fmt: skip
MAC_ORDER = ["sticky", "sequence", "next_hop", "local", "local_pref", "as_path", "origin", "med",
             "ebgp", "router_id", "cluster_list", "peer_address", "peer", "route"]  # fmt: skip
NON_EVPN_ORDER = [s for s in KEY_ORDER if s not in ("sticky", "sequence", "next_hop")]


def build(order: list[str], step: str, good: bool, route_kind: str = "mac") -> Path:
    kw: dict = {"as_path": seq_path((65001,)), "router_id": IPv4Address("5.5.5.5"), "rd": rd(3)}
    later = order[order.index(step) + 1 :]
    for name in later:
        STEP[name](kw, not good)
    STEP[step](kw, good)
    peer = kw.get("peer", "pz")
    if route_kind == "mac":
        route = MacIpRoute(kw["rd"], MAC1, vni=100)
    else:
        route = PrefixRoute(kw["rd"], ip_network("10.9.0.0/24"))
    attrs = PathAttributes(
        origin=kw.get("origin", 0),
        as_path=kw["as_path"],
        next_hop=kw.get("next_hop", ip_address("10.0.0.5")),
        med=kw.get("med"),
        local_pref=kw.get("local_pref"),
        ext_communities=(RT100,) + ((kw["mm"],) if "mm" in kw else ()),
        originator_id=kw.get("originator_id"),
        cluster_list=kw.get("cluster_list", ()),
    )
    address = kw.get("address", ip_address("10.1.0.5")) if peer != LOCAL else None
    return Path(route, attrs, peer, kw["router_id"], address, kw.get("ebgp", False), 0.0)


def _pair(order, step, route_kind="mac"):
    winner = build(order, step, True, route_kind)
    loser = build(order, step, False, route_kind)
    assert winner != loser
    return winner, loser


def same_key(p: Path, like: Path) -> Path:
    return dataclasses.replace(p, route=like.route)


def tweak(p: Path, peer: str, router_id: str | None = None, **attributes) -> Path:
    """`p` as announced by `peer` (with that router ID), with some attributes changed."""
    rid = IPv4Address(router_id) if router_id else p.peer_router_id
    return dataclasses.replace(
        p, peer=peer, peer_router_id=rid, attributes=dataclasses.replace(p.attributes, **attributes)
    )


BASE = build(KEY_ORDER, "peer", False)  # ties with itself on every step but the peer id


@pytest.mark.parametrize("step", [s for s in KEY_ORDER if s != "local"] + ["originator_id"])
def test_each_step_decides_per_key_and_outranks_the_later_ones(step):
    order = KEY_ORDER if step != "originator_id" else KEY_ORDER[:9] + ["originator_id"] + KEY_ORDER[10:]
    winner, loser = _pair(order, step)
    winner = same_key(winner, loser)
    assert decide([winner, loser]) == winner
    assert decide([loser, winner]) == winner


def test_local_path_wins_per_key_over_everything():
    winner, loser = _pair(KEY_ORDER, "local")
    winner = same_key(winner, loser)
    assert winner.is_local
    assert decide([loser, winner]) == winner


@pytest.mark.parametrize("step", MAC_ORDER)
def test_each_step_decides_per_mac_and_outranks_the_later_ones(step):
    winner, loser = _pair(MAC_ORDER, step)
    assert decide_mac([winner, loser]) == winner
    assert decide_mac([loser, winner]) == winner


def test_local_path_loses_per_mac_to_a_higher_sequence():
    local = build(MAC_ORDER, "local", True)
    remote = build(MAC_ORDER, "sequence", True)
    assert local.sequence < remote.sequence
    assert decide_mac([local, remote]) == remote


@pytest.mark.parametrize("step", [s for s in NON_EVPN_ORDER if s != "local"])
def test_rfc4271_order_for_prefix_routes(step):
    winner, loser = _pair(NON_EVPN_ORDER, step, route_kind="prefix")
    winner = same_key(winner, loser)
    assert decide([loser, winner]) == winner


def test_prefix_routes_ignore_the_evpn_steps():
    """Type-5: LOCAL_PREF beats a lower next hop (the RFC 7432 steps are for type 2 only)."""
    prefix = build(NON_EVPN_ORDER, "peer", False, "prefix")
    low_next_hop = tweak(prefix, "pa", next_hop=ip_address("1.0.0.1"))
    high_pref = tweak(prefix, "pb", local_pref=200)
    assert decide([low_next_hop, high_pref]) == high_pref


def test_missing_local_pref_is_100_and_missing_med_is_0():
    assert decide([tweak(BASE, "pa", local_pref=None), b := tweak(BASE, "pb", local_pref=100)]).peer == "pa"
    assert decide([tweak(BASE, "pa", local_pref=99), b]) == b
    assert decide([tweak(BASE, "pa", med=None), e := tweak(BASE, "pb", med=0)]).peer == "pa"
    assert decide([tweak(BASE, "pa", med=1), e]) == e


def test_as_set_counts_as_one():
    with_set = tweak(BASE, "pb", as_path=(AsPathSegment(AS_SEQUENCE, (65001,)), AsPathSegment(AS_SET, (1, 2, 3))))
    longer = tweak(BASE, "pa", as_path=seq_path((65001, 65002, 65003)))
    assert decide([longer, with_set]) == with_set


def test_med_is_compared_only_within_a_neighbouring_as_unless_always_compare():
    """The classic case: A and B from AS 1, C from AS 2. RFC: A is out (B's MED is lower),
    then B beats C on router ID. Always-compare: C's MED 0 wins outright."""
    a = tweak(BASE, "pa", "1.0.0.1", as_path=seq_path((1,)), med=10)
    b = tweak(BASE, "pb", "1.0.0.2", as_path=seq_path((1,)), med=5)
    c = tweak(BASE, "pc", "1.0.0.3", as_path=seq_path((2,)), med=0)
    for order in itertools.permutations([a, b, c]):
        assert decide(order) == b
        assert decide(order, always_compare_med=True) == c
    # without B, A and C are not compared on MED: A wins on router ID
    assert decide([a, c]) == a


def test_originator_id_replaces_router_id():
    reflected = tweak(BASE, "pb", "9.9.9.9", originator_id=IPv4Address("1.1.1.1"))
    direct = tweak(BASE, "pa", "2.2.2.2")
    assert decide([direct, reflected]) == reflected


def test_empty_decision_is_an_error():
    with pytest.raises(ValueError):
        decide([])
    with pytest.raises(ValueError):
        decide_mac([])


# -- the RIB, by example ------------------------------------------------------------------

ROUTE_A = MacIpRoute(rd(1), MAC1, vni=100)
ROUTE_A_IP = MacIpRoute(rd(1), MAC1, ip_address("192.168.0.1"), vni=100)
ROUTE_B = MacIpRoute(rd(2), MAC1, vni=100)


def attrs(next_hop="10.0.0.1", seq=None, sticky=False, rt=RT100, **kw) -> PathAttributes:
    ext = (rt,) if rt else ()
    if seq is not None or sticky:
        ext += (MacMobility(seq or 0, sticky),)
    return PathAttributes(next_hop=ip_address(next_hop), ext_communities=ext, **kw)


def test_update_withdraw_and_replace():
    rib = Rib()
    p1 = make_path(ROUTE_A, attrs(), "p1")
    assert rib.update(p1, 1.0) == [BestPathChanged(ROUTE_A.key, None, p1)]
    assert rib.best(ROUTE_A.key) == p1 and len(rib) == 1
    # the same announcement again changes nothing, and keeps the first `received`
    assert rib.update(make_path(ROUTE_A, attrs(), "p1", received=5.0), 5.0) == []
    assert rib.best(ROUTE_A.key).received == 0.0
    # a worse path from p2 changes nothing; a better one wins
    p2_worse = make_path(ROUTE_A, attrs(local_pref=50), "p2")
    assert rib.update(p2_worse, 2.0) == []
    p2 = make_path(ROUTE_A, attrs(local_pref=300), "p2")
    assert rib.update(p2, 3.0) == [BestPathChanged(ROUTE_A.key, p1, p2)]
    assert rib.best_since(ROUTE_A.key) == 3.0
    # new attributes from the best peer: a change even though the peer is the same
    p2b = make_path(ROUTE_A, attrs(local_pref=300, origin=2), "p2")
    assert rib.update(p2b, 4.0) == [BestPathChanged(ROUTE_A.key, p2, p2b)]
    assert rib.withdraw("p2", ROUTE_A.key, 5.0) == [BestPathChanged(ROUTE_A.key, p2b, p1)]
    assert rib.withdraw("p2", ROUTE_A.key, 5.0) == []
    assert rib.withdraw("p1", ROUTE_A.key, 6.0) == [BestPathChanged(ROUTE_A.key, p1, None)]
    assert len(rib) == 0 and rib.best(ROUTE_A.key) is None and rib.peers() == []


def test_drop_peer_withdraws_everything_at_once():
    rib = Rib(domain_of=domain_of)
    a = make_path(ROUTE_A, attrs("10.0.0.1", seq=2), "p1")
    a_ip = make_path(ROUTE_A_IP, attrs("10.0.0.1", seq=2), "p1")
    b = make_path(ROUTE_B, attrs("10.0.0.2", seq=1), "p2")
    for p in (a, a_ip, b):
        rib.update(p, 0.0)
    assert rib.macs.winner(100, MAC1).next_hop == ip_address("10.0.0.1")
    changes = rib.drop_peer("p1", 1.0)
    assert changes == [
        BestPathChanged(ROUTE_A.key, a, None),
        BestPathChanged(ROUTE_A_IP.key, a_ip, None),
        MacLocationChanged(100, MAC1, rib_old := changes[-1].old, b),
    ]
    assert rib_old in (a, a_ip) and changes[-1].moved  # one move, straight to where it ends up
    assert rib.paths_from("p1") == [] and rib.peers() == ["p2"]
    assert rib.drop_peer("p1", 2.0) == []


def test_iteration_marks_the_best_path_of_each_key():
    rib = Rib()
    p1 = make_path(ROUTE_A, attrs(), "p1")
    p2 = make_path(ROUTE_A, attrs(local_pref=300), "p2")
    p3 = make_path(ROUTE_B, attrs(), "p3")
    for p in (p1, p2, p3):
        rib.update(p, 0.0)
    assert list(rib) == [RibEntry(p2, True), RibEntry(p1, False), RibEntry(p3, True)]
    assert rib.paths(ROUTE_A.key) == (p1, p2)
    assert set(rib.bests()) == {p2, p3}


def test_mac_view_groups_keys_from_different_vteps_and_skips_unimported():
    rib = Rib(domain_of=domain_of)
    a = make_path(ROUTE_A, attrs("10.0.0.1", seq=1), "p1")
    b = make_path(ROUTE_B, attrs("10.0.0.2", seq=2), "p2")
    rib.update(a, 0.0)
    changes = rib.update(b, 1.0)
    assert changes[-1] == MacLocationChanged(100, MAC1, a, b) and changes[-1].moved
    assert rib.macs.candidates(100, MAC1) == (a, b)
    other = make_path(MacIpRoute(rd(3), MAC2), attrs("10.0.0.3", rt=RT_OTHER), "p3")
    assert rib.update(other, 2.0) == [BestPathChanged(other.key, None, other)]
    assert len(rib.macs) == 1
    # the import policy changes: RT 65000:999 now maps to 100 and 65000:100 to nothing
    moved = rib.set_domain_of(lambda p: 100 if RT_OTHER in p.attributes.route_targets() else None)
    assert moved == [MacLocationChanged(100, MAC2, None, other), MacLocationChanged(100, MAC1, b, None)]
    assert [(d, m) for d, m, _ in rib.macs] == [(100, MAC2)]


def test_mac_location_changed_says_whether_the_mac_moved():
    a = make_path(ROUTE_A, attrs("10.0.0.1", seq=1), "p1")
    a2 = make_path(ROUTE_A, attrs("10.0.0.1", seq=2), "p1")
    b = make_path(ROUTE_B, attrs("10.0.0.2", seq=3), "p2")
    assert not MacLocationChanged(100, MAC1, a, a2).moved
    assert MacLocationChanged(100, MAC1, a, b).moved
    assert MacLocationChanged(100, MAC1, None, a).moved


# -- the naive model ------------------------------------------------------------------------


def naive_domain(path):
    rts = [c for c in path.attributes.ext_communities if isinstance(c, RouteTarget)]
    return 100 if RT100 in rts else 200 if RT200 in rts else None


def naive_mobility(path):
    for c in path.attributes.ext_communities:
        if isinstance(c, MacMobility):
            return c.sequence, c.sticky
    return 0, False


def naive_neighbour_as(path):
    segments = path.attributes.as_path
    if segments and segments[0].kind == AS_SEQUENCE:
        return segments[0].asns[0]
    return "our own AS"


def naive_addr(a):
    return (1, 0, 0) if a is None else (0, a.version, int(a))


def naive_best(paths, always_compare_med, per_mac=False):
    """Sort by everything before MED; keep the ones tied with the first; drop those that a
    path from the same neighbouring AS (any path, if always comparing) beats on MED; sort
    the rest by everything after MED."""
    if not paths:
        return None

    def evpn(p):
        if not isinstance(p.route, MacIpRoute):
            return ()
        seq, sticky = naive_mobility(p)
        return (0 if sticky else 1, -seq, naive_addr(p.attributes.next_hop))

    def before_med(p):
        lp = 100 if p.attributes.local_pref is None else p.attributes.local_pref
        local = 0 if p.peer == LOCAL else 1
        rfc = (-lp, p.attributes.as_path_length(), p.attributes.origin)
        return evpn(p) + (local,) + rfc if per_mac else (local,) + evpn(p) + rfc

    def med(p):
        return p.attributes.med or 0

    def after_med(p):
        rid = p.attributes.originator_id or p.peer_router_id
        r = p.route
        route = (r.rd.kind, r.rd.admin, r.rd.number, r.ethernet_tag, r.ip is not None, naive_addr(r.ip)) if per_mac else ()
        return (0 if p.ebgp else 1, int(rid), len(p.attributes.cluster_list), naive_addr(p.peer_address), p.peer) + route

    ranked = sorted(paths, key=before_med)
    top = [p for p in ranked if before_med(p) == before_med(ranked[0])]
    survivors = [
        p for p in top
        if not any(med(q) < med(p) and (always_compare_med or naive_neighbour_as(q) == naive_neighbour_as(p)) for q in top)
    ]  # fmt: skip
    return sorted(survivors, key=after_med)[0]


class NaiveRib:
    def __init__(self, always_compare_med):
        self.always = always_compare_med
        self.rows: list[Path] = []

    def update(self, path):
        """Replace the peer's row for the key; an identical announcement keeps the first `received`."""
        for r in self.rows:
            if r.peer == path.peer and r.key == path.key and dataclasses.replace(r, received=path.received) == path:
                return
        self.rows = [r for r in self.rows if not (r.peer == path.peer and r.key == path.key)] + [path]

    def withdraw(self, peer, key):
        self.rows = [r for r in self.rows if not (r.peer == peer and r.key == key)]

    def drop_peer(self, peer):
        self.rows = [r for r in self.rows if r.peer != peer]

    def keys(self):
        return {r.key for r in self.rows}

    def best(self, key):
        return naive_best([r for r in self.rows if r.key == key], self.always)

    def mac_winners(self):
        groups: dict = {}
        for key in self.keys():
            best = self.best(key)
            if isinstance(best.route, MacIpRoute) and naive_domain(best) is not None:
                groups.setdefault((naive_domain(best), best.route.mac), []).append(best)
        return {g: naive_best(ps, self.always, per_mac=True) for g, ps in groups.items()}


# -- random input ------------------------------------------------------------------------------

ROUTES = [
    MacIpRoute(rd(1), MAC1, vni=100),
    MacIpRoute(rd(1), MAC1, ip_address("192.168.0.1"), vni=100),
    MacIpRoute(rd(2), MAC1, vni=100),
    MacIpRoute(rd(3), MAC1, vni=100),
    MacIpRoute(rd(2), MAC2, ip_address("fd00::10"), vni=100),
    MacIpRoute(rd(3), MAC2, vni=100, ethernet_tag=5),
    ImetRoute(rd(1), ip_address("10.0.0.1")),
    PrefixRoute(rd(2), ip_network("10.9.0.0/24")),
    UnicastRoute(ip_network("10.244.1.0/24")),
    UnicastRoute(ip_network("fd00:244::/64")),
]
ADDRS = [ip_address(a) for a in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "fd00::1")]
RIDS = [None, IPv4Address("10.0.0.1"), IPv4Address("10.0.0.3")]

# Values repeat so that paths often tie on the early steps and the late ones get to decide.
any_attributes = st.builds(
    PathAttributes,
    origin=st.sampled_from([0, 0, 0, 1, 2]),
    as_path=st.sampled_from([(), (), seq_path((65001,)), seq_path((65002,)), seq_path((65001, 65003)),
                             (AsPathSegment(AS_SET, (65001, 65002)),)]),  # fmt: skip
    next_hop=st.sampled_from(ADDRS[:1] * 3 + ADDRS),
    med=st.sampled_from([None, None, 0, 5, 10]),
    local_pref=st.sampled_from([None, None, 100, 200]),
    ext_communities=st.tuples(
        st.sampled_from([(RT100,), (RT100,), (RT200,), (RT_OTHER,), ()]),
        st.one_of(st.just(()), st.builds(lambda s, k: (MacMobility(s, k),), st.integers(0, 2), st.booleans())),
    ).map(lambda t: t[0] + t[1]),
    originator_id=st.sampled_from(RIDS),
    cluster_list=st.sampled_from([(), (), (IPv4Address("10.0.0.1"),), (IPv4Address("10.0.0.1"), IPv4Address("10.0.0.2"))]),
)
late_only_attributes = st.builds(
    lambda oid, clusters, mm: PathAttributes(
        next_hop=ADDRS[0], ext_communities=(RT100,) + mm, originator_id=oid, cluster_list=clusters
    ),
    st.sampled_from(RIDS),
    st.sampled_from([(), (IPv4Address("10.0.0.1"),)]),
    st.sampled_from([(), (MacMobility(1),)]),
)
attributes = st.one_of(any_attributes, late_only_attributes)
peers = st.sampled_from([p.id for p in PEERS])
routes = st.sampled_from(ROUTES)


class RibAgainstModel(RuleBasedStateMachine):
    always_compare_med = False

    def __init__(self):
        super().__init__()
        self.rib = Rib(always_compare_med=self.always_compare_med, domain_of=domain_of)
        self.model = NaiveRib(self.always_compare_med)
        self.now = 0.0
        self.replayed: dict = {}
        self.replayed_macs: dict = {}

    def apply(self, changes):
        seen_mac = False
        for c in changes:
            if isinstance(c, BestPathChanged):
                assert not seen_mac, "BestPathChanged after MacLocationChanged"
                assert c.old != c.new
                assert self.replayed.get(c.key) == c.old
                if c.new is None:
                    del self.replayed[c.key]
                else:
                    self.replayed[c.key] = c.new
            else:
                seen_mac = True
                group = (c.domain, c.mac)
                assert c.old != c.new
                assert self.replayed_macs.get(group) == c.old
                if c.new is None:
                    del self.replayed_macs[group]
                else:
                    self.replayed_macs[group] = c.new

    @rule(dt=st.floats(0, 10))
    def tick(self, dt):
        self.now += dt

    @rule(peer=peers, route=routes, announced=attributes)
    def update(self, peer, route, announced):
        path = make_path(route, announced, peer, self.now)
        self.model.update(path)
        self.apply(self.rib.update(path, self.now))

    @rule(peer=peers, route=routes)
    def withdraw(self, peer, route):
        self.model.withdraw(peer, route.key)
        self.apply(self.rib.withdraw(peer, route.key, self.now))

    @rule(peer=peers)
    def drop_peer(self, peer):
        self.model.drop_peer(peer)
        self.apply(self.rib.drop_peer(peer, self.now))

    @invariant()
    def best_paths_agree(self):
        model = {k: self.model.best(k) for k in self.model.keys()}
        assert {r.key: self.rib.best(r.key) for r in ROUTES if self.rib.best(r.key)} == model
        assert self.replayed == model
        assert len(self.rib) == len(model)

    @invariant()
    def mac_winners_agree(self):
        model = self.model.mac_winners()
        assert {(d, m): p for d, m, p in self.rib.macs} == model
        assert self.replayed_macs == model

    @invariant()
    def every_path_is_listed_once(self):
        rows = list(self.rib)
        assert sorted(map(repr, (e.path for e in rows))) == sorted(map(repr, self.model.rows))
        assert {e.path for e in rows if e.best} == set(self.replayed.values())

    @invariant()
    def counts_by_peer_and_kind_agree(self):
        model = Counter((p.peer, route_kind(p.route.key)) for p in self.model.rows)
        assert +self.rib.counts == model  # (+: without the keys that went back to 0)


class AlwaysCompareMedAgainstModel(RibAgainstModel):
    always_compare_med = True


TestRibAgainstModel = RibAgainstModel.TestCase
TestRibAgainstModel.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestAlwaysCompareMed = AlwaysCompareMedAgainstModel.TestCase
TestAlwaysCompareMed.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)


# -- order of arrival does not matter ---------------------------------------------------------

announcements = st.lists(st.tuples(peers, routes, attributes), max_size=25).map(
    lambda xs: list({(peer, route.key): (peer, route, a) for peer, route, a in xs}.values())
)


@settings(max_examples=300, deadline=None)
@given(data=st.data(), anns=announcements, always=st.booleans())
def test_shuffled_arrival_gives_the_same_best_paths(data, anns, always):
    shuffled = data.draw(st.permutations(anns))
    ribs = []
    for order in (anns, shuffled):
        rib = Rib(always_compare_med=always, domain_of=domain_of)
        for t, (peer, route, a) in enumerate(order):
            rib.update(make_path(route, a, peer), float(t))
        ribs.append(rib)
    first, second = ribs
    assert {r.key: first.best(r.key) for r in ROUTES} == {r.key: second.best(r.key) for r in ROUTES}
    assert sorted(map(repr, first.macs)) == sorted(map(repr, second.macs))


@settings(max_examples=300, deadline=None)
@given(paths=st.lists(st.tuples(peers, attributes), min_size=1, max_size=6, unique_by=lambda t: t[0]),
       data=st.data(), always=st.booleans())  # fmt: skip
def test_decide_is_a_function_of_the_set(paths, data, always):
    built = [make_path(ROUTES[0], a, peer) for peer, a in paths]
    shuffled = data.draw(st.permutations(built))
    assert decide(built, always_compare_med=always) == decide(shuffled, always_compare_med=always)
    assert decide_mac(built, always_compare_med=always) == decide_mac(shuffled, always_compare_med=always)
    assert decide(built, always_compare_med=always) == naive_best(built, always)


def test_mac_selection_on_its_own():
    sel = MacSelection(domain_of)
    a = make_path(ROUTE_A, attrs("10.0.0.1", seq=1), "p1")
    b = make_path(ROUTE_B, attrs("10.0.0.2", seq=1), "p2")
    assert sel.apply([BestPathChanged(a.key, None, a), BestPathChanged(b.key, None, b), "ignored"]) == [
        MacLocationChanged(100, MAC1, None, a)  # same sequence: lowest next hop
    ]
    assert sel.apply([BestPathChanged(a.key, a, None)]) == [MacLocationChanged(100, MAC1, a, b)]
    assert sel.winner(100, MAC1) == b and sel.winner(200, MAC1) is None
