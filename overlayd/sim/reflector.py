"""A minimal BGP route reflector (RFC 4456) for the simulator, without I/O.

Not a daemon feature: it exists so that `overlayd.sim.bgp` can run fifty
overlayd speakers as clients of one (or two) reflectors, the way a fleet
scales past a full mesh with GoBGP or FRR. It has no data plane and
originates nothing. Theory of operation:

- One passive `Peer` per client (it only accepts; the clients connect).
- Every path a client announces goes into a `Rib` under that client
  (its Adj-RIB-In); the RIB keeps the best path per route key.
- Each change of a best path is reflected to every other Established
  client with ORIGINATOR_ID (the originating client's router ID, unless
  the path already carries one) and our cluster ID prepended to
  CLUSTER_LIST; the next hop and everything else stay as they are. A
  client never gets its own route back; when the best path goes (or moves
  to a path from the client itself) the client gets a withdrawal of what
  it had from us.
- A path whose CLUSTER_LIST already holds our cluster ID is a loop
  (RFC 4456 8) and is treated as withdrawn.
- A client's session going down drops its paths at once, and the other
  clients get the withdrawals (or the next best path).

It is driven exactly like `overlayd.control.speaker.Speaker`: `peers`,
`peer_for`, `poll`, `get_timer`, `handle_timer`, `stop`.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Iterable
from dataclasses import replace

from overlayd.control.events import RouteRefreshReceived, SessionDown, SessionEstablished, UpdateReceived
from overlayd.control.negotiation import SessionConfig
from overlayd.control.peer import Peer
from overlayd.fabric.rib import BestPathChanged, Path, Rib
from overlayd.wire.bgp.attributes import PathAttributes
from overlayd.wire.bgp.evpn import EvpnRoute, UnknownRoute
from overlayd.wire.bgp.update import Update

ROUTES_PER_UPDATE = 32


class RouteReflector:
    """Reflects every client's best paths to all the other clients (see the module docstring).

    `stats` counts updates_received, routes_reflected, withdrawals_sent,
    loops_rejected, treated_as_withdraw.
    """

    def __init__(self, address: str, asn: int, clients: Iterable[str], now: float, *,
                 router_id: str | None = None, cluster_id: str | None = None,
                 hold_time: int = 9, connect_retry: float = 5.0):
        self.address = str(ipaddress.ip_address(address))
        self.asn = asn
        self.router_id = ipaddress.IPv4Address(router_id or self.address)
        self.cluster_id = ipaddress.IPv4Address(cluster_id or self.router_id)
        self.rib = Rib()
        self.stats: Counter[str] = Counter()
        self.peers: dict[str, Peer] = {}
        for client in clients:
            client = str(ipaddress.ip_address(client))
            cfg = SessionConfig(
                local_asn=asn, peer_asn=asn, router_id=self.router_id, peer_address=client,
                hold_time_s=hold_time, min_hold_time_s=min(3, hold_time), passive=True,
                connect_retry_s=connect_retry, connect_retry_max_s=max(60.0, connect_retry),
            )
            self.peers[client] = Peer(cfg, now)
        self._adj_out: dict[str, dict[tuple, EvpnRoute]] = {c: {} for c in self.peers}  # what each client has
        self._pending: dict[str, dict[tuple, Path | None]] = {c: {} for c in self.peers}
        self._eor: set[str] = set()
        self._stopped = False

    # -- driven like a Speaker -----------------------------------------------------

    def peer_for(self, address: str) -> Peer | None:
        return self.peers.get(str(ipaddress.ip_address(address)))

    def poll(self, now: float) -> None:
        for client, peer in self.peers.items():
            while (event := peer.next_event()) is not None:
                self._event(client, event, now)
        self._flush(now)

    def get_timer(self) -> float | None:
        times = [t for p in self.peers.values() if (t := p.get_timer()) is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for peer in self.peers.values():
            t = peer.get_timer()
            if t is not None and t <= now:
                peer.handle_timer(now)
        self.poll(now)

    def stop(self, now: float) -> None:
        self._stopped = True
        for peer in self.peers.values():
            peer.stop(now)

    # -- what the clients say ------------------------------------------------------

    def _event(self, client: str, event: object, now: float) -> None:
        match event:
            case SessionEstablished():
                self._adj_out[client] = {}
                self._pending[client] = {}
                self._send_all(client)
                self._eor.add(client)
            case RouteRefreshReceived():
                self._send_all(client)
            case SessionDown(was_established=was_established):
                self._adj_out[client] = {}
                self._pending[client] = {}
                self._eor.discard(client)
                if was_established:
                    self._reflect(self.rib.drop_peer(client, now))
            case UpdateReceived(update=update):
                self.stats["updates_received"] += 1
                self._receive(client, update, now)

    def _receive(self, client: str, update: Update, now: float) -> None:
        changes: list = []
        withdrawn = list(update.withdrawn)
        if update.treat_as_withdraw:
            self.stats["treated_as_withdraw"] += 1
            withdrawn += update.announced
        attrs = update.attributes
        if not update.treat_as_withdraw and attrs is not None:
            if self.cluster_id in attrs.cluster_list or attrs.next_hop is None:
                self.stats["loops_rejected"] += len(update.announced)
                withdrawn += update.announced
            else:
                neg = self.peers[client].negotiated
                rid = neg.remote_router_id if neg is not None else ipaddress.IPv4Address(0)
                for route in update.announced:
                    if not isinstance(route, UnknownRoute):
                        path = Path(route, attrs, client, peer_router_id=rid,
                                    peer_address=ipaddress.ip_address(client), received=now)
                        changes += self.rib.update(path, now)
        for route in withdrawn:
            if not isinstance(route, UnknownRoute):
                changes += self.rib.withdraw(client, route.key, now)
        self._reflect(changes)

    # -- reflecting ------------------------------------------------------------------

    def _send_all(self, client: str) -> None:
        pending = self._pending[client]
        for path in self.rib.bests():
            if path.peer != client:
                pending[path.key] = path

    def _reflect(self, changes: Iterable[object]) -> None:
        for ch in changes:
            if not isinstance(ch, BestPathChanged):
                continue
            for client, pending in self._pending.items():
                if self.peers[client].established is None:
                    continue
                pending[ch.key] = ch.new if ch.new is not None and ch.new.peer != client else None

    def reflected(self, path: Path) -> PathAttributes:
        """The attributes a path is reflected with (RFC 4456 8)."""
        attrs = path.attributes
        return replace(
            attrs,
            originator_id=attrs.originator_id or path.peer_router_id,
            cluster_list=(self.cluster_id, *attrs.cluster_list),
        )

    def _flush(self, now: float) -> None:
        if self._stopped:
            return
        for client, pending in self._pending.items():
            peer = self.peers[client]
            if not pending or peer.established is None:
                continue
            adj_out = self._adj_out[client]
            withdraw: list[EvpnRoute] = []
            announce: dict[PathAttributes, list[EvpnRoute]] = {}
            for key, path in pending.items():
                if path is None:
                    route = adj_out.pop(key, None)
                    if route is not None:
                        withdraw.append(route)
                else:
                    adj_out[key] = path.route
                    announce.setdefault(self.reflected(path), []).append(path.route)
            pending.clear()
            for i in range(0, len(withdraw), ROUTES_PER_UPDATE):
                peer.send_update(Update(withdrawn=tuple(withdraw[i:i + ROUTES_PER_UPDATE])), now)
                self.stats["withdrawals_sent"] += len(withdraw[i:i + ROUTES_PER_UPDATE])
            for attrs, routes in announce.items():
                for i in range(0, len(routes), ROUTES_PER_UPDATE):
                    chunk = tuple(routes[i:i + ROUTES_PER_UPDATE])
                    peer.send_update(Update(announced=chunk, attributes=attrs), now)
                    self.stats["routes_reflected"] += len(chunk)
        for client in list(self._eor):
            if self.peers[client].established is not None and not self._pending[client]:
                self.peers[client].send_update(Update(end_of_rib=True), now)
            self._eor.discard(client)
