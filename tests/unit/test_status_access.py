"""Issue 13, items 14 and 16, without root: who may run what on the status socket (the pure
protocol), `clear` and `reload` through the SwitchView and overlayctl, and the socket server's
limits (clients capped, idle ones dropped, request size bounded) on a real Unix socket.

tests/netns/test_status_socket.py does the parts that need root: another user in the
socket's group refused `clear`, a user outside it refused the socket, and 1000 clients
against a daemon whose BGP session and overlay ping must not notice.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import time

import pytest

from overlayd.config import parse_config
from overlayd.dataplane.switch import Switch
from overlayd.status import ctl
from overlayd.status.client import request
from overlayd.status.protocol import (
    COMMANDS,
    MAX_LINE_BYTES,
    PRIVILEGED_COMMANDS,
    StatusError,
    decode_reply,
    encode_request,
    handle_line,
    handle_line_async,
)
from overlayd.status.server import (
    DEFAULT_IDLE_TIMEOUT_S,
    DEFAULT_MAX_CLIENTS,
    StatusServer,
)
from overlayd.status.view import SwitchView

CONFIG = parse_config({"node": {"name": "n1", "vtep": "10.0.0.1"},
                       "networks": [{"name": "blue", "vni": 100, "device": "blue0"}]})


class FakeView:
    def __init__(self, big: int = 0):
        self.big = big
        self.cleared = []

    def status(self, now):
        return {"node": "n1", "pad": "x" * self.big}

    def stats(self, now):
        return {"counters": {}}

    def clear_counters(self, now):
        self.cleared.append("counters")
        return {"cleared": "counters", "counters": 0, "were_nonzero": 0}

    def reload(self, now):
        return "reloaded"


def code_of(reply: str) -> str | None:
    r = json.loads(reply)
    return None if r["ok"] else r["error"]["code"]


# -- the protocol: who may run what ------------------------------------------------------------------


def test_only_clear_and_reload_change_state():
    assert PRIVILEGED_COMMANDS == {"clear", "reload"}
    assert {"services", "conntrack", "status", "fdb", "stats", "peers", "rib", "routes"} <= set(COMMANDS) - \
        PRIVILEGED_COMMANDS


@pytest.mark.parametrize("line", [encode_request("clear", what="counters"), encode_request("reload"),
                                  encode_request("clear", what="nonsense"), encode_request("clear")])
def test_a_client_that_is_not_root_is_refused_before_anything_is_parsed(line):
    view = FakeView()
    reply = handle_line(line, view, 0.0)
    assert code_of(reply) == "not_permitted"
    assert "only root may run it" in json.loads(reply)["error"]["message"]
    assert view.cleared == []


def test_read_only_commands_answer_everybody():
    assert code_of(handle_line(encode_request("status"), FakeView(), 0.0)) is None
    assert code_of(handle_line(encode_request("stats"), FakeView(), 0.0)) is None


@pytest.mark.parametrize("args, message", [
    ({}, "clear what? None"),
    ({"what": "everything"}, "clear what? 'everything'"),
    ({"what": "mac", "network": "blue"}, "clear mac needs mac"),
    ({"what": "peer"}, "clear peer needs neighbor"),
    ({"what": "counters", "neighbor": "10.0.0.2"}, "clear counters takes no argument 'neighbor'"),
    ({"what": "counters", "force": "1"}, "takes no argument 'force'"),
])
def test_clear_arguments_are_checked(args, message):
    reply = json.loads(handle_line(encode_request("clear", **args), FakeView(), 0.0, privileged=True))
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
    assert message in reply["error"]["message"]


# -- clear and reload in the SwitchView ------------------------------------------------------------------


@pytest.fixture
def view() -> SwitchView:
    sw = Switch(4789, 300)
    sw.add_segment(100, "blue", own_macs=[bytes.fromhex("020000000001")])
    sw.from_tap(100, bytes.fromhex("ffffffffffff" "020000000102") + b"\x88\xb5hello", now=1.0)
    return SwitchView(CONFIG, sw, started=0.0, mtus={100: 1450})


def ask(view, command, **args):
    return decode_reply(handle_line(encode_request(command, **args), view, 5.0, privileged=True))


def test_clear_counters_zeroes_what_stats_shows(view):
    assert ask(view, "stats")["counters"]["tx_frames"] == 1
    result = ask(view, "clear", what="counters")
    assert result["cleared"] == "counters" and result["were_nonzero"] >= 1
    assert set(ask(view, "stats")["counters"].values()) == {0}


def test_clear_mac_and_peer_need_bgp(view):
    for args in ({"what": "mac", "network": "blue", "mac": "02:00:00:00:01:02"}, {"what": "peer",
                                                                                   "neighbor": "10.0.0.2"}):
        with pytest.raises(StatusError) as err:
            ask(view, "clear", **args)
        assert err.value.code == "not_configured"


def test_reload_without_a_hook_is_not_supported(view):
    with pytest.raises(StatusError) as err:
        ask(view, "reload")
    assert err.value.code == "not_supported" and "restart" in str(err.value)


def test_reload_awaits_the_daemons_hook(view):
    calls = []

    async def applies():
        calls.append(1)
        return {"changes": "neighbors + 10.0.0.4"}

    line = encode_request("reload")
    view.reload_hook = applies
    assert decode_reply(asyncio.run(handle_line_async(line, view, 5.0, privileged=True))) == {
        "changes": "neighbors + 10.0.0.4"}
    assert calls == [1]
    # the synchronous entry point cannot wait: it says so instead of answering for the hook
    with pytest.raises(StatusError) as err:
        ask(view, "reload")
    assert err.value.code == "not_supported" and calls == [1]

    async def refuses():
        raise StatusError("reload_refused", "these keys change only with a restart: bgp.asn")

    view.reload_hook = refuses
    with pytest.raises(StatusError) as err:
        decode_reply(asyncio.run(handle_line_async(line, view, 5.0, privileged=True)))
    assert err.value.code == "reload_refused" and "bgp.asn" in str(err.value)


# -- overlayctl clear / reload ------------------------------------------------------------------------------


@pytest.mark.parametrize("argv, args", [
    (["clear", "counters"], {"what": "counters"}),
    (["clear", "mac", "blue", "02:00:00:00:00:01"], {"what": "mac", "network": "blue", "mac": "02:00:00:00:00:01"}),
    (["clear", "peer", "10.0.0.2"], {"what": "peer", "neighbor": "10.0.0.2"}),
    (["reload"], {}),
])
def test_overlayctl_sends_the_request(monkeypatch, capsys, argv, args):
    sent = []

    def fake(path, command, **kw):
        sent.append((command, kw))
        raise StatusError("not_permitted", "clear changes the daemon's state and only root may run it")

    monkeypatch.setattr(ctl, "request", fake)
    assert ctl.main(["-s", "/x.sock", *argv]) == ctl.EXIT_REFUSED
    assert sent == [(argv[0], args)]
    assert "only root may run it (not_permitted)" in capsys.readouterr().err


def test_overlayctl_says_what_it_cleared(monkeypatch, capsys, view):
    monkeypatch.setattr(ctl, "request", lambda path, command, **kw: decode_reply(
        handle_line(encode_request(command, **kw), view, 5.0, privileged=True)))
    assert ctl.main(["clear", "counters"]) == 0
    assert capsys.readouterr().out.startswith(f"cleared the {len(view.stats(0)['counters'])} counters")
    assert ctl.main(["clear", "counters", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cleared"] == "counters"
    assert ctl.main(["reload"]) == ctl.EXIT_REFUSED
    assert "no daemon to reload" in capsys.readouterr().err


def test_overlayctl_help_names_the_new_commands():
    text = ctl.build_parser().format_help()
    assert "clear" in text and "reload" in text and "only root" in text


# -- the socket server ----------------------------------------------------------------------------------------


async def start(tmp_path, view=None, **kw) -> StatusServer:
    server = StatusServer(str(tmp_path / "s.sock"), view or FakeView(), time.monotonic, **kw)
    await server.start()
    return server


async def connect(server: StatusServer):
    return await asyncio.open_unix_connection(server.path)


async def request_on(reader, writer, command="status", **args) -> dict:
    writer.write(encode_request(command, **args).encode())
    await writer.drain()
    return json.loads(await asyncio.wait_for(reader.readline(), 5))


async def closed(reader, timeout=5.0) -> bool:
    try:
        return await asyncio.wait_for(reader.read(), timeout) == b""
    except ConnectionError:
        return True


async def test_socket_mode_and_group_and_the_defaults(tmp_path):
    server = await start(tmp_path, group=os.getegid())
    try:
        st = os.lstat(server.path)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
        assert st.st_gid == os.getegid()
        s = server.summary()
        assert (s["mode"], s["max_clients"], s["idle_timeout_s"], s["max_request_bytes"]) == \
            ("0660", DEFAULT_MAX_CLIENTS, DEFAULT_IDLE_TIMEOUT_S, MAX_LINE_BYTES)
        print(f"\nstatus socket defaults: mode {s['mode']}, {s['max_clients']} clients, idle timeout "
              f"{s['idle_timeout_s']:g} s, requests up to {s['max_request_bytes']} bytes")
    finally:
        await server.close()
    assert not os.path.exists(server.path)


async def test_an_unknown_group_name_fails_start(tmp_path):
    with pytest.raises(KeyError, match="no group named"):
        await start(tmp_path, group="no-such-group-here")


async def test_the_daemons_own_user_is_privileged(tmp_path):
    view = FakeView()
    server = await start(tmp_path, view)
    try:
        reader, writer = await connect(server)
        assert (await request_on(reader, writer, "clear", what="counters"))["ok"] is True
        assert view.cleared == ["counters"]
        writer.close()
    finally:
        await server.close()


async def test_clients_are_capped_and_a_newcomer_replaces_the_longest_idle(tmp_path):
    server = await start(tmp_path, max_clients=4)
    try:
        clients = []
        for _ in range(4):
            clients.append(await connect(server))
            await asyncio.sleep(0.01)
        assert (await request_on(*clients[3]))["ok"]
        while server.summary()["clients"] < 4:
            await asyncio.sleep(0.01)
        newcomer = await connect(server)
        assert (await request_on(*newcomer))["ok"] is True
        assert await closed(clients[0][0])  # idle the longest
        assert (await request_on(*clients[1]))["ok"] is True  # the others are still served
        s = server.summary()
        assert s["clients"] == 4 and s["evicted_idle"] == 1 and s["accepted"] == 5
        for _, w in clients[1:] + [newcomer]:
            w.close()
    finally:
        await server.close()


async def stuck_client(server: StatusServer) -> asyncio.StreamWriter:
    """A client that asked for a big reply (FakeView(big=...)) and does not read it: busy."""
    _reader, writer = await connect(server)
    writer.write(encode_request("status").encode())
    await writer.drain()
    while not server.summary()["accepted"]:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.1)  # its reply is written and stuck
    return writer


async def test_a_newcomer_is_told_busy_when_no_client_is_idle(tmp_path):
    """The one client is busy: its big reply is stuck in a socket it does not read."""
    server = await start(tmp_path, FakeView(big=4 << 20), max_clients=1)
    try:
        writer = await stuck_client(server)
        r2, w2 = await connect(server)
        reply = json.loads(await asyncio.wait_for(r2.readline(), 5))
        assert reply["error"]["code"] == "busy"
        assert await closed(r2)
        assert server.summary()["refused_busy"] == 1
        writer.close()
        w2.close()
    finally:
        await server.close()


async def test_an_idle_client_is_dropped_after_the_timeout(tmp_path):
    server = await start(tmp_path, idle_timeout_s=0.3)
    try:
        reader, writer = await connect(server)
        assert (await request_on(reader, writer))["ok"]
        t0 = time.monotonic()
        assert await closed(reader)
        waited = time.monotonic() - t0
        assert 0.25 <= waited < 2.0
        assert server.summary()["dropped_idle"] == 1
        print(f"\nidle client dropped after {waited:.2f} s (idle timeout 0.3 s)")
    finally:
        await server.close()


async def test_a_client_that_does_not_read_its_replies_is_dropped_too(tmp_path):
    server = await start(tmp_path, FakeView(big=4 << 20), idle_timeout_s=0.3)
    try:
        writer = await stuck_client(server)
        t0 = time.monotonic()
        while server.summary()["clients"] and time.monotonic() - t0 < 5:
            await asyncio.sleep(0.05)
        assert server.summary()["clients"] == 0 and server.summary()["dropped_idle"] == 1
        writer.close()
    finally:
        await server.close()


async def test_request_size_is_bounded_at_64_kib(tmp_path):
    server = await start(tmp_path)
    try:
        head = '{"version": 1, "command": "status", "pad": "'
        exact = head + "x" * (MAX_LINE_BYTES - len(head) - 2) + '"}'
        assert len(exact) == MAX_LINE_BYTES
        reader, writer = await connect(server)
        writer.write(exact.encode() + b"\n")
        assert json.loads(await asyncio.wait_for(reader.readline(), 5))["ok"] is True  # 64 KiB: served
        writer.write(b"x" * (MAX_LINE_BYTES + 1) + b"\n")
        reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert reply["error"]["code"] == "too_large" and str(MAX_LINE_BYTES) in reply["error"]["message"]
        assert await closed(reader)
        # without a newline at all: refused as soon as the limit is passed, not buffered forever
        reader, writer = await connect(server)
        writer.write(b"y" * (4 * MAX_LINE_BYTES))
        reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
        assert reply["error"]["code"] == "too_large"
        assert server.summary()["refused_too_large"] == 2
        print(f"\nrequest size: {MAX_LINE_BYTES} bytes served, {MAX_LINE_BYTES + 1} refused (too_large)")
    finally:
        await server.close()


async def test_a_last_request_without_newline_is_answered(tmp_path):
    server = await start(tmp_path)
    try:
        reader, writer = await connect(server)
        writer.write(encode_request("status").strip().encode())
        writer.write_eof()
        assert json.loads(await asyncio.wait_for(reader.readline(), 5))["ok"] is True
    finally:
        await server.close()


def test_the_blocking_client_sees_busy_as_a_refusal(tmp_path):
    """overlayctl's client gets the busy error like any other (exit 3), not a hang."""
    async def main():
        server = await start(tmp_path, FakeView(big=4 << 20), max_clients=1)
        stuck = await stuck_client(server)
        try:
            await asyncio.to_thread(request, server.path, "stats")
        except StatusError as err:
            return err.code
        finally:
            stuck.close()
            await server.close()

    assert asyncio.run(main()) == "busy"


def test_overlayctl_status_shows_the_sockets_limits():
    sock = {"path": "/run/overlayd/overlayd.sock", "mode": "0660", "group": "overlayd", "gid": 990, "clients": 2,
            "max_clients": 64, "idle_timeout_s": 30.0, "max_request_bytes": 65536, "listen_backlog": 16,
            "accepted": 9, "refused_busy": 0, "evicted_idle": 1, "dropped_idle": 3, "refused_too_large": 0,
            "refused_not_permitted": 2, "watchers": 1, "max_watchers": 16, "watches": 3, "dropped_too_slow": 1,
            "refused_watchers_busy": 0}
    out = ctl.render_status({"node": "n1", "vtep": "10.0.0.1", "vxlan_port": 4789, "uptime_s": 1, "fdb_entries": 0,
                             "networks": [], "status_socket": sock})
    assert ("status socket: /run/overlayd/overlayd.sock mode 0660 group overlayd, clients 2/64, idle timeout 30s, "
            "requests up to 65536 bytes; 0 refused busy, 1 idle evicted, 3 idle dropped, 0 too large, "
            "2 not permitted; watchers 1/16, 1 dropped too slow, 0 refused busy") in out.splitlines()
