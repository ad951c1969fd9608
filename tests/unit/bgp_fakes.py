"""Fakes for the BGP session tests: a clock, a wire between two Sessions, a network between Peers,
and a stand-in UPDATE codec for when overlayd.wire.bgp.update is not there yet.

    clock = Clock()
    a, b = Session(cfg_a, clock.now), Session(cfg_b, clock.now)
    wire = Wire(a, b, clock)
    wire.connect()                 # a connects to b (a: outbound, b: inbound)
    wire.pump()                    # move bytes both ways until quiet
    wire.advance(3.0)              # run every timer due in the next 3 s, pumping as it goes
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field

import pytest

from overlayd.control.events import Event
from overlayd.control.negotiation import SessionConfig
from overlayd.control.peer import Peer
from overlayd.control.session import Session
from overlayd.wire.bgp import update as update_codec
from overlayd.wire.bgp.attributes import PathAttributes, RouteTarget
from overlayd.wire.bgp.errors import UPDATE_MESSAGE_ERROR, BgpError
from overlayd.wire.bgp.evpn import MacIpRoute, RouteDistinguisher
from overlayd.wire.bgp.messages import MessageReader, decode_message
from overlayd.wire.bgp.update import Update

A_ID = ipaddress.IPv4Address("10.0.0.1")
B_ID = ipaddress.IPv4Address("10.0.0.2")


def config(local_asn=65000, peer_asn=65000, router_id=A_ID, peer="10.0.0.2", **kw) -> SessionConfig:
    return SessionConfig(local_asn, peer_asn, ipaddress.IPv4Address(router_id), peer, **kw)


def pair_configs(**kw) -> tuple[SessionConfig, SessionConfig]:
    """A (10.0.0.1) and B (10.0.0.2), iBGP in AS 65000 unless told otherwise."""
    a_kw = {k[2:]: v for k, v in kw.items() if k.startswith("a_")}
    b_kw = {k[2:]: v for k, v in kw.items() if k.startswith("b_")}
    common = {k: v for k, v in kw.items() if not k.startswith(("a_", "b_"))}
    a = config(**{"router_id": A_ID, "peer": str(B_ID), **common, **a_kw})
    b = config(**{"router_id": B_ID, "peer": str(A_ID), **common, **b_kw})
    return a, b


def sample_update(n: int = 1) -> Update:
    rd = RouteDistinguisher.for_vtep(A_ID, 100)
    route = MacIpRoute(rd, bytes.fromhex(f"0200000000{n:02x}"), ipaddress.IPv4Address(f"192.168.0.{n}"), vni=100)
    attrs = PathAttributes(next_hop=A_ID, local_pref=100, ext_communities=(RouteTarget("65000", 100),))
    return Update(announced=(route,), attributes=attrs)


class Clock:
    def __init__(self, now: float = 1000.0):
        self.now = now


def messages(data: bytes) -> list:
    """Decode a byte string of whole messages (UPDATEs stay raw: (type, body))."""
    reader = MessageReader()
    reader.feed(data)
    out = []
    for msg_type, body in reader:
        out.append((msg_type, body) if msg_type == 2 else decode_message(msg_type, body))
    assert reader.buffered == 0
    return out


@dataclass
class Side:
    session: Session
    events: list[Event] = field(default_factory=list)
    sent: list = field(default_factory=list)  # decoded messages this side wrote
    closed: int = 0  # how many times it asked for its connection to be closed


class Wire:
    """Two Sessions and at most one TCP connection between them."""

    def __init__(self, a: Session, b: Session, clock: Clock):
        self.a, self.b = Side(a), Side(b)
        self.clock = clock
        self.up = False

    def connect(self, initiator: str = "a") -> None:
        src, dst = (self.a, self.b) if initiator == "a" else (self.b, self.a)
        assert src.session.wants_connection(self.clock.now)
        assert src.session.connection_made(self.clock.now, inbound=False)
        assert dst.session.connection_made(self.clock.now, inbound=True)
        self.up = True
        self.pump()

    def _collect(self, side: Side) -> tuple[bytes, bool]:
        data = side.session.data_to_send()
        close = side.session.should_close()
        side.sent.extend(messages(data))
        while (event := side.session.next_event()) is not None:
            side.events.append(event)
        side.closed += close
        return data, close

    def pump(self) -> None:
        for _ in range(100):
            moved = False
            for src, dst in ((self.a, self.b), (self.b, self.a)):
                data, close = self._collect(src)
                if self.up and data:
                    dst.session.data_received(data, self.clock.now)
                    moved = True
                if self.up and close:
                    self.up = False
                    dst.session.connection_lost(self.clock.now)
                    moved = True
            if not moved:
                self._collect(self.a)
                self._collect(self.b)
                return
        raise AssertionError("the sessions never went quiet")

    def next_deadline(self) -> float | None:
        timers = [t for t in (self.a.session.get_timer(), self.b.session.get_timer()) if t is not None]
        return min(timers) if timers else None

    def advance(self, seconds: float) -> None:
        """Let `seconds` pass, firing each timer at its deadline."""
        end = self.clock.now + seconds
        while (t := self.next_deadline()) is not None and t <= end:
            self.clock.now = max(self.clock.now, t)
            for side in (self.a, self.b):
                timer = side.session.get_timer()
                if timer is not None and timer <= self.clock.now:
                    side.session.handle_timer(self.clock.now)
            self.pump()
        self.clock.now = end
        self.pump()


# -- Peers on a fake network ------------------------------------------------------------------


@dataclass
class Link:
    """One TCP connection between the Peers: each end's conn_id, and what is in flight each way."""

    ends: dict  # peer name -> conn_id on that peer
    initiator: str
    open: bool = True
    queues: dict = field(default_factory=lambda: {"a": [], "b": []})  # to peer name -> [bytes or CLOSE]


CLOSE = None  # in a link queue: the sender closed the connection


class Net:
    """Two Peers, "a" and "b", and every TCP connection between them, with bytes in flight."""

    def __init__(self, a: Peer, b: Peer, clock: Clock):
        self.peers = {"a": a, "b": b}
        self.clock = clock
        self.links: list[Link] = []
        self.pending: dict[str, list[int]] = {"a": [], "b": []}  # connects under way
        self.events: dict[str, list[Event]] = {"a": [], "b": []}
        self.sent: dict[str, list] = {"a": [], "b": []}  # (conn_id, message)

    @staticmethod
    def other(name: str) -> str:
        return "b" if name == "a" else "a"

    def start_connects(self, only: str | None = None) -> None:
        """Each Peer that wants a connection starts one (SYN sent, not yet answered)."""
        for name, peer in self.peers.items():
            if only not in (None, name):
                continue
            conn_id = peer.connect_due(self.clock.now)
            if conn_id is not None:
                self.pending[name].append(conn_id)

    def complete_connects(self, only: str | None = None, refuse: bool = False) -> None:
        """Connects under way reach the other Peer, which accepts them (or nobody listens)."""
        for name in ("a", "b"):
            if only not in (None, name):
                continue
            for conn_id in self.pending[name]:
                peer, far = self.peers[name], self.peers[self.other(name)]
                if refuse:
                    peer.connection_failed(conn_id, self.clock.now, "connection refused")
                    continue
                far_id = far.accept(self.clock.now)
                if far_id is None:
                    peer.connection_failed(conn_id, self.clock.now, "connection reset")
                    continue
                self.links.append(Link({name: conn_id, self.other(name): far_id}, name))
                peer.connection_made(conn_id, self.clock.now)
            self.pending[name] = []
        self.flush()

    def link_of(self, name: str, conn_id: int) -> Link | None:
        return next((l for l in self.links if l.open and l.ends[name] == conn_id), None)

    def flush(self) -> None:
        """Take what each Peer wants to send and put it on the wire; collect events."""
        for name, peer in self.peers.items():
            far_name = self.other(name)
            for conn_id, data, close in peer.data_to_send():
                self.sent[name].extend((conn_id, m) for m in messages(data))
                link = self.link_of(name, conn_id)
                if link is None:
                    continue
                if data:
                    link.queues[far_name].append(data)
                if close:
                    link.queues[far_name].append(CLOSE)
                    link.open = False  # no more from either side; what is in flight still arrives
            while (event := peer.next_event()) is not None:
                self.events[name].append(event)

    def in_flight(self) -> list[tuple[Link, str]]:
        return [(l, to) for l in self.links for to in ("a", "b") if l.queues[to]]

    def deliver(self, link: Link, to: str) -> None:
        """Deliver the oldest thing in flight on `link` towards `to`."""
        item = link.queues[to].pop(0)
        conn_id = link.ends[to]
        if item is CLOSE:
            self.peers[to].connection_lost(conn_id, self.clock.now)
            link.queues[self.other(to)].clear()  # the connection is gone both ways
        else:
            self.peers[to].data_received(conn_id, item, self.clock.now)
        self.flush()

    def pump(self) -> None:
        self.flush()
        for _ in range(1000):
            flights = self.in_flight()
            if not flights:
                return
            self.deliver(*flights[0])
        raise AssertionError("the peers never went quiet")

    def settle(self) -> None:
        """Connect whoever wants to, deliver everything."""
        for _ in range(20):
            self.pump()
            self.start_connects()
            if not any(self.pending.values()):
                return
            self.complete_connects()
        raise AssertionError("the peers keep connecting")

    def advance(self, seconds: float) -> None:
        end = self.clock.now + seconds
        while True:
            timers = [t for p in self.peers.values() if (t := p.get_timer()) is not None]
            if not timers or min(timers) > end:
                break
            self.clock.now = max(self.clock.now, min(timers))
            for peer in self.peers.values():
                peer.handle_timer(self.clock.now)
            self.settle()
        self.clock.now = end
        self.settle()

    def open_links(self) -> list[Link]:
        return [l for l in self.links if l.open]


# -- a stand-in UPDATE codec ------------------------------------------------------------------


class FakeUpdateCodec:
    """Numbers each encoded Update; the body is that number after a 2-octet 0xfa11 tag.

    Decoding anything else raises BgpError 3/1, as a reset-worthy UPDATE would.
    """

    def __init__(self) -> None:
        self.updates: list[Update] = []

    def encode(self, update: Update, four_octet_as: bool = True) -> bytes:
        self.updates.append(update)
        return struct.pack("!HI", 0xFA11, len(self.updates) - 1)

    def decode(self, body, four_octet_as: bool = True, families=()) -> Update:
        body = bytes(body)
        if len(body) != 6 or body[:2] != b"\xfa\x11":
            raise BgpError(UPDATE_MESSAGE_ERROR, 1, "not a fake UPDATE")
        (index,) = struct.unpack("!I", body[2:])
        if index >= len(self.updates):
            raise BgpError(UPDATE_MESSAGE_ERROR, 1, "unknown fake UPDATE")
        return self.updates[index]


def real_update_codec_works() -> bool:
    try:
        for update in (Update(end_of_rib=True), sample_update()):
            if update_codec.decode_update(update_codec.encode_update(update, True), True).announced != update.announced:
                return False
        return True
    except NotImplementedError:
        return False


@pytest.fixture
def updates(monkeypatch):
    """The real UPDATE codec when it is there, the fake otherwise; yields which one ("real"/"fake")."""
    if real_update_codec_works():
        yield "real"
        return
    fake = FakeUpdateCodec()
    monkeypatch.setattr(update_codec, "encode_update", fake.encode)
    monkeypatch.setattr(update_codec, "decode_update", fake.decode)
    yield "fake"
