"""Multi-host topologies in Linux network namespaces, for tests, demos and benchmarks.

    from tools.lab import Lab, wait_for

    with Lab() as lab:
        a = lab.add_host("a", v4="10.0.0.1/24", v6="fd00::1/64")
        b = lab.add_host("b", v4="10.0.0.2/24", v6="fd00::2/64", mtu=9000)
        assert a.ping(b.v4) and a.ping(b.v6)
        server = b.popen("iperf3", "-s")          # output goes to b.log_path(server)
        wait_for(lambda: "listening" in b.log(server), timeout=5, what="iperf3 server")
        print(a.run("iperf3", "-c", b.v4, "-t", "1").stdout)
        links = a.json_ip("link", "show", "dev", "eth0")   # parsed `ip -j` output

Lab(prefix=None)
    Every namespace a lab creates is named "<prefix>-<something>", the prefix
    being "ovl" plus 4 random hex digits unless given, so concurrent runs and
    leftovers from killed runs never collide. Nothing is created in the root
    namespace, so interface names need no prefix.
lab.add_host(name, v4=None, v6=None, mtu=1500) -> Host
    Creates netns "<prefix>-<name>" with lo up and "eth0" carrying the given
    addresses (IPv6 duplicate address detection off, so they work at once).
    eth0 is one end of a veth pair; the other end, "v-<name>", is a port of
    bridge "br0" (multicast snooping off, so it floods like a hub for
    multicast) in the underlay namespace "<prefix>-ul" (lab.underlay),
    created with the first host. Every host can reach every other host.
lab.add_pod(node, name, bridge, v4=None, gateway=None, mtu=1500, v6=None, gateway6=None) -> Host
    A namespace "<prefix>-<node>-<name>" whose eth0 is a veth into `node`, its
    other end ("p-<name>") a port of `bridge` there; `v4` and `v6` (with
    length) on eth0, and default routes via `gateway`, `gateway6` when given:
    a pod on a node's bridge, without CNI.
lab.add_port(host, ifname, mtu=1500) -> str
    One more link to br0: `ifname` in the host (down, no address), its peer
    "v<N>-<name>" a port of br0 (N = 1, 2, ...); returns the port's name.
    For bonds, VLANs and the like built in the host.
lab.close()
    Stops every process started through the lab (SIGTERM to its process
    group, SIGKILL after 3 s, then SIGKILL to anything still inside a lab
    namespace), deletes the namespaces and the log directory. Idempotent,
    never raises; a `with` block calls it.
Host
    .name .netns; .v4 .v6 (address without prefix length, or None)
    .run(*cmd, check=True, timeout=30, input=None) -> CompletedProcess (text)
        Runs cmd in the namespace; a failure raises CommandError, whose
        message holds the command, exit code, stdout and stderr.
    .ip(*args), .json_ip(*args), .sysctl(key, value)
    .popen(*cmd, **popen_kwargs) -> Popen
        Starts cmd in the namespace in its own process group, stdin from
        /dev/null, stdout+stderr to a log file unless given in popen_kwargs.
    .fork(main, name) -> Forked
        Like popen, but the child is a fork of this process that enters the
        namespace and calls main() (its return value is the exit code): no
        new Python starts. For the emulated full-kernel tier, where a Python
        start with overlayd's imports costs about a minute of CPU.
    .log_path(proc) -> Path | None, .log(proc) -> str (the log so far)
    .ping(addr, count=1, timeout=5) -> bool
wait_for(predicate, timeout, interval=0.1, what="") -> the first truthy value
    of predicate(), or TimeoutError naming `what`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Callable

TERM_GRACE_S = 3.0
_HOST_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,12}")


class CommandError(subprocess.CalledProcessError):
    def __str__(self) -> str:
        return (
            f"command {' '.join(self.cmd)!r} exited {self.returncode}\n"
            f"--- stdout ---\n{self.stdout or ''}--- stderr ---\n{self.stderr or ''}"
        )


def run(*cmd: str, check: bool = True, timeout: float = 30,
        input: str | None = None) -> subprocess.CompletedProcess:
    """Run cmd, capturing text output; raise CommandError on failure if check."""
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise CommandError(result.returncode, cmd, result.stdout, result.stderr)
    return result


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.1,
             what: str = "") -> Any:
    """Call predicate until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout} s waiting for {what or predicate!r}")
        time.sleep(interval)


class Host:
    def __init__(self, lab: Lab, name: str, netns: str, v4: str | None, v6: str | None):
        self.lab = lab
        self.name = name
        self.netns = netns
        self.v4 = v4
        self.v6 = v6

    def __repr__(self) -> str:
        return f"Host({self.name!r}, netns={self.netns!r}, v4={self.v4!r}, v6={self.v6!r})"

    def run(self, *cmd: str, check: bool = True, timeout: float = 30,
            input: str | None = None) -> subprocess.CompletedProcess:
        return run("ip", "netns", "exec", self.netns, *cmd,
                   check=check, timeout=timeout, input=input)

    def ip(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return run("ip", "-n", self.netns, *args, check=check)

    def json_ip(self, *args: str) -> Any:
        return json.loads(run("ip", "-n", self.netns, "-j", *args).stdout or "[]")

    def sysctl(self, key: str, value: str | int) -> None:
        self.run("sysctl", "-qw", f"{key}={value}")

    def popen(self, *cmd: str, **kw: Any) -> subprocess.Popen:
        log = None
        if "stdout" not in kw or "stderr" not in kw:
            log = self.lab._new_log(self.name, cmd[0])
            logfile = open(log, "wb")
            kw.setdefault("stdout", logfile)
            kw.setdefault("stderr", subprocess.STDOUT if kw["stdout"] is logfile else logfile)
        kw.setdefault("stdin", subprocess.DEVNULL)
        try:
            proc = subprocess.Popen(["ip", "netns", "exec", self.netns, *cmd],
                                    start_new_session=True, **kw)
        finally:
            if log:
                logfile.close()
        self.lab._procs.append((proc, log))
        return proc

    def fork(self, main: Callable[[], int], name: str) -> Forked:
        """Run main() in a child forked from this process, inside the namespace (see popen).

        The child does what `ip netns exec NETNS` and popen's defaults do for a
        program: a new session, this namespace (setns), stdin from /dev/null,
        stdout and stderr to a log file, fresh sys.stdout/sys.stderr on them and
        a root logger without the parent's handlers; then main(). Only a process
        with no threads and no running event loop should fork.
        """
        from pyroute2.netns import setns  # only the guest tier forks

        log = self.lab._new_log(self.name, name)
        pid = os.fork()
        if pid == 0:  # the child: never returns
            code = 1
            try:
                os.setsid()
                out = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
                os.dup2(out, 1)
                os.dup2(out, 2)
                sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
                sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
                logging.root.handlers.clear()
                setns(self.netns, flags=0)
                code = main()
            except SystemExit as exit_:
                code = exit_.code if isinstance(exit_.code, int) else 1
            except BaseException:  # noqa: BLE001 - the child reports and exits, whatever happened
                traceback.print_exc()
            finally:
                with contextlib.suppress(Exception):
                    sys.stdout.flush()
                    sys.stderr.flush()
                os._exit(code)
        proc = Forked(pid, [name])
        self.lab._procs.append((proc, log))  # type: ignore[arg-type] - Popen's interface
        return proc

    def log_path(self, proc: subprocess.Popen) -> Path | None:
        return next((log for p, log in self.lab._procs if p is proc), None)

    def log(self, proc: subprocess.Popen) -> str:
        path = self.log_path(proc)
        return path.read_text(errors="replace") if path and path.exists() else ""

    def capture(self, path: Path, bpf: str, iface: str = "eth0") -> Capture:
        """Start tcpdump on `iface` writing packets matching `bpf` to `path`; returns once it listens."""
        return Capture(self, path, bpf, iface)

    def ping(self, addr: str, count: int = 1, timeout: float = 5) -> bool:
        family = "-6" if ipaddress.ip_address(addr).version == 6 else "-4"
        result = self.run("ping", family, "-q", "-n", "-c", str(count), "-i", "0.2",
                          "-w", str(max(1, round(timeout))), addr,
                          check=False, timeout=timeout + 5)
        return result.returncode == 0


class Capture:
    """A running tcpdump (see Host.capture); `stop()` ends it and leaves a complete pcap."""

    def __init__(self, host: Host, path: Path, bpf: str, iface: str = "eth0"):
        self.host = host
        self.path = path
        # --immediate-mode: otherwise the kernel hands packets over in blocks, and a block
        # not yet handed over when tcpdump stops is lost with its packets.
        self.proc = host.popen("tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-s", "0",
                               "-w", str(path), bpf)
        wait_for(lambda: "listening on" in host.log(self.proc), timeout=10, what="tcpdump to start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Forked:
    """The part of subprocess.Popen's interface that labs and tests use, for a forked child."""

    def __init__(self, pid: int, args: list[str]):
        self.pid = pid
        self.args = args
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(0.05)
        return self.returncode  # type: ignore[return-value]

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Lab:
    def __init__(self, prefix: str | None = None):
        self.prefix = prefix or f"ovl{secrets.token_hex(2)}"
        self.underlay = f"{self.prefix}-ul"
        self.hosts: dict[str, Host] = {}
        self.tmpdir = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self._netns: list[str] = []
        self._procs: list[tuple[subprocess.Popen, Path | None]] = []
        self._ports: dict[str, int] = {}
        self._closed = False

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add_host(self, name: str, v4: str | None = None, v6: str | None = None,
                 mtu: int = 1500) -> Host:
        if not _HOST_NAME.fullmatch(name):
            raise ValueError(f"host name {name!r}: use 1-13 letters, digits, '-' or '_'")
        if name in self.hosts or name == "ul":
            raise ValueError(f"host name {name!r} is taken")
        v4_if = ipaddress.IPv4Interface(v4) if v4 else None
        v6_if = ipaddress.IPv6Interface(v6) if v6 else None
        if not self._netns:
            self._add_netns(self.underlay)
            ul = ("ip", "-n", self.underlay)
            run("ip", "netns", "exec", self.underlay, "sysctl", "-qw",
                "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1")
            run(*ul, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
            run(*ul, "link", "set", "br0", "up")
        netns = f"{self.prefix}-{name}"
        self._add_netns(netns)
        host = Host(self, name, netns, str(v4_if.ip) if v4_if else None,
                    str(v6_if.ip) if v6_if else None)
        host.sysctl("net.ipv6.conf.all.accept_dad", 0)
        host.sysctl("net.ipv6.conf.default.accept_dad", 0)
        self.add_port(host, "eth0", mtu)
        host.ip("link", "set", "lo", "up")
        if v4_if:
            host.ip("addr", "add", str(v4_if), "dev", "eth0")
        if v6_if:
            host.ip("-6", "addr", "add", str(v6_if), "dev", "eth0", "nodad")
        host.ip("link", "set", "eth0", "up")
        self.hosts[name] = host
        return host

    def add_pod(self, node: Host, name: str, bridge: str, v4: str | None = None, gateway: str | None = None,
                mtu: int = 1500, v6: str | None = None, gateway6: str | None = None) -> Host:
        netns = f"{self.prefix}-{node.name}-{name}"
        self._add_netns(netns)
        pod = Host(self, f"{node.name}-{name}", netns, str(ipaddress.IPv4Interface(v4).ip) if v4 else None,
                   str(ipaddress.IPv6Interface(v6).ip) if v6 else None)
        port = f"p-{name}"[:15]
        node.ip("link", "add", port, "mtu", str(mtu), "type", "veth", "peer", "name", "eth0", "mtu", str(mtu),
                "netns", netns)
        node.ip("link", "set", port, "master", bridge, "up")
        pod.ip("link", "set", "lo", "up")
        if v4:
            pod.ip("addr", "add", v4, "dev", "eth0")
        if v6:
            pod.ip("-6", "addr", "add", v6, "dev", "eth0", "nodad")
        pod.ip("link", "set", "eth0", "up")
        if gateway:
            pod.ip("route", "add", "default", "via", gateway)
        if gateway6:
            pod.ip("-6", "route", "add", "default", "via", gateway6)
        return pod

    def add_container(self, node: Host, name: str, parent: str, link: tuple[str, ...], v4: str) -> Host:
        """A namespace with eth0 made on `node`'s device `parent` by `ip link add link parent ...
        <link>` (macvlan, ipvlan: `("type", "ipvlan", "mode", "l2")`), moved in, holding `v4`.
        IPv4 only: IPv6 is off on eth0, so no ND or MLD of its own crosses the parent."""
        netns = f"{self.prefix}-{node.name}-{name}"
        self._add_netns(netns)
        container = Host(self, f"{node.name}-{name}", netns, str(ipaddress.IPv4Interface(v4).ip), None)
        port = f"c-{name}"[:15]
        node.ip("link", "add", "link", parent, "name", port, *link)
        node.ip("link", "set", port, "netns", netns)
        container.ip("link", "set", port, "name", "eth0")
        container.sysctl("net.ipv6.conf.eth0.disable_ipv6", 1)
        container.ip("link", "set", "lo", "up")
        container.ip("addr", "add", v4, "dev", "eth0")
        container.ip("link", "set", "eth0", "up")
        return container

    def add_link(self, a: Host, b: Host, ifname: str, mtu: int = 1500) -> None:
        """A veth straight from `a` to `b`, named `ifname` at both ends, left down and without addresses."""
        run("ip", "-n", a.netns, "link", "add", ifname, "mtu", str(mtu), "type", "veth",
            "peer", "name", ifname, "mtu", str(mtu), "netns", b.netns)

    def add_port(self, host: Host, ifname: str, mtu: int = 1500) -> str:
        """Another link from `host` to the underlay bridge: `ifname` in the host (left down,
        without addresses), a veth whose other end is a port of br0; returns that port's name."""
        index = self._ports.get(host.name, 0)
        port = f"v-{host.name}" if index == 0 else f"v{index}-{host.name}"
        if len(port) > 15:
            raise ValueError(f"underlay port name {port!r} is too long: use a shorter host name")
        run("ip", "-n", self.underlay, "link", "add", port, "mtu", str(mtu), "type", "veth",
            "peer", "name", ifname, "mtu", str(mtu), "netns", host.netns)
        run("ip", "-n", self.underlay, "link", "set", port, "master", "br0", "up")
        self._ports[host.name] = index + 1
        return port

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            self._stop_processes()
        for netns in reversed(self._netns):
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                run("ip", "netns", "del", netns, check=False)
        shutil.rmtree(self.tmpdir, ignore_errors=True)

    def _add_netns(self, netns: str) -> None:
        self._netns.append(netns)
        run("ip", "netns", "add", netns)

    def _new_log(self, host: str, program: str) -> Path:
        return self.tmpdir / f"{host}-{len(self._procs)}-{Path(program).name}.log"

    def _stop_processes(self) -> None:
        running = [p for p, _ in self._procs if p.returncode is None]
        for proc in running:
            _killpg(proc, signal.SIGTERM)
        deadline = time.monotonic() + TERM_GRACE_S
        for proc in running:
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _killpg(proc, signal.SIGKILL)
                proc.wait()
        for netns in self._netns:
            pids = run("ip", "netns", "pids", netns, check=False).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass


def _killpg(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
