"""tools/bench_report.py on fixed inputs: per-pair ratios, median, spread, the noisy flag, Markdown."""

from __future__ import annotations

import json

from tools import bench, bench_report


def test_pair_ratios_skip_missing_sides_and_zero_references():
    assert bench_report.pair_ratios([2.0, None, 3.0, 4.0], [4.0, 1.0, 0.0, 8.0]) == [0.5, 0.5]
    assert bench_report.pair_ratios([], []) == []


def test_spread_median_min_max_and_the_30_percent_rule():
    s = bench_report.spread([0.5, 0.4, 0.6, 0.45, 0.55])
    assert s == {"median": 0.5, "min": 0.4, "max": 0.6, "noisy": True}  # 0.2 > 0.3 * 0.5
    assert not bench_report.spread([1.0, 1.1, 0.9, 1.05, 0.95])["noisy"]  # 0.2 < 0.3
    assert not bench_report.spread([1.0, 1.3])["noisy"]  # 0.3 is not wider than 0.3 * 1.15
    assert bench_report.spread([2.0, 2.0, 2.0]) == {"median": 2.0, "min": 2.0, "max": 2.0, "noisy": False}
    assert not bench_report.spread([0.0, 0.0])["noisy"]  # a zero median flags nothing


def test_summarize_takes_the_median_of_per_pair_ratios_not_the_ratio_of_medians():
    runs = {"kernel": {"tcp_a_to_b_gbit_s": [10.0, 20.0, 10.0, 20.0, 10.0]},
            "overlayd": {"tcp_a_to_b_gbit_s": [1.0, 4.0, 2.0, 4.0, 1.0]}}
    s = bench.summarize(runs)
    # per pair 0.1, 0.2, 0.2, 0.2, 0.1 -> 0.2; medians would give 2 / 10 = 0.2 too, so check the spread
    assert s["spreads"]["overlayd"]["tcp_a_to_b_gbit_s"] == {"median": 0.2, "min": 0.1, "max": 0.2, "noisy": True}
    assert s["ratios"]["overlayd"]["tcp_a_to_b_gbit_s"] == 0.2
    assert s["ratios"]["overlayd"]["udp64_pps"] is None  # not measured


def results() -> dict:
    runs = {"kernel": {"tcp_a_to_b_gbit_s": [10.0] * 5, "ping_p50_us": [30.0] * 5},
            "overlayd": {"tcp_a_to_b_gbit_s": [2.0, 2.1, 1.9, 2.0, 2.0], "ping_p50_us": [300, 150, 330, 300, 300]}}
    return {
        "when": "2026-12-03T14:00:00+00:00",
        "machine": {"cpu_model": "AMD EPYC 7B13", "cpus": 2, "kernel": "6.18.0", "python": "3.11.7",
                    "loadavg_before": [2.0, 1.5, 1.25], "loadavg_after": [3.0, 2.0, 1.5]},
        "config": {"runs": 5, "seconds": 3, "pings": 300, "parts": ["data", "routed", "table"], "variants": []},
        "runs": runs,
        "summary": bench.summarize(runs),
        "backends": {"routed": {"ratios": {"userspace": {
            "tcp_gbit_s": {"median": 0.03, "min": 0.028, "max": 0.031, "noisy": False, "reference": "vxlan-by-hand"}}}}},
        "table_size": {"small": 10, "large": 100_000, "rounds": 9,
                       "ratio": {"median": 0.98, "min": 0.9, "max": 1.05, "noisy": False}},
    }


def test_ratio_rows_cover_l2_routed_and_table_size_with_stable_ids():
    rows = bench_report.ratio_rows(results(), bench.DATA_METRICS)
    by_id = {r["id"]: r for r in rows}
    assert set(by_id) == {"overlayd/kernel tcp_a_to_b_gbit_s", "overlayd/kernel ping_p50_us",
                          "routed userspace/vxlan-by-hand tcp_gbit_s", "switch fdb large/small frames_per_s"}
    assert by_id["overlayd/kernel tcp_a_to_b_gbit_s"]["median"] == 0.2
    assert by_id["overlayd/kernel ping_p50_us"]["noisy"]  # 5x .. 11x around 10x
    assert by_id["overlayd/kernel ping_p50_us"]["better"] == "lower"
    assert by_id["switch fdb large/small frames_per_s"]["pairs"] == 9
    assert by_id["routed userspace/vxlan-by-hand tcp_gbit_s"]["pairs"] == 5


def test_markdown_names_the_machine_flags_noise_and_puts_the_last_run_beside():
    res = results()
    rows = bench_report.ratio_rows(res, bench.DATA_METRICS)
    before = json.loads(json.dumps(res))
    before["when"] = "2026-12-02T10:00:00+00:00"
    before["summary"]["spreads"]["overlayd"]["tcp_a_to_b_gbit_s"]["median"] = 0.1
    old_rows = bench_report.ratio_rows(before, bench.DATA_METRICS)[:1]
    md = bench_report.render_markdown(res, rows, before, old_rows)
    lines = md.splitlines()
    assert lines[0] == "# make bench, 2026-12-03T14:00:00+00:00"
    assert ("Machine: AMD EPYC 7B13, 2 cores, Linux 6.18.0, Python 3.11.7; load average (1, 5, 15 min) "
            "before 2.00 1.50 1.25, after 3.00 2.00 1.50.") in lines
    assert "| ratio | against | better | median | min-max | pairs | verdict | last run (2026-12-02T10:00:00+00:00) |" in lines
    assert "| L2 TCP 1 stream a->b | kernel | higher | 0.200 | 0.190-0.210 | 5 | ok | 0.100 |" in lines
    assert "| L2 ping RTT p50 | kernel | lower | 10.000 | 5.000-11.000 | 5 | noisy: not a result | - |" in lines
    assert "| routed pod to pod, TCP 1 stream | vxlan-by-hand | higher | 0.030 | 0.028-0.031 | 5 | ok | - |" in lines
    assert ("| Switch 64 B known unicast, FDB 100,000 vs 10 entries | 10 entries | higher | 0.980 | 0.900-1.050 "
            "| 9 | ok | - |") in lines
    assert "last run" not in bench_report.render_markdown(res, rows)  # no previous run: no column


def test_text_table_has_the_flag_and_the_last_run():
    res = results()
    rows = bench_report.ratio_rows(res, bench.DATA_METRICS)
    text = bench_report.render_ratios(rows, rows)
    assert text.splitlines()[0].split() == ["ratio", "(median", "of", "pairs)", "against", "median", "min-max",
                                            "pairs", "flag", "last", "run"]
    p50 = next(line for line in text.splitlines() if "ping RTT p50" in line)
    assert p50.split()[-3:] == ["noisy", "10.000", "(noisy)"]


def test_previous_results_is_the_newest_readable_json(tmp_path):
    assert bench_report.previous_results(tmp_path) is None
    (tmp_path / "bench-20261201-100000.json").write_text('{"when": "a"}')
    (tmp_path / "bench-20261202-100000.json").write_text('{"when": "b"}')
    (tmp_path / "bench-20261203-100000.json").write_text("not json")
    assert bench_report.previous_results(tmp_path)["when"] == "b"
    assert bench_report.previous_results(tmp_path, before="bench-20261202-100000.json")["when"] == "a"


def test_fewer_than_five_pairs_is_not_a_result_either():
    row = {"median": 1.0, "min": 1.0, "max": 1.0, "noisy": False, "pairs": 1}
    assert bench_report.flag(row) == "few pairs" and bench_report.flag(row | {"pairs": 5}) == ""
    assert bench_report.flag(row | {"noisy": True, "pairs": 9}) == "noisy"
    assert "after" not in bench_report.machine_line({"loadavg_before": [1.0, 1.0, 1.0]})
