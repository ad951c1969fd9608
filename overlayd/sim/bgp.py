"""BGP EVPN in the simulator: real `Speaker`s over simulated TCP, on the fake clock.

`BgpSimulator` is a `Simulator` whose nodes each run the real speaker of
`overlayd.control.speaker` over their real `Switch` (set up as the daemon
does with a `bgp:` section: data-plane learning off, ARP/ND snooping and
suppression on, no static flood list), built from a `Config` made by
`parse_config`. Route reflectors (`overlayd.sim.reflector`) can join as BGP-only
hosts. The data plane (VXLAN datagrams between VTEPs) works as in `sim.mesh`.

    sim = BgpSimulator(seed=1, hold_time=9)
    nodes = sim.bgp_mesh(50)                      # full mesh iBGP, 1225 sessions
    sim.run_until(sim.all_established, timeout_s=30)
    nodes[0].attach(100, mac(1)); sim.send(nodes[0], 100, frame_from_mac_1)
    sim.run(for_s=1)                              # every FDB now has mac(1) behind nodes[0]

Simulated TCP, between two BGP hosts over the underlay `Link`s:

- A connection is two one-way byte streams, reliable and in order. A chunk
  written at `t` is ready at t + delay + k * `tcp_rto_s` + jitter, where k
  (retransmissions) is drawn geometric(loss) from the seeded generator;
  it arrives at max(ready, arrival of the chunk before it).
- A partition stalls a stream: the chunk due at a cut link waits, with all
  behind it, until `heal`, and arrives one delay after. If the partition
  outlasts the hold time the speakers' hold timers fire and they close;
  each close is a FIN in its stream (it reaches the other end, with
  `connection_lost`, once the stream flows again, unless that end closed
  first). Sessions come back through `connect_due` after healing.
- A connect (`Peer.connect_due`) sends a SYN: the listener `accept`s (or
  refuses: `connection_failed` one RTT later, "connection refused") and the
  connect completes (`connection_made`) one RTT after it was made. A SYN
  lost (to loss, a cut link, a crashed host) is sent again 1, 3, 7 ...
  `syn_rto_s` after the first, as TCP does, until `connect_timeout_s`
  (`connection_failed`, "connect timed out"); the SYN-ACK's losses cost
  `syn_rto_s` each.
- `stop_bgp(node)` is the daemon stopping: Cease to every peer, FINs.
  `crash(node)` is a node dying: its streams go silent without FIN, it
  answers nothing, and its peers find out from their hold timers.

After every delivery the host's speaker is polled (once per instant, like
the daemon's `kick`), its peers' `data_to_send` moved into the streams and
its `connect_due` asked; each host's one timer (`get_timer`) is kept armed
on the simulator's clock. Switch events from local traffic and aging go to
`speaker.local_events`, and every event the speaker's own table changes
produce is recorded in `fabric_log` with its time.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from overlayd.config import parse_config
from overlayd.control.peer import Peer
from overlayd.control.session import State
from overlayd.control.speaker import Speaker
from overlayd.fabric.fdb import DEFAULT_AGING_S, Source
from overlayd.sim.mesh import Link, SimNode, Simulator
from overlayd.sim.reflector import RouteReflector

FIN = None  # the end-of-stream marker in a stream's queue


@dataclass(eq=False)
class BgpHost:
    """One BGP speaker on the underlay: a node's `Speaker`, or a `RouteReflector` (node None)."""

    name: str
    address: str
    speaker: Speaker | RouteReflector
    node: SimNode | None = None
    crashed: bool = False
    stopped: bool = False
    kicked: bool = False
    timer_at: float | None = None  # the earliest timer call scheduled
    fired_at: float | None = None  # when its timer last fired


@dataclass(eq=False)
class _End:
    """One end of a simulated TCP connection, and the stream from it to the other end."""

    host: BgpHost
    peer: Peer
    conn_id: int
    open: bool
    link: Link  # the underlay from this end to the other (the Simulator's object: it sees changes)
    other: _End | None = None
    queue: deque = field(default_factory=deque)  # (ready_at, bytes or FIN) on the way to `other`
    busy: bool = False  # an arrival of the queue's head is scheduled
    stalled: bool = False  # the head is waiting for a cut link to heal
    last_at: float = 0.0  # when the previous chunk arrived (or the SYN-ACK, at first)


class BgpSimulator(Simulator):
    """A `Simulator` whose nodes speak BGP EVPN; see the module docstring.

    `hold_time`, `connect_retry`, `asn`: the defaults for every node's `bgp:`
    section. `tcp_rto_s`: the retransmission delay one lost segment costs a
    stream; `syn_rto_s`: the same for a SYN; `connect_timeout_s`: how long a
    connect into a partition takes to fail (default `connect_retry`).
    """

    def __init__(self, seed: int = 0, *, delay_s: float = 0.001, jitter_s: float = 0.0,
                 loss: float = 0.0, tick_s: float = 1.0, asn: int = 65000, hold_time: int = 9,
                 connect_retry: float = 5.0, tcp_rto_s: float = 0.2, syn_rto_s: float = 1.0,
                 connect_timeout_s: float | None = None):
        super().__init__(seed, delay_s=delay_s, jitter_s=jitter_s, loss=loss, tick_s=tick_s)
        self.asn = asn
        self.hold_time = hold_time
        self.connect_retry = connect_retry
        self.tcp_rto_s = tcp_rto_s
        self.syn_rto_s = syn_rto_s
        self.connect_timeout_s = connect_retry if connect_timeout_s is None else connect_timeout_s
        self.hosts: dict[str, BgpHost] = {}  # by address
        self.fabric_log: list[tuple[float, str, object]] = []
        """(time, node name, Switch event) for every table change a node's speaker or TAP made."""
        self._host_names: dict[str, BgpHost] = {}
        self._ends: dict[tuple[str, str, int], _End] = {}  # (host address, peer address, conn_id)
        self._stalled: defaultdict[tuple[str, str], list[_End]] = defaultdict(list)

    # -- building ----------------------------------------------------------------------

    def add_bgp_node(self, name: str, vtep: str, neighbors: Iterable[str], vnis: Iterable[int] = (100,), *,
                     hold_time: int | None = None, aging_s: float = DEFAULT_AGING_S,
                     bgp: dict | None = None) -> SimNode:
        """A node whose Switch is driven by a real Speaker peering (iBGP, AS `self.asn`) with
        `neighbors` (addresses), one network per VNI, no static flood list.

        `bgp` adds or overrides keys of the config's `bgp:` section (e.g. `mac_mobility`).
        """
        vnis = list(vnis)
        vtep = str(ipaddress.ip_address(vtep))  # as the peers' configs will spell it
        asn = self.asn
        section = {
            "asn": asn,
            "hold_time": self.hold_time if hold_time is None else hold_time,
            "connect_retry": self.connect_retry,
            "neighbors": [{"address": str(a), "asn": asn} for a in neighbors],
            **(bgp or {}),
        }
        config = parse_config({
            "node": {"name": name, "vtep": vtep, "fdb_aging": aging_s},
            "bgp": section,
            "networks": [{"name": f"net{vni}", "vni": vni, "device": f"vni{vni}"} for vni in vnis],
        })
        node = self.add_node(name, vtep, [(vni, ()) for vni in vnis], aging_s=aging_s)
        switch = node.switch
        switch.data_learning = False
        switch.neighbor_snooping = True
        switch.arp_suppression = True
        node.speaker = Speaker(config, switch, self.now)
        self._add_host(BgpHost(name, str(config.node.vtep), node.speaker, node))
        return node

    def bgp_mesh(self, count: int, vnis: Iterable[int] = (100,), *, prefix: str = "n",
                 route_reflectors: Iterable[str] = (), **kwargs) -> list[SimNode]:
        """`count` nodes (n0, n1, ... at 10.0.0.1, ...): a full iBGP mesh, or clients of
        `route_reflectors` (addresses) when given."""
        vnis = list(vnis)
        rrs = list(route_reflectors)
        base = len(self.nodes)
        vteps = [f"10.0.{(base + i) // 250}.{(base + i) % 250 + 1}" for i in range(count)]
        return [
            self.add_bgp_node(f"{prefix}{base + i}", vtep, rrs or [v for v in vteps if v != vtep], vnis, **kwargs)
            for i, vtep in enumerate(vteps)
        ]

    def add_route_reflector(self, name: str, address: str, clients: Iterable[SimNode | str], *,
                            cluster_id: str | None = None, hold_time: int | None = None) -> RouteReflector:
        """A BGP-only host reflecting between `clients` (nodes or addresses)."""
        rr = RouteReflector(
            address, self.asn, [self.address(c) if isinstance(c, SimNode) else c for c in clients], self.now,
            cluster_id=cluster_id, hold_time=self.hold_time if hold_time is None else hold_time,
            connect_retry=self.connect_retry,
        )
        self._add_host(BgpHost(name, rr.address, rr))
        return rr

    def _add_host(self, host: BgpHost) -> None:
        if host.address in self.hosts or host.name in self._host_names:
            raise ValueError(f"BGP host {host.name!r} or address {host.address} already exists")
        self.hosts[host.address] = self._host_names[host.name] = host
        self._kick(host)

    def host(self, ref: SimNode | BgpHost | str) -> BgpHost:
        """A BGP host by itself, its node, its name or its address."""
        if isinstance(ref, BgpHost):
            return ref
        if isinstance(ref, str) and ref in self._host_names:
            return self._host_names[ref]
        return self.hosts[self.address(ref)]

    def address(self, ref: SimNode | BgpHost | str) -> str:
        if isinstance(ref, BgpHost):
            return ref.address
        if isinstance(ref, str) and (ref in self.hosts or ref in self._host_names):
            return self.hosts[ref].address if ref in self.hosts else self._host_names[ref].address
        return super().address(ref)

    # -- what tests ask --------------------------------------------------------------------

    def sessions(self) -> list[tuple[str, str, State]]:
        """(host name, neighbor address, state) for every configured neighbor of every host."""
        return [(h.name, a, p.state) for h in self.hosts.values() for a, p in h.speaker.peers.items()]

    def all_established(self, *, include_crashed: bool = False) -> bool:
        """Every neighbor of every (live) host is Established."""
        def alive(h: BgpHost | None) -> bool:
            return include_crashed or h is None or not h.crashed

        return all(p.established is not None for h in self.hosts.values() if alive(h)
                   for a, p in h.speaker.peers.items() if alive(self.hosts.get(a)))

    def live_nodes(self) -> list[SimNode]:
        """The nodes whose speaker is neither crashed nor stopped."""
        return [h.node for h in self.hosts.values() if h.node is not None and not (h.crashed or h.stopped)]

    def expected_fdb(self, node: SimNode, vni: int = 100) -> dict[bytes, str]:
        """MAC -> VTEP: what every other live node advertises in `vni` (the union of announcements)."""
        want: dict[bytes, str] = {}
        for other in self.live_nodes():
            if other is not node:
                want.update((m, other.vtep) for d, m, _ in other.speaker.mobility.advertised() if d == vni)
        return want

    def fdb_converged(self, vni: int = 100) -> bool:
        """Every live node's `bgp` FDB entries in `vni` are exactly `expected_fdb`."""
        return all(bgp_fdb(n, vni) == self.expected_fdb(n, vni) for n in self.live_nodes())

    def flood_converged(self, vni: int = 100) -> bool:
        """Every live node floods `vni` to exactly the other live nodes that have it."""
        live = [n for n in self.live_nodes() if vni in n.speaker.networks]
        vteps = {n.vtep for n in live}
        return all(set(n.switch.flood.targets(vni)) == vteps - {n.vtep} for n in live)

    def converged(self, vni: int = 100) -> bool:
        return self.flood_converged(vni) and self.fdb_converged(vni)

    def run_until(self, done: Callable[[], bool], *, timeout_s: float, step_s: float = 0.05) -> float:
        """Run in steps of `step_s` until `done()`; the time it first held. AssertionError on timeout.

        What is due at this instant (a frame just sent, say) happens before the first check.
        """
        deadline = self.now + timeout_s
        self.run(until=self.now)
        while not done():
            if self.now >= deadline:
                raise AssertionError(f"not done after {timeout_s} s (now {self.now:.3f})")
            self.run(until=min(deadline, self.now + step_s))
        return self.now

    # -- node life -----------------------------------------------------------------------

    def stop_bgp(self, ref: SimNode | str) -> None:
        """The daemon stops: Cease to every peer, then FIN."""
        host = self.host(ref)
        host.stopped = True
        host.speaker.stop(self.now)
        self._kick(host)

    def crash(self, ref: SimNode | str) -> None:
        """The host dies: from now on its streams are silent (no FIN) and it answers nothing."""
        self.host(ref).crashed = True

    def set_link(self, a, b, *, both_ways: bool = True, **settings) -> None:
        super().set_link(a, b, both_ways=both_ways, **settings)
        if settings.get("up"):
            for x, y in ((a, b), (b, a)) if both_ways else ((a, b),):
                key = (self.address(x), self.address(y))
                delay = self.link(x, y).delay_s
                for end in self._stalled.pop(key, []):  # the waiting bytes go again
                    end.stalled = False
                    end.last_at = max(end.last_at, self.now + delay)
                    self._schedule_head(end)

    # -- the data plane's hooks ------------------------------------------------------------

    def send(self, node: SimNode | str, vni: int, frame: bytes):
        sent = super().send(node, vni, frame)
        src = self.node(node)
        if src.speaker is not None and src.switch.events:
            self._kick(self.host(src))
        return sent

    def _tick(self, now: float) -> None:
        super()._tick(now)
        for host in self.hosts.values():
            if host.node is not None and host.node.switch.events:
                self._kick(host)

    # -- driving the speakers --------------------------------------------------------------

    def _kick(self, host: BgpHost) -> None:
        """Something happened to `host`: service its speaker once, at this instant."""
        if not host.kicked and not host.crashed:
            host.kicked = True
            self.call_at(self.now, lambda: self._service(host))

    def _service(self, host: BgpHost) -> None:
        host.kicked = False
        if host.crashed:
            return
        now, speaker = self.now, host.speaker
        speaker.poll(now)
        switch = host.node.switch if host.node is not None else None
        while switch is not None and switch.events:
            events = switch.pop_events()
            self.fabric_log.extend((now, host.name, ev) for ev in events)
            speaker.local_events(events, now)
        for address, peer in speaker.peers.items():
            conn_id = peer.connect_due(now)
            if conn_id is not None:
                self._connect(host, peer, conn_id)
            for cid, data, close in peer.data_to_send():
                end = self._ends.get((host.address, address, cid))
                if end is None:
                    continue
                if data:
                    self._write(end, data)
                if close:
                    self._close(end)
        self._arm(host)

    def _arm(self, host: BgpHost) -> None:
        t = host.speaker.get_timer()
        if t is None:
            return
        if t <= self.now and host.fired_at == self.now:
            t = self.now + 0.001  # handled at this instant already: do not spin
            self.stats["bgp_timer_spins"] += 1
        t = max(t, self.now)
        if host.timer_at is not None and host.timer_at <= t:
            return
        host.timer_at = t
        self.call_at(t, lambda: self._on_timer(host, t))

    def _on_timer(self, host: BgpHost, t: float) -> None:
        if host.timer_at != t or host.crashed:
            return  # superseded by an earlier one, or nobody is there any more
        host.timer_at = None
        due = host.speaker.get_timer()
        if due is not None and due <= self.now:
            host.fired_at = self.now
            host.speaker.handle_timer(self.now)
        self._service(host)

    # -- simulated TCP ---------------------------------------------------------------------

    def _latency(self, link: Link, rto_s: float) -> float:
        """One way, for one segment: delay + k retransmissions (k geometric in the loss) + jitter."""
        retries = 0
        while link.loss and retries < 20 and self.rng.random() < link.loss:
            retries += 1
        jitter = self.rng.uniform(0, link.jitter_s) if link.jitter_s else 0.0
        return link.delay_s + retries * rto_s + jitter

    def _connect(self, host: BgpHost, peer: Peer, conn_id: int) -> None:
        self.stats["tcp_connects"] += 1
        self._syn_attempt(host, peer, conn_id, self.hosts.get(peer.peer), self.now, 0)

    def _syn_attempt(self, host: BgpHost, peer: Peer, conn_id: int, remote: BgpHost | None,
                     start: float, attempt: int) -> None:
        """Send SYN number `attempt` (0: the first); lost to a cut link, to loss, or to nobody there."""
        if host.crashed:
            return
        there = self.link(host.address, remote.address) if remote is not None else None
        if there is None or not there.up or there.loss and self.rng.random() < there.loss:
            self._syn_lost(host, peer, conn_id, remote, start, attempt)
            return
        jitter = self.rng.uniform(0, there.jitter_s) if there.jitter_s else 0.0
        self.call_at(self.now + there.delay_s + jitter,
                     lambda: self._syn(host, peer, conn_id, remote, start, attempt))

    def _syn_lost(self, host: BgpHost, peer: Peer, conn_id: int, remote: BgpHost | None,
                  start: float, attempt: int) -> None:
        """Retransmit the SYN 1, 3, 7, ... `syn_rto_s` after the first; give up at `connect_timeout_s`."""
        again = start + self.syn_rto_s * (2 ** (attempt + 1) - 1)
        deadline = start + self.connect_timeout_s
        if again >= deadline:
            self.call_at(max(self.now, deadline),
                         lambda: self._connect_failed(host, peer, conn_id, "connect timed out"))
        else:
            self.call_at(max(self.now, again),
                         lambda: self._syn_attempt(host, peer, conn_id, remote, start, attempt + 1))

    def _syn(self, host: BgpHost, peer: Peer, conn_id: int, remote: BgpHost, start: float, attempt: int) -> None:
        """The SYN reaches `remote`: it accepts (SYN-ACK) or refuses (RST); a dead host says nothing."""
        there, back = self.link(host.address, remote.address), self.link(remote.address, host.address)
        if remote.crashed or not there.up:
            self._syn_lost(host, peer, conn_id, remote, start, attempt)
            return
        rpeer = remote.speaker.peer_for(host.address)
        rid = rpeer.accept(self.now) if rpeer is not None else None
        synack_at = self.now + self._latency(back, self.syn_rto_s)
        if rpeer is None or rid is None:
            self.stats["tcp_refused"] += 1
            self.call_at(synack_at, lambda: self._connect_failed(host, peer, conn_id, "connection refused"))
            return
        ours = _End(host, peer, conn_id, open=False, link=there)
        theirs = _End(remote, rpeer, rid, open=True, link=back, other=ours, last_at=synack_at)
        ours.other = theirs
        self._ends[(remote.address, host.address, rid)] = theirs
        self.call_at(synack_at, lambda: self._synack(ours, start))
        self._kick(remote)

    def _synack(self, end: _End, start: float) -> None:
        host, other = end.host, end.other
        assert other is not None
        if host.crashed:
            return  # the remote end stays half open until its hold timer says otherwise
        if not other.link.up:  # the SYN-ACK is lost: both give up
            self.call_at(max(self.now, start + self.connect_timeout_s),
                         lambda: self._connect_failed(host, end.peer, end.conn_id, "connect timed out"))
            self._deliver(other, FIN, reason="connection reset")
            return
        self.stats["tcp_established"] += 1
        end.open = True
        end.last_at = self.now
        self._ends[(host.address, end.peer.peer, end.conn_id)] = end
        end.peer.connection_made(end.conn_id, self.now)
        self._kick(host)

    def _connect_failed(self, host: BgpHost, peer: Peer, conn_id: int, reason: str) -> None:
        if host.crashed:
            return
        self.stats["tcp_connect_failures"] += 1
        peer.connection_failed(conn_id, self.now, reason)
        self._kick(host)

    def _write(self, end: _End, data: bytes | None) -> None:
        ready = self.now + self._latency(end.link, self.tcp_rto_s)
        end.queue.append((ready, data))
        if not end.busy and not end.stalled:
            self._schedule_head(end)

    def _close(self, end: _End) -> None:
        """Our side closes: nothing more from the other end reaches us, a FIN goes out."""
        end.open = False
        self._ends.pop((end.host.address, end.peer.peer, end.conn_id), None)
        self._write(end, FIN)

    def _schedule_head(self, end: _End) -> None:
        end.busy = True
        at = max(end.queue[0][0], end.last_at, self.now)
        self.call_at(at, lambda: self._head_arrives(end))

    def _head_arrives(self, end: _End) -> None:
        end.busy = False
        if not end.link.up:
            end.stalled = True
            self._stalled[(end.host.address, end.other.host.address)].append(end)
            self.stats["tcp_stalls"] += 1
            return
        _, data = end.queue.popleft()
        end.last_at = self.now
        self._deliver(end.other, data)
        if end.queue and not end.busy and not end.stalled:
            self._schedule_head(end)

    def _deliver(self, end: _End, data: bytes | None, reason: str = "connection closed by the peer") -> None:
        host = end.host
        if host.crashed or not end.open:
            return  # nobody reads it any more
        if data is FIN:
            end.open = False
            self._ends.pop((host.address, end.peer.peer, end.conn_id), None)
            end.peer.connection_lost(end.conn_id, self.now, reason)
        else:
            self.stats["tcp_bytes"] += len(data)
            end.peer.data_received(end.conn_id, data, self.now)
        self._kick(host)


def announced_macs(sim: BgpSimulator, vni: int = 100) -> dict[str, set[bytes]]:
    """Node name -> the MACs its speaker advertises in `vni` (LocalMobility's view)."""
    return {
        n.name: {m for d, m, _ in n.speaker.mobility.advertised() if d == vni}
        for n in sim.nodes.values() if n.speaker is not None
    }


def bgp_fdb(node: SimNode, vni: int = 100) -> dict[bytes, str]:
    """MAC -> VTEP for the node's FDB entries that BGP placed in `vni`."""
    return {e.mac: e.vtep for e in node.switch.fdb if e.vni == vni and e.source is Source.BGP}

