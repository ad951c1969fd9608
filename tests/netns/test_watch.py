"""`overlayctl watch` against running daemons (issue 14, items 2 and 6).

Nodes a (10.0.0.1) and b (10.0.0.2), iBGP, hold time 3 s, network blue (VNI 100) with an
address on each TAP; a's blue caps its local MACs at CAP. On a:

1. Two `overlayctl watch --json` and one `overlayctl watch` (text) run. A frame from a new MAC
   into a's TAP is a `mac_learned` for both JSON watchers; a SIGHUP that adds a static FDB
   entry is a `reload_applied` naming the change, and one that changes a restart-only key is
   a `reload_refused` with the reason; b is SIGKILLed and both see `peer_down` for b, with its
   reason, within the hold time. b is started again.
2. A watcher that never reads (a raw socket from the test) and an `overlayctl watch --json`
   run while frames from 3000 new MACs come into a's TAP at 1000 a second (CAP of them
   learned, the rest refused) and a ping crosses the overlay: the one that never reads is
   dropped (its socket's last line, read after the drop, says `too_slow`), the other reads
   every MAC event and the `mac_refused` limit events (at most one a second, with counts
   adding up to the refusals), and every ping is answered.

The text watcher's output and a JSON log line are printed (README shows them).
"""

from __future__ import annotations

import itertools
import json
import re
import signal
import socket
import subprocess
import sys
import time
from datetime import datetime
from typing import Any

import pytest

from overlayd.status.client import request
from overlayd.status.protocol import encode_request
from tests.netns.topology import add_underlay_host, bgp_node_config, overlay_ip
from tests.support import require_netns, require_programs
from tools.lab import Host, Lab, wait_for
from tools.nodes import Overlayd, start_overlayd, wait_showing_logs

pytestmark = pytest.mark.root

HOLD_S = 3
CAP = 2000  # a's max_local_macs
STORM_MACS = 3000
STORM_PPS = 1000
B = "10.0.0.2"


def configs() -> list[dict[str, Any]]:
    cs = [bgp_node_config(i, 4, count=2) for i in range(2)]
    cs[0]["networks"][0]["max_local_macs"] = CAP
    return cs


class Pair:
    def __init__(self, lab: Lab):
        self.lab = lab
        self.hosts = [add_underlay_host(lab, name, i + 1, 4) for i, name in enumerate(("a", "b"))]
        self.configs = configs()
        self.nodes: list[Overlayd] = [start_overlayd(h, c, wait=False, log_level="info")
                                      for h, c in zip(self.hosts, self.configs)]
        for node in self.nodes:
            node.wait_ready()

    @property
    def a(self) -> Overlayd:
        return self.nodes[0]

    def up(self) -> bool:
        return all(p["state"] == "Established" for i in range(2) for p in request(self.nodes[i].socket, "peers"))

    def converge(self) -> None:
        wait_showing_logs(self.up, "the session a-b", *self.nodes, timeout=20)
        wait_for(lambda: self.hosts[0].ping(overlay_ip(1), timeout=2), 20, what="a to ping b across the overlay")

    def sock(self) -> dict[str, Any]:
        return request(self.a.socket, "status")["status_socket"]


class Watcher:
    """`overlayctl watch [--json]` running in `host`, its output in the lab's log of it."""

    def __init__(self, host: Host, path: str, json_lines: bool = True):
        self.host = host
        # SIGINT stops it as Ctrl-C does; a test run started in the background (`cmd &` in a
        # script) hands its children SIGINT ignored, so give it back its default first.
        self.proc = host.popen(sys.executable, "-m", "overlayd.status.ctl", "-s", path, "watch",
                               *(["--json"] if json_lines else []),
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))

    def text(self) -> str:
        out = self.host.log(self.proc)
        return out[: out.rfind("\n") + 1]  # whole lines only

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        found = [json.loads(line) for line in self.text().splitlines() if line.startswith("{")]
        return [e for e in found if name is None or e["event"] == name]

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        assert self.proc.wait(5) == 0, self.host.log(self.proc)


def send_macs(host: Host, count: int, first: int, rate: float = 0) -> subprocess.Popen:
    return host.popen(sys.executable, "-m", "tools.evpn_load", "macs", "--dev", "blue0", "--count", str(count),
                      "--first", str(first), *(["--rate", str(rate)] if rate else []))


def storm_mac(i: int) -> str:
    """The MAC of `tools.evpn_load macs` frame i: 02:02:00:00:00:00 + i."""
    return ":".join(f"{b:02x}" for b in (0x0202_0000_0000 + i).to_bytes(6, "big"))


@pytest.fixture(scope="module")
def pair():
    require_netns()
    require_programs("ping")
    with Lab() as lab:
        p = Pair(lab)
        p.converge()
        yield p
        for node in p.nodes:
            if node.proc.poll() is None:
                node.proc.send_signal(signal.SIGTERM)
        codes = {n.host.name: n.proc.wait(timeout=10) for n in p.nodes}
        assert set(codes.values()) == {0}, codes


def test_two_watchers_see_a_mac_a_reload_and_a_killed_peer_with_its_reason(pair: Pair):
    a = pair.hosts[0]
    watchers = [Watcher(a, pair.a.socket), Watcher(a, pair.a.socket)]
    text = Watcher(a, pair.a.socket, json_lines=False)
    wait_for(lambda: pair.sock()["watchers"] == 3, 10, what="three watchers on a")
    assert pair.sock()["clients"] <= 1  # watchers are not request clients

    # a MAC
    send_macs(a, 1, first=1).wait(10)
    mac = storm_mac(1)
    for w in watchers:
        wait_for(lambda w=w: [e for e in w.events("mac_learned") if e["mac"] == mac], 5, what=f"mac_learned {mac}")
    [learned] = [e for e in watchers[0].events("mac_learned") if e["mac"] == mac]
    assert (learned["network"], learned["vni"], learned["vtep"], learned["source"]) == ("blue", 100, "local",
                                                                                      "local")

    # a reload applied, then one refused
    static = {"mac": "02:00:00:00:99:01", "vtep": B}
    changed = json.loads(json.dumps(pair.configs[0]))
    changed["networks"][0]["fdb"] = [static]
    assert "applied" in pair.a.reload(changed)
    refused = json.loads(json.dumps(changed))
    refused["node"]["vxlan_port"] = 4790
    assert "reload refused" in pair.a.reload(refused)
    pair.a.write_config(changed)  # what runs, for b's restart below
    for w in watchers:
        wait_for(lambda w=w: w.events("reload_refused"), 5, what="reload_refused")
        [applied] = w.events("reload_applied")
        assert applied["changes"] == "static vteps/fdb of blue" and applied["reason"] is None
        [no] = w.events("reload_refused")
        assert "node.vxlan_port" in no["reason"] and no["level"] == "error"
        assert [e for e in w.events("mac_learned") if e["mac"] == static["mac"] and e["source"] == "static"]

    # b is SIGKILLed: both see it down, with its reason, within the hold time
    start = time.monotonic()
    pair.nodes[1].proc.kill()
    seen = []
    for w in watchers:
        wait_for(lambda w=w: [e for e in w.events("peer_down") if e["peer"] == B], HOLD_S, interval=0.02,
                 what="peer_down for b")
        seen.append(time.monotonic() - start)
    downs = [next(e for e in w.events("peer_down") if e["peer"] == B) for w in watchers]
    assert all(d["reason"] and d["msg"] == f"peer {B}: down: {d['reason']}" for d in downs), downs
    assert downs[0]["reason"] == downs[1]["reason"]
    print(f"\nSIGKILLed b: peer_down ({downs[0]['reason']!r}) seen by both JSON watchers after "
          f"{seen[0]:.2f} s and {seen[1]:.2f} s (hold time {HOLD_S} s)")
    withdrawn = [e for e in watchers[0].events("route_withdrawn") if e["peer"] == B]
    assert {e["route_type"] for e in withdrawn} >= {"imet"}

    pair.nodes[1].proc.wait(5)
    pair.nodes[1] = start_overlayd(pair.hosts[1], pair.configs[1], log_level="info")
    pair.converge()
    for w in watchers:
        wait_for(lambda w=w: [e for e in w.events("peer_up") if e["peer"] == B], 10, what="peer_up for b")
    for w in [*watchers, text]:
        w.stop()
    print("overlayctl watch (text):\n" + "\n".join(
        line for line in text.text().splitlines() if "route_" not in line and "neighbor_" not in line))
    print("overlayctl watch --json, the peer_down:\n" + json.dumps(downs[0], sort_keys=True))


def test_a_watcher_that_never_reads_is_dropped_the_other_reads_on_and_the_overlay_forwards(pair: Pair):
    pair.converge()
    a = pair.hosts[0]
    before = pair.sock()
    reader = Watcher(a, pair.a.socket)
    slow = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(pair.a.socket)
    slow.sendall(encode_request("watch").encode())  # and never reads
    wait_for(lambda: pair.sock()["watchers"] == 2, 10, what="two watchers on a")

    ping = a.popen("ping", "-n", "-c", "150", "-i", "0.02", "-W", "1", overlay_ip(1),
                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    first = 1000
    storm = send_macs(a, STORM_MACS, first, rate=STORM_PPS)
    wait_showing_logs(lambda: pair.sock()["dropped_too_slow"] > before["dropped_too_slow"], "the slow watcher dropped",
                      pair.a, timeout=STORM_MACS / STORM_PPS + 10)
    # now it reads: what its socket held, then the last line saying why
    slow.settimeout(10)
    data = b""
    while chunk := slow.recv(65536):
        data += chunk
    slow.close()
    lines = [json.loads(x) for x in data.splitlines()]
    assert lines[-1]["ok"] is False and lines[-1]["error"]["code"] == "too_slow", lines[-1]
    assert all(x["ok"] for x in lines[:-1])

    assert storm.wait(STORM_MACS / STORM_PPS + 30) == 0
    out = ping.communicate(timeout=30)[0].decode()
    m = re.search(r"(\d+) packets transmitted, (\d+) received", out)
    assert m, out
    sent, received = int(m.group(1)), int(m.group(2))
    limits = request(pair.a.socket, "status")["networks"][0]["limits"]
    refused = limits["refused_fdb_full"] + limits["refused_rate"]

    def all_seen() -> bool:
        macs = {e["mac"] for e in reader.events("mac_learned")}
        counted = sum(e["count"] for e in reader.events("mac_refused"))
        return counted == refused and len({storm_mac(first + i) for i in range(STORM_MACS)} & macs) == \
            STORM_MACS - refused
    wait_for(all_seen, 10, what="the reading watcher to have every MAC event and every refusal")
    refusals = reader.events("mac_refused")
    times = [datetime.fromisoformat(e["ts"]).timestamp() for e in refusals]
    assert all(b - a >= 0.9 for a, b in itertools.pairwise(times)), [e["ts"] for e in refusals]  # one a second
    s = pair.sock()
    assert s["watchers"] == 1 and reader.proc.poll() is None
    print(f"\n{STORM_MACS} new MACs at {STORM_PPS}/s into a's TAP (cap {CAP}): the watcher that never read was "
          f"dropped ({len(lines) - 1} events had reached its socket; its last line: {lines[-1]['error']['code']}: "
          f"{lines[-1]['error']['message']}); the other read {len(reader.events())} events: "
          f"{len(reader.events('mac_learned'))} mac_learned, {len(refusals)} mac_refused "
          f"(counts {[e['count'] for e in refusals]}, {refused} refused); ping across the overlay "
          f"{received}/{sent}")
    print("mac_refused:\n" + "\n".join(json.dumps(e, sort_keys=True) for e in refusals))
    assert received == sent
    reader.stop()
