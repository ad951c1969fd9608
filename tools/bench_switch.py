"""Micro-benchmark of the forwarding decision (Switch.from_tap, Switch.from_vxlan), one core.

    python -m tools.bench_switch            # a table: microseconds per frame
    python -m tools.bench_switch --json     # the same as JSON
    python -m tools.bench_switch --against /tmp/base   # before/after: another tree's overlayd/ in
                                                       # /tmp/base (git archive main overlayd | tar -x -C /tmp/base)
    python -m tools.bench_switch --table-size          # 64 B frames/s, 10 vs 100,000 FDB entries

`--table-size` (also part of `make bench`, its `table` part): two switches,
one whose FDB holds 10 remote MACs and one holding 100,000 (type-2 routes, as
installed from BGP, spread over 100 VTEPs; MAC limits do not apply to them),
each sent the same 64-byte frames to known unicast destinations (8 MACs both
tables hold). The two are timed alternately, `--rounds` times, so that both
see the same machine; each round gives a ratio of frames/s (large table /
small; each side's speed in a round is its best of 100 short alternating chunks),
reported as the median with its min-max and the noisy flag.

What the daemon's hot loops call once per frame, on 1500-byte frames held in
a bytearray behind a memoryview as the read buffer is: a known unicast
destination (one VTEP), a broadcast (head-end replication to two VTEPs), an
unknown unicast destination (flooded), a broadcast from a new source MAC
each time (learned into a fresh switch whose MAC cap is raised to fit them
all), and a datagram from a flood-list VTEP (from_vxlan).

The switch is set up as `networks[]` with their default limits sets it up
(`apply_limits`, when this version of the Switch has limits) except that the
flood rate is high enough that no frame is refused: the figure is the cost of
the check, not of a drop. `storm` measures the refusal itself: broadcasts
beyond the default flood rate. The figure is the best of `--repeat` runs of
`--number` calls (timeit's advice: the minimum is the machine's speed). The
clock moves once every 64 frames, as the daemon reads it once per batch.

`--against` loads both trees' Switch into one process and alternates
between them in short runs (`--rounds` of 2000 calls per case and side), so
that a machine whose speed wanders (shared cores: here, runs at half speed
come and go) gives both sides the same chances at its full speed; the
minimum of each side is printed.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import sys
import time
import timeit
from collections.abc import Callable
from typing import Any

from overlayd.dataplane.switch import Switch
from overlayd.fabric.fdb import Source
from overlayd.wire.vxlan import encode_header
from tools.bench_report import spread

VNI = 100
A, B = "10.0.0.2", "10.0.0.3"
OWN = bytes.fromhex("020000000a01")
H1, H2, REMOTE, UNKNOWN = (bytes.fromhex(f"0200000001{i:02x}") for i in (1, 2, 3, 4))
BROADCAST = b"\xff" * 6


def frame(dst: bytes, src: bytes, size: int = 1500) -> memoryview:
    """An IPv4 frame of `size` bytes (Ethernet header included) in a writable buffer."""
    return memoryview(bytearray(dst + src + b"\x08\x00" + bytes([0x45]) + bytes(size - 15)))


def make_switch(flood_rate_pps: float | None = 1e12, max_local_macs: int | None = None) -> Switch:
    sw = Switch(4789, 300.0)
    sw.add_segment(VNI, "blue", own_macs=[OWN])
    sw.add_flood_vtep(VNI, A, Source.STATIC)
    sw.add_flood_vtep(VNI, B, Source.STATIC)
    sw.install_mac(VNI, REMOTE, A, Source.STATIC, 0.0)
    apply_limits(sw, flood_rate_pps, max_local_macs)
    sw.pop_events()
    return sw


def has_limits() -> bool:
    return hasattr(Switch, "set_limits")


def apply_limits(sw: Switch, flood_rate_pps: float | None, max_local_macs: int | None = None) -> None:
    """A network's default limits (config defaults), if this Switch has limits, with the flood rate
    (None: the default) and the MAC cap (None: the default) as given and no MAC learning rate."""
    if not has_limits():
        return
    from overlayd.config import NetworkConfig

    net = NetworkConfig(name="blue", vni=VNI, device="blue0")
    rate = net.flood_rate_pps if flood_rate_pps is None else flood_rate_pps
    sw.set_limits(VNI, max_local_macs=max_local_macs or net.max_local_macs, learn_rate_per_s=1e12,
                  learn_burst=1e12, flood_rate_pps=rate, flood_burst=max(net.flood_burst, rate), now=0.0)


def operations() -> dict[str, Callable[[], object]]:
    """Name -> one call of it."""
    sw = make_switch()
    sw.from_tap(VNI, frame(BROADCAST, H1), 0.0)
    unicast, bcast, unknown = frame(REMOTE, H1), frame(BROADCAST, H1), frame(UNKNOWN, H1)
    datagram = memoryview(bytearray(encode_header(VNI) + bytes(frame(H1, REMOTE))))
    clock = [0.0, 0]

    def tick() -> float:  # the daemon reads the clock once per batch of up to 64 frames
        clock[1] += 1
        if clock[1] == 64:
            clock[0] += 64e-6
            clock[1] = 0
        return clock[0]

    storm_sw = make_switch(flood_rate_pps=None)
    storm = frame(BROADCAST, H2)

    return {
        "from_tap, known unicast": lambda: sw.from_tap(VNI, unicast, tick()),
        "from_tap, broadcast (2 VTEPs)": lambda: sw.from_tap(VNI, bcast, tick()),
        "from_tap, unknown unicast": lambda: sw.from_tap(VNI, unknown, tick()),
        "from_tap, storm (flood refused)": lambda: storm_sw.from_tap(VNI, storm, tick()),
        "from_vxlan, from a flood VTEP": lambda: sw.from_vxlan(A, datagram, tick()),
    }


def learn_us(number: int, repeat: int) -> float:
    """Microseconds per broadcast from a new source MAC: `number` of them into a fresh switch."""
    frames = [frame(BROADCAST, (0x020300000000 + i).to_bytes(6, "big")) for i in range(number)]
    best = float("inf")
    for _ in range(repeat):
        sw = make_switch(max_local_macs=number + 16)
        from_tap = sw.from_tap
        gc.disable()  # as timeit does: the collector's pauses depend on what else the process holds
        try:
            start = time.perf_counter()
            for i, f in enumerate(frames):
                from_tap(VNI, f, (i >> 6) * 64e-6)
            best = min(best, time.perf_counter() - start)
        finally:
            gc.enable()
    return best / number * 1e6


def measure(number: int = 100_000, repeat: int = 5) -> dict[str, float]:
    """Name -> microseconds per frame (the best of `repeat` runs of `number` calls)."""
    results = {}
    for name, call in operations().items():
        best = min(timeit.repeat(call, number=number, repeat=repeat))
        results[name] = best / number * 1e6
    results["from_tap, new source MAC"] = learn_us(number, repeat)
    return results


def table_switch(entries: int) -> tuple[Switch, list[memoryview]]:
    """A switch whose FDB holds `entries` remote MACs (BGP-installed, over 100 VTEPs), and 64-byte
    frames from a local host to 8 of them (the first 8: every table of >= 8 entries holds them)."""
    sw = make_switch()
    vteps = [f"10.1.{i // 250}.{i % 250 + 1}" for i in range(100)]
    macs = [(0x020500000000 + i).to_bytes(6, "big") for i in range(entries)]
    for i, mac in enumerate(macs):
        sw.install_mac(VNI, mac, vteps[i % 100], Source.BGP, 0.0)
    sw.pop_events()
    frames = [frame(macs[i % min(8, entries)], H1, 64) for i in range(64)]
    sw.from_tap(VNI, frames[0], 0.0)  # H1 learned now, not during the timing
    return sw, frames


def known_unicast_us(sw: Switch, frames: list[memoryview], number: int) -> float:
    """Microseconds per from_tap call over `number` frames (cycling through `frames`), gc off."""
    from_tap = sw.from_tap
    batch = (frames * (number // len(frames) + 1))[:number]
    gc.disable()
    try:
        start = time.perf_counter()
        for i, f in enumerate(batch):
            if from_tap(VNI, f, (i >> 6) * 64e-6) is None:
                raise RuntimeError("a known unicast frame was dropped")
        elapsed = time.perf_counter() - start
    finally:
        gc.enable()
    return elapsed / number * 1e6


# Alternations within one table_size round: chunks of ~1 ms, so that a slow spell of a shared
# machine (load 8 on 2 cores) meets both sides alike; with 10 chunks of ~6 ms a round's ratio
# ranged 0.48-1.26, with 100 0.99-1.01 (same load).
CHUNKS = 100


def table_size(small: int = 10, large: int = 100_000, rounds: int = 9, number: int = 40_000,
               log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """64-byte known-unicast frames/s with `large` FDB entries against `small`, interleaved in
    `rounds` of CHUNKS alternating chunks of `number / CHUNKS` frames a side (a side's speed in a
    round is its best chunk, as timeit advises on a machine whose speed wanders); the ratio
    large/small of each round, summarized."""
    switches = {"small": table_switch(small), "large": table_switch(large)}
    per_s: dict[str, list[float]] = {"small": [], "large": []}
    chunk = max(64, number // CHUNKS)
    for r in range(rounds):
        best = {"small": float("inf"), "large": float("inf")}
        for c in range(CHUNKS):  # short alternating chunks; the best of each side is its speed this round
            for side in (("small", "large") if (r + c) % 2 == 0 else ("large", "small")):
                best[side] = min(best[side], known_unicast_us(*switches[side], chunk))
        for side, us in best.items():
            per_s[side].append(round(1e6 / us))
        if log:
            log(f"  round {r + 1}/{rounds}: {per_s['small'][-1]:,} frames/s with {small:,} entries, "
                f"{per_s['large'][-1]:,} with {large:,}")
    ratios = [big / little for big, little in zip(per_s["large"], per_s["small"])]
    return {"small": small, "large": large, "rounds": rounds, "frames_per_round": number,
            "frame_bytes": 64, "frames_per_s": per_s, "ratio": spread(ratios)}


def load_against(root: str) -> tuple[Any, dict[str, Callable[[], object]]]:
    """This module once more, importing the overlayd package found in `root`; and its operations.

    The current overlayd modules leave sys.modules for the import and come back after it, so
    both versions live side by side; the copy's functions keep their own.
    """
    ours = {m: mod for m, mod in sys.modules.items() if m == "overlayd" or m.startswith("overlayd.")}
    for m in ours:
        del sys.modules[m]
    sys.path.insert(0, root)
    try:
        spec = importlib.util.spec_from_file_location("bench_switch_against", __file__)
        copy = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(copy)
        if not os.path.abspath(copy.Switch.__module__ and sys.modules[copy.Switch.__module__].__file__).startswith(
                os.path.abspath(root)):
            raise RuntimeError(f"{root} has no overlayd package")
        ops = copy.operations()
    finally:
        sys.path.remove(root)
        for m in [m for m in sys.modules if m == "overlayd" or m.startswith("overlayd.")]:
            del sys.modules[m]
        sys.modules.update(ours)
    return copy, ops


def compare(root: str, rounds: int = 40, number: int = 2000) -> dict[str, tuple[float, float]]:
    """Name -> (us/frame in `root`'s tree, in ours): the best of `rounds` alternating runs."""
    other, theirs = load_against(root)
    ours = operations()
    times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in ours}
    for _ in range(rounds):
        for name in ours:
            for side, ops in enumerate((theirs, ours)):
                times[name][side].append(timeit.timeit(ops[name], number=number) / number * 1e6)
    learn = ([], [])
    for _ in range(max(3, rounds // 8)):
        learn[0].append(other.learn_us(number * 10, 1))
        learn[1].append(learn_us(number * 10, 1))
    times["from_tap, new source MAC"] = learn
    return {name: (min(a), min(b)) for name, (a, b) in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=100_000, help="calls per run")
    parser.add_argument("--repeat", type=int, default=5, help="runs; the best counts")
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--against", metavar="DIR", help="compare with the overlayd package in DIR")
    parser.add_argument("--rounds", type=int, default=None,
                        help="alternations (default 40 with --against, 9 with --table-size)")
    parser.add_argument("--table-size", action="store_true",
                        help="64 B frames/s with 100,000 FDB entries against 10, interleaved")
    args = parser.parse_args(argv)
    if args.table_size:
        got = table_size(rounds=args.rounds or 9, log=None if args.json else print)
        if args.json:
            print(json.dumps({"python": sys.version.split()[0], "table_size": got}, indent=2))
        else:
            r = got["ratio"]
            print(f"frames/s with {got['large']:,} entries / with {got['small']:,}: median {r['median']:.3f} "
                  f"(rounds {r['min']:.3f}-{r['max']:.3f})" + ("  noisy" if r["noisy"] else ""))
        return 0
    args.rounds = args.rounds or 40
    if args.against:
        table = compare(args.against, args.rounds)
        if args.json:
            print(json.dumps({"python": sys.version.split()[0], "against": args.against, "us_per_frame": {
                name: {"before": a, "after": b} for name, (a, b) in table.items()}}, indent=2))
            return 0
        print(f"Python {sys.version.split()[0]}: {args.against} (before) against this tree (after), "
              f"{args.rounds} alternating rounds")
        print(f"  {'us per frame':34s} {'before':>8s} {'after':>8s} {'change':>7s}")
        for name, (a, b) in table.items():
            print(f"  {name:34s} {a:8.3f} {b:8.3f} {100 * (b - a) / a:+6.1f}%")
        return 0
    limits = has_limits()
    results = measure(args.number, args.repeat)
    if args.json:
        print(json.dumps({"python": sys.version.split()[0], "limits": limits, "us_per_frame": results}, indent=2))
    else:
        print(f"Python {sys.version.split()[0]}, best of {args.repeat} x {args.number} calls, "
              f"limits {'on' if limits else 'absent'}")
        for name, us in results.items():
            print(f"  {name:34s} {us:6.3f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
