"""io.offload: which offloads OVERLAYD_OFFLOAD asks for, and what a missing NumPy turns off."""

from __future__ import annotations

import sys

from overlayd.io import offload


def test_all_by_default_none_on_request_or_a_list():
    assert offload.wanted({}) == set(offload.KNOWN)
    assert offload.wanted({"OVERLAYD_OFFLOAD": "all"}) == set(offload.KNOWN)
    assert offload.wanted({"OVERLAYD_OFFLOAD": "none"}) == set()
    assert offload.wanted({"OVERLAYD_OFFLOAD": " tso, gro "}) == {"tso", "gro"}
    assert offload.wanted({"OVERLAYD_OFFLOAD": "tso,bogus"}) == {"tso"}


def test_plan_needs_numpy_for_tso_and_coalescing(monkeypatch):
    monkeypatch.setattr(offload, "HAVE_NUMPY", False)
    plan = offload.plan(frozenset(offload.KNOWN))
    assert (plan.tso, plan.coalesce, plan.gso, plan.gro, plan.vnet_hdr) == (False, False, True, True, False)
    assert plan.drain
    monkeypatch.setattr(offload, "HAVE_NUMPY", True)
    plan = offload.plan(frozenset({"tso"}))
    assert plan.tso and plan.vnet_hdr and not plan.gro
    assert offload.plan(frozenset()).describe() == "none"


def test_control_messages():
    [(level, kind, data)] = offload.gso_control(1472)
    assert (level, kind, int.from_bytes(data, sys.byteorder)) == (17, 103, 1472)
    assert offload.gro_segment_size([(17, 104, (1472).to_bytes(4, sys.byteorder))], 9000) == 1472
    assert offload.gro_segment_size([], 9000) == 9000
