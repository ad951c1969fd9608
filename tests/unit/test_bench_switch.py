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


def test_known_unicast_cost_does_not_grow_with_the_fdb():
    """100,000 FDB entries against 10: the known-unicast lookup must not be O(n). The bound (3x)
    is generous on purpose: this catches a linear scan (10,000x), it does not measure."""
    small, large = bench_switch.table_switch(10), bench_switch.table_switch(100_000)
    assert len(large[0].fdb) >= 100_000
    best = {"small": float("inf"), "large": float("inf")}
    for _ in range(7):  # interleaved; the best of each side, as on a shared machine
        best["small"] = min(best["small"], bench_switch.known_unicast_us(*small, 2000))
        best["large"] = min(best["large"], bench_switch.known_unicast_us(*large, 2000))
    print(f"known unicast: {best['small']:.2f} us/frame with 10 entries, {best['large']:.2f} with 100,000")
    assert best["large"] < 3 * best["small"]


def test_table_size_reports_a_ratio_with_its_spread():
    got = bench_switch.table_size(small=10, large=200, rounds=2, number=640)
    assert (got["small"], got["large"], got["rounds"], got["frame_bytes"]) == (10, 200, 2, 64)
    assert len(got["frames_per_s"]["small"]) == len(got["frames_per_s"]["large"]) == 2
    r = got["ratio"]
    assert r["min"] <= r["median"] <= r["max"] and set(r) == {"median", "min", "max", "noisy"}
