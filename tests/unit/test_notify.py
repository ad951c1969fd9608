"""sd_notify readiness (io/notify.py) against a fake NOTIFY_SOCKET: a Unix datagram
socket bound by the test, at a path and at an abstract name."""

from __future__ import annotations

import logging
import secrets
import socket

import pytest

from overlayd.io.notify import notify, notify_address


@pytest.fixture
def receiver(tmp_path):
    """A fake service manager's socket at a path: (NOTIFY_SOCKET value, socket)."""
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.settimeout(2)
        yield str(path), sock


def test_ready_and_stopping_reach_a_socket_at_a_path(receiver):
    path, sock = receiver
    env = {"NOTIFY_SOCKET": path}
    assert notify("READY=1\nSTATUS=serving", env)
    assert sock.recv(4096) == b"READY=1\nSTATUS=serving"
    assert notify("STOPPING=1", env)
    assert sock.recv(4096) == b"STOPPING=1"


def test_an_abstract_name_is_written_with_a_leading_at():
    name = f"overlayd-test-{secrets.token_hex(4)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(b"\0" + name.encode())
        sock.settimeout(2)
        env = {"NOTIFY_SOCKET": f"@{name}"}
        assert notify_address(env) == b"\0" + name.encode()
        assert notify("READY=1", env)
        assert sock.recv(4096) == b"READY=1"


@pytest.mark.parametrize("value", [None, "", "relative/path"])
def test_nothing_is_sent_without_a_usable_notify_socket(value):
    env = {} if value is None else {"NOTIFY_SOCKET": value}
    assert notify_address(env) is None
    assert notify("READY=1", env) is False


def test_a_manager_that_went_away_is_logged_not_raised(tmp_path, caplog):
    env = {"NOTIFY_SOCKET": str(tmp_path / "gone")}
    with caplog.at_level(logging.WARNING, logger="overlayd"):
        assert notify("READY=1", env) is False
    assert "cannot notify the service manager" in caplog.text
