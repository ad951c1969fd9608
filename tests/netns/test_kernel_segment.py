"""An L2 segment on the kernel (`networks[].backend: kernel`) end to end: three nodes, pods
on a Linux bridge, the kernel's VXLAN device programmed from the EVPN tables.

Underlay: lab hosts node1, node2, node3 at 10.0.0.{1,2,3}/24, an iBGP full mesh in
AS 65000 (hold time 3 s, connect retry 1 s). One network, blue, VNI 100:

    scenario "kernel": every node `backend: kernel`: overlayd makes bridge br-blue
        (192.168.100.N/24) and VXLAN device vx100 (nolearning, neigh_suppress)
    scenario "mixed":  node1 `backend: userspace` (TAP blue0, which the test makes a
        port of a bridge br-blue of its own carrying 192.168.100.1/24: the flannel
        picture, the TAP joins the pods' bridge); node2 and node3 kernel as above.
        Lab only: `ethtool -K eth0 tx off` on every host (a kernel VXLAN device over a
        veth leaves inner TCP checksums for the NIC, which a userspace receiver cannot
        finish: see tests/interop/test_kernel_vxlan.py).

Pods are network namespaces with a veth whose host end is a port of br-blue:
nNp1 on every node N (192.168.100.1N, MAC 02:00:00:00:0N:01) and n2p2 on node2
(192.168.100.22), the one that moves to node3; some tests add pods of their own.
Every expectation about the kernel is computed from the status socket's rows
(`fdb`, `status`, `rib`), never from overlayd's planner. The tests run in file
order and share the cluster:

 1. every pod pings every remote pod and every node; iperf3 between pods on two
    kernel nodes (and, mixed, from the userspace node to a kernel node);
 2. each kernel node's vx100 FDB, its bridge's extern_learn entries and its
    neighbour table equal what `fdb`, `status` and `rib` imply, nothing twice;
 3. new pods are announced from their node once they speak, and withdrawn
    everywhere when their veth is deleted (the bridge drops the port's entries
    and says so: no `bridge fdb del` needed);
 4. an ARP request for a remote pod is answered by the bridge (neigh_suppress):
    seen on the pod's port, never inside VXLAN on the underlay, while a request
    for an unbound address is (the control);
 5. a pod live-migrates from node2 to node3: everyone places its MAC at node3,
    its MAC and MAC/IP routes carry a higher sequence; one MAC on two nodes at
    once is frozen as a duplicate;
 6. FDB entries and a neighbour deleted by hand come back;
 7. SIGKILL of node2 and a restart: br-blue and vx100 adopted, what the dead
    daemon left stale (and entries of a made-up VTEP) swept, a pod plugged in
    meanwhile announced from what the bridge holds, pods ping again;
 8. SIGTERM of node3 removes br-blue and vx100 and nothing else; the pods'
    veths stay, released from the bridge. The fixture stops the others and
    checks that they left no device behind.

The measured times are printed (`pytest -rP`) and summed up at teardown.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from overlayd.status.client import request
from tests.netns.test_routed_subnets import iperf3, ping_all
from tests.support import require_netns, require_programs
from tools.lab import Host, Lab, run
from tools.nodes import Overlayd, start_overlayd, wait_showing_logs

pytestmark = pytest.mark.root

ASN = 65000
VNI = 100
BRIDGE = "br-blue"
VXLAN = "vx100"
TAP = "blue0"  # the userspace node's TAP (mixed scenario)
MTU = 1500 - 50
ZERO_MAC = "00:00:00:00:00:00"
SCENARIOS = {
    "kernel": ("kernel", "kernel", "kernel"),
    "mixed": ("userspace", "kernel", "kernel"),
}
N1, N2, N3 = 0, 1, 2


def vtep(i: int) -> str:
    return f"10.0.0.{i + 1}"


def node_ip(i: int) -> str:
    """The address of node i's bridge on the overlay."""
    return f"192.168.100.{i + 1}"


@dataclass
class Pod:
    name: str  # "n1p1": node 1's first pod
    node: int  # where its veth's host end is a port of br-blue
    host: Host  # the pod's namespace
    ip: str
    mac: str

    @property
    def v4(self) -> str:  # what test_routed_subnets.iperf3 reads
        return self.ip

    @property
    def port(self) -> str:
        """The host end of its veth, in its node's namespace."""
        return f"v{self.name}"


@dataclass
class Cluster:
    name: str
    lab: Lab
    backends: tuple[str, ...]
    hosts: list[Host]
    nodes: list[Overlayd] = field(default_factory=list)
    pods: dict[str, Pod] = field(default_factory=dict)
    measured: dict[str, float] = field(default_factory=dict)
    _netns: list[str] = field(default_factory=list)

    # -- overlayd ------------------------------------------------------------------------------

    def kernel(self, i: int) -> bool:
        return self.backends[i] == "kernel"

    @property
    def kernel_nodes(self) -> list[int]:
        return [i for i in range(3) if self.kernel(i)]

    def config(self, i: int) -> dict[str, Any]:
        net: dict[str, Any] = {"name": "blue", "vni": VNI, "backend": self.backends[i]}
        if self.kernel(i):
            net.update(device=BRIDGE, address=f"{node_ip(i)}/24")
        else:
            net.update(device=TAP)  # its address is on the test's bridge (see the module docstring)
        return {
            "node": {"vtep": vtep(i)},
            "bgp": {"asn": ASN, "hold_time": 3, "connect_retry": 1,
                    "neighbors": [{"address": vtep(j), "asn": ASN} for j in range(3) if j != i]},
            "networks": [net],
        }

    def start(self, i: int) -> Overlayd:
        """(Re)start node i's overlayd; the caller waits for it to be ready."""
        node = start_overlayd(self.hosts[i], self.config(i), wait=False)
        self.nodes[i : i + 1] = [node]  # node i's place, new or taken over
        return node

    def query(self, i: int, command: str) -> Any:
        return request(self.nodes[i].socket, command)

    def report(self, key: str, seconds: float, text: str) -> None:
        self.measured[key] = round(seconds, 3)
        print(f"[{self.name}] {text}: {seconds:.2f} s")

    # -- pods ----------------------------------------------------------------------------------

    def add_pod(self, i: int, name: str, ip: str, mac: str, netns: str | None = None) -> Pod:
        """A namespace with eth0 (`mac`, `ip`/24) whose peer is a port of node i's br-blue."""
        netns = netns or f"{self.lab.prefix}-{name}"
        run("ip", "netns", "add", netns)
        self._netns.append(netns)
        host = Host(self.lab, name, netns, ip, None)
        host.sysctl("net.ipv6.conf.all.disable_ipv6", 1)
        host.ip("link", "set", "lo", "up")
        pod = Pod(name, i, host, ip, mac)
        node = self.hosts[i]
        node.ip("link", "add", pod.port, "mtu", str(MTU), "type", "veth", "peer", "name", "eth0",
                "mtu", str(MTU), "address", mac, "netns", netns)
        node.ip("link", "set", pod.port, "master", BRIDGE, "up")
        host.ip("addr", "add", f"{ip}/24", "dev", "eth0")
        host.ip("link", "set", "eth0", "up")
        self.pods[name] = pod
        return pod

    def delete_pod(self, pod: Pod) -> None:
        """Delete the pod's veth (both ends go: its node's bridge loses the port), then its namespace."""
        self.hosts[pod.node].ip("link", "del", pod.port)
        self._del_netns(pod.host.netns)
        if self.pods.get(pod.name) is pod:
            del self.pods[pod.name]

    def _del_netns(self, netns: str) -> None:
        if netns in self._netns:
            self._netns.remove(netns)
            run("ip", "netns", "del", netns, check=False)

    def close_pods(self) -> None:
        for netns in list(self._netns):
            self._del_netns(netns)

    def announce(self, pods: list[Pod] | None = None) -> None:
        """Every pod says hello to its own node: the bridge learns its MAC on its port, the
        host's neighbour table (or, on a TAP node, ARP snooping) its IP."""
        pods = list(self.pods.values()) if pods is None else pods
        failed = ping_all([(p.host, node_ip(p.node)) for p in pods])
        assert not failed, f"pods cannot reach their own node: {failed}"

    # -- what the status socket says ------------------------------------------------------------

    def sessions_up(self) -> bool:
        return all(sorted(p["state"] for p in self.query(i, "peers")) == ["Established"] * 2 for i in range(3))

    def macip(self, i: int) -> set[tuple[str, str | None, str]]:
        """Node i's best type-2 routes as (MAC, IP or None, next hop)."""
        return {(r["mac"], r["ip"], r["next_hop"]) for r in self.query(i, "rib") if r["type"] == "macip" and r["best"]}

    def knows(self, i: int, pod: Pod) -> bool:
        """Node i has the pod's MAC and MAC/IP routes from the pod's node."""
        want = {(pod.mac, None, vtep(pod.node)), (pod.mac, pod.ip, vtep(pod.node))}
        return want <= self.macip(i)

    def everything_known(self) -> bool:
        for i in range(3):
            if sorted(self.query(i, "status")["networks"][0]["flood_list"]) != [vtep(j) for j in range(3) if j != i]:
                return False
            if not all(self.knows(i, p) for p in self.pods.values() if p.node != i):
                return False
        return True


# -- the kernel's tables, and what the status socket says they should be ------------------------


@dataclass(frozen=True)
class Tables:
    fdb: list[tuple[str, str]]  # vx100's own FDB: (MAC, dst VTEP)
    bridge: list[str]  # the bridge's extern_learn entries on vx100: MAC
    neigh: list[tuple[str, str]]  # br-blue's extern_learn neighbours: (IP, MAC)

    def sorted(self) -> Tables:
        return Tables(sorted(self.fdb), sorted(self.bridge), sorted(self.neigh))

    def duplicates(self) -> list:
        return [x for part in (self.fdb, self.bridge, self.neigh) for x in set(part) if part.count(x) > 1]


def expected_tables(c: Cluster, i: int) -> Tables:
    """What node i's kernel should hold, from its status-socket rows (not from the planner):

    vx100 FDB   (MAC, VTEP) for every MAC `overlayctl fdb` learned from bgp, and
                (00:00:00:00:00:00, VTEP) for every member of the flood list (`overlayctl status`)
    bridge FDB  each of those MACs on vx100, extern_learn (what neigh_suppress looks up)
    neighbours  (IP, MAC) of every best type-2 route with an IP that is not ours (`overlayctl rib`)
    """
    macs = [(r["mac"], r["where"]) for r in c.query(i, "fdb") if r["learned"] == "bgp"]
    flood = [(ZERO_MAC, v) for v in c.query(i, "status")["networks"][0]["flood_list"]]
    neigh = [(r["ip"], r["mac"]) for r in c.query(i, "rib")
             if r["type"] == "macip" and r["ip"] is not None and r["best"] and r["peer"] != "local"]
    return Tables(macs + flood, [m for m, _ in macs], neigh)


def kernel_tables(host: Host) -> Tables:
    entries = json.loads(host.run("bridge", "-j", "fdb", "show", "dev", VXLAN).stdout or "[]")
    fdb = [(e["mac"], e["dst"]) for e in entries if "dst" in e and "self" in e.get("flags", [])]
    bridge = [e["mac"] for e in entries if e.get("master") == BRIDGE and "extern_learn" in e.get("flags", [])]
    neigh = [(n["dst"], n["lladdr"]) for n in host.json_ip("neigh", "show", "dev", BRIDGE)
             if "extern_learn" in n]  # iproute2's JSON: "extern_learn": null
    return Tables(fdb, bridge, neigh)


def tables_match(c: Cluster, i: int) -> bool:
    have = kernel_tables(c.hosts[i])
    return not have.duplicates() and have.sorted() == expected_tables(c, i).sorted()


TIMED = 0.05  # the poll interval of the waits whose time is reported


def wait_tables(c: Cluster, nodes: list[int], what: str, timeout: float = 10, interval: float = 0.2) -> None:
    """Wait until every kernel node in `nodes` holds what its rows say."""
    wait_showing_logs(lambda: all(tables_match(c, i) for i in nodes), what,
                      *[c.nodes[i] for i in nodes], timeout=timeout, interval=interval)


# -- ARP in a capture ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Arp:
    op: int  # 1 request, 2 reply
    sender_mac: str
    sender_ip: str
    target_ip: str
    vtep: str | None  # the outer destination when seen inside a VXLAN datagram


def arp_in(pcap: bytes) -> list[Arp]:
    """The ARP packets of a pcap file (Ethernet link type), plain or inside VXLAN (UDP 4789)."""
    found = []
    offset = 24  # the global header
    while offset + 16 <= len(pcap):
        (length,) = struct.unpack_from("<I", pcap, offset + 8)
        frame = pcap[offset + 16 : offset + 16 + length]
        offset += 16 + length
        outer = None
        if frame[12:14] == b"\x08\x00" and frame[23] == 17:  # IPv4, UDP
            udp = 14 + (frame[14] & 0x0F) * 4
            if struct.unpack_from("!H", frame, udp + 2)[0] != 4789:
                continue
            outer = str(ipaddress.IPv4Address(frame[30:34]))
            frame = frame[udp + 8 + 8 :]  # past the UDP and VXLAN headers
        if frame[12:14] != b"\x08\x06" or len(frame) < 42:
            continue
        op = struct.unpack_from("!H", frame, 20)[0]
        found.append(Arp(op, frame[22:28].hex(":"), str(ipaddress.IPv4Address(frame[28:32])),
                         str(ipaddress.IPv4Address(frame[38:42])), outer))
    return found


def captured(c: Cluster, host: Host, iface: str, name: str, action) -> list[Arp]:
    """Run `action` while tcpdump listens on `iface` of `host`; the ARP packets it saw."""
    path = c.lab.tmpdir / f"{name}.pcap"
    cap = host.capture(path, "arp or udp port 4789", iface=iface)
    try:
        action()
        time.sleep(0.5)  # the last packets reach tcpdump
    finally:
        cap.stop()
    return arp_in(path.read_bytes())


# -- the cluster -------------------------------------------------------------------------------


def add_underlay(lab: Lab, mixed: bool) -> list[Host]:
    hosts = [lab.add_host(f"node{i + 1}", v4=f"{vtep(i)}/24") for i in range(3)]
    for h in hosts:
        h.sysctl("net.ipv6.conf.default.disable_ipv6", 1)  # no ND/MLD chatter on the overlay
        if mixed:
            h.run("ethtool", "-K", "eth0", "tx", "off")  # lab only: see the module docstring
    return hosts


def userspace_bridge(host: Host, i: int) -> None:
    """The mixed scenario's node1: a bridge br-blue with overlayd's TAP as a port."""
    host.ip("link", "add", BRIDGE, "mtu", str(MTU), "type", "bridge", "stp_state", "0")
    host.ip("link", "set", TAP, "master", BRIDGE)
    host.ip("addr", "add", f"{node_ip(i)}/24", "dev", BRIDGE)
    host.ip("link", "set", BRIDGE, "up")


def pod_mac(node: int, k: int) -> str:
    return f"02:00:00:00:{node + 1:02x}:{k:02x}"


@pytest.fixture(scope="module", params=list(SCENARIOS))
def cluster(request: pytest.FixtureRequest):
    require_netns()
    require_programs("ping", "iperf3", "ss", "ethtool", "bridge", "tcpdump")
    with Lab() as lab:
        c = Cluster(request.param, lab, SCENARIOS[request.param], add_underlay(lab, request.param == "mixed"))
        try:
            for i in range(3):
                c.start(i)
            for node in c.nodes:
                node.wait_ready()
            for i in c.kernel_nodes:
                assert c.hosts[i].json_ip("link", "show", "dev", BRIDGE), f"node{i + 1}: no {BRIDGE}"
            if not c.kernel(N1):
                userspace_bridge(c.hosts[N1], N1)
            for i in range(3):
                c.add_pod(i, f"n{i + 1}p1", f"192.168.100.1{i + 1}", pod_mac(i, 1))
            c.add_pod(N2, "n2p2", "192.168.100.22", pod_mac(N2, 2))  # the one that moves
            wait_showing_logs(c.sessions_up, "every BGP session Established", *c.nodes, timeout=20)
            c.announce()
            for i in range(3):  # the nodes' own addresses (a TAP node's is known once it speaks)
                assert not ping_all([(c.hosts[i], node_ip(j)) for j in range(3) if j != i])
            wait_showing_logs(c.everything_known, "every pod's MAC and IP in every other node's RIB",
                              *c.nodes, timeout=20)
            yield c
        finally:
            try:
                for node in c.nodes:
                    if node.proc.poll() is None:
                        node.proc.send_signal(signal.SIGTERM)
                codes = {node.host.name: node.proc.wait(timeout=15) for node in c.nodes}
                left = {c.hosts[i].name: [link["ifname"] for link in c.hosts[i].json_ip("link")
                                          if link["ifname"] in (BRIDGE, VXLAN)] for i in c.kernel_nodes}
            finally:
                c.close_pods()
        if c.measured:
            print(f"[{c.name}] measured: " + ", ".join(f"{k}={v}" for k, v in c.measured.items()))
        assert set(codes.values()) == {0}, f"overlayd exit codes {codes}"
        assert not any(left.values()), f"devices left after a clean stop: {left}"


# -- 1. traffic ----------------------------------------------------------------------------------


def test_every_pod_pings_every_remote_pod_and_every_node(cluster: Cluster):
    pods = list(cluster.pods.values())
    pairs = [(p.host, q.ip) for p in pods for q in pods if q.node != p.node]
    pairs += [(p.host, node_ip(i)) for p in pods for i in range(3)]
    failed = ping_all(pairs)
    assert not failed, f"{cluster.name}: no reply for {failed}"
    print(f"[{cluster.name}] {len(pairs)} pings answered (pod -> remote pod, pod -> every node's bridge)")


def test_a_tcp_stream_crosses_between_pods_on_two_kernel_nodes(cluster: Cluster):
    end = iperf3(cluster.pods["n2p1"], cluster.pods["n3p1"])
    print(f"[{cluster.name}] iperf3 node2 pod -> node3 pod: "
          f"{end['sum_received']['bits_per_second'] / 1e9:.2f} Gbit/s")
    assert end["sum_received"]["bytes"] > 1_000_000, end
    if not cluster.kernel(N1):  # and from the userspace node to a kernel one
        end = iperf3(cluster.pods["n1p1"], cluster.pods["n2p1"])
        print(f"[{cluster.name}] iperf3 node1 (userspace) pod -> node2 (kernel) pod: "
              f"{end['sum_received']['bits_per_second'] / 1e9:.2f} Gbit/s")
        assert end["sum_received"]["bytes"] > 1_000_000, end


# -- 2. the kernel's tables ------------------------------------------------------------------------


def test_the_kernel_tables_equal_what_the_rib_implies(cluster: Cluster):
    cluster.announce()
    wait_showing_logs(cluster.everything_known, "every pod known everywhere", *cluster.nodes, timeout=10)
    try:
        wait_tables(cluster, cluster.kernel_nodes, "the kernel tables to equal the status rows", timeout=5)
    except AssertionError:
        pass  # the assertions below say what differs
    for i in cluster.kernel_nodes:
        want, have = expected_tables(cluster, i), kernel_tables(cluster.hosts[i])
        assert not have.duplicates(), f"node{i + 1}: duplicates {have.duplicates()}"
        assert have.sorted().fdb == want.sorted().fdb, f"node{i + 1} vx100 fdb: {have.fdb} != {want.fdb}"
        assert have.sorted().bridge == want.sorted().bridge, f"node{i + 1} bridge fdb: {have.bridge} != {want.bridge}"
        assert have.sorted().neigh == want.sorted().neigh, f"node{i + 1} neighbours: {have.neigh} != {want.neigh}"
        # every pod and node elsewhere is in there, and nothing local is
        remote = {(p.mac, vtep(p.node)) for p in cluster.pods.values() if p.node != i}
        assert remote <= set(have.fdb), (remote, have.fdb)
        assert {(ZERO_MAC, vtep(j)) for j in range(3) if j != i} <= set(have.fdb)
        assert {(p.ip, p.mac) for p in cluster.pods.values() if p.node != i} <= set(have.neigh)
        assert not {p.mac for p in cluster.pods.values() if p.node == i} & {m for m, _ in have.fdb}
    i = cluster.kernel_nodes[0]
    print(f"--- [{cluster.name}] node{i + 1}: bridge fdb show dev {VXLAN} ---\n"
          f"{cluster.hosts[i].run('bridge', 'fdb', 'show', 'dev', VXLAN).stdout}"
          f"--- ip neigh show dev {BRIDGE} ---\n{cluster.hosts[i].ip('neigh', 'show', 'dev', BRIDGE).stdout}"
          f"--- overlayctl fdb ---\n{cluster.nodes[i].ctl_text('fdb')}")


# -- 3. local learning -------------------------------------------------------------------------------


def test_pods_are_announced_from_their_node_and_withdrawn_when_their_veth_goes(cluster: Cluster):
    cluster.announce()
    for pod in cluster.pods.values():
        for i in range(3):
            if i != pod.node:
                assert cluster.knows(i, pod), f"node{i + 1} lacks {pod}: {sorted(cluster.macip(i), key=str)}"
    # a pod per kernel node that comes and goes
    temps = [cluster.add_pod(i, f"n{i + 1}t", f"192.168.100.3{i + 1}", pod_mac(i, 9)) for i in cluster.kernel_nodes]
    start = time.monotonic()
    cluster.announce(temps)
    wait_showing_logs(lambda: all(cluster.knows(i, t) for t in temps for i in range(3) if i != t.node),
                      "the new pods in every other RIB", *cluster.nodes, timeout=5, interval=TIMED)
    cluster.report("announce_s", time.monotonic() - start, "new pods announced everywhere after their first ping")
    for t in temps:
        cluster.delete_pod(t)
    start = time.monotonic()

    def gone() -> bool:
        macs = {t.mac for t in temps}
        for i in range(3):
            if {m for m, _, _ in cluster.macip(i)} & macs:
                return False
            if {r["mac"] for r in cluster.query(i, "fdb")} & macs:
                return False
            if cluster.kernel(i) and {m for m, _ in kernel_tables(cluster.hosts[i]).fdb} & macs:
                return False
        return True

    wait_showing_logs(gone, "the deleted pods' routes and entries gone everywhere", *cluster.nodes, timeout=5,
                      interval=TIMED)
    cluster.report("withdraw_s", time.monotonic() - start, "deleted pods withdrawn everywhere after their veth went")
    wait_tables(cluster, cluster.kernel_nodes, "the kernel tables to follow")


# -- 4. ARP suppression by the bridge ------------------------------------------------------------------


def test_arp_for_a_remote_pod_is_answered_by_the_bridge_without_crossing_the_overlay(cluster: Cluster):
    asker, target = cluster.pods["n2p1"], cluster.pods["n3p1"]
    node = cluster.hosts[N2]
    cluster.announce([asker, target])
    # the binding, and the bridge's own (extern_learn, never aging) entry for the MAC
    wait_tables(cluster, [N2], "node2's tables")
    have = kernel_tables(node)
    assert (target.ip, target.mac) in have.neigh and target.mac in have.bridge, have

    def ask(ip: str) -> Any:
        def action() -> None:
            asker.host.ip("neigh", "flush", "dev", "eth0")
            asker.host.ping(ip, timeout=1)
        return action

    def both_sides(name: str, ip: str) -> tuple[list[Arp], list[Arp]]:
        """(ARP on the asker's port, ARP inside VXLAN on node2's underlay) while it asks for `ip`."""
        underlay: list[Arp] = []
        port = captured(cluster, node, asker.port, f"{name}-port",
                        lambda: underlay.extend(captured(cluster, node, "eth0", f"{name}-underlay", ask(ip))))
        return port, underlay

    port, underlay = both_sides("suppressed", target.ip)
    requests = [a for a in port if a.op == 1 and a.target_ip == target.ip and a.sender_mac == asker.mac]
    replies = [a for a in port if a.op == 2 and a.sender_ip == target.ip]
    assert requests, f"the pod sent no ARP request for {target.ip}: {port}"
    assert replies and all(a.sender_mac == target.mac for a in replies), port
    crossing = [a for a in underlay if target.ip in (a.target_ip, a.sender_ip)]
    assert not crossing, f"ARP for {target.ip} crossed the overlay: {crossing}"
    [entry] = asker.host.json_ip("neigh", "show", target.ip, "dev", "eth0")
    assert entry["lladdr"] == target.mac, entry

    # the control: an address nobody announced is asked for across the overlay, which the capture sees
    port, underlay = both_sides("flooded", "192.168.100.99")
    flooded = [a for a in underlay if a.op == 1 and a.target_ip == "192.168.100.99" and a.sender_mac == asker.mac]
    assert {a.vtep for a in flooded} == {vtep(N1), vtep(N3)}, (
        f"a request for an unbound address goes to every other VTEP: {underlay}")
    print(f"[{cluster.name}] ARP for {target.ip}: {len(requests)} request(s) on the pod's port, "
          f"answered locally, 0 across the overlay (control: {len(flooded)} copies of a request for "
          f"an unknown address crossed)")


# -- 5. MAC mobility -------------------------------------------------------------------------------------


def test_a_pod_that_moves_to_another_node_is_followed_with_a_higher_sequence(cluster: Cluster):
    """Live migration: the pod comes up on node3 (same MAC and IP, a new namespace) while node2
    still announces it, says hello there, then its old veth on node2 is deleted.

    In the other order (old veth deleted first) node2 withdraws the MAC within a few hundred
    ms, and node3, holding no route for it when the pod appears, rightly announces sequence 0
    (RFC 7432 section 15: a MAC nobody else advertises is simply new): a higher sequence is
    only due while the old location still advertises the MAC."""
    old = cluster.pods["n2p2"]
    cluster.announce([old])
    wait_showing_logs(lambda: all(cluster.knows(i, old) for i in (N1, N3)), "the pod known at node2",
                      *cluster.nodes, timeout=10)
    before = {(r["ip"], r["sequence"]) for r in cluster.query(N1, "rib")
              if r["type"] == "macip" and r["mac"] == old.mac and r["best"]}
    seq0 = max(s for _, s in before)
    new = cluster.add_pod(N3, "n2p2", old.ip, old.mac, netns=f"{cluster.lab.prefix}-n2p2-moved")
    start = time.monotonic()
    cluster.announce([new])

    def followed() -> bool:
        for i in (N1, N2):
            row = next((r for r in cluster.query(i, "fdb") if r["mac"] == old.mac), None)
            if row is None or (row["where"], row["learned"]) != (vtep(N3), "bgp"):
                return False
            if cluster.kernel(i):
                have = kernel_tables(cluster.hosts[i])
                if (old.mac, vtep(N3)) not in have.fdb or old.mac not in have.bridge:
                    return False
        mine = next((r for r in cluster.query(N3, "fdb") if r["mac"] == old.mac), None)
        return mine is not None and mine["where"] == "local"

    wait_showing_logs(followed, "every node to place the MAC at node3", *cluster.nodes, timeout=5, interval=TIMED)
    moved = time.monotonic() - start
    # node2's bridge itself now sends the MAC to vx100, though the old port is still there
    fdb2 = json.loads(cluster.hosts[N2].run("bridge", "-j", "fdb", "show", "br", BRIDGE).stdout)
    on = [e["ifname"] for e in fdb2 if e["mac"] == old.mac and "dst" not in e]
    assert on == [VXLAN], f"node2's bridge places {old.mac} on {on}"
    cluster.hosts[N2].ip("link", "del", old.port)  # now the old pod goes
    cluster._del_netns(old.host.netns)

    def routes(i: int) -> set[tuple[str | None, str, int]]:
        return {(r["ip"], r["next_hop"], r["sequence"]) for r in cluster.query(i, "rib")
                if r["type"] == "macip" and r["mac"] == old.mac and r["best"]}

    def announced() -> bool:
        for i in range(3):
            rows = routes(i)
            if {ip for ip, _, _ in rows} != {None, old.ip} or any(nh != vtep(N3) or seq <= seq0 for _, nh, seq in rows):
                return False
        return True

    # node3's bridge learned the MAC; the IP comes from its own neighbour table, which probes
    # the MAC once the remote MAC/IP route is gone (see kernel.segment.probe_instead)
    wait_showing_logs(announced, "node3's MAC and MAC/IP routes, with a higher sequence, everywhere",
                      *cluster.nodes, timeout=5, interval=TIMED)
    cluster.report("mobility_ip_s", time.monotonic() - start, "the moved pod's MAC and IP announced from node3")
    for i in range(3):
        assert not cluster.query(i, "status")["bgp"]["duplicate_macs"]
    wait_tables(cluster, cluster.kernel_nodes, "the kernel tables after the move")
    failed = ping_all([(cluster.pods["n1p1"].host, new.ip), (cluster.pods["n2p1"].host, new.ip),
                       (new.host, cluster.pods["n1p1"].ip)])
    assert not failed, failed
    rib = cluster.nodes[N1].ctl_text("rib")
    print("\n".join(line for line in rib.splitlines() if line.startswith("TYPE") or old.mac in line))
    cluster.report("mobility_s", moved, f"{old.mac} placed at node3 everywhere (sequence {seq0} -> "
                   f"{max(seq for _, _, seq in routes(N1))})")


def test_one_mac_on_two_kernel_nodes_at_once_is_frozen_as_a_duplicate(cluster: Cluster):
    """Two pods with one MAC, on node2 and node3, speaking in turn. Each time, the speaker's bridge
    takes the MAC back from the VXLAN port (where the other node's route had put it), its node
    announces a higher sequence and the other withdraws: a move on both. After 5 moves within
    180 s (the defaults) a node freezes the MAC and stops taking part."""
    mac = "02:00:00:00:0d:0d"
    pods = [cluster.add_pod(N2, "dup2", "192.168.100.42", mac), cluster.add_pod(N3, "dup3", "192.168.100.43", mac)]

    def frozen() -> dict[int, dict]:
        return {i: row for i in range(3) for row in cluster.query(i, "status")["bgp"]["duplicate_macs"]
                if row["mac"] == mac}

    def placed(i: int, vtep_: str) -> bool:
        """Node i places the MAC at `vtep_`, in its FDB and on its bridge's VXLAN port (only then
        does the next frame from its own pod move it back)."""
        where = next((r["where"] for r in cluster.query(i, "fdb") if r["mac"] == mac), None)
        return where == vtep_ and mac in kernel_tables(cluster.hosts[i]).bridge

    try:
        start = time.monotonic()
        turns = 0
        while not frozen() and turns < 12:
            pod = pods[turns % 2]
            other = N3 if pod.node == N2 else N2
            turns += 1
            pod.host.ping(node_ip(pod.node), timeout=1)
            wait_showing_logs(lambda pod=pod, other=other: frozen() or placed(other, vtep(pod.node)),
                              f"turn {turns}: node{other + 1} to place {mac} at node{pod.node + 1}",
                              *cluster.nodes, timeout=5)
        alarms = frozen()
        assert alarms, f"no node froze {mac} after {turns} turns"
        assert all(row["moves"] >= 5 for row in alarms.values()), alarms
        cluster.report("duplicate_s", time.monotonic() - start,
                       f"{mac} on node2 and node3 frozen by node(s) {sorted(i + 1 for i in alarms)} after {turns} turns")
        # frozen: speaking again moves nothing any more
        rib = {r["next_hop"] for r in cluster.query(N1, "rib") if r["type"] == "macip" and r["mac"] == mac}
        for pod in pods:
            if pod.node in alarms:
                pod.host.ping(node_ip(pod.node), timeout=1)
        time.sleep(1)
        assert {r["next_hop"] for r in cluster.query(N1, "rib") if r["type"] == "macip" and r["mac"] == mac} == rib
        print(f"[{cluster.name}] alarms: " + "; ".join(a for i in alarms for a in cluster.query(i, "status")["bgp"]["alarms"]
                                                        if mac in a))
    finally:
        for pod in pods:
            cluster.delete_pod(pod)
    wait_tables(cluster, cluster.kernel_nodes, "the kernel tables once both are gone")


# -- 6. drift ---------------------------------------------------------------------------------------------


def test_entries_deleted_by_hand_come_back(cluster: Cluster):
    i, pod = N2, cluster.pods["n3p1"]
    host = cluster.hosts[i]
    wait_tables(cluster, [i], "node2's tables")
    repairs = cluster.query(i, "status")["kernel"]["drift_repairs"]
    host.run("bridge", "fdb", "del", pod.mac, "dev", VXLAN, "dst", vtep(pod.node), "self")
    host.run("bridge", "fdb", "del", pod.mac, "dev", VXLAN, "master")
    host.ip("neigh", "del", pod.ip, "dev", BRIDGE)
    start = time.monotonic()
    # (no look at the tables in between: overlayd may have put the entries back already)
    wait_tables(cluster, [i], "the deleted entries to come back", timeout=5, interval=TIMED)
    cluster.report("drift_s", time.monotonic() - start, "FDB entries and neighbour deleted by hand: back after")
    assert cluster.query(i, "status")["kernel"]["drift_repairs"] > repairs


# -- 7. SIGKILL and a restart ------------------------------------------------------------------------------


def test_sigkill_and_restart_adopt_the_devices_and_leave_nothing_stale(cluster: Cluster):
    i = N2
    host = cluster.hosts[i]
    temp = cluster.add_pod(N3, "n3gone", "192.168.100.38", pod_mac(N3, 8))
    cluster.announce([temp])
    wait_showing_logs(lambda: cluster.knows(i, temp), "node2 to know the temporary pod", *cluster.nodes, timeout=5)
    wait_tables(cluster, [i], "node2's tables")
    cluster.nodes[i].stop(signal.SIGKILL)
    for device in (BRIDGE, VXLAN):
        assert host.json_ip("link", "show", "dev", device), f"{device} outlives a SIGKILL"
    # what the dead daemon's tables no longer say: a pod elsewhere went while it was down ...
    cluster.delete_pod(temp)
    # ... and one of its own came (the bridge and the host's neighbour table learn it meanwhile)
    late = cluster.add_pod(i, "n2late", "192.168.100.29", pod_mac(i, 3))
    cluster.announce([late])
    # ... and what a crashed run might have left (entries of a VTEP that no longer exists)
    stale_mac = "02:de:ad:be:ef:01"
    host.run("bridge", "fdb", "append", stale_mac, "dev", VXLAN, "dst", "10.0.0.9", "self", "permanent")
    host.run("bridge", "fdb", "append", ZERO_MAC, "dev", VXLAN, "dst", "10.0.0.9", "self", "permanent")
    host.run("bridge", "fdb", "add", stale_mac, "dev", VXLAN, "master", "extern_learn")
    host.ip("neigh", "replace", "192.168.100.99", "lladdr", stale_mac, "dev", BRIDGE, "extern_learn", "nud", "noarp")
    stale = kernel_tables(host)
    assert {(temp.mac, vtep(N3)), (stale_mac, "10.0.0.9"), (ZERO_MAC, "10.0.0.9")} <= set(stale.fdb), stale
    assert {temp.mac, stale_mac} <= set(stale.bridge) and (temp.ip, temp.mac) in stale.neigh, stale

    start = time.monotonic()
    node = cluster.start(i)
    node.wait_ready()
    for device in (BRIDGE, VXLAN):
        assert f"{device}: adopted" in node.log(), node.log()
    # read from the bridge's FDB and the host's neighbour table at start: it need not speak again
    wait_showing_logs(lambda: cluster.knows(N1, late) and cluster.knows(N3, late),
                      "the pod that came while node2 was down, announced", node, timeout=10)
    cluster.announce()

    def clean() -> bool:
        have = kernel_tables(host)
        leftovers = {temp.mac, stale_mac} & ({m for m, _ in have.fdb} | set(have.bridge) | {m for _, m in have.neigh})
        return not leftovers and ("10.0.0.9" not in {v for _, v in have.fdb}) and tables_match(cluster, i)

    wait_showing_logs(lambda: cluster.everything_known() and clean(),
                      "node2 back: its tables equal the RIB, nothing stale, nothing twice, its new pod announced",
                      node, timeout=20, interval=TIMED)
    cluster.report("restart_s", time.monotonic() - start,
                   "SIGKILL + restart: tables clean and equal to the RIB, counted from the new start")
    assert not kernel_tables(host).duplicates()
    summary = cluster.query(i, "status")["kernel"]
    assert summary["adopted_pending_sweep"] == 0 and summary["failing"] == 0, summary
    pods = [cluster.pods["n1p1"], cluster.pods["n2p1"], cluster.pods["n3p1"], late]
    failed = ping_all([(p.host, q.ip) for p in pods for q in pods if p is not q])
    assert not failed, failed


# -- 8. a clean stop ------------------------------------------------------------------------------------------


def addresses_and_routes(host: Host) -> tuple[set, set]:
    addresses = {(link["ifname"], a["local"], a["prefixlen"]) for link in host.json_ip("addr")
                 for a in link.get("addr_info", [])}
    routes = {(r["dst"], r.get("dev"), r.get("gateway")) for r in host.json_ip("route")}
    return addresses, routes


def test_a_clean_stop_removes_the_bridge_and_vxlan_device_and_nothing_else(cluster: Cluster):
    """SIGTERM on node3. Its pods' veths were ports of br-blue: deleting the bridge releases
    them (the kernel does not delete a bridge's ports), so they stay, up, with no master, and
    the pods keep their eth0 — cut off from the overlay until something plugs them in again."""
    i = N3
    host = cluster.hosts[i]
    links = {link["ifname"]: link for link in host.json_ip("link")}
    addresses, routes = addresses_and_routes(host)
    ports = [p for p in cluster.pods.values() if p.node == i]
    assert ports and all(links[p.port].get("master") == BRIDGE for p in ports)

    assert cluster.nodes[i].stop(signal.SIGTERM) == 0, cluster.nodes[i].log()
    after = {link["ifname"]: link for link in host.json_ip("link")}
    assert set(after) == set(links) - {BRIDGE, VXLAN}, (sorted(links), sorted(after))
    for p in ports:
        assert "master" not in after[p.port] and "UP" in after[p.port]["flags"], after[p.port]
        assert p.host.json_ip("link", "show", "dev", "eth0"), f"{p.name} lost its eth0"
    assert addresses_and_routes(host) == ({a for a in addresses if a[0] not in (BRIDGE, VXLAN)},
                                          {r for r in routes if r[1] not in (BRIDGE, VXLAN)})
    print(f"[{cluster.name}] node3 after SIGTERM: {BRIDGE} and {VXLAN} gone; the pods' veths "
          f"{', '.join(p.port for p in ports)} stay, up, with no master; links now: {', '.join(sorted(after))}")

    # the others hear the Cease at once: nothing of node3's is left in their tables or kernels
    def forgotten() -> bool:
        for j in (N1, N2):
            if any(vtep(i) in (r["next_hop"], r["peer"]) for r in cluster.query(j, "rib")):
                return False
            if cluster.kernel(j) and vtep(i) in {v for _, v in kernel_tables(cluster.hosts[j]).fdb}:
                return False
        return True

    wait_showing_logs(forgotten, "node3 gone from the others' tables", *cluster.nodes[:2], timeout=5)
    wait_tables(cluster, [j for j in cluster.kernel_nodes if j != i], "the others' kernel tables")
