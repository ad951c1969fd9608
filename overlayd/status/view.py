"""The daemon's state as the status protocol shows it: plain dicts, stable keys."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Callable
from typing import Any

from overlayd.config import Config
from overlayd.dataplane.counters import COUNTERS
from overlayd.dataplane.switch import Switch
from overlayd.fabric.endpoint import format_endpoint, parse_endpoint
from overlayd.kernel.state import FdbEntry as KernelFdbEntry
from overlayd.status.bgp_view import alarm_rows, peer_rows, rib_rows
from overlayd.status.explain import explain as explain_packet
from overlayd.status.facts import doctor_facts, topology_facts
from overlayd.status.protocol import StatusError
from overlayd.wire.ethernet import mac_str, parse_mac


class SwitchView:
    """Implements `protocol.NodeView` over a config, a Switch and per-network device facts."""

    def __init__(self, config: Config, switch: Switch, started: float, mtus: dict[int, int],
                 offloads: Any = None, speaker: Any = None, routed: Any = None, kernel: Any = None,
                 services: Any = None, device_macs: dict | None = None, underlay_mtu: int | None = None,
                 events: Any = None):
        self.config = config
        self.switch = switch
        self.started = started
        self.mtus = mtus  # VNI -> MTU actually set on the device
        self.offloads = offloads  # io.offload.Offloads (anything with as_dict()): what is on
        self.speaker = speaker  # control.speaker.Speaker, when BGP is configured
        self.routed = routed  # io.routing.RoutedDevice, when the routed backend is userspace
        self.kernel = kernel  # io.backend.KernelBackend, when overlayd programs the kernel
        self.services_runtime = services  # io.services.Services, when services are configured
        self.device_macs = device_macs or {}  # role -> fabric.macs.DeviceMac
        self.underlay_mtu = underlay_mtu  # node.underlay_mtu, or the MTU of the VTEP's interface
        self.events = events  # control.hub.EventHub: what `watch` subscribes to
        # Set by the daemon: the status socket (its limits and counters, for `status`), what to
        # call after a `clear` changed the speaker (the BGP service's kick: send what follows),
        # and the reload SIGHUP does (None: `reload` answers not_supported).
        self.status_socket: Any = None  # status.server.StatusServer
        self.metrics_server: Any = None  # io.metrics.MetricsServer, with `metrics:`
        self.after_change: Callable[[], None] | None = None
        self.reload_hook: Callable[[], Any] | None = None
        # node.vtep_interface's addresses as last read, when node.vtep is no longer one of them
        self.vtep_interface_now: list[str] | None = None

    def status(self, now: float) -> dict[str, Any]:
        node = self.config.node
        networks = []
        for net in self.config.networks:
            seg = self.switch.segment(net.vni)
            networks.append(
                {
                    "name": net.name,
                    "vni": net.vni,
                    "vlan": net.vlan,  # a VLAN trunk's VLAN ID on its device (networks[].vlans), else None
                    "native": net.native,  # untagged frames on the trunk belong to this VLAN
                    "device": net.device,
                    "mtu": self.mtus.get(net.vni),
                    "address": str(net.address) if net.address else None,
                    "flood_list": list(self.switch.flood.targets(net.vni)),
                    "mac": mac_str(min(seg.own_macs)) if seg.own_macs else None,
                    "backend": net.backend,
                    "mac_source": self._mac_source(f"network {net.name}"),
                    "vxlan_device": net.vxlan_device if net.backend == "kernel" else None,
                    "limits": self._limits(net.vni),
                }
            )
        return {
            "node": node.name,
            "vtep": str(node.vtep),
            "vtep_interface": node.vtep_interface,  # where node.vtep was found at start, if configured so
            "vtep_interface_now": self.vtep_interface_now,  # its addresses, once node.vtep is not one
            "vxlan_port": node.vxlan_port,
            "uptime_s": round(now - self.started, 1),
            "fdb_entries": len(self.switch.fdb),
            "networks": networks,
            "offloads": self.offloads.as_dict() if self.offloads is not None else {},
            "bgp": self._bgp_summary(now),
            "routing": self._routing_summary(),
            "kernel": self.kernel.summary() if self.kernel is not None else None,
            "services": self._services_summary(now),
            "status_socket": self.status_socket.summary() if self.status_socket is not None else None,
            "metrics": self.metrics_server.summary() if self.metrics_server is not None else None,
        }

    def _limits(self, vni: int) -> dict[str, Any] | None:
        """The bounds a network runs with (README "Limits and security") and how often they bit;
        a rate of None is not limited here (a kernel segment's bridge learns and floods)."""
        sw = self.switch
        limit = sw.fdb.local_limits.get(vni)
        if limit is None:
            return None
        learn, flood = limit.bucket, sw.segment(vni).flood_bucket
        refused = sw.refused(vni)
        return {
            "max_local_macs": limit.max_macs,
            "local_macs": sw.fdb.local_count(vni),
            "refused_fdb_full": refused["fdb_full"],
            "max_local_ips": sw.neighbors.local_limits.get(vni),
            "local_ips": sw.neighbors.local_count(vni),
            "refused_ips": refused["ips_full"],
            "mac_learn_rate_per_s": learn.rate_per_s if learn else None,
            "mac_learn_burst": learn.burst if learn else None,
            "refused_rate": refused["rate"],
            "flood_rate_pps": flood.rate_per_s if flood else None,
            "flood_burst": flood.burst if flood else None,
            "flood_dropped": refused["flood_rate"],
        }

    def _mac_source(self, role: str) -> str | None:
        """Where a device's MAC came from: config (its `mac:`), router (the router MAC), derived."""
        planned = self.device_macs.get(role)
        return planned.source if planned is not None else None

    def _services_summary(self, now: float) -> dict[str, Any] | None:
        rt = self.services_runtime
        if rt is None:
            return None
        r = self.config.routing
        return {
            "services": len(rt.table),
            "path": "userspace" if rt.path is not None else "nftables",
            "services_network": [str(n) for n in self.config.services_network],
            "services_file": self.config.services_file,
            "services_file_error": rt.file_error or None,
            "conntrack_entries": len(rt.conntrack),
            "conntrack_max": rt.conntrack.max_flows,
            "conntrack_refused_full": rt.conntrack.refused_full,
            "conntrack_evicted": rt.conntrack.evicted,
            "backend": r.backend if r is not None else None,
        }

    def _require_services(self):
        if self.services_runtime is None:
            raise StatusError("not_configured", "no services are configured on this node (no `services:` "
                                                "or `services_file`)")
        return self.services_runtime

    def services(self, now: float) -> list[dict[str, Any]]:
        rt = self._require_services()
        flows = Counter((f.service, f.backend) for f in rt.conntrack)  # one pass, nothing formatted
        rows = []
        for s in rt.table:
            checker = rt.checkers.get(s.name)
            health = {h.backend: h for h in checker} if checker is not None else {}
            rows.append({
                "name": s.name, "vip": s.vip_text, "port": s.port, "protocol": "tcp" if s.proto == 6 else "udp",
                "affinity": "client-ip" if s.affinity_timeout_s is not None else "none",
                "hits": s.hits, "rejected": s.rejected,
                "backends": [{
                    "backend": b,
                    "healthy": b in s.healthy,
                    "check": checker.config.type if checker is not None else "none",
                    "failures": health[b].failures if b in health else 0,
                    "flows": flows[s.name, s.endpoints[b]],
                    "hits": s.backend_hits.get(b, 0),
                } for b in s.backends],
            })
        return rows

    def conntrack(self, now: float, service: str | None = None, client: str | None = None,
                  backend: str | None = None) -> list[dict[str, Any]]:
        rt = self._require_services()
        try:
            want_client = _address_or_endpoint(client)
            want_backend = _address_or_endpoint(backend)
        except ValueError as err:
            raise StatusError("bad_request", str(err)) from None
        rows = []
        for f in rt.conntrack.flows(service=service, client=want_client, backend=want_backend):
            rows.append({
                "service": f.service, "protocol": "tcp" if f.proto == 6 else "udp",
                "client": format_endpoint(f.client), "vip": format_endpoint(f.vip),
                "backend": format_endpoint(f.backend), "snat": format_endpoint(f.snat) if f.snat else None,
                "state": f.state.name.lower(), "age_s": round(now - f.created, 1),
                "expires_in_s": round(max(0.0, f.expires - now), 1),
                "packets": f.packets_original + f.packets_reply, "bytes": f.bytes_original + f.bytes_reply,
            })
        return rows

    def _routing_summary(self) -> dict[str, Any] | None:
        r = self.config.routing
        if r is None or self.speaker is None or self.speaker.routed is None:
            return None
        rs = self.speaker.routed
        if self.routed is not None:
            mtu = self.routed.mtu
        else:
            mtu = self.kernel.routed_mtu if self.kernel is not None else None
        return {
            "vni": rs.vni,
            "backend": r.backend,
            "direct_routing": r.direct_routing,
            "device": r.device if r.has_device else None,
            "device_type": r.device_type if r.backend == "userspace" else r.backend,
            "mtu": mtu,
            "network": str(r.network),
            "subnets": [str(s) for s in rs.subnets],
            "router_mac": mac_str(rs.router_mac),
            "route_target": str(rs.route_target),
            "device_mac": mac_str(self.device_macs["routing"].mac) if "routing" in self.device_macs else None,
            "device_mac_source": self._mac_source("routing"),
            "alarms": list(rs.alarms[-20:]),
        }

    def _bgp_summary(self, now: float) -> dict[str, Any] | None:
        sp = self.speaker
        if sp is None:
            return None
        peers = peer_rows(sp, now)
        return {
            "asn": sp.asn,
            "router_id": str(sp.router_id),
            "peers_established": sum(1 for p in peers if p["state"] == "Established"),
            "peers": len(peers),
            "rib_paths": sum(1 for _ in sp.rib),
            "max_prefixes": [{k: p[k] for k in ("neighbor", "routes_received", "max_prefixes", "max_prefixes_action",
                                                "prefixes_refused", "max_prefix_teardowns")} for p in peers],
            "graceful_restart_s": sp.restart_time_s,  # ours; None: not advertised (no helper either)
            "pending_connections": sp.pending_connections(),  # in the OPEN exchange
            "max_pending_connections": sp.max_pending_connections,
            "refused_pending": sp.refused_pending,
            "duplicate_macs": alarm_rows(sp),
            "alarms": list(sp.alarms[-20:]),
        }

    def _require_bgp(self):
        if self.speaker is None:
            raise StatusError("not_configured", "BGP is not configured on this node (no `bgp:` section)")
        return self.speaker

    def routes(self, now: float) -> list[dict[str, Any]]:
        if self.speaker is None or self.speaker.routed is None:
            raise StatusError("not_configured", "routing is not configured on this node (no `routing:` section)")
        rows = []
        for e in self.speaker.routed.table:
            row = {
                "prefix": str(e.prefix),
                "node": e.node,
                "vtep": e.vtep or "local",
                "router_mac": mac_str(e.router_mac) if e.router_mac else None,
                "vni": e.vni,
                "age_s": round(now - e.installed, 1),
                "peer": e.peer,
                "source": e.source.label,
            }
            row.update(self._way(e.prefix))
            rows.append(row)
        r = self.config.routing
        if r is not None and r.install_routes and self.kernel is not None:
            # native routing told to install what BGP unicast brings: those routes too
            known = {row["prefix"] for row in rows}
            for prefix, next_hop in sorted(self.speaker.unicast_routes().items(),
                                           key=lambda item: (item[0].version, item[0])):
                if str(prefix) in known:
                    continue
                planned = self.kernel.plan.state.routes.get(prefix) if self.kernel.plan else None
                rows.append({
                    "prefix": str(prefix), "node": str(next_hop), "vtep": None, "router_mac": None,
                    "vni": None, "age_s": None, "peer": "bgp unicast", "source": "bgp", "way": "native",
                    "kernel_route": str(planned) if planned else None,
                    "kernel": self.kernel.programmed_state(planned) if planned
                    else f"no route: next hop {next_hop} not on a connected network, or inside our subnet",
                })
        return rows

    def _way(self, prefix) -> dict[str, Any]:
        """How the kernel routes `prefix` (`way`, `kernel_route`) and whether it holds that route."""
        way = self.kernel.way_of(prefix) if self.kernel is not None else None
        if way is None:
            return {"way": "userspace", "kernel_route": None, "kernel": None}
        if way.route is None:
            programmed = None if way.way in ("local", "userspace") else f"no route: {way.reason}"
        elif way.way == "native":
            programmed = self.kernel.programmed_state(self.kernel.plan.state.routes.get(way.route.dst, way.route))
        else:
            programmed = self.kernel.programmed_state(way.route)
        return {"way": way.way, "kernel_route": str(way.route) if way.route else None, "kernel": programmed}

    def peers(self, now: float) -> list[dict[str, Any]]:
        return peer_rows(self._require_bgp(), now)

    def rib(self, now: float) -> list[dict[str, Any]]:
        return rib_rows(self._require_bgp())

    def fdb(self, now: float, network: str | None = None) -> list[dict[str, Any]]:
        names = {net.vni: net.name for net in self.config.networks}
        vlans = {net.vni: net.vlan for net in self.config.networks}
        if network is not None and network not in names.values():
            raise StatusError("bad_request", f"no network named {network!r}")
        kernel = {net.vni: net for net in self.config.networks if net.backend == "kernel"}
        rows = []
        for e in self.switch.fdb:
            if network is not None and names.get(e.vni) != network:
                continue
            rows.append(
                {
                    "network": names.get(e.vni, ""),
                    "vlan": vlans.get(e.vni),  # on a VLAN trunk, the VLAN ID of the VNI; else None
                    "vni": e.vni,
                    "mac": mac_str(e.mac),
                    "where": "local" if e.vtep is None else e.vtep,
                    "learned": e.source.label,
                    "age_s": round(now - e.updated, 1),
                    "kernel": self._fdb_programmed(kernel.get(e.vni), e),
                }
            )
        rows.sort(key=lambda r: (r["vni"], r["mac"]))
        return rows

    def _fdb_programmed(self, net, entry) -> str | None:
        """For a kernel segment: the bridge holds local MACs; a remote one is 'yes' once the
        VXLAN device has it, else the kernel's error."""
        if net is None or self.kernel is None:
            return None
        if entry.vtep is None:
            return "bridge"
        return self.kernel.programmed_state(KernelFdbEntry(net.vxlan_device, entry.mac,
                                                           ipaddress.ip_address(entry.vtep)))

    def stats(self, now: float) -> dict[str, Any]:
        return {"counters": self.switch.counters.as_dict(), "descriptions": dict(COUNTERS)}

    def explain(self, now: float, destination: str, source: str | None = None,
                network: str | None = None) -> dict[str, Any]:
        return explain_packet(self, now, destination, source, network)
    def doctor(self, now: float) -> dict[str, Any]:
        return doctor_facts(self, now)

    def topology(self, now: float) -> dict[str, Any]:
        return topology_facts(self, now)

    # -- the state-changing commands (root only; status.protocol checks that) -----------------

    def clear_counters(self, now: float) -> dict[str, Any]:
        counters = self.switch.counters
        nonzero = sum(1 for v in counters.as_dict().values() if v)
        counters.reset()
        return {"cleared": "counters", "counters": len(COUNTERS), "were_nonzero": nonzero}

    def clear_mac(self, now: float, network: str, mac: str) -> dict[str, Any]:
        speaker = self._require_bgp()
        net = next((n for n in self.config.networks if n.name == network or str(n.vni) == network), None)
        if net is None:
            raise StatusError("bad_request", f"no network named {network!r} (give its name or its VNI)")
        try:
            raw = parse_mac(mac)
        except ValueError as err:
            raise StatusError("bad_request", str(err)) from None
        if not speaker.clear_duplicate(net.vni, raw, now):
            raise StatusError("not_found", f"{mac_str(raw)} is not frozen on network {net.name} (vni {net.vni})")
        self._changed()
        return {"cleared": "mac", "network": net.name, "vni": net.vni, "mac": mac_str(raw)}

    def clear_peer(self, now: float, neighbor: str) -> dict[str, Any]:
        speaker = self._require_bgp()
        try:
            address = str(ipaddress.ip_address(neighbor))
        except ValueError:
            raise StatusError("bad_request", f"{neighbor!r} is not an IPv4 or IPv6 address") from None
        if not speaker.reset_peer(address, now):
            raise StatusError("not_found", f"{address} is not a configured BGP neighbor")
        self._changed()
        return {"cleared": "peer", "neighbor": address}

    def reload(self, now: float) -> Any:
        if self.reload_hook is None:
            raise StatusError("not_supported", "this status view has no daemon to reload: restart overlayd to "
                                               "apply a changed config")
        return self.reload_hook()

    def watch(self, now: float) -> tuple[dict[str, Any], Any]:
        """A subscription to the node's events: (the first reply's result, the Subscriber)."""
        if self.events is None:
            raise StatusError("not_supported", "this status view has no event hub to watch")
        sub = self.events.subscribe()
        return {"watching": self.config.node.name, "max_queued": sub.max_queued}, sub

    def _changed(self) -> None:
        if self.after_change is not None:
            self.after_change()


def _address_or_endpoint(text: str | None):
    """A filter of `overlayctl conntrack`: "10.244.1.5" (any port) or "10.244.1.5:8080"."""
    if text is None:
        return None
    try:
        return ipaddress.ip_address(text.strip("[]")).packed
    except ValueError:
        return parse_endpoint(text)
