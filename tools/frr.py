"""Run FRR (zebra + bgpd, staticd if asked, from /usr/lib/frr) in a lab host; read it through vtysh.

    from tools.frr import Neighbor, bgp_config, start_frr

    frr = start_frr(host, bgp_config(65000, "10.0.0.9", [Neighbor("10.0.0.1", 65000)],
                                     families=("ipv4-unicast",)))
    frr.neighbor_state("10.0.0.1")             # "Established", "Active", ... (None: unknown)
    frr.vtysh_json("show bgp summary json")   # any `... json` command, parsed
    frr.ip_routes()                            # `show ip route json`
    frr.evpn_routes()                          # the EVPN table, one flat dict per path
    frr.evpn_macs()                            # `show evpn mac vni all json` (zebra)
    frr.configure("router bgp 65000\\n neighbor 10.0.0.2 remote-as 65000\\n")
    frr.stop()

The caller gives the configuration as text, in frr.conf's language (the
helpers below write the common parts). Everything lives in one directory of
the lab's temporary directory, `<tmpdir>/<host>-frr/`: frr.conf, an empty
vtysh.conf, the pid files, zebra's zserv socket (zserv.api) and the vty
sockets (zebra.vty, bgpd.vty); the machine's /etc/frr and /var/run/frr are
never read or written. (FRR still makes its crash-log directory,
/var/tmp/frr/<daemon>.<pid>, and removes it when the daemon exits cleanly.)

How the daemons run: each in the host's network namespace through
`host.popen` (so `Lab.close` stops them), in the foreground, logging to
stdout at level debug (`host.log(proc)`, `frr.log()`), the TCP vty off
(`-P 0`), as user root with group frrvty (`-u root -g frrvty`: FRR 8.4
refuses to start unless its user is in the vty group the package was built
with, `frrvty`, and root is not a member, so `-g root` exits at once with
"user(root) is not part of vty group specified(frrvty)"). zebra keeps its
routes in the namespace's kernel (proto bgp, metric 20 for BGP's), and
deletes them when it stops.

Configuration goes in as FRR's own boot does it: the daemons start with an
empty config file, then `vtysh -b` reads frr.conf and hands each daemon its
commands; a line no daemon accepts fails the start with vtysh's message and
the logs. A `frr defaults PROFILE` line is also given to the daemons as
`-F PROFILE`, since the profile only takes effect at startup. Commands of a
daemon that is not running (`ip route ...` without staticd) are dropped by
vtysh without an error: name the daemons you need (`daemons=`).

`start_frr` returns once every daemon answers on its vty socket and the
config is in; sessions may still be coming up.
"""

from __future__ import annotations

import grp
import ipaddress
import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools.lab import CommandError, Host, wait_for

FRR_DIR = Path("/usr/lib/frr")
VTYSH = "vtysh"
READY_TIMEOUT_S = 20.0
DAEMONS = ("zebra", "bgpd")
KNOWN_DAEMONS = ("zebra", "bgpd", "staticd")
ZEBRA_CLIENTS = {"bgpd": "bgp", "staticd": "static"}  # as `show zebra client summary` names them
VTY_GROUP = "frrvty"  # the group FRR 8.4 was built to require (--enable-vty-group)
LOG_TAIL_CHARS = 6000
_PROFILE = re.compile(r"^\s*frr\s+defaults\s+(\S+)\s*$", re.MULTILINE)


def missing(daemons: Iterable[str] = DAEMONS) -> str | None:
    """What this machine lacks to run FRR here (None: nothing): the daemons, vtysh, the
    vty group. Debian: `apt-get install frr` (scripts/bootstrap does it)."""
    lacking = [str(FRR_DIR / d) for d in daemons if not (FRR_DIR / d).exists()]
    if shutil.which(VTYSH) is None:
        lacking.append(VTYSH)
    try:
        grp.getgrnam(VTY_GROUP)
    except KeyError:
        lacking.append(f"group {VTY_GROUP}")
    return f"needs FRR (Debian package frr): missing {', '.join(lacking)}" if lacking else None


class FrrError(RuntimeError):
    """FRR did not start, did not take its config, or a vtysh command failed."""


@dataclass(frozen=True)
class Neighbor:
    """One BGP neighbor of FRR's bgpd."""

    address: str
    asn: int
    families: tuple[str, ...] = ("l2vpn-evpn",)  # "ipv4-unicast", "ipv6-unicast", "l2vpn-evpn"
    rr_client: bool = False  # reflect iBGP routes to and from it (RFC 4456)
    passive: bool = False  # wait for it to connect
    port: int = 179  # its BGP port
    password: str | None = None  # TCP MD5 signatures with this key (`neighbor X password`)
    ttl_security: bool = False  # GTSM for a directly connected peer (`neighbor X ttl-security hops 1`)


FAMILIES = {"ipv4-unicast": "ipv4 unicast", "ipv6-unicast": "ipv6 unicast",
            "l2vpn-evpn": "l2vpn evpn"}


def preamble(profile: str = "datacenter", debug: Iterable[str] = ()) -> str:
    """The first lines of a config: the defaults profile and `debug ...` commands
    (e.g. debug=("bgp updates", "bgp neighbor-events", "zebra vxlan", "zebra rib"))."""
    lines = [f"frr defaults {profile}"]
    lines += [f"debug {area}" for area in debug]
    return "\n".join(lines) + "\n!\n"


def bgp_config(asn: int, router_id: str, neighbors: list[Neighbor], hold_time: int = 9,
               networks: Iterable[str] = (), advertise_all_vni: bool = False,
               redistribute: Iterable[str] = (),
               debug: Iterable[str] = ("bgp neighbor-events", "bgp updates")) -> str:
    """A whole config: `preamble` and one `router bgp ASN` with these neighbors, each
    activated in its families only (`no bgp default ipv4-unicast`), short timers (hold
    time 9 s, keepalive 3 s, connect retry 1 s); `networks` (IPv4/IPv6 prefixes) and
    `redistribute` ("connected", "static", "kernel") in every unicast family some
    neighbor uses; `advertise_all_vni`: be a VTEP for every L2 VNI zebra finds (a VXLAN
    device in a bridge), auto RD and RT (<asn>:<vni>)."""
    neighbors = list(neighbors)
    out = [preamble(debug=debug).rstrip("\n")]
    out += [f"router bgp {asn}", f" bgp router-id {router_id}", " no bgp default ipv4-unicast",
            " no bgp network import-check", f" timers bgp {max(1, hold_time // 3)} {hold_time}"]
    for nb in neighbors:
        out.append(f" neighbor {nb.address} remote-as {nb.asn}")
        out.append(f" neighbor {nb.address} timers connect 1")
        if nb.port != 179:
            out.append(f" neighbor {nb.address} port {nb.port}")
        if nb.passive:
            out.append(f" neighbor {nb.address} passive")
        if nb.password is not None:
            out.append(f" neighbor {nb.address} password {nb.password}")
        if nb.ttl_security:
            out.append(f" neighbor {nb.address} ttl-security hops 1")
    used = [f for f in FAMILIES if any(f in nb.families for nb in neighbors)]
    if advertise_all_vni and "l2vpn-evpn" not in used:
        used.append("l2vpn-evpn")
    networks = [ipaddress.ip_network(n) for n in networks]
    for family in used:
        out.append(f" address-family {FAMILIES[family]}")
        for nb in neighbors:
            if family in nb.families:
                out.append(f"  neighbor {nb.address} activate")
                if nb.rr_client:
                    out.append(f"  neighbor {nb.address} route-reflector-client")
        if family != "l2vpn-evpn":
            version = 4 if family == "ipv4-unicast" else 6
            out += [f"  network {n}" for n in networks if n.version == version]
            out += [f"  redistribute {what}" for what in redistribute]
        elif advertise_all_vni:
            out.append("  advertise-all-vni")
        out.append(" exit-address-family")
    out.append("exit")
    return "\n".join(out) + "\n"


class Frr:
    def __init__(self, host: Host, config: str, daemons: Iterable[str] = DAEMONS,
                 bgp_port: int = 179):
        daemons = tuple(daemons)
        unknown = [d for d in daemons if d not in KNOWN_DAEMONS]
        if unknown or "zebra" not in daemons:
            raise ValueError(f"daemons {daemons}: zebra and any of {KNOWN_DAEMONS[1:]}")
        self.host = host
        self.daemons = ("zebra",) + tuple(d for d in daemons if d != "zebra")
        self.dir = host.lab.tmpdir / f"{host.name}-frr"
        self.dir.mkdir()
        self.config_path = self.dir / "frr.conf"
        self.config_path.write_text(config)
        (self.dir / "vtysh.conf").write_text("")
        (self.dir / "empty.conf").write_text("")
        self.zserv = self.dir / "zserv.api"
        self.profile = (m := _PROFILE.search(config)) and m.group(1)
        self.bgp_port = bgp_port
        self.procs: dict[str, subprocess.Popen] = {}

    def _popen(self, daemon: str) -> None:
        cmd = [str(FRR_DIR / daemon), "-u", "root", "-g", VTY_GROUP,
               "-f", str(self.dir / "empty.conf"), "-i", str(self.dir / f"{daemon}.pid"),
               "-z", str(self.zserv), "--vty_socket", str(self.dir), "-P", "0",
               "--log", "stdout", "--log-level", "debug"]
        if self.profile:
            cmd += ["-F", self.profile]
        if daemon == "bgpd":
            cmd += ["-p", str(self.bgp_port)]
        self.procs[daemon] = self.host.popen(*cmd)

    def __repr__(self) -> str:
        return f"Frr({self.host.name!r}, daemons={self.daemons})"

    # -- logs and readiness ----------------------------------------------------------

    def log(self, tail: int | None = None) -> str:
        """Every daemon's log, one after the other (the last `tail` characters of each)."""
        parts = []
        for daemon, proc in self.procs.items():
            text = self.host.log(proc)
            parts.append(f"--- {daemon} ---\n{text[-tail:] if tail else text}")
        return "\n".join(parts)

    def _fail(self, what: str) -> FrrError:
        return FrrError(f"FRR on {self.host.name}: {what}\n{self.log(LOG_TAIL_CHARS)}")

    def _check_running(self) -> None:
        for daemon, proc in self.procs.items():
            if proc.poll() is not None:
                raise self._fail(f"{daemon} exited {proc.returncode}")

    def start(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Start zebra, then (once its zserv socket is there) the other daemons; wait until
        each answers on its vty socket and is zebra's client; then load frr.conf."""
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.1, deadline - time.monotonic())

        def answers(daemon: str) -> bool:
            self._check_running()
            return self._vtysh("-d", daemon, "-c", "show version", check=False).returncode == 0

        def clients() -> set[str]:
            out = self._vtysh("-d", "zebra", "-c", "show zebra client summary", check=False)
            return {line.split()[0] for line in out.stdout.splitlines()[2:] if line.strip()}

        # A daemon that finds no zserv socket retries only after 10 s: start zebra first.
        self._popen("zebra")
        try:
            wait_for(lambda: self.zserv.exists() and answers("zebra"), left(), interval=0.1,
                     what=f"zebra on {self.host.name} to answer")
            for daemon in self.daemons[1:]:
                self._popen(daemon)
            for daemon in self.daemons[1:]:
                wait_for(lambda d=daemon: answers(d), left(), interval=0.1,
                         what=f"{daemon} on {self.host.name} to answer")
            want = {ZEBRA_CLIENTS[d] for d in self.daemons[1:]}
            wait_for(lambda: want <= clients(), left(), interval=0.1,
                     what=f"{', '.join(sorted(want))} to connect to zebra on {self.host.name}")
        except TimeoutError as err:
            raise self._fail(str(err)) from None
        boot = self._vtysh("-b", check=False)
        if boot.returncode != 0:
            raise self._fail(f"vtysh -b rejected {self.config_path} (exit {boot.returncode}):\n"
                             f"{boot.stdout}{boot.stderr}")
        self._check_running()

    # -- vtysh -------------------------------------------------------------------------

    def _vtysh(self, *args: str, check: bool = True, timeout: float = 30
               ) -> subprocess.CompletedProcess:
        return self.host.run(VTYSH, "--vty_socket", str(self.dir), "--config_dir", str(self.dir),
                             *args, check=check, timeout=timeout)

    def vtysh(self, *commands: str) -> str:
        """Run `vtysh -c CMD [-c CMD...]` against this FRR; its output. A command that
        fails (unknown, or rejected) raises FrrError."""
        args = [a for c in commands for a in ("-c", c)]
        try:
            result = self._vtysh(*args)
        except CommandError as err:
            raise FrrError(f"FRR on {self.host.name}: {err}") from None
        return result.stdout

    def vtysh_json(self, command: str) -> Any:
        """Run one `show ... json` command; its output parsed ({} when FRR prints nothing)."""
        out = self.vtysh(command).strip()
        if not out:
            return {}
        try:
            return json.loads(out)
        except json.JSONDecodeError as err:
            raise FrrError(f"FRR on {self.host.name}: {command!r} did not print JSON ({err}):\n"
                           f"{out[:2000]}") from None

    def configure(self, config: str) -> None:
        """Apply more configuration (frr.conf's language) to the running daemons."""
        path = self.dir / "extra.conf"
        path.write_text(config)
        result = self._vtysh("-f", str(path), check=False)
        if result.returncode != 0:
            raise self._fail(f"vtysh -f rejected:\n{config}\n{result.stdout}{result.stderr}")

    # -- reading -----------------------------------------------------------------------

    def bgp_summary(self, family: str = "") -> dict[str, Any]:
        """`show bgp [FAMILY] summary json` (family e.g. "ipv4 unicast", "l2vpn evpn"; ""
        for every family: one key per family, such as "ipv4Unicast", "l2VpnEvpn")."""
        return self.vtysh_json(f"show bgp {family} summary json".replace("  ", " "))

    def neighbor_state(self, address: str) -> str | None:
        """The session state of a neighbor ("Established", "Active", ...; None: unknown),
        from `show bgp neighbors ADDRESS json`."""
        try:
            info = self.vtysh_json(f"show bgp neighbors {address} json")
        except FrrError:
            return None
        return info.get(address, {}).get("bgpState")

    def ip_routes(self, version: int = 4) -> dict[str, list[dict[str, Any]]]:
        """`show ip route json` (version 6: `show ipv6 route json`): prefix -> routes."""
        return self.vtysh_json("show ip route json" if version == 4 else "show ipv6 route json")

    def bgp_routes(self, family: str = "ipv4 unicast") -> dict[str, Any]:
        """`show bgp FAMILY json` ("routes": prefix -> paths)."""
        return self.vtysh_json(f"show bgp {family} json")

    def evpn_route_table(self) -> dict[str, Any]:
        """`show bgp l2vpn evpn route detail json`, as FRR prints it: RD -> prefix text ->
        {"routeType", "ethTag", "mac", "ip", ..., "paths": [[path, ...]]}."""
        return self.vtysh_json("show bgp l2vpn evpn route detail json")

    def evpn_routes(self) -> list[dict[str, Any]]:
        """Every path of `evpn_route_table()` as a flat dict (see `summarize_evpn`)."""
        rows = []
        for rd, prefixes in self.evpn_route_table().items():
            if not isinstance(prefixes, dict):
                continue  # "numPrefix", "numPaths"
            for prefix, route in prefixes.items():
                if not isinstance(route, dict):
                    continue  # "rd"
                for group in route.get("paths", []):
                    for path in group if isinstance(group, list) else [group]:
                        rows.append(summarize_evpn(rd, prefix, route, path))
        return rows

    def evpn_macs(self) -> dict[str, Any]:
        """`show evpn mac vni all json` (zebra): VNI -> {"numMacs", "macs": MAC -> entry}."""
        return self.vtysh_json("show evpn mac vni all json")

    def evpn_vnis(self) -> dict[str, Any]:
        """`show evpn vni json` (zebra): VNI -> its VXLAN device, VTEP IP, remote VTEPs..."""
        return self.vtysh_json("show evpn vni json")

    # -- stopping ----------------------------------------------------------------------

    def stop(self, timeout: float = 10.0) -> dict[str, int]:
        """SIGTERM every daemon (zebra last, so it takes BGP's routes out of the kernel);
        their exit codes."""
        codes = {}
        for daemon, proc in reversed(self.procs.items()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
            try:
                codes[daemon] = proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                codes[daemon] = proc.wait()
        return codes


def summarize_evpn(rd: str, prefix: str, route: dict[str, Any], path: dict[str, Any]
                   ) -> dict[str, Any]:
    """One path of FRR's detailed EVPN JSON as a flat dict:

    rd, prefix (FRR's text, e.g. "[2]:[0]:[48]:[02:00:00:00:00:01]:[32]:[192.168.100.1]"),
    type (2, 3, 5), etag, mac, ip (None when the route has none; type 5's prefix is
    not read: only types 2 and 3 were checked against FRR), vni (the label as FRR
    reads it, an int; None when FRR shows none), next_hop, route_targets (["65000:100"]),
    encapsulations (["8"] = VXLAN, RFC 9012), extended_communities (FRR's whole string),
    pmsi (FRR's {"tunnelType": "Ingress Replication", "label": 100} or None),
    best, valid, local (FRR originated it), peer (who sent it: its address; "0.0.0.0"
    when local), raw (the path)
    """
    nexthops = path.get("nexthops") or [{}]
    ext = path.get("extendedCommunity", {}).get("string", "").split()
    vni = path.get("vni", path.get("VNI"))
    peer = path.get("peer")
    return {
        "rd": rd,
        "prefix": prefix,
        "type": route.get("routeType"),
        "etag": route.get("ethTag"),
        "mac": route.get("mac"),
        "ip": route.get("ip") if route.get("routeType") != 5 else None,
        "vni": int(vni) if vni is not None else None,
        "next_hop": nexthops[0].get("ip"),
        "route_targets": [c[3:] for c in ext if c.startswith("RT:")],
        "encapsulations": [c[3:] for c in ext if c.startswith("ET:")],
        "extended_communities": " ".join(ext),
        "pmsi": path.get("pmsi"),
        "best": bool(path.get("bestpath", {}).get("overall")),
        "valid": bool(path.get("valid")),
        "local": bool(path.get("local")),
        "peer": peer.get("peerId") if isinstance(peer, dict) else path.get("peerId"),
        "raw": path,
    }


def start_frr(host: Host, config: str, daemons: Iterable[str] = DAEMONS, bgp_port: int = 179,
              timeout: float = READY_TIMEOUT_S) -> Frr:
    """Start FRR in `host` with this config (frr.conf's language); returns once the daemons
    answer, bgpd (and staticd) are zebra's clients and the config is in, raising FrrError
    with their logs if not within `timeout`."""
    frr = Frr(host, config, daemons, bgp_port)
    frr.start(timeout)
    return frr
