"""Helpers for guest tests: overlayd in lab hosts with the emulated guest's timeouts.

In the guest (qemu without KVM) Python runs about 50-100x slower than on the
host: a Python start that imports overlayd's daemon costs about a minute of
CPU. So the guest's pytest imports it once, and `start_nodes` forks each
daemon from it (tools/lab.py Host.fork: a new session, the host's namespace,
its own log, then overlayd's main() with the config file, as `python -m
overlayd -c FILE` would run it); and an `overlayctl` call would cost a Python
start too, so query status sockets in-process with `query`.

    nodes = start_nodes([(host_a, config_a), (host_b, config_b)])   # all start at once
    query(nodes[0], "stats")["counters"]
    stop_nodes(nodes)                                             # {host name: exit code}
"""

from __future__ import annotations

import os
import re
import signal
import sys
import time
from typing import Any

from overlayd.status.client import request
from tests.vm.report import note
from tools.lab import Host
from tools.nodes import Overlayd, start_overlayd

# Long enough for the first start (the imports) and daemons starting side by side on 2
# emulated CPUs of a busy host.
READY_TIMEOUT_S = float(os.environ.get("OVERLAYD_VM_READY_TIMEOUT_S", "240"))
STOP_TIMEOUT_S = 60.0
QUERY_TIMEOUT_S = 30.0


def start_nodes(hosts_and_configs: list[tuple[Host, dict[str, Any]]],
                timeout: float = READY_TIMEOUT_S) -> list[Overlayd]:
    """Start overlayd in each host at once, then wait until every one is ready."""
    start = time.monotonic()
    if "overlayd.io.daemon" not in sys.modules:  # once, in this process, before the forks
        import overlayd.cli
        import overlayd.io.daemon  # noqa: F401
        from overlayd.dataplane.offload import load_numpy

        load_numpy()  # tso and coalesce (on by default) need it
        note(f"overlayd: the daemon's modules imported once in {time.monotonic() - start:.1f} s")
        start = time.monotonic()
    nodes = [start_overlayd(host, config, wait=False, fork=True) for host, config in hosts_and_configs]
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
