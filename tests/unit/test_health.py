"""The health checker on fake time: its rules as examples, and a simulated backend that dies and comes back."""

from __future__ import annotations

import heapq

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.fabric.health import (
    BackendDown,
    BackendHealth,
    BackendUp,
    HealthChecker,
    HealthConfig,
    Probe,
)

A, B = "10.244.1.5:8080", "10.244.2.7:8080"
CFG = HealthConfig(type="tcp", interval_s=1.0, timeout_s=0.5, fall=2, rise=2)


def test_backends_start_healthy_and_are_probed_at_once_then_every_interval():
    hc = HealthChecker("web", CFG, [A, B], now=10)
    assert hc.healthy_backends() == [A, B] and hc.deadline() == 10
    probes = hc.due(10)
    assert probes == [Probe("web", A, "10.244.1.5", 8080, 10.5, 1), Probe("web", B, "10.244.2.7", 8080, 10.5, 2)]
    assert hc.due(10.2) == []  # one probe at a time
    assert hc.deadline() == 10.5  # the probes' deadline comes first
    assert hc.result(probes[0], True, 10.01) == [] and hc.result(probes[1], True, 10.02) == []
    assert hc.deadline() == 11
    assert [p.backend for p in hc.due(11)] == [A, B]


def test_down_after_fall_failures_up_after_rise_successes():
    hc = HealthChecker("web", CFG, [A])
    outcomes, facts = [False, True, False, False, False, True, False, True, True, True], []
    for i, ok in enumerate(outcomes):
        (probe,) = hc.due(i)
        facts.append(hc.result(probe, ok, i + 0.1))
    assert facts == [[], [], [], [BackendDown("web", A, 2)], [], [], [], [], [BackendUp("web", A, 2)], []]
    assert hc.healthy(A)
    assert list(hc) == [BackendHealth(A, True, 0, 3, False)]


def test_an_unanswered_probe_fails_at_its_deadline():
    hc = HealthChecker("web", CFG, [A])
    first = hc.due(0)[0]
    assert hc.expire(0.49) == []
    assert hc.expire(0.5) == []  # one failure of two
    assert hc.result(first, True, 0.6) == []  # too late: already counted
    second = hc.due(1)[0]
    assert hc.result(second, True, 1.5) == [BackendDown("web", A, 2)]  # at the deadline: too late
    assert not hc.healthy(A) and hc.healthy_backends() == []


def test_a_backend_down_from_the_start_falls_after_fall_checks():
    cfg = HealthConfig(interval_s=2.0, timeout_s=1.0, fall=3, rise=1)
    hc = HealthChecker("web", cfg, [A], now=0)
    facts, now = [], 0.0
    while not facts:  # nothing answers
        now = hc.deadline()
        facts = hc.expire(now)
        hc.due(now)
    assert facts == [BackendDown("web", A, 3)]
    assert now == (cfg.fall - 1) * cfg.interval_s + cfg.timeout_s == 5.0


def test_results_of_removed_or_re_added_backends_are_ignored():
    hc = HealthChecker("web", CFG, [A])
    old = hc.due(0)[0]
    assert hc.remove(A) and not hc.remove(A) and A not in hc
    assert hc.result(old, False, 0.1) == []
    assert hc.add(A, 0.2) and not hc.add(A, 0.2)
    hc.result(old, False, 0.3)
    new = hc.due(0.3)[0]
    assert new.serial != old.serial
    assert hc.result(old, False, 0.31) == [] and next(iter(hc)).failures == 0


def test_type_none_never_probes_and_is_always_healthy():
    hc = HealthChecker("dns", HealthConfig(type="none"), [A, B])
    assert hc.due(100) == [] and hc.deadline() is None and hc.expire(100) == []
    assert hc.healthy_backends() == [A, B]


def test_health_port_and_ipv6_backends():
    hc = HealthChecker("dns", HealthConfig(port=9000), ["[fd00::5]:53"])
    (probe,) = hc.due(0)
    assert (probe.address, probe.port) == ("fd00::5", 9000)


@pytest.mark.parametrize(
    "kw, said",
    [
        ({"type": "http"}, "health.type 'http'"),
        ({"interval_s": 0}, "health.interval"),
        ({"timeout_s": 2}, "health.timeout"),
        ({"timeout_s": 0}, "health.timeout"),
        ({"fall": 0}, "health.fall"),
        ({"rise": 1.5}, "health.rise"),
        ({"rise": True}, "health.rise"),
        ({"port": 70000}, "health.port 70000"),
    ],
)
def test_bad_config_names_the_field(kw, said):
    with pytest.raises(ValueError, match=said):
        HealthConfig(**kw)


def test_a_bad_backend_name_is_refused():
    with pytest.raises(ValueError, match="port 0"):
        HealthChecker("web", CFG, ["10.244.1.5:0"])


# -- a backend that dies and comes back, driven like io/ drives it ---------------------------


def run(hc: HealthChecker, alive, answers_when_dead: bool, latency: float, until: float):
    """Drive `hc` on fake time: each probe succeeds `latency` after it starts if the backend is
    alive then; a dead backend refuses at once (`answers_when_dead`) or never answers."""
    facts, pending, now = [], [], 0.0  # pending: (when, serial, probe, ok)
    while True:
        times = [x for x in (hc.deadline(), pending[0][0] if pending else None) if x is not None]
        now = min(times)
        if now > until:
            return facts
        while pending and pending[0][0] <= now:
            _, _, probe, ok = heapq.heappop(pending)
            facts += [(now, f) for f in hc.result(probe, ok, now)]
        facts += [(now, f) for f in hc.expire(now)]
        for probe in hc.due(now):
            if alive(now):
                heapq.heappush(pending, (now + latency, probe.serial, probe, True))
            elif answers_when_dead:
                heapq.heappush(pending, (now, probe.serial, probe, False))


@given(
    interval=st.sampled_from([0.5, 1.0, 3.0]),
    timeout_share=st.sampled_from([0.1, 0.5, 1.0]),
    fall=st.integers(1, 4),
    rise=st.integers(1, 4),
    died=st.floats(0, 20),
    dead_for_extra=st.floats(0, 20),
    refused=st.booleans(),
    latency_share=st.floats(0, 0.9),
)
@settings(max_examples=200, deadline=None)
def test_a_backend_that_dies_is_down_in_time_and_up_again_in_time(
    interval, timeout_share, fall, rise, died, dead_for_extra, refused, latency_share
):
    cfg = HealthConfig(interval_s=interval, timeout_s=interval * timeout_share, fall=fall, rise=rise)
    came_back = died + fall * interval + cfg.timeout_s + dead_for_extra + 0.01
    latency = cfg.timeout_s * latency_share

    def alive(t):
        return not died <= t < came_back

    hc = HealthChecker("web", cfg, [A], now=0.0)
    facts = run(hc, alive, refused, latency, until=came_back + (rise + 1) * interval + cfg.timeout_s)
    assert [type(f) for _, f in facts] == [BackendDown, BackendUp]
    (down_at, _), (up_at, _) = facts
    assert died <= down_at <= died + fall * interval + cfg.timeout_s
    assert came_back <= up_at <= came_back + rise * interval + latency
