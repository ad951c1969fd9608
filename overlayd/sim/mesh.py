"""A whole mesh of overlayd data planes in one process, on a fake clock.

Each `SimNode` is one node's `Switch`, with simulated hosts (MAC addresses,
optionally an IPv4 address) standing for whatever hangs off its TAP devices.
The `Simulator` is the underlay between the VTEPs: one-way `Link`s that
delay, lose (with probability `loss`, drawn from the seeded generator) or
are cut (`partition`/`heal`). Time only moves in `run`, which hands queued
datagrams to the receivers' `Switch.from_vxlan` in time order and calls
every `Switch.expire` once per `tick_s`, the way the daemon's aging tick does.

    from overlayd.sim.frames import arp_request, mac

    sim = Simulator(seed=1)
    a, b, c = sim.mesh(3, vnis=[100])
    b.attach(100, mac(2), "192.168.0.2")         # answers ARP for .2
    sim.send(a, 100, arp_request(mac(1), "192.168.0.1", "192.168.0.2"))
    sim.run()                                     # until nothing is in flight
    b.delivered[100]    # [the request]; c got it too; a got b's unicast reply

Hosts with an IP answer ARP requests for it, sending the reply back through
their node's TAP. Nothing else answers anything: tests send the traffic.
ARP/ND answers a Switch gives itself (suppression, `Switch.replies`) are
written straight back to the sender's TAP (`delivered`, `stats["replies_local"]`).
No I/O and no real clock: the same seed and the same calls give the same run.

Other layers schedule their own work on the same clock with `call_at`
(`overlayd.sim.bgp` runs BGP speakers over simulated TCP this way).
"""

from __future__ import annotations

import heapq
import ipaddress
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from overlayd.dataplane.counters import Counters
from overlayd.dataplane.switch import Switch
from overlayd.fabric.fdb import DEFAULT_AGING_S, FdbEntry, Source
from overlayd.sim.frames import IPv4, arp_reply, ipv4, parse_arp
from overlayd.wire.arp import OP_REQUEST
from overlayd.wire.vxlan import VXLAN_PORT



@dataclass
class Link:
    """The underlay one way between two VTEPs."""
    delay_s: float = 0.001
    jitter_s: float = 0.0  # extra delay, uniform in [0, jitter_s): may reorder
    loss: float = 0.0  # probability that a datagram is lost
    up: bool = True  # False: partitioned, everything (also in flight) is lost


@dataclass(frozen=True, slots=True)
class Sent:
    """One frame read from a node's TAP, and what its Switch did with it."""
    id: int  # 1, 2, ... in the order of `send` calls
    time: float
    node: str  # the sender's name
    vni: int
    frame: bytes
    vteps: tuple[str, ...]  # where the VXLAN copies went; () if dropped
    flooded: bool  # replicated to the flood list (not unicast to one VTEP)


@dataclass(frozen=True, slots=True)
class Delivery:
    """An inner frame a receiving Switch wrote to its TAP."""
    time: float
    node: str  # the receiver's name
    vni: int
    frame: bytes
    sent: Sent  # the frame as it left the sender


class SimNode:
    """One overlayd node: its Switch, the hosts behind its TAPs, and what came out of them."""

    def __init__(self, name: str, vtep: str, switch: Switch, index: int):
        self.name, self.vtep, self.switch, self.index = name, vtep, switch, index
        self.hosts: defaultdict[int, dict[bytes, ipaddress.IPv4Address | None]] = defaultdict(dict)
        self.delivered: defaultdict[int, list[bytes]] = defaultdict(list)
        self.speaker = None  # its BGP Speaker, when overlayd.sim.bgp runs one

    def __repr__(self) -> str:
        return f"SimNode({self.name!r}, {self.vtep!r})"

    @property
    def counters(self) -> Counters:
        return self.switch.counters

    def tap_mac(self, vni: int) -> bytes:
        """The MAC of this node's own TAP device on `vni` (frames from it are loops)."""
        return b"\x0a" + self.index.to_bytes(2, "big") + vni.to_bytes(3, "big")

    def attach(self, vni: int, host_mac: bytes, ip: IPv4 | None = None) -> None:
        """Put a host behind this node's TAP on `vni`; with an IP it answers ARP for it."""
        self.hosts[vni][host_mac] = None if ip is None else ipv4(ip)

    def detach(self, vni: int, host_mac: bytes) -> None:
        del self.hosts[vni][host_mac]

    def fdb(self, vni: int, host_mac: bytes) -> FdbEntry | None:
        return self.switch.fdb.get(vni, host_mac)


class Simulator:
    """The nodes, the underlay between them, the fake clock `now` and the seeded `rng`."""

    def __init__(self, seed: int = 0, *, delay_s: float = 0.001, jitter_s: float = 0.0,
                 loss: float = 0.0, tick_s: float = 1.0):
        self.seed = seed
        self.rng = random.Random(seed)
        self.now = 0.0
        self.tick_s = tick_s
        self.default_link = Link(delay_s, jitter_s, loss)
        self.nodes: dict[str, SimNode] = {}
        self.sent: list[Sent] = []
        self.deliveries: list[Delivery] = []
        self.stats: Counter[str] = Counter()
        """datagrams_sent, _arrived, _lost, _partitioned, _unroutable; frames_delivered."""
        self._by_vtep: dict[str, SimNode] = {}
        self._links: dict[tuple[str, str], Link] = {}
        self._queue: list[tuple[float, int, SimNode, SimNode, bytes, Sent]] = []
        self._calls: list[tuple[float, int, Callable[[], object]]] = []
        self._seq = 0
        self._ticks = 0

    def add_node(self, name: str, vtep: str, networks: Iterable[tuple[int, Iterable[str]]] = (), *,
                 aging_s: float = DEFAULT_AGING_S, vxlan_port: int = VXLAN_PORT) -> SimNode:
        """A node with one segment per (VNI, static flood list), set up as the daemon does."""
        if name in self.nodes or vtep in self._by_vtep:
            raise ValueError(f"node {name!r} or VTEP {vtep} already exists")
        node = SimNode(name, vtep, Switch(vxlan_port, aging_s), len(self.nodes))
        for vni, vteps in networks:
            node.switch.add_segment(vni, f"vni{vni}", own_macs=[node.tap_mac(vni)])
            for remote in vteps:
                node.switch.add_flood_vtep(vni, remote, Source.STATIC)
        node.switch.pop_events()
        self.nodes[name] = self._by_vtep[vtep] = node
        return node

    def mesh(self, count: int, vnis: Iterable[int] = (100,), *, prefix: str = "n",
             aging_s: float = DEFAULT_AGING_S) -> list[SimNode]:
        """`count` nodes (n0, n1, ... at 10.0.0.1, ...) each flooding every VNI to all the others."""
        base = len(self.nodes)
        vteps = [f"10.0.{(base + i) // 250}.{(base + i) % 250 + 1}" for i in range(count)]
        return [
            self.add_node(f"{prefix}{base + i}", vtep,
                          [(vni, [v for v in vteps if v != vtep]) for vni in vnis], aging_s=aging_s)
            for i, vtep in enumerate(vteps)
        ]

    def node(self, ref: SimNode | str) -> SimNode:
        """A node by itself, its name or its VTEP."""
        return ref if isinstance(ref, SimNode) else self.nodes.get(ref) or self._by_vtep[ref]

    def where(self, vni: int, host_mac: bytes) -> SimNode | None:
        """The node a host is attached to."""
        return next((n for n in self.nodes.values() if host_mac in n.hosts.get(vni, ())), None)

    def address(self, ref: SimNode | str) -> str:
        """The underlay address of a node (by itself, its name or its VTEP)."""
        return self.node(ref).vtep

    def link(self, a: SimNode | str, b: SimNode | str) -> Link:
        """The one-way link from `a` to `b` (a copy of `default_link` until changed)."""
        key = (self.address(a), self.address(b))
        if key not in self._links:
            self._links[key] = replace(self.default_link)
        return self._links[key]

    def set_link(self, a: SimNode | str, b: SimNode | str, *, both_ways: bool = True, **settings) -> None:
        """Change `delay_s`, `jitter_s`, `loss` or `up` of a -> b (and b -> a)."""
        for x, y in ((a, b), (b, a)) if both_ways else ((a, b),):
            link = self.link(x, y)
            for key, value in settings.items():
                if not hasattr(link, key):
                    raise TypeError(f"Link has no setting {key!r}")
                setattr(link, key, value)

    def partition(self, a: SimNode | str, b: SimNode | str) -> None:
        """Cut a <-> b: datagrams sent, and those in flight, are lost until `heal`."""
        self.set_link(a, b, up=False)

    def heal(self, a: SimNode | str, b: SimNode | str) -> None:
        self.set_link(a, b, up=True)

    def send(self, node: SimNode | str, vni: int, frame: bytes) -> Sent:
        """`frame` read from `node`'s TAP on `vni`: run the Switch and put its datagrams on the wire."""
        src = self.node(node)
        floods = src.counters.tx_flood_frames
        header, dests, _ = src.switch.from_tap(vni, frame, self.now) or (b"", (), 0)
        sent = Sent(len(self.sent) + 1, self.now, src.name, vni, bytes(frame),
                    tuple(v for v, _ in dests), src.counters.tx_flood_frames != floods)
        self.sent.append(sent)
        for reply_vni, reply in src.switch.pop_replies():  # answered here (ARP/ND suppression)
            self.stats["replies_local"] += 1
            src.delivered[reply_vni].append(reply)
        for vtep, port in dests:
            self._transmit(src, vtep, port, header + sent.frame, sent)
        return sent

    def _transmit(self, src: SimNode, vtep: str, port: int, data: bytes, sent: Sent) -> None:
        self.stats["datagrams_sent"] += 1
        dst = self._by_vtep.get(vtep)
        if dst is None or dst.switch.vxlan_port != port:
            self.stats["datagrams_unroutable"] += 1
            return
        link = self.link(src, dst)
        if not link.up:
            self.stats["datagrams_partitioned"] += 1
            return
        if link.loss and self.rng.random() < link.loss:
            self.stats["datagrams_lost"] += 1
            return
        at = self.now + link.delay_s + (self.rng.uniform(0, link.jitter_s) if link.jitter_s else 0.0)
        self._seq += 1
        heapq.heappush(self._queue, (at, self._seq, src, dst, data, sent))

    def in_flight(self) -> int:
        """Datagrams sent and not yet arrived (or dropped on arrival)."""
        return len(self._queue)

    def call_at(self, at: float, fn: Callable[[], object]) -> None:
        """Call `fn()` when the clock reaches `at` (not before `now`); ties run in the order scheduled."""
        if at < self.now:
            raise ValueError(f"cannot schedule at {at}, before now ({self.now})")
        self._seq += 1
        heapq.heappush(self._calls, (at, self._seq, fn))

    def run(self, until: float | None = None, *, for_s: float | None = None) -> None:
        """Advance time to `until` (or by `for_s`); with neither, until nothing is in flight.

        Datagrams arrive and `call_at` calls run in time order (ties: in
        the order sent or scheduled); an aging tick at the same instant
        comes after them. Without `until`, calls run only while datagrams
        are in flight (a BGP simulation always has timers pending: give it
        `until` or `for_s`).
        """
        if for_s is not None:
            until = self.now + for_s
        if until is not None and until < self.now:
            raise ValueError(f"cannot run back to {until} from {self.now}")
        queue, calls = self._queue, self._calls
        while queue or until is not None:
            tick = (self._ticks + 1) * self.tick_s
            at = tick
            if queue and queue[0][0] <= at:
                at = queue[0][0]
            if calls and calls[0][0] <= at:
                at = calls[0][0]
            if until is not None and at > until:
                break
            self.now = at
            arrival = queue[0] if queue and queue[0][0] == at else None
            call = calls[0] if calls and calls[0][0] == at else None
            if arrival is not None and (call is None or arrival[1] < call[1]):
                self._arrive(*heapq.heappop(queue)[2:])
            elif call is not None:
                heapq.heappop(calls)[2]()
            else:
                self._ticks += 1
                self._tick(at)
        if until is not None:
            self.now = until

    def _tick(self, now: float) -> None:
        """The aging tick of every node."""
        for node in self.nodes.values():
            node.switch.expire(now)

    def _arrive(self, src: SimNode, dst: SimNode, data: bytes, sent: Sent) -> None:
        if not self.link(src, dst).up:
            self.stats["datagrams_partitioned"] += 1
            return
        self.stats["datagrams_arrived"] += 1
        got = dst.switch.from_vxlan(src.vtep, data, self.now)
        if got is None:
            return  # the receiver's counters say why
        vni, frame = got[0], bytes(got[1])
        self.stats["frames_delivered"] += 1
        dst.delivered[vni].append(frame)
        self.deliveries.append(Delivery(self.now, dst.name, vni, frame, sent))
        arp = parse_arp(frame)
        if arp is not None and arp.op == OP_REQUEST:
            for host_mac, ip in list(dst.hosts.get(vni, {}).items()):
                if ip == arp.target_ip and host_mac != arp.sender_mac:
                    self.send(dst, vni, arp_reply(host_mac, ip, arp.sender_mac, arp.sender_ip))

    def counters(self) -> dict[str, dict[str, int]]:
        """Every node's Switch counters, by node name."""
        return {name: node.counters.as_dict() for name, node in self.nodes.items()}

    def totals(self) -> Counter[str]:
        """The Switch counters summed over all nodes."""
        return sum((Counter(n.counters.as_dict()) for n in self.nodes.values()), Counter())
