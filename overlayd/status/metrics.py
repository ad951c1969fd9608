"""The daemon's state as Prometheus metrics, read at scrape time.

Nothing here counts. `Collector.collect()` reads, when Prometheus asks, what
the daemon keeps anyway: the data plane's Counters, the sizes the FDB, the
ARP/ND bindings and the RIB keep as they change, the flood lists, the BGP
peers, the service table. So a scrape costs the hot path nothing, takes the
event loop a millisecond or two whatever the tables hold (only the services'
flows per backend are counted over the conntrack table), and a figure here
is the figure `overlayctl` shows. The HTTP side is `io/metrics.py`.

Names follow Prometheus' conventions: `overlayd_` first, counters end in
`_total`, units in base units (`_bytes`, `_seconds`), one family per thing
counted with labels for its kinds (`direction`, `reason`, `type`), and
label values in overlayctl's words (a peer is its configured address, a
route type is what `overlayctl rib` says). Every family is listed in
FAMILIES and is always exposed, with no samples where a part is not
configured (no `bgp:`, no services), so the set of names a dashboard can
use does not depend on the node.

`overlayctl clear counters` zeroes the data plane's counters; Prometheus'
`rate()` and `increase()` take that as a counter reset.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client import ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from overlayd import __version__
from overlayd.control.routes import ROUTE_TYPE_NAMES
from overlayd.control.session import State
from overlayd.fabric.fdb import Source
from overlayd.fabric.neighbors import SOURCES as BINDING_SOURCES

PREFIX = "overlayd_"


@dataclass(frozen=True)
class Family:
    name: str  # without PREFIX; a counter's without `_total` (prometheus_client adds it)
    kind: str  # "counter" or "gauge"
    labels: tuple[str, ...]
    help: str


FAMILIES: tuple[Family, ...] = (
    # -- the node
    Family("info", "gauge", ("node", "vtep", "version"), "Always 1: this node's name, VTEP and overlayd's version"),
    Family("uptime_seconds", "gauge", (), "Seconds since the daemon started"),
    # -- the data plane (dataplane/counters.py; tx is TAP -> VXLAN, rx is VXLAN -> TAP)
    Family("frames", "counter", ("direction",),
           "Ethernet frames: tx read from TAP devices, rx written to them"),
    Family("frame_bytes", "counter", ("direction",), "Bytes of the frames overlayd_frames_total counts"),
    Family("tx_forwarded_frames", "counter", ("kind",),
           "Frames read from TAP devices and sent: unicast to the one VTEP the FDB names, or flood "
           "(broadcast, multicast, unknown unicast) replicated to the flood list"),
    Family("tx_unknown_unicast_frames", "counter", (),
           "Flooded frames whose unicast destination MAC the FDB does not know"),
    Family("vxlan_datagrams", "counter", ("direction",),
           "VXLAN datagrams: tx handed to the kernel, rx read from the VXLAN port"),
    Family("drops", "counter", ("direction", "path", "reason"),
           "Frames, datagrams and packets dropped, by direction, path (bridged: L2 networks, routed: the "
           "routed VNI, service: packets to a VIP) and reason (the counter `overlayctl stats` explains)"),
    Family("arp_requests", "counter", ("outcome",),
           "ARP requests and IPv6 neighbour solicitations from TAP devices: suppressed (answered here from a "
           "remote binding) or forwarded (flooded as usual)"),
    Family("mac_learn_refused", "counter", ("reason",),
           "Local source MACs not learned nor announced: fdb_full (the network holds max_local_macs), rate "
           "(past mac_learn_rate_per_s); their frames are forwarded"),
    Family("ip_learn_refused", "counter", (), "Local IP bindings not made nor announced: the network holds max_local_ips"),
    Family("tso_superframes", "counter", (), "TCP super-frames (TSO) read from TAP devices and cut into frames"),
    Family("gro_superframes", "counter", (), "Super-frames written to TAP devices, each coalesced from several frames"),
    Family("routed_packets", "counter", ("direction",),
           "IP packets on the routed VNI: tx from the routing device to VXLAN, rx from VXLAN to it"),
    Family("routed_bytes", "counter", ("direction",),
           "Bytes of the packets overlayd_routed_packets_total counts (without an Ethernet header)"),
    Family("routed_arp_requests", "counter", ("outcome",),
           "ARP requests and neighbour solicitations on a tap routing device: answered with the router MAC, "
           "or ignored"),
    # -- each network (`networks:`)
    Family("network_info", "gauge", ("network", "vni", "device", "backend"), "Always 1: each configured network"),
    Family("network_mtu_bytes", "gauge", ("network",), "The MTU set on the network's device"),
    Family("fdb_entries", "gauge", ("network", "source"),
           "FDB entries by how they were learned: local (our TAP), data (VXLAN learning), bgp, static"),
    Family("fdb_local_macs_limit", "gauge", ("network",),
           "The cap on the network's local FDB entries (max_local_macs); past it new local MACs are refused"),
    Family("flood_list_vteps", "gauge", ("network",), "Remote VTEPs on the network's flood list"),
    Family("neighbor_bindings", "gauge", ("network", "source"),
           "ARP/ND bindings (IP -> MAC) by source: local (snooped on our TAP), bgp, static"),
    Family("neighbor_local_bindings_limit", "gauge", ("network",),
           "The cap on the network's local ARP/ND bindings (max_local_ips)"),
    Family("mac_moves", "counter", ("network",), "MACs whose FDB entry moved to another place (VTEP or local)"),
    # -- BGP (`bgp:`), each neighbor by its configured address
    Family("bgp_peer_up", "gauge", ("peer",), "1 while the session with the neighbor is Established, else 0"),
    Family("bgp_peer_state", "gauge", ("peer", "state"), "1 for the session's current state, 0 for the others"),
    Family("bgp_peer_uptime_seconds", "gauge", ("peer",), "Seconds the session has been Established (0: down)"),
    Family("bgp_peer_flaps", "counter", ("peer",), "Established sessions with the neighbor that went down"),
    Family("bgp_messages_received", "counter", ("peer", "type"), "BGP messages received, by message type"),
    Family("bgp_messages_sent", "counter", ("peer", "type"), "BGP messages sent, by message type"),
    Family("bgp_connect_attempts", "counter", ("peer",), "TCP connections we tried to open to the neighbor"),
    Family("bgp_connect_failures", "counter", ("peer",), "TCP connections to the neighbor that failed or timed out"),
    Family("bgp_peer_routes_received", "gauge", ("peer",), "Paths the neighbor announced that we hold"),
    Family("bgp_peer_routes_sent", "gauge", ("peer",), "Paths the neighbor has from us"),
    Family("bgp_peer_routes_limit", "gauge", ("peer",),
           "The neighbor's max_prefixes: the most paths from it we hold (warned at 90%)"),
    Family("bgp_routes_refused", "counter", ("peer",), "Paths from the neighbor refused at its max_prefixes"),
    Family("bgp_max_prefix_teardowns", "counter", ("peer",),
           "Sessions closed for reaching max_prefixes (action: teardown)"),
    Family("bgp_session_resets", "counter", ("peer",),
           "Sessions we reset for a malformed message from the neighbor"),
    Family("bgp_rib_paths", "gauge", ("peer", "type"),
           "Paths in the RIB by route type (macip: EVPN type 2, imet: type 3, prefix: type 5; ipv4-unicast, "
           "ipv6-unicast) and by who announced them (peer `local`: this node)"),
    Family("bgp_duplicate_macs", "gauge", (), "MACs frozen as duplicates (moving too often), as status lists them"),
    # -- services (`services:`, `services_file`)
    Family("service_hits", "counter", ("service",), "New flows to the service's VIP that got a backend"),
    Family("service_rejected_flows", "counter", ("service",), "New flows refused: no healthy backend"),
    Family("service_backend_hits", "counter", ("service", "backend"), "New flows given to each backend"),
    Family("service_backend_healthy", "gauge", ("service", "backend"), "1 while the backend passes its health check"),
    Family("service_backend_flows", "gauge", ("service", "backend"), "Tracked flows pinned to each backend"),
    Family("service_new_flows", "counter", (), "New flows to any VIP that got a backend (the userspace path)"),
    Family("service_packets", "counter", ("direction",),
           "Packets rewritten by the service path: to_backend (VIP -> backend), from_backend (replies)"),
    Family("service_rejects", "counter", ("reason",),
           "Packets to a VIP refused with a TCP reset or ICMP error: no_backend (none healthy), no_service"),
    Family("service_backend_down_resets", "counter", (),
           "TCP resets sent to clients whose backend failed its health checks"),
    Family("conntrack_entries", "gauge", (), "Flows in the service path's connection-tracking table"),
    Family("conntrack_entries_limit", "gauge", (), "The table's cap (conntrack.max_entries)"),
    Family("conntrack_refused", "counter", (), "New flows refused: the table was full of live flows"),
    Family("conntrack_evicted", "counter", (), "Flows evicted to make room (never replied, or closed)"),
)
FAMILY_BY_NAME = {f.name: f for f in FAMILIES}

# Every data-plane counter: the family it feeds and its labels there (drops: see _DROP).
DATAPLANE: dict[str, tuple[str, dict[str, str]]] = {
    "tx_frames": ("frames", {"direction": "tx"}),
    "rx_frames": ("frames", {"direction": "rx"}),
    "tx_bytes": ("frame_bytes", {"direction": "tx"}),
    "rx_bytes": ("frame_bytes", {"direction": "rx"}),
    "tx_unicast_frames": ("tx_forwarded_frames", {"kind": "unicast"}),
    "tx_flood_frames": ("tx_forwarded_frames", {"kind": "flood"}),
    "tx_unknown_unicast_frames": ("tx_unknown_unicast_frames", {}),
    "tx_datagrams": ("vxlan_datagrams", {"direction": "tx"}),
    "rx_datagrams": ("vxlan_datagrams", {"direction": "rx"}),
    "tx_arp_suppressed": ("arp_requests", {"outcome": "suppressed"}),
    "tx_arp_flooded": ("arp_requests", {"outcome": "forwarded"}),
    "learn_refused_fdb_full": ("mac_learn_refused", {"reason": "fdb_full"}),
    "learn_refused_rate": ("mac_learn_refused", {"reason": "rate"}),
    "learn_refused_ips": ("ip_learn_refused", {}),
    "tx_tso_superframes": ("tso_superframes", {}),
    "rx_gro_superframes": ("gro_superframes", {}),
    "tx_routed_packets": ("routed_packets", {"direction": "tx"}),
    "rx_routed_packets": ("routed_packets", {"direction": "rx"}),
    "tx_routed_bytes": ("routed_bytes", {"direction": "tx"}),
    "rx_routed_bytes": ("routed_bytes", {"direction": "rx"}),
    "tx_route_arp_answered": ("routed_arp_requests", {"outcome": "answered"}),
    "tx_route_arp_ignored": ("routed_arp_requests", {"outcome": "ignored"}),
    "svc_new_flows": ("service_new_flows", {}),
    "svc_packets_to_backend": ("service_packets", {"direction": "to_backend"}),
    "svc_packets_from_backend": ("service_packets", {"direction": "from_backend"}),
    "svc_reject_no_backend": ("service_rejects", {"reason": "no_backend"}),
    "svc_reject_no_service": ("service_rejects", {"reason": "no_service"}),
    "svc_reset_backend_down": ("service_backend_down_resets", {}),
}
# tx_drop_runt, rx_route_drop_not_ip, svc_drop_malformed, ... (packets to a VIP come from the pods: tx)
_DROP = re.compile(r"(?P<direction>tx|rx|svc)_(?P<routed>route_)?drop_(?P<reason>\w+)")


def dataplane_metric(counter: str) -> tuple[str, dict[str, str]]:
    """The family a data-plane counter feeds and its labels there; KeyError for one not mapped."""
    m = _DROP.fullmatch(counter)
    if m is None:
        return DATAPLANE[counter]
    if m["direction"] == "svc":
        return "drops", {"direction": "tx", "path": "service", "reason": m["reason"]}
    return "drops", {"direction": m["direction"], "path": "routed" if m["routed"] else "bridged",
                     "reason": m["reason"]}


MESSAGE_TYPES = ("open", "update", "notification", "keepalive", "route_refresh")  # SessionCounters' names
PEER_STATES = tuple(s.value for s in State)


class Families:
    """One scrape's metric families, filled by name and label values."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}
        for f in FAMILIES:
            kind = CounterMetricFamily if f.kind == "counter" else GaugeMetricFamily
            self._families[f.name] = kind(PREFIX + f.name, f.help, labels=f.labels)

    def add(self, name: str, value: float, **labels: Any) -> None:
        family = FAMILY_BY_NAME[name]
        self._families[name].add_metric([str(labels[k]) for k in family.labels], value)

    def __iter__(self) -> Iterator[Metric]:
        return iter(self._families.values())


class OverlaydCollector(Collector):
    """Reads a `status.view.SwitchView` (and what it holds) at every scrape."""

    def __init__(self, view: Any, clock: Callable[[], float]):
        self.view = view
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        out = Families()
        view = self.view
        node = view.config.node
        out.add("info", 1, node=node.name, vtep=node.vtep, version=__version__)
        out.add("uptime_seconds", round(now - view.started, 3))
        for name, value in view.switch.counters.as_dict().items():
            family, labels = dataplane_metric(name)
            out.add(family, value, **labels)
        self._networks(out)
        if view.speaker is not None:
            self._bgp(out, now)
        if view.services_runtime is not None:
            self._services(out, now)
        return iter(out)

    def _networks(self, out: Families) -> None:
        switch = self.view.switch
        fdb = switch.fdb.counts
        bindings = switch.neighbors.counts
        for net in self.view.config.networks:
            name, vni = net.name, net.vni
            out.add("network_info", 1, network=name, vni=vni, device=net.device, backend=net.backend)
            if vni in self.view.mtus:
                out.add("network_mtu_bytes", self.view.mtus[vni], network=name)
            for source in Source:
                out.add("fdb_entries", fdb[vni, source], network=name, source=source.label)
            for source in BINDING_SOURCES:
                out.add("neighbor_bindings", bindings[vni, source], network=name, source=source.label)
            out.add("flood_list_vteps", len(switch.flood.targets(vni)), network=name)
            if (limit := switch.fdb.local_limits.get(vni)) is not None:
                out.add("fdb_local_macs_limit", limit.max_macs, network=name)
            if (max_ips := switch.neighbors.local_limits.get(vni)) is not None:
                out.add("neighbor_local_bindings_limit", max_ips, network=name)
            out.add("mac_moves", switch.fdb.moves.get(vni, 0), network=name)

    def _bgp(self, out: Families, now: float) -> None:
        """What `overlayctl peers` shows, read from the same objects, without its per-path import check
        (routes accepted): the RIB's sizes by peer and route type are kept as it changes, no walk."""
        speaker = self.view.speaker
        rib = speaker.rib
        for peer, session in speaker.peers.items():
            stats = speaker.stats[peer]
            state = session.state.value
            since = session.established_since
            out.add("bgp_peer_up", int(state == State.ESTABLISHED.value), peer=peer)
            for name in PEER_STATES:
                out.add("bgp_peer_state", int(state == name), peer=peer, state=name)
            out.add("bgp_peer_uptime_seconds", round(now - since, 3) if since is not None else 0, peer=peer)
            out.add("bgp_peer_flaps", stats.flaps, peer=peer)
            out.add("bgp_session_resets", stats.session_resets, peer=peer)
            out.add("bgp_peer_routes_received", sum(n for (p, _), n in rib.counts.items() if p == peer), peer=peer)
            out.add("bgp_peer_routes_sent", len(stats.adj_out), peer=peer)
            if (limit := speaker.prefix_limits.get(peer)) is not None:
                out.add("bgp_peer_routes_limit", limit.limit, peer=peer)
                out.add("bgp_routes_refused", limit.refused, peer=peer)
                out.add("bgp_max_prefix_teardowns", limit.teardowns, peer=peer)
            counters = session.counters
            for kind in MESSAGE_TYPES:
                out.add("bgp_messages_received", getattr(counters, f"rx_{kind}"), peer=peer, type=kind)
                out.add("bgp_messages_sent", getattr(counters, f"tx_{kind}"), peer=peer, type=kind)
            out.add("bgp_connect_attempts", counters.connect_attempts, peer=peer)
            out.add("bgp_connect_failures", counters.connect_failures, peer=peer)
        for (peer, kind), n in sorted(rib.counts.items(), key=str):
            if n:
                out.add("bgp_rib_paths", n, peer=peer, type=ROUTE_TYPE_NAMES.get(kind, str(kind)))
        out.add("bgp_duplicate_macs", len(speaker.mobility.frozen()))

    def _services(self, out: Families, now: float) -> None:
        for s in self.view.services(now):
            service = s["name"]
            out.add("service_hits", s["hits"], service=service)
            out.add("service_rejected_flows", s["rejected"], service=service)
            for b in s["backends"]:
                backend = b["backend"]
                out.add("service_backend_hits", b["hits"], service=service, backend=backend)
                out.add("service_backend_healthy", int(b["healthy"]), service=service, backend=backend)
                out.add("service_backend_flows", b["flows"], service=service, backend=backend)
        conntrack = self.view.services_runtime.conntrack
        out.add("conntrack_entries", len(conntrack))
        out.add("conntrack_entries_limit", conntrack.max_flows)
        out.add("conntrack_refused", conntrack.refused_full)
        out.add("conntrack_evicted", conntrack.evicted)


def registry(view: Any, clock: Callable[[], float]) -> CollectorRegistry:
    """What the metrics endpoint serves: overlayd's families, and the process' (CPU, memory, fds)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(OverlaydCollector(view, clock))
    ProcessCollector(registry=reg)
    return reg

