"""`watch` on the status socket, without root: the protocol's stream, the server's watchers on a
real Unix socket (several at once, never idle-timed out, capped, a slow one dropped with a last
line saying why while the others go on), and `overlayctl watch`.

tests/netns/test_watch.py does it against real daemons: a SIGKILLed peer, a MAC, a reload."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

from overlayd.control.hub import EventHub
from overlayd.status import ctl
from overlayd.status.client import Watch
from overlayd.status.protocol import (
    Stream,
    encode_request,
    handle_line,
    handle_line_async,
)
from overlayd.status.server import StatusServer

PAD = "x" * 200  # events this long fill socket buffers sooner


class WatchView:
    def __init__(self, hub: EventHub):
        self.hub = hub

    def status(self, now):
        return {"node": "n1"}

    def watch(self, now):
        sub = self.hub.subscribe()
        return {"watching": "n1", "max_queued": sub.max_queued}, sub


def emit(hub: EventHub, i: int, pad: str = "") -> None:
    hub.emit("reload_applied", f"reload: n{i}.yaml applied: {pad}", config=f"n{i}.yaml", changes=str(i))


# -- the protocol --------------------------------------------------------------------------------------------


async def test_watch_is_a_stream_any_client_may_open():
    hub = EventHub()
    reply = await handle_line_async(encode_request("watch"), WatchView(hub), 1.0, privileged=False)
    assert isinstance(reply, Stream)
    assert json.loads(reply.first) == {"command": "watch", "ok": True, "version": 1,
                                       "result": {"watching": "n1", "max_queued": 1000}}
    assert hub.subscribers == [reply.subscription]
    reply.subscription.close()


def test_the_plain_handler_cannot_stream_and_leaves_no_subscriber():
    hub = EventHub()
    reply = json.loads(handle_line(encode_request("watch"), WatchView(hub), 1.0))
    assert reply["error"]["code"] == "not_supported" and hub.subscribers == []


def test_watch_takes_no_arguments():
    hub = EventHub()
    reply = json.loads(handle_line(encode_request("watch", network="blue"), WatchView(hub), 1.0))
    assert reply["error"]["code"] == "bad_request" and hub.subscribers == []


# -- the socket server -------------------------------------------------------------------------------------------


async def start(tmp_path, hub: EventHub, **kw) -> StatusServer:
    server = StatusServer(str(tmp_path / "s.sock"), WatchView(hub), time.monotonic, **kw)
    await server.start()
    return server


async def watcher(server: StatusServer):
    reader, writer = await asyncio.open_unix_connection(server.path)
    writer.write(encode_request("watch").encode())
    first = json.loads(await asyncio.wait_for(reader.readline(), 5))
    return reader, writer, first


async def next_event(reader) -> dict:
    reply = json.loads(await asyncio.wait_for(reader.readline(), 5))
    assert reply["ok"], reply
    return reply["result"]


async def test_two_watchers_get_every_event_and_an_idle_timeout_does_not_close_them(tmp_path):
    hub = EventHub()
    server = await start(tmp_path, hub, idle_timeout_s=0.2)
    try:
        (r1, w1, first), (r2, w2, _) = await watcher(server), await watcher(server)
        assert first["result"] == {"watching": "n1", "max_queued": 1000}
        s = server.summary()
        assert (s["watchers"], s["clients"], s["max_watchers"]) == (2, 0, 16)  # not request clients
        await asyncio.sleep(0.5)  # well past the idle timeout: a stream is quiet until something happens
        emit(hub, 1)
        for reader in (r1, r2):
            ev = await next_event(reader)
            assert (ev["event"], ev["msg"], ev["changes"], ev["peer"]) == \
                ("reload_applied", "reload: n1.yaml applied: ", "1", None)
        assert server.summary()["dropped_idle"] == 0
        w1.close()  # a watcher that leaves is forgotten
        for _ in range(100):
            if len(hub.subscribers) == 1:
                break
            await asyncio.sleep(0.01)
        assert len(hub.subscribers) == 1 and server.summary()["watchers"] == 1
        w2.close()
    finally:
        await server.close()


async def test_watchers_have_their_own_cap_beside_the_request_clients(tmp_path):
    hub = EventHub()
    server = await start(tmp_path, hub, max_watchers=1, max_clients=1)
    try:
        _, w1, _ = await watcher(server)
        _, w2, refused = await watcher(server)
        assert refused["error"]["code"] == "busy" and "1 watchers" in refused["error"]["message"]
        assert len(hub.subscribers) == 1 and server.summary()["refused_watchers_busy"] == 1
        r3, w3 = await asyncio.open_unix_connection(server.path)  # a request client still gets in
        w3.write(encode_request("status").encode())
        assert json.loads(await asyncio.wait_for(r3.readline(), 5))["ok"]
        for w in (w1, w2, w3):
            w.close()
    finally:
        await server.close()


async def test_a_watcher_that_stops_reading_is_dropped_told_why_and_the_other_goes_on(tmp_path):
    hub = EventHub(max_queued=100)
    server = await start(tmp_path, hub)
    try:
        (slow_r, slow_w, _), (fast_r, fast_w, _) = await watcher(server), await watcher(server)
        received = 0
        sent = 0
        # The slow one reads nothing: its socket, then the server's buffer, then its queue fill.
        while server.summary()["dropped_too_slow"] == 0 and sent < 100_000:
            for _ in range(50):
                emit(hub, sent, PAD)
                sent += 1
            await asyncio.sleep(0)  # the loop runs: the server moves events to both
            while True:  # the fast one keeps up
                try:
                    line = await asyncio.wait_for(fast_r.readline(), 0.001)
                except TimeoutError:
                    break
                received += 1 if json.loads(line)["ok"] else 0
        assert server.summary()["dropped_too_slow"] == 1 and hub.dropped_slow == 1
        assert len(hub.subscribers) == 1  # the fast one
        while received < sent:
            await next_event(fast_r)
            received += 1
        print(f"\nslow watcher dropped after {sent} events (queue of 100); the other read all {received}")
        # the slow one reads now: what was in its socket, then the last line saying why, then EOF
        lines = []
        async with asyncio.timeout(10):
            while line := await slow_r.readline():
                lines.append(json.loads(line))
        assert lines[-1]["ok"] is False and lines[-1]["error"]["code"] == "too_slow"
        assert "100 events were waiting unread" in lines[-1]["error"]["message"]
        assert all(x["ok"] for x in lines[:-1]) and len(lines) - 1 < sent
        emit(hub, sent)  # and the other still gets what comes
        assert (await next_event(fast_r))["changes"] == str(sent)
        assert server.summary()["watchers"] == 1
        slow_w.close()
        fast_w.close()
    finally:
        await server.close()


async def test_a_watcher_that_never_reads_is_closed_after_its_goodbye(tmp_path, monkeypatch):
    monkeypatch.setattr("overlayd.status.server.WATCH_GOODBYE_S", 0.2)
    hub = EventHub(max_queued=10)
    server = await start(tmp_path, hub)
    try:
        _, slow_w, _ = await watcher(server)
        t0 = time.monotonic()
        while server.summary()["watchers"] and time.monotonic() - t0 < 10:
            for i in range(100):
                emit(hub, i, PAD * 10)
            await asyncio.sleep(0.01)
        assert server.summary()["watchers"] == 0 and server.summary()["dropped_too_slow"] == 1
        slow_w.close()
    finally:
        await server.close()


# -- overlayctl watch ---------------------------------------------------------------------------------------------


def test_overlayctl_watch_prints_one_line_per_event(tmp_path, capsys):
    hub = EventHub()
    out: dict = {}

    async def main():
        server = await start(tmp_path, hub)
        try:
            t = threading.Thread(target=lambda: out.setdefault("code", ctl.main(["-s", server.path, "watch"])))
            t.start()
            while not hub.subscribers:
                await asyncio.sleep(0.01)
            hub.emit("peer_down", "peer 10.0.0.2: down: connection closed", peer="10.0.0.2",
                     reason="connection closed", stale_paths=0)
            await asyncio.sleep(0.2)
        finally:
            await server.close()  # the daemon goes: overlayctl says so and exits 2
        await asyncio.to_thread(t.join, 5)

    asyncio.run(main())
    captured = capsys.readouterr()
    [line] = captured.out.splitlines()
    ts, name, msg = line.split(maxsplit=2)
    assert ts.endswith("Z") and name == "peer_down" and msg == "peer 10.0.0.2: down: connection closed"
    assert "watching n1" in captured.err and "closed the connection" in captured.err
    assert out["code"] == ctl.EXIT_UNREACHABLE


def test_the_blocking_client_raises_too_slow(tmp_path):
    hub = EventHub(max_queued=5)

    async def main():
        server = await start(tmp_path, hub)
        try:
            w = await asyncio.to_thread(Watch, server.path)
            for i in range(50):  # all at once, before the server takes any out
                emit(hub, i)
            with pytest.raises(Exception) as err:
                await asyncio.to_thread(lambda: list(w))
            w.close()
            return err.value
        finally:
            await server.close()

    error = asyncio.run(main())
    assert getattr(error, "code", None) == "too_slow"
