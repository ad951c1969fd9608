"""tools/bench_backends.py's ratios and report, on canned numbers (the benchmark is `make bench`)."""

from __future__ import annotations

from tools import bench, bench_backends


def runs(tcp: list[float], p50: list[float]) -> list[dict[str, float]]:
    return [{"tcp_gbit_s": t, "ping_p50_us": p, "ping_p99_us": p * 2} for t, p in zip(tcp, p50)]


def test_ratios_are_per_run_against_the_reference_with_their_spread_and_a_noise_flag():
    per_run = {
        "vxlan-by-hand": runs([10.0, 10.0, 10.0], [100, 100, 100]),
        "kernel": runs([9.5, 10.0, 9.0], [100, 110, 105]),
        "routes-by-hand": runs([10.0, 10.0, 10.0], [50, 50, 50]),
        "host-gw": runs([10.0, 5.0, 10.0], [50, 50, 50]),
    }
    r = bench_backends.ratios(per_run)
    assert set(r) == {"kernel", "host-gw"}  # userspace was not measured
    assert r["kernel"]["tcp_gbit_s"] == {"median": 0.95, "min": 0.9, "max": 1.0, "noisy": False,
                                         "reference": "vxlan-by-hand"}
    assert r["kernel"]["ping_p50_us"]["median"] == 1.05
    assert r["host-gw"]["tcp_gbit_s"]["noisy"]  # 0.5 .. 1.0 around 1.0: wider than 30%


def test_render_names_each_ratio_and_the_programming_rate():
    per_run = {m: runs([10.0, 9.0], [100, 120]) for m in bench_backends.ROUTED_MODES}
    results = {
        "routed": {"runs": {m: {k: [r[k] for r in rs] for k in rs[0]} for m, rs in per_run.items()},
                   "ratios": bench_backends.ratios(per_run)},
        "programming": {"entries": 12100, "macs": 10000, "subnets": 1000, "program_s": 2.0,
                        "program_entries_per_s": 6050, "program_cpu_s": 1.3, "withdraw_s": 1.5},
    }
    text = bench_backends.render(results)
    assert "kernel/vxlan-by-hand tcp_gbit_s: 1.000 (runs 1.000-1.000)" in text
    assert "host-gw/routes-by-hand ping_p50_us: 1.000" in text
    assert "12100 entries (10000 MACs, 1000 subnets) in 2.00 s = 6,050 entries/s" in text
    assert "kernel empty in 1.50 s" in text


def test_bench_takes_the_backends_options():
    args = bench.parse_args(["--only", "backends", "--backend-macs", "500", "--backend-subnets", "50"])
    assert (args.only, args.backend_macs, args.backend_subnets) == ("backends", 500, 50)


def test_services_render_names_each_ratio():
    from tools import bench_services

    runs = {m: [{"tcp_vip_gbit_s": 1.0, "tcp_direct_gbit_s": 1.25, "conn_per_s": 900.0}] * 2
            for m in bench_services.MODES}
    results = {"runs": runs, "ratios": {"userspace: vip/direct tcp": bench_services.spread([0.8, 0.8])}}
    text = bench_services.render(results)
    assert "userspace: vip/direct tcp: 0.800 (runs 0.800-0.800)" in text
    assert "TCP to the VIP 1.00 Gbit/s, to the pod 1.25 Gbit/s; 900 new connections/s" in text
    assert bench_services.spread([1.0, 2.0])["noisy"] and not bench_services.spread([1.0, 1.1])["noisy"]


def test_routed_modes_must_be_known_before_any_lab_is_built():
    import pytest

    with pytest.raises(ValueError, match="unknown routed modes"):
        bench_backends.routed_pod_to_pod(1, 1, 2, 0.01, lambda text: None, ("vxlan-by-hand", "userspce"))


def test_render_takes_a_subset_of_the_routed_modes():
    per_run = {m: runs([10.0, 9.0], [100, 120]) for m in ("vxlan-by-hand", "userspace")}
    routed = {"runs": {m: {k: [r[k] for r in rs] for k in rs[0]} for m, rs in per_run.items()},
              "ratios": bench_backends.ratios(per_run)}
    text = bench_backends.render({"routed": routed})
    assert "vxlan-by-hand" in text.splitlines()[0] and "host-gw" not in text.splitlines()[0]
    assert "userspace/vxlan-by-hand tcp_gbit_s: 1.000" in text
