"""Issue 13, items 14 and 16, on running daemons: two nodes a and b (IPv4 underlay, iBGP, network
blue); a's status socket in a directory others can reach, its group `nogroup`.

- Access (16): the socket is 0660, group nogroup. A process of user nobody (group nogroup)
  reads `status`, and is refused `clear` and `reload` (not_permitted); a user outside the
  group cannot open the socket; root clears the counters and resets the BGP session with b
  (b sees Cease / administrative reset, and the session is back), and is told `reload` is not
  supported yet.
- Load (14): a's daemon limited to 1024 file descriptors, 1000 clients connect to its status
  socket as fast as they can and stay idle. Meanwhile the BGP session a-b must stay
  Established (never reset), a ping across the overlay must keep answering, `overlayctl
  status` must keep answering, and a's descriptors must stay near its baseline plus the
  64-client cap. Figures printed.

The other users' clients run in a forked child that drops to their uid and gid: the venv's
Python, under /root, is not theirs to run.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from overlayd.status.client import request
from overlayd.status.protocol import StatusError, encode_request
from tests.netns.topology import add_underlay_host, bgp_node_config, overlay_ip
from tests.support import require_netns, require_programs, unmet
from tools.lab import Host, Lab, wait_for
from tools.nodes import Overlayd, start_overlayd

pytestmark = pytest.mark.root

NOBODY, NOGROUP = 65534, 65534
STRANGER = 65533  # a uid and gid with no group membership at all
CLIENTS = 1000
HOLD_S = 10.0
FD_LIMIT = 1024


@dataclass
class Pair:
    lab: Lab
    hosts: list[Host]
    nodes: list[Overlayd]

    def peer(self, i: int) -> dict:
        other = f"10.0.0.{2 - i}"
        return next(p for p in request(self.nodes[i].socket, "peers") if p["neighbor"] == other)


@pytest.fixture(scope="module")
def pair():
    require_netns()
    require_programs("prlimit", "ping")
    try:
        import grp
        import pwd
        if pwd.getpwuid(NOBODY).pw_gid != NOGROUP or grp.getgrgid(NOGROUP).gr_name != "nogroup":
            raise KeyError
    except KeyError:
        unmet("needs user nobody (65534) in group nogroup (65534)")
    with Lab() as lab:
        os.chmod(lab.tmpdir, 0o711)  # others may reach the socket's directory, not list the lab's files
        rundir = lab.tmpdir / "run"
        rundir.mkdir(mode=0o755)
        rundir.chmod(0o755)
        hosts = [add_underlay_host(lab, name, i + 1, 4) for i, name in enumerate(("a", "b"))]
        configs = [bgp_node_config(i, 4, count=2) for i in range(2)]
        configs[0]["node"]["status_socket"] = str(rundir / "a.sock")
        configs[0]["node"]["status_group"] = "nogroup"
        nodes = [start_overlayd(h, c, wait=False) for h, c in zip(hosts, configs)]
        for node in nodes:
            node.wait_ready()
        p = Pair(lab, hosts, nodes)
        wait_for(lambda: all(p.peer(i)["state"] == "Established" for i in range(2)), 20, what="BGP a-b")
        wait_for(lambda: hosts[0].ping(overlay_ip(1), timeout=2), 20, what="a to ping b across the overlay")
        yield p
        codes = [n.stop() for n in nodes]
        assert codes == [0, 0], codes


def as_user(uid: int, gid: int, path: str, command: str, **args) -> dict:
    """One request sent by a forked child running as uid/gid (no supplementary groups); the
    decoded reply line, or {"connect_error": errno name}."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: drop privileges, ask, report through the pipe, exit
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            try:
                s.connect(path)
            except OSError as err:
                out = {"connect_error": os.strerror(err.errno)}
            else:
                s.sendall(encode_request(command, **args).encode())
                out = json.loads(s.makefile("rb").readline())
            os.write(w, json.dumps(out).encode())
        finally:
            os._exit(0)
    os.close(w)
    data = b""
    while chunk := os.read(r, 65536):
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


def test_the_group_reads_and_only_root_changes_state(pair: Pair):
    a = pair.nodes[0]
    st = os.lstat(a.socket)
    assert oct(st.st_mode & 0o777) == oct(0o660) and st.st_gid == NOGROUP
    # nobody, in the socket's group: reads, is refused what changes state
    reply = as_user(NOBODY, NOGROUP, a.socket, "status")
    assert reply["ok"] is True and reply["result"]["node"] == "a"
    assert as_user(NOBODY, NOGROUP, a.socket, "peers")["ok"] is True
    for command, args in (("clear", {"what": "counters"}), ("clear", {"what": "peer", "neighbor": "10.0.0.2"}),
                          ("reload", {})):
        reply = as_user(NOBODY, NOGROUP, a.socket, command, **args)
        assert reply["ok"] is False and reply["error"]["code"] == "not_permitted", reply
        assert "only root may run it" in reply["error"]["message"]
    assert pair.peer(0)["state"] == "Established"
    # a user outside the group does not get in at all
    assert as_user(STRANGER, STRANGER, a.socket, "status") == {"connect_error": os.strerror(13)}
    # root
    before = request(a.socket, "stats")["counters"]
    assert before["tx_frames"] > 0
    out = a.ctl_text("clear", "counters")
    assert out.startswith("cleared the ")
    assert request(a.socket, "stats")["counters"]["tx_frames"] < before["tx_frames"]
    reload = a.host.run(sys.executable, "-m", "overlayd.status.ctl", "-s", a.socket, "reload", check=False)
    assert reload.returncode == 0 and reload.stdout.startswith("reloaded "), reload  # root may reload
    status = a.ctl("status")["status_socket"]
    assert status["mode"] == "0660" and status["group"] == "nogroup" and status["refused_not_permitted"] == 3
    line = next(l for l in a.ctl_text("status").splitlines() if l.startswith("status socket:"))
    assert "mode 0660 group nogroup" in line and "/64" in line
    print(f"\n{line}")


def test_clear_peer_resets_the_session_and_it_comes_back(pair: Pair):
    a = pair.nodes[0]
    since = pair.peer(1)["uptime_s"]
    t0 = time.monotonic()
    assert a.ctl_text("clear", "peer", "10.0.0.2").startswith("reset the BGP session with 10.0.0.2")
    wait_for(lambda: pair.peer(1)["uptime_s"] is None or pair.peer(1)["uptime_s"] < since, 10,
             interval=0.02, what="b to see the session reset")
    wait_for(lambda: all(pair.peer(i)["state"] == "Established" for i in range(2)), 20, interval=0.05,
             what="the session to come back")
    back = time.monotonic() - t0
    down = [line for line in pair.nodes[1].log().splitlines() if "peer 10.0.0.1: down:" in line]
    assert down and "reset by operator" in down[-1], pair.nodes[1].log()[-3000:]
    print(f"\nclear peer: b logged {down[-1].split(': ', 1)[1]!r}; Established again {back:.2f} s after the command")
    wrong = a.host.run(sys.executable, "-m", "overlayd.status.ctl", "-s", a.socket, "clear", "peer", "10.9.9.9",
                       check=False)
    assert wrong.returncode == 3 and "not_found" in wrong.stderr


FLOODER = r"""
import json, os, select, socket, sys, time
path, clients, hold = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
t0 = time.monotonic()
socks, refused = [], 0
for _ in range(clients):
    s = socket.socket(socket.AF_UNIX)
    s.setblocking(False)
    deadline = time.monotonic() + 10
    while True:
        try:
            s.connect(path)
        except BlockingIOError:  # EAGAIN: the listen queue is full; try again, as overlayctl does
            if time.monotonic() < deadline:
                time.sleep(0.001)
                continue
            refused += 1
            s.close()
        except OSError:
            refused += 1
            s.close()
        else:
            socks.append(s)
        break
connected = time.monotonic() - t0
print(json.dumps({"event": "connected", "s": connected, "sockets": len(socks), "refused": refused}), flush=True)
end = time.monotonic() + hold
closed = 0
alive = set(socks)
while time.monotonic() < end:
    ready, _, _ = select.select(list(alive)[:1000], [], [], 0.2)
    for s in ready:
        try:
            data = s.recv(4096)
        except OSError:
            data = b""
        if not data:
            closed += 1
            alive.discard(s)
            s.close()
print(json.dumps({"event": "done", "connect_s": connected, "closed_by_daemon": closed, "alive": len(alive),
                  "refused": refused}), flush=True)
"""


def fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_1000_idle_clients_starve_neither_bgp_nor_the_data_plane(pair: Pair):
    a, _b = pair.nodes
    pid = a.proc.pid
    assert "overlayd" in Path(f"/proc/{pid}/cmdline").read_text()
    subprocess.run(["prlimit", "--pid", str(pid), f"--nofile={FD_LIMIT}:{FD_LIMIT}"], check=True)
    baseline = fds(pid)
    accepted_before = request(a.socket, "status")["status_socket"]["accepted"] + 1  # + that request
    since_a, since_b = pair.peer(0)["uptime_s"], pair.peer(1)["uptime_s"]
    t_start = time.monotonic()
    ping = pair.hosts[0].popen("ping", "-4", "-n", "-i", "0.1", "-c", str(int((HOLD_S + 4) / 0.1)), "-W", "1",
                               overlay_ip(1))
    flooder = subprocess.Popen([sys.executable, "-c", FLOODER, a.socket, str(CLIENTS), str(HOLD_S)],
                               stdout=subprocess.PIPE, text=True)
    max_fds, status_ms, states = baseline, [], set()
    try:
        deadline = time.monotonic() + HOLD_S + 30
        while flooder.poll() is None and time.monotonic() < deadline:
            max_fds = max(max_fds, fds(pid))
            t0 = time.monotonic()
            try:
                request(a.socket, "status", timeout=5)
                status_ms.append((time.monotonic() - t0) * 1000)
            except (OSError, StatusError) as err:
                status_ms.append(float("inf"))
                print(f"status during the flood: {err}")
            states.add(pair.peer(1)["state"])
            time.sleep(0.1)
        out, _ = flooder.communicate(timeout=30)
    finally:
        if flooder.poll() is None:
            flooder.kill()
    events = [json.loads(line) for line in out.splitlines()]
    done = events[-1]
    assert done["event"] == "done", out
    ping.wait(timeout=HOLD_S + 30)
    ping_out = pair.hosts[0].log(ping)
    sent, received = map(int, re.search(r"(\d+) packets transmitted, (\d+) received", ping_out).groups())
    sock = request(a.socket, "status")["status_socket"]
    peer_a, peer_b = pair.peer(0), pair.peer(1)
    elapsed = time.monotonic() - t_start
    print(f"\n{CLIENTS} clients connected in {done['connect_s']:.2f} s and idled {HOLD_S:.0f} s: the daemon "
          f"accepted {sock['accepted'] - accepted_before} (with the test's status requests) and closed {done['closed_by_daemon']} (evicted idle "
          f"{sock['evicted_idle']}, busy {sock['refused_busy']}), "
          f"{done['alive']} held at the end (cap {sock['max_clients']}); {done['refused']} connects refused by "
          f"the kernel")
    print(f"daemon fds: baseline {baseline}, max {max_fds} (limit {FD_LIMIT}; cap {sock['max_clients']} + accept "
          f"batches of {sock['listen_backlog']}); overlayctl status answered "
          f"{sum(1 for ms in status_ms if ms != float('inf'))}/{len(status_ms)} times during the flood, max "
          f"{max(status_ms):.0f} ms")
    print(f"BGP a-b: states seen by b {sorted(states)}, uptime a {since_a} -> {peer_a['uptime_s']} s, "
          f"b {since_b} -> {peer_b['uptime_s']} s over {elapsed:.1f} s; overlay ping {received}/{sent} answered "
          f"({100 * (sent - received) / sent:.1f}% loss)")
    assert states == {"Established"}
    assert peer_a["uptime_s"] >= since_a + HOLD_S and peer_b["uptime_s"] >= since_b + HOLD_S  # never reset
    assert received == sent, ping_out
    assert all(ms < 2000 for ms in status_ms), status_ms
    # accepted sockets wait a loop turn or two to be admitted, and evicted ones to be closed: a few
    # accept batches beyond the cap, nowhere near the descriptor limit
    assert max_fds <= baseline + sock["max_clients"] + 8 * sock["listen_backlog"] < FD_LIMIT // 2
    assert done["alive"] <= sock["max_clients"] and done["closed_by_daemon"] + done["alive"] + \
        done["refused"] == CLIENTS
    assert a.proc.poll() is None
