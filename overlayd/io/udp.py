"""The VXLAN UDP sockets: one bound to the VXLAN port to receive, and a pool
bound to ephemeral ports to send from, so the inner flow hash picks the outer
source port (RFC 7348 section 5) without raw sockets."""

from __future__ import annotations

import socket

SOCKET_BUFFER_BYTES = 4 * 1024 * 1024
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)  # Linux values; Python lacks the names
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)


def _tune(sock: socket.socket) -> None:
    for force, plain in (
        (SO_RCVBUFFORCE, socket.SO_RCVBUF),
        (SO_SNDBUFFORCE, socket.SO_SNDBUF),
    ):
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER_BYTES)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER_BYTES)


def _bound(family: int, address: str, port: int) -> socket.socket:
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        _tune(sock)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address, port))
    except BaseException:
        sock.close()
        raise
    return sock


class VxlanSockets:
    def __init__(self, vtep: str, port: int, source_ports: int, ipv6: bool):
        family = socket.AF_INET6 if ipv6 else socket.AF_INET
        self.rx: socket.socket = _bound(family, vtep, port)
        self.tx: list[socket.socket] = []
        try:
            for _ in range(source_ports):
                sock = _bound(family, vtep, 0)
                # Nothing is read from these; keep what strays in small.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1)
                self.tx.append(sock)
        except BaseException:
            self.close()
            raise

    @property
    def source_ports(self) -> list[int]:
        return [s.getsockname()[1] for s in self.tx]

    def close(self) -> None:
        for sock in [self.rx, *self.tx]:
            sock.close()
        self.tx = []
