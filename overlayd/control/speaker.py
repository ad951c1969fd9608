"""The BGP speaker of one node (EVPN, and IPv4 / IPv6 unicast), without I/O.

It owns one `Peer` per configured neighbor, the RIB, and the mobility state
of our own MACs, and it keeps the data plane's tables in step with them
through a `Fabric` (the Switch). Theory of operation:

- Export. Each network announces a type-3 (IMET) route for our VTEP. Each
  MAC the Switch learns on a TAP becomes a type-2 route (plus one per IP
  that ARP/ND snooping bound to it), with the MAC mobility sequence that
  `LocalMobility` decides. Our routes go into the RIB as LOCAL paths (so
  mobility sees them compete) and to every Established peer.
- Import. Every path received goes into the RIB. Changes of the best path
  drive the fabric: type-3 -> the network's flood list, the per-MAC winner
  of type-2 routes -> the FDB (source `bgp`), type-2 routes with an IP ->
  ARP/ND bindings (for suppression). A path maps to a network by route
  target; paths that name none stay in the RIB, unused.
- Unicast (see routes.py). With `routing:`, our subnets also go out as
  IPv4 / IPv6 unicast routes; received unicast paths go into the RIB, and
  the best one of each prefix that is not ours into `unicast_routes()`,
  whose `unicast_version` tells a kernel planner when to plan again.
- Families. Each neighbor carries the families of its `families` config
  (all of them negotiated, or no session). A peer gets only routes of its
  families, and an End-of-RIB for each after the initial table.
- Peer down: all its paths leave the RIB at once, and with them its MACs
  and flood list entries.
- Max-prefix (prefix_limit.py): a route that would be one more in a peer's
  Adj-RIB-In than its `max_prefixes` allows is refused, and with `action:
  teardown` the session closes with Cease/1 and stays Idle for `restart_s`.
- Graceful restart (RFC 4724, only with `bgp.graceful_restart`). Helper: a
  peer that advertised the capability and whose connection ends without a
  NOTIFICATION either way (closed, reset, or replaced by its new OPEN) keeps
  its paths of the families it listed, marked stale, so forwarding goes on.
  A stale path the peer announces again is fresh; when the peer sends
  End-of-RIB for a family, or its restart time has passed since the session
  went down, the stale paths left are withdrawn. A new OPEN without the
  capability, or without the F bit for a family, withdraws that family's
  stale paths at once (4.2). Restarting side: every start may be a restart
  (nothing tells a first start from a crash), so the OPENs carry the R bit
  until End-of-RIB has gone to that peer; the F bit is 0 unless the I/O side
  says the kernel kept forwarding across the restart (`preserve_forwarding`).

The I/O side drives it like this:

    speaker.peers[address]            # connect/accept/data/timers on a Peer (see peer.py)
    speaker.peer_for(address)         # the Peer an inbound connection from `address` belongs to
    speaker.accept(address, now)      # an inbound connection: (Peer, conn_id), or why it is refused
    speaker.local_events(events, now) # what the Switch learned (Switch.pop_events())
    speaker.poll(now)                 # after any of the above: process peer events, send UPDATEs
    speaker.get_timer(), speaker.handle_timer(now)
    speaker.stop(now)                 # Cease to every peer

and a kernel planner reads `speaker.unicast_routes()` (prefix -> next hop) again
whenever `speaker.unicast_version` has changed.
"""

from __future__ import annotations

import ipaddress
import itertools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from overlayd.config import Config, NeighborConfig
from overlayd.control.events import (
    EndOfRibReceived,
    RouteRefreshReceived,
    SessionDown,
    SessionEstablished,
    UpdateReceived,
)
from overlayd.control.hub import EventHub, route_event
from overlayd.control.negotiation import SessionConfig, families_named
from overlayd.control.peer import Peer
from overlayd.control.prefix_limit import PrefixLimit, Verdict
from overlayd.control.routed import RoutedSubnets
from overlayd.control.routes import Importer, RouteFactory, UnicastRoutes, advertisable_ip, evpn_networks
from overlayd.fabric.fdb import MacLearned, MacMoved, MacRemoved, Source
from overlayd.fabric.flaps import ROUTE_FLAP_CHANGES, SESSION_FLAP_DOWNS, FlapLog
from overlayd.fabric.mobility import (
    LocalMacAdvertised,
    LocalMacWithdrawn,
    LocalMobility,
    MacDuplicateDetected,
    MacUnfrozen,
    StickyMacConflict,
)
from overlayd.fabric.neighbors import NeighborLearned, NeighborMoved, NeighborRemoved
from overlayd.fabric.prefixes import PrefixTable
from overlayd.fabric.rib import LOCAL, BestPathChanged, MacLocationChanged, Path, Rib
from overlayd.wire.bgp import errors as E
from overlayd.wire.bgp.attributes import PathAttributes
from overlayd.wire.bgp.errors import CEASE_ADMIN_RESET
from overlayd.wire.bgp.evpn import ImetRoute, IpAddress, IpNetwork, MacIpRoute, PrefixRoute, UnknownRoute
from overlayd.wire.bgp.messages import GracefulRestart
from overlayd.wire.bgp.unicast import UnicastRoute
from overlayd.wire.bgp.update import Family, Route, Update, family_name, route_family
from overlayd.wire.ethernet import is_multicast, mac_str

log = logging.getLogger("overlayd.bgp")

ETHERNET_TAG_MAX = (1 << 24) - 1  # with VXLAN the Ethernet tag is 0 or a VNI (RFC 8365 5.1.3)
ZERO_MAC = bytes(6)
MAX_PENDING_CONNECTIONS = 64
"""TCP connections in the OPEN exchange (not yet Established), all neighbors together: an inbound
one past it is closed at once. Each neighbor has at most two (one each way: a newer inbound one
replaces an older one), and strangers are refused before any state, so it binds past 32 neighbors."""
ROUTES_PER_UPDATE = 32  # type-2 NLRI with an IPv6 address are 61 octets: 32 fit in 4096
BYTES_PER_ROUTE = 128  # a generous size of one route in an UPDATE, to spend a session's send_room


class Fabric(Protocol):
    """What the speaker changes in the data plane (the Switch implements it)."""

    def install_mac(self, vni: int, mac: bytes, vtep: str, source: Source, now: float) -> None: ...
    def withdraw_mac(self, vni: int, mac: bytes, source: Source) -> None: ...
    def add_flood_vtep(self, vni: int, vtep: str, source: Source) -> None: ...
    def remove_flood_vtep(self, vni: int, vtep: str, source: Source) -> None: ...
    def install_neighbor(self, vni: int, ip, mac: bytes, source: Source, now: float) -> None: ...
    def withdraw_neighbor(self, vni: int, ip, mac: bytes | None, source: Source) -> None: ...


@dataclass
class PeerStats:
    """What `overlayctl peers` shows beyond the session state."""

    asn: int
    updates_received: int = 0
    treated_as_withdraw: int = 0
    attribute_errors: int = 0
    routes_rejected: int = 0  # loops (our AS, our ORIGINATOR_ID), no next hop, VTEP of the other family
    graceful_restart_s: int | None = None  # the restart time in the peer's last OPEN (None: no capability)
    graceful_restarts: int = 0  # sessions that went down with its paths kept as stale (helper)
    stale_removed: int = 0  # stale paths withdrawn by End-of-RIB, the restart time, or an F bit of 0
    unknown_routes: int = 0  # EVPN routes of a type we do not speak, discarded (RFC 7606 5.4)
    session_resets: int = 0  # sessions we reset for a malformed message (NOTIFICATION 1/x or 3/x sent)
    flaps: int = 0  # Established sessions that went down, for any reason
    last_error: str = ""
    established_count: int = 0  # sessions that reached Established since the daemon started
    end_of_rib: set[Family] = field(default_factory=set)  # the families it sent End-of-RIB for
    adj_out: dict[tuple, Path] = field(default_factory=dict)  # what the peer has from us


class Speaker:
    def __init__(self, config: Config, fabric: Fabric, now: float, prefixes: PrefixTable | None = None,
                 events: EventHub | None = None):
        assert config.bgp is not None
        bgp = config.bgp
        self.config = config
        self.asn = bgp.asn
        self.router_id = config.router_id
        self.vtep = config.node.vtep
        self.fabric = fabric
        self.events = events if events is not None else EventHub()  # what it tells the log and the watchers
        self.networks = evpn_networks(config)
        self.routed: RoutedSubnets | None = None
        if config.routing is not None:
            self.routed = RoutedSubnets(config, prefixes if prefixes is not None else PrefixTable(), now)
        self.importer = Importer(
            self.networks, (self.routed.route_target, self.routed.vni) if self.routed else None
        )
        self.factory = RouteFactory(self.vtep, self.asn)
        self.rib = Rib(domain_of=self.importer.domain_of)
        assert self.rib.macs is not None
        mm = bgp.mac_mobility
        self.mobility = LocalMobility(
            self.rib.macs, max_moves=mm.max_moves, window_s=mm.window, freeze_s=mm.freeze
        )
        self.alarms: list[str] = []
        self.route_flaps = FlapLog(ROUTE_FLAP_CHANGES)  # best-path changes, for `overlayctl doctor`
        self.session_flaps = FlapLog(SESSION_FLAP_DOWNS)  # Established sessions that went down
        self.peers: dict[str, Peer] = {}
        self.stats: dict[str, PeerStats] = {}
        self.prefix_limits: dict[str, PrefixLimit] = {}  # max-prefix per peer (prefix_limit.py)
        self.unicast = UnicastRoutes(self.vtep, families_named([f for nb in bgp.neighbors for f in nb.families]))
        gr = bgp.graceful_restart
        self.restart_time_s: int | None = gr.restart_time_s if gr is not None else None
        self.forwarding_preserved = False  # our OPENs' F bit (preserve_forwarding)
        self._local_ips: dict[tuple[int, bytes], set] = {}  # (VNI, MAC) -> snooped IPs
        # (VNI, IP) -> route key -> MAC: the remote MAC/IP best paths binding an IP, latest last.
        # Each VTEP announces with its own RD, so after a move two keys bind the same IP for a
        # while; the ARP/ND binding goes only with the last of them.
        self._ip_claims: dict[tuple[int, object], dict[tuple, bytes]] = {}
        self._originated: dict[tuple, Path] = {}  # our routes, by key
        self._pending: dict[str, dict[tuple, Path | None]] = {}  # per peer: to announce / None: withdraw
        self._eor: set[str] = set()  # peers that get End-of-RIB after their next flush
        self._stale: dict[str, dict[tuple, Family]] = {}  # per peer: its stale paths' keys -> family
        self._stale_until: dict[str, float] = {}  # per peer: when its stale paths go (restart time)
        self._gr_families: dict[str, set[Family]] = {}  # per peer: the families its capability listed
        self._stopped = False
        self._moving = False
        self.max_pending_connections = MAX_PENDING_CONNECTIONS
        self.refused_pending = 0  # inbound connections closed because of that cap
        self.subnet_moves: list = []  # SubnetMoved, for the daemon to re-address the device
        for nb in bgp.neighbors:
            self.add_neighbor(nb, now)
        for net in self.networks.values():
            route, attrs = self.factory.imet(net)
            self._originate(route, attrs, now)
        if self.routed is not None:
            for route, attrs in self._subnet_routes():
                self._originate(route, attrs, now)

    # -- what the kernel planner reads ----------------------------------------------

    def unicast_routes(self) -> dict[IpNetwork, IpAddress]:
        """Prefix -> next hop: the best learned unicast path of each prefix (ours left out)."""
        return dict(self.unicast.routes)

    @property
    def unicast_version(self) -> int:
        """Increases whenever `unicast_routes()` changes."""
        return self.unicast.version

    # -- inputs from the I/O side ------------------------------------------------

    def peer_for(self, address: str) -> Peer | None:
        return self.peers.get(str(ipaddress.ip_address(address.split("%")[0])))

    def pending_connections(self) -> int:
        """Connections in the OPEN exchange, all neighbors together."""
        return sum(p.pending for p in self.peers.values())

    def accept(self, address: str, now: float) -> tuple[Peer, int] | str:
        """A TCP connection from `address` came in: its (Peer, conn_id), or why it must be closed."""
        peer = self.peer_for(address)
        if peer is None:
            return "not a configured neighbor"
        if self.pending_connections() >= self.max_pending_connections:
            self.refused_pending += 1
            return f"{self.max_pending_connections} connections are in the OPEN exchange already (the cap)"
        conn_id = peer.accept(now)
        return (peer, conn_id) if conn_id is not None else "not accepting now"

    def local_events(self, events: Iterable[object], now: float) -> None:
        """Feed what the Switch learned or forgot locally (its `pop_events()`)."""
        for ev in events:
            match ev:
                case MacLearned(vni, mac, None, Source.LOCAL) | MacMoved(vni, mac, _, _, None, Source.LOCAL):
                    self._mobility(self.mobility.learned(vni, mac, now), now)
                case MacRemoved(vni, mac, None, Source.LOCAL, _) | MacMoved(vni, mac, None, Source.LOCAL, _, _):
                    self._mobility(self.mobility.gone(vni, mac, now), now)
                case NeighborLearned(vni, ip, mac, Source.LOCAL):
                    self._bind_local(vni, ip, mac, now)
                case NeighborMoved(vni, ip, old_mac, mac, Source.LOCAL):
                    self._unbind_local(vni, ip, old_mac, now)
                    self._bind_local(vni, ip, mac, now)
                case NeighborRemoved(vni, ip, mac, Source.LOCAL, _):
                    self._unbind_local(vni, ip, mac, now)
        self._flush(now)

    def poll(self, now: float) -> None:
        """Process every event the peers have queued, then send what changed."""
        for address, peer in self.peers.items():
            while (event := peer.next_event()) is not None:
                self._peer_event(address, event, now)
        self._flush(now)

    def get_timer(self) -> float | None:
        times = [t for p in self.peers.values() if (t := p.get_timer()) is not None]
        if (t := self.mobility.deadline()) is not None:
            times.append(t)
        times += [lim.idle_until for lim in self.prefix_limits.values() if lim.idle_until is not None]
        times.extend(self._stale_until.values())
        return min(times) if times else None

    def handle_timer(self, now: float) -> None:
        for peer in self.peers.values():
            t = peer.get_timer()
            if t is not None and t <= now:
                peer.handle_timer(now)
        for address, limit in self.prefix_limits.items():
            if limit.restart_due(now) and not self._stopped:  # idle after a max-prefix teardown: over
                log.info("peer %s: restarting after the max-prefix idle time", address)
                self.peers[address].start(now)
        self._mobility(self.mobility.expire(now), now)
        for address, until in list(self._stale_until.items()):
            if until <= now:
                self._sweep_stale(address, None, now, "its restart time passed")
        self.poll(now)

    def backlog(self) -> bool:
        """Some route changes wait for a connection's room (flush again once it has some)."""
        return any(pending and self.peers[a].established is not None and self.peers[a].send_room > 0
                   for a, pending in self._pending.items())

    def stale_keys(self, address: str) -> set[tuple]:
        """The keys of `address`'s paths kept as stale across its restart (graceful restart)."""
        return set(self._stale.get(address, ()))

    def stop(self, now: float) -> None:
        """Close every session with Cease / administrative shutdown."""
        self._stopped = True
        for peer in self.peers.values():
            peer.stop(now)

    # -- the operator's `overlayctl clear` ---------------------------------------------------

    def clear_duplicate(self, vni: int, mac: bytes, now: float) -> bool:
        """Lift the freeze on a duplicate MAC (the alarm in status); if the MAC is still here it is
        advertised again at once. False: it was not frozen."""
        if not self.mobility.is_frozen(vni, mac):
            return False
        self._mobility(self.mobility.unfreeze(vni, mac, now), now)
        self._flush(now)
        return True

    def reset_peer(self, address: str, now: float) -> bool:
        """Reset the session with a neighbor: Cease / administrative reset (RFC 4486), its routes
        withdrawn, then connect again as after any failure. False: no such neighbor."""
        peer = self.peer_for(address)
        if peer is None or self._stopped:
            return False
        peer.stop(now, "reset by operator", CEASE_ADMIN_RESET)
        peer.start(now)
        self.poll(now)
        return True

    # -- a reloaded config: neighbors and networks come and go (config.reload plans it) ----

    def add_neighbor(self, nb: NeighborConfig, now: float) -> Peer:
        """A new Peer for `nb` (its session starts as the I/O side connects or accepts)."""
        bgp = self.config.bgp
        assert bgp is not None
        address = str(nb.address)
        cfg = SessionConfig(
            local_asn=self.asn,
            peer_asn=nb.asn,
            router_id=self.router_id,
            peer_address=address,
            hold_time_s=bgp.hold_time,
            min_hold_time_s=min(3, bgp.hold_time),
            passive=nb.passive,
            connect_retry_s=bgp.connect_retry,
            connect_retry_max_s=max(60.0, bgp.connect_retry),
            families=families_named(nb.families),
            graceful_restart_time_s=self.restart_time_s,
            forwarding_preserved=self.forwarding_preserved,
        )
        peer = self.peers[address] = Peer(cfg, now)
        peer.restarting = self.restart_time_s is not None  # until our End-of-RIB
        self.stats[address] = PeerStats(nb.asn)
        self.prefix_limits[address] = PrefixLimit.from_config(nb.max_prefixes)
        return peer

    def preserve_forwarding(self) -> None:
        """Our forwarding state survived our restart (the kernel carries every packet and kept
        what an earlier run programmed): our OPENs set the graceful restart F bit, so helpers
        keep our routes (stale) until our End-of-RIB. Call before the sessions start."""
        self.forwarding_preserved = True
        for peer in self.peers.values():
            peer.preserve_forwarding()

    def remove_neighbor(self, address: str, now: float) -> Peer | None:
        """Cease `address`'s session and forget it: its paths leave the RIB and the fabric now
        (no graceful restart for a peer that is gone). Returns the Peer, whose last bytes (the
        NOTIFICATION) the I/O side still sends."""
        peer = self.peers.get(address)
        if peer is None:
            return None
        peer.stop(now)
        while (event := peer.next_event()) is not None:  # its SessionDown, while it is still ours
            self._peer_event(address, event, now)
        self._stale.pop(address, None)
        self._stale_until.pop(address, None)
        self._import(self.rib.drop_peer(address, now), now)  # kept as stale, or never Established
        for table in (self.peers, self.stats, self._pending, self._gr_families, self.prefix_limits):
            table.pop(address, None)
        self._eor.discard(address)
        self.events.emit("peer_removed", f"peer {address}: removed from the config", peer=address)
        self._flush(now)
        return peer

    def add_network(self, config: Config, vni: int, now: float) -> None:
        """Network `vni` of the reloaded `config` joins: its type-3 route goes out, and what the
        RIB already holds for it (flood list members, MACs, IP bindings) reaches the fabric."""
        self._reimport(config, now)
        self._replay(vni, True, now)
        route, attrs = self.factory.imet(self.networks[vni])
        self._originate(route, attrs, now)
        self._flush(now)

    def remove_network(self, config: Config, vni: int, now: float) -> None:
        """Network `vni` leaves (`config`, the reloaded one, no longer has it): our routes for it
        are withdrawn, and its flood list, MACs and bindings leave the fabric."""
        if vni not in self.networks:
            return
        for key in [k for k, p in self._originated.items()
                    if isinstance(p.route, (ImetRoute, MacIpRoute)) and self.importer.domain_of(p) == vni]:
            self._retract(key, now)
        self._replay(vni, False, now)
        self._local_ips = {k: ips for k, ips in self._local_ips.items() if k[0] != vni}
        self._reimport(config, now)
        self._flush(now)

    def _reimport(self, config: Config, now: float) -> None:
        self.config = config
        self.networks = evpn_networks(config)
        routed = self.routed
        self.importer = Importer(self.networks, (routed.route_target, routed.vni) if routed else None)
        self._import(self.rib.set_domain_of(self.importer.domain_of), now)

    def _replay(self, vni: int, appear: bool, now: float) -> None:
        """Make the fabric follow the RIB's best type-2 and type-3 paths of network `vni`: as if
        each had just arrived (`appear`) or just left."""
        changes = []
        for path in self.rib.bests():
            if path.is_local or not isinstance(path.route, (ImetRoute, MacIpRoute)):
                continue
            if self.importer.domain_of(path) == vni:
                changes.append(BestPathChanged(path.key, None, path) if appear else BestPathChanged(path.key, path, None))
        self._import(changes, now)

    # -- peer events -----------------------------------------------------------------

    def _peer_event(self, address: str, event: object, now: float) -> None:
        stats = self.stats[address]
        match event:
            case SessionEstablished():
                self.events.emit("peer_up", f"peer {address}: established (AS {event.remote_asn}, router ID "
                                            f"{event.remote_router_id}, hold time {event.hold_time_s}s)",
                                 peer=address, asn=event.remote_asn, router_id=str(event.remote_router_id),
                                 hold_time_s=event.hold_time_s)
                stats.adj_out = {}
                stats.end_of_rib = set()
                stats.last_error = ""
                stats.established_count += 1
                cap = next((c for c in event.capabilities if isinstance(c, GracefulRestart)), None)
                stats.graceful_restart_s = cap.restart_time_s if cap is not None else None
                self._gr_families[address] = {(afi, safi) for afi, safi, _ in cap.families} if cap else set()
                for family in sorted({f for f in self._stale.get(address, {}).values()}):
                    if cap is None or (*family, True) not in cap.families:  # RFC 4724 4.2
                        self._sweep_stale(address, family, now, "its new OPEN does not say forwarding was kept")
                pending = self._pending.setdefault(address, {})
                for key, path in self._originated.items():
                    pending[key] = path
                self._eor.add(address)
            case SessionDown():
                stats.last_error = event.reason
                if event.notification_sent is not None and event.notification_sent[0] in (1, 3):
                    stats.session_resets += 1  # message header or UPDATE message error
                if not event.was_established and self.peers[address].established is not None:
                    # Another connection to this peer failed (a crossing or late connect the
                    # peer closed): the Established session carries on with what it has
                    # from us, so its Adj-RIB-Out and queued updates stay.
                    log.info("peer %s: extra connection closed: %s", address, event.reason)
                    return
                stats.adj_out = {}
                self._pending.pop(address, None)
                self._eor.discard(address)
                if event.was_established:
                    stats.flaps += 1
                    self.session_flaps.record(address, now, event.reason)
                if event.was_established and self._helps(address, event):
                    self._keep_stale(address, event.reason, now)
                elif event.was_established:
                    self.events.emit("peer_down", f"peer {address}: down: {event.reason}", peer=address,
                                     reason=event.reason, stale_paths=0)
                    self._stale.pop(address, None)
                    self._stale_until.pop(address, None)
                    self._import(self.rib.drop_peer(address, now), now)
                else:
                    self.events.emit("peer_attempt_failed", f"peer {address}: session attempt failed: {event.reason}",
                                     peer=address, reason=event.reason)
            case UpdateReceived(update=update):
                stats.updates_received += 1
                self._receive(address, update, now)
            case EndOfRibReceived(afi=afi, safi=safi):
                stats.end_of_rib.add((afi, safi))
                log.info("peer %s: end of RIB (%s)", address, family_name((afi, safi)))
                self._sweep_stale(address, (afi, safi), now, "End-of-RIB")
            case RouteRefreshReceived(afi=afi, safi=safi):  # RFC 2918 4: send that family's routes again
                pending = self._pending.setdefault(address, {})
                for key, path in self._originated.items():
                    if route_family(path.route) == (afi, safi):
                        stats.adj_out.pop(key, None)
                        pending[key] = path

    # -- graceful restart, the helper's side (RFC 4724 4.2) ------------------------------

    def _helps(self, address: str, event: SessionDown) -> bool:
        """Keep the peer's paths across its restart? Both sides advertised the capability and
        the connection ended without a NOTIFICATION (RFC 4724: a NOTIFICATION ends it all)."""
        restart_s = self.stats[address].graceful_restart_s
        return (self.restart_time_s is not None and bool(restart_s)
                and event.notification_sent is None and event.notification_received is None)

    def _keep_stale(self, address: str, reason: str, now: float) -> None:
        stats = self.stats[address]
        assert stats.graceful_restart_s
        negotiated = self._peer_families(address)
        stale = self._stale.setdefault(address, {})
        changes: list = []
        for path in self.rib.paths_from(address):
            family = route_family(path.route)
            if family in negotiated:
                stale[path.key] = family
            else:
                changes += self.rib.withdraw(address, path.key, now)
        self._stale_until[address] = now + stats.graceful_restart_s
        stats.graceful_restarts += 1
        self.events.emit("peer_down", f"peer {address}: down: {reason}; graceful restart: its {len(stale)} "
                                      f"path(s) kept as stale for up to {stats.graceful_restart_s} s",
                         peer=address, reason=reason, stale_paths=len(stale))
        self._import(changes, now)

    def _peer_families(self, address: str) -> set[Family]:
        """The families the peer's last capability listed (those whose paths a helper keeps)."""
        return self._gr_families.get(address, set())

    def _sweep_stale(self, address: str, family: Family | None, now: float, why: str) -> None:
        """Withdraw `address`'s stale paths of `family` (None: all of them)."""
        stale = self._stale.get(address)
        if not stale:
            return
        keys = [k for k, f in stale.items() if family is None or f == family]
        changes: list = []
        for key in keys:
            del stale[key]
            changes += self.rib.withdraw(address, key, now)
        if not stale:
            self._stale.pop(address, None)
            self._stale_until.pop(address, None)
        if keys:
            self.stats[address].stale_removed += len(keys)
            log.info("peer %s: %d stale path(s) withdrawn: %s", address, len(keys), why)
        self._import(changes, now)

    def _receive(self, address: str, update: Update, now: float) -> None:
        stats = self.stats[address]
        peer = self.peers[address]
        if update.ignored:
            log.debug("peer %s: UPDATE: %s", address, "; ".join(update.ignored))
        stats.unknown_routes += update.unknown_routes
        if update.errors:
            stats.attribute_errors += len(update.errors)
            stats.last_error = "; ".join(update.errors)
            log.warning("peer %s: UPDATE errors: %s", address, stats.last_error)
        changes: list = []
        withdrawn = list(update.withdrawn)
        if update.treat_as_withdraw:
            stats.treated_as_withdraw += 1
            withdrawn += update.announced
        stale = self._stale.get(address)
        if stale:  # announced again (fresh) or withdrawn: no longer stale either way
            for route in (*update.announced, *update.withdrawn):
                if not isinstance(route, UnknownRoute):
                    stale.pop(route.key, None)
        for route in withdrawn:
            if not isinstance(route, UnknownRoute):
                changes += self.rib.withdraw(address, route.key, now)
        if not update.treat_as_withdraw and update.attributes is not None:
            neg = peer.negotiated
            for route in update.announced:
                if isinstance(route, UnknownRoute):
                    continue  # a route type we do not speak (RFC 7606 5.4)
                attrs = update.attributes_of(route)
                assert attrs is not None
                reason = self._reject(route, attrs, neg is not None and neg.remote_asn != self.asn)
                if reason:
                    stats.routes_rejected += 1
                    stats.last_error = f"route rejected (treat-as-withdraw): {reason}"
                    log.info("peer %s: %s", address, stats.last_error)
                    changes += self.rib.withdraw(address, route.key, now)
                    continue
                if not self._admit(address, route.key, now):
                    continue
                path = Path(
                    route, attrs, address,
                    peer_router_id=neg.remote_router_id if neg else ipaddress.IPv4Address(0),
                    peer_address=ipaddress.ip_address(address),
                    ebgp=neg is not None and neg.remote_asn != self.asn,
                    received=now,
                )
                changes += self.rib.update(path, now)
        self._import(changes, now)

    def _admit(self, address: str, key: tuple, now: float) -> bool:
        """Max-prefix (prefix_limit.py): may this route from `address` go into the RIB?"""
        if self.rib.holds(address, key):
            return True  # replaces the peer's own path: not one more
        limit = self.prefix_limits[address]
        count = self.rib.count_from(address)
        verdict = limit.admit(count, now)
        if verdict is Verdict.ADMIT:
            if limit.warning(count + 1):
                self.events.emit("max_prefix_warning", f"peer {address}: {count + 1} routes accepted: 90% of its "
                                                       f"max_prefixes ({limit.limit})",
                                 peer=address, count=count + 1, limit=limit.limit)
            return True
        if verdict is Verdict.TEARDOWN:
            self.events.emit("max_prefix_reached", f"peer {address}: max_prefixes ({limit.limit}) reached: closing "
                                                   f"the session (Cease/1), idle for {limit.restart_s:g}s",
                             peer=address, reason="teardown", count=count, limit=limit.limit,
                             restart_s=limit.restart_s)
            self.peers[address].stop(now, f"maximum number of prefixes reached ({limit.limit})",
                                     E.CEASE_MAX_PREFIXES)
        elif limit.refused_now == 1 and limit.idle_until is None:
            self.events.emit("max_prefix_reached", f"peer {address}: max_prefixes ({limit.limit}) reached: "
                                                   f"refusing its new routes",
                             peer=address, reason="refusing", count=count, limit=limit.limit)
        return False

    def _reject(self, route: Route, attrs: PathAttributes, ebgp: bool) -> str:
        """Why a received route must not be used (it is then treated as withdrawn), or ""."""
        if attrs.next_hop is None:
            return "no next hop"
        for what, address in (("next hop", attrs.next_hop),
                              ("PMSI tunnel endpoint", attrs.pmsi_tunnel.tunnel_id if attrs.pmsi_tunnel else None)):
            if address is None:
                continue
            if address == self.vtep:
                return f"{what} {address} is our own VTEP"
            if address.is_loopback or address.is_multicast or address.is_unspecified:
                return f"{what} {address} is not a unicast address of another host"
        if isinstance(route, (MacIpRoute, ImetRoute, PrefixRoute)) and route.ethernet_tag > ETHERNET_TAG_MAX:
            return f"Ethernet tag {route.ethernet_tag} does not fit in 24 bits (RFC 8365 5.1.3)"
        if isinstance(route, MacIpRoute) and (route.mac == ZERO_MAC or is_multicast(route.mac)):
            return f"MAC {mac_str(route.mac)} is not a unicast host address"
        # Our one VTEP sends VXLAN from one address family: a VTEP of the other
        # cannot be reached (as README says of static config), so do not install it.
        # A unicast route's next hop is a router's, kept as received whatever its family.
        pmsi = attrs.pmsi_tunnel
        if not isinstance(route, UnicastRoute) and (attrs.next_hop.version != self.vtep.version or (
            pmsi is not None and pmsi.tunnel_id.version != self.vtep.version
        )):
            return f"VTEP not of our VTEP's address family (IPv{self.vtep.version})"
        if attrs.originator_id == self.router_id:
            return "ORIGINATOR_ID is ours (RFC 4456 8)"
        if ebgp and any(self.asn in seg.asns for seg in attrs.as_path):
            return "our AS is in the AS_PATH (RFC 4271 9.1.2)"
        return ""

    # -- import: RIB changes -> fabric -------------------------------------------------

    def _import(self, changes: list, now: float) -> None:
        fabric = self.fabric
        tell = self.events.wants("route_learned")  # every best path change is an event alike
        for ch in changes:
            if isinstance(ch, BestPathChanged):
                self.route_flaps.record(ch.key, now, ch.new or ch.old)
                route = (ch.new or ch.old).route
                if tell:
                    self._route_event(ch)
                if isinstance(route, ImetRoute):
                    old = self._flood(ch.old)
                    new = self._flood(ch.new)
                    if old != new:
                        if old is not None:
                            fabric.remove_flood_vtep(old[0], old[1], Source.BGP)
                        if new is not None:
                            fabric.add_flood_vtep(new[0], new[1], Source.BGP)
                elif isinstance(route, PrefixRoute):
                    if self.routed is not None:
                        self.routed.best_path_changed(ch, now)
                elif isinstance(route, UnicastRoute):
                    self.unicast.best_path_changed(ch)
                elif isinstance(route, MacIpRoute) and route.ip is not None:
                    old = self._binding(ch.old)
                    new = self._binding(ch.new)
                    if old != new:
                        self._rebind(ch.key, route.ip, old, new, now)
            elif isinstance(ch, MacLocationChanged):
                new = ch.new
                if new is not None and not new.is_local and new.next_hop is not None:
                    fabric.install_mac(ch.domain, ch.mac, str(new.next_hop), Source.BGP, now)
                elif ch.old is not None and not ch.old.is_local:
                    fabric.withdraw_mac(ch.domain, ch.mac, Source.BGP)
        self._mobility(self.mobility.observe(changes, now), now)
        if self.routed is not None and self.routed.moved and not self._moving:
            self._follow_subnet_moves(now)

    def _route_event(self, change: BestPathChanged) -> None:
        path = change.new or change.old
        assert path is not None
        vni = self.importer.domain_of(path)
        name, msg, fields = route_event(change, vni, self._network_name(vni))
        self.events.emit(name, msg, **fields)

    def _network_name(self, vni: int | None) -> str | None:
        net = self.networks.get(vni) if vni is not None else None
        return net.name if net is not None else None

    def _follow_subnet_moves(self, now: float) -> None:
        """Our subnet moved (auto allocation lost a collision): withdraw the old, announce the new."""
        self._moving = True
        try:
            assert self.routed is not None
            for key in [k for k, p in self._originated.items() if isinstance(p.route, (PrefixRoute, UnicastRoute))]:
                self._retract(key, now)
            for route, attrs in self._subnet_routes():
                self._originate(route, attrs, now)
            self.subnet_moves.extend(self.routed.moved)
            self.routed.moved.clear()
        finally:
            self._moving = False

    def _subnet_routes(self) -> list[tuple[Route, PathAttributes]]:
        """Our subnets as type-5 routes, and as unicast routes for the neighbors that carry those."""
        assert self.routed is not None
        return [*self.routed.routes(), *self.unicast.originated(self.routed.subnets)]

    def _flood(self, path: Path | None) -> tuple[int, str] | None:
        if path is None:
            return None
        vni = self.importer.domain_of(path)
        vtep = Importer.flood_target(path)
        if vni is None or vtep is None or vtep == str(self.vtep):
            return None
        return vni, vtep

    def _rebind(self, key: tuple, ip, old: tuple[int, bytes] | None, new: tuple[int, bytes] | None,
                now: float) -> None:
        """Route `key`'s claim on `ip` went from `old` to `new` ((VNI, MAC) or None): keep the
        fabric's binding for the IP on the latest claim left, withdraw it with the last one."""
        fabric = self.fabric
        if old is not None:
            claims = self._ip_claims.get((old[0], ip), {})
            claims.pop(key, None)
            if not claims:
                self._ip_claims.pop((old[0], ip), None)
                fabric.withdraw_neighbor(old[0], ip, old[1], Source.BGP)
            elif new is None or new[0] != old[0]:
                fabric.install_neighbor(old[0], ip, next(reversed(claims.values())), Source.BGP, now)
        if new is not None:
            self._ip_claims.setdefault((new[0], ip), {})[key] = new[1]
            fabric.install_neighbor(new[0], ip, new[1], Source.BGP, now)

    def _binding(self, path: Path | None) -> tuple[int, bytes] | None:
        if path is None or path.is_local:
            return None
        vni = self.importer.domain_of(path)
        return None if vni is None else (vni, path.route.mac)

    # -- export: our MACs -> routes ------------------------------------------------------

    def _mobility(self, events: list, now: float) -> None:
        for ev in events:
            match ev:
                case LocalMacAdvertised(vni, mac, seq):
                    self._advertise_mac(vni, mac, seq, now)
                case LocalMacWithdrawn(vni, mac, reason, winner):
                    where = f" to {winner.next_hop}" if winner is not None else ""
                    log.info("vni %d: %s %s%s: withdrawing our route", vni, mac_str(mac), reason.value, where)
                    for key in [k for k, p in self._originated.items()
                                if isinstance(p.route, MacIpRoute) and p.route.mac == mac
                                and self.importer.domain_of(p) == vni]:
                        self._retract(key, now)
                case MacDuplicateDetected(vni, mac, moves, window, until):
                    msg = f"vni {vni}: duplicate MAC {mac_str(mac)}: {moves} moves in {window:.0f}s, frozen"
                    self.events.emit("mac_duplicate", msg, network=self._network_name(vni), vni=vni, mac=mac_str(mac),
                                     moves=moves, window_s=window)
                    self.alarms.append(msg)
                case MacUnfrozen(vni, mac, _, by_operator):
                    self.events.emit("mac_unfrozen", f"vni {vni}: MAC {mac_str(mac)} unfrozen"
                                                     f"{' by operator' if by_operator else ''}",
                                     network=self._network_name(vni), vni=vni, mac=mac_str(mac),
                                     by_operator=by_operator)
                case StickyMacConflict(vni, mac, sticky):
                    msg = f"vni {vni}: MAC {mac_str(mac)} seen here is sticky at {sticky.next_hop}"
                    self.events.emit("mac_sticky_conflict", msg, network=self._network_name(vni), vni=vni,
                                     mac=mac_str(mac), vtep=str(sticky.next_hop))
                    self.alarms.append(msg)

    def _advertise_mac(self, vni: int, mac: bytes, sequence: int, now: float) -> None:
        net = self.networks.get(vni)
        if net is None:
            return
        for ip in [None, *sorted(self._local_ips.get((vni, mac), ()), key=str)]:
            route, attrs = self.factory.mac_ip(net, mac, ip, sequence)
            self._originate(route, attrs, now)

    def _bind_local(self, vni: int, ip, mac: bytes, now: float) -> None:
        if not advertisable_ip(ip):
            return
        self._local_ips.setdefault((vni, mac), set()).add(ip)
        sequence = self.mobility.sequence(vni, mac)
        net = self.networks.get(vni)
        if sequence is not None and net is not None:
            route, attrs = self.factory.mac_ip(net, mac, ip, sequence)
            self._originate(route, attrs, now)

    def _unbind_local(self, vni: int, ip, mac: bytes, now: float) -> None:
        ips = self._local_ips.get((vni, mac))
        if ips is None or ip not in ips:
            return
        ips.discard(ip)
        if not ips:
            del self._local_ips[(vni, mac)]
        net = self.networks.get(vni)
        if net is not None:
            self._retract(MacIpRoute(net.rd, mac, ip, vni=vni).key, now)

    # -- our routes in the RIB and to the peers --------------------------------------------

    def _originate(self, route: Route, attrs: PathAttributes, now: float) -> None:
        path = Path(route, attrs, LOCAL, peer_router_id=self.router_id, received=now)
        if self._originated.get(route.key) == path:
            return
        self._originated[route.key] = path
        self._import(self.rib.update(path, now), now)
        for address, peer in self.peers.items():
            if peer.established is not None:
                self._pending.setdefault(address, {})[route.key] = path

    def _retract(self, key: tuple, now: float) -> None:
        if self._originated.pop(key, None) is None:
            return
        self._import(self.rib.withdraw(LOCAL, key, now), now)
        for address, peer in self.peers.items():
            if peer.established is not None:
                self._pending.setdefault(address, {})[key] = None

    def _flush(self, now: float) -> None:
        if self._stopped:
            return
        for address, pending in self._pending.items():
            peer = self.peers[address]
            if not pending or peer.established is None:
                continue
            # Flow control: what the connection cannot take now stays in `pending` (one entry
            # per route key, so bounded by the table) until the I/O side has room again.
            budget = peer.send_room // BYTES_PER_ROUTE
            if budget <= 0:
                continue
            batch = list(itertools.islice(pending.items(), budget))
            neg = peer.negotiated
            assert neg is not None
            ebgp = neg.remote_asn != self.asn
            adj_out = self.stats[address].adj_out
            withdraw: dict[Family, list[Route]] = {}
            announce: dict[tuple[Family, PathAttributes], list[Route]] = {}
            for key, path in batch:
                if path is None:
                    old = adj_out.pop(key, None)
                    if old is not None:
                        withdraw.setdefault(route_family(old.route), []).append(old.route)
                elif route_family(path.route) in neg.families and adj_out.get(key) != path:
                    adj_out[key] = path
                    attrs = self.factory.for_peer(path.attributes, ebgp)
                    announce.setdefault((route_family(path.route), attrs), []).append(path.route)
            for key, _ in batch:
                del pending[key]
            for routes in withdraw.values():  # one family per UPDATE (RFC 7606 5.1)
                for i in range(0, len(routes), ROUTES_PER_UPDATE):
                    peer.send_update(Update(withdrawn=tuple(routes[i : i + ROUTES_PER_UPDATE])), now)
            for (_, attrs), routes in announce.items():
                for i in range(0, len(routes), ROUTES_PER_UPDATE):
                    chunk = tuple(routes[i : i + ROUTES_PER_UPDATE])
                    peer.send_update(Update(announced=chunk, attributes=attrs), now)
        for address in list(self._eor):
            peer = self.peers[address]
            if self._pending.get(address) and peer.established is not None:
                continue  # End-of-RIB goes after the whole initial table
            neg = peer.negotiated
            if peer.established is not None and neg is not None:
                for family in neg.families:
                    peer.send_update(Update(end_of_rib=True, end_of_rib_family=family), now)
                peer.restarting = False  # RFC 4724: our restart is over for this peer
            self._eor.discard(address)
