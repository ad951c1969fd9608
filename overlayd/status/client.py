"""A blocking client for the status socket, for `overlayctl` and tests."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any, Self

from overlayd.status.protocol import StatusError, decode_reply, encode_request


def _connect(path: str, timeout: float, command: str, **args: Any) -> socket.socket:
    """A socket connected to the daemon at `path`, `command` sent."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        deadline = time.monotonic() + timeout
        while True:
            try:
                sock.connect(path)
                break
            except BlockingIOError:  # EAGAIN: the daemon's listen queue is full (a flood); wait for room
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.005)
        try:
            sock.sendall(encode_request(command, **args).encode())
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon closed at once: its reason (busy) may still be there to read
    except BaseException:
        sock.close()
        raise
    return sock


def request(path: str, command: str, timeout: float = 5.0, **args: Any) -> Any:
    """Send one request to the daemon at `path` and return the result.

    Raises OSError when the socket cannot be reached and StatusError when
    the daemon refuses the request.
    """
    with _connect(path, timeout, command, **args) as sock, sock.makefile("rb") as f:
        line = f.readline()
    if not line:
        raise StatusError("no_reply", "the daemon closed the connection without replying")
    return decode_reply(line)


class Watch:
    """A `watch` subscription: `started` is the first reply's result; iterating yields each event
    (a dict with stable keys) as it comes, and ends when the daemon closes the connection.

    Raises OSError when the socket cannot be reached, StatusError when the daemon refuses the
    subscription (busy) or ends it (too_slow: this client read too slowly).
    """

    def __init__(self, path: str, timeout: float = 5.0):
        self._sock = _connect(path, timeout, "watch")
        self._file = self._sock.makefile("rb")
        try:
            line = self._file.readline()
            if not line:
                raise StatusError("no_reply", "the daemon closed the connection without replying")
            self.started = decode_reply(line)
        except BaseException:
            self.close()
            raise
        self._sock.settimeout(None)  # a stream: quiet until something happens

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for line in self._file:
            yield decode_reply(line)

    def close(self) -> None:
        self._file.close()
        self._sock.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
