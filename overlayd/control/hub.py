"""The node's events: one record per thing an operator wants to know, logged once and pushed
to every `overlayctl watch` (the status socket's subscriptions).

An `Event` is a small frozen fact: its name (EVENTS lists them all, with the level it is
logged at and the logger), the text line the log has always carried, and its fields under
stable keys. Every event has `peer`, `network`, `mac`, `prefix` and `reason` (None where they
mean nothing) and may add its own (`vni`, `vtep`, `count`, ...).

The `EventHub` is the one place events are made and go out from:

    hub.emit("peer_down", f"peer {address}: down: {reason}", peer=address, reason=reason)
    hub.fabric(switch.pop_events())        # the Switch's table changes as events
    hub.limits(now, {network: switch.refused(vni)})   # limit hits, rate-limited (LimitWatch)
    sub = hub.subscribe()                  # a watcher: sub.take() -> [Event], sub.dropped

Producers that could make many events at once (the FDB, the RIB) ask `hub.wants(name)` first:
an event nobody logs nor watches is never built.

Subscribers never slow the daemon and never grow without bound: each has a queue of at most
`max_queued` events. The status server takes them out as fast as its client reads; a client
that reads slower than events come fills its queue, and the next event drops the subscriber
instead of waiting (`dropped` says why, for the server's last line to it). `wake` is called
when a subscriber's queue gets its first event and when it is dropped.

Limit hits (a MAC refused at max_local_macs or by the learning rate, an IP binding refused,
a frame to flood dropped by the flood rate) happen per frame, so they are counted in the data
plane, never reported from it: `LimitWatch` looks at those counts (the daemon's tick) and
makes at most one event a second per network and reason, the first at once, each with the
count since the one before.

Time: `ts` is the wall clock (`wall`, seconds since the epoch) and only labels events; the
rate limit of limit hits runs on the caller's monotonic `now`.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from overlayd.control.routes import path_row
from overlayd.fabric.fdb import MacLearned, MacMoved, MacRemoved
from overlayd.fabric.flood import FloodMemberAdded, FloodMemberRemoved
from overlayd.fabric.neighbors import NeighborLearned, NeighborMoved, NeighborRemoved
from overlayd.fabric.rib import BestPathChanged, Path
from overlayd.wire.ethernet import mac_str

KEYS = ("peer", "network", "mac", "prefix", "reason")
"""The keys every event has (None where they mean nothing), beside ts, event, level and msg."""

DEFAULT_MAX_QUEUED = 1000  # events a watcher may have unread before it is dropped
LIMIT_INTERVAL_S = 1.0  # at most one limit event per network and reason this often

_BGP, _NODE = "overlayd.bgp", "overlayd"
DEBUG, INFO, WARNING, ERROR = logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR

EVENTS: dict[str, tuple[int, str, str]] = {
    # name: (log level, logger, what happened and the fields beyond KEYS)
    "peer_up": (INFO, _BGP, "a BGP session reached Established (asn, router_id, hold_time_s)"),
    "peer_down": (WARNING, _BGP, ("an Established session ended, `reason` says why (stale_paths: kept "
                                  "for the peer's graceful restart)")),
    "peer_attempt_failed": (INFO, _BGP, "a connection ended before Established (reason)"),
    "peer_removed": (INFO, _BGP, "a reload removed the neighbor"),
    "route_learned": (DEBUG, _BGP, ("a route has a best path where it had none (route_type, rd, mac, ip, "
                                    "prefix, vni, next_hop, sequence; peer `local`: ours)")),
    "route_changed": (DEBUG, _BGP, "another path became a route's best (and old_peer, old_next_hop)"),
    "route_withdrawn": (DEBUG, _BGP, "a route has no path left"),
    "max_prefix_warning": (WARNING, _BGP, ("a peer's accepted routes reached 90% of its max_prefixes (count, "
                                           "limit)")),
    "max_prefix_reached": (WARNING, _BGP, ("a peer reached its max_prefixes: `reason` refusing (action warn) "
                                           "or teardown (Cease/1, idle for restart_s)")),
    "mac_duplicate": (WARNING, _BGP, "a local MAC moved too often and is frozen (vni, moves, window_s)"),
    "mac_unfrozen": (INFO, _BGP, "the freeze on a duplicate MAC lifted (vni, by_operator)"),
    "mac_sticky_conflict": (WARNING, _BGP, "a MAC seen here is sticky (static) at another VTEP (vni, vtep)"),
    "mac_learned": (DEBUG, _NODE, "a MAC entered the FDB (vni, vtep: `local` or an address, source)"),
    "mac_moved": (DEBUG, _NODE, "a MAC lives elsewhere now (vni, vtep, source, old_vtep, old_source)"),
    "mac_aged": (DEBUG, _NODE, "a MAC left the FDB after fdb_aging without traffic (vni, vtep, source)"),
    "mac_removed": (DEBUG, _NODE, "a MAC left the FDB: withdrawn or its network removed (vni, vtep, source)"),
    "neighbor_learned": (DEBUG, _NODE, "an IP is bound to a MAC (vni, ip, source)"),
    "neighbor_moved": (DEBUG, _NODE, "an IP is bound to another MAC (vni, ip, old_mac, source)"),
    "neighbor_aged": (DEBUG, _NODE, "a snooped IP binding aged out (vni, ip, source)"),
    "neighbor_removed": (DEBUG, _NODE, "an IP binding was withdrawn (vni, ip, source)"),
    "flood_vtep_added": (DEBUG, _NODE, "a VTEP joined a network's flood list (vni, vtep)"),
    "flood_vtep_removed": (DEBUG, _NODE, "a VTEP left a network's flood list (vni, vtep)"),
    "mac_refused": (WARNING, _NODE, ("local MACs not learned: `reason` fdb_full (max_local_macs) or rate "
                                     "(mac_learn_rate_per_s); count since the last such event")),
    "ip_refused": (WARNING, _NODE, "local IP bindings not made: `reason` ips_full (max_local_ips); count"),
    "flood_dropped": (WARNING, _NODE, "frames to flood dropped: `reason` flood_rate (flood_rate_pps); count"),
    "reload_applied": (INFO, _NODE, "a reload applied the config file (config, changes)"),
    "reload_refused": (ERROR, _NODE, "a reload was refused, the running config stays (reason)"),
}


def iso_time(ts: float) -> str:
    """Seconds since the epoch as UTC ISO 8601 with milliseconds: 2025-01-31T12:00:00.123Z."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Event:
    """One thing that happened.

    event:  its name, a key of EVENTS
    msg:    the words the text log carries (and `overlayctl watch` shows)
    ts:     when, seconds since the epoch
    fields: its facts; KEYS are always there, the event's own beside them
    """

    event: str
    msg: str
    ts: float
    fields: Mapping[str, Any] = field(default_factory=dict)

    @property
    def level(self) -> int:
        return EVENTS[self.event][0]

    def as_dict(self) -> dict[str, Any]:
        """The event with stable keys: ts, event, level, msg, KEYS, then its own fields."""
        return {"ts": iso_time(self.ts), "event": self.event, "level": logging.getLevelName(self.level).lower(),
                "msg": self.msg, **dict.fromkeys(KEYS), **self.fields}


@dataclass(eq=False)
class Subscriber:
    """One watcher's queue: `take()` what came, `dropped` once it fell `max_queued` behind."""

    hub: EventHub
    max_queued: int
    queue: deque[Event] = field(default_factory=deque)
    dropped: str | None = None  # why the hub dropped it
    wake: Callable[[], None] | None = None  # called on the first event queued, and on a drop

    def take(self) -> list[Event]:
        """Every event queued, oldest first; the queue is empty after."""
        events = list(self.queue)
        self.queue.clear()
        return events

    def close(self) -> None:
        """No more events for it (the watcher left)."""
        self.hub.unsubscribe(self)


class LimitWatch:
    """Refusal counts -> limit events: per (network, reason), the first rise at once, then at most
    one every `interval_s` with what the count rose by since the last one."""

    def __init__(self, interval_s: float = LIMIT_INTERVAL_S):
        self.interval_s = interval_s
        self._seen: dict[tuple[str, str], int] = {}  # the count at the last event (or the first look)
        self._last: dict[tuple[str, str], float] = {}  # when the last event was

    def look(self, now: float, counts: Mapping[str, Mapping[str, int]]) -> list[tuple[str, str, int]]:
        """`counts`: network -> reason -> refusals so far. Returns (network, reason, how many more)."""
        out = []
        for network, by_reason in counts.items():
            for reason, count in by_reason.items():
                key = (network, reason)
                seen = self._seen.setdefault(key, 0)
                if count < seen:  # the counts were cleared, or the network made anew
                    self._seen[key] = seen = 0
                if count == seen:
                    continue
                last = self._last.get(key)
                if last is not None and now - last < self.interval_s:
                    continue
                out.append((network, reason, count - seen))
                self._seen[key], self._last[key] = count, now
        return out


_LIMIT_EVENTS = {  # reason -> (event, what was refused, why)
    "fdb_full": ("mac_refused", "new local MAC(s) not learned", "the network holds max_local_macs"),
    "rate": ("mac_refused", "new local MAC(s) not learned", "faster than mac_learn_rate_per_s"),
    "ips_full": ("ip_refused", "local IP binding(s) not made", "the network holds max_local_ips"),
    "flood_rate": ("flood_dropped", "frame(s) to flood dropped", "faster than flood_rate_pps"),
}


class EventHub:
    def __init__(self, wall: Callable[[], float] = time.time, max_queued: int = DEFAULT_MAX_QUEUED):
        self.wall = wall
        self.max_queued = max_queued
        self.subscribers: list[Subscriber] = []
        self.dropped_slow = 0  # subscribers dropped for a full queue
        self.network_of: Callable[[int], str | None] = lambda vni: None  # a VNI's network name (the daemon's)
        self.limit_watch = LimitWatch()
        self._loggers = {name: logging.getLogger(name) for name in {_BGP, _NODE}}

    # -- making events ---------------------------------------------------------------------

    def wants(self, event: str) -> bool:
        """Would `event` go anywhere (a watcher, or the log at its level)? Cheap: ask before
        building many."""
        level, logger, _ = EVENTS[event]
        return bool(self.subscribers) or self._loggers[logger].isEnabledFor(level)

    def emit(self, event: str, msg: str, **fields: Any) -> None:
        """Log `msg` for `event` and queue it for every watcher."""
        self.publish(Event(event, msg, self.wall(), fields))

    def publish(self, ev: Event) -> None:
        level, logger, _ = EVENTS[ev.event]
        log = self._loggers[logger]
        if log.isEnabledFor(level):
            log.log(level, "%s", ev.msg, extra={"event": ev})
        for sub in list(self.subscribers):
            if len(sub.queue) >= sub.max_queued:
                self._drop(sub)
                continue
            sub.queue.append(ev)
            if len(sub.queue) == 1 and sub.wake is not None:
                sub.wake()

    # -- watchers ------------------------------------------------------------------------------

    def subscribe(self) -> Subscriber:
        sub = Subscriber(self, self.max_queued)
        self.subscribers.append(sub)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)

    def _drop(self, sub: Subscriber) -> None:
        self.unsubscribe(sub)
        self.dropped_slow += 1
        sub.dropped = (f"{sub.max_queued} events were waiting unread: this watcher reads slower than the "
                       f"daemon's events come, and is dropped rather than buffered")
        if sub.wake is not None:
            sub.wake()

    # -- the data plane's changes and limits --------------------------------------------------

    def fabric(self, changes: Iterable[object]) -> None:
        """The Switch's table changes (`pop_events()`), as events."""
        if not self.wants("mac_learned"):  # every table change is logged alike
            return
        for change in changes:
            made = fabric_event(change, self.network_of)
            if made is not None:
                name, msg, fields = made
                self.emit(name, msg, **fields)

    def limits(self, now: float, counts: Mapping[str, Mapping[str, int]]) -> None:
        """`counts`: network -> the refusal counts of its limits (`Switch.refused`)."""
        for network, reason, count in self.limit_watch.look(now, counts):
            event, what, why = _LIMIT_EVENTS.get(reason, ("mac_refused", "refused", reason))
            self.emit(event, f"network {network}: {count} {what}: {why}", network=network, reason=reason,
                      count=count)


def _where(vtep: str | None) -> str:
    return "local" if vtep is None else vtep


def fabric_event(change: object, network_of: Callable[[int], str | None]) -> tuple[str, str, dict] | None:
    """A Switch table change as (event, msg, fields); None for what is not one."""
    match change:
        case MacLearned(vni, mac, vtep, source):
            return ("mac_learned", f"vni {vni}: learned {mac_str(mac)} at {_where(vtep)} ({source.label})",
                    {"network": network_of(vni), "vni": vni, "mac": mac_str(mac), "vtep": _where(vtep),
                     "source": source.label})
        case MacMoved(vni, mac, old, old_src, vtep, source):
            return ("mac_moved", (f"vni {vni}: {mac_str(mac)} moved {_where(old)} ({old_src.label})"
                                  f" -> {_where(vtep)} ({source.label})"),
                    {"network": network_of(vni), "vni": vni, "mac": mac_str(mac), "vtep": _where(vtep),
                     "source": source.label, "old_vtep": _where(old), "old_source": old_src.label})
        case MacRemoved(vni, mac, vtep, source, aged):
            return ("mac_aged" if aged else "mac_removed",
                    f"vni {vni}: {mac_str(mac)} at {_where(vtep)} ({source.label}) {'aged out' if aged else 'removed'}",
                    {"network": network_of(vni), "vni": vni, "mac": mac_str(mac), "vtep": _where(vtep),
                     "source": source.label})
        case FloodMemberAdded(vni, vtep):
            return ("flood_vtep_added", f"vni {vni}: flood list + {vtep}",
                    {"network": network_of(vni), "vni": vni, "vtep": vtep})
        case FloodMemberRemoved(vni, vtep):
            return ("flood_vtep_removed", f"vni {vni}: flood list - {vtep}",
                    {"network": network_of(vni), "vni": vni, "vtep": vtep})
        case NeighborLearned(vni, ip, mac, source):
            return ("neighbor_learned", f"vni {vni}: {ip} is at {mac_str(mac)} ({source.label})",
                    {"network": network_of(vni), "vni": vni, "mac": mac_str(mac), "ip": str(ip),
                     "source": source.label})
        case NeighborMoved(vni, ip, old, mac, source):
            return ("neighbor_moved", f"vni {vni}: {ip} moved {mac_str(old)} -> {mac_str(mac)} ({source.label})",
                    {"network": network_of(vni), "vni": vni, "mac": mac_str(mac), "ip": str(ip),
                     "old_mac": mac_str(old), "source": source.label})
        case NeighborRemoved(vni, ip, mac, source, aged):
            return ("neighbor_aged" if aged else "neighbor_removed",
                    f"vni {vni}: {ip} at {mac_str(mac)} ({source.label}) {'aged out' if aged else 'removed'}",
                    {"network": network_of(vni), "vni": vni, "mac": mac_str(mac), "ip": str(ip),
                     "source": source.label})
    return None


def route_event(change: BestPathChanged, vni: int | None, network: str | None) -> tuple[str, str, dict]:
    """A RIB best-path change as (event, msg, fields): learned, changed or withdrawn."""
    path = change.new or change.old
    assert path is not None
    row = path_row(path, True, vni)
    fields = {"network": network, "peer": path.peer, "mac": row["mac"], "prefix": row["prefix"],
              "route_type": row["type"], "rd": row["rd"], "ip": row["ip"], "vni": vni,
              "next_hop": row["next_hop"], "sequence": row["sequence"]}
    what = " ".join(str(x) for x in (row["type"], row["mac"], row["ip"], row["prefix"]) if x is not None)
    where = f" vni {vni}" if vni is not None else ""
    via = f"via {row['next_hop']} from {path.peer}"
    if change.old is None:
        return "route_learned", f"route learned: {what}{where} {via}", fields
    if change.new is None:
        return "route_withdrawn", f"route withdrawn: {what}{where} (was {via})", fields
    old: Path = change.old
    fields.update(old_peer=old.peer, old_next_hop=str(old.next_hop) if old.next_hop is not None else None)
    return "route_changed", f"route changed: {what}{where} {via} (was via {fields['old_next_hop']} from {old.peer})", \
        fields
