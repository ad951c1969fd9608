"""One overlayd node (its Speaker and Switch, on a fake clock) and a BGP peer played by hand.

    n = Scripted(graceful_restart_s=30)          # node 10.0.0.1, neighbor 10.0.0.2 (passive)
    n.connect(caps=...)                          # the peer connects, OPEN + KEEPALIVE: Established
    n.send(n.announce(mac(1)))                   # UPDATE bytes from the peer (any bytes: n.send(raw))
    n.lose()                                     # the TCP connection dies under us (no NOTIFICATION)
    n.advance(5.0)                               # run the node's timers for 5 s
    n.fdb(), n.rib_keys(), n.flood(), n.stats    # what the node made of it
    n.received                                   # decoded messages the node sent the peer

The node listens passively, so every connection is one the peer opened.
"""

from __future__ import annotations

import dataclasses
import ipaddress

from overlayd.config import parse_config
from overlayd.control.routes import RouteFactory, evpn_networks
from overlayd.control.session import State
from overlayd.control.speaker import Speaker
from overlayd.dataplane.switch import Switch
from overlayd.sim.frames import mac
from overlayd.wire.bgp.messages import (
    FourOctetAs,
    GracefulRestart,
    Keepalive,
    Multiprotocol,
    Open,
    RouteRefreshCapability,
    encode_message,
)
from overlayd.wire.bgp.update import Update
from tests.unit.bgp_fakes import messages

VNI = 100
NODE = "10.0.0.1"
PEER = "10.0.0.2"
PEER_ID = ipaddress.IPv4Address(PEER)


def peer_caps(graceful_restart_s: int | None = None, restarting: bool = False,
              forwarding: bool = True) -> tuple:
    caps: tuple = (Multiprotocol(25, 70), RouteRefreshCapability(), FourOctetAs(65000))
    if graceful_restart_s is not None:
        caps += (GracefulRestart(graceful_restart_s, restarting, ((25, 70, forwarding),)),)
    return caps


class Scripted:
    def __init__(self, graceful_restart_s: int | None = None, hold_time: int = 9):
        self.now = 0.0
        bgp: dict = {"asn": 65000, "hold_time": hold_time,
                     "neighbors": [{"address": PEER, "asn": 65000, "passive": True}]}
        if graceful_restart_s is not None:
            bgp["graceful_restart"] = {"restart_time_s": graceful_restart_s}
        self.config = parse_config({
            "node": {"name": "n1", "vtep": NODE},
            "bgp": bgp,
            "networks": [{"name": "blue", "vni": VNI, "device": "blue0"}],
        })
        self.switch = Switch(4789, 300)
        self.switch.add_segment(VNI, "blue", [mac(1000)])
        self.switch.data_learning = False
        self.speaker = Speaker(self.config, self.switch, self.now)
        self.peer = self.speaker.peers[PEER]
        self.conn: int | None = None
        self.closed: list[int] = []  # connections the node closed
        self.received: list = []  # messages the node sent (UPDATEs raw: (2, body))
        peer_config = parse_config({
            "node": {"name": "n2", "vtep": PEER},
            "bgp": {"asn": 65000, "neighbors": [{"address": NODE, "asn": 65000}]},
            "networks": [{"name": "blue", "vni": VNI, "device": "blue0"}],
        })
        self.net = evpn_networks(peer_config)[VNI]
        self.factory = RouteFactory(PEER_ID, 65000)

    @property
    def stats(self):
        return self.speaker.stats[PEER]

    # -- the peer's side -------------------------------------------------------------------

    def connect(self, caps: tuple = peer_caps(), hold: int = 9) -> int:
        self.conn = self.peer.accept(self.now)
        assert self.conn is not None
        self.send(encode_message(Open(65000, hold, PEER_ID, caps)) + encode_message(Keepalive()))
        assert self.peer.state is State.ESTABLISHED, self.peer.last_error
        return self.conn

    def send(self, data: bytes | Update) -> None:
        if isinstance(data, Update):
            data = encode_message(data)
        assert self.conn is not None
        self.peer.data_received(self.conn, data, self.now)
        self.step()

    def lose(self, reason: str = "connection reset by peer") -> None:
        assert self.conn is not None
        self.peer.connection_lost(self.conn, self.now, reason)
        self.conn = None
        self.step()

    def announce(self, *macs: bytes, sequence: int = 0, **attrs) -> Update:
        routes = [self.factory.mac_ip(self.net, m, None, sequence) for m in macs]
        merged = dataclasses.replace(routes[0][1], **attrs)
        return Update(announced=tuple(r for r, _ in routes), attributes=self.factory.for_peer(merged, False))

    def imet(self) -> Update:
        route, attrs = self.factory.imet(self.net)
        return Update(announced=(route,), attributes=self.factory.for_peer(attrs, False))

    def end_of_rib(self) -> Update:
        return Update(end_of_rib=True)

    # -- the node's side -------------------------------------------------------------------

    def step(self) -> None:
        self.speaker.poll(self.now)
        for conn, data, close in self.peer.data_to_send():
            if conn == self.conn:
                self.received.extend(messages(data))
            if close:
                self.closed.append(conn)
                if conn == self.conn:
                    self.conn = None

    def advance(self, seconds: float) -> None:
        end = self.now + seconds
        while (t := self.speaker.get_timer()) is not None and t <= end:
            self.now = max(self.now, t)
            self.speaker.handle_timer(self.now)
            self.step()
        self.now = end
        self.step()

    def fdb(self) -> dict[bytes, str | None]:
        return {e.mac: e.vtep for e in self.switch.fdb}

    def rib_keys(self) -> set[tuple]:
        return {p.key for p in self.speaker.rib.paths_from(PEER)}

    def flood(self) -> list[str]:
        return list(self.switch.flood.targets(VNI))
