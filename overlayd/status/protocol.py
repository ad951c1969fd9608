"""The status protocol: one JSON object per line each way, versioned.

Request:  {"version": 1, "command": "fdb", "args": {"network": "blue"}}
Reply:    {"version": 1, "ok": true, "command": "fdb", "result": ...}
Error:    {"version": 1, "ok": false, "error": {"code": "unknown_command", "message": "..."}}

Pure code: `handle_line` maps a request line to a reply line given a view of
the node, so the whole protocol is testable with strings. The socket server
(`status/server.py`) and `overlayctl` only move lines.

`explain` takes `destination` (an IP address, a MAC, or a service's
VIP:PORT[/tcp|udp]) and optionally `source` (the sender's IP address) and
`network` (an L2 network's name or VNI); see `status/explain.py`.
One command streams: `watch` answers with a first reply line, then one reply line per
event (`event_line`) for as long as the client stays, or a last error line (`too_slow`)
when it read too slowly; `handle_line_async` returns a `Stream` for the server to move.

Who may do what: the socket is open to root and to the group of
`node.status_group`. Every command only reads, except `clear` and `reload`
(PRIVILEGED_COMMANDS), which change the daemon's state: the server says
whether the client is privileged (root, or the daemon's own user, by
SO_PEERCRED) and `handle_line` refuses those two otherwise, with code
`not_permitted`.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

PROTOCOL_VERSION = 1
DEFAULT_STATUS_SOCKET = "/run/overlayd/overlayd.sock"
MAX_LINE_BYTES = 64 * 1024  # a request line longer than this (newline not counted) is refused


class NodeView(Protocol):
    """What the daemon exposes to the status socket; every method takes the current time."""

    def status(self, now: float) -> dict[str, Any]: ...
    def fdb(self, now: float, network: str | None = None) -> list[dict[str, Any]]: ...
    def stats(self, now: float) -> dict[str, Any]: ...
    def peers(self, now: float) -> list[dict[str, Any]]: ...
    def rib(self, now: float) -> list[dict[str, Any]]: ...
    def routes(self, now: float) -> list[dict[str, Any]]: ...
    def services(self, now: float) -> list[dict[str, Any]]: ...
    def conntrack(self, now: float, service: str | None = None, client: str | None = None,
                  backend: str | None = None) -> list[dict[str, Any]]: ...
    def clear_counters(self, now: float) -> dict[str, Any]: ...
    def clear_mac(self, now: float, network: str, mac: str) -> dict[str, Any]: ...
    def clear_peer(self, now: float, neighbor: str) -> dict[str, Any]: ...
    def reload(self, now: float) -> Any: ...
    def explain(self, now: float, destination: str, source: str | None = None,
                network: str | None = None) -> dict[str, Any]: ...
    def doctor(self, now: float) -> dict[str, Any]: ...
    def topology(self, now: float) -> dict[str, Any]: ...
    def watch(self, now: float) -> tuple[dict[str, Any], Any]: ...


COMMANDS: dict[str, str] = {
    "status": "the node, its VTEP, each network (name, VNI, backend, device, MTU, flood list), "
              "the routing backend and what overlayd programmed into the kernel",
    "fdb": "forwarding database entries (args: network)",
    "stats": "frame and byte counters, and one counter per drop reason",
    "peers": "BGP neighbors: AS, state, uptime, families, protection (md5, gtsm), routes received / accepted / "
             "sent, last error (--json: also bad-input counters and graceful restart: stale routes)",
    "rib": "BGP routes, EVPN and unicast: type, RD, ESI/tag, MAC, IP, prefix, VNI, next hop, sequence, best, peer "
           "(--json: also whether kept stale across the peer's restart)",
    "routes": "the subnet table: prefix, node, VTEP, router MAC, VNI, age, source peer, the way the "
              "kernel routes it and whether it holds that route",
    "services": "each service: VIP, port, protocol, its backends with health, active flows and hits",
    "conntrack": "the tracked flows of the service path (args: service, client, backend)",
    "explain": "the life of one packet on this node, step by step: the device it enters, the table entry that "
               "matches and where it came from, the VTEP, VNI and outer headers it leaves with and the MTU on "
               "the way, or why it is flooded or dropped and the counter that moves (args: destination, "
               "source, network)",
    "clear": "root only: zero the counters of `stats` (what: counters), lift the freeze on a duplicate MAC "
             "(what: mac; network, mac) or reset a BGP session (what: peer; neighbor)",
    "reload": "root only: re-read the config file and apply it, as SIGHUP does",
    "doctor": "what `overlayctl doctor` needs of the daemon: its devices and the encapsulation each carries, "
              "the VTEPs it knows, BGP sessions (ever Established, flapping), flapping routes, subnets claimed "
              "twice, kernel entries out of step with the tables",
    "topology": "the mesh as this node sees it: the node, BGP sessions with their state, VTEPs with the "
                "networks, MACs and subnets behind each",
    "watch": "a live stream of events, one line each: peer up/down and why, routes learned/withdrawn, MACs "
             "learned/moved/aged, a duplicate MAC frozen, a limit hit, a reload; until the client leaves "
             "(a client that reads too slowly is dropped: too_slow)",
}
STREAM_COMMANDS = frozenset({"watch"})  # the reply goes on: see Stream
CONNTRACK_FILTERS = ("service", "client", "backend")
EXPLAIN_ARGS = ("destination", "source", "network")
PRIVILEGED_COMMANDS = frozenset({"clear", "reload"})  # they change the daemon's state
CLEAR_ARGS = {"counters": (), "mac": ("network", "mac"), "peer": ("neighbor",)}


@dataclass(frozen=True)
class Stream:
    """The reply of a STREAM_COMMANDS request: its first line, then the events of `subscription`
    (a control.hub.Subscriber: take(), dropped, wake, close()) each as an `event_line`."""

    first: str
    subscription: Any


class StatusError(Exception):
    """A request the daemon refused, or a reply that is not valid; `code` is machine-readable."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def encode_request(command: str, **args: Any) -> str:
    req: dict[str, Any] = {"version": PROTOCOL_VERSION, "command": command}
    if args:
        req["args"] = args
    return json.dumps(req) + "\n"


def _reply(ok: bool, **body: Any) -> str:
    return json.dumps({"version": PROTOCOL_VERSION, "ok": ok, **body}, sort_keys=True) + "\n"


def _error(code: str, message: str) -> str:
    return _reply(False, error={"code": code, "message": message})


def error_reply(code: str, message: str) -> str:
    """An error reply line the server sends on its own (busy, request too large)."""
    return _error(code, message)


def event_line(event: dict[str, Any]) -> str:
    """One event of a `watch` stream (control.hub.Event.as_dict()) as a reply line."""
    return _reply(True, command="watch", result=event)


def _dispatch(view: NodeView, command: str, args: dict[str, Any], now: float) -> Any:
    handlers: dict[str, Callable[[], Any]] = {
        "status": lambda: view.status(now),
        "fdb": lambda: view.fdb(now, network=args.get("network")),
        "stats": lambda: view.stats(now),
        "peers": lambda: view.peers(now),
        "rib": lambda: view.rib(now),
        "routes": lambda: view.routes(now),
        "services": lambda: view.services(now),
        "conntrack": lambda: view.conntrack(now, **{k: args[k] for k in CONNTRACK_FILTERS if k in args}),
        "explain": lambda: _explain(view, args, now),
        "clear": lambda: _clear(view, args, now),
        "reload": lambda: view.reload(now),
        "doctor": lambda: view.doctor(now),
        "topology": lambda: view.topology(now),
        "watch": lambda: view.watch(now),
    }
    allowed = {"fdb": {"network"}, "conntrack": set(CONNTRACK_FILTERS), "explain": set(EXPLAIN_ARGS),
               "clear": {"what", *(a for names in CLEAR_ARGS.values() for a in names)}}.get(command, set())
    unknown = set(args) - allowed
    if unknown:
        raise StatusError("bad_request", f"command {command!r} takes no argument {sorted(unknown)[0]!r}")
    bad = sorted(k for k, v in args.items() if not isinstance(v, str))
    if bad:
        raise StatusError("bad_request", f"argument {bad[0]!r} must be a string")
    return handlers[command]()


def _explain(view: NodeView, args: dict[str, str], now: float) -> Any:
    if "destination" not in args:
        raise StatusError("bad_request", "explain needs a destination: an IP address, a MAC or a VIP:PORT")
    return view.explain(now, **args)


def _clear(view: NodeView, args: dict[str, str], now: float) -> Any:
    what = args.get("what")
    if what not in CLEAR_ARGS:
        raise StatusError("bad_request", f"clear what? {what!r}: one of {', '.join(CLEAR_ARGS)}")
    wanted = CLEAR_ARGS[what]
    extra = sorted(set(args) - {"what", *wanted})
    if extra:
        raise StatusError("bad_request", f"clear {what} takes no argument {extra[0]!r}")
    missing = [a for a in wanted if a not in args]
    if missing:
        raise StatusError("bad_request", f"clear {what} needs {' and '.join(missing)}")
    if what == "counters":
        return view.clear_counters(now)
    if what == "mac":
        return view.clear_mac(now, args["network"], args["mac"])
    return view.clear_peer(now, args["neighbor"])


def handle_line(line: str | bytes, view: NodeView, now: float, privileged: bool = False) -> str:
    """One request line in, one reply line out. Never raises on bad input.

    `privileged`: the client may change state (PRIVILEGED_COMMANDS); the server decides it.
    A command whose handler answers later (`reload`) or goes on (`watch`) needs `handle_line_async`."""
    reply = _handle(line, view, now, privileged)
    if isinstance(reply, Stream):
        reply.subscription.close()
        return _error("not_supported", "watch streams events: the socket server serves it")
    if not isinstance(reply, str):
        getattr(reply[1], "close", lambda: None)()  # a coroutine never awaited
        return _error("not_supported", f"{reply[0]} answers asynchronously: the server awaits it")
    return reply


async def handle_line_async(line: str | bytes, view: NodeView, now: float,
                            privileged: bool = False) -> str | Stream:
    """As `handle_line`, awaiting a handler that answers later (`reload`); a `Stream` for `watch`."""
    reply = _handle(line, view, now, privileged)
    if isinstance(reply, (str, Stream)):
        return reply
    command, pending = reply
    try:
        result = await pending
    except StatusError as err:
        return _error(err.code, str(err))
    return _reply(True, command=command, result=result)


def _handle(line: str | bytes, view: NodeView, now: float, privileged: bool) -> str | Stream | tuple[str, Any]:
    """A reply line, a Stream, or (command, the awaitable its result comes from)."""
    try:
        req = json.loads(line)
    except (ValueError, UnicodeDecodeError, RecursionError) as err:  # RecursionError: nested too deep
        return _error("bad_request", f"request is not JSON: {err}")
    if not isinstance(req, dict):
        return _error("bad_request", "request must be a JSON object")
    version = req.get("version")
    if version != PROTOCOL_VERSION:
        return _error(
            "bad_version", f"protocol version {version!r} is not supported (this daemon speaks {PROTOCOL_VERSION})"
        )
    command = req.get("command")
    if not isinstance(command, str) or command not in COMMANDS:
        return _error("unknown_command", f"unknown command {command!r}; known: {', '.join(COMMANDS)}")
    if command in PRIVILEGED_COMMANDS and not privileged:
        return _error("not_permitted", f"{command} changes the daemon's state and only root may run it; "
                                       "the status socket's group may run the read-only commands")
    args = req.get("args", {})
    if not isinstance(args, dict):
        return _error("bad_request", "args must be a JSON object")
    try:
        result = _dispatch(view, command, args, now)
    except StatusError as err:
        return _error(err.code, str(err))
    if inspect.isawaitable(result):
        return command, result
    if command in STREAM_COMMANDS:
        first, subscription = result
        return Stream(_reply(True, command=command, result=first), subscription)
    return _reply(True, command=command, result=result)


def decode_reply(line: str | bytes) -> Any:
    """The result of a reply line; StatusError if the daemon said no or the line is garbage."""
    try:
        reply = json.loads(line)
    except (ValueError, RecursionError):
        raise StatusError("bad_reply", f"reply is not JSON: {line[:80]!r}") from None
    if not isinstance(reply, dict) or reply.get("version") != PROTOCOL_VERSION:
        raise StatusError("bad_version", f"reply is not status protocol version {PROTOCOL_VERSION}")
    if not reply.get("ok"):
        err = reply.get("error")
        err = err if isinstance(err, dict) else {}
        raise StatusError(err.get("code", "error"), err.get("message", "request failed"))
    return reply.get("result")
