"""Helpers for guest tests: overlayd in lab hosts with the emulated guest's timeouts.

In the guest (qemu without KVM) a Python process starts about 20x slower than
on the host: overlayd takes 20-60 s to be ready, and an `overlayctl` call
costs a Python start, so query status sockets in-process with `query`.

    nodes = start_nodes([(host_a, config_a), (host_b, config_b)])   # all start at once
    query(nodes[0], "stats")["counters"]
    stop_nodes(nodes)                                             # {host name: exit code}
"""

from __future__ import annotations

import os
import re
import signal
import time
from typing import Any

from overlayd.status.client import request
from tests.vm.report import note
from tools.lab import Host
from tools.nodes import Overlayd, start_overlayd

# Long enough for two daemons starting side by side on 2 emulated CPUs of a busy host.
READY_TIMEOUT_S = float(os.environ.get("OVERLAYD_VM_READY_TIMEOUT_S", "240"))
STOP_TIMEOUT_S = 60.0
QUERY_TIMEOUT_S = 30.0


def start_nodes(hosts_and_configs: list[tuple[Host, dict[str, Any]]],
                timeout: float = READY_TIMEOUT_S) -> list[Overlayd]:
    """Start overlayd in each host at once, then wait until every one is ready."""
    start = time.monotonic()
    nodes = [start_overlayd(host, config, wait=False) for host, config in hosts_and_configs]
    for node in nodes:
        node.wait_ready(timeout)
    note(f"overlayd: {len(nodes)} daemons started side by side were ready after "
         f"{time.monotonic() - start:.1f} s")
    return nodes


def pings(host: Host, addr: str, count: int) -> int:
    """Ping `addr` from `host` until `count` replies (at most 30 s); how many replies came.

    With -w, ping goes on sending every 0.2 s until `count` replies are in, so on a slow
    guest more go out and come back than `count`: compare, never look for "N received".
    """
    out = host.run("ping", "-4", "-n", "-c", str(count), "-i", "0.2", "-w", "30", addr, check=False).stdout
    stats = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert stats and int(stats.group(2)) >= count, f"{host.name} -> {addr}:\n{out}"
    return int(stats.group(2))


def query(node: Overlayd, command: str) -> Any:
    """The status socket's answer, asked in this process (no Python start)."""
    return request(node.socket, command, timeout=QUERY_TIMEOUT_S)


def stop_nodes(nodes: list[Overlayd], timeout: float = STOP_TIMEOUT_S) -> dict[str, int]:
    """SIGTERM to all at once, then each one's exit code by host name."""
    for node in nodes:
        if node.proc.poll() is None:
            node.proc.send_signal(signal.SIGTERM)
    # wait, never signal again: a second SIGTERM that lands after the daemon let go of its
    # handlers (slow in the emulated guest) would kill it with -15
    return {node.host.name: node.proc.wait(timeout) for node in nodes}
