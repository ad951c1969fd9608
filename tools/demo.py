"""`sudo make demo`: three overlayd nodes in network namespaces, narrated.

Builds three hosts on one underlay bridge (tools.lab), runs overlayd on each
with network `blue` (VNI 100, TAP blue0, 192.168.100.N/24) and a static flood
list naming the other two, pings across the overlay between every pair, shows
what node1's `overlayctl` says about it, stops the nodes and shows that they
cleaned up. The lab is torn down on the way out, even after Ctrl-C or an
error. Exit status: 0 every ping crossed, 1 one did not, 2 not root.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repo root

import yaml  # noqa: E402

from overlayd.dataplane.counters import COUNTERS  # noqa: E402
from tools.lab import CommandError, Lab  # noqa: E402
from tools.nodes import Overlayd, start_overlayd  # noqa: E402

NODES = 3
BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def step(title: str) -> None:
    print(f"\n{BOLD}== {title}{RESET}", flush=True)


def show(text: str, indent: str = "  ") -> None:
    for line in text.rstrip("\n").splitlines():
        print(f"{indent}{line}".rstrip())


def config(n: int) -> dict:
    """Node n (1-based): VTEP 10.0.0.n, the flood list names the other VTEPs."""
    return {
        "node": {"name": f"node{n}", "vtep": f"10.0.0.{n}"},
        "networks": [{
            "name": "blue", "vni": 100, "device": "blue0", "address": f"192.168.100.{n}/24",
            "vteps": [f"10.0.0.{m}" for m in range(1, NODES + 1) if m != n],
        }],
    }


def ping(node: Overlayd, n: int) -> bool:
    """Ping node n's overlay address from `node`; print ping's summary lines."""
    out = node.host.run("ping", "-q", "-n", "-c", "3", "-i", "0.2", "-w", "5",
                        f"192.168.100.{n}", check=False)
    print(f"  {node.host.name} -> node{n} (192.168.100.{n}):")
    show(out.stdout.split("statistics ---", 1)[-1].strip() or out.stderr, indent="    ")
    return out.returncode == 0


def demo(lab: Lab) -> bool:
    step("The underlay: one bridge, three hosts, each in its own network namespace")
    hosts = [lab.add_host(f"node{n}", v4=f"10.0.0.{n}/24") for n in range(1, NODES + 1)]
    for host in hosts:
        # No IPv6 on the TAPs created from here on: keeps the counters about our pings.
        host.sysctl("net.ipv6.conf.default.disable_ipv6", 1)
        addr = host.run("ip", "-br", "-4", "addr", "show", "dev", "eth0").stdout.split()
        print(f"  {host.netns:<14} eth0  {addr[2]:<13} port of bridge br0 in {lab.underlay}")

    step("Start overlayd on every host; node1's config:")
    nodes = [start_overlayd(h, config(n), wait=False) for n, h in enumerate(hosts, 1)]
    for node in nodes:
        node.wait_ready()
    show(yaml.safe_dump(nodes[0].config, sort_keys=False))
    print(f"  {DIM}(all three ready; each created blue0 and its status socket){RESET}")

    step("Ping across the overlay, every node to every other")
    ok = all([ping(node, n) for node in nodes for n in range(1, NODES + 1)
              if node.host.name != f"node{n}"])

    step("overlayctl status (node1)")
    show(nodes[0].ctl_text("status"))
    step("overlayctl fdb (node1): MACs learned from traffic, behind the VTEP that sent them")
    show(nodes[0].ctl_text("fdb"))
    step("overlayctl stats (node1): the counters that moved")
    stats = nodes[0].ctl("stats")
    counters = stats["counters"]
    moved = {k: counters[k] for k in COUNTERS if counters.get(k)}  # in the daemon's order
    width = max(map(len, moved), default=0)
    for name, value in moved.items():
        print(f"  {name:<{width}}  {value:>6}  {DIM}{stats['descriptions'].get(name, '')}{RESET}")

    step("Stop the nodes (SIGTERM): each removes its TAP device and status socket")
    for node in nodes:
        code = node.stop(signal.SIGTERM)
        tap = node.host.ip("link", "show", "dev", "blue0", check=False)
        gone = "gone" if tap.returncode != 0 else "STILL THERE"
        sock = "STILL THERE" if Path(node.socket).exists() else "gone"
        print(f"  {node.host.name}: exit status {code}, blue0 {gone}, status socket {sock}")
        ok = ok and code == 0 and tap.returncode != 0 and sock == "gone"
    return ok


def main() -> int:
    if os.geteuid() != 0:
        print("demo: needs root to create network namespaces and TAP devices; "
              "run `sudo make demo`", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # tear down on SIGTERM too
    lab = Lab()
    try:
        ok = demo(lab)
    except KeyboardInterrupt:
        print("\ndemo: interrupted", file=sys.stderr)
        return 130
    except (CommandError, RuntimeError, TimeoutError) as err:
        print(f"\ndemo: FAILED: {err}", file=sys.stderr)
        return 1
    finally:
        lab.close()
        print(f"\n{DIM}(lab {lab.prefix} torn down: namespaces and logs removed){RESET}")
    verdict = "ok, every ping crossed and every node cleaned up" if ok else "FAILED (see above)"
    print(f"\n{BOLD}demo: {verdict}{RESET}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
