"""Issue 13, item 15, without root: `bgp.neighbors[].password` and `ttl_security` in the config,
struct tcp_md5sig as the kernel reads it, and the BGP listening socket's options checked by
the loopback's own kernel (an MD5 key or a TTL that does not match gets no connection).

The interop with FRR and GoBGP across namespaces is tests/interop/test_tcp_auth.py.
"""

from __future__ import annotations

import copy
import ipaddress
import socket
import struct

import pytest

from overlayd.config import ConfigError, parse_config
from overlayd.control.speaker import Speaker
from overlayd.dataplane.switch import Switch
from overlayd.io import tcp_auth
from overlayd.io.bgp import BgpService
from overlayd.status.bgp_view import peer_rows
from overlayd.status.ctl import render_peers

KEY = "correct horse battery staple"
BASE = {
    "node": {"vtep": "127.0.0.1"},
    "networks": [{"name": "blue", "vni": 100, "device": "blue0"}],
    "bgp": {"asn": 65000, "port": 179, "neighbors": [{"address": "127.0.0.2", "asn": 65000}]},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(**neighbor):
    doc = copy.deepcopy(BASE)
    doc["bgp"]["port"] = free_port()
    doc["bgp"]["neighbors"][0].update(neighbor)
    return doc


# -- config ------------------------------------------------------------------------------------------------


def test_password_and_ttl_security_default_off():
    nb = parse_config(BASE).bgp.neighbors[0]
    assert nb.password is None and nb.md5_key is None and nb.ttl_security is False


def test_the_password_is_kept_for_the_kernel_and_hidden_everywhere_else():
    cfg = parse_config(config(password=KEY, ttl_security=True))
    nb = cfg.bgp.neighbors[0]
    assert nb.md5_key == KEY.encode() and nb.ttl_security is True
    for text in (repr(cfg), str(cfg), repr(nb), cfg.model_dump_json(), str(cfg.model_dump())):
        assert KEY not in text
    assert "**********" in repr(nb)


@pytest.mark.parametrize("value, message", [
    ("x" * 81, "must be 1 to 80 bytes (the kernel's TCP MD5 key limit), got 81"),
    ("é" * 41, "got 82"),
    ("", "got 0"),
    (123456, "must be a string"),
    (["a"], "must be a string"),
])
def test_a_bad_password_is_an_error_that_never_shows_it(value, message):
    with pytest.raises(ConfigError) as err:
        parse_config(config(password=value))
    text = str(err.value)
    assert text.startswith("bgp.neighbors[0].password: ") and message in text
    assert str(value) not in text or value == ""


def test_no_error_message_shows_a_password_anywhere_in_its_input():
    doc = copy.deepcopy(BASE)
    doc["bgp"]["neighbors"] = {"address": "127.0.0.2", "asn": 65000, "password": KEY}  # not a list
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    assert KEY not in str(err.value) and "**********" in str(err.value)


def test_ttl_security_is_a_boolean():
    with pytest.raises(ConfigError, match=r"bgp\.neighbors\[0\]\.ttl_security: "):
        parse_config(config(ttl_security="maybe"))


# -- struct tcp_md5sig ----------------------------------------------------------------------------------------


def test_md5sig_layout_ipv4():
    raw = tcp_auth.md5sig("192.0.2.7", b"key")
    assert len(raw) == 216  # sizeof(struct tcp_md5sig): sockaddr_storage 128 + 4 + 4 + 80
    assert struct.unpack_from("=H", raw, 0)[0] == socket.AF_INET
    assert raw[2:4] == b"\0\0" and raw[4:8] == ipaddress.ip_address("192.0.2.7").packed
    assert struct.unpack_from("=BBHi", raw, 128) == (0, 0, 3, 0)
    assert raw[136:139] == b"key" and raw[139:] == bytes(77)


def test_md5sig_layout_ipv6():
    raw = tcp_auth.md5sig("fd00::2", b"k" * 80)
    assert struct.unpack_from("=H", raw, 0)[0] == socket.AF_INET6
    assert raw[8:24] == ipaddress.ip_address("fd00::2").packed
    assert struct.unpack_from("=H", raw, 130)[0] == 80 and raw[136:] == b"k" * 80
    with pytest.raises(ValueError):
        tcp_auth.md5sig("fd00::2", b"k" * 81)


# -- the listening socket, checked by the kernel on the loopback --------------------------------------------


def service(doc) -> BgpService:
    cfg = parse_config(doc)
    return BgpService(cfg, Speaker(cfg, Switch(4789, 300), 0.0), lambda: 0.0)


def try_connect(port: int, key: bytes | None = None, ttl: int | None = None, timeout: float = 1.0) -> bool:
    """A client at 127.0.0.2 (the neighbor), with this MD5 key and TTL; whether it connects."""
    c = socket.socket()
    try:
        c.bind(("127.0.0.2", 0))
        if key is not None:
            tcp_auth.set_md5(c, "127.0.0.1", key)
        if ttl is not None:
            c.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, ttl)
        c.settimeout(timeout)
        try:
            c.connect(("127.0.0.1", port))
        except (TimeoutError, OSError):
            return False
        return True
    finally:
        c.close()


@pytest.fixture
def listening():
    socks = []

    def make(**neighbor):
        sock = service(config(**neighbor))._listening_socket()
        sock.listen(8)
        socks.append(sock)
        return sock

    yield make
    for s in socks:
        s.close()


def test_md5_on_the_listener_admits_the_right_key_only(listening):
    sock = listening(password=KEY)
    port = sock.getsockname()[1]
    assert try_connect(port, KEY.encode())
    assert not try_connect(port, b"wrong key")
    assert not try_connect(port, None)  # unsigned SYNs from a keyed neighbor are dropped too
    print("\nloopback: right MD5 key connected; a wrong key and no key got no connection (SYN dropped)")


def test_without_a_password_unsigned_connections_still_work(listening):
    port = listening().getsockname()[1]
    assert try_connect(port)


def test_gtsm_on_the_listener_admits_ttl_255_only(listening):
    sock = listening(ttl_security=True)
    assert tcp_auth.min_ttl(sock) == 255
    assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 255
    port = sock.getsockname()[1]
    assert try_connect(port, ttl=255)
    assert not try_connect(port, ttl=254)  # one hop further
    assert not try_connect(port, ttl=64)  # a default TTL


def test_mixed_neighbors_keep_the_listener_open_and_check_on_accept():
    doc = config(ttl_security=True)
    doc["bgp"]["neighbors"].append({"address": "127.0.0.3", "asn": 65000})
    sock = service(doc)._listening_socket()
    try:
        assert tcp_auth.min_ttl(sock) == 0  # 127.0.0.3 has no GTSM: the check goes per connection
        assert sock.getsockopt(socket.IPPROTO_IP, socket.IP_TTL) == 255
    finally:
        sock.close()


def test_peers_show_the_protection_never_the_key():
    doc = config(password=KEY, ttl_security=True)
    doc["bgp"]["neighbors"].append({"address": "127.0.0.3", "asn": 65000})
    cfg = parse_config(doc)
    rows = peer_rows(Speaker(cfg, Switch(4789, 300), 0.0), 0.0)
    assert [(r["neighbor"], r["tcp_md5"], r["ttl_security"]) for r in rows] == [
        ("127.0.0.2", True, True), ("127.0.0.3", False, False)]
    text = render_peers(rows)
    assert KEY not in text and KEY not in str(rows)
    lines = text.splitlines()
    assert "AUTH" in lines[0].split() and "md5+gtsm" in lines[1].split() and "-" in lines[2].split()
