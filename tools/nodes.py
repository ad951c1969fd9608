"""Run overlayd in a lab host and talk to it, for tests, the demo and benchmarks.

    node = start_overlayd(host, {"node": {...}, "networks": [...]})
    node.ctl("fdb")            # the JSON result of `overlayctl fdb --json`
    node.counters()["tx_flood_frames"]
    node.established("10.0.0.2"), node.fdb_row(mac), node.flood_list(), node.tap_mac()
    node.metrics()             # the text of GET /metrics (config `metrics: {listen: ...}`)
    node.reload(new_config)    # write the file, SIGHUP, return the log line saying how it went
    node.stop()                # SIGTERM, wait, return the exit code

The daemon runs from the same Python as the caller (`python -m overlayd`),
its config and status socket live in a temporary directory of the lab.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from tools.lab import Host, wait_for

READY_TIMEOUT_S = 15.0
# GET a URL and print the body: run in the daemon's namespace, where its metrics endpoint listens.
_HTTP_GET = ("import sys, urllib.request; "
             "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=10).read().decode())")


class Overlayd:
    def __init__(self, host: Host, config: dict[str, Any], workdir: Path, log_level: str = "debug",
                 env: dict[str, str] | None = None, fork: bool = False):
        self.host = host
        self.config = config
        self.socket = config["node"]["status_socket"]
        self.config_path = workdir / f"{host.name}.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        argv = ["-c", str(self.config_path), "--log-level", log_level]
        if fork:  # overlayd's main() in a fork of this process (Host.fork), no Python start
            self.proc = host.fork(lambda: _forked_main(argv, env or {}), "overlayd")
        else:
            self.proc = host.popen(sys.executable, "-m", "overlayd", *argv,
                                   **({"env": {**os.environ, **env}} if env else {}))

    def log(self) -> str:
        return self.host.log(self.proc)

    def ctl(self, *args: str) -> Any:
        """Run `overlayctl -s SOCKET ARGS --json` in the host; return the parsed result."""
        out = self.host.run(sys.executable, "-m", "overlayd.status.ctl", "-s", self.socket,
                            *args, "--json")
        return json.loads(out.stdout)

    def ctl_text(self, *args: str) -> str:
        """The human output of `overlayctl ARGS`."""
        return self.host.run(sys.executable, "-m", "overlayd.status.ctl", "-s", self.socket,
                             *args).stdout

    def counters(self) -> dict[str, int]:
        return self.ctl("stats")["counters"]

    def metrics(self, path: str = "/metrics") -> str:
        """The body of GET `path` from the daemon's metrics endpoint (`metrics.listen`), asked in its host."""
        listen = self.config["metrics"]["listen"]
        return self.host.run(sys.executable, "-c", _HTTP_GET, f"http://{listen}{path}").stdout

    def peer_state(self, address: str) -> str | None:
        """The BGP session state with a neighbor as `overlayctl peers` says it
        ("Established", ...; None: no such neighbor)."""
        return next((p["state"] for p in self.ctl("peers") if p["neighbor"] == address), None)

    def established(self, address: str) -> bool:
        return (self.peer_state(address) or "").lower() == "established"

    def fdb_row(self, mac: str) -> dict[str, Any] | None:
        """The `overlayctl fdb` row of a MAC, or None."""
        return next((r for r in self.ctl("fdb") if r["mac"] == mac), None)

    def flood_list(self, network: int = 0) -> list[str]:
        """The VTEPs a network (the first one unless told) floods to."""
        return list(self.ctl("status")["networks"][network]["flood_list"])

    def tap_mac(self, network: int = 0) -> str:
        """The MAC address of a network's TAP (the first one unless told)."""
        return self.ctl("status")["networks"][network]["mac"]

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"overlayd on {self.host.name} exited {self.proc.returncode}:\n{self.log()}")
            return "ready; status socket" in self.log()

        wait_for(ready, timeout, what=f"overlayd on {self.host.name} to be ready")

    def write_config(self, config: dict[str, Any]) -> None:
        """Replace the config file (SIGHUP or `overlayctl reload` reads it); socket and name kept."""
        config = json.loads(json.dumps(config))
        config["node"].setdefault("status_socket", self.socket)
        config["node"].setdefault("name", self.host.name)
        self.config = config
        self.config_path.write_text(yaml.safe_dump(config))

    def reload_lines(self) -> list[str]:
        """The log's lines saying how each reload went (applied or refused)."""
        return [line for line in self.log().splitlines() if "reload: " in line or "reload refused" in line]

    def reload(self, config: dict[str, Any] | None = None, timeout: float = 10.0) -> str:
        """SIGHUP, after writing `config` if given; the log line that says how it went."""
        if config is not None:
            self.write_config(config)
        seen = len(self.reload_lines())
        self.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: len(self.reload_lines()) > seen, timeout, what=f"overlayd on {self.host.name} to reload")
        return self.reload_lines()[seen]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"overlayd on {self.host.name} did not stop:\n{self.log()}") from None


def wait_showing_logs(predicate, what: str, *daemons: Any, timeout: float, interval: float = 0.2) -> Any:
    """wait_for, and on timeout fail with the tail of each daemon's log (anything with .host and .log())."""
    try:
        return wait_for(predicate, timeout, interval=interval, what=what)
    except TimeoutError as err:
        tails = "\n".join(f"--- {x.host.name} {type(x).__name__} log ---\n{x.log()[-4000:]}"
                          for x in daemons)
        raise AssertionError(f"{err}\n{tails}") from None


def _forked_main(argv: list[str], env: dict[str, str]) -> int:
    from overlayd.cli import main  # imported before the fork by whoever forks

    os.environ.update(env)
    return main(argv)


def start_overlayd(host: Host, config: dict[str, Any], wait: bool = True,
                   log_level: str = "debug", env: dict[str, str] | None = None,
                   fork: bool = False) -> Overlayd:
    """Start overlayd in `host`; config and status socket go to the lab's temporary directory.

    `fork`: run it in a fork of this process (Host.fork) rather than a new Python,
    for the emulated full-kernel tier; import overlayd.cli and overlayd.io.daemon first.
    """
    workdir = host.lab.tmpdir
    config = json.loads(json.dumps(config))  # a private copy
    config["node"].setdefault("status_socket", str(workdir / f"{host.name}.sock"))
    config["node"].setdefault("name", host.name)
    node = Overlayd(host, config, workdir, log_level, env, fork)
    if wait:
        node.wait_ready()
    return node
