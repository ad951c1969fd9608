"""Connection tracking for the userspace service path: each flow pinned to its backend.

A flow is one client's conversation with a service: protocol (6 TCP,
17 UDP), the client's (address, port) as it sent them, the service's
(VIP, port) it addressed, the backend Maglev chose, and, for some flows, a
source rewrite (`snat`). The client's node keeps the entry; the data path
rewrites every packet of the flow with it:

    original direction  client -> VIP          becomes  client (or snat) -> backend
    reply direction     backend -> client (or snat)  becomes  VIP -> client

Two dicts find a flow in one probe each, keyed by the tuple the data path
builds from a packet's header, (proto, src address, src port, dst address,
dst port), addresses as their packed octets (`bytes`, not memoryview):
`lookup` by the original direction, `lookup_reply` by the reply direction.

Source rewrite. A backend on the client's own node (hairpin), or the
client itself, would answer the client without passing through overlayd;
DECISIONS "Services": the source becomes an address of the node's that
routes back through overlayd, with a port from `snat_port`, so that the
reply comes back to be reversed. The caller passes that as `snat`. And two
flows may not share a reply key: the same client address and port to two
VIPs with a common backend (one UDP socket asking two DNS services) would;
`create` then rewrites the second one's source port on the client's own
address (as the kernel's NAT does), with a port from `snat_port`.

States. NEW until the first reply; ESTABLISHED once a reply is seen (TCP:
the SYN-ACK; UDP: any answer); for TCP, CLOSING after a FIN either way,
and CLOSED after a RST either way, or once both sides sent a FIN and the
last FIN was acknowledged (an ACK from the other side). A TCP flow is NEW
from its first packet whether or not that is a SYN: a flow picked up in
mid-stream (after a restart) goes to the backend Maglev picks again, which
knows it, and the backend's reply establishes it. A bare SYN from the
client on a CLOSED flow reopens it (the client reuses its port): NEW again.

Timeouts (`Timeouts`, after the kernel's nf_conntrack, shorter where a
userspace table capped at 65,536 entries must be): every packet pushes a
flow's expiry to now + the timeout of its state:

    TCP  NEW 30 s (SYN retransmissions refresh it)   ESTABLISHED 1 h
         CLOSING 2 min (the kernel's fin_wait)        CLOSED: lingers 10 s from
                                                      the end, not refreshed
    UDP  NEW 30 s                                     ESTABLISHED (replied) 2 min

The linger lets the last ACK and late retransmissions still find the flow.

Expiry without a scan. A heap holds one live entry per flow: (deadline,
serial, ticket). A packet that lengthens a flow's life only moves its
`expires`; when the entry comes up, `expire` sees the later `expires` and
pushes the entry again. A change that shortens it (a FIN, a RST) pushes a
new entry and makes the old one stale (its ticket no longer matches); so
do removals. Stale entries are skipped when they come up, and the heap is
rebuilt when they outnumber the live ones (bounded at 2 x flows + 1024).
`expire(now)` returns the flows that left, in the order of their
deadlines, as `FlowExpired` (idle) or `FlowClosed` (linger over).

The cap (`max_flows`, 65,536). When the table is full, a new flow first
evicts a flow that cannot need its entry much: the oldest CLOSED one, else
the oldest that never saw a reply (DECISIONS: so a flood of half-open
flows cannot lock out new clients; the kernel's early_drop); the created
fact names it. With neither, the new flow is refused: `create` returns
None and counts `refused_full`; existing flows are kept.

`flows_of_backend` serves the backend-failed path (its TCP clients get a
RST with `server_next_seq`, the next sequence number the client expects
from the service, so that it accepts it: RFC 5961 3.2; UDP flows are
dropped). `flows(service=, client=, backend=)` serves `overlayctl
conntrack`. Every mutation returns what changed (`FlowCreated`,
`FlowStateChanged`, `FlowExpired`, `FlowClosed`, `FlowRemoved`).
"""

from __future__ import annotations

import enum
import heapq
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import chain

from overlayd.fabric.endpoint import Endpoint

TCP, UDP = 6, 17
FIN, SYN, RST, ACK = 0x01, 0x02, 0x04, 0x10  # TCP header flags
DEFAULT_MAX_FLOWS = 65536
SNAT_PORTS = (1024, 65535)  # where `snat_port` looks when the preferred port is taken

Key = tuple[int, bytes, int, bytes, int]  # (proto, src address, src port, dst address, dst port)


class FlowState(enum.Enum):
    NEW = "new"  # no reply yet (TCP: the SYN, or a flow picked up mid-stream)
    ESTABLISHED = "established"  # a reply was seen
    CLOSING = "closing"  # TCP: a FIN either way
    CLOSED = "closed"  # TCP: a RST, or both FINs and the last one acked; lingers, then goes


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Idle timeouts in seconds, per protocol and state (see the module docstring)."""

    tcp_new_s: float = 30.0
    tcp_established_s: float = 3600.0
    tcp_closing_s: float = 120.0
    tcp_closed_s: float = 10.0  # the linger after the end
    udp_new_s: float = 30.0
    udp_established_s: float = 120.0

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) <= 0:
                raise ValueError(f"conntrack timeout {name} must be positive")

    def of(self, proto: int, state: FlowState) -> float:
        if proto == UDP:
            return self.udp_new_s if state is FlowState.NEW else self.udp_established_s
        if state is FlowState.ESTABLISHED:
            return self.tcp_established_s
        if state is FlowState.NEW:
            return self.tcp_new_s
        return self.tcp_closing_s if state is FlowState.CLOSING else self.tcp_closed_s


@dataclass(slots=True, eq=False)
class Flow:
    """One tracked flow. The table owns it; read it, do not change it."""

    proto: int  # TCP (6) or UDP (17)
    client: Endpoint  # the client's (address, port) as it sent them
    vip: Endpoint  # the service's (VIP, port) the client addressed
    backend: Endpoint  # where the flow is pinned
    snat: Endpoint | None  # the source the backend sees instead of `client`; None: the client's own
    service: str  # the service's name, for listings and filters
    created: float
    serial: int  # creation order, unique in the table
    state: FlowState = FlowState.NEW
    replied: bool = False
    last_seen: float = 0.0
    expires: float = 0.0  # when it leaves unless a packet comes first
    packets_original: int = 0  # client -> service
    bytes_original: int = 0
    packets_reply: int = 0  # backend -> client
    bytes_reply: int = 0
    client_next_seq: int | None = None  # TCP: seq + length of the furthest client segment seen
    server_next_seq: int | None = None  # TCP: the same from the server: the client's RCV.NXT
    _fins: int = field(default=0, repr=False)  # _CLIENT | _SERVER: who sent a FIN
    _last_fin: int = field(default=0, repr=False)  # which one came last
    _ticket: int = field(default=0, repr=False)  # of the flow's live heap entry; -1: out of the table
    _queued: float = field(default=0.0, repr=False)  # that entry's deadline

    @property
    def original_key(self) -> Key:
        return (self.proto, self.client[0], self.client[1], self.vip[0], self.vip[1])

    @property
    def source(self) -> Endpoint:
        """The source address and port the backend sees."""
        return self.snat or self.client

    @property
    def reply_key(self) -> Key:
        source = self.snat or self.client
        return (self.proto, self.backend[0], self.backend[1], source[0], source[1])


@dataclass(frozen=True, slots=True)
class FlowCreated:
    """`flow` is new in the table; to make room, `evicted` (never replied, or closed) left it."""

    flow: Flow
    evicted: Flow | None = None


@dataclass(frozen=True, slots=True)
class FlowStateChanged:
    """A packet moved `flow` from state `old` to `new`."""

    flow: Flow
    old: FlowState
    new: FlowState


@dataclass(frozen=True, slots=True)
class FlowExpired:
    """`flow` left the table: idle for the timeout of its state."""

    flow: Flow


@dataclass(frozen=True, slots=True)
class FlowClosed:
    """`flow` left the table: it ended (FIN/RST) and its linger ran out."""

    flow: Flow


@dataclass(frozen=True, slots=True)
class FlowRemoved:
    """`flow` left the table because the caller removed it (its backend failed, say)."""

    flow: Flow


_CLIENT, _SERVER = 1, 2  # who sent a packet; Flow._fins has a bit for each


def _tcp_next(flow: Flow, side: int, flags: int) -> FlowState:
    """The state of an open TCP `flow` after a packet from `side` with `flags` (records its FIN)."""
    if flags & RST:
        return FlowState.CLOSED
    if flags & FIN:
        flow._fins |= side
        flow._last_fin = side
        return FlowState.CLOSING
    if flow._fins == _CLIENT | _SERVER and flow._last_fin != side and flags & ACK:
        return FlowState.CLOSED  # the last FIN is acknowledged
    if side == _SERVER and flow.state is FlowState.NEW:
        return FlowState.ESTABLISHED
    return flow.state


def _segment_end(seq: int, payload: int, flags: int) -> int:
    """The sequence number after a segment: SYN and FIN take one each."""
    return seq + payload + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)


def _advance(current: int | None, end: int) -> int:
    """The later of two TCP sequence numbers (serial arithmetic, RFC 1982)."""
    end &= 0xFFFFFFFF
    if current is None or 0 < (end - current) & 0xFFFFFFFF < 0x80000000:
        return end
    return current


class Conntrack:
    """The table. `lookup`, `lookup_reply`, `original` and `reply` are the per-packet calls."""

    def __init__(self, max_flows: int = DEFAULT_MAX_FLOWS, timeouts: Timeouts = Timeouts()):
        if max_flows < 1:
            raise ValueError("conntrack max_flows must be at least 1")
        self.max_flows = max_flows
        self.timeouts = timeouts
        self._original: dict[Key, Flow] = {}
        self._reply: dict[Key, Flow] = {}
        self._by_backend: dict[Endpoint, dict[int, Flow]] = {}
        self._unreplied: dict[int, Flow] = {}  # by serial, oldest first: eviction candidates
        self._closed: dict[int, Flow] = {}  # by serial, in the order they closed: evicted first
        self._heap: list[tuple[float, int, int, Flow]] = []  # (deadline, serial, ticket, flow)
        self._serial = 0
        self._ticket = 0
        self.created = 0  # counters, for `overlayctl stats`
        self.evicted = 0
        self.refused_full = 0
        self.refused_no_port = 0

    # -- reading -------------------------------------------------------------------------

    def lookup(self, key: Key) -> Flow | None:
        """The flow a packet from a client to a service belongs to."""
        return self._original.get(key)

    def lookup_reply(self, key: Key) -> Flow | None:
        """The flow a packet from a backend to a client (or its `snat` address) belongs to."""
        return self._reply.get(key)

    def __len__(self) -> int:
        return len(self._original)

    def __iter__(self) -> Iterator[Flow]:
        """Every flow, oldest first (a snapshot: the table may change while it is read)."""
        return iter(list(self._original.values()))

    def flows(
        self,
        service: str | None = None,
        client: bytes | Endpoint | None = None,
        backend: bytes | Endpoint | None = None,
    ) -> list[Flow]:
        """The flows of `service` (its name), `client` and `backend` (None: any), oldest first.

        `client` and `backend` are an address (packed) for every port, or an Endpoint.
        """

        def match(end: Endpoint, want: bytes | Endpoint | None) -> bool:
            return want is None or (end[0] == want if isinstance(want, bytes) else end == want)

        return [
            f
            for f in self._original.values()
            if (service is None or f.service == service) and match(f.client, client) and match(f.backend, backend)
        ]

    def flows_of_backend(self, backend: Endpoint, service: str | None = None) -> list[Flow]:
        """The flows pinned to `backend` (of `service`, None: of any), oldest first; from an index."""
        flows = self._by_backend.get(backend, {}).values()
        return [f for f in flows if service is None or f.service == service]

    def deadline(self) -> float | None:
        """When `expire` may next have work (possibly early: a stale entry), or None."""
        return self._heap[0][0] if self._heap else None

    def snat_port(self, proto: int, address: bytes, backend: Endpoint, preferred: int | None = None) -> int | None:
        """A source port on `address` that no flow to `backend` uses, so the reply key is unique.

        `preferred` (the client's own port, say) if it is free, else the first free one in
        SNAT_PORTS after it, wrapping round; None when every one is taken.
        """
        reply = self._reply
        low, high = SNAT_PORTS
        if preferred is not None and (proto, backend[0], backend[1], address, preferred) not in reply:
            return preferred
        start = preferred + 1 if preferred is not None and low <= preferred < high else low
        for port in chain(range(start, high + 1), range(low, start)):
            if (proto, backend[0], backend[1], address, port) not in reply:
                return port
        return None

    # -- changing ------------------------------------------------------------------------

    def create(
        self,
        proto: int,
        client: Endpoint,
        vip: Endpoint,
        backend: Endpoint,
        now: float,
        *,
        snat: Endpoint | None = None,
        service: str = "",
    ) -> FlowCreated | None:
        """Track a new flow from `client` to `vip`, pinned to `backend`; None when refused.

        Refused (and counted) when the table is full of replied, open flows, or when the
        reply key is taken and no port is free to rewrite the source. A `snat` whose reply
        key is taken, or a flow already tracked, is the caller's error (ValueError).
        """
        if proto not in (TCP, UDP):
            raise ValueError(f"conntrack tracks TCP (6) and UDP (17), not protocol {proto}")
        key = (proto, client[0], client[1], vip[0], vip[1])
        if key in self._original:
            raise ValueError("the flow is tracked already: look it up first")
        source = snat or client
        if (proto, backend[0], backend[1], source[0], source[1]) in self._reply:
            if snat is not None:
                raise ValueError("the snat address and port are taken for this backend: ask snat_port")
            port = self.snat_port(proto, client[0], backend, preferred=client[1])
            if port is None:
                self.refused_no_port += 1
                return None
            snat = (client[0], port)
        evicted = None
        if len(self._original) >= self.max_flows:
            evicted = next(iter(self._closed.values()), None) or next(iter(self._unreplied.values()), None)
            if evicted is None:
                self.refused_full += 1
                return None
            self._unlink(evicted)
            self.evicted += 1
        self._serial += 1
        flow = Flow(proto, client, vip, backend, snat, service, now, self._serial, last_seen=now)
        self._original[key] = flow
        self._reply[flow.reply_key] = flow
        self._by_backend.setdefault(backend, {})[flow.serial] = flow
        self._unreplied[flow.serial] = flow
        flow.expires = now + self.timeouts.of(proto, FlowState.NEW)
        self._push(flow)
        self.created += 1
        return FlowCreated(flow, evicted)

    def original(
        self, flow: Flow, length: int, now: float, flags: int = 0, seq: int | None = None, payload: int = 0
    ) -> FlowStateChanged | None:
        """A packet of `length` bytes from the client; for TCP its `flags`, `seq` and payload length."""
        flow.packets_original += 1
        flow.bytes_original += length
        flow.last_seen = now
        if flow.proto == UDP:
            flow.expires = now + (self.timeouts.udp_new_s if flow.state is FlowState.NEW
                                  else self.timeouts.udp_established_s)
            return None
        old = flow.state
        if old is FlowState.CLOSED:
            if flags & (SYN | ACK | RST) != SYN:
                return None  # a late packet of the old connection: the linger is not extended
            flow._fins = 0
            flow.client_next_seq = flow.server_next_seq = None
            new = FlowState.NEW
        else:
            new = _tcp_next(flow, _CLIENT, flags)
        if seq is not None:
            flow.client_next_seq = _advance(flow.client_next_seq, _segment_end(seq, payload, flags))
        return self._moved(flow, old, new, now)

    def reply(
        self, flow: Flow, length: int, now: float, flags: int = 0, seq: int | None = None, payload: int = 0
    ) -> FlowStateChanged | None:
        """A packet of `length` bytes from the backend; for TCP its `flags`, `seq` and payload length."""
        flow.packets_reply += 1
        flow.bytes_reply += length
        flow.last_seen = now
        if not flow.replied:
            flow.replied = True
            self._unreplied.pop(flow.serial, None)
        old = flow.state
        if flow.proto == UDP:
            flow.expires = now + self.timeouts.udp_established_s
            return self._moved(flow, old, FlowState.ESTABLISHED, now) if old is FlowState.NEW else None
        if old is FlowState.CLOSED:
            return None
        new = _tcp_next(flow, _SERVER, flags)
        if seq is not None:
            flow.server_next_seq = _advance(flow.server_next_seq, _segment_end(seq, payload, flags))
        return self._moved(flow, old, new, now)

    def remove(self, flow: Flow) -> FlowRemoved | None:
        """Take `flow` out of the table (None: it is not in it)."""
        if flow._ticket < 0 or self._original.get(flow.original_key) is not flow:
            return None
        self._unlink(flow)
        return FlowRemoved(flow)

    def expire(self, now: float) -> list[FlowExpired | FlowClosed]:
        """Remove the flows whose time is up (`expires` <= now); return them, by deadline."""
        heap, gone = self._heap, []
        while heap and heap[0][0] <= now:
            deadline, _, ticket, flow = heapq.heappop(heap)
            if flow._ticket != ticket:
                continue  # stale: superseded, or the flow left
            if flow.expires > deadline:
                self._push(flow)  # refreshed since: come back then
                continue
            self._unlink(flow)
            gone.append(FlowClosed(flow) if flow.state is FlowState.CLOSED else FlowExpired(flow))
        return gone

    # -- inside --------------------------------------------------------------------------

    def _moved(self, flow: Flow, old: FlowState, new: FlowState, now: float) -> FlowStateChanged | None:
        """Refresh `flow` in state `new`; move it between the eviction lists; say if the state changed."""
        flow.state = new
        flow.expires = now + self.timeouts.of(flow.proto, new)
        if new is old:
            return None
        if flow._ticket >= 0:  # still in the table
            if new is FlowState.CLOSED:
                self._unreplied.pop(flow.serial, None)
                self._closed[flow.serial] = flow
            elif old is FlowState.CLOSED:  # reopened
                del self._closed[flow.serial]
                flow.replied = False
                self._unreplied[flow.serial] = flow
            if flow.expires < flow._queued:
                self._push(flow)
        return FlowStateChanged(flow, old, new)

    def _push(self, flow: Flow) -> None:
        self._ticket += 1
        flow._ticket, flow._queued = self._ticket, flow.expires
        heapq.heappush(self._heap, (flow.expires, flow.serial, self._ticket, flow))
        if len(self._heap) > 2 * len(self._original) + 1024:  # mostly stale: keep the live entries
            self._heap[:] = [(f._queued, f.serial, f._ticket, f) for f in self._original.values()]
            heapq.heapify(self._heap)  # in place: `expire` may be walking it

    def _unlink(self, flow: Flow) -> None:
        del self._original[flow.original_key]
        del self._reply[flow.reply_key]
        pinned = self._by_backend[flow.backend]
        del pinned[flow.serial]
        if not pinned:
            del self._by_backend[flow.backend]
        self._unreplied.pop(flow.serial, None)
        self._closed.pop(flow.serial, None)
        flow._ticket = -1
