"""Load for the EVPN benchmark (tools/bench.py): many type-2 routes into a BGP peer, many MACs into a TAP.

Run inside a lab host (`host.popen(sys.executable, "-m", "tools.evpn_load", ...)`):

    python -m tools.evpn_load announce --peer 10.0.0.9 --local 10.0.0.3 --asn 65000 \\
        --routes 100000 --vni 100 --rt 65000:100 --vteps 100
    python -m tools.evpn_load macs --dev blue0 --count 100000

`announce` is a synthetic iBGP speaker built from overlayd's codecs: it
connects to the peer, sends our OPEN (`negotiation.local_open`) and a
KEEPALIVE, waits for the peer's OPEN and KEEPALIVE, then writes all the
UPDATEs at once: `--routes` MAC-only type-2 routes (MAC 02:01:00:00:00:00 + i,
label = VNI, the route target and the VXLAN encapsulation community, as
`RouteFactory.mac_ip` builds overlayd's own), spread over `--vteps` next hops
10.1.0.1, 10.1.0.2, ... (each its own RD <vtep>:<vni>, as if that many nodes
had announced them), packed by `split_update`, then an End-of-RIB. With
`--subnets N` it also announces N type-5 routes, /24s of `--subnet-base`
(10.129.0.0/24, 10.129.1.0/24, ...), label `--l3-vni`, route target
`--l3-rt`, the VXLAN encapsulation and a router MAC 02:00:<next hop>, spread
over the same next hops. On SIGUSR1 it withdraws every route it announced
and prints {"withdrawn": t}. Then it
holds the session: a KEEPALIVE every third of the negotiated hold time, and
whatever the peer sends is read and dropped without decoding, so that a
benchmark's other measurements do not pay for it. It is not a BGP
implementation (no FSM past Established, no NOTIFICATION handling): it stops
on SIGTERM, or when the peer closes, printing {"closed": t, "notification":
"cease/..."} (the last NOTIFICATION the peer sent, in words, or null). One
JSON line on stdout when the UPDATEs are written: {"established": t, "written": t, "routes": n,
"updates": n} (times from CLOCK_MONOTONIC, which every process shares).

`macs` writes `--count` frames into device `--dev` through a packet socket:
broadcast, ethertype 0x88B5 (IEEE local experimental), source MAC
02:02:00:00:00:00 + i, so the daemon reading the TAP learns one local MAC per
frame; with `--random SEED`, random locally administered unicast source MACs
instead (a pod forging MACs), made as they are sent; with `--rate PPS`, at
most that many frames a second (a reader slower than the writer otherwise
loses what overflows the TAP's queue). JSON line:
{"first_frame": t, "last_frame": t, "frames": n}. The kernel drops frames
when the TAP's queue is full; raise its txqueuelen first.
"""

from __future__ import annotations

import argparse
import errno
import ipaddress
import json
import random
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator

from overlayd.control.negotiation import SessionConfig, local_open
from overlayd.control.routes import EvpnNetwork, RouteFactory
from overlayd.wire.bgp.attributes import Encapsulation, PathAttributes, RouterMac, RouteTarget
from overlayd.wire.bgp.evpn import MacIpRoute, PrefixRoute, RouteDistinguisher
from overlayd.wire.bgp.messages import (
    KEEPALIVE,
    NOTIFICATION,
    OPEN,
    Keepalive,
    MessageReader,
    decode_message,
    describe_notification,
    encode_message,
)
from overlayd.wire.bgp.update import Update, split_update

IN_MAC_BASE = 0x02_01_00_00_00_00  # announce: the MACs of the routes
OUT_MAC_BASE = 0x02_02_00_00_00_00  # macs: the source MACs of the frames
VTEP_BASE = ipaddress.IPv4Address("10.1.0.1")
HELLO = 0x88B5
MIN_FRAME = 60


SUBNET_BASE = ipaddress.IPv4Network("10.129.0.0/24")


def mac_bytes(base: int, i: int) -> bytes:
    return (base + i).to_bytes(6, "big")


def type2_updates(routes: int, vni: int, rt: str, vteps: int, asn: int) -> Iterator[Update]:
    """The UPDATEs announcing `routes` MAC-only type-2 routes from `vteps` next hops (route i
    from VTEP i % vteps), each as full as `split_update` makes it."""
    target = RouteTarget.parse(rt)
    for v in range(min(vteps, routes)):
        vtep = VTEP_BASE + v
        net = EvpnNetwork(f"vtep{v}", vni, RouteDistinguisher.for_vtep(vtep, vni), target)
        factory = RouteFactory(vtep, asn)
        _, attrs = factory.mac_ip(net, mac_bytes(IN_MAC_BASE, v), None, 0)
        attrs = factory.for_peer(attrs, ebgp=False)
        mine = tuple(MacIpRoute(net.rd, mac_bytes(IN_MAC_BASE, i), None, vni=vni)
                     for i in range(v, routes, vteps))
        yield from split_update(Update(announced=mine, attributes=attrs))


def type5_updates(subnets: int, vni: int, rt: str, vteps: int, asn: int, base: ipaddress.IPv4Network
                  ) -> Iterator[Update]:
    """The UPDATEs announcing `subnets` type-5 routes (/24s from `base` on), subnet i from VTEP i % vteps."""
    target = RouteTarget.parse(rt)
    for v in range(min(vteps, subnets)):
        vtep = VTEP_BASE + v
        attrs = PathAttributes(next_hop=vtep, origin=0, local_pref=100,
                               ext_communities=(target, Encapsulation(), RouterMac(b"\x02\x00" + vtep.packed)))
        rd = RouteDistinguisher.for_vtep(vtep, vni if vni <= 0xFFFF else 0xFFFF)
        mine = tuple(PrefixRoute(rd, subnet_of(base, i), vni=vni) for i in range(v, subnets, vteps))
        yield from split_update(Update(announced=mine, attributes=attrs))


def subnet_of(base: ipaddress.IPv4Network, i: int) -> ipaddress.IPv4Network:
    return ipaddress.IPv4Network((int(base.network_address) + (i << (32 - base.prefixlen)), base.prefixlen))


def withdrawals(updates: list[Update]) -> list[Update]:
    """The UPDATEs withdrawing every route of `updates`."""
    routes = tuple(r for u in updates for r in u.announced)
    return split_update(Update(withdrawn=routes))


class Refused(Exception):
    """The peer closed the session or sent a NOTIFICATION before Established."""


def open_session(sock: socket.socket, config: SessionConfig) -> int:
    """OPEN and KEEPALIVE both ways; the negotiated hold time."""
    sock.sendall(encode_message(local_open(config)) + encode_message(Keepalive()))
    reader = MessageReader()
    hold = None
    while True:
        data = sock.recv(65536)
        if not data:
            raise Refused("the peer closed the connection during the OPEN exchange")
        reader.feed(data)
        for msg_type, body in reader:
            if msg_type == NOTIFICATION:
                raise Refused("peer sent " + describe_notification(body[0], body[1], body[2:]))
            if msg_type == OPEN:
                hold = min(config.hold_time_s, decode_message(msg_type, body).hold_time_s)
            elif msg_type == KEEPALIVE and hold is not None:
                return hold


def last_notification(tail: bytes) -> str | None:
    """The last NOTIFICATION in `tail` (the end of what the peer sent), in words, or None."""
    found = None
    at = tail.find(b"\xff" * 16)
    while at >= 0 and at + 21 <= len(tail):
        length = int.from_bytes(tail[at + 16 : at + 18], "big")
        if tail[at + 18] == NOTIFICATION and at + length <= len(tail) and length >= 21:
            found = describe_notification(tail[at + 19], tail[at + 20], bytes(tail[at + 21 : at + length]))
        at = tail.find(b"\xff" * 16, at + max(length, 19))
    return found


def announce(args: argparse.Namespace) -> int:
    config = SessionConfig(local_asn=args.asn, peer_asn=args.asn, router_id=args.local,
                           peer_address=args.peer, hold_time_s=args.hold_time)
    announced = list(type2_updates(args.routes, args.vni, args.rt, args.vteps, args.asn))
    if args.subnets:
        announced += type5_updates(args.subnets, args.l3_vni, args.l3_rt, args.vteps, args.asn,
                                   ipaddress.IPv4Network(args.subnet_base))
    messages = [encode_message(u) for u in announced]
    updates = len(messages)
    withdraw = threading.Event()
    signal.signal(signal.SIGUSR1, lambda *_: withdraw.set())
    wire = b"".join(messages) + encode_message(Update(end_of_rib=True))
    deadline = time.monotonic() + args.connect_timeout
    while True:
        try:
            sock = socket.create_connection((args.peer, args.port), timeout=5,
                                            source_address=(args.local, 0))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    sock.settimeout(None)
    try:
        hold = open_session(sock, config)
    except Refused as why:
        print(f"evpn_load: {why}", file=sys.stderr)
        return 1
    established = time.monotonic()
    sock.sendall(wire)
    print(json.dumps({"established": established, "written": time.monotonic(),
                      "routes": args.routes, "updates": updates}), flush=True)
    keepalive = encode_message(Keepalive())
    interval = hold / 3 if hold else None
    next_keepalive = time.monotonic() + interval if interval else None
    buf = bytearray(1 << 20)
    tail = b""  # the last bytes the peer sent: where its NOTIFICATION is when it closes
    while True:
        if withdraw.is_set():
            withdraw.clear()
            sock.sendall(b"".join(encode_message(u) for u in withdrawals(announced)))
            print(json.dumps({"withdrawn": time.monotonic()}), flush=True)
        timeout = 0.1 if next_keepalive is None else min(0.1, max(0.0, next_keepalive - time.monotonic()))
        ready, _, _ = select.select([sock], [], [], timeout)
        if ready:
            try:
                n = sock.recv_into(buf)
            except ConnectionResetError:  # closed with our UPDATEs unread: a reset after its NOTIFICATION
                n = 0
            if n == 0:
                print("evpn_load: the peer closed the session", file=sys.stderr)
                print(json.dumps({"closed": time.monotonic(), "notification": last_notification(tail)}),
                      flush=True)
                return 0
            tail = (tail + buf[:n])[-4096:]
        if next_keepalive is not None and time.monotonic() >= next_keepalive:
            sock.sendall(keepalive)
            next_keepalive += interval


def source_macs(count: int, first: int = 0, seed: int | None = None) -> Iterator[bytes]:
    """02:02:00:00:00:00 + first, + first + 1, ...; or, with a seed, random locally
    administered unicast MACs (the first octet's bit 1 set, bit 0 clear)."""
    if seed is None:
        for i in range(count):
            yield mac_bytes(OUT_MAC_BASE, first + i)
        return
    rng = random.Random(seed)
    for _ in range(count):
        yield ((rng.getrandbits(48) | 1 << 41) & ~(1 << 40)).to_bytes(6, "big")


def send_macs(args: argparse.Namespace) -> int:
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((args.dev, 0))
    head = b"\xff" * 6
    tail = HELLO.to_bytes(2, "big") + bytes(MIN_FRAME - 14)
    frames = (head + mac + tail for mac in source_macs(args.count, args.first, args.random))
    first = time.monotonic()
    for i, frame in enumerate(frames):
        if args.rate and i % 64 == 0:  # paced in batches of 64: on time, or asleep until it is
            ahead = first + i / args.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        while True:
            try:
                sock.send(frame)
                break
            except OSError as err:  # the device's queue is full: let the reader catch up
                if err.errno not in (errno.ENOBUFS, errno.EAGAIN):
                    raise
                time.sleep(0.0005)
    print(json.dumps({"first_frame": first, "last_frame": time.monotonic(), "frames": args.count}),
          flush=True)
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    a = sub.add_parser("announce", help="announce type-2 routes to a BGP peer and hold the session")
    a.add_argument("--peer", required=True)
    a.add_argument("--local", required=True, help="our address, also the router ID")
    a.add_argument("--port", type=int, default=179)
    a.add_argument("--asn", type=int, required=True, help="ours and the peer's (iBGP)")
    a.add_argument("--routes", type=int, default=100_000)
    a.add_argument("--vni", type=int, default=100)
    a.add_argument("--rt", default="65000:100")
    a.add_argument("--vteps", type=int, default=100)
    a.add_argument("--subnets", type=int, default=0, help="type-5 routes to announce too")
    a.add_argument("--subnet-base", default=str(SUBNET_BASE))
    a.add_argument("--l3-vni", type=int, default=1)
    a.add_argument("--l3-rt", default="65000:1")
    a.add_argument("--hold-time", type=int, default=90)
    a.add_argument("--connect-timeout", type=float, default=15.0)
    m = sub.add_parser("macs", help="write frames with distinct source MACs into a device")
    m.add_argument("--dev", required=True)
    m.add_argument("--count", type=int, default=100_000)
    m.add_argument("--first", type=int, default=0, help="index of the first MAC")
    m.add_argument("--random", type=int, default=None, metavar="SEED", help="random source MACs from this seed")
    m.add_argument("--rate", type=float, default=0, metavar="PPS", help="at most this many frames a second")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    args = parse_args(argv)
    return announce(args) if args.command == "announce" else send_macs(args)


if __name__ == "__main__":
    sys.exit(main())
