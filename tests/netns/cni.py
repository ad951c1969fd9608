"""Pods made the way a kubelet's container runtime makes them: the real CNI
`bridge` and `host-local` plugins (Debian `containernetworking-plugins`),
run inside a lab host ("node") for a fresh network namespace ("pod").

    pods = CniPods(lab)
    plugin = plugin_config(json.loads(conflist_text), data_dir=lab.tmpdir / "cni-node1")
    pod = pods.add(node_host, "p1", plugin)      # CNI ADD; pod.v4, pod.v6, pod.host.ping(...)
    pods.close()                                 # CNI DEL for every pod, then delete the namespaces

What libcni does for a conflist with one plugin, done by hand: the plugin's
own config gets the list's `cniVersion` and `name` and goes to the plugin
on stdin; CNI_COMMAND / CNI_CONTAINERID / CNI_NETNS / CNI_IFNAME / CNI_PATH
go in the environment; the plugin prints the result (or an error) as JSON
on stdout. The plugin runs under `ip netns exec <node>`, so the bridge
(`cni0`) and the host ends of the veth pairs live in the node's namespace,
exactly where overlayd's routing device is.

host-local keeps its allocations under /var/lib/cni/networks/<name> unless
the ipam section says otherwise; every node of a lab would share that one
directory (and every lab on the machine, and the machine itself). So
`plugin_config` sets `ipam.dataDir` to a directory of the caller's choosing
(one per node, inside the lab's temporary directory): allocations stay
per node, disappear with the lab, and never touch the machine's own state.

Pod namespaces are named "<lab prefix>-<node>-<pod>", unique per run like
every lab namespace. `close()` is idempotent and never raises while
cleaning up: every pod gets its CNI DEL and its namespace deleted even if
an earlier one failed; what failed is returned for the caller to report.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support import unmet
from tools.lab import Host, Lab, run

CNI_PATH = Path("/usr/lib/cni")  # where Debian's containernetworking-plugins puts them
NETNS_DIR = Path("/var/run/netns")  # where `ip netns add` puts the namespace files
PLUGINS = ("bridge", "host-local")


def require_cni() -> None:
    """Skip (fail under CI) unless the bridge and host-local plugins are installed."""
    missing = [p for p in PLUGINS if not (CNI_PATH / p).is_file()]
    if missing:
        unmet(f"needs the CNI plugins {', '.join(missing)} in {CNI_PATH} "
              "(Debian package containernetworking-plugins)")


def plugin_config(conflist: dict[str, Any], data_dir: Path | str | None = None) -> dict[str, Any]:
    """The config the list's only plugin gets on stdin: the plugin plus `cniVersion` and `name`.

    `data_dir`: where host-local keeps its allocations (`ipam.dataDir`).
    """
    [plugin] = conflist["plugins"]
    conf = copy.deepcopy(plugin)
    conf["cniVersion"] = conflist["cniVersion"]
    conf["name"] = conflist["name"]
    if data_dir is not None:
        conf["ipam"]["dataDir"] = str(data_dir)
    return conf


@dataclass
class Pod:
    name: str  # "<node>-<pod>", e.g. "node1-p1"
    node: Host  # where the plugin ran: the bridge and the host end of the veth are there
    host: Host  # the pod's own namespace, as a lab Host (run, ping, popen)
    container_id: str
    config: dict[str, Any]  # the plugin config it was added with (DEL needs the same)
    result: dict[str, Any]  # the plugin's ADD result
    addresses: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = field(default_factory=list)
    gateways: list[str] = field(default_factory=list)

    @property
    def v4(self) -> str:
        return next(str(a.ip) for a in self.addresses if a.version == 4)

    @property
    def v6(self) -> str | None:
        return next((str(a.ip) for a in self.addresses if a.version == 6), None)

    def __repr__(self) -> str:
        return f"Pod({self.name!r}, {[str(a) for a in self.addresses]})"


class CniError(RuntimeError):
    pass


def invoke(node: Host, command: str, container_id: str, netns: str, config: dict[str, Any],
           plugin: str = "bridge", ifname: str = "eth0", timeout: float = 30) -> dict[str, Any] | None:
    """Run one CNI plugin in `node`'s namespace; the parsed result (None when it printed nothing)."""
    env = {
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": container_id,
        "CNI_NETNS": str(NETNS_DIR / netns),
        "CNI_IFNAME": ifname,
        "CNI_PATH": str(CNI_PATH),
    }
    proc = node.run("env", *(f"{k}={v}" for k, v in env.items()), str(CNI_PATH / plugin),
                    check=False, timeout=timeout, input=json.dumps(config))
    out = proc.stdout.strip()
    if proc.returncode != 0:
        raise CniError(f"CNI {command} of {container_id} on {node.name} ({plugin}) "
                       f"exited {proc.returncode}:\n"
                       f"stdout: {out}\nstderr: {proc.stderr.strip()}\nconfig: {json.dumps(config)}")
    return json.loads(out) if out else None


class CniPods:
    def __init__(self, lab: Lab):
        self.lab = lab
        self.pods: list[Pod] = []
        self._netns: list[str] = []  # every pod namespace created, for close()

    def add(self, node: Host, name: str, config: dict[str, Any]) -> Pod:
        """A new namespace, plugged into `node` by CNI ADD with `config`."""
        netns = f"{self.lab.prefix}-{node.name}-{name}"
        run("ip", "netns", "add", netns)
        self._netns.append(netns)
        container_id = f"{self.lab.prefix}-{node.name}-{name}"
        host = Host(self.lab, f"{node.name}-{name}", netns, None, None)
        host.ip("link", "set", "lo", "up")
        result = invoke(node, "ADD", container_id, netns, config)
        assert result is not None, f"CNI ADD of {container_id} printed no result"
        pod = Pod(f"{node.name}-{name}", node, host, container_id, copy.deepcopy(config), result)
        for ip in result.get("ips", []):
            pod.addresses.append(ipaddress.ip_interface(ip["address"]))
            if ip.get("gateway"):
                pod.gateways.append(ip["gateway"])
        host.v4 = next((str(a.ip) for a in pod.addresses if a.version == 4), None)
        host.v6 = next((str(a.ip) for a in pod.addresses if a.version == 6), None)
        self.pods.append(pod)
        return pod

    def delete(self, pod: Pod) -> None:
        """CNI DEL, then the namespace; raises CniError if DEL failed (the namespace goes anyway)."""
        try:
            invoke(pod.node, "DEL", pod.container_id, pod.host.netns, pod.config)
        finally:
            self._del_netns(pod.host.netns)
            self.pods.remove(pod)

    def close(self) -> list[str]:
        """Delete every pod (CNI DEL, then its namespace); what went wrong, as messages."""
        problems = []
        for pod in list(self.pods):
            try:
                self.delete(pod)
            except (CniError, OSError, subprocess.SubprocessError) as err:
                problems.append(str(err))
        for netns in list(self._netns):  # namespaces whose ADD failed
            self._del_netns(netns)
        return problems

    def _del_netns(self, netns: str) -> None:
        if netns in self._netns:
            self._netns.remove(netns)
            try:
                run("ip", "netns", "del", netns, check=False)
            except (OSError, subprocess.SubprocessError):
                pass
