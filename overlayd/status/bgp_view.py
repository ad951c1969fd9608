"""The BGP speaker as `overlayctl peers` and `overlayctl rib` show it: plain dicts, stable keys."""

from __future__ import annotations

from typing import Any

from overlayd.control.routes import path_row
from overlayd.control.speaker import Speaker
from overlayd.fabric.rib import Path
from overlayd.wire.bgp.unicast import UnicastRoute
from overlayd.wire.bgp.update import family_name
from overlayd.wire.ethernet import mac_str


def peer_rows(speaker: Speaker, now: float) -> list[dict[str, Any]]:
    rows = []
    assert speaker.config.bgp is not None
    protection = {str(nb.address): (nb.password is not None, nb.ttl_security) for nb in speaker.config.bgp.neighbors}
    for address, peer in speaker.peers.items():
        stats = speaker.stats[address]
        limit = speaker.prefix_limits[address]
        received = speaker.rib.paths_from(address)
        since = peer.established_since
        families = peer.negotiated.families if peer.negotiated else peer.config.families
        rows.append(
            {
                "neighbor": address,
                "asn": stats.asn,
                "state": peer.state.value,
                "uptime_s": round(now - since, 1) if since is not None else None,
                "routes_received": len(received),
                "routes_accepted": sum(1 for p in received if _accepted(speaker, p)),
                "routes_sent": len(stats.adj_out),
                "updates_received": stats.updates_received,
                "treated_as_withdraw": stats.treated_as_withdraw,
                "attribute_errors": stats.attribute_errors,
                "routes_rejected": stats.routes_rejected,
                "unknown_routes": stats.unknown_routes,
                "session_resets": stats.session_resets,
                "flaps": stats.flaps,  # Established sessions that went down
                "graceful_restart_s": stats.graceful_restart_s,  # the peer's restart time; None: not advertised
                "graceful_restarts": stats.graceful_restarts,
                "stale_routes": len(speaker.stale_keys(address)),
                "stale_removed": stats.stale_removed,
                "families": [family_name(f) for f in families],  # negotiated; configured while down
                "end_of_rib_received": peer.negotiated is not None and stats.end_of_rib >= set(families),
                "last_error": stats.last_error,
                "max_prefixes": limit.limit,  # prefix_limit.py: routes_received is what it bounds
                "max_prefixes_action": limit.action,
                "prefixes_refused": limit.refused,
                "max_prefix_teardowns": limit.teardowns,
                "tcp_md5": protection.get(address, (False, False))[0],  # whether, never the key
                "ttl_security": protection.get(address, (False, False))[1],
            }
        )
    return rows


def _accepted(speaker: Speaker, path: Path) -> bool:
    """Used: an EVPN path that maps to a network, or any unicast path (a candidate for unicast_routes)."""
    return isinstance(path.route, UnicastRoute) or speaker.importer.domain_of(path) is not None


def rib_rows(speaker: Speaker) -> list[dict[str, Any]]:
    stale = {peer: speaker.stale_keys(peer) for peer in speaker.peers}
    rows = []
    for e in speaker.rib:
        row = path_row(e.path, e.best, speaker.importer.domain_of(e.path))
        row["stale"] = e.path.key in stale.get(e.path.peer, ())  # kept across the peer's graceful restart
        rows.append(row)
    rows.sort(key=lambda r: (r["vni"] or 0, r["type"], r["mac"] or "", r["ip"] or "", r["prefix"] or "",
                             r["rd"] or "", not r["best"], r["peer"]))
    return rows


def alarm_rows(speaker: Speaker) -> list[dict[str, Any]]:
    return [
        {"vni": f.domain, "mac": mac_str(f.mac), "frozen_since_s": f.since, "moves": f.moves,
         "frozen_until_s": f.until}
        for f in speaker.mobility.frozen()
    ]
