"""The status protocol with strings, the SwitchView behind it, and overlayctl's rendering."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.config import parse_config
from overlayd.dataplane.counters import COUNTERS
from overlayd.dataplane.switch import Switch
from overlayd.fabric.fdb import Source
from overlayd.status import ctl
from overlayd.status.protocol import (
    COMMANDS,
    PROTOCOL_VERSION,
    StatusError,
    decode_reply,
    encode_request,
    handle_line,
)
from overlayd.status.view import SwitchView
from overlayd.wire.vxlan import encode_header


class FakeView:
    """Canned answers; remembers how it was asked."""

    def __init__(self):
        self.calls = []

    def status(self, now):
        self.calls.append(("status", now))
        return {"node": "node1", "networks": []}

    def fdb(self, now, network=None):
        self.calls.append(("fdb", now, network))
        if network == "nope":
            raise StatusError("bad_request", "no network named 'nope'")
        return [{"mac": "02:00:00:00:00:01", "network": network}]

    def stats(self, now):
        self.calls.append(("stats", now))
        return {"counters": {"tx_frames": 3}}


def reply_of(line, view=None, now=7.0) -> dict:
    out = handle_line(line, view or FakeView(), now)
    assert out.endswith("\n") and out.count("\n") == 1, "one reply is one line"
    reply = json.loads(out)
    assert reply["version"] == PROTOCOL_VERSION
    assert isinstance(reply["ok"], bool)
    return reply


def error_code(line) -> str:
    reply = reply_of(line)
    assert reply["ok"] is False
    assert set(reply["error"]) == {"code", "message"} and reply["error"]["message"]
    return reply["error"]["code"]


# -- the protocol -----------------------------------------------------------------------------


def test_the_three_commands_exist():
    assert {"status", "fdb", "stats"} <= set(COMMANDS)


@pytest.mark.parametrize("command", ["status", "fdb", "stats"])
def test_good_request(command):
    view = FakeView()
    reply = reply_of(encode_request(command), view, now=7.0)
    assert reply["ok"] is True and reply["command"] == command
    assert reply["result"] == getattr(FakeView(), command)(7.0)
    assert view.calls[0][:2] == (command, 7.0)


def test_fdb_takes_a_network():
    view = FakeView()
    reply = reply_of('{"version": 1, "command": "fdb", "args": {"network": "blue"}}', view)
    assert reply["result"] == [{"mac": "02:00:00:00:00:01", "network": "blue"}]
    assert view.calls == [("fdb", 7.0, "blue")]


def test_requests_may_be_bytes_with_a_newline():
    assert reply_of(encode_request("stats").encode())["ok"] is True


def test_reply_keys_are_sorted_and_stable():
    out = handle_line(encode_request("stats"), FakeView(), 0)
    assert out == '{"command": "stats", "ok": true, "result": {"counters": {"tx_frames": 3}}, "version": 1}\n'


@pytest.mark.parametrize(
    "line, code",
    [
        ("", "bad_request"),
        ("status", "bad_request"),
        ('{"version": 1, "command": "status"', "bad_request"),
        (b"\xff\xfe{}", "bad_request"),
        ("[" * 100_000, "bad_request"),  # deeper than the JSON decoder recurses
        ("[]", "bad_request"),
        ('"status"', "bad_request"),
        ("1", "bad_request"),
        ("null", "bad_request"),
        ('{"command": "status"}', "bad_version"),
        ('{"version": 2, "command": "status"}', "bad_version"),
        ('{"version": "1", "command": "status"}', "bad_version"),
        ('{"version": 1}', "unknown_command"),
        ('{"version": 1, "command": "reboot"}', "unknown_command"),
        ('{"version": 1, "command": "STATUS"}', "unknown_command"),
        ('{"version": 1, "command": ["status"]}', "unknown_command"),
        ('{"version": 1, "command": {"status": 1}}', "unknown_command"),
        ('{"version": 1, "command": "status", "args": []}', "bad_request"),
        ('{"version": 1, "command": "status", "args": "blue"}', "bad_request"),
        ('{"version": 1, "command": "status", "args": {"network": "blue"}}', "bad_request"),
        ('{"version": 1, "command": "fdb", "args": {"network": "blue", "mac": "x"}}', "bad_request"),
        ('{"version": 1, "command": "fdb", "args": {"network": "nope"}}', "bad_request"),
    ],
    ids=["empty", "bare-word", "unterminated", "not-utf8", "too-deep", "array", "string", "number", "null",
         "no-version", "version-2", "version-as-text", "no-command", "unknown-command", "command-case",
         "command-list", "command-object", "args-array", "args-string", "status-takes-no-args",
         "fdb-unknown-arg", "view-refuses"],
)
def test_bad_request_gets_an_error_reply(line, code):
    assert error_code(line) == code


def test_error_message_names_the_problem():
    reply = reply_of('{"version": 1, "command": "fdb", "args": {"color": "blue"}}')
    assert "color" in reply["error"]["message"]
    reply = reply_of('{"version": 1, "command": "reboot"}')
    assert "reboot" in reply["error"]["message"] and "status" in reply["error"]["message"]


@given(st.one_of(
    st.text(max_size=60),
    st.binary(max_size=60),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=8,
    ).map(json.dumps),
    st.fixed_dictionaries({}, optional={
        "version": st.sampled_from([1, 2, "1", None]),
        "command": st.sampled_from(["status", "fdb", "stats", "x", 1, None, [], {}]),
        "args": st.one_of(st.none(), st.dictionaries(st.sampled_from(["network", "x"]), st.text(max_size=4) | st.integers())),
    }).map(json.dumps),
))
@settings(max_examples=300, deadline=None)
def test_handle_line_never_raises(line):
    reply_of(line)


# -- decode_reply --------------------------------------------------------------------------------


@pytest.mark.parametrize("command, args", [("status", {}), ("fdb", {}), ("fdb", {"network": "blue"}), ("stats", {})])
def test_request_reply_round_trip(command, args):
    request = encode_request(command, **args)
    assert request.endswith("\n") and request.count("\n") == 1
    assert json.loads(request) == {"version": 1, "command": command, **({"args": args} if args else {})}
    view = FakeView()
    result = decode_reply(handle_line(request, view, 3.0))
    expected = {"status": view.status, "stats": view.stats}.get(command) or (lambda now: view.fdb(now, **args))
    assert result == expected(3.0)


def test_decode_reply_raises_the_daemons_error():
    with pytest.raises(StatusError) as err:
        decode_reply(handle_line('{"version": 1, "command": "reboot"}', FakeView(), 0))
    assert err.value.code == "unknown_command"
    assert "reboot" in str(err.value)


@pytest.mark.parametrize(
    "line, code",
    [
        ("not json", "bad_reply"),
        (b"\xff", "bad_reply"),
        ("[" * 100_000, "bad_reply"),
        ("[]", "bad_version"),
        ('{"ok": true, "result": 1}', "bad_version"),
        ('{"version": 2, "ok": true, "result": 1}', "bad_version"),
        ('{"version": 1, "ok": false}', "error"),
        ('{"version": 1, "ok": false, "error": "broken"}', "error"),
        ('{"version": 1, "ok": false, "error": {"code": "busy", "message": "try later"}}', "busy"),
    ],
)
def test_decode_reply_refuses_garbage(line, code):
    with pytest.raises(StatusError) as err:
        decode_reply(line)
    assert err.value.code == code


# -- SwitchView over a real Switch -----------------------------------------------------------------

CONFIG = parse_config({
    "node": {"name": "node1", "vtep": "10.0.0.1", "vxlan_port": 4790},
    "networks": [
        {"name": "blue", "vni": 100, "device": "blue0", "address": "192.168.100.1/24",
         "vteps": ["10.0.0.3", "10.0.0.2"], "fdb": [{"mac": "02:00:00:00:02:01", "vtep": "10.0.0.2"}]},
        {"name": "red", "vni": 200, "device": "red0"},
    ],
})
BLUE_MAC = bytes.fromhex("c240b2ecd9c8")


@pytest.fixture
def view() -> SwitchView:
    return static_view()


def static_view() -> SwitchView:
    """What the daemon builds at startup, without the devices."""
    sw = Switch(CONFIG.node.vxlan_port, CONFIG.node.fdb_aging)
    sw.add_segment(100, "blue", own_macs=[BLUE_MAC])
    sw.add_segment(200, "red")
    for net in CONFIG.networks:
        sw.set_limits(net.vni, max_local_macs=net.max_local_macs, learn_rate_per_s=net.mac_learn_rate_per_s,
                      learn_burst=net.mac_learn_burst, flood_rate_pps=net.flood_rate_pps,
                      flood_burst=net.flood_burst, now=100.0, max_local_ips=net.max_local_ips)
        for vtep in net.vteps:
            sw.add_flood_vtep(net.vni, str(vtep), Source.STATIC)
        for entry in net.fdb:
            sw.install_mac(net.vni, entry.mac_bytes, str(entry.vtep), Source.STATIC, now=100.0)
    host = bytes.fromhex("020000000101")
    sw.from_tap(100, host + bytes.fromhex("020000000102") + b"\x88\xb5payload", now=105.0)  # learns ...:01:02 local
    sw.from_vxlan("10.0.0.3", encode_header(100) + BLUE_MAC + host + b"\x88\xb5x", now=108.0)  # ...:01:01 at .3
    return SwitchView(CONFIG, sw, started=100.0, mtus={100: 1450})


STATUS_KEYS = ("node", "vtep", "vxlan_port", "uptime_s", "fdb_entries", "networks")
NETWORK_KEYS = ("name", "vni", "device", "mtu", "address", "flood_list", "mac")
FDB_KEYS = ("network", "vni", "mac", "where", "learned", "age_s")


def documented(d: dict, keys) -> dict:
    """The documented part of a reply (more keys may come; these must stay)."""
    return {k: d[k] for k in keys}


def test_status_has_the_documented_keys(view):
    s = view.status(now=112.34)
    s = dict(documented(s, STATUS_KEYS), networks=[documented(n, NETWORK_KEYS) for n in s["networks"]])
    assert s == {
        "node": "node1",
        "vtep": "10.0.0.1",
        "vxlan_port": 4790,
        "uptime_s": 12.3,
        "fdb_entries": 3,
        "networks": [
            {"name": "blue", "vni": 100, "device": "blue0", "mtu": 1450, "address": "192.168.100.1/24",
             "flood_list": ["10.0.0.2", "10.0.0.3"], "mac": "c2:40:b2:ec:d9:c8"},
            {"name": "red", "vni": 200, "device": "red0", "mtu": None, "address": None,
             "flood_list": [], "mac": None},
        ],
    }


def test_fdb_rows_are_sorted_with_documented_keys(view):
    rows = view.fdb(now=110.0)
    assert [documented(r, FDB_KEYS) for r in rows] == [
        {"network": "blue", "vni": 100, "mac": "02:00:00:00:01:01", "where": "10.0.0.3", "learned": "data", "age_s": 2.0},
        {"network": "blue", "vni": 100, "mac": "02:00:00:00:01:02", "where": "local", "learned": "local", "age_s": 5.0},
        {"network": "blue", "vni": 100, "mac": "02:00:00:00:02:01", "where": "10.0.0.2", "learned": "static", "age_s": 10.0},
    ]
    assert view.fdb(now=110.0, network="blue") == rows
    assert view.fdb(now=110.0, network="red") == []
    with pytest.raises(StatusError) as err:
        view.fdb(now=110.0, network="green")
    assert err.value.code == "bad_request"


def test_stats_are_the_switch_counters_with_descriptions(view):
    s = view.stats(now=110.0)
    assert s["counters"] == view.switch.counters.as_dict()
    assert s["counters"]["tx_frames"] == 1 and s["counters"]["rx_frames"] == 1
    assert s["descriptions"] == COUNTERS


@pytest.mark.parametrize("command, args", [("status", {}), ("fdb", {}), ("fdb", {"network": "red"}), ("stats", {})])
def test_switch_view_through_the_protocol(view, command, args):
    """Every reply is plain JSON: nothing the encoder cannot handle slips through."""
    result = decode_reply(handle_line(encode_request(command, **args), view, 110.0))
    method = getattr(view, command)
    assert result == json.loads(json.dumps(method(110.0, **args)))


def test_unknown_network_through_the_protocol(view):
    reply = json.loads(handle_line(encode_request("fdb", network="green"), view, 110.0))
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
    assert "green" in reply["error"]["message"]


# -- overlayctl's tables ------------------------------------------------------------------------------


def test_table_aligns_columns_and_right_aligns_numbers():
    out = ctl.table(("NAME", "VNI", "WHERE"), [("blue", 100, "local"), ("red-long", 5, None)])
    assert out.splitlines() == [
        "NAME      VNI  WHERE",
        "blue      100  local",
        "red-long    5  -",
    ]


def test_table_without_rows_is_the_header():
    assert ctl.table(("NETWORK", "VNI"), []) == "NETWORK  VNI"


cells = st.text(alphabet="abcdefghij.:-", min_size=1, max_size=10)


@given(st.integers(1, 4).flatmap(lambda n: st.tuples(
    st.lists(cells, min_size=n, max_size=n),
    st.lists(st.lists(cells | st.integers(0, 10**6), min_size=n, max_size=n), max_size=5),
)))
@settings(max_examples=100, deadline=None)
def test_table_columns_line_up(data):
    headers, rows = data
    lines = ctl.table(headers, rows).splitlines()
    assert len(lines) == 1 + len(rows)
    widths = [max(len(str(v)) for v in [h] + [r[i] for r in rows]) for i, h in enumerate(headers)]
    numeric = [bool(rows) and all(isinstance(r[i], int) for r in rows) for i in range(len(headers))]
    for line, values in zip(lines, [headers] + rows):
        assert line == line.rstrip()
        padded = line.ljust(sum(widths) + 2 * len(widths))
        start = 0
        for value, width, num in zip(values, widths, numeric):
            cell = str(value).rjust(width) if num else str(value).ljust(width)
            assert padded[start : start + width] == cell
            assert padded[start + width : start + width + 2] == "  "
            start += width + 2


def test_render_status(view):
    out = ctl.render_status(view.status(now=112.0))
    head, blank, *table = out.splitlines()
    assert head == "node node1  vtep 10.0.0.1 port 4790  uptime 12.0s  fdb entries 3"
    assert blank == ""
    assert table == [
        "NETWORK  VNI  BACKEND    DEVICE  MTU   MAC                ADDRESS           FLOOD LIST",
        "blue     100  userspace  blue0   1450  c2:40:b2:ec:d9:c8  192.168.100.1/24  10.0.0.2, 10.0.0.3",
        "red      200  userspace  red0    -     -                  -                 (none)",
        "",
        "NETWORK  LOCAL MACS  REFUSED FULL  LEARN RATE         REFUSED RATE  LOCAL IPS  REFUSED IPS  FLOOD RATE"
        "           FLOOD DROPPED",
        "blue     1/8192                 0  1000/s burst 1000             0  0/16384              0  2000 pps burst"
        " 2000              0",
        "red      0/8192                 0  1000/s burst 1000             0  0/16384              0  2000 pps burst"
        " 2000              0",
    ]


def test_status_shows_each_networks_limits_with_their_defaults_and_what_they_refused(view):
    sw = view.switch
    sw.set_limits(200, max_local_macs=2, learn_rate_per_s=1, learn_burst=1, flood_rate_pps=1, flood_burst=1, now=0.0)
    sw.add_flood_vtep(200, "10.0.0.2", Source.STATIC)
    for i in range(4):  # three new MACs at once: the first learned, then one refused by the rate, ...
        src = bytes.fromhex(f"0200000003{i:02x}")
        sw.from_tap(200, b"\xff" * 6 + src + b"\x88\xb5x", now=100.0 + 10 * (i >= 2))
    red = view.status(now=112.0)["networks"][1]["limits"]
    print(f"\ndefault limits of a network: {view.status(now=112.0)['networks'][0]['limits']}")
    assert red == {"max_local_macs": 2, "local_macs": 2, "refused_fdb_full": 1, "max_local_ips": 4, "local_ips": 0,
                   "refused_ips": 0, "mac_learn_rate_per_s": 1.0,
                   "mac_learn_burst": 1.0, "refused_rate": 1, "flood_rate_pps": 1.0, "flood_burst": 1.0,
                   "flood_dropped": 2}
    assert sw.counters.learn_refused_fdb_full == 1 and sw.counters.learn_refused_rate == 1
    assert sw.counters.tx_drop_flood_rate == 2
    blue = view.status(now=112.0)["networks"][0]["limits"]
    assert (blue["max_local_macs"], blue["mac_learn_rate_per_s"], blue["flood_rate_pps"]) == (8192, 1000.0, 2000.0)


def test_render_fdb(view):
    assert ctl.render_fdb(view.fdb(now=110.0)).splitlines() == [
        "NETWORK  VNI  MAC                WHERE     LEARNED  AGE",
        "blue     100  02:00:00:00:01:01  10.0.0.3  data     2s",
        "blue     100  02:00:00:00:01:02  local     local    5s",
        "blue     100  02:00:00:00:02:01  10.0.0.2  static   10s",
    ]
    assert ctl.render_fdb([]) == "(fdb is empty)"


def test_render_stats(view):
    lines = ctl.render_stats(view.stats(now=110.0)).splitlines()
    assert lines[0].split() == ["COUNTER", "VALUE", "MEANING"]
    assert len(lines) == 1 + len(COUNTERS)
    value_end = lines[0].index("VALUE") + len("VALUE")
    for line, (name, meaning) in zip(lines[1:], COUNTERS.items()):
        assert line.startswith(name + " ")
        assert line.endswith(meaning)
        assert line[:value_end].split()[-1] == str(view.switch.counters.as_dict()[name])  # right-aligned


# -- overlayctl's exit codes, with the socket replaced ---------------------------------------------


def test_overlayctl_prints_the_rendered_result(monkeypatch, capsys, view):
    calls = []

    def fake_request(path, command, **args):
        calls.append((path, command, args))
        return decode_reply(handle_line(encode_request(command, **args), view, 110.0))

    monkeypatch.setattr(ctl, "request", fake_request)
    assert ctl.main(["-s", "/tmp/x.sock", "fdb", "-n", "blue"]) == 0
    assert calls == [("/tmp/x.sock", "fdb", {"network": "blue"})]
    assert capsys.readouterr().out == ctl.render_fdb(view.fdb(110.0, network="blue")) + "\n"
    assert ctl.main(["-s", "/tmp/x.sock", "stats", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == json.loads(json.dumps(view.stats(110.0)))


def test_overlayctl_exit_codes(monkeypatch, capsys):
    def refused(path, command, **args):
        raise StatusError("bad_request", "no network named 'green'")

    def unreachable(path, command, **args):
        raise FileNotFoundError(2, "No such file or directory")

    monkeypatch.setattr(ctl, "request", refused)
    assert ctl.main(["fdb", "-n", "green"]) == ctl.EXIT_REFUSED == 3
    assert "bad_request" in capsys.readouterr().err
    monkeypatch.setattr(ctl, "request", unreachable)
    assert ctl.main(["-s", "/nonexistent.sock", "status"]) == ctl.EXIT_UNREACHABLE == 2
    assert "cannot reach overlayd at /nonexistent.sock" in capsys.readouterr().err


def test_overlayctl_socket_from_environment(monkeypatch):
    monkeypatch.setenv("OVERLAYD_SOCKET", "/run/elsewhere.sock")
    assert ctl.build_parser().parse_args(["status"]).socket == "/run/elsewhere.sock"
