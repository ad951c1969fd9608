"""The BGP speaker's TCP side: a listening socket, outbound connects, and
one timer. It only moves bytes and time between asyncio and the sans-I/O
`Speaker` / `Peer` objects; every decision is theirs.

Bounded writers (issue 13): each connection's asyncio buffer has a high-water
mark (SEND_BUFFER_HIGH_BYTES); above it the Peer is told to pause and the
speaker queues no more UPDATEs for it. Every PROGRESS_TICK_S the bytes the
peer has not acknowledged (asyncio's buffer + the kernel's send queue,
SIOCOUTQ) go to the Peer for its send hold timer (RFC 9687). A connection
the session closes gets CLOSE_GRACE_S to deliver what is queued (the
NOTIFICATION); if the peer has not acknowledged it by then, the socket is
reset (SO_LINGER 0): a peer cut off in one direction learns at once that the
session is gone, and no socket lingers in the kernel retransmitting.

Transport protection (io/tcp_auth.py) is set when sockets are made: each
neighbor's TCP MD5 key (`password`) on the listening socket before it
listens and on each connecting socket before it connects; GTSM
(`ttl_security`) as TTL 255 on both, a minimum TTL of 255 on connecting
sockets, on the listening socket when every neighbor of its family asks for
GTSM (far SYNs then die in the kernel), else on each accepted connection of
such a neighbor before a byte of it is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import logging
import socket
import struct
import termios
from collections.abc import Callable

from overlayd.config import Config, NeighborConfig
from overlayd.control.peer import Peer
from overlayd.control.speaker import Speaker
from overlayd.io import tcp_auth

log = logging.getLogger("overlayd.bgp")

CLOSE_GRACE_S = 0.5
SEND_BUFFER_HIGH_BYTES = 128 * 1024  # asyncio's buffer per connection: above it, no more UPDATEs are queued
PROGRESS_TICK_S = 1.0  # how often unacknowledged bytes are reported (the send hold timer's resolution)
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a RST


def unacked_bytes(transport: asyncio.Transport) -> int:
    """Bytes written that the peer has not acknowledged: asyncio's buffer + the kernel's send queue."""
    pending = transport.get_write_buffer_size()
    sock = transport.get_extra_info("socket")
    if sock is not None and sock.fileno() >= 0:
        with contextlib.suppress(OSError):
            pending += struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    return pending


class TcpAuthError(OSError):
    """The kernel refused a neighbor's TCP MD5 key or GTSM option (the message names the field)."""


class _Connection(asyncio.Protocol):
    def __init__(self, service: BgpService, peer: Peer | None = None, conn_id: int | None = None):
        self.service = service
        self.peer = peer
        self.conn_id = conn_id
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=SEND_BUFFER_HIGH_BYTES)
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        now = self.service.clock()
        if self.peer is None:  # inbound
            host = transport.get_extra_info("peername")[0]
            peer = self.service.speaker.peer_for(host)
            if peer is not None and sock is not None and peer.peer in self.service.gtsm:
                tcp_auth.set_gtsm(sock)  # before anything of it is read
            accepted = self.service.speaker.accept(host, now)
            if isinstance(accepted, str):
                log.info("refused BGP connection from %s: %s", host, accepted)
                transport.close()
                return
            self.peer, self.conn_id = accepted
        elif self.service.speaker.peers.get(self.peer.peer) is not self.peer:  # removed by a reload meanwhile
            transport.close()
            return
        else:
            self.peer.connection_made(self.conn_id, now)
        self.service.connections[(self.peer.peer, self.conn_id)] = self
        self.service.kick()

    def pause_writing(self) -> None:
        if self.peer is not None:
            self.peer.set_paused(self.conn_id, True)

    def resume_writing(self) -> None:
        if self.peer is not None:
            self.peer.set_paused(self.conn_id, False)
            self.service.kick()

    def close_soon(self) -> None:
        """The session is done with this connection: give its last bytes CLOSE_GRACE_S to be
        acknowledged, then close (or reset, if they were not)."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        loop = asyncio.get_running_loop()
        loop.call_later(CLOSE_GRACE_S if unacked_bytes(transport) else 0.0, self._close_now)

    def _close_now(self) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if unacked_bytes(transport):
            sock = transport.get_extra_info("socket")
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            transport.abort()
        else:
            transport.close()

    def data_received(self, data: bytes) -> None:
        if self.peer is not None:
            self.peer.data_received(self.conn_id, data, self.service.clock())
            self.service.kick()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is None:
            return
        self.service.connections.pop((self.peer.peer, self.conn_id), None)
        reason = str(exc) if exc else "connection closed"
        self.peer.connection_lost(self.conn_id, self.service.clock(), reason)
        self.service.kick()


class BgpService:
    def __init__(self, config: Config, speaker: Speaker, clock: Callable[[], float]):
        assert config.bgp is not None
        self.config = config
        self.speaker = speaker
        self.clock = clock
        self.connections: dict[tuple[str, int], _Connection] = {}
        self._server: asyncio.AbstractServer | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._kicked = False
        self._connecting: set[asyncio.Task] = set()
        self._progress: asyncio.Task | None = None
        self._ports = {str(nb.address): nb.port for nb in config.bgp.neighbors}
        self._keys = {str(nb.address): nb.md5_key for nb in config.bgp.neighbors if nb.password is not None}
        self.gtsm = {str(nb.address) for nb in config.bgp.neighbors if nb.ttl_security}

    @property
    def listen(self) -> str:
        bgp = self.config.bgp
        return str(bgp.listen or self.config.node.vtep)

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), sock=self._listening_socket())
        log.info("BGP: AS %d, router ID %s, listening on %s port %d, %d neighbor(s)",
                 self.config.bgp.asn, self.speaker.router_id, self.listen, self.config.bgp.port,
                 len(self.speaker.peers))
        self._progress = asyncio.get_running_loop().create_task(self._report_progress())
        self.kick()

    def _listening_socket(self) -> socket.socket:
        """Bound to listen:port with every neighbor's MD5 key and GTSM set; asyncio listens.
        TcpAuthError names the neighbor whose option the kernel refused."""
        family = socket.AF_INET6 if ipaddress.ip_address(self.listen).version == 6 else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind((self.listen, self.config.bgp.port))
            same_family = [str(nb.address) for nb in self.config.bgp.neighbors
                           if (nb.address.version == 6) == (family == socket.AF_INET6)]
            for address in same_family:
                if address in self._keys:
                    self._protect(sock, address, self._keys[address], "password")
            if self.gtsm:
                tcp_auth.set_send_ttl(sock)  # SYN-ACKs leave with 255 too
            if same_family and all(a in self.gtsm for a in same_family):
                self._protect(sock, same_family[0], None, "ttl_security")
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def _protect(self, sock: socket.socket, address: str, key: bytes | None, what: str) -> None:
        """An MD5 key for `address` (key given), or the minimum TTL (key None), naming the neighbor
        on failure (never the key)."""
        try:
            if key is not None:
                tcp_auth.set_md5(sock, address, key)
            else:
                tcp_auth.set_min_ttl(sock)
        except OSError as err:
            index = next(i for i, nb in enumerate(self.config.bgp.neighbors) if str(nb.address) == address)
            option = "TCP_MD5SIG" if key is not None else "IP_MINTTL"
            raise TcpAuthError(f"bgp.neighbors[{index}].{what}: the kernel refused {option} for {address}: "
                               f"{err.strerror or err}") from None

    def kick(self) -> None:
        """Something happened: let the speaker process it, soon and once."""
        if not self._kicked:
            self._kicked = True
            asyncio.get_running_loop().call_soon(self._service)

    def _service(self) -> None:
        self._kicked = False
        now = self.clock()
        self.speaker.poll(now)
        for address, peer in self.speaker.peers.items():
            conn_id = peer.connect_due(now)
            if conn_id is not None:
                self._connect(address, peer, conn_id)
            for cid, data, close in peer.data_to_send():
                conn = self.connections.get((address, cid))
                if conn is None or conn.transport is None:
                    continue
                if data:
                    conn.transport.write(data)
                if close:
                    conn.close_soon()
        if self.speaker.backlog():  # routes wait for room that writing just made: flush again soon
            self.kick()
        self._arm()

    async def _report_progress(self) -> None:
        """Every PROGRESS_TICK_S: each connection's unacknowledged bytes, for the send hold timer."""
        while True:
            await asyncio.sleep(PROGRESS_TICK_S)
            now = self.clock()
            for (_, conn_id), conn in list(self.connections.items()):
                if conn.peer is not None and conn.transport is not None and not conn.transport.is_closing():
                    conn.peer.send_progress(conn_id, now, unacked_bytes(conn.transport))
            self.kick()

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        deadline = self.speaker.get_timer()
        if deadline is None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, deadline - self.clock())
        self._timer = loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.speaker.handle_timer(self.clock())
        self._service()

    def _connect(self, address: str, peer: Peer, conn_id: int) -> None:
        loop = asyncio.get_running_loop()

        async def connect() -> None:
            family = socket.AF_INET6 if ipaddress.ip_address(address).version == 6 else socket.AF_INET
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                sock.bind((self.listen, 0))
                if address in self._keys:
                    self._protect(sock, address, self._keys[address], "password")
                if address in self.gtsm:
                    tcp_auth.set_gtsm(sock)
                await loop.sock_connect(sock, (address, self._ports.get(address, 179)))
                await loop.create_connection(lambda: _Connection(self, peer, conn_id), sock=sock)
            except BaseException:
                sock.close()
                raise

        async def attempt() -> None:
            try:
                await asyncio.wait_for(connect(), timeout=self.config.bgp.connect_retry)
            except (OSError, asyncio.TimeoutError) as err:
                why = "connect timed out" if isinstance(err, asyncio.TimeoutError) else err.strerror or str(err)
                peer.connection_failed(conn_id, self.clock(), why)
                self.kick()

        task = loop.create_task(attempt())
        self._connecting.add(task)
        task.add_done_callback(self._connecting.discard)

    def add_neighbor(self, nb: NeighborConfig) -> None:
        """A neighbor a reload added: its session starts like the others did."""
        self._ports[str(nb.address)] = nb.port
        self.speaker.add_neighbor(nb, self.clock())
        self.kick()

    def remove_neighbor(self, address: str) -> None:
        """A neighbor a reload removed: Cease, its routes go, its connections close."""
        peer = self.speaker.remove_neighbor(address, self.clock())
        self._ports.pop(address, None)
        if peer is None:
            return
        for cid, data, close in peer.data_to_send():
            conn = self.connections.get((address, cid))
            if conn is not None and conn.transport is not None and data:
                conn.transport.write(data)
        for (addr, _), conn in list(self.connections.items()):
            if addr == address:
                conn.close_soon()
        self.kick()

    def local_events(self, events: list) -> None:
        """Feed the Switch's events to the speaker and send what follows."""
        self.speaker.local_events(events, self.clock())
        self.kick()

    async def close(self, graceful: bool = False) -> None:
        """Cease every session, give the NOTIFICATIONs a moment to leave, close everything.
        `graceful` (a restart with node.on_stop: keep): no NOTIFICATION, the connections are
        reset, so a peer helping with graceful restart keeps our routes (RFC 4724 4.2)."""
        if not graceful:
            self.speaker.stop(self.clock())
            self._service()
            if self.connections:
                await asyncio.sleep(CLOSE_GRACE_S)
        for task in list(self._connecting):
            task.cancel()
        if self._progress is not None:
            self._progress.cancel()
        for conn in list(self.connections.values()):
            if conn.transport is not None:
                conn.transport.abort()
        if self._timer is not None:
            self._timer.cancel()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
