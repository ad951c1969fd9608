"""Micro-benchmark of the service path's packet work (overlayd.wire.ip / nat / reject), one core.

    python -m tools.bench_nat            # a table: microseconds per operation
    python -m tools.bench_nat --json     # the same as JSON

Each operation runs on a 1500-byte packet (a TCP segment with 1460 bytes
of payload, or its IPv6 twin with 1440) held in a bytearray behind a
memoryview, as the receive buffer is. A DNAT alternates between two
backends so every call really changes the address, the port and the
checksums. The figure is the best of `--repeat` runs of `--number` calls
(timeit's advice: the minimum is the machine's speed, the rest is noise).
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import timeit
from collections.abc import Callable

from overlayd.wire.ip import checksum, ones_sum, parse_flow, pseudo_header_sum
from overlayd.wire.nat import rewrite_dst, rewrite_src
from overlayd.wire.reject import reject

CLIENT4, VIP4, BACKEND4 = bytes([10, 244, 2, 3]), bytes([10, 96, 0, 10]), bytes([10, 244, 1, 5])
CLIENT6 = bytes.fromhex("fd000010024400020000000000000003")
VIP6 = bytes.fromhex("fd00001000960000000000000000000a")
BACKEND6 = bytes.fromhex("fd000010024400010000000000000005")


def tcp_packet(src: bytes, dst: bytes, size: int = 1500, flags: int = 0x18) -> memoryview:
    """A TCP segment of `size` bytes in all, checksums right, in a writable buffer."""
    ip_header = 20 if len(src) == 4 else 40
    payload = os.urandom(size - ip_header - 20)
    tcp = bytearray(struct.pack("!HHIIBBHHH", 40000, 80, 1, 2, 0x50, flags, 502, 0, 0) + payload)
    tcp[16:18] = checksum(pseudo_header_sum(src, dst, 6, len(tcp)) + ones_sum(tcp)).to_bytes(2, "big")
    if len(src) == 4:
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, size, 1, 0x4000, 64, 6, 0, src, dst))
        ip[10:12] = checksum(ones_sum(ip)).to_bytes(2, "big")
    else:
        ip = bytearray(struct.pack("!IHBB16s16s", 6 << 28, len(tcp), 6, 64, src, dst))
    return memoryview(ip + tcp)


def operations() -> dict[str, Callable[[], object]]:
    """Name -> one call of it; DNATs alternate between two backends (two calls per round)."""
    v4, v6 = tcp_packet(CLIENT4, VIP4), tcp_packet(CLIENT6, VIP6)
    f4, f6 = parse_flow(v4), parse_flow(v6)
    reply4 = tcp_packet(BACKEND4, CLIENT4)
    r4 = parse_flow(reply4)
    syn = tcp_packet(CLIENT4, VIP4, 60, 0x02)
    flip = [BACKEND4, VIP4]

    def dnat4() -> None:
        rewrite_dst(v4, f4, BACKEND4, 8080)
        rewrite_dst(v4, f4, VIP4, 80)

    def dnat6() -> None:
        rewrite_dst(v6, f6, BACKEND6, 8080)
        rewrite_dst(v6, f6, VIP6, 80)

    def dnat4_partial() -> None:
        rewrite_dst(v4, f4, BACKEND4, 8080, partial=True)
        rewrite_dst(v4, f4, VIP4, 80, partial=True)

    def reverse4() -> None:
        rewrite_src(reply4, r4, VIP4, 80)
        rewrite_src(reply4, r4, BACKEND4, 8080)

    def parse_and_dnat4() -> None:
        rewrite_dst(v4, parse_flow(v4), flip[0], 8080)
        flip.reverse()

    return {
        "parse_flow, IPv4 TCP 1500 B": lambda: parse_flow(v4),
        "parse_flow, IPv6 TCP 1500 B": lambda: parse_flow(v6),
        "rewrite_dst, IPv4 TCP 1500 B": dnat4,
        "rewrite_dst, IPv6 TCP 1500 B": dnat6,
        "rewrite_dst partial, IPv4 TCP": dnat4_partial,
        "rewrite_src (reverse), IPv4 TCP": reverse4,
        "parse_flow + rewrite_dst, IPv4": parse_and_dnat4,
        "reject (RST to a SYN), IPv4": lambda: reject(syn, parse_flow(syn)),
    }


PER_CALL = {"rewrite_dst, IPv4 TCP 1500 B": 2, "rewrite_dst, IPv6 TCP 1500 B": 2,
            "rewrite_dst partial, IPv4 TCP": 2, "rewrite_src (reverse), IPv4 TCP": 2}


def measure(number: int = 100_000, repeat: int = 5) -> dict[str, float]:
    """Name -> microseconds per operation (the best of `repeat` runs of `number` calls)."""
    results = {}
    for name, call in operations().items():
        best = min(timeit.repeat(call, number=number, repeat=repeat))
        results[name] = best / number / PER_CALL.get(name, 1) * 1e6
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=100_000, help="calls per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best counts")
    parser.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    results = measure(args.number, args.repeat)
    if args.json:
        print(json.dumps({"python": sys.version.split()[0], "us_per_op": results}, indent=2))
    else:
        print(f"Python {sys.version.split()[0]}, best of {args.repeat} x {args.number} calls")
        for name, us in results.items():
            print(f"  {name:34s} {us:6.2f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
