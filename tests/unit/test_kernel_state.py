"""kernel.state: the diff between desired and actual kernel entries, against a naive model."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.kernel.state import (
    KINDS,
    Address,
    BridgeFdbEntry,
    FdbEntry,
    KernelState,
    Neighbor,
    Op,
    Route,
    diff,
    kind_of,
)

MACS = [bytes([2, 0, 0, 0, 0, n]) for n in range(4)] + [bytes(6)]
VTEPS = [ipaddress.ip_address(f"10.0.0.{n}") for n in range(1, 4)]
PREFIXES = [ipaddress.ip_network(f"10.244.{n}.0/24") for n in range(4)]

routes = st.builds(Route, st.sampled_from(PREFIXES), st.sampled_from([None, *VTEPS]),
                   st.sampled_from([None, "ovl0", "eth0"]), st.booleans())
neighbors = st.builds(Neighbor, st.sampled_from(["ovl0", "br0"]), st.sampled_from(VTEPS), st.sampled_from(MACS),
                      st.booleans())
fdbs = st.one_of(
    st.builds(FdbEntry, st.sampled_from(["vx1", "vx2"]), st.sampled_from(MACS), st.sampled_from(VTEPS)),
    st.builds(BridgeFdbEntry, st.sampled_from(["vx1", "vx2"]), st.sampled_from(MACS)),
)
addresses = st.builds(Address, st.sampled_from(["ovl0", "br0"]),
                      st.sampled_from([ipaddress.ip_interface(f"10.244.{n}.0/32") for n in range(3)]))
states = st.lists(st.one_of(routes, neighbors, fdbs, addresses), max_size=20).map(KernelState.of)


def apply_naively(actual: KernelState, ops: list[Op]) -> KernelState:
    """What the kernel holds after the operations, one at a time."""
    out = actual.copy()
    for op in ops:
        table = out.table(kind_of(op.entry))
        if op.action == "delete":
            assert op.entry.key in table, f"deleting what is not there: {op}"
            del table[op.entry.key]
        elif op.action == "add":
            assert op.entry.key not in table, f"adding what is there: {op}"
            table[op.entry.key] = op.entry
        else:
            assert table.get(op.entry.key) == op.old, f"replacing what is not there: {op}"
            table[op.entry.key] = op.entry
    return out


def as_sets(state: KernelState) -> dict[str, set]:
    return {k: set(state.table(k).values()) for k in KINDS}


@settings(max_examples=300)
@given(states, states)
def test_applying_the_diff_to_actual_gives_desired(desired, actual):
    ops = diff(desired, actual)
    assert as_sets(apply_naively(actual, ops)) == as_sets(desired)


@settings(max_examples=300)
@given(states, states)
def test_the_diff_touches_only_what_differs(desired, actual):
    ops = diff(desired, actual)
    want = sum(1 for e in desired if actual.table(kind_of(e)).get(e.key) != e)
    want += sum(1 for e in actual if e.key not in desired.table(kind_of(e)))
    assert len(ops) == want
    assert diff(desired, desired) == []


@settings(max_examples=200)
@given(states, states, states)
def test_kept_entries_are_never_deleted(desired, actual, keep):
    ops = diff(desired, actual, keep=keep)
    for op in ops:
        if op.action == "delete":
            assert op.entry.key not in keep.table(kind_of(op.entry))
    result = apply_naively(actual, ops)
    for kind in KINDS:  # everything desired is there, and nothing else but what was kept
        assert set(desired.table(kind).items()) <= set(result.table(kind).items())
        extra = set(result.table(kind)) - set(desired.table(kind))
        assert extra <= set(keep.table(kind))


def test_additions_go_bottom_up_and_deletions_top_down():
    route = Route(PREFIXES[1], VTEPS[0], "ovl0", onlink=True)
    neigh = Neighbor("ovl0", VTEPS[0], MACS[0])
    fdb = FdbEntry("ovl0", MACS[0], VTEPS[1])
    addr = Address("ovl0", ipaddress.ip_interface("10.244.0.0/32"))
    up = diff(KernelState.of([route, neigh, fdb, addr]), KernelState())
    assert [kind_of(op.entry) for op in up] == ["addresses", "fdb", "neighbors", "routes"]
    down = diff(KernelState(), KernelState.of([route, neigh, fdb, addr]))
    assert [kind_of(op.entry) for op in down] == ["routes", "neighbors", "fdb", "addresses"]
    assert all(op.action == "delete" for op in down)


def test_a_changed_entry_is_one_replace():
    old = Neighbor("ovl0", VTEPS[0], MACS[0])
    new = Neighbor("ovl0", VTEPS[0], MACS[1])
    (op,) = diff(KernelState.of([new]), KernelState.of([old]))
    assert (op.action, op.entry, op.old) == ("replace", new, old)
    assert str(op) == "replace 10.0.0.1 lladdr 02:00:00:00:00:01 dev ovl0"


def test_entries_print_as_iproute2_would_say_them():
    assert str(Route(PREFIXES[2], VTEPS[1], "ovl0", onlink=True)) == "10.244.2.0/24 via 10.0.0.2 dev ovl0 onlink"
    assert str(Route(PREFIXES[0], device="ovl0")) == "10.244.0.0/24 dev ovl0"
    assert str(FdbEntry("vx1", bytes(6), VTEPS[2])) == "00:00:00:00:00:00 dev vx1 dst 10.0.0.3"
    assert str(BridgeFdbEntry("vx1", MACS[1])) == "02:00:00:00:00:01 dev vx1 master extern_learn"


def test_the_bridges_entry_and_the_vxlan_devices_entry_for_one_mac_are_two_entries():
    state = KernelState.of([FdbEntry("vx1", MACS[1], VTEPS[0]), BridgeFdbEntry("vx1", MACS[1])])
    assert len(state.fdb) == 2
    ops = diff(KernelState.of([FdbEntry("vx1", MACS[1], VTEPS[1])]), state)
    assert [(op.action, op.entry) for op in ops] == [
        ("replace", FdbEntry("vx1", MACS[1], VTEPS[1])), ("delete", BridgeFdbEntry("vx1", MACS[1]))]
