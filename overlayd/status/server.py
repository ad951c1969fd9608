"""The status socket: a Unix stream socket speaking `status.protocol`, mode 0660."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

from overlayd.status.protocol import MAX_LINE_BYTES, NodeView, handle_line

log = logging.getLogger("overlayd.status")


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


class StatusServer:
    def __init__(self, path: str, view: NodeView, clock: Callable[[], float]):
        self.path = path
        self._view = view
        self._clock = clock
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        claim_path(self.path)
        old = os.umask(0o117)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, path=self.path, limit=MAX_LINE_BYTES
            )
        finally:
            os.umask(old)
        os.chmod(self.path, 0o660)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while line := await reader.readline():
                writer.write(handle_line(line, self._view, self._clock()).encode())
                await writer.drain()
        except (ConnectionError, asyncio.LimitOverrunError, ValueError) as err:
            log.debug("status client dropped: %s", err)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)
