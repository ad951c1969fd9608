"""The connection-tracking table against a deliberately naive model, plus its rules as examples.

The model keeps its flows in a list and answers everything by scanning it:
a lookup compares every row's keys, expiry computes every row's deadline
from when it was last refreshed and the timeout of its state, eviction
looks for the row that closed first, else the oldest row without a reply.
It knows the rules of the module docstring and nothing of heaps, tickets
or indexes. Time is fake: the machine moves it by steps that straddle the
timeouts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from overlayd.fabric.conntrack import (
    ACK,
    DEFAULT_MAX_FLOWS,
    FIN,
    RST,
    SNAT_PORTS,
    SYN,
    TCP,
    UDP,
    Conntrack,
    FlowClosed,
    FlowCreated,
    FlowExpired,
    FlowRemoved,
    FlowState,
    FlowStateChanged,
    Timeouts,
)

T = Timeouts()
NODE = bytes([10, 244, 0, 1])  # the node's own address, for hairpin flows
CLIENTS = [(bytes([10, 244, 1, 2]), 40000), (bytes([10, 244, 1, 2]), 40001), (bytes([10, 244, 2, 3]), 40000)]
VIPS = [(bytes([10, 96, 0, 10]), 80), (bytes([10, 96, 0, 11]), 80)]
BACKENDS = [(bytes([10, 244, 1, 5]), 8080), (bytes([10, 244, 2, 7]), 8080), (bytes([10, 244, 3, 9]), 8080)]
PSH = 0x08


def ip(text: str) -> bytes:
    return bytes(int(x) for x in text.split("."))


# -- the model ----------------------------------------------------------------------------


@dataclass
class Row:
    proto: int
    client: tuple
    vip: tuple
    backend: tuple
    snat: tuple | None
    service: str
    order: int  # creation order
    since: float  # last refreshed (for a closed row: when it closed)
    state: str = "new"
    replied: bool = False
    unreplied_at: int = 0  # event number when it became an eviction candidate
    closed_at: int = 0
    counts: list = field(default_factory=lambda: [0, 0, 0, 0])  # packets, bytes: original, reply
    fins: set = field(default_factory=set)
    last_fin: str = ""
    next_seq: dict = field(default_factory=lambda: {"client": None, "server": None})

    @property
    def original_key(self):
        return (self.proto, self.client[0], self.client[1], self.vip[0], self.vip[1])

    @property
    def reply_key(self):
        src = self.snat or self.client
        return (self.proto, self.backend[0], self.backend[1], src[0], src[1])

    def deadline(self):
        timeout = {
            (UDP, "new"): T.udp_new_s,
            (UDP, "established"): T.udp_established_s,
            (TCP, "new"): T.tcp_new_s,
            (TCP, "established"): T.tcp_established_s,
            (TCP, "closing"): T.tcp_closing_s,
            (TCP, "closed"): T.tcp_closed_s,
        }[(self.proto, self.state)]
        return self.since + timeout


def later(a, b):
    """The later of two sequence numbers, modulo 2**32."""
    if a is None:
        return b % 2**32
    return b % 2**32 if (b - a) % 2**32 in range(1, 2**31) else a


class NaiveConntrack:
    def __init__(self, cap):
        self.cap = cap
        self.rows: list[Row] = []
        self.events = 0  # orders eviction candidates
        self.refused_full = self.refused_no_port = self.evicted = 0

    def tick(self):
        self.events += 1
        return self.events

    def by_original(self, key):
        return next((r for r in self.rows if r.original_key == key), None)

    def by_reply(self, key):
        return next((r for r in self.rows if r.reply_key == key), None)

    def free_port(self, proto, address, backend, preferred):
        ports = [preferred] if preferred is not None else []
        low, high = SNAT_PORTS
        first = preferred + 1 if preferred is not None and low <= preferred < high else low
        ports += list(range(first, high + 1)) + list(range(low, first))
        for port in ports:
            if self.by_reply((proto, backend[0], backend[1], address, port)) is None:
                return port
        return None

    def create(self, proto, client, vip, backend, now, snat, service):
        src = snat or client
        if self.by_reply((proto, backend[0], backend[1], src[0], src[1])) is not None:
            port = self.free_port(proto, client[0], backend, client[1])
            if port is None:
                self.refused_no_port += 1
                return None
            snat = (client[0], port)
        victim = None
        if len(self.rows) >= self.cap:
            closed = [r for r in self.rows if r.state == "closed"]
            waiting = [r for r in self.rows if not r.replied and r.state != "closed"]
            if closed:
                victim = min(closed, key=lambda r: r.closed_at)
            elif waiting:
                victim = min(waiting, key=lambda r: r.unreplied_at)
            else:
                self.refused_full += 1
                return None
            self.rows.remove(victim)
            self.evicted += 1
        order = self.tick()
        row = Row(proto, client, vip, backend, snat, service, order, now, unreplied_at=order)
        self.rows.append(row)
        return row, victim

    def packet(self, row, side, length, now, flags, seq, payload):
        """side: "client" (original direction) or "server" (reply)."""
        i = 0 if side == "client" else 2
        row.counts[i] += 1
        row.counts[i + 1] += length
        if side == "server" and not row.replied:
            row.replied = True
        old = row.state
        if row.proto == UDP:
            if side == "server":
                row.state = "established"
            row.since = now
            return old, row.state
        other = "server" if side == "client" else "client"
        if old == "closed":
            if side == "server" or flags & (SYN | ACK | RST) != SYN:
                return old, old
            row.state, row.fins, row.replied = "new", set(), False
            row.next_seq = {"client": None, "server": None}
            row.unreplied_at = self.tick()
        elif flags & RST:
            row.state = "closed"
        elif flags & FIN:
            row.fins.add(side)
            row.last_fin = side
            row.state = "closing"
        elif row.fins == {"client", "server"} and row.last_fin == other and flags & ACK:
            row.state = "closed"
        elif side == "server" and old == "new":
            row.state = "established"
        if row.state == "closed" and old != "closed":
            row.closed_at = self.tick()
        if seq is not None:
            used = payload + (1 if flags & SYN else 0) + (1 if flags & FIN else 0)
            row.next_seq[side] = later(row.next_seq[side], seq + used)
        row.since = now
        return old, row.state

    def expire(self, now):
        gone = sorted((r for r in self.rows if r.deadline() <= now), key=lambda r: (r.deadline(), r.order))
        self.rows = [r for r in self.rows if r not in gone]
        return gone


def same(flow, row) -> bool:
    return (
        flow.original_key == row.original_key
        and flow.reply_key == row.reply_key
        and (flow.backend, flow.snat, flow.service) == (row.backend, row.snat, row.service)
        and flow.state.value == row.state
        and flow.replied == row.replied
        and flow.expires == row.deadline()
        and [flow.packets_original, flow.bytes_original, flow.packets_reply, flow.bytes_reply] == row.counts
        and (flow.client_next_seq, flow.server_next_seq) == (row.next_seq["client"], row.next_seq["server"])
    )


# -- random operations against the model ----------------------------------------------------

STEPS = [0, 1, 5, 9, 10, 11, 29, 30, 31, 100, 119, 121, 3599, 3601]
FLAGS = [0, SYN, SYN | ACK, ACK, ACK, PSH | ACK, FIN | ACK, FIN | ACK, FIN, RST, RST | ACK]
CAP = 5


class ConntrackMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.ct = Conntrack(max_flows=CAP)
        self.model = NaiveConntrack(CAP)
        self.now = 1000.0

    def pick(self, i):
        row = self.model.rows[i % len(self.model.rows)]
        flow = self.ct.lookup(row.original_key)
        assert flow is not None
        return row, flow

    @rule(step=st.sampled_from(STEPS))
    def time_passes(self, step):
        self.now += step

    @rule(
        proto=st.sampled_from([TCP, UDP]),
        client=st.sampled_from(CLIENTS),
        vip=st.sampled_from(VIPS),
        backend=st.sampled_from(BACKENDS),
        hairpin=st.booleans(),
    )
    def create(self, proto, client, vip, backend, hairpin):
        service = "web" if vip == VIPS[0] else "api"
        key = (proto, client[0], client[1], vip[0], vip[1])
        if self.model.by_original(key) is not None:
            with pytest.raises(ValueError, match="tracked already"):
                self.ct.create(proto, client, vip, backend, self.now, service=service)
            return
        snat = None
        if hairpin:
            port = self.ct.snat_port(proto, NODE, backend, preferred=client[1])
            assert port == self.model.free_port(proto, NODE, backend, client[1])
            snat = (NODE, port)
        got = self.ct.create(proto, client, vip, backend, self.now, snat=snat, service=service)
        want = self.model.create(proto, client, vip, backend, self.now, snat, service)
        if want is None:
            assert got is None
            return
        row, victim = want
        assert isinstance(got, FlowCreated) and same(got.flow, row)
        assert (got.evicted is None) == (victim is None)
        if victim is not None:
            assert got.evicted.original_key == victim.original_key
            assert self.ct.lookup(victim.original_key) is None

    @precondition(lambda self: self.model.rows)
    @rule(
        i=st.integers(0, 100),
        side=st.sampled_from(["client", "server"]),
        flags=st.sampled_from(FLAGS),
        length=st.integers(40, 1500),
        seq=st.none() | st.sampled_from([0, 1000, 2**31 - 1, 2**31, 2**32 - 10, 2**32 - 1]),
        payload=st.sampled_from([0, 1, 100, 1460]),
    )
    def packet(self, i, side, flags, length, seq, payload):
        self.send(i, side, flags, length, seq, payload)

    @precondition(lambda self: self.model.rows)
    @rule(i=st.integers(0, 100), packets=st.lists(st.tuples(st.sampled_from(["client", "server"]),
                                                             st.sampled_from(FLAGS)), min_size=2, max_size=8))
    def exchange(self, i, packets):
        """Several packets of one flow in a row: closes and reopens come up often."""
        for side, flags in packets:
            self.send(i, side, flags, 60, None, 0)

    def send(self, i, side, flags, length, seq, payload):
        row, flow = self.pick(i)
        call = self.ct.original if side == "client" else self.ct.reply
        got = call(flow, length, self.now, flags, seq, payload)
        old, new = self.model.packet(row, side, length, self.now, flags, seq, payload)
        if old == new:
            assert got is None
        else:
            assert got == FlowStateChanged(flow, FlowState(old), FlowState(new))

    @precondition(lambda self: self.model.rows)
    @rule(i=st.integers(0, 100))
    def remove(self, i):
        row, flow = self.pick(i)
        self.model.rows.remove(row)
        assert self.ct.remove(flow) == FlowRemoved(flow)
        assert self.ct.remove(flow) is None

    @rule()
    def expire(self):
        want = self.model.expire(self.now)
        got = self.ct.expire(self.now)
        assert [e.flow.original_key for e in got] == [r.original_key for r in want]
        for fact, row in zip(got, want):
            assert isinstance(fact, FlowClosed if row.state == "closed" else FlowExpired)

    @invariant()
    def same_table(self):
        rows = self.model.rows
        assert len(self.ct) == len(rows)
        assert [f.original_key for f in self.ct] == [r.original_key for r in sorted(rows, key=lambda r: r.order)]
        for row in rows:
            flow = self.ct.lookup(row.original_key)
            assert flow is not None and same(flow, row)
            assert self.ct.lookup_reply(row.reply_key) is flow
        for backend in BACKENDS:
            want = sorted((r for r in rows if r.backend == backend), key=lambda r: r.order)
            assert [f.original_key for f in self.ct.flows_of_backend(backend)] == [r.original_key for r in want]
        counters = (self.ct.refused_full, self.ct.refused_no_port, self.ct.evicted)
        assert counters == (self.model.refused_full, self.model.refused_no_port, self.model.evicted)

    @invariant()
    def deadline_is_never_late(self):
        if self.model.rows:
            assert self.ct.deadline() <= min(r.deadline() for r in self.model.rows)
        assert len(self.ct._heap) <= 2 * len(self.ct) + 1024


TestConntrackAgainstModel = ConntrackMachine.TestCase
TestConntrackAgainstModel.settings = settings(max_examples=200, stateful_step_count=50, deadline=None)


# -- the rules, one example each ---------------------------------------------------------------

C, V, B, B2 = CLIENTS[0], VIPS[0], BACKENDS[0], BACKENDS[1]


def new_flow(ct, proto=TCP, client=C, vip=V, backend=B, now=0.0, **kw):
    created = ct.create(proto, client, vip, backend, now, **kw)
    assert created is not None
    return created.flow


def test_keys_of_both_directions():
    ct = Conntrack()
    flow = new_flow(ct, snat=(NODE, 50000), service="web")
    assert flow.original_key == (TCP, C[0], C[1], V[0], V[1])
    assert flow.reply_key == (TCP, B[0], B[1], NODE, 50000)
    assert ct.lookup(flow.original_key) is flow and ct.lookup_reply(flow.reply_key) is flow
    assert ct.lookup_reply((TCP, B[0], B[1], C[0], C[1])) is None  # the reply goes to the snat address
    assert flow.source == (NODE, 50000) and flow.state is FlowState.NEW and not flow.replied


def test_tcp_handshake_data_and_close_by_fins():
    ct = Conntrack()
    f = new_flow(ct)
    assert ct.original(f, 60, 0, SYN, seq=100) is None  # NEW already
    assert ct.reply(f, 60, 0.1, SYN | ACK, seq=5000) == FlowStateChanged(f, FlowState.NEW, FlowState.ESTABLISHED)
    assert f.expires == 0.1 + T.tcp_established_s and f.replied
    ct.original(f, 52, 0.2, ACK, seq=101)
    ct.reply(f, 1500, 0.3, PSH | ACK, seq=5001, payload=1448)
    assert (f.client_next_seq, f.server_next_seq) == (101, 5001 + 1448)
    assert ct.original(f, 52, 1, FIN | ACK, seq=101) == FlowStateChanged(f, FlowState.ESTABLISHED, FlowState.CLOSING)
    assert f.expires == 1 + T.tcp_closing_s
    assert ct.reply(f, 52, 1.1, ACK) is None  # acks the client's FIN: still closing
    assert ct.reply(f, 52, 1.2, FIN | ACK, seq=6449) is None  # the server's FIN, the last one
    assert f.server_next_seq == 6450
    assert ct.original(f, 52, 1.3, ACK) == FlowStateChanged(f, FlowState.CLOSING, FlowState.CLOSED)
    assert f.expires == 1.3 + T.tcp_closed_s
    ct.original(f, 52, 5, ACK)  # a retransmitted last ACK still finds the flow, and does not extend it
    assert f.expires == 1.3 + T.tcp_closed_s and f.packets_original == 5
    assert ct.expire(11.2) == []
    assert ct.expire(11.3) == [FlowClosed(f)]
    assert len(ct) == 0 and ct.lookup(f.original_key) is None and ct.flows_of_backend(B) == []


def test_server_closes_first():
    ct = Conntrack()
    f = new_flow(ct)
    ct.reply(f, 60, 0, SYN | ACK)
    assert ct.reply(f, 52, 1, FIN | ACK).new is FlowState.CLOSING
    assert ct.original(f, 52, 1, FIN | ACK) is None  # the client's FIN comes last
    assert ct.original(f, 52, 1, ACK) is None  # the client's ACK does not finish it
    assert ct.reply(f, 52, 2, ACK) == FlowStateChanged(f, FlowState.CLOSING, FlowState.CLOSED)


@pytest.mark.parametrize("side", ["original", "reply"])
def test_a_rst_either_way_closes_at_once(side):
    ct = Conntrack()
    f = new_flow(ct)
    ct.reply(f, 60, 0, SYN | ACK)
    assert getattr(ct, side)(f, 40, 7, RST).new is FlowState.CLOSED
    assert f.expires == 7 + T.tcp_closed_s
    assert ct.expire(17) == [FlowClosed(f)]


def test_a_refused_connection_closes_and_is_not_established():
    ct = Conntrack()
    f = new_flow(ct)
    ct.original(f, 60, 0, SYN)
    assert ct.reply(f, 40, 0.1, RST | ACK) == FlowStateChanged(f, FlowState.NEW, FlowState.CLOSED)


def test_a_new_syn_on_a_closed_flow_reopens_it():
    ct = Conntrack()
    f = new_flow(ct)
    ct.reply(f, 60, 0, SYN | ACK, seq=1)
    ct.original(f, 40, 1, RST, seq=9)
    assert ct.original(f, 60, 2, SYN, seq=7000) == FlowStateChanged(f, FlowState.CLOSED, FlowState.NEW)
    assert not f.replied and f.expires == 2 + T.tcp_new_s
    assert (f.client_next_seq, f.server_next_seq) == (7001, None)
    assert ct.reply(f, 60, 3, SYN | ACK).new is FlowState.ESTABLISHED
    assert ct.reply(f, 60, 4, SYN | ACK) is None


def test_a_tcp_flow_picked_up_mid_stream_is_established_by_the_reply():
    ct = Conntrack()
    f = new_flow(ct)
    assert ct.original(f, 1500, 0, PSH | ACK, seq=10, payload=1448) is None
    assert f.state is FlowState.NEW and f.expires == T.tcp_new_s
    assert ct.reply(f, 52, 0.5, ACK).new is FlowState.ESTABLISHED


def test_udp_timeouts_new_then_replied():
    ct = Conntrack()
    f = new_flow(ct, proto=UDP)
    ct.original(f, 100, 0)
    assert f.expires == T.udp_new_s
    assert ct.reply(f, 200, 1) == FlowStateChanged(f, FlowState.NEW, FlowState.ESTABLISHED)
    assert f.expires == 1 + T.udp_established_s
    assert ct.reply(f, 200, 2, FIN | RST) is None and f.state is FlowState.ESTABLISHED  # flags mean nothing
    assert ct.expire(121.9) == []
    assert ct.expire(122) == [FlowExpired(f)]


def test_sequence_numbers_wrap():
    ct = Conntrack()
    f = new_flow(ct)
    ct.reply(f, 60, 0, SYN | ACK, seq=2**32 - 1)
    assert f.server_next_seq == 0  # the SYN takes the last number
    ct.reply(f, 1500, 0, ACK, seq=0, payload=1000)
    ct.reply(f, 1500, 0, ACK, seq=2**32 - 500, payload=100)  # a retransmission from before the wrap
    assert f.server_next_seq == 1000


def test_expiry_comes_in_deadline_order_whatever_the_refreshes():
    ct = Conntrack()
    flows = [new_flow(ct, client=(bytes([10, 244, 9, i]), 1000), now=0) for i in range(6)]
    for f in flows:
        ct.reply(f, 60, 0, SYN | ACK)  # all established: 1 h
    ct.original(flows[0], 60, 50, ACK)  # refreshed: later than the others
    ct.original(flows[3], 60, 10, FIN)  # closing: 2 min, before everyone
    ct.original(flows[5], 60, 20, RST)  # closed: 10 s
    ct.original(flows[4], 60, 5, RST)  # closed: 10 s, before 5
    assert ct.expire(29) == [FlowClosed(flows[4])]
    assert ct.expire(30) == [FlowClosed(flows[5])]
    assert ct.expire(3600) == [FlowExpired(flows[3]), FlowExpired(flows[1]), FlowExpired(flows[2])]
    assert ct.expire(3649.9) == []
    assert ct.expire(3650) == [FlowExpired(flows[0])]


def test_a_full_table_refuses_new_flows_and_keeps_its_own():
    ct = Conntrack(max_flows=3)
    flows = [new_flow(ct, client=(bytes([10, 244, 9, i]), 1000)) for i in range(3)]
    for f in flows:
        ct.reply(f, 60, 0, SYN | ACK)
    assert ct.create(TCP, C, V, B, 1) is None
    assert ct.refused_full == 1 and ct.evicted == 0 and list(ct) == flows


def test_a_full_table_evicts_a_closed_flow_first_then_the_oldest_unreplied():
    ct = Conntrack(max_flows=3)
    waiting = new_flow(ct, client=(ip("10.244.9.1"), 1000))
    done = new_flow(ct, client=(ip("10.244.9.2"), 1000))
    ct.original(done, 40, 0, RST)
    busy = new_flow(ct, client=(ip("10.244.9.3"), 1000))
    ct.reply(busy, 60, 0, SYN | ACK)
    created = ct.create(TCP, C, V, B, 1)
    assert created.evicted is done
    created = ct.create(TCP, CLIENTS[1], V, B, 2)
    assert created.evicted is waiting
    assert ct.evicted == 2 and busy in list(ct)


def test_half_open_flood_does_not_lock_out_clients():
    """A table full of SYNs nobody answers: an established client still gets its new flows."""
    cap = 2000
    ct = Conntrack(max_flows=cap)
    client = (ip("10.244.1.2"), 30000)
    first = new_flow(ct, client=client)
    ct.reply(first, 60, 0, SYN | ACK)
    for i in range(cap - 1):  # the flood: spoofed sources, SYN only
        f = new_flow(ct, client=(bytes([10, 99, i >> 8, i & 0xFF]), 5555), now=1)
        ct.original(f, 60, 1, SYN)
    assert len(ct) == cap
    for port in range(30001, 30101):  # the client's next 100 connections
        created = ct.create(TCP, (client[0], port), V, B, 2)
        assert created is not None and created.evicted is not None and not created.evicted.replied
        ct.reply(created.flow, 60, 2, SYN | ACK)
    assert len(ct) == cap and ct.refused_full == 0 and ct.evicted == 100
    assert first in list(ct)
    assert len(ct.flows(client=client[0])) == 101


def test_the_cap_holds_under_100k_distinct_flows():
    ct = Conntrack()
    start = time.perf_counter()
    for i in range(100_000):
        created = ct.create(TCP, (bytes([10, 244, i >> 16 & 0xFF, i >> 8 & 0xFF]), 1024 + (i & 0xFF)), V, B, i / 1e4)
        if created is not None:
            ct.original(created.flow, 60, i / 1e4, SYN)
            ct.reply(created.flow, 60, i / 1e4, SYN | ACK)
        assert len(ct) <= DEFAULT_MAX_FLOWS
    took = time.perf_counter() - start
    print(f"\nconntrack: 100,000 distinct established flows offered, {len(ct):,} kept "
          f"(cap {DEFAULT_MAX_FLOWS:,}), {ct.refused_full:,} refused, in {took:.2f} s")
    assert len(ct) == DEFAULT_MAX_FLOWS and ct.refused_full == 100_000 - DEFAULT_MAX_FLOWS and ct.evicted == 0
    start = time.perf_counter()
    gone = ct.expire(10 + T.tcp_established_s)
    print(f"conntrack: {len(gone):,} flows expired in {time.perf_counter() - start:.2f} s")
    assert len(gone) == DEFAULT_MAX_FLOWS and len(ct) == 0
    assert took < 10


def test_snat_ports_never_collide_on_the_reply_key():
    ct = Conntrack()
    ports = []
    for i in range(5):  # five clients on this node, each to the same local backend, all from port 40000
        port = ct.snat_port(TCP, NODE, B, preferred=40000)
        ports.append(port)
        new_flow(ct, client=(bytes([10, 244, 0, 10 + i]), 40000), snat=(NODE, port))
    assert ports == [40000, 40001, 40002, 40003, 40004]
    assert ct.snat_port(UDP, NODE, B, preferred=40000) == 40000  # another protocol: another key
    assert ct.snat_port(TCP, NODE, B2, preferred=40000) == 40000  # another backend too
    assert ct.snat_port(TCP, NODE, B) == SNAT_PORTS[0]
    with pytest.raises(ValueError, match="ask snat_port"):
        ct.create(TCP, CLIENTS[2], V, B, 0, snat=(NODE, 40002))


def test_snat_port_wraps_and_runs_out():
    ct = Conntrack(max_flows=70000)
    low, high = SNAT_PORTS
    for port in range(low, high + 1):
        new_flow(ct, proto=UDP, client=(bytes([10, 1, port >> 8, port & 0xFF]), 53), snat=(NODE, port))
    assert ct.snat_port(UDP, NODE, B, preferred=high) is None
    assert ct.snat_port(UDP, NODE, B, preferred=80) == 80  # a port outside the range, if asked for
    ct.remove(ct.flows(client=(bytes([10, 1, 4, 0]), 53))[0])  # frees 1024
    assert ct.snat_port(UDP, NODE, B, preferred=high) == low


def test_one_client_port_to_two_vips_sharing_a_backend_gets_its_source_port_rewritten():
    ct = Conntrack()
    a = new_flow(ct, proto=UDP, client=C, vip=VIPS[0], backend=B)
    b = new_flow(ct, proto=UDP, client=C, vip=VIPS[1], backend=B)
    assert a.snat is None and b.snat == (C[0], C[1] + 1)
    assert ct.lookup_reply(a.reply_key) is a and ct.lookup_reply(b.reply_key) is b


def test_listing_filters_and_flows_of_a_backend():
    ct = Conntrack()
    a = new_flow(ct, client=CLIENTS[0], backend=B, service="web")
    b = new_flow(ct, client=CLIENTS[1], backend=B2, service="web")
    c = new_flow(ct, proto=UDP, client=CLIENTS[2], vip=VIPS[1], backend=B, service="dns")
    assert list(ct) == [a, b, c]
    assert ct.flows(service="web") == [a, b]
    assert ct.flows(client=CLIENTS[0][0]) == [a, b]  # an address: any port
    assert ct.flows(client=CLIENTS[0]) == [a]
    assert ct.flows(backend=B) == [a, c] and ct.flows(backend=B[0], service="dns") == [c]
    assert ct.flows_of_backend(B) == [a, c] and ct.flows_of_backend(B, service="web") == [a]
    for f in ct.flows_of_backend(B):  # the backend failed
        assert ct.remove(f) == FlowRemoved(f)
    assert list(ct) == [b] and ct.flows_of_backend(B) == []


def test_the_heap_stays_bounded_under_closes_and_removals():
    ct = Conntrack(max_flows=10_000)
    for round_ in range(200):
        for i in range(50):
            f = new_flow(ct, client=(bytes([10, 9, round_, i]), 1000), now=round_)
            ct.reply(f, 60, round_, SYN | ACK)
            ct.original(f, 60, round_, FIN)  # shortens its life: a second entry
        for f in list(ct)[-25:]:  # half of this round's
            ct.remove(f)
        ct.expire(round_)
        assert len(ct._heap) <= 2 * len(ct) + 1024
    assert len(ct) == 25 * 120  # the other half of the last 120 rounds: closing lasts 2 min


def test_bad_calls():
    ct = Conntrack()
    with pytest.raises(ValueError, match="not protocol 1"):
        ct.create(1, C, V, B, 0)
    new_flow(ct)
    with pytest.raises(ValueError, match="tracked already"):
        ct.create(TCP, C, V, B2, 0)
    with pytest.raises(ValueError, match="max_flows"):
        Conntrack(max_flows=0)
    with pytest.raises(ValueError, match="tcp_closed_s must be positive"):
        Timeouts(tcp_closed_s=0)
