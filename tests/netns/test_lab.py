import logging
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.netns.topology import DEVICE, add_underlay_host, node_config, overlay_ip
from tools.lab import CommandError, wait_for
from tools.nodes import start_overlayd


def netns_names() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def pids_in(netns: str) -> list[str]:
    return subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.split()


def alive(pid: str) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_hosts_on_the_underlay_reach_each_other_over_v4_and_v6(lab):
    a = lab.add_host("a", v4="10.0.0.1/24", v6="fd00::1/64")
    b = lab.add_host("b", v4="10.0.0.2/24", v6="fd00::2/64")
    assert (a.v4, a.v6) == ("10.0.0.1", "fd00::1")
    assert a.ping(b.v4)
    assert b.ping(a.v4)
    assert a.ping(b.v6)
    assert b.ping(a.v6)
    assert not a.ping("10.0.0.99", timeout=1)


def test_host_has_eth0_with_the_requested_mtu(lab):
    a = lab.add_host("a", v4="10.0.0.1/24", mtu=9000)
    [eth0] = a.json_ip("link", "show", "dev", "eth0")
    assert eth0["mtu"] == 9000
    assert "UP" in eth0["flags"]


def test_a_link_joins_two_hosts_directly(lab):
    a, b = lab.add_host("a"), lab.add_host("b")
    lab.add_link(a, b, "l0")
    for host, addr in ((a, "10.1.0.1/24"), (b, "10.1.0.2/24")):
        host.ip("addr", "add", addr, "dev", "l0")
        host.ip("link", "set", "l0", "up")
    assert a.ping("10.1.0.2")


def test_containers_on_a_macvlan_of_one_device_reach_each_other(lab):
    a = lab.add_host("a")
    a.ip("link", "add", "br7", "type", "bridge")
    a.ip("link", "set", "br7", "up")
    macvlan = ("type", "macvlan", "mode", "bridge")
    c1 = lab.add_container(a, "c1", "br7", macvlan, "192.168.7.1/24")
    c2 = lab.add_container(a, "c2", "br7", macvlan, "192.168.7.2/24")
    [link] = c1.json_ip("-d", "link", "show", "dev", "eth0")
    assert (link["linkinfo"]["info_kind"], c1.v4) == ("macvlan", "192.168.7.1")
    assert c1.run("sysctl", "-n", "net.ipv6.conf.eth0.disable_ipv6").stdout.strip() == "1"
    assert c1.ping(c2.v4)


def test_run_failure_names_the_command_and_its_output(lab):
    a = lab.add_host("a")
    with pytest.raises(CommandError) as failure:
        a.run("sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3")
    message = str(failure.value)
    assert "exit 3" in message and "exited 3" in message
    assert "to-stdout" in message and "to-stderr" in message


def test_popen_output_goes_to_a_log(lab):
    a = lab.add_host("a")
    proc = a.popen("sh", "-c", "echo hello; echo oops >&2")
    assert proc.wait(timeout=10) == 0
    assert a.log(proc) == "hello\noops\n"
    assert a.log_path(proc).parent == lab.tmpdir


def test_wait_for_names_what_it_waited_for():
    assert wait_for(lambda: 42, timeout=1) == 42
    with pytest.raises(TimeoutError, match="the moon"):
        wait_for(lambda: None, timeout=0.2, interval=0.05, what="the moon")


def test_close_stops_processes_and_deletes_namespaces(lab):
    a = lab.add_host("a", v4="10.0.0.1/24")
    lab.add_host("b", v4="10.0.0.2/24")
    stubborn = a.popen("sh", "-c", "trap '' TERM; sleep 60 & wait")
    plain = a.popen("sleep", "60")
    wait_for(lambda: len(pids_in(a.netns)) == 3, timeout=5, what="sh, its sleep and sleep")
    pids = pids_in(a.netns)
    names = {lab.underlay, *(h.netns for h in lab.hosts.values())}
    assert names <= netns_names()
    lab.close()
    assert stubborn.returncode is not None and plain.returncode is not None
    assert not [pid for pid in pids if alive(pid)]
    assert not names & netns_names()
    assert not lab.tmpdir.exists()
    lab.close()


def _report_namespace() -> int:
    print(f"netns inode {os.stat('/proc/self/ns/net').st_ino}")
    logging.getLogger("forked").warning("a warning, with no handler of the parent's")
    return 3


def test_fork_runs_a_function_in_the_namespace_with_its_own_log(lab):
    a = lab.add_host("a")
    proc = a.fork(_report_namespace, "report")
    assert proc.wait(timeout=10) == 3
    log = a.log(proc)
    assert f"netns inode {os.stat(f'/run/netns/{a.netns}').st_ino}\n" in log, log
    assert "a warning, with no handler of the parent's" in log, log
    assert a.log_path(proc).parent == lab.tmpdir
    assert os.stat("/proc/self/ns/net").st_ino != os.stat(f"/run/netns/{a.netns}").st_ino


def test_close_stops_forked_children(lab):
    a = lab.add_host("a")
    proc = a.fork(lambda: time.sleep(60) or 0, "sleeper")
    wait_for(lambda: str(proc.pid) in pids_in(a.netns), timeout=5, what="the child in a's namespace")
    lab.close()
    assert proc.returncode == -signal.SIGTERM
    assert not alive(str(proc.pid))


def test_forked_overlayd_nodes_ping_across_and_remove_their_devices(lab):
    """The full-kernel tier's way to start daemons (tests/vm/guest/guest.py), on the host's kernel."""
    hosts = [add_underlay_host(lab, name, i + 1, 4) for i, name in enumerate("ab")]
    nodes = [start_overlayd(host, node_config(i, 4, count=2), fork=True) for i, host in enumerate(hosts)]
    assert hosts[0].ping(overlay_ip(1), count=3, timeout=10)
    assert [node.stop() for node in nodes] == [0, 0]
    for node in nodes:
        assert "ready; status socket" in node.log()
        assert node.host.ip("link", "show", "dev", DEVICE, check=False).returncode != 0
