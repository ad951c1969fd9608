"""The status socket: a Unix stream socket speaking `status.protocol`.

Who gets in: the socket is created with mode 0660 (through the umask at bind
time, never a chmod that could follow a symlink swapped in), owned by the
daemon's user and by the group of `node.status_group` (default: the daemon's
own group, i.e. root's). Each client's credentials come from the kernel
(SO_PEERCRED): root and the daemon's own user are privileged and may run the
state-changing commands; the group reads.

Limits, so that no client, and no thousand of them, can take the daemon's
file descriptors or its event loop away from BGP and the data plane:

- at most `max_clients` connections at once. A newcomer when all are taken
  replaces the client that has been idle longest (it is closed); when none
  is idle, the newcomer gets a `busy` error and is closed. So idle clients
  can never lock the operator out.
- a client idle (no request line, or a reply it does not read) for
  `idle_timeout_s` is closed.
- a request line longer than MAX_LINE_BYTES gets a `too_large` error and
  the connection is closed.

`watch` turns a connection into a stream of events (control/hub.py) until
the client closes its end (or sends anything more). Watchers have a cap of
their own, `max_watchers`, outside the `max_clients` request clients (one
more is told `busy`); they are never idle-timed out nor evicted: a stream
is quiet until something happens. A watcher never slows the daemon: the
hub queues at most its subscriber's `max_queued` events, and this server
takes them out only as fast as the client reads (the socket's write
buffer drained). A client that falls that far behind is sent a last line,
error `too_slow` with the reason, given WATCH_GOODBYE_S to read it, and
closed.

Each of these is counted; `summary()` shows the limits and the counts in
`overlayctl status`.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import logging
import os
import socket
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from overlayd.status.protocol import MAX_LINE_BYTES, NodeView, Stream, error_reply, event_line, handle_line_async

log = logging.getLogger("overlayd.status")

SOCKET_MODE = 0o660
DEFAULT_MAX_CLIENTS = 64
DEFAULT_IDLE_TIMEOUT_S = 30.0
DEFAULT_MAX_WATCHERS = 16  # `watch` streams at once, beside the request clients (DECISIONS.md)
WATCH_GOODBYE_S = 5.0  # a watcher dropped as too slow has this long to read its last line
# The kernel's queue of connections not yet accepted, and (asyncio) how many are accepted per
# wake-up: a flood of connects waits in the kernel, not in the daemon's descriptor table, whose
# share of status clients stays near max_clients + a few batches of LISTEN_BACKLOG.
LISTEN_BACKLOG = 16
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_NOT_PERMITTED = '{"error": {"code": "not_permitted"'  # how such a reply starts (keys sorted)


class SocketInUseError(OSError):
    """Another process answers on the status socket path."""


def claim_path(path: str) -> None:
    """Make `path` ready to bind: create its directory, remove a stale socket.

    Refuses when a live daemon answers there, or when the path is not a socket.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = p.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SocketInUseError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        p.unlink()  # stale: nobody listens
        return
    finally:
        probe.close()
    raise SocketInUseError(f"{path}: another overlayd is listening there")


def resolve_group(group: str | int | None) -> int | None:
    """`node.status_group` as a gid: a number is one, a name is looked up (KeyError: no such group)."""
    if group is None or isinstance(group, int):
        return group
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        if group.isdigit():
            return int(group)
        raise KeyError(f"no group named {group!r}") from None


def peer_credentials(sock: Any) -> tuple[int, int, int] | None:
    """(pid, uid, gid) of the process at the other end of a Unix socket, from the kernel."""
    try:
        return _UCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size))
    except (OSError, AttributeError, struct.error):
        return None


@dataclass
class _Client:
    writer: asyncio.StreamWriter
    uid: int | None
    idle_since: float | None  # None: busy with a request

    def close(self) -> None:
        self.writer.transport.abort()


class StatusServer:
    def __init__(self, path: str, view: NodeView, clock: Callable[[], float], *,
                 max_clients: int = DEFAULT_MAX_CLIENTS, idle_timeout_s: float = DEFAULT_IDLE_TIMEOUT_S,
                 group: str | int | None = None, max_watchers: int = DEFAULT_MAX_WATCHERS):
        self.path = path
        self._view = view
        self._clock = clock
        self._server: asyncio.AbstractServer | None = None
        self.max_clients = max_clients
        self.idle_timeout_s = idle_timeout_s
        self.max_watchers = max_watchers
        self.group = group
        self.gid: int | None = None  # the socket's group once started
        self._privileged_uids = {0, os.geteuid()}
        self._clients: dict[asyncio.StreamWriter, _Client] = {}
        self._watchers: dict[asyncio.StreamWriter, _Client] = {}  # `watch` streams
        self.counters = {
            "accepted": 0,  # connections served
            "refused_busy": 0,  # a newcomer turned away: every client was busy with a request
            "evicted_idle": 0,  # the longest-idle client closed to make room for a newcomer
            "dropped_idle": 0,  # closed after idle_timeout_s without a request (or not reading a reply)
            "refused_too_large": 0,  # a request line over MAX_LINE_BYTES
            "refused_not_permitted": 0,  # a state-changing command from a client that is not root
            "watches": 0,  # `watch` streams served
            "refused_watchers_busy": 0,  # a `watch` turned away: max_watchers streams already
            "dropped_too_slow": 0,  # a watcher that read its events too slowly, dropped
        }

    async def start(self) -> None:
        """Bind and listen. KeyError: `group` names no group; OSError: the socket cannot be made."""
        gid = resolve_group(self.group)
        claim_path(self.path)
        old = os.umask(0o777 & ~SOCKET_MODE)  # bind() creates the socket file 0660, no chmod race
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=self.path, limit=MAX_LINE_BYTES, backlog=LISTEN_BACKLOG
            )
        finally:
            os.umask(old)
        if gid is not None:
            os.chown(self.path, -1, gid, follow_symlinks=False)
        self.gid = os.lstat(self.path).st_gid

    def summary(self) -> dict[str, Any]:
        """The socket's access and limits, and what they did (for `overlayctl status`)."""
        try:
            st = os.lstat(self.path)
            mode, gid = f"{stat.S_IMODE(st.st_mode):04o}", st.st_gid
        except OSError:
            mode, gid = None, self.gid
        try:
            group = grp.getgrgid(gid).gr_name if gid is not None else None
        except KeyError:
            group = str(gid)
        return {
            "path": self.path,
            "mode": mode,
            "group": group,
            "gid": gid,
            "clients": len(self._clients),
            "max_clients": self.max_clients,
            "idle_timeout_s": self.idle_timeout_s,
            "watchers": len(self._watchers),
            "max_watchers": self.max_watchers,
            "max_request_bytes": MAX_LINE_BYTES,
            "listen_backlog": LISTEN_BACKLOG,
            **self.counters,
        }

    def _admit(self, client: _Client) -> bool:
        """Room for one more: below the cap, or by closing the client idle the longest."""
        if len(self._clients) < self.max_clients:
            return True
        idle = [c for c in self._clients.values() if c.idle_since is not None]
        if not idle:
            self.counters["refused_busy"] += 1
            return False
        victim = min(idle, key=lambda c: c.idle_since)
        del self._clients[victim.writer]
        victim.close()
        self.counters["evicted_idle"] += 1
        return True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        creds = peer_credentials(writer.get_extra_info("socket"))
        client = _Client(writer, creds[1] if creds else None, self._clock())
        if not self._admit(client):
            writer.write(error_reply("busy", f"the status socket serves {self.max_clients} clients at once and "
                                             "all are busy: try again").encode())
            writer.transport.close()  # after the reply is written
            return
        self._clients[writer] = client
        self.counters["accepted"] += 1
        privileged = client.uid in self._privileged_uids
        try:
            await self._requests(reader, writer, client, privileged)
        except (ConnectionError, TimeoutError) as err:
            log.debug("status client dropped: %s", err or type(err).__name__)
        finally:
            if self._clients.get(writer) is client:
                del self._clients[writer]
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: _Client,
                        privileged: bool) -> None:
        while True:
            client.idle_since = self._clock()
            last = False
            try:
                async with asyncio.timeout(self.idle_timeout_s):
                    line = await reader.readuntil(b"\n")
            except TimeoutError:
                self.counters["dropped_idle"] += 1
                return
            except asyncio.IncompleteReadError as err:  # EOF: a last line without newline still counts
                line, last = err.partial, True
                if not line.strip():
                    return
            except asyncio.LimitOverrunError:
                self.counters["refused_too_large"] += 1
                writer.write(error_reply("too_large", f"a request line holds at most {MAX_LINE_BYTES} bytes")
                             .encode())
                await self._drain(writer)
                return
            client.idle_since = None
            reply = await handle_line_async(line, self._view, self._clock(), privileged=privileged)
            if isinstance(reply, Stream):
                await self._watch(reader, writer, client, reply)
                return
            if not privileged and reply.startswith(_NOT_PERMITTED):
                self.counters["refused_not_permitted"] += 1
                if self.counters["refused_not_permitted"] == 1 or log.isEnabledFor(logging.DEBUG):
                    log.info("status: refused a state-changing command from uid %s (root only; "
                             "later refusals are only counted)", client.uid)
            writer.write(reply.encode())
            if not await self._drain(writer) or last:
                return

    async def _watch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, client: _Client,
                     stream: Stream) -> None:
        """Serve a `watch` stream (see the module docstring) until the client leaves or is dropped."""
        sub = stream.subscription
        if len(self._watchers) >= self.max_watchers:
            sub.close()
            self.counters["refused_watchers_busy"] += 1
            writer.write(error_reply("busy", f"the status socket serves {self.max_watchers} watchers at once "
                                             "(node.status_max_watchers): try again later").encode())
            await self._drain(writer)
            return
        self._clients.pop(writer, None)  # a stream: neither idle nor a request client any more
        self._watchers[writer] = client
        self.counters["watches"] += 1
        news = asyncio.Event()  # the hub queued a first event, or dropped the subscriber
        sub.wake = news.set
        gone = asyncio.ensure_future(reader.read(1))  # the client says nothing more: EOF (or a byte) ends it
        try:
            writer.write(stream.first.encode())
            while not gone.done():
                events = sub.take()
                if sub.dropped is not None:
                    self.counters["dropped_too_slow"] += 1
                    writer.write(error_reply("too_slow", sub.dropped).encode())
                    writer.transport.set_write_buffer_limits(high=0)  # drain() waits for every byte
                    await self._until(asyncio.sleep(WATCH_GOODBYE_S), writer.drain(), gone=gone)
                    writer.transport.abort()  # what it did not read in time is dropped with it
                    return
                if events:
                    writer.write("".join(event_line(ev.as_dict()) for ev in events).encode())
                    # Room for them: at once, unless the client reads slower than events come; then
                    # they pile up in the hub (bounded), and a drop ends the wait.
                    await self._until(writer.drain(), self._dropped(sub, news), gone=gone)
                else:
                    news.clear()
                    await self._until(news.wait(), gone=gone)
        finally:
            if gone.done() and not gone.cancelled():
                gone.exception()  # a reset while reading: the client left all the same
            gone.cancel()
            sub.close()
            self._watchers.pop(writer, None)
            if writer.transport.get_write_buffer_size():  # a client gone, or not reading: no lingering
                writer.transport.abort()

    @staticmethod
    async def _dropped(sub: Any, news: asyncio.Event) -> None:
        while sub.dropped is None:
            news.clear()
            await news.wait()

    @staticmethod
    async def _until(*waits: Any, gone: asyncio.Future) -> None:
        """Wait for the first of `waits` (coroutines) or `gone`; cancel the rest of `waits`. A
        connection error while waiting (the client went away) is raised."""
        tasks = [asyncio.ensure_future(w) for w in waits]
        try:
            done, _ = await asyncio.wait([*tasks, gone], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
        for task in tasks:
            error = task.exception() if task.done() and not task.cancelled() else None
            if error is not None and task in done:
                raise error

    async def _drain(self, writer: asyncio.StreamWriter) -> bool:
        """Wait for the reply to leave; False (counted as idle) when the client does not read it in time."""
        try:
            async with asyncio.timeout(self.idle_timeout_s):
                await writer.drain()
        except TimeoutError:
            self.counters["dropped_idle"] += 1
            return False
        return True

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for client in [*self._clients.values(), *self._watchers.values()]:
                client.close()
            self._clients.clear()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
