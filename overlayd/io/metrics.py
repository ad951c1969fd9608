"""The metrics endpoint: Prometheus' text format over HTTP, served by the daemon's event loop.

`GET /metrics` answers with what `status.metrics` collects, read in the loop
itself between two wake-ups of the data plane: no thread, no lock, and the
tables cannot change under the collector. The socket is bound in the
daemon's setup (`bind`, so a taken port fails the start before any device
exists) and served from `start` on; `close` closes the listening socket and
every client.

HTTP/1.0 and 1.1, one request per connection (`Connection: close`), which is
how Prometheus scrapes anyway. Limits, so that the endpoint cannot take the
daemon's descriptors or its loop away from the data plane: at most
MAX_CLIENTS connections at once (more get 503), a request head of at most
MAX_REQUEST_BYTES, and TIMEOUT_S to send it and to read the reply. `GET /`
says where the metrics are; anything else is 404, a method other than GET
or HEAD 405.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from typing import Any

log = logging.getLogger("overlayd.metrics")

MAX_CLIENTS = 16
MAX_REQUEST_BYTES = 8192
TIMEOUT_S = 10.0
LISTEN_BACKLOG = 16
INDEX = b"overlayd: Prometheus metrics at /metrics\n"
_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            503: "Service Unavailable"}


class MetricsServer:
    def __init__(self, address: str, port: int, *, max_clients: int = MAX_CLIENTS, timeout_s: float = TIMEOUT_S):
        self.address = address
        self.port = port
        self.max_clients = max_clients
        self.timeout_s = timeout_s
        self.registry: Any = None  # a prometheus_client CollectorRegistry, given to start()
        self._sock: socket.socket | None = None
        self._server: asyncio.AbstractServer | None = None
        self._clients: dict[asyncio.StreamWriter, asyncio.Task] = {}
        self.counters = {
            "scrapes": 0,  # GET /metrics answered
            "refused_busy": 0,  # a connection beyond max_clients, answered 503
            "bad_requests": 0,  # not HTTP, too long, too slow: 400 or closed
        }

    @property
    def listen(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    def bind(self) -> None:
        """Bind and listen (OSError: the address is not here, the port is taken)."""
        family = socket.AF_INET6 if ":" in self.address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT of a previous run
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)  # [::] is IPv6 only
            sock.bind((self.address, self.port))
            sock.listen(LISTEN_BACKLOG)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.port = sock.getsockname()[1]  # the one the kernel picked, for port 0

    async def start(self, registry: Any) -> None:
        """Serve `registry` on the bound socket."""
        assert self._sock is not None, "bind() first"
        self.registry = registry
        self._server = await asyncio.start_server(self._serve, sock=self._sock, limit=MAX_REQUEST_BYTES)

    def summary(self) -> dict[str, Any]:
        """For `overlayctl status`."""
        return {"listen": self.listen, "path": "/metrics", "clients": len(self._clients),
                "max_clients": self.max_clients, **self.counters}

    async def close(self) -> None:
        """Close the listening socket and every client. Safe to call twice, and without start()."""
        if self._server is not None:
            self._server.close()
            clients = list(self._clients.items())
            for writer, _ in clients:
                writer.transport.abort()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):  # each sees its connection end and returns
                    await asyncio.gather(*(task for _, task in clients), return_exceptions=True)
            self._clients.clear()
            await self._server.wait_closed()
            self._server = None
        elif self._sock is not None:
            self._sock.close()
        self._sock = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._clients) >= self.max_clients:
            self.counters["refused_busy"] += 1
            writer.write(_response(503, b"busy: too many metrics clients at once\n"))
            writer.transport.close()  # after the reply is written
            return
        task = asyncio.current_task()
        assert task is not None
        self._clients[writer] = task
        try:
            async with asyncio.timeout(self.timeout_s):
                head = await reader.readuntil(b"\r\n\r\n")
                status, body, content_type = self._answer(head)
                writer.write(_response(status, body, content_type, head.startswith(b"HEAD ")))
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            self.counters["bad_requests"] += 1
        except ConnectionError as err:
            log.debug("metrics client dropped: %s", err or type(err).__name__)
        finally:
            self._clients.pop(writer, None)
            writer.close()
            with contextlib.suppress(ConnectionError, TimeoutError):
                async with asyncio.timeout(1.0):
                    await writer.wait_closed()

    def _answer(self, head: bytes) -> tuple[int, bytes, str]:
        """(status, body, content type) for a request head."""
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            self.counters["bad_requests"] += 1
            return 400, b"bad request\n", "text/plain"
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            return 405, b"only GET and HEAD\n", "text/plain"
        path = target.split("?", 1)[0]
        if path == "/":
            return 200, INDEX, "text/plain"
        if path != "/metrics":
            return 404, b"not found: the metrics are at /metrics\n", "text/plain"
        accept = next((line.split(":", 1)[1].strip() for line in lines[1:]
                       if line.lower().startswith("accept:")), "")
        # prometheus_client is imported only with `metrics:` on (its import costs startup time)
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(accept)
        self.counters["scrapes"] += 1
        return 200, encoder(self.registry), content_type


def _response(status: int, body: bytes, content_type: str = "text/plain", head_only: bool = False) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS[status]}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}", "Connection: close"]
    if status == 405:
        lines.append("Allow: GET, HEAD")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head_only else body)
