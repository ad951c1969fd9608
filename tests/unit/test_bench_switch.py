"""tools/bench_switch.py runs and reports a time for every case (the numbers: `python -m tools.bench_switch`)."""

from __future__ import annotations

from tools import bench_switch


def test_every_case_is_measured():
    results = bench_switch.measure(number=50, repeat=1)
    assert set(results) == set(bench_switch.operations()) | {"from_tap, new source MAC"}
    assert all(us > 0 for us in results.values())


def test_the_frames_go_where_the_case_says():
    sw = bench_switch.make_switch()
    sw.from_tap(bench_switch.VNI, bench_switch.frame(bench_switch.BROADCAST, bench_switch.H1), 0.0)
    _, unicast, _ = sw.from_tap(bench_switch.VNI, bench_switch.frame(bench_switch.REMOTE, bench_switch.H1), 0.0)
    _, flooded, _ = sw.from_tap(bench_switch.VNI, bench_switch.frame(bench_switch.UNKNOWN, bench_switch.H1), 0.0)
    assert len(unicast) == 1 and len(flooded) == 2
    assert len(bench_switch.frame(bench_switch.REMOTE, bench_switch.H1)) == 1500


def test_against_another_tree_measures_both_sides(tmp_path):
    import shutil
    from pathlib import Path

    import overlayd

    shutil.copytree(Path(overlayd.__file__).parent, tmp_path / "overlayd")
    table = bench_switch.compare(str(tmp_path), rounds=1, number=20)
    assert set(table) == set(bench_switch.operations()) | {"from_tap, new source MAC"}
    assert all(a > 0 and b > 0 for a, b in table.values())
    import sys
    assert sys.modules["overlayd"] is overlayd  # ours again afterwards
