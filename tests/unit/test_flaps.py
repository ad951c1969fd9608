"""fabric/flaps.py on a fake clock against a naive model, and the speaker's use of it:
established sessions counted, sessions that go down and routes whose best path keeps changing."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.fabric.flaps import FLAP_WINDOW_S, ROUTE_FLAP_CHANGES, FlapLog
from overlayd.wire.bgp.update import Update
from tests.unit.test_speaker import Mesh, _inject, _route


def test_a_key_changing_threshold_times_in_the_window_is_flapping():
    log = FlapLog(threshold=3, window_s=60)
    for t in (0, 10, 20):
        log.record("r1", t, what=f"path at {t}")
    log.record("r2", 20)
    [f] = log.flapping(25)
    assert (f.key, f.changes, f.first, f.last, f.what) == ("r1", 3, 0, 20, "path at 20")


def test_changes_older_than_the_window_are_forgotten():
    log = FlapLog(threshold=3, window_s=60)
    for t in (0, 10, 20):
        log.record("r1", t)
    assert log.flapping(59)
    assert log.flapping(60) == []  # the change at 0 is 60 s old
    assert len(log) == 2


def test_memory_is_bounded_whatever_the_table_size():
    log = FlapLog(threshold=2, window_s=FLAP_WINDOW_S, size=100)
    for i in range(10_000):  # a big table announced once: no key repeats
        log.record(("route", i), now=1.0)
    assert len(log) == 100 and log.flapping(1.0) == []
    log.record("hot", 2.0)
    log.record("hot", 3.0)
    assert [f.key for f in log.flapping(3.0)] == ["hot"]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.floats(0, 5, allow_nan=False)), max_size=60),
       st.integers(1, 4), st.floats(1, 10), st.integers(1, 30))
def test_flapping_agrees_with_a_naive_model(changes, threshold, window, size):
    log = FlapLog(threshold=threshold, window_s=window, size=size)
    now = 0.0
    history: list[tuple[float, int]] = []
    for key, step in changes:
        now += step
        log.record(key, now)
        history.append((now, key))
    kept = [(t, k) for t, k in history[-size:] if t > now - window]  # the log keeps the newest `size`
    counts: dict[int, list[float]] = {}
    for t, k in kept:
        counts.setdefault(k, []).append(t)
    expected = {k: (len(ts), ts[0], ts[-1]) for k, ts in counts.items() if len(ts) >= threshold}
    assert {f.key: (f.changes, f.first, f.last) for f in log.flapping(now)} == expected


def test_the_speaker_counts_established_sessions_and_sessions_that_went_down():
    m = Mesh(2)
    stats = m[1].speaker.stats["10.0.0.2"]
    assert stats.established_count == 1
    assert m[1].speaker.session_flaps.flapping(m.now) == []
    for _ in range(3):
        m[1].speaker.reset_peer("10.0.0.2", m.now)  # Cease / administrative reset
        m.pump()
        pa, _, pb, _ = m.links[0]
        for _ in range(30):  # node 1 connects again after its connect-retry time
            m.now += 1
            if (ca := pa.connect_due(m.now)) is not None:
                break
        cb = pb.accept(m.now)
        pa.connection_made(ca, m.now)
        m.links[0] = (pa, ca, pb, cb)
        m.pump()
        assert pa.state.value == "Established"
    assert stats.established_count == 4
    [flap] = m[1].speaker.session_flaps.flapping(m.now)
    assert flap.key == "10.0.0.2" and flap.changes == 3
    assert "reset" in flap.what


def test_a_route_announced_and_withdrawn_again_and_again_is_flapping():
    m = Mesh(2)
    route, attrs = _route()
    assert ROUTE_FLAP_CHANGES == 6
    for _ in range(3):
        _inject(m, Update(announced=(route,), attributes=attrs))
        _inject(m, Update(withdrawn=(route,)))
    flaps = m[1].speaker.route_flaps.flapping(m.now)
    assert [(f.key, f.changes) for f in flaps] == [(route.key, 6)]
    assert flaps[0].what.peer == "10.0.0.2"
