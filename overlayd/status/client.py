"""A blocking client for the status socket, for `overlayctl` and tests."""

from __future__ import annotations

import socket
import time
from typing import Any

from overlayd.status.protocol import StatusError, decode_reply, encode_request


def request(path: str, command: str, timeout: float = 5.0, **args: Any) -> Any:
    """Send one request to the daemon at `path` and return the result.

    Raises OSError when the socket cannot be reached and StatusError when
    the daemon refuses the request.
    """
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
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
        with sock.makefile("rb") as f:
            line = f.readline()
    if not line:
        raise StatusError("no_reply", "the daemon closed the connection without replying")
    return decode_reply(line)
