"""The event hub (control/hub.py) on a fake clock: one event model for the log and `watch`,
bounded subscriber queues (a slow one is dropped, told why), rate-limited limit events; the
speaker's and the switch's events through it; the JSON log lines (overlayd/logs.py)."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import pytest

from overlayd import cli
from overlayd.control.hub import EVENTS, KEYS, Event, EventHub, LimitWatch, iso_time
from overlayd.dataplane.switch import Switch
from overlayd.fabric.fdb import MacLearned, MacMoved, MacRemoved, Source
from overlayd.fabric.flood import FloodMemberAdded
from overlayd.io import daemon
from overlayd.logs import JsonFormatter
from overlayd.sim.frames import ethernet, mac
from overlayd.wire.ethernet import BROADCAST
from tests.unit.test_speaker import VNI, Mesh

T0 = 1_750_000_000.0  # the fake wall clock's start: 2025-06-15T15:06:40Z


class Wall:
    def __init__(self):
        self.t = T0

    def __call__(self) -> float:
        return self.t


def hub(max_queued: int = 1000) -> EventHub:
    return EventHub(wall=Wall(), max_queued=max_queued)


# -- the model ------------------------------------------------------------------------------------


def test_an_event_has_the_stable_keys_with_null_where_they_mean_nothing():
    h = hub()
    sub = h.subscribe()
    h.emit("peer_down", "peer 10.0.0.2: down: hold timer expired", peer="10.0.0.2", reason="hold timer expired",
           stale_paths=0)
    [ev] = sub.take()
    d = ev.as_dict()
    assert list(d)[:4] == ["ts", "event", "level", "msg"]
    assert d == {"ts": "2025-06-15T15:06:40.000Z", "event": "peer_down", "level": "warning",
                 "msg": "peer 10.0.0.2: down: hold timer expired", "peer": "10.0.0.2", "network": None,
                 "mac": None, "prefix": None, "reason": "hold timer expired", "stale_paths": 0}
    assert set(KEYS) <= set(d)
    assert sub.take() == []  # taken is gone


def test_every_event_name_has_a_level_a_logger_and_words():
    for name, (level, logger, words) in EVENTS.items():
        assert name.islower() and " " not in name
        assert level in (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)
        assert logger.startswith("overlayd") and words


def test_readme_lists_every_event_with_its_level():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    for name, (level, _, _) in EVENTS.items():
        assert f"| `{name}` | {logging.getLevelName(level).lower()} |" in readme, name


def test_iso_time_is_utc_with_milliseconds():
    assert iso_time(T0 + 0.1234) == "2025-06-15T15:06:40.123Z"


def test_nobody_listening_means_nothing_is_built(caplog):
    h = hub()
    with caplog.at_level(logging.INFO, "overlayd"):
        assert not h.wants("mac_learned")  # debug, not logged, no watcher
        assert h.wants("peer_up")  # info: logged
        h.subscribe()
        assert h.wants("mac_learned")


# -- subscribers: bounded, a slow one dropped and told why ------------------------------------------------


def test_a_subscriber_that_falls_max_queued_behind_is_dropped_while_others_go_on():
    h = hub(max_queued=3)
    slow, fast = h.subscribe(), h.subscribe()
    woken = {"slow": 0, "fast": 0}
    slow.wake = lambda: woken.__setitem__("slow", woken["slow"] + 1)
    fast.wake = lambda: woken.__setitem__("fast", woken["fast"] + 1)
    got = []
    for i in range(10):
        h.emit("reload_applied", f"reload {i}", config="x", changes=str(i))
        got += fast.take()  # the fast one reads after every event
    assert [e.fields["changes"] for e in got] == [str(i) for i in range(10)]
    assert len(slow.queue) == 3  # never more than max_queued
    assert slow.dropped is not None and "3 events were waiting unread" in slow.dropped
    assert h.subscribers == [fast] and h.dropped_slow == 1
    assert woken == {"slow": 2, "fast": 10}  # slow: its first event, then the drop; fast: each first event
    slow.close()  # closing a dropped one is harmless
    assert h.subscribers == [fast]


def test_wake_is_called_only_when_the_queue_was_empty():
    h = hub()
    sub = h.subscribe()
    calls = []
    sub.wake = lambda: calls.append(len(sub.queue))
    for _ in range(5):
        h.emit("peer_removed", "peer x: removed from the config", peer="x")
    assert calls == [1]
    sub.take()
    h.emit("peer_removed", "again", peer="x")
    assert calls == [1, 1]


def test_a_closed_subscriber_gets_nothing_more():
    h = hub()
    sub = h.subscribe()
    sub.close()
    h.emit("peer_removed", "gone", peer="x")
    assert sub.take() == [] and h.subscribers == []


# -- limit hits: the first at once, then one a second per network and reason, with the count -----------------


def test_limit_watch_rate_limits_per_network_and_reason_with_counts():
    watch = LimitWatch(interval_s=1.0)
    now, total, seen = 100.0, 0, []
    for step in range(60):  # 3 s of a storm: 500 refusals every 50 ms tick
        total += 500
        now = 100.0 + step * 0.05
        seen += [(now, *x) for x in watch.look(now, {"blue": {"rate": total, "fdb_full": 0}})]
    assert seen[0] == (100.0, "blue", "rate", 500)  # the first at once
    assert [t for t, *_ in seen] == [100.0, 101.0, 102.0]  # then at most one a second
    assert sum(n for *_, n in seen) == 41 * 500  # every refusal up to 102.0; the later ones go with the next
    # another network, another reason: their own pace
    out = watch.look(now + 0.01, {"blue": {"rate": total, "fdb_full": 7}, "red": {"flood_rate": 3}})
    assert sorted(out) == [("blue", "fdb_full", 7), ("red", "flood_rate", 3)]
    # counts cleared (overlayctl clear counters): counting starts again
    assert watch.look(now + 5, {"red": {"flood_rate": 2}}) == [("red", "flood_rate", 2)]
    assert watch.look(now + 10, {"red": {"flood_rate": 2}}) == []  # nothing new: nothing said


def test_the_hub_names_each_limit_hit_and_logs_it_once_a_second(caplog):
    h = hub()
    sub = h.subscribe()
    with caplog.at_level(logging.WARNING, "overlayd"):
        h.limits(10.0, {"blue": {"fdb_full": 1, "rate": 0, "ips_full": 0, "flood_rate": 0}})
        h.limits(10.5, {"blue": {"fdb_full": 900, "rate": 0, "ips_full": 0, "flood_rate": 0}})
        h.limits(11.0, {"blue": {"fdb_full": 901, "rate": 0, "ips_full": 2, "flood_rate": 5000}})
    events = [(e.event, e.fields["reason"], e.fields["count"]) for e in sub.take()]
    assert events == [("mac_refused", "fdb_full", 1), ("mac_refused", "fdb_full", 900),
                      ("ip_refused", "ips_full", 2), ("flood_dropped", "flood_rate", 5000)]
    assert caplog.messages[0] == "network blue: 1 new local MAC(s) not learned: the network holds max_local_macs"
    assert "network blue: 5000 frame(s) to flood dropped: faster than flood_rate_pps" in caplog.messages


def test_the_switch_counts_what_its_limits_refused_by_reason():
    sw = Switch(4789, 300)
    sw.add_segment(VNI, "blue", [mac(999)])
    sw.set_limits(VNI, max_local_macs=2, learn_rate_per_s=None, learn_burst=None, flood_rate_pps=None,
                  flood_burst=None, now=0.0)
    sw.add_flood_vtep(VNI, "10.0.0.2", Source.STATIC)
    for i in range(5):
        sw.from_tap(VNI, ethernet(BROADCAST, mac(i), 0x0800, b"x" * 46), 0.0)
    assert sw.refused(VNI) == {"fdb_full": 3, "rate": 0, "ips_full": 0, "flood_rate": 0}


# -- the switch's table changes, the speaker's events ---------------------------------------------------------


def test_table_changes_become_events_with_the_words_the_debug_log_had():
    h = hub()
    h.network_of = {VNI: "blue"}.get
    sub = h.subscribe()
    h.fabric([MacLearned(VNI, mac(1), None, Source.LOCAL),
              MacMoved(VNI, mac(1), None, Source.LOCAL, "10.0.0.2", Source.BGP),
              MacRemoved(VNI, mac(1), "10.0.0.2", Source.BGP, aged=False),
              MacRemoved(VNI, mac(2), None, Source.LOCAL, aged=True),
              FloodMemberAdded(VNI, "10.0.0.3")])
    events = sub.take()
    assert [e.event for e in events] == ["mac_learned", "mac_moved", "mac_removed", "mac_aged", "flood_vtep_added"]
    assert [e.msg for e in events] == [
        "vni 100: learned 02:00:00:00:00:01 at local (local)",
        "vni 100: 02:00:00:00:00:01 moved local (local) -> 10.0.0.2 (bgp)",
        "vni 100: 02:00:00:00:00:01 at 10.0.0.2 (bgp) removed",
        "vni 100: 02:00:00:00:00:02 at local (local) aged out",
        "vni 100: flood list + 10.0.0.3",
    ]
    assert events[1].as_dict() | {"ts": None} == {
        "ts": None, "event": "mac_moved", "level": "debug", "msg": events[1].msg, "peer": None,
        "network": "blue", "mac": "02:00:00:00:00:01", "prefix": None, "reason": None, "vni": VNI,
        "vtep": "10.0.0.2", "source": "bgp", "old_vtep": "local", "old_source": "local"}


def test_the_speaker_tells_peer_up_routes_and_peer_down_with_its_reason():
    m = Mesh(2)
    sub = m[1].speaker.events.subscribe()
    m[2].tap(ethernet(BROADCAST, mac(2), 0x0800, b"x" * 46), m.now)
    m.pump()
    learned = [e for e in sub.take() if e.event == "route_learned"]
    [macip] = [e.fields for e in learned if e.fields["mac"] == "02:00:00:00:00:02"]
    assert (macip["route_type"], macip["peer"], macip["next_hop"], macip["network"], macip["vni"]) == \
        ("macip", "10.0.0.2", "10.0.0.2", "blue", VNI)
    m.links = []  # node 2 falls silent: node 1's hold timer (3 s)
    m.pump(3.5)
    events = sub.take()
    [down] = [e for e in events if e.event == "peer_down"]
    assert down.fields["peer"] == "10.0.0.2" and "hold timer expired" in down.fields["reason"]
    assert down.msg.startswith("peer 10.0.0.2: down: ")
    withdrawn = {e.fields["route_type"] for e in events if e.event == "route_withdrawn"}
    assert withdrawn == {"macip", "imet"}  # its routes left with it


# -- JSON log lines ----------------------------------------------------------------------------------------


def record(msg: str, event: Event | None = None, level: int = logging.INFO) -> logging.LogRecord:
    r = logging.LogRecord("overlayd.bgp", level, __file__, 1, "%s", (msg,), None)
    r.created = T0 + 0.5
    if event is not None:
        r.event = event
    return r


def test_a_json_log_line_of_an_event_has_the_stable_keys_and_the_events_fields():
    ev = Event("peer_down", "peer 10.0.0.2: down: connection closed", T0,
               {"peer": "10.0.0.2", "reason": "connection closed", "stale_paths": 0})
    line = json.loads(JsonFormatter().format(record(ev.msg, ev, logging.WARNING)))
    assert line == {"ts": "2025-06-15T15:06:40.500Z", "level": "warning", "logger": "overlayd.bgp",
                    "event": "peer_down", "msg": "peer 10.0.0.2: down: connection closed", "peer": "10.0.0.2",
                    "network": None, "mac": None, "prefix": None, "reason": "connection closed", "stale_paths": 0}


def test_a_json_log_line_that_is_no_event_has_the_same_keys_null():
    line = json.loads(JsonFormatter().format(record("ready; status socket /run/x.sock")))
    assert line == {"ts": "2025-06-15T15:06:40.500Z", "level": "info", "logger": "overlayd.bgp", "event": None,
                    "msg": "ready; status socket /run/x.sock", "peer": None, "network": None, "mac": None,
                    "prefix": None, "reason": None}
    try:
        raise ValueError("boom")
    except ValueError:
        r = record("failed")
        r.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonFormatter().format(r))["exc"]


def test_the_hub_logs_an_event_once_as_its_text_line(caplog):
    h = hub()
    with caplog.at_level(logging.INFO, "overlayd"):
        h.emit("reload_applied", "reload: /etc/o.yaml applied: services", config="/etc/o.yaml", changes="services")
    [r] = caplog.records
    assert (r.name, r.levelname, r.getMessage()) == ("overlayd", "INFO", "reload: /etc/o.yaml applied: services")
    assert r.event.event == "reload_applied"


@pytest.mark.parametrize(("flag", "config_key", "used"), [
    (None, None, "text"), (None, "json", "json"), (["--log-format", "text"], "json", "text"),
    (["--log-format", "json"], None, "json")])
def test_log_format_comes_from_the_flag_else_node_log_format(tmp_path, monkeypatch, flag, config_key, used):
    node = "node:\n  name: n1\n  vtep: 10.0.0.1\n" + (f"  log_format: {config_key}\n" if config_key else "")
    path = tmp_path / "n.yaml"
    path.write_text(node + "networks:\n  - {name: blue, vni: 100, device: blue0}\n")
    seen = []
    monkeypatch.setattr(cli, "setup_logging", lambda level, fmt: seen.append((level, fmt)))
    monkeypatch.setattr(daemon, "run", lambda config, path: None)
    assert cli.main(["-c", str(path), *(flag or [])]) == 0
    assert seen == [("info", used)]


def test_a_bad_log_format_is_refused():
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["-c", "x", "--log-format", "xml"])
