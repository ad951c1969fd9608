"""The daemon's state as the status protocol shows it: plain dicts, stable keys."""

from __future__ import annotations

from typing import Any

from overlayd.config import Config
from overlayd.dataplane.counters import COUNTERS
from overlayd.dataplane.switch import Switch
from overlayd.status.bgp_view import alarm_rows, peer_rows, rib_rows
from overlayd.status.protocol import StatusError
from overlayd.wire.ethernet import mac_str


class SwitchView:
    """Implements `protocol.NodeView` over a config, a Switch and per-network device facts."""

    def __init__(self, config: Config, switch: Switch, started: float, mtus: dict[int, int],
                 offloads: Any = None, speaker: Any = None, routed: Any = None):
        self.config = config
        self.switch = switch
        self.started = started
        self.mtus = mtus  # VNI -> MTU actually set on the device
        self.offloads = offloads  # io.offload.Offloads (anything with as_dict()): what is on
        self.speaker = speaker  # control.speaker.Speaker, when BGP is configured
        self.routed = routed  # io.routing.RoutedDevice, when routing is configured

    def status(self, now: float) -> dict[str, Any]:
        node = self.config.node
        networks = []
        for net in self.config.networks:
            seg = self.switch.segment(net.vni)
            networks.append(
                {
                    "name": net.name,
                    "vni": net.vni,
                    "device": net.device,
                    "mtu": self.mtus.get(net.vni),
                    "address": str(net.address) if net.address else None,
                    "flood_list": list(self.switch.flood.targets(net.vni)),
                    "mac": mac_str(min(seg.own_macs)) if seg.own_macs else None,
                }
            )
        return {
            "node": node.name,
            "vtep": str(node.vtep),
            "vxlan_port": node.vxlan_port,
            "uptime_s": round(now - self.started, 1),
            "fdb_entries": len(self.switch.fdb),
            "networks": networks,
            "offloads": self.offloads.as_dict() if self.offloads is not None else {},
            "bgp": self._bgp_summary(now),
            "routing": self._routing_summary(),
        }

    def _routing_summary(self) -> dict[str, Any] | None:
        if self.routed is None:
            return None
        rs = self.routed.routed
        return {
            "vni": rs.vni,
            "device": self.routed.routing.device,
            "device_type": self.routed.routing.device_type,
            "mtu": self.routed.mtu,
            "network": str(self.routed.routing.network),
            "subnets": [str(s) for s in rs.subnets],
            "router_mac": mac_str(rs.router_mac),
            "route_target": str(rs.route_target),
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
            "duplicate_macs": alarm_rows(sp),
            "alarms": list(sp.alarms[-20:]),
        }

    def _require_bgp(self):
        if self.speaker is None:
            raise StatusError("not_configured", "BGP is not configured on this node (no `bgp:` section)")
        return self.speaker

    def routes(self, now: float) -> list[dict[str, Any]]:
        if self.routed is None:
            raise StatusError("not_configured", "routing is not configured on this node (no `routing:` section)")
        rows = []
        for e in self.routed.routed.table:
            rows.append(
                {
                    "prefix": str(e.prefix),
                    "node": e.node,
                    "vtep": e.vtep or "local",
                    "router_mac": mac_str(e.router_mac) if e.router_mac else None,
                    "vni": e.vni,
                    "age_s": round(now - e.installed, 1),
                    "peer": e.peer,
                    "source": e.source.label,
                }
            )
        return rows

    def peers(self, now: float) -> list[dict[str, Any]]:
        return peer_rows(self._require_bgp(), now)

    def rib(self, now: float) -> list[dict[str, Any]]:
        return rib_rows(self._require_bgp())

    def fdb(self, now: float, network: str | None = None) -> list[dict[str, Any]]:
        names = {net.vni: net.name for net in self.config.networks}
        if network is not None and network not in names.values():
            raise StatusError("bad_request", f"no network named {network!r}")
        rows = []
        for e in self.switch.fdb:
            if network is not None and names.get(e.vni) != network:
                continue
            rows.append(
                {
                    "network": names.get(e.vni, ""),
                    "vni": e.vni,
                    "mac": mac_str(e.mac),
                    "where": "local" if e.vtep is None else e.vtep,
                    "learned": e.source.label,
                    "age_s": round(now - e.updated, 1),
                }
            )
        rows.sort(key=lambda r: (r["vni"], r["mac"]))
        return rows

    def stats(self, now: float) -> dict[str, Any]:
        return {"counters": self.switch.counters.as_dict(), "descriptions": dict(COUNTERS)}
