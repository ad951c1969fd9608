"""tools/bench.py's arguments and report, on canned numbers (the benchmark itself is `make bench`)."""

from __future__ import annotations

import json

import pytest

from tools import bench


def canned() -> dict:
    runs = {
        "kernel": {"tcp_a_to_b_gbit_s": [10.0, 12.0, 11.0], "tcp_b_to_a_gbit_s": [9.0, 9.0, 9.0],
                   "udp64_pps": [100_000, 90_000, 110_000], "ping_p50_us": [40, 30, 35],
                   "ping_p99_us": [90, 80, 100], "cpu_s_per_gb": [None, None, None]},
        "overlayd": {"tcp_a_to_b_gbit_s": [2.0, 3.0, 2.75], "tcp_b_to_a_gbit_s": [1.8, 1.8, 1.8],
                     "udp64_pps": [70_000, 60_000, 80_000], "ping_p50_us": [140, 140, 140],
                     "ping_p99_us": [400, 300, 500], "cpu_s_per_gb": [2.0, 1.0, 3.0]},
    }
    return {
        "config": {"runs": 3},
        "runs": runs,
        "summary": bench.summarize(runs),
        "control_plane": {
            "fdb_bytes_per_100k": {"value": 21_500_000.0},
            "sim_converge_100_nodes_s": {"value": 0.25},
            "sim_bgp_converge_100_nodes_s": {"value": 3.5},
            "evpn_routes_in_per_s": {"value": 6500.0, "runs": [6500.0], "routes": 20_000},
            "evpn_routes_out_per_s": {"value": None, "skipped": "gobgpd not installed"},
        },
        "overlayd_offloads": {"overlayd": {"tso": True, "gro": False}},
    }


def test_defaults_and_quick():
    args = bench.parse_args([])
    assert (args.runs, args.seconds, args.pings, args.only, args.mode) == (5, 5, 1000, "all", "both")
    assert args.parts == list(bench.PARTS) and args.routed_mode_list == bench.ROUTED_DEFAULT
    quick = bench.parse_args(["--quick"])
    assert quick.runs == 1 and quick.seconds <= 2 and quick.pings < 1000
    assert bench.parse_args(["--runs", "5"]).runs == 5
    with pytest.raises(SystemExit):
        bench.parse_args(["--runs", "0"])


def test_medians_and_ratios():
    summary = canned()["summary"]
    assert summary["medians"]["kernel"]["tcp_a_to_b_gbit_s"] == 11.0
    assert summary["medians"]["overlayd"]["tcp_a_to_b_gbit_s"] == 2.75
    ratios = summary["ratios"]["overlayd"]
    assert ratios["tcp_a_to_b_gbit_s"] == 0.25
    assert ratios["udp64_pps"] == 0.7
    assert ratios["ping_p50_us"] == 4.0
    assert ratios["cpu_s_per_gb"] is None  # the kernel's has no process to measure
    assert summary["medians"]["overlayd"]["cpu_s_per_gb"] == 2.0


def test_percentile_nearest_rank():
    values = list(range(1, 1001))
    assert bench.percentile(values, 50) == 500
    assert bench.percentile(values, 99) == 990
    assert bench.percentile([7.0], 99) == 7.0


def test_table_names_every_metric_and_ratio():
    results = canned()
    table = bench.render_table(results)
    for metric in bench.DATA_METRICS + bench.CONTROL_METRICS:
        assert metric.label in table
    assert "0.250" in table and "0.700" in table and "4.000" in table
    assert "21.50" in table  # MB per 100k FDB entries
    assert "skipped (gobgpd not installed)" in table
    assert "6,500" in table
    assert "overlayd offloads: tso" in table
    json.dumps(results)  # what main() writes


def test_variants_get_a_column_and_ratios_each():
    results = canned()
    runs = results["runs"]
    runs["overlayd[none]"] = {k: [v / 2 if v else v for v in vals] for k, vals in runs["overlayd"].items()}
    results["summary"] = bench.summarize(runs)
    assert results["summary"]["ratios"]["overlayd[none]"]["tcp_a_to_b_gbit_s"] == 0.125
    header = bench.render_table(results).splitlines()[0]
    assert "overlayd[none]/kernel" in header and "overlayd/kernel" in header
    args = bench.parse_args(["--variants", "none,tso+gso,all"])
    assert args.variant_list == ["none", "tso,gso", "all"]


def test_chart_is_optional(tmp_path):
    path = tmp_path / "chart.png"
    drawn = bench.render_chart(canned(), path)
    assert drawn == path.exists()


def test_control_plane_benches_are_registered():
    keys = [key for keys in bench.CONTROL_BENCHES for key in keys]
    assert sorted(keys) == sorted(m.key for m in bench.CONTROL_METRICS)
    assert bench.bench_sim_convergence(5) > 0
    assert bench.bench_sim_bgp_convergence(5) > 0


def test_evpn_route_counts():
    args = bench.parse_args([])
    assert (args.evpn_routes, args.evpn_in_routes) == (100_000, 20_000)
    quick = bench.parse_args(["--quick"])
    assert quick.evpn_routes < args.evpn_routes and quick.evpn_in_routes < args.evpn_in_routes
    with pytest.raises(SystemExit):
        bench.parse_args(["--evpn-routes", "0"])


def test_control_plane_takes_medians_and_reports_skips(monkeypatch):
    def evpn(args, log):
        raise bench.Skipped("gobgpd not installed")

    monkeypatch.setattr(bench, "CONTROL_BENCHES", {
        ("fdb_bytes_per_100k",): bench._repeated("fdb_bytes_per_100k", lambda args: 7.0, kind=lambda a: "x"),
        ("evpn_routes_in_per_s", "evpn_routes_out_per_s"): evpn,
    })
    out = bench.run_control_plane(bench.parse_args(["--runs", "3"]), lambda text: None)
    assert out["fdb_bytes_per_100k"] == {"value": 7.0, "runs": [7.0, 7.0, 7.0], "kind": "x"}
    assert out["evpn_routes_out_per_s"] == {"value": None, "skipped": "gobgpd not installed"}


def test_parts_are_picked_by_a_comma_separated_only():
    args = bench.parse_args(["--only", "data,routed,table", "--routed-modes", "vxlan-by-hand,userspace"])
    assert args.parts == ["data", "routed", "table"]
    assert args.routed_mode_list == ("vxlan-by-hand", "userspace")
    assert bench.parse_args(["--only", "backends"]).parts == ["routed", "programming"]
    with pytest.raises(SystemExit):
        bench.parse_args(["--only", "data,nonsense"])


def test_routed_modes_default_to_every_mode_of_bench_backends():
    from tools import bench_backends

    assert bench.ROUTED_DEFAULT == bench_backends.ROUTED_MODES


def test_chart_series_pair_kernel_and_overlayd_on_both_paths():
    results = canned()
    results["backends"] = {"routed": {"runs": {"vxlan-by-hand": {"tcp_gbit_s": [19.0], "ping_p50_us": [30.0]},
                                               "userspace": {"tcp_gbit_s": [0.5], "ping_p50_us": [600.0]},
                                               "host-gw": {"tcp_gbit_s": [20.0], "ping_p50_us": [20.0]}}}}
    panels = bench.chart_series(results)
    assert list(panels["throughput"]) == ["L2 a->b", "L2 b->a", "routed pod to pod"]
    assert panels["throughput"]["routed pod to pod"] == {"kernel VXLAN": [19.0], "overlayd": [0.5]}
    assert panels["rtt"]["L2"]["kernel VXLAN"] == [40, 30, 35]
    assert panels["rtt"]["L2"]["overlayd"] == [140, 140, 140]


def test_write_report_writes_json_markdown_and_puts_the_last_run_beside(tmp_path, capsys):
    results = canned()
    results["when"] = "2026-12-03T14:00:00+00:00"
    results["machine"] = {"cpu_model": "Test CPU", "cpus": 2, "kernel": "6.18", "python": "3.11",
                          "loadavg_before": [1.0, 1.0, 1.0], "loadavg_after": [2.0, 1.0, 1.0]}
    (tmp_path / "bench-20000101-000000.json").write_text(json.dumps(results))
    stem = bench.write_report(results, tmp_path)
    out = capsys.readouterr().out
    assert out.startswith("machine: Test CPU, 2 cores, Linux 6.18")
    assert "last run" in out and "0.250" in out
    md = stem.with_suffix(".md").read_text()
    assert "Machine: Test CPU" in md and "| L2 TCP 1 stream a->b | kernel | higher | 0.250 |" in md
    assert json.loads(stem.with_suffix(".json").read_text())["summary"]["ratios"]["overlayd"]["udp64_pps"] == 0.7
    assert stem.with_suffix(".png").exists() == bench.have_matplotlib()
    if not bench.have_matplotlib():
        assert "no plot: matplotlib is not installed" in out
