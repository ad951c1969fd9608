"""Where a table entry came from, as `overlayctl explain` says it: learned locally, static
config, or which BGP peer, route (type, RD), MAC mobility sequence number, and how long ago.

Each function takes the entry, the node's `Origins` (its config, Switch and speaker, which may
be None without `bgp:`) and the time, and returns (the words for one line, the facts as a
dict with stable keys: "source", "age_s" / "installed_s_ago", and for a BGP entry "peer",
"route", "rd", "next_hop", "sequence", "received_s_ago"). They only read.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from overlayd.config import Config
from overlayd.control.routes import Importer
from overlayd.dataplane.switch import Switch
from overlayd.fabric.fdb import FdbEntry, Source
from overlayd.fabric.neighbors import Binding
from overlayd.fabric.prefixes import PrefixEntry
from overlayd.fabric.rib import Path
from overlayd.wire.bgp.evpn import ImetRoute, MacIpRoute


def ago(seconds: float) -> str:
    return f"{max(0.0, seconds):.0f}s ago"


@dataclass(frozen=True)
class Origins:
    config: Config
    switch: Switch
    speaker: Any  # control.speaker.Speaker, or None

    def path_facts(self, path: Path, kind: str, now: float) -> dict[str, Any]:
        return {"peer": path.peer, "route": kind, "rd": str(path.route.rd),
                "next_hop": str(path.next_hop) if path.next_hop is not None else None,
                "sequence": path.sequence if kind == "macip" else None,
                "received_s_ago": round(now - path.received, 1)}

    def fdb(self, entry: FdbEntry, now: float) -> tuple[str, dict[str, Any]]:
        origin: dict[str, Any] = {"source": entry.source.label, "age_s": round(now - entry.updated, 1)}
        age = ago(now - entry.updated)
        aging = f"ages out {self.config.node.fdb_aging:.0f}s after the last one"
        if entry.source is Source.BGP:
            path = self.speaker.rib.macs.winner(entry.vni, entry.mac) if self.speaker is not None else None
            if path is None:
                return f"learned from BGP, {age}", origin
            origin.update(self.path_facts(path, "macip", now))
            sticky = ", sticky (static on its VTEP)" if path.sticky else ""
            return (f"learned from BGP peer {path.peer}: type-2 route RD {path.route.rd}, MAC mobility sequence "
                    f"{path.sequence}{sticky}, {age}"), origin
        if entry.source is Source.STATIC:
            return f"static: networks[{self.index(entry.vni)}].fdb of the config", origin
        if entry.source is Source.DATA:
            return f"learned from the inner source MAC of a VXLAN frame from {entry.vtep}, {age} ({aging})", origin
        net = self.config.networks[self.index(entry.vni)]
        if entry.vni in self.switch.fdb.aging_exempt:
            text = f"learned by the kernel's bridge {net.device} on a local port, {age}"
        else:
            text = f"learned locally from a frame on TAP {net.device}, {age} ({aging})"
        if self.speaker is not None:
            sequence = self.speaker.mobility.sequence(entry.vni, entry.mac)
            if self.speaker.mobility.is_frozen(entry.vni, entry.mac):
                text += "; frozen as a duplicate MAC: not announced (overlayctl clear mac)"
                origin["frozen"] = True
            elif sequence is not None:
                text += f"; we announce it, MAC mobility sequence {sequence}"
                origin["sequence"] = sequence
        return text, origin

    def binding(self, binding: Binding, now: float) -> tuple[str, dict[str, Any]]:
        origin: dict[str, Any] = {"source": binding.source.label, "age_s": round(now - binding.updated, 1)}
        age = ago(now - binding.updated)
        if binding.source is Source.BGP and self.speaker is not None:
            paths = [p for p in self.speaker.rib.macs.candidates(binding.vni, binding.mac)
                     if isinstance(p.route, MacIpRoute) and p.route.ip == binding.ip]
            if not paths:
                return f"from BGP, {age}", origin
            path = max(paths, key=lambda p: p.received)
            origin.update(self.path_facts(path, "macip", now))
            return (f"from BGP peer {path.peer}: type-2 route RD {path.route.rd} with the IP, MAC mobility "
                    f"sequence {path.sequence}, {ago(now - path.received)}"), origin
        if binding.source is Source.STATIC:
            return "static, from the config", origin
        if binding.vni in self.switch.neighbors.aging_exempt:
            return f"from the host's neighbour table on the bridge, {age}", origin
        return f"snooped from the host's own ARP / neighbour discovery, {age}", origin

    def flood_members(self, vni: int, vteps: Iterable[str]) -> list[str]:
        """'VTEP (why it is on the flood list of `vni`)' for each of `vteps`. The type-3 routes of
        the BGP members are looked for among the best paths: one walk of the RIB."""
        imet: dict[str, list[Path]] = {}
        if self.speaker is not None:
            for p in self.speaker.rib.bests():
                if isinstance(p.route, ImetRoute) and self.speaker.importer.domain_of(p) == vni:
                    imet.setdefault(Importer.flood_target(p), []).append(p)
        out = []
        for vtep in vteps:
            sources = self.switch.flood.sources(vni, vtep)
            said = []
            if Source.STATIC in sources:
                said.append(f"static: networks[{self.index(vni)}].vteps")
            if Source.BGP in sources:
                paths = imet.get(vtep, [])
                said += [f"type-3 route RD {p.route.rd} from BGP peer {p.peer}" for p in paths] or ["BGP"]
            out.append(f"{vtep} ({'; '.join(said) or 'unknown'})")
        return out

    def prefix(self, entry: PrefixEntry, now: float) -> tuple[str, dict[str, Any]]:
        origin: dict[str, Any] = {"source": entry.source.label, "node": entry.node, "peer": entry.peer,
                                  "installed_s_ago": round(now - entry.installed, 1)}
        if entry.source is Source.LOCAL:
            how = "chosen by subnet: auto" if self.config.routing.subnet == "auto" else "routing.subnet"
            return f"our own subnet ({how})", origin
        if entry.source is Source.STATIC:
            return "static", origin
        routed = self.speaker.routed
        keys = routed.route_keys(entry.prefix, entry.node)
        paths = [p for p in map(self.speaker.rib.best, keys) if p is not None]
        text = f"learned from BGP peer {entry.peer}"
        if paths:
            origin.update(self.path_facts(paths[0], "prefix", now))
            text += f": type-5 route RD {paths[0].route.rd}"
        text += f", installed {ago(now - entry.installed)}"
        others = [c.node for c in routed.table.candidates(entry.prefix) if c.node != entry.node]
        if others:
            text += f"; also announced by node {', '.join(others)} (not preferred)"
            origin["also_announced_by"] = others
        return text, origin

    def index(self, vni: int) -> int:
        """The index of the network of `vni` in the config's `networks`."""
        return next(i for i, n in enumerate(self.config.networks) if n.vni == vni)
