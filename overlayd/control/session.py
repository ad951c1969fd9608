"""The BGP finite state machine for one neighbor (RFC 4271 8), without I/O.

Theory of operation
-------------------
A `Session` is the protocol half of a BGP connection, in the style of
aioquic's QuicConnection: it never touches a socket or a clock. The I/O side
feeds it what happened (a TCP connection came up, bytes arrived, the
connection died, time passed) and takes from it what to do (bytes to write,
whether to close, when to call back, events for the speaker):

    session = Session(config, now)                # Idle, then Connect (Active if passive)
    if session.wants_connection(now): ...         # start a TCP connect to the peer
    session.connection_made(now, inbound=False)   # -> OpenSent, our OPEN is queued
    session.data_received(data, now)              # bytes from TCP, any chunking
    session.handle_timer(now)                     # at or after session.get_timer()
    write(session.data_to_send()); if session.should_close(): close()
    while (event := session.next_event()) is not None: ...

After every call the I/O side flushes `data_to_send()`, closes the
connection if `should_close()`, drains `next_event()`, re-arms its one timer
to `get_timer()`, and asks `wants_connection(now)`.

A Session handles one TCP connection at a time. Two connections to the same
neighbor (a collision, RFC 4271 6.8) are `overlayd.control.peer.Peer`'s
business: it runs one Session per connection and gives each a
`collision_check` to call when the peer's OPEN arrives.

Errors are split as in h11: the peer's mistakes (bad bytes, a message out of
place, silence) never raise; they become a NOTIFICATION to the peer, a closed
connection and a `SessionDown` event. Our own mistakes (sending an UPDATE
before Established) raise `LocalProtocolError`.

Transitions (N = NOTIFICATION sent, then close; "restart" = Idle with the
idle hold timer from the backoff, then Connect or Active again, unless the
session was made with auto_restart=False; every row that leaves a connected
state emits SessionDown)
-----------------------------------------------------------------------------
state        input                              action                       next
Idle         start(now) / idle hold expires     -                            Connect (Active if passive)
Connect      wants_connection() -> True         the I/O connects             Connect
Connect      connection_made                    send OPEN, hold = 30 s       OpenSent
Connect      connection_failed                  backoff                      Active
Active       connect retry timer (not passive)  -                            Connect
Active       connection_made(inbound=True)      send OPEN, hold = 30 s       OpenSent
OpenSent     OPEN, acceptable                   send KEEPALIVE, hold = agreed OpenConfirm
OpenSent     OPEN, unacceptable                 N 2/x (negotiation.py)       restart
OpenSent     OPEN, lost collision               N 6/7 (backoff not grown)    restart
OpenSent     connection_lost                    backoff                      Active
OpenConfirm  KEEPALIVE                          SessionEstablished           Established
Established  KEEPALIVE, UPDATE                  restart hold; UpdateReceived Established
Established  ROUTE-REFRESH                      RouteRefreshReceived         Established
any          a message not in EXPECTED[state]   N 5/(1, 2, 3) (RFC 6608)     restart
any          bytes that do not decode           N code/subcode of the error  restart
any          NOTIFICATION                       -                            restart
any          hold timer expires                 N 4/0                        restart
OpenConfirm+ send hold timer expires               N 8/0 (RFC 9687)             restart
any          connection_lost                    -                            restart
any          stop(now)                          N 6/2 when connected         Idle, stays there
any          abort(now, reason)                 close, no NOTIFICATION       restart
OpenConfirm, Established: the keepalive timer sends a KEEPALIVE every hold/3
(none when the agreed hold time is 0); sending an UPDATE restarts it.

Send hold timer (RFC 9687). A peer that stops reading (frozen, or cut off in
one direction) must not hold our writer forever. The I/O side reports now
and then how many of the bytes it took from data_to_send() the peer has not
acknowledged yet (`send_progress(now, unacked_bytes)`: its own buffer plus
the kernel's send queue). While some are unacknowledged and none has been
acknowledged for the send hold time, the session sends NOTIFICATION 8/0 (it
will likely never arrive) and closes. The send hold time is the negotiated
hold time (480 s when that is 0), not RFC 9687's suggested max(8 min, 2 x
hold time): no writer blocks past the hold time. `paused` (set by the I/O
side when its buffer is above its high-water mark) tells the speaker to
stop queueing UPDATEs (see `send_room`), which bounds what one connection
buffers.
"""

from __future__ import annotations

import enum
from collections import deque
from dataclasses import dataclass, fields
from typing import Callable

from overlayd.control.events import (
    EndOfRibReceived,
    Event,
    RouteRefreshReceived,
    SessionDown,
    SessionEstablished,
    UpdateReceived,
)
from overlayd.control.negotiation import Backoff, Negotiated, SessionConfig, local_open, negotiate
from overlayd.wire.bgp import errors as E
from overlayd.wire.bgp.errors import BgpError
from overlayd.wire.bgp.evpn import AFI_L2VPN, SAFI_EVPN
from overlayd.wire.bgp.messages import (
    KEEPALIVE,
    MESSAGE_NAMES,
    NOTIFICATION,
    OPEN,
    ROUTE_REFRESH,
    UPDATE,
    Keepalive,
    Message,
    MessageReader,
    Notification,
    Open,
    RawMessage,
    RouteRefresh,
    decode_message,
    describe_notification,
    encode_message,
    shutdown_communication,
)
from overlayd.wire.bgp.update import Update

__all__ = ["LocalProtocolError", "Session", "SessionConfig", "SessionCounters", "State", "EXPECTED"]


class State(enum.Enum):
    IDLE = "Idle"
    CONNECT = "Connect"
    ACTIVE = "Active"
    OPEN_SENT = "OpenSent"
    OPEN_CONFIRM = "OpenConfirm"
    ESTABLISHED = "Established"


CONNECTED = (State.OPEN_SENT, State.OPEN_CONFIRM, State.ESTABLISHED)

# The messages each connected state accepts; anything else is an FSM error (RFC 6608).
EXPECTED: dict[State, frozenset[int]] = {
    State.OPEN_SENT: frozenset({OPEN, NOTIFICATION}),
    State.OPEN_CONFIRM: frozenset({KEEPALIVE, NOTIFICATION}),
    State.ESTABLISHED: frozenset({UPDATE, KEEPALIVE, ROUTE_REFRESH, NOTIFICATION}),
}
FSM_SUBCODE = {
    State.OPEN_SENT: E.FSM_UNEXPECTED_IN_OPENSENT,
    State.OPEN_CONFIRM: E.FSM_UNEXPECTED_IN_OPENCONFIRM,
    State.ESTABLISHED: E.FSM_UNEXPECTED_IN_ESTABLISHED,
}

SEND_QUEUE_BYTES = 128 * 1024
"""What `send_room` lets the speaker queue in one go, before the I/O side takes it."""
SEND_HOLD_WITHOUT_HOLD_TIME_S = 480.0  # RFC 9687's 8 minutes, when the hold time is 0

_COUNTER_NAMES = {OPEN: "open", UPDATE: "update", NOTIFICATION: "notification", KEEPALIVE: "keepalive",
                  ROUTE_REFRESH: "route_refresh"}


class LocalProtocolError(Exception):
    """The caller asked for something the session cannot do in its state: a bug on our side."""


@dataclass(slots=True)
class SessionCounters:
    """What happened on a session, by message type and direction."""

    rx_open: int = 0
    rx_update: int = 0
    rx_notification: int = 0
    rx_keepalive: int = 0
    rx_route_refresh: int = 0
    rx_route_refresh_ignored: int = 0  # for a family or subtype we did not negotiate
    tx_open: int = 0
    tx_update: int = 0
    tx_notification: int = 0
    tx_keepalive: int = 0
    tx_route_refresh: int = 0
    connect_attempts: int = 0
    connect_failures: int = 0
    established_transitions: int = 0

    def count(self, direction: str, msg_type: int) -> None:
        name = f"{direction}_{_COUNTER_NAMES[msg_type]}"
        setattr(self, name, getattr(self, name) + 1)

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


CollisionCheck = Callable[["Session", Open, float], bool]
"""Called with (session, the peer's OPEN, now) when an acceptable OPEN arrives, before
we answer it; False means this connection lost a collision and must close (Cease/7)."""


class Session:
    """RFC 4271 8 for one neighbor, one TCP connection at a time; see the module docstring.

    Public state, for status and tests: `state`, `inbound` (direction of the
    current or last connection), `connected_since` (when its TCP connection came
    up), `established_since`, `last_error`,
    `counters`, `negotiated` (while past OpenSent), `remote_open`.
    """

    def __init__(
        self,
        config: SessionConfig,
        now: float,
        *,
        start: bool = True,
        auto_restart: bool = True,
        backoff: Backoff | None = None,
        counters: SessionCounters | None = None,
        collision_check: CollisionCheck | None = None,
    ) -> None:
        """`start`: ManualStart at once. `auto_restart`: after a failure, start again once
        the backoff delay has passed (AutomaticStart). `backoff` and `counters` may be shared
        by several sessions of one neighbor (see Peer)."""
        self.config = config
        self.state = State.IDLE
        self.inbound: bool | None = None
        self.connected_since: float | None = None
        self.established_since: float | None = None
        self.last_error = ""
        self.counters = counters if counters is not None else SessionCounters()
        self.negotiated: Negotiated | None = None
        self.remote_open: Open | None = None
        self.backoff = backoff if backoff is not None else Backoff.for_config(config)
        self.auto_restart = auto_restart
        self.restarting = False  # the R bit of the OPENs it sends (RFC 4724 3), set by the Peer
        self._collision_check = collision_check
        self._started = False
        self._attempt = False  # an outbound TCP connect is under way
        self._reader = MessageReader()
        self._out = bytearray()
        self._close = False
        self._events: deque[Event] = deque()
        self._idle_until: float | None = None  # IdleHoldTimer (Idle)
        self._retry_at: float | None = None  # ConnectRetryTimer (Active)
        self._hold_at: float | None = None  # HoldTimer (OpenSent and later)
        self._keepalive_at: float | None = None  # KeepaliveTimer (OpenConfirm, Established)
        self._send_hold_at: float | None = None  # SendHoldTimer (RFC 9687): unacknowledged bytes, no progress
        self._handed_out = 0  # bytes data_to_send() gave the I/O side on this connection
        self._acked = 0  # of those, how many the peer acknowledged, as last reported
        self.paused = False  # the I/O side's buffer is full: queue no UPDATEs (see send_room)
        if start:
            self.start(now)

    # -- properties ----------------------------------------------------------------

    @property
    def peer(self) -> str:
        return self.config.peer_address

    @property
    def started(self) -> bool:
        """Started and not stopped: the session connects (or listens) and restarts by itself."""
        return self._started

    @property
    def connected(self) -> bool:
        """A TCP connection is up (OpenSent, OpenConfirm or Established)."""
        return self.state in CONNECTED

    # -- driving from the I/O side -----------------------------------------------------

    def start(self, now: float, delay_s: float = 0.0) -> None:
        """ManualStart: leave Idle for Connect (Active if passive), now or after `delay_s`."""
        if self.state is not State.IDLE:
            return
        self._started = True
        if delay_s > 0:
            self._idle_until = now + delay_s
        else:
            self._begin()

    def abort(self, now: float, reason: str) -> None:
        """Drop the connection without a NOTIFICATION (the peer already left it); restarts
        like any failure but without growing the backoff."""
        if self.connected:
            self._fail(now, reason, failure=False)

    def stop(self, now: float, reason: str = "administrative shutdown", subcode: int = E.CEASE_ADMIN_SHUTDOWN) -> None:
        """ManualStop: Cease/`subcode` to a connected peer (with `reason` as the RFC 9003
        shutdown communication for subcodes 2 and 4), close, and stay in Idle."""
        self._started = False
        self._attempt = False
        self._idle_until = self._retry_at = None
        if self.connected:
            data = shutdown_communication(reason) if subcode in (E.CEASE_ADMIN_SHUTDOWN, E.CEASE_ADMIN_RESET) else b""
            self._fail(now, f"stopped: {reason}", sent=Notification(E.CEASE, subcode, data), failure=False)
        else:
            self.state = State.IDLE

    def wants_connection(self, now: float) -> bool:
        """True once per attempt, when the I/O side must start a TCP connect to the peer
        and then report `connection_made` or `connection_failed` (use a connect timeout)."""
        if self.state is State.CONNECT and not self._attempt:
            self._attempt = True
            self.counters.connect_attempts += 1
            return True
        return False

    def connection_made(self, now: float, inbound: bool = False) -> bool:
        """A TCP connection is up: ours (`inbound=False`, after wants_connection) or the peer's.

        Returns False when the session refuses it (Idle, already connected, or an
        outbound connection nobody asked for): the I/O side must close that socket.
        An inbound connection in Connect wins over our own attempt still under way.
        """
        if self.connected:
            return False
        if not (self.state is State.CONNECT and (inbound or self._attempt) or self.state is State.ACTIVE and inbound):
            return False
        self._attempt = False
        self._retry_at = None
        self.inbound = inbound
        self.connected_since = now
        self._reader = MessageReader()
        self._out.clear()
        self._handed_out = self._acked = 0
        self._send_hold_at = None
        self.paused = False
        self._close = False
        self.state = State.OPEN_SENT
        self._send(local_open(self.config, self.restarting))
        self._hold_at = now + self.config.open_hold_time_s
        return True

    def connection_failed(self, now: float, reason: str = "") -> None:
        """Our TCP connect attempt failed or timed out: wait (backoff) in Active."""
        if self.state is not State.CONNECT or not self._attempt:
            return
        self._attempt = False
        self.counters.connect_failures += 1
        self.last_error = f"connect failed: {reason}" if reason else "connect failed"
        self.state = State.ACTIVE
        self._retry_at = now + self.backoff.failed()

    def connection_lost(self, now: float, reason: str = "") -> None:
        """The TCP connection closed or broke under us (not because should_close said so)."""
        if not self.connected:
            return
        what = f"connection lost: {reason}" if reason else "connection closed by the peer"
        self._fail(now, what, back_to_active=self.state is State.OPEN_SENT)

    def data_received(self, data: bytes | memoryview, now: float) -> None:
        """Bytes from the TCP connection, in any chunking."""
        if not self.connected:
            return
        self._reader.feed(data)
        while self.connected:
            try:
                raw = next(self._reader, None)
            except BgpError as err:
                self._notify(now, err)
                return
            if raw is None:
                return
            self._handle(raw, now)

    def data_to_send(self) -> bytes:
        """Bytes to write to the TCP connection, oldest first (b"" when there are none)."""
        data = bytes(self._out)
        self._out.clear()
        self._handed_out += len(data)
        return data

    def send_progress(self, now: float, unacked_bytes: int) -> None:
        """How many of the bytes taken from data_to_send() the peer has not acknowledged yet
        (the I/O side's buffer and the kernel's send queue): drives the send hold timer."""
        if self.state not in (State.OPEN_CONFIRM, State.ESTABLISHED):
            return
        acked = self._handed_out - unacked_bytes
        if unacked_bytes <= 0 or acked > self._acked:
            self._send_hold_at = None  # progress
        self._acked = max(self._acked, acked)
        if unacked_bytes > 0 and self._send_hold_at is None:
            hold = self.negotiated.hold_time_s if self.negotiated else 0
            self._send_hold_at = now + (hold or SEND_HOLD_WITHOUT_HOLD_TIME_S)

    @property
    def send_room(self) -> int:
        """Bytes of UPDATEs the speaker may still queue now (0 while the I/O side is paused)."""
        return 0 if self.paused else max(0, SEND_QUEUE_BYTES - len(self._out))

    def should_close(self) -> bool:
        """True once when the I/O side must close the connection (after writing data_to_send())."""
        close, self._close = self._close, False
        return close

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        """The absolute time handle_timer wants to be called at, or None."""
        deadlines = [t for t in (self._idle_until, self._retry_at, self._hold_at, self._keepalive_at,
                                 self._send_hold_at) if t is not None]
        return min(deadlines) if deadlines else None

    def handle_timer(self, now: float) -> None:
        """Fire every deadline at or before `now`."""
        if self._idle_until is not None and now >= self._idle_until:
            self._begin()
        if self._retry_at is not None and now >= self._retry_at:
            self._retry_at = None
            if self.state is State.ACTIVE and not self.config.passive:
                self.state = State.CONNECT
        if self._hold_at is not None and now >= self._hold_at:
            err = BgpError(E.HOLD_TIMER_EXPIRED, 0, f"nothing heard for {self._hold_period()} s")
            self._notify(now, err, reason=f"hold timer expired: {err}")
            return
        if self._send_hold_at is not None and now >= self._send_hold_at:
            err = BgpError(E.SEND_HOLD_TIMER_EXPIRED, 0, "the peer acknowledged nothing we sent for the send hold time")
            self._notify(now, err, reason=f"send hold timer expired: {err}")
            return
        if self._keepalive_at is not None and now >= self._keepalive_at:
            self._send(Keepalive())
            self._restart_keepalive(now)

    # -- what the speaker asks -----------------------------------------------------------

    def send_update(self, update: Update, now: float) -> None:
        """Queue an UPDATE (End-of-RIB is `Update(end_of_rib=True)`); Established only."""
        if self.state is not State.ESTABLISHED:
            raise LocalProtocolError(f"cannot send an UPDATE in {self.state.value}")
        self._send(update)
        self._restart_keepalive(now)  # RFC 4271 8.2.2: sending an UPDATE restarts it

    def send_route_refresh(self, now: float, afi: int = AFI_L2VPN, safi: int = SAFI_EVPN) -> None:
        """Ask the peer for all its routes of (afi, safi) again (RFC 2918)."""
        if self.state is not State.ESTABLISHED:
            raise LocalProtocolError(f"cannot send a ROUTE-REFRESH in {self.state.value}")
        assert self.negotiated is not None
        if not self.negotiated.route_refresh:
            raise LocalProtocolError("the peer did not advertise route refresh")
        if (afi, safi) not in self.negotiated.families:
            raise LocalProtocolError(f"AFI {afi} SAFI {safi} was not negotiated")
        self._send(RouteRefresh(afi, safi))

    # -- inside --------------------------------------------------------------------

    def _begin(self) -> None:
        """AutomaticStart/ManualStart out of Idle."""
        self._idle_until = None
        self._attempt = False
        self.state = State.ACTIVE if self.config.passive else State.CONNECT

    def _send(self, msg: Message) -> None:
        four = self.negotiated.four_octet_as if self.negotiated else self.config.four_octet_as
        self._out += encode_message(msg, four)
        self.counters.count("tx", _type_of(msg))

    def _hold_period(self) -> float:
        if self.state is State.OPEN_SENT or self.negotiated is None:
            return self.config.open_hold_time_s
        return self.negotiated.hold_time_s

    def _restart_hold(self, now: float) -> None:
        hold = self.negotiated.hold_time_s if self.negotiated else 0
        self._hold_at = now + hold if hold else None

    def _restart_keepalive(self, now: float) -> None:
        keepalive = self.negotiated.keepalive_s if self.negotiated else None
        self._keepalive_at = now + keepalive if keepalive else None

    def _handle(self, raw: RawMessage, now: float) -> None:
        self.counters.count("rx", raw.type)
        if raw.type not in EXPECTED[self.state]:
            name = MESSAGE_NAMES[raw.type]
            self._notify(now, BgpError(E.FSM_ERROR, FSM_SUBCODE[self.state], f"{name} in {self.state.value}"))
            return
        four = self.negotiated.four_octet_as if self.negotiated else self.config.four_octet_as
        families = self.negotiated.families if self.negotiated else self.config.families
        try:
            msg = decode_message(raw.type, raw.body, four, families)
            if isinstance(msg, Notification):
                text = describe_notification(msg.code, msg.subcode, msg.data)
                self._fail(now, f"peer sent NOTIFICATION {text}", received=msg)
            elif isinstance(msg, Open):
                self._on_open(msg, now)
            elif isinstance(msg, Keepalive):
                self._on_keepalive(now)
            elif isinstance(msg, RouteRefresh):
                self._on_route_refresh(msg)
            else:
                self._on_update(msg, now)
        except BgpError as err:
            self._notify(now, err)

    def _on_open(self, msg: Open, now: float) -> None:
        negotiated = negotiate(self.config, msg)
        self.remote_open = msg
        self.negotiated = negotiated
        if self._collision_check is not None and not self._collision_check(self, msg, now):
            err = BgpError(E.CEASE, E.CEASE_CONNECTION_COLLISION, "the other connection to this peer survives")
            self._notify(now, err, reason="connection collision: closed this connection, the other survives",
                         failure=False)
            return
        self.state = State.OPEN_CONFIRM
        self._send(Keepalive())
        self._restart_hold(now)
        self._restart_keepalive(now)

    def _on_keepalive(self, now: float) -> None:
        self._restart_hold(now)
        if self.state is State.OPEN_CONFIRM:
            assert self.negotiated is not None and self.remote_open is not None
            self.state = State.ESTABLISHED
            self.established_since = now
            self.counters.established_transitions += 1
            self.backoff.reset()
            n = self.negotiated
            self._events.append(
                SessionEstablished(
                    self.peer, n.remote_asn, n.remote_router_id, n.hold_time_s, n.four_octet_as, n.capabilities
                )
            )

    def _on_update(self, update: Update, now: float) -> None:
        self._restart_hold(now)
        if update.end_of_rib:
            self._events.append(EndOfRibReceived(self.peer, *update.end_of_rib_family))
        else:
            self._events.append(UpdateReceived(self.peer, update))

    def _on_route_refresh(self, msg: RouteRefresh) -> None:
        assert self.negotiated is not None
        if msg.subtype != 0 or (msg.afi, msg.safi) not in self.negotiated.families:
            self.counters.rx_route_refresh_ignored += 1  # RFC 2918 4, RFC 7313 5
            return
        self._events.append(RouteRefreshReceived(self.peer, msg.afi, msg.safi))

    def _notify(self, now: float, err: BgpError, reason: str | None = None, failure: bool = True) -> None:
        """Send NOTIFICATION(err) and close."""
        if reason is None:
            reason = f"sent NOTIFICATION {describe_notification(err.code, err.subcode)}: {err}"
        self._fail(now, reason, sent=Notification(err.code, err.subcode, err.data), failure=failure)

    def _fail(
        self,
        now: float,
        reason: str,
        *,
        sent: Notification | None = None,
        received: Notification | None = None,
        failure: bool = True,
        back_to_active: bool = False,
    ) -> None:
        """Leave a connected state: NOTIFICATION `sent` (if any), close, SessionDown.

        `failure` feeds the backoff; a started session then restarts by itself,
        via Active (`back_to_active`, RFC 4271 8.2.2 OpenSent) or Idle.
        """
        was_established = self.state is State.ESTABLISHED
        if sent is not None:
            self._send(sent)
        self._close = True
        self._hold_at = self._keepalive_at = self._send_hold_at = None
        self.established_since = None
        self.negotiated = None
        self.last_error = reason
        self._events.append(
            SessionDown(
                self.peer,
                reason,
                (sent.code, sent.subcode) if sent else None,
                (received.code, received.subcode) if received else None,
                was_established,
            )
        )
        self.state = State.IDLE
        delay = self.backoff.failed() if failure else 0.0
        if not (self._started and self.auto_restart):
            return
        if back_to_active:
            self.state = State.ACTIVE
            self._retry_at = None if self.config.passive else now + delay
        else:
            self._idle_until = now + delay


def _type_of(msg: Message) -> int:
    if isinstance(msg, Open):
        return OPEN
    if isinstance(msg, Update):
        return UPDATE
    if isinstance(msg, Keepalive):
        return KEEPALIVE
    if isinstance(msg, Notification):
        return NOTIFICATION
    return ROUTE_REFRESH
