"""tools/bench_nat.py runs and reports a time for every operation (the numbers themselves: `python -m tools.bench_nat`)."""

from __future__ import annotations

from tools import bench_nat


def test_every_operation_is_measured():
    results = bench_nat.measure(number=20, repeat=1)
    assert set(results) == set(bench_nat.operations())
    assert all(us > 0 for us in results.values())


def test_the_packets_are_what_they_claim():
    from overlayd.wire.ip import parse_flow

    flow = parse_flow(bench_nat.tcp_packet(bench_nat.CLIENT4, bench_nat.VIP4))
    assert (flow.ip_len, flow.payload_len) == (1500, 1460)
    assert parse_flow(bench_nat.tcp_packet(bench_nat.CLIENT6, bench_nat.VIP6)).ip_len == 1500
