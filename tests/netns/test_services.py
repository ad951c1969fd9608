"""Services on the userspace path end to end: three nodes, a pod on each serving its name
on port 8080 (TCP and UDP), VIPs in 10.96.0.0/16 and fd00:96::/112.

    node N (10.0.0.N): routing backend userspace, subnet 10.244.N.0/24 and fd00:244:0:N::/64,
    a bridge cni0 with the pod pN (10.244.N.2, fd00:244:0:N::2) running tests/netns/svc_peer.py

Services (the same on every node, from the config and a services file):

    web    10.96.0.10:80/tcp   -> the three pods :8080 (TCP checks every 0.5 s, fall 2, rise 2)
    dns    10.96.0.53:53/udp   -> the three pods :8080 (no checks: UDP's default)
    web6   [fd00:96::10]:80    -> the three pods' IPv6 addresses :8080
    empty  10.96.0.99:80/tcp   -> no backends
    file   10.96.0.20:80/tcp   (services_file)

The clients are the pods themselves, so every run has flows whose backend is on the
client's own node, and flows whose backend is the client (hairpin, DECISIONS).
"""

from __future__ import annotations

import json
import signal
import sys
import time
from typing import Any

import pytest
import yaml

from overlayd.status.client import request
from tests.netns import svc_peer
from tests.support import require_netns, require_programs
from tools.lab import Host, Lab, wait_for
from tools.nodes import Overlayd, start_overlayd, wait_showing_logs

pytestmark = pytest.mark.root

ASN = 65000
NODES = 3
CONNECTIONS = 300
HEALTH = {"type": "tcp", "interval": 0.5, "timeout": 0.25, "fall": 2, "rise": 2}


def pod_ip(i: int, v6: bool = False) -> str:
    return f"fd00:244:0:{i + 1}::2" if v6 else f"10.244.{i + 1}.2"


def services(i_unused: int = 0) -> list[dict[str, Any]]:
    backends = [f"{pod_ip(i)}:8080" for i in range(NODES)]
    return [
        {"name": "web", "vip": "10.96.0.10", "port": 80, "backends": backends, "health": HEALTH},
        {"name": "dns", "vip": "10.96.0.53", "port": 53, "protocol": "udp", "backends": backends},
        {"name": "web6", "vip": "fd00:96::10", "port": 80,
         "backends": [f"[{pod_ip(i, True)}]:8080" for i in range(NODES)], "health": HEALTH},
        {"name": "empty", "vip": "10.96.0.99", "port": 80},
    ]


class Site:
    def __init__(self, lab: Lab, backend: str):
        self.lab = lab
        self.backend = backend
        self.hosts: list[Host] = []
        self.pods: list[Host] = []
        self.nodes: list[Overlayd] = []
        self.servers: list[Any] = []
        self.file = lab.tmpdir / "services.yaml"

    def config(self, i: int) -> dict[str, Any]:
        return {
            "node": {"vtep": f"10.0.0.{i + 1}"},
            "bgp": {"asn": ASN, "hold_time": 3, "connect_retry": 1,
                    "neighbors": [{"address": f"10.0.0.{j + 1}", "asn": ASN} for j in range(NODES) if j != i]},
            "routing": {"backend": self.backend, "vni": 1, "network": "10.244.0.0/16",
                        "subnet": f"10.244.{i + 1}.0/24",
                        "network6": "fd00:244::/48", "subnet6": f"fd00:244:0:{i + 1}::/64",
                        "env_file": str(self.lab.tmpdir / f"n{i}.env")},
            "services_network": ["10.96.0.0/16", "fd00:96::/112"],
            "services": services(),
            "services_file": str(self.file),
        }

    def clients(self, i: int, kind: str, address: str, port: int, count: int) -> dict[str, Any]:
        out = self.pods[i].run(sys.executable, svc_peer.__file__, kind, address, str(port), str(count), timeout=120)
        return json.loads(out.stdout)

    def query(self, i: int, command: str, **args: str) -> Any:
        return request(self.nodes[i].socket, command, **args)


@pytest.fixture(scope="module", params=["userspace", "kernel"])
def site(request: pytest.FixtureRequest):
    require_netns()
    require_programs("ping", "nft", "ethtool")
    with Lab() as lab:
        s = Site(lab, request.param)
        s.file.write_text(yaml.safe_dump([{"name": "file", "vip": "10.96.0.20", "port": 80,
                                           "backends": [f"{pod_ip(0)}:8080"]}]))
        for i in range(NODES):
            host = lab.add_host(f"n{i + 1}", v4=f"10.0.0.{i + 1}/24")
            host.sysctl("net.ipv4.ip_forward", 1)
            host.sysctl("net.ipv6.conf.all.forwarding", 1)
            host.sysctl("net.ipv4.conf.all.send_redirects", 0)  # a pod to a VIP of a pod on its bridge
            host.run("ethtool", "-K", "eth0", "tx", "off")  # lab only: see test_backends.py
            host.ip("route", "add", "default", "via", "10.0.0.254")  # as every node has one (nobody there)
            host.ip("link", "add", "cni0", "type", "bridge")
            host.ip("addr", "add", f"10.244.{i + 1}.1/24", "dev", "cni0")
            host.ip("-6", "addr", "add", f"fd00:244:0:{i + 1}::1/64", "dev", "cni0", "nodad")
            host.ip("link", "set", "cni0", "up")
            pod = lab.add_pod(host, "p1", "cni0", f"{pod_ip(i)}/24", f"10.244.{i + 1}.1",
                              v6=f"{pod_ip(i, True)}/64", gateway6=f"fd00:244:0:{i + 1}::1")
            host.run("bridge", "link", "set", "dev", "p-p1", "hairpin", "on")  # CNI's hairpinMode: true
            s.hosts.append(host)
            s.pods.append(pod)
        for i, pod in enumerate(s.pods):
            server = pod.popen(sys.executable, svc_peer.__file__, "serve", f"pod{i + 1}", "8080")
            s.servers.append(server)
            wait_for(lambda: "listening" in pod.log(server), timeout=10, what=f"the server in pod{i + 1}")
        s.nodes = [start_overlayd(h, s.config(i), wait=False) for i, h in enumerate(s.hosts)]
        for node in s.nodes:
            node.wait_ready()
        wait_showing_logs(lambda: all(len(s.query(i, "routes")) == 2 * NODES for i in range(NODES)),
                          "every subnet everywhere", *s.nodes, timeout=20)
        yield s
        codes = {n.host.name: n.stop() for n in s.nodes}
        assert set(codes.values()) == {0}, codes
        for host in s.hosts:  # a clean stop leaves no table behind
            assert host.run("nft", "list", "table", "inet", "overlayd", check=False).returncode != 0


def spread(answers: list[list[str]]) -> dict[str, float]:
    names = [name for name, _ in answers]
    return {n: names.count(n) / len(names) for n in sorted(set(names))}


@pytest.mark.parametrize("kind, vip, port", [("tcp", "10.96.0.10", 80), ("udp", "10.96.0.53", 53),
                                             ("tcp", "fd00:96::10", 80)], ids=["tcp", "udp", "ipv6"])
def test_connections_spread_over_the_backends_and_replies_come_from_the_vip(site: Site, kind, vip, port):
    for i in range(NODES):
        got = site.clients(i, kind, vip, port, CONNECTIONS)
        assert len(got["answers"]) == CONNECTIONS, got
        assert set(got["replied_from"]) == {vip}, got["replied_from"]
        shares = spread(got["answers"])
        print(f"{kind} {vip} from pod{i + 1}: " + ", ".join(f"{n} {v:.0%}" for n, v in shares.items()))
        assert set(shares) == {f"pod{j + 1}" for j in range(NODES)}
        assert all(abs(v - 1 / NODES) <= 0.10 for v in shares.values()), shares
        # the pod reached itself through the VIP too (hairpin), seen from an address that brings
        # the reply back through the rewrite, never from itself: the VIP (userspace path), the
        # node's address on the bridge (nftables masquerade, as kube-proxy)
        own = {seen for name, seen in got["answers"] if name == f"pod{i + 1}"}
        node_side = {f"10.244.{i + 1}.1", f"fd00:244:0:{i + 1}::1"}
        assert own and own <= ({vip} if site.backend == "userspace" else node_side), own


def test_a_service_without_backends_refuses_at_once(site: Site):
    got = site.clients(0, "tcp", "10.96.0.99", 80, 5)
    assert got["refused"] == 5 and got["max_refusal_s"] < 0.5, got
    if site.backend == "userspace":  # (the kernel's nftables reject counts nothing of ours)
        assert site.query(0, "stats")["counters"]["svc_reject_no_backend"] >= 5


def test_services_and_conntrack_are_shown(site: Site):
    site.clients(1, "udp", "10.96.0.53", 53, 3)
    rows = {r["name"]: r for r in site.query(1, "services")}
    assert set(rows) == {"web", "dns", "web6", "empty", "file"}
    assert all(b["healthy"] for b in rows["web"]["backends"])
    # hits are counted where overlayd picks (userspace); the kernel picks with numgen
    assert rows["web"]["hits"] >= CONNECTIONS or site.backend == "kernel"
    flows = site.query(1, "conntrack", service="dns")
    if site.backend == "userspace":
        assert len(flows) >= 3 and {f["vip"] for f in flows} == {"10.96.0.53:53"}
    else:  # the kernel's own conntrack holds them (conntrack -L); overlayd tracks none
        assert flows == []
        print(site.hosts[1].run("nft", "list", "table", "inet", "overlayd").stdout)
    text = site.nodes[1].ctl_text("services")
    assert "10.96.0.10:80/tcp" in text and "10.244.3.2:8080" in text
    print(text)
    print(site.nodes[1].ctl_text("conntrack", "--service", "dns")[:1500])


def test_a_services_file_change_is_applied_without_touching_other_flows(site: Site):
    before = {(f["client"], f["backend"]) for f in site.query(0, "conntrack", service="dns")}
    assert before or site.backend == "kernel"
    assert site.clients(0, "tcp", "10.96.0.20", 80, 3)["answers"][0][0] == "pod1"
    site.file.write_text(yaml.safe_dump([{"name": "file", "vip": "10.96.0.20", "port": 80,
                                          "backends": [f"{pod_ip(1)}:8080"]},
                                         {"name": "file2", "vip": "10.96.0.21", "port": 80,
                                          "backends": [f"{pod_ip(2)}:8080"]}]))
    wait_for(lambda: {r["name"] for r in site.query(0, "services")} >= {"file2"}, timeout=5,
             what="the services file to be read again")
    assert {a[0] for a in site.clients(0, "tcp", "10.96.0.20", 80, 3)["answers"]} == {"pod2"}
    assert {a[0] for a in site.clients(0, "tcp", "10.96.0.21", 80, 3)["answers"]} == {"pod3"}
    after = {(f["client"], f["backend"]) for f in site.query(0, "conntrack", service="dns")}
    assert before <= after  # the unrelated flows are still pinned where they were
    # a bad file is refused, the running services kept, and status says why
    site.file.write_text("- {name: bad, vip: 10.97.0.1, port: 80}\n")
    wait_for(lambda: site.query(0, "status")["services"]["services_file_error"], timeout=5,
             what="the bad file to be refused")
    assert "10.97.0.1 is not inside services_network" in site.query(0, "status")["services"]["services_file_error"]
    assert {r["name"] for r in site.query(0, "services")} >= {"file", "file2"}


def test_a_sighup_changes_the_configs_services_and_leaves_the_other_flows(site: Site):
    before = {(f["client"], f["backend"]) for f in site.query(0, "conntrack", service="dns")}
    cfg = site.config(0)
    for spec in cfg["services"]:
        if spec["name"] == "empty":
            spec["backends"] = [f"{pod_ip(0)}:8080"]
    cfg["services"].append({"name": "hup", "vip": "10.96.0.30", "port": 80, "backends": [f"{pod_ip(2)}:8080"]})
    line = site.nodes[0].reload(cfg)
    assert "applied: services" in line, line
    assert {a[0] for a in site.clients(0, "tcp", "10.96.0.30", 80, 3)["answers"]} == {"pod3"}
    got = site.clients(0, "tcp", "10.96.0.99", 80, 3)  # refused until now: no backends
    assert {a[0] for a in got["answers"]} == {"pod1"} and not got["refused"], got
    assert before <= {(f["client"], f["backend"]) for f in site.query(0, "conntrack", service="dns")}
    assert "applied: services" in site.nodes[0].reload(site.config(0))
    assert "hup" not in {r["name"] for r in site.query(0, "services")}
    assert site.clients(0, "tcp", "10.96.0.99", 80, 2)["refused"] == 2


def test_a_dead_backend_stops_getting_connections_within_its_checks(site: Site):
    victim = 2
    server = site.servers[victim]
    server.send_signal(signal.SIGKILL)
    server.wait()
    start = time.monotonic()
    limit = HEALTH["interval"] * HEALTH["fall"] + HEALTH["timeout"] + 0.5  # + 0.5: a loaded machine's slack
    wait_for(lambda: all(not b["healthy"] for r in site.query(0, "services") if r["name"] == "web"
                         for b in r["backends"] if b["backend"] == f"{pod_ip(victim)}:8080"),
             timeout=limit, interval=0.05, what=f"pod{victim + 1} to be taken out of web")
    took = time.monotonic() - start
    print(f"backend killed: out of the service after {took:.2f} s (interval x fall = "
          f"{HEALTH['interval'] * HEALTH['fall']} s)")
    got = site.clients(0, "tcp", "10.96.0.10", 80, 60)
    assert len(got["answers"]) == 60 and f"pod{victim + 1}" not in spread(got["answers"]), got
