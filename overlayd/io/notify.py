"""Readiness for a service manager: sd_notify(3) without libsystemd.

Under systemd with `Type=notify`, the environment variable NOTIFY_SOCKET
names a Unix datagram socket: a path, or an abstract name written with a
leading '@'. overlayd sends `READY=1` once its devices and its status socket
are up, and `STOPPING=1` when a clean stop begins. Without NOTIFY_SOCKET
(started by hand, by a test, in a container) nothing is sent.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger("overlayd")

NOTIFY_SOCKET = "NOTIFY_SOCKET"


def notify_address(environ: Mapping[str, str] = os.environ) -> str | bytes | None:
    """Where notifications go, as `socket.sendto` takes it; None: nobody asked for them."""
    path = environ.get(NOTIFY_SOCKET, "")
    if path.startswith("@"):
        return b"\0" + path[1:].encode()  # an abstract socket: the '@' stands for the leading NUL
    if path.startswith("/"):
        return path
    return None


def notify(state: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send `state` ("READY=1", "STOPPING=1", "STATUS=...", newline-separated) to the
    service manager. True if it was sent; False without NOTIFY_SOCKET or when the send
    failed (logged: the daemon runs on without its manager's notice)."""
    address = notify_address(environ)
    if address is None:
        return False
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.sendto(state.encode(), address)
    except OSError as err:
        log.warning("cannot notify the service manager at %s: %s", environ.get(NOTIFY_SOCKET),
                    err.strerror or err)
        return False
    return True
