"""Flood lists against a naive model: per VNI, VTEP -> the set of reasons it is listed."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from overlayd.fabric.fdb import Source
from overlayd.fabric.flood import FloodLists, FloodMemberAdded, FloodMemberRemoved

VTEPS = ["10.0.0.2", "10.0.0.10", "10.0.0.3", "fd00::2"]  # "10" sorts before "3" as text
vnis = st.sampled_from([1, 2, 3])
vteps = st.sampled_from(VTEPS)
sources = st.sampled_from([Source.STATIC, Source.BGP])


class NaiveFlood:
    def __init__(self):
        self.reasons: dict[tuple[int, str], set[Source]] = {}

    def members(self, vni: int) -> set[str]:
        return {v for (n, v), why in self.reasons.items() if n == vni and why}

    def add(self, vni, vtep, source):
        was = vtep in self.members(vni)
        self.reasons.setdefault((vni, vtep), set()).add(source)
        return None if was else FloodMemberAdded(vni, vtep)

    def remove(self, vni, vtep, source):
        why = self.reasons.get((vni, vtep), set())
        if source not in why:
            return None
        why.discard(source)
        return None if why else FloodMemberRemoved(vni, vtep)

    def replace(self, vni, wanted, source):
        before = self.members(vni)
        for (n, v), why in self.reasons.items():
            if n == vni:
                why.discard(source)
        for v in wanted:
            self.reasons.setdefault((vni, v), set()).add(source)
        after = self.members(vni)
        return [FloodMemberRemoved(vni, v) for v in sorted(before - after)] + [
            FloodMemberAdded(vni, v) for v in sorted(after - before)
        ]


class FloodMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.flood = FloodLists()
        self.model = NaiveFlood()
        self.last: dict[int, tuple[frozenset[str], tuple[str, ...]]] = {}

    @rule(vni=vnis, vtep=vteps, source=sources)
    def add(self, vni, vtep, source):
        assert self.flood.add(vni, vtep, source) == self.model.add(vni, vtep, source)

    @rule(vni=vnis, vtep=vteps, source=sources)
    def remove(self, vni, vtep, source):
        assert self.flood.remove(vni, vtep, source) == self.model.remove(vni, vtep, source)

    @rule(vni=vnis, wanted=st.lists(vteps, max_size=4), source=sources)
    def replace(self, vni, wanted, source):
        assert self.flood.replace(vni, wanted, source) == self.model.replace(vni, wanted, source)

    @invariant()
    def same_lists(self):
        for vni in (1, 2, 3):
            members = self.model.members(vni)
            targets = self.flood.targets(vni)
            assert targets == tuple(sorted(members))
            for vtep in VTEPS:
                assert self.flood.sources(vni, vtep) == frozenset(self.model.reasons.get((vni, vtep), ()))
            # stable: the very same tuple for as long as the membership does not change
            previous = self.last.get(vni)
            if previous is not None and previous[0] == frozenset(members):
                assert targets is previous[1]
            self.last[vni] = (frozenset(members), targets)
        listed = [v for v in self.flood.vnis() if self.flood.targets(v)]
        assert listed == sorted(v for v in (1, 2, 3) if self.model.members(v))


TestFloodAgainstModel = FloodMachine.TestCase
TestFloodAgainstModel.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)


def test_a_vtep_stays_until_its_last_reason_goes():
    flood = FloodLists()
    assert flood.add(100, "10.0.0.2", Source.STATIC) == FloodMemberAdded(100, "10.0.0.2")
    assert flood.add(100, "10.0.0.2", Source.BGP) is None
    assert flood.remove(100, "10.0.0.2", Source.STATIC) is None
    assert flood.targets(100) == ("10.0.0.2",)
    assert flood.sources(100, "10.0.0.2") == {Source.BGP}
    assert flood.remove(100, "10.0.0.2", Source.BGP) == FloodMemberRemoved(100, "10.0.0.2")
    assert flood.targets(100) == ()


def test_remove_of_an_unknown_member_or_reason_is_a_no_op():
    flood = FloodLists()
    assert flood.remove(100, "10.0.0.2", Source.BGP) is None
    flood.add(100, "10.0.0.2", Source.STATIC)
    assert flood.remove(100, "10.0.0.2", Source.BGP) is None
    assert flood.targets(100) == ("10.0.0.2",)


def test_replace_touches_only_its_own_source():
    flood = FloodLists()
    flood.add(100, "10.0.0.2", Source.STATIC)
    assert flood.replace(100, ["10.0.0.3", "10.0.0.2"], Source.BGP) == [FloodMemberAdded(100, "10.0.0.3")]
    assert flood.replace(100, ["10.0.0.4"], Source.BGP) == [
        FloodMemberRemoved(100, "10.0.0.3"),
        FloodMemberAdded(100, "10.0.0.4"),
    ]
    assert flood.targets(100) == ("10.0.0.2", "10.0.0.4")  # the static member stayed
    assert flood.replace(100, [], Source.BGP) == [FloodMemberRemoved(100, "10.0.0.4")]
    assert flood.targets(100) == ("10.0.0.2",)


def test_targets_are_sorted_and_the_same_object_until_a_change():
    flood = FloodLists()
    for vtep in ["10.0.0.3", "10.0.0.1", "10.0.0.2"]:
        flood.add(7, vtep, Source.STATIC)
    first = flood.targets(7)
    assert first == ("10.0.0.1", "10.0.0.2", "10.0.0.3")
    flood.add(7, "10.0.0.1", Source.BGP)  # another reason, same membership
    flood.remove(7, "10.0.0.9", Source.STATIC)
    assert flood.targets(7) is first
    flood.remove(7, "10.0.0.2", Source.STATIC)
    assert flood.targets(7) == ("10.0.0.1", "10.0.0.3")
    assert flood.targets(8) == ()
