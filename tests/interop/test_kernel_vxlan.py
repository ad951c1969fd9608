"""The Linux kernel's own VXLAN device and overlayd carry one network between them.

One lab per underlay family (IPv4, IPv6):

    n1: overlayd, VTEP 10.0.0.1 / fd00::1, TAP blue0 192.168.100.1/24 (+ fd10::1/64)
    k:  no overlayd; the README's recipe: vx100 (kernel VXLAN, VNI 100, port 4789,
        nolearning) bridged into br100 192.168.100.4/24 (+ fd10::4/64), with an
        all-zeros FDB entry sending everything to n1's VTEP

and ping, iperf3 TCP both ways, both sides' tables, and the outer UDP ports
overlayd sends with (RFC 7348 section 5) are checked across it.

What the kernel needs, found by trying it (kernel 6.x, iproute2 6.x):

- Over IPv6 nothing beyond the README's recipe: the kernel's VXLAN defaults
  are `udpcsum noudp6zerocsumtx noudp6zerocsumrx`, so it sends UDP checksums,
  and it checks the ones overlayd sends (always, from a plain UDP socket).
  A kernel configured with `udp6zerocsumtx` cannot talk to overlayd: its
  zero-checksum IPv6 datagrams are dropped by overlayd's host as
  Udp6InCsumErrors before overlayd sees them. The flags are spelled out
  below so that a changed kernel default cannot change what this tests.
- The kernel's VXLAN device takes MTU 1500 when `local` names no lower
  device, so it is set explicitly (1450 over IPv4, 1430 over IPv6) as is
  overlayd's TAP; a full-size frame with DF set crosses both ways.
- Lab only: with checksum offload on k's veth, the kernel hands its VXLAN
  datagrams to the veth with the inner TCP checksum unfinished
  (CHECKSUM_PARTIAL, a job for the NIC). A veth never finishes it, so a
  userspace receiver such as overlayd gets TCP segments with bad checksums:
  ping works, TCP stalls (TcpInCsumErrors on n1). Real NICs fill the
  checksum in; here `ethtool -K eth0 tx off` on k makes the kernel do it.
  The same applies to any kernel VTEP that reaches overlayd over a veth.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import pytest

from tests.support import require_netns, require_programs
from tools.lab import Host, Lab, wait_for
from tools.nodes import Overlayd, start_overlayd

VNI = 100
VXLAN_PORT = 4789
OVERLAY_N1, OVERLAY_K = "192.168.100.1", "192.168.100.4"
OVERLAY6_N1, OVERLAY6_K = "fd10::1", "fd10::4"
MTU = {"ipv4": 1450, "ipv6": 1430}  # underlay 1500 - 50 / - 70
PINGS = 10
IPERF_SECONDS = 3
IPERF_PORT = 5201
ZERO_MAC = "00:00:00:00:00:00"

pytestmark = [pytest.mark.root, pytest.mark.peer]


@dataclass
class Overlay:
    family: str  # "ipv4" or "ipv6": the underlay's
    lab: Lab
    n1: Host
    k: Host
    node: Overlayd
    vtep_n1: str
    vtep_k: str
    mtu: int
    tap_mac: str  # overlayd's blue0
    bridge_mac: str  # the kernel host's br100
    record: Callable[[str, Any], None]  # pytest's record_testsuite_property
    measured: dict[str, Any] = field(default_factory=dict)

    def report(self, key: str, value: Any, text: str) -> None:
        """Print a measurement and attach it to the run's report (a junit testsuite property)."""
        name = f"kernel_vxlan_{self.family}_{key}"
        self.measured[name] = value
        self.record(name, value)
        print(f"\n[kernel-vxlan {self.family} underlay] {text}")


@pytest.fixture(scope="module", params=["ipv4", "ipv6"])
def overlay(request, record_testsuite_property) -> Iterator[Overlay]:
    require_netns()
    require_programs("iperf3", "tcpdump", "tshark", "ethtool", "bridge", "ping", "ss")
    family = request.param
    mtu = MTU[family]
    with Lab() as lab:
        n1 = lab.add_host("n1", v4="10.0.0.1/24", v6="fd00::1/64")
        k = lab.add_host("k", v4="10.0.0.4/24", v6="fd00::4/64")
        vtep_n1, vtep_k = (n1.v4, k.v4) if family == "ipv4" else (n1.v6, k.v6)

        node = start_overlayd(n1, {
            "node": {"vtep": vtep_n1, "vxlan_port": VXLAN_PORT},
            "networks": [{
                "name": "blue", "vni": VNI, "device": "blue0",
                "address": f"{OVERLAY_N1}/24", "mtu": mtu, "vteps": [vtep_k],
            }],
        })
        n1.ip("-6", "addr", "add", f"{OVERLAY6_N1}/64", "dev", "blue0", "nodad")

        # The README's recipe, with the checksum flags and the MTU spelled out.
        csum = ["udpcsum"] + (["noudp6zerocsumtx", "noudp6zerocsumrx"] if family == "ipv6" else [])
        k.ip("link", "add", "vx100", "mtu", str(mtu), "type", "vxlan", "id", str(VNI),
             "local", vtep_k, "dstport", str(VXLAN_PORT), "nolearning", *csum)
        k.ip("link", "add", "br100", "mtu", str(mtu), "type", "bridge")
        k.ip("link", "set", "vx100", "master", "br100")
        k.run("bridge", "fdb", "append", ZERO_MAC, "dev", "vx100", "dst", vtep_n1)
        k.ip("addr", "add", f"{OVERLAY_K}/24", "dev", "br100")
        k.ip("-6", "addr", "add", f"{OVERLAY6_K}/64", "dev", "br100", "nodad")
        k.ip("link", "set", "vx100", "up")
        k.ip("link", "set", "br100", "up")
        # Lab only (see the module docstring): finish inner checksums before the veth.
        k.run("ethtool", "-K", "eth0", "tx", "off")

        [vx] = k.json_ip("-d", "link", "show", "dev", "vx100")
        [br] = k.json_ip("link", "show", "dev", "br100")
        assert vx["mtu"] == br["mtu"] == mtu
        info = vx["linkinfo"]["info_data"]
        assert (info["port"], info["learning"], info["udp_csum"]) == (VXLAN_PORT, False, True), info
        if family == "ipv6":
            assert not info["udp_zero_csum6_tx"] and not info["udp_zero_csum6_rx"], info
        [net] = node.ctl("status")["networks"]
        assert net["mtu"] == mtu
        overlay = Overlay(family, lab, n1, k, node, vtep_n1, vtep_k, mtu,
                          tap_mac=net["mac"], bridge_mac=br["address"],
                          record=record_testsuite_property)
        yield overlay
        if overlay.measured:
            print(f"\n[kernel-vxlan {family} underlay] measured: "
                  + ", ".join(f"{name}={value}" for name, value in overlay.measured.items()))
        if node.proc.poll() is None:
            assert node.stop() == 0, node.log()


# -- helpers -------------------------------------------------------------------


def ping(host: Host, addr: str, count: int = PINGS, size: int | None = None,
         dont_fragment: bool = False) -> tuple[int, float | None, str]:
    """Ping; return (replies received, average RTT in ms or None, the output)."""
    cmd = ["ping", "-n", "-c", str(count), "-i", "0.2", "-W", "2", "-w", str(count + 10)]
    if size is not None:
        cmd += ["-s", str(size)]
    if dont_fragment:
        cmd += ["-M", "do"]
    out = host.run(*cmd, addr, check=False, timeout=count + 20).stdout
    received = re.search(r"(\d+) (?:packets )?received", out)
    rtt = re.search(r"= [\d.]+/([\d.]+)/", out)
    return (int(received.group(1)) if received else 0,
            float(rtt.group(1)) if rtt else None, out)


def snmp(host: Host) -> dict[str, int]:
    """The host's IP/UDP/TCP MIB counters, named like nstat does (TcpInCsumErrors, Udp6InErrors)."""
    counters: dict[str, int] = {}
    lines = host.run("cat", "/proc/net/snmp").stdout.splitlines()
    for names, values in zip(lines[::2], lines[1::2]):
        proto, names = names.split(":", 1)
        for name, value in zip(names.split(), values.split(":", 1)[1].split()):
            counters[proto + name] = int(value)
    for line in host.run("cat", "/proc/net/snmp6").stdout.splitlines():
        if line.strip():
            name, value = line.split()
            counters[name] = int(value)
    return counters


@contextlib.contextmanager
def iperf3_server(host: Host, bind: str, port: int = IPERF_PORT) -> Iterator[subprocess.Popen]:
    """An iperf3 server in host, listening once this yields; killed when the block ends."""
    proc = host.popen("iperf3", "-s", "-B", bind, "-p", str(port))

    def listening() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"iperf3 -s exited {proc.returncode}:\n{host.log(proc)}")
        return any(line.split()[3].endswith(f":{port}")
                   for line in host.run("ss", "-Hltn").stdout.splitlines())

    try:
        wait_for(listening, timeout=10, what=f"iperf3 server on {host.name} port {port}")
        yield proc
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def iperf3_client(host: Host, server: str, *args: str, seconds: int = IPERF_SECONDS,
                  port: int = IPERF_PORT) -> dict[str, Any]:
    """Run an iperf3 client to completion and return its JSON; fail with its error."""
    cmd = ["iperf3", "-c", server, "-p", str(port), "-t", str(seconds), "--json",
           "--connect-timeout", "5000", *args]
    for attempt in range(3):
        try:
            done = host.run(*cmd, check=False, timeout=seconds + 30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{' '.join(cmd)} did not finish within {seconds + 30} s")
        try:
            result = json.loads(done.stdout)
        except json.JSONDecodeError:
            pytest.fail(f"{' '.join(cmd)} exited {done.returncode}, no JSON:\n"
                        f"{done.stdout}\n{done.stderr}")
        error = result.get("error")
        if error and "busy" in error and attempt < 2:  # the previous test is still closing
            time.sleep(1)
            continue
        if error:
            mib = snmp(host)
            csum = {name: mib.get(name, 0) for name in ("TcpInCsumErrors", "UdpInCsumErrors",
                                                         "Udp6InCsumErrors")}
            pytest.fail(f"{' '.join(cmd)}: {error}\n{host.name}'s checksum error counters: {csum}")
        assert done.returncode == 0, f"{' '.join(cmd)} exited {done.returncode}: {done.stderr}"
        return result
    raise AssertionError("unreachable")


def fdb_json(host: Host, dev: str) -> list[dict[str, Any]]:
    return json.loads(host.run("bridge", "-j", "fdb", "show", "dev", dev).stdout or "[]")


def udp_ports_bound(host: Host, address: str) -> set[int]:
    """The UDP ports sockets in host have bound on address (`ss -Huan`)."""
    ports = set()
    for line in host.run("ss", "-Huan").stdout.splitlines():
        local = line.split()[3]
        addr, _, port = local.rpartition(":")
        if addr.strip("[]").split("%")[0] == address:
            ports.add(int(port))
    return ports


# -- tests -----------------------------------------------------------------------


def test_ping_crosses_both_ways(overlay: Overlay):
    before = overlay.node.counters()

    got, rtt_to_kernel, out = ping(overlay.n1, OVERLAY_K)
    assert got == PINGS, f"overlayd -> kernel: {got}/{PINGS} answered\n{out}"
    got, rtt_from_kernel, out = ping(overlay.k, OVERLAY_N1)
    assert got == PINGS, f"kernel -> overlayd: {got}/{PINGS} answered\n{out}"

    after = overlay.node.counters()
    # Echo requests and replies both ways went through overlayd, as known unicast.
    assert after["tx_unicast_frames"] - before["tx_unicast_frames"] >= 2 * PINGS
    assert after["rx_frames"] - before["rx_frames"] >= 2 * PINGS
    overlay.report("ping_rtt_ms_overlayd_to_kernel", rtt_to_kernel,
                   f"ping overlayd -> kernel: {PINGS}/{PINGS}, rtt avg {rtt_to_kernel} ms")
    overlay.report("ping_rtt_ms_kernel_to_overlayd", rtt_from_kernel,
                   f"ping kernel -> overlayd: {PINGS}/{PINGS}, rtt avg {rtt_from_kernel} ms")


def test_ipv6_overlay_ping_crosses_both_ways(overlay: Overlay):
    # Neighbour discovery is multicast: the kernel floods it to overlayd over
    # the all-zeros entry, overlayd floods it to its flood list.
    got, _, out = ping(overlay.n1, OVERLAY6_K, count=5)
    assert got == 5, out
    got, _, out = ping(overlay.k, OVERLAY6_N1, count=5)
    assert got == 5, out


def test_full_size_frames_cross_both_ways_unfragmented(overlay: Overlay):
    # The largest IPv4 packet the overlay MTU allows, DF set: inner frame
    # MTU + 14, outer datagram exactly the 1500-byte underlay MTU.
    size = overlay.mtu - 20 - 8
    got, _, out = ping(overlay.n1, OVERLAY_K, count=3, size=size, dont_fragment=True)
    assert got == 3, out
    got, _, out = ping(overlay.k, OVERLAY_N1, count=3, size=size, dont_fragment=True)
    assert got == 3, out


def test_each_side_learns_the_other(overlay: Overlay):
    got, _, out = ping(overlay.k, OVERLAY_N1, count=2)
    assert got == 2, out

    # overlayd learned the kernel bridge's MAC from the data plane, behind k's VTEP.
    rows = {row["mac"]: row for row in overlay.node.ctl("fdb")}
    kernel = rows.get(overlay.bridge_mac)
    assert kernel is not None, f"{overlay.bridge_mac} not in overlayd's FDB: {rows}"
    assert (kernel["where"], kernel["learned"], kernel["vni"]) == (overlay.vtep_k, "data", VNI)
    assert rows[overlay.tap_mac]["where"] == "local"

    # The kernel decapsulated overlayd's frames and its bridge learned overlayd's
    # MAC on the VXLAN port; the VXLAN device itself learned nothing (nolearning),
    # so all it holds is the static all-zeros entry pointing at overlayd.
    entries = fdb_json(overlay.k, "vx100")
    bridge_learned = [e for e in entries if e["mac"] == overlay.tap_mac
                      and e.get("master") == "br100"]
    assert bridge_learned, f"overlayd's MAC {overlay.tap_mac} not learned on vx100: {entries}"
    assert "permanent" not in bridge_learned[0].get("state", "")
    vxlan_own = [e for e in entries if "self" in e.get("flags", [])]
    assert [(e["mac"], e.get("dst")) for e in vxlan_own] == [(ZERO_MAC, overlay.vtep_n1)], entries


@pytest.mark.parametrize("direction", ["overlayd_to_kernel", "kernel_to_overlayd"])
def test_iperf3_tcp_stream(overlay: Overlay, direction: str):
    # The client runs on n1; -R makes the server on k send.
    reverse = direction == "kernel_to_overlayd"
    before = overlay.node.counters()
    with iperf3_server(overlay.k, OVERLAY_K):
        result = iperf3_client(overlay.n1, OVERLAY_K, *(["-R"] if reverse else []))
    after = overlay.node.counters()
    delta = {name: after[name] - before[name] for name in after}

    received = result["end"]["sum_received"]
    sent = result["end"]["sum_sent"]
    assert received["bytes"] > 0 and received["bits_per_second"] > 0, result["end"]
    assert received["bytes"] <= sent["bytes"]
    gbits = received["bits_per_second"] / 1e9

    # Every data segment crossed overlayd: at most MTU bytes of TCP payload per frame.
    frames = received["bytes"] // overlay.mtu
    if reverse:
        assert delta["rx_frames"] >= frames, delta
        assert delta["tx_unicast_frames"] > 0, delta  # the ACKs
    else:
        assert delta["tx_unicast_frames"] >= frames, delta
        assert delta["rx_frames"] > 0, delta
    assert not {name: n for name, n in delta.items() if name.startswith("rx_drop_") and n}

    overlay.report(
        f"iperf3_gbit_s_{direction}", round(gbits, 3),
        f"iperf3 TCP {direction.replace('_', ' ')}: {gbits:.3f} Gbit/s "
        f"({received['bytes'] / 1e6:.1f} MB in {received['seconds']:.1f} s, "
        f"{sent.get('retransmits', 'n/a')} retransmits)",
    )


@pytest.mark.parametrize("direction", ["overlayd_to_kernel", "kernel_to_overlayd"])
def test_iperf3_tcp_over_the_ipv6_overlay(overlay: Overlay, direction: str):
    """Inner IPv6 TCP: overlayd's TSO6 segmentation and coalescing, checked by the kernel's stack."""
    reverse = direction == "kernel_to_overlayd"
    with iperf3_server(overlay.k, OVERLAY6_K):
        result = iperf3_client(overlay.n1, OVERLAY6_K, *(["-R"] if reverse else []), seconds=2)
    received = result["end"]["sum_received"]
    assert received["bytes"] > 0 and received["bits_per_second"] > 0, result["end"]
    gbits = received["bits_per_second"] / 1e9
    overlay.report(f"iperf3_ipv6_overlay_gbit_s_{direction}", round(gbits, 3),
                   f"iperf3 TCP over the IPv6 overlay {direction.replace('_', ' ')}: {gbits:.3f} Gbit/s")


def test_outer_udp_source_port_follows_the_inner_flow(overlay: Overlay):
    """RFC 7348 section 5: the source port is a hash of the inner flow; 4789 is the destination."""
    pool = udp_ports_bound(overlay.n1, overlay.vtep_n1) - {VXLAN_PORT}
    assert len(pool) > 1, f"overlayd's send sockets on {overlay.vtep_n1}: {pool}"
    pcap = overlay.lab.tmpdir / f"outer-ports-{overlay.family}.pcap"
    capture = overlay.k.popen("tcpdump", "-i", "eth0", "-n", "-U", "-s", "256", "-w", str(pcap),
                              "udp and src host", overlay.vtep_n1)
    try:
        wait_for(lambda: "listening on" in overlay.k.log(capture), timeout=10,
                 what="tcpdump to start")
        # Five TCP flows from overlayd's side: iperf3's control connection and
        # four streams, gently paced. All five on one socket of the pool
        # happens once in 16**4 runs.
        with iperf3_server(overlay.k, OVERLAY_K):
            iperf3_client(overlay.n1, OVERLAY_K, "-P", "4", "-b", "5M", seconds=2)
        time.sleep(0.5)
    finally:
        capture.send_signal(signal.SIGINT)
        try:
            capture.wait(timeout=10)
        except subprocess.TimeoutExpired:
            capture.kill()
    fields = ["udp.srcport", "udp.dstport", "vxlan.vni", "ip.src", "ip.dst",
              "tcp.srcport", "tcp.dstport"]
    out = overlay.k.run("tshark", "-n", "-r", str(pcap), "-T", "fields", "-E", "separator=\t",
                        *[arg for f in fields for arg in ("-e", f)], timeout=60).stdout
    outer_ports_by_flow: dict[tuple[str, ...], set[int]] = defaultdict(set)
    datagrams = 0
    for line in out.splitlines():
        row = dict(zip(fields, line.split("\t")))
        # The outer UDP header comes first; the last IPv4 header is the inner one.
        src_port = int(row["udp.srcport"].split(",")[0])
        dst_port = int(row["udp.dstport"].split(",")[0])
        datagrams += 1
        assert dst_port == VXLAN_PORT, line
        assert src_port in pool, f"source port {src_port} is not one of overlayd's {pool}"
        assert row["vxlan.vni"] == str(VNI), line
        if row["tcp.srcport"]:
            flow = (row["ip.src"].split(",")[-1], row["tcp.srcport"],
                    row["ip.dst"].split(",")[-1], row["tcp.dstport"])
            outer_ports_by_flow[flow].add(src_port)
    assert datagrams > 100, f"only {datagrams} VXLAN datagrams from {overlay.vtep_n1} captured"
    assert len(outer_ports_by_flow) >= 5, dict(outer_ports_by_flow)
    # Each flow keeps one source port (so the underlay keeps it in order) ...
    assert all(len(ports) == 1 for ports in outer_ports_by_flow.values()), dict(outer_ports_by_flow)
    # ... and different flows spread over different ones.
    used = set().union(*outer_ports_by_flow.values())
    assert len(used) >= 2, dict(outer_ports_by_flow)
    overlay.report("outer_source_ports", len(used),
                   f"{len(outer_ports_by_flow)} inner TCP flows used {len(used)} outer source "
                   f"ports of overlayd's {len(pool)}; {datagrams} datagrams, all to port {VXLAN_PORT}")


def test_nothing_was_dropped_or_corrupted(overlay: Overlay):
    """Last: after all that traffic, no side counted a drop or a bad checksum."""
    counters = overlay.node.counters()
    assert not {name: n for name, n in counters.items() if name.startswith("rx_drop_") and n}
    for host in (overlay.n1, overlay.k):
        mib = snmp(host)
        bad = {name: mib.get(name, 0) for name in
               ("UdpInCsumErrors", "Udp6InCsumErrors", "TcpInCsumErrors", "TcpInErrs")}
        assert not any(bad.values()), f"{host.name}: {bad}"
