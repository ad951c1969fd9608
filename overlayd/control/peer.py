"""One BGP neighbor as one logical session over several TCP connections (RFC 4271 6.8).

Theory of operation
-------------------
Both speakers may connect to each other at the same moment, so a neighbor
can have two TCP connections at once: the one we opened (outbound) and the
one the peer opened (inbound). BGP keeps exactly one. A `Peer` runs one
`Session` per connection and decides which survives, without I/O, in the
same aioquic style as Session. The I/O side refers to connections by a
`conn_id` the Peer hands out:

    peer = Peer(config, now)
    conn_id = peer.connect_due(now)           # not None: open a TCP connection for it,
    peer.connection_made(conn_id, now)        #   then report how it went
    peer.connection_failed(conn_id, now, why)
    conn_id = peer.accept(now)                # the peer connected to us; None: close it
    peer.data_received(conn_id, data, now)
    peer.connection_lost(conn_id, now, why)
    peer.handle_timer(now)                    # at or after peer.get_timer()
    for conn_id, data, close in peer.data_to_send(): write, then close if asked
    while (event := peer.next_event()) is not None: ...   # one logical session's events
    peer.send_update(update, now)             # on the Established connection

Calls naming a conn_id the Peer has already closed are ignored, so late
callbacks from the event loop are harmless.

The connections: the outbound Session lives as long as the Peer (it holds
the connect retry backoff; none if the neighbor is passive). Each accepted
connection gets a fresh passive Session that ends with its connection. A
newer inbound connection replaces an older one still in the OPEN exchange
(the peer gave up on that one). The backoff and the counters are shared.

Collision resolution runs when an acceptable OPEN arrives on connection X,
before we answer it, against every other connection Y past TCP setup:

    Y Established, X is a restart of the peer (below)
                          -> Y is dead: dropped without NOTIFICATION (SessionDown,
                             was_established, no NOTIFICATION either way), X goes on
                             (RFC 4724 4.2: a new OPEN from a peer whose session is
                             Established means the peer restarted)
    Y Established, X is a crossing connect
                          -> X gets Cease/7 (RFC 4271 6.8: the new connection closes)

X is a restart of the peer, not the loser of a crossing connect, when its OPEN
has the R bit (the peer says it restarted); or X and Y both came from the
peer (a peer opens a second connection only after losing its first); or X
is the connection the collision rule would have kept (the peer, resolving
the same collision, would never have let Y reach Established); or X came up
CROSSING_WINDOW_S or more after Y reached Established. The one case left, X
the collision loser and up before (or just after) Y was Established, is the
crossing connect whose OPEN left the peer before it resolved the collision
and closed X: tearing Y down for it would flap every crossing. A restarted
peer that lands in that case is let in on its next connect.
    Y OpenSent/OpenConfirm -> the connection opened by the speaker with the higher BGP
                             identifier survives (equal identifiers, RFC 6286 2.3: the
                             higher AS); the other gets Cease/7. Y is examined in OpenSent
                             too: X's OPEN tells us the peer's identifier, as FRR does.

A connection closed by collision resolution emits no SessionDown: the
logical session did not go down. When an inbound connection wins, the
outbound Session stops (a connect under way is abandoned and closed when it
completes) and starts again, after the backoff delay, once no inbound
connection is left.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from dataclasses import replace

from overlayd.control.events import Event, SessionDown
from overlayd.control.negotiation import Backoff, Negotiated, SessionConfig
from overlayd.control.session import LocalProtocolError, Session, SessionCounters, State
from overlayd.wire.bgp import errors as E
from overlayd.wire.bgp.evpn import AFI_L2VPN, SAFI_EVPN
from overlayd.wire.bgp.messages import GracefulRestart, Open
from overlayd.wire.bgp.update import Update

CROSSING_WINDOW_S = 1.0
"""A peer's connection that came up this soon after another reached Established may be the
loser of a crossing connect (its OPEN was sent before the peer resolved the collision)."""

_RANK = {
    State.IDLE: 0,
    State.CONNECT: 1,
    State.ACTIVE: 1,
    State.OPEN_SENT: 2,
    State.OPEN_CONFIRM: 3,
    State.ESTABLISHED: 4,
}


def keeps_outbound(
    local_id: ipaddress.IPv4Address, remote_id: ipaddress.IPv4Address, local_asn: int, remote_asn: int
) -> bool:
    """RFC 4271 6.8 / RFC 6286 2.3: does the connection we opened survive a collision?"""
    if local_id != remote_id:
        return int(local_id) > int(remote_id)
    return local_asn > remote_asn


def _says_restarted(msg: Open) -> bool:
    """RFC 4724 3: the Restart State bit, the peer saying it has just restarted."""
    return any(isinstance(c, GracefulRestart) and c.restarting for c in msg.capabilities)


class Peer:
    """One neighbor's logical BGP session; see the module docstring.

    For status: `state` (the most advanced of its connections), `established_since`,
    `last_error`, `counters` (all connections together), `negotiated`.
    """

    def __init__(self, config: SessionConfig, now: float, *, start: bool = True) -> None:
        self.config = config
        self.backoff = Backoff.for_config(config)
        self.counters = SessionCounters()
        self.last_error = ""
        self.restarting = False  # RFC 4724: the R bit in the OPENs we send (the speaker sets it)
        self._stopped = not start
        self._next_id = 1
        self._conns: dict[int, Session] = {}  # conn_id -> session, for connections and connects under way
        self._outbound: Session | None = None
        self._outbound_id: int | None = None
        if not config.passive:
            self._outbound = self._session(replace(config, passive=False), now, start=start, auto_restart=True)
        self._abandoned: set[int] = set()  # outbound connects we no longer want: close them if they succeed
        self._quiet: set[Session] = set()  # sessions that lost a collision on their own OPEN: drop their SessionDown
        self._output: dict[int, list] = {}  # conn_id -> [bytearray, close]
        self._events: deque[Event] = deque()

    def preserve_forwarding(self) -> None:
        """Our OPENs from now on set the graceful restart F bit (see Speaker.preserve_forwarding)."""
        self.config = replace(self.config, forwarding_preserved=True)
        for session in self._sessions():
            session.config = replace(session.config, forwarding_preserved=True)

    # -- status --------------------------------------------------------------------

    def _sessions(self) -> list[Session]:
        sessions = list(dict.fromkeys(self._conns.values()))
        if self._outbound is not None and self._outbound not in sessions:
            sessions.append(self._outbound)
        return sessions

    @property
    def state(self) -> State:
        sessions = self._sessions()
        if not sessions:
            return State.IDLE if self._stopped else State.ACTIVE
        return max((s.state for s in sessions), key=_RANK.__getitem__)

    @property
    def established(self) -> Session | None:
        """The connection in Established, if any."""
        return next((s for s in self._conns.values() if s.state is State.ESTABLISHED), None)

    @property
    def established_since(self) -> float | None:
        s = self.established
        return s.established_since if s else None

    @property
    def negotiated(self) -> Negotiated | None:
        s = self.established
        return s.negotiated if s else None

    @property
    def peer(self) -> str:
        return self.config.peer_address

    @property
    def pending(self) -> int:
        """Its TCP connections still in the OPEN exchange (connected, not Established)."""
        return sum(1 for s in set(self._conns.values()) if s.connected and s.state is not State.ESTABLISHED)

    # -- driving from the I/O side -----------------------------------------------------

    def connect_due(self, now: float) -> int | None:
        """A conn_id when the I/O side must open a TCP connection to the peer now."""
        if self._outbound is None or self._stopped or not self._outbound.wants_connection(now):
            return None
        conn_id = self._new_id()
        self._outbound_id = conn_id
        self._conns[conn_id] = self._outbound
        return conn_id

    def connection_made(self, conn_id: int, now: float) -> None:
        """The outbound connect for `conn_id` succeeded."""
        session = self._conns.get(conn_id)
        if session is not None:
            session.restarting = self.restarting
        if conn_id in self._abandoned or session is None:
            self._abandoned.discard(conn_id)
            self._queue(conn_id, b"", True)
        elif not session.connection_made(now, inbound=False):
            self._forget(conn_id)
            self._queue(conn_id, b"", True)
        self._after(now)

    def connection_failed(self, conn_id: int, now: float, reason: str = "") -> None:
        """The outbound connect for `conn_id` failed or timed out."""
        self._abandoned.discard(conn_id)
        session = self._conns.get(conn_id)
        if session is not None:
            self._forget(conn_id)
            session.connection_failed(now, reason)
            self.last_error = session.last_error
        self._after(now)

    def accept(self, now: float) -> int | None:
        """The peer opened a TCP connection to us: its conn_id, or None to refuse (close it)."""
        if self._stopped:
            return None
        for conn_id, old in list(self._conns.items()):
            if old is not self._outbound and old.state in (State.OPEN_SENT, State.OPEN_CONFIRM):
                self._close_loser(old, now, "replaced by a newer connection from the peer")
        session = self._session(replace(self.config, passive=True), now, start=True, auto_restart=False)
        session.connection_made(now, inbound=True)
        conn_id = self._new_id()
        self._conns[conn_id] = session
        self._after(now)
        return conn_id

    def data_received(self, conn_id: int, data: bytes | memoryview, now: float) -> None:
        session = self._conns.get(conn_id)
        if session is not None:
            session.data_received(data, now)
            self._after(now)

    def connection_lost(self, conn_id: int, now: float, reason: str = "") -> None:
        """The TCP connection `conn_id` closed or broke (not because we closed it)."""
        session = self._conns.get(conn_id)
        if session is None:
            return
        self._forget(conn_id)
        session.connection_lost(now, reason)
        self._drain(session, quiet=False)
        session.data_to_send()  # nowhere to send it any more
        session.should_close()
        self._output.pop(conn_id, None)
        self._after(now)

    def send_progress(self, conn_id: int, now: float, unacked_bytes: int) -> None:
        """The I/O side's report for the send hold timer (Session.send_progress)."""
        session = self._conns.get(conn_id)
        if session is not None:
            session.send_progress(now, unacked_bytes)
            self._after(now)

    def set_paused(self, conn_id: int, paused: bool) -> None:
        """The I/O side's buffer for `conn_id` went above (True) or back below its high-water mark."""
        session = self._conns.get(conn_id)
        if session is not None:
            session.paused = paused

    @property
    def send_room(self) -> int:
        """Bytes of UPDATEs the Established connection can take now (0: none, or paused)."""
        s = self.established
        return s.send_room if s is not None else 0

    def data_to_send(self) -> list[tuple[int, bytes, bool]]:
        """(conn_id, bytes to write, close after writing) for each connection with something to do."""
        out = [(conn_id, bytes(data), close) for conn_id, (data, close) in self._output.items()]
        self._output.clear()
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        timers = [t for s in self._sessions() if (t := s.get_timer()) is not None]
        return min(timers) if timers else None

    def handle_timer(self, now: float) -> None:
        for session in self._sessions():
            timer = session.get_timer()
            if timer is not None and now >= timer:
                session.handle_timer(now)
        self._after(now)

    # -- what the speaker asks -----------------------------------------------------------

    def send_update(self, update: Update, now: float) -> None:
        self._require_established().send_update(update, now)
        self._after(now)

    def send_route_refresh(self, now: float, afi: int = AFI_L2VPN, safi: int = SAFI_EVPN) -> None:
        self._require_established().send_route_refresh(now, afi, safi)
        self._after(now)

    def stop(self, now: float, reason: str = "administrative shutdown", subcode: int = E.CEASE_ADMIN_SHUTDOWN) -> None:
        """Cease/`subcode` on every connection, and no new ones until start()."""
        self._stopped = True
        self._abandon_outbound_connect()
        for session in self._sessions():
            session.stop(now, reason, subcode)
        self._after(now)

    def start(self, now: float) -> None:
        self._stopped = False
        if self._outbound is not None:
            self._outbound.start(now)
        self._after(now)

    # -- inside --------------------------------------------------------------------

    def _session(self, config: SessionConfig, now: float, *, start: bool, auto_restart: bool) -> Session:
        session = Session(
            config, now, start=start, auto_restart=auto_restart, backoff=self.backoff,
            counters=self.counters, collision_check=self._collision_check,
        )
        session.restarting = self.restarting
        return session

    def _new_id(self) -> int:
        conn_id = self._next_id
        self._next_id += 1
        return conn_id

    def _require_established(self) -> Session:
        session = self.established
        if session is None:
            raise LocalProtocolError(f"no Established session with {self.peer} ({self.state.value})")
        return session

    def _forget(self, conn_id: int) -> None:
        self._conns.pop(conn_id, None)
        if conn_id == self._outbound_id:
            self._outbound_id = None

    def _queue(self, conn_id: int, data: bytes, close: bool) -> None:
        entry = self._output.setdefault(conn_id, [bytearray(), False])
        entry[0] += data
        entry[1] = entry[1] or close

    def _abandon_outbound_connect(self) -> None:
        """Forget a connect under way; close its connection if it succeeds after all."""
        if self._outbound_id is not None and self._outbound is not None and self._outbound.state is State.CONNECT:
            self._abandoned.add(self._outbound_id)
            self._forget(self._outbound_id)

    def _drain(self, session: Session, quiet: bool) -> None:
        """Move a session's events to ours; `quiet` drops its SessionDown."""
        while (event := session.next_event()) is not None:
            if isinstance(event, SessionDown):
                if quiet:
                    continue
                self.last_error = event.reason
            self._events.append(event)

    def _close_loser(self, session: Session, now: float, reason: str) -> None:
        """Close a connection collision resolution did not keep, without a SessionDown."""
        self._drain(session, quiet=False)
        if session is self._outbound:
            self._abandon_outbound_connect()
        session.stop(now, reason, E.CEASE_CONNECTION_COLLISION)
        self._drain(session, quiet=True)

    def _collision_check(self, session: Session, msg: Open, now: float) -> bool:
        """Session's hook, called with an acceptable OPEN: False if `session` must close."""
        for other in self._sessions():
            if other is session or not other.connected:
                continue
            if other.state is State.ESTABLISHED:
                why = self._restart_evidence(session, other, msg)
                if why is None:
                    self._quiet.add(session)
                    return False
                other.abort(now, f"the peer restarted ({why}): dropped the old connection")
                self._drain(other, quiet=False)
                if other is self._outbound:  # it starts again once no inbound connection is left
                    self._abandon_outbound_connect()
                    other.stop(now)
                continue
            if session.inbound == other.inbound:  # two of the peer's connections: the newer wins
                self._close_loser(other, now, "connection collision")
                continue
            outbound_wins = keeps_outbound(self.config.router_id, msg.router_id, self.config.local_asn, msg.asn)
            if outbound_wins == (session is self._outbound):
                self._close_loser(other, now, "connection collision")
            else:
                self._quiet.add(session)
                return False
        if session is not self._outbound and self._outbound is not None and not self._outbound.connected:
            self._close_loser(self._outbound, now, "an inbound connection reached OpenConfirm")
        return True

    def _restart_evidence(self, new: Session, old: Session, msg: Open) -> str | None:
        """Why the OPEN on `new`, while `old` is Established, means the peer restarted; None
        when `new` may be the losing end of a crossing connect (see the module docstring)."""
        if _says_restarted(msg):
            return "R bit in its new OPEN"
        if new.inbound and old.inbound:
            return "a new connection from it while one was Established"
        outbound_wins = keeps_outbound(self.config.router_id, msg.router_id, self.config.local_asn, msg.asn)
        if outbound_wins == (new is self._outbound):
            return "a new OPEN on the connection a collision would keep"
        assert new.connected_since is not None and old.established_since is not None
        if new.connected_since >= old.established_since + CROSSING_WINDOW_S:
            return "a new OPEN on a connection made after the session was Established"
        return None

    def _after(self, now: float) -> None:
        """After every input: collect output and events, forget closed connections,
        restart the outbound session when nothing else is left."""
        sessions = self._sessions()
        for conn_id, session in list(self._conns.items()):
            attempt = session is self._outbound and session.state is State.CONNECT
            if attempt:
                continue
            data = session.data_to_send()
            close = session.should_close()
            if data or close:
                self._queue(conn_id, data, close)
            if close or not session.connected:
                self._forget(conn_id)
        for session in sessions:
            self._drain(session, quiet=session in self._quiet)
        for session in self._quiet:
            if session is self._outbound and session.started:
                self._abandon_outbound_connect()
                session.stop(now, "connection collision", E.CEASE_CONNECTION_COLLISION)
        self._quiet.clear()
        out = self._outbound
        if out is not None and not self._stopped and not out.started:
            if not any(s.connected for s in self._conns.values() if s is not out):
                out.start(now, self.backoff.delay_s)
