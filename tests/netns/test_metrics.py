"""The metrics endpoint of real daemons, scraped over HTTP in their namespaces and parsed with
prometheus-client's own parser.

Two BGP nodes (a listens on 127.0.0.1:9477, b on [::1]:9477): the counters move by exactly
the frames a test sends, the tables' figures are what overlayctl shows, and every metric the
contrib dashboard and alert rules use is in a scrape. The lifecycle tests at the bottom run a
single daemon in a fresh lab each: a taken port is a setup error (exit 3) that leaves nothing
behind, and a clean stop closes the listening socket.
"""

from __future__ import annotations

import signal
import sys
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from overlayd import __version__
from tests.netns.topology import (
    DEVICE,
    BgpOverlay,
    add_underlay_host,
    bgp_node_config,
    node_config,
    overlay_ip,
)
from tests.support import require_netns
from tests.unit.test_metrics import CONTRIB, ROOT, metric_names_in
from tools.lab import Host, Lab, wait_for
from tools.nodes import start_overlayd

pytestmark = pytest.mark.root

LISTEN = ("127.0.0.1:9477", "[::1]:9477")
PINGS = 20
PING_FRAME_BYTES = 14 + 20 + 8 + 56  # Ethernet, IPv4, ICMP echo, ping's default 56 bytes of data

Samples = dict[tuple[str, frozenset], float]


def parse(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def moved(before: Samples, after: Samples, prefix: str = "overlayd_") -> dict[tuple[str, frozenset], float]:
    """The samples of overlayd's families that changed, and by how much (BGP keepalives and uptime left out)."""
    steady = ("overlayd_uptime_seconds", "overlayd_bgp_messages_", "overlayd_bgp_peer_uptime_seconds")
    return {k: after[k] - before.get(k, 0) for k in after
            if k[0].startswith(prefix) and not k[0].startswith(steady) and after[k] != before.get(k, 0)}


def key(name: str, **labels) -> tuple[str, frozenset]:
    return ("overlayd_" + name, frozenset((k, str(v)) for k, v in labels.items()))


@pytest.fixture(scope="module")
def mesh():
    """Two BGP nodes converged, each serving metrics; b's neighbour entry for a made permanent."""
    require_netns()
    with Lab() as lab:
        hosts = [add_underlay_host(lab, name, i + 1, 4) for i, name in enumerate("ab")]
        configs = [bgp_node_config(i, 4, count=2) for i in range(2)]
        for config, listen in zip(configs, LISTEN):
            config["metrics"] = {"listen": listen}
        nodes = [start_overlayd(h, c, wait=False) for h, c in zip(hosts, configs)]
        for node in nodes:
            node.wait_ready()
        overlay = BgpOverlay(lab, 4, hosts, nodes)
        overlay.macs = [overlay.query(i, "status")["networks"][0]["mac"] for i in range(2)]
        overlay.converge()
        # b answers a's pings without asking for a's MAC again (no ARP of b's in a's counters)
        hosts[1].ip("neigh", "replace", overlay_ip(0), "lladdr", overlay.macs[0], "dev", DEVICE, "nud", "permanent")
        yield overlay
        codes = {node.host.name: node.stop() for node in nodes}
        assert set(codes.values()) == {0}, f"overlayd exit codes {codes}"


def scrape(mesh: BgpOverlay, i: int) -> Samples:
    return parse(mesh.nodes[i].metrics())


# -- two nodes --------------------------------------------------------------------------------


def test_both_listeners_answer_and_say_where_the_metrics_are(mesh: BgpOverlay):
    for i, listen in enumerate(LISTEN):
        assert mesh.nodes[i].metrics("/") == "overlayd: Prometheus metrics at /metrics\n"
        samples = scrape(mesh, i)
        assert samples[key("info", node=mesh.hosts[i].name, vtep=mesh.vtep(i), version=__version__)] == 1
        status = mesh.query(i, "status")["metrics"]
        assert status["listen"] == listen and status["scrapes"] >= 1, status


def test_pings_move_the_counters_by_exactly_the_frames_sent(mesh: BgpOverlay):
    a = mesh.hosts[0]
    a.ip("neigh", "replace", overlay_ip(1), "lladdr", mesh.macs[1], "dev", DEVICE, "nud", "permanent")
    before = [scrape(mesh, 0), scrape(mesh, 1)]
    out = a.run("ping", "-4", "-q", "-n", "-c", str(PINGS), "-i", "0.01", "-w", "10", overlay_ip(1)).stdout
    assert f"{PINGS} received" in out, out
    after = [scrape(mesh, 0), scrape(mesh, 1)]
    both_ways = {
        key("frames_total", direction="tx"): PINGS,
        key("frame_bytes_total", direction="tx"): PINGS * PING_FRAME_BYTES,
        key("tx_forwarded_frames_total", kind="unicast"): PINGS,
        key("vxlan_datagrams_total", direction="tx"): PINGS,
        key("vxlan_datagrams_total", direction="rx"): PINGS,
        key("frames_total", direction="rx"): PINGS,
        key("frame_bytes_total", direction="rx"): PINGS * PING_FRAME_BYTES,
    }
    assert moved(before[0], after[0]) == both_ways  # echo requests out, replies in: nothing else
    assert moved(before[1], after[1]) == both_ways  # requests in, replies out
    print(f"{PINGS} pings: a and b each moved by {PINGS} frames and {PINGS * PING_FRAME_BYTES} bytes each way")


def test_a_suppressed_arp_request_is_counted_and_not_flooded(mesh: BgpOverlay):
    a = mesh.hosts[0]
    a.ip("neigh", "del", overlay_ip(1), "dev", DEVICE, check=False)
    before = scrape(mesh, 0)
    assert a.ping(overlay_ip(1))
    after = scrape(mesh, 0)
    change = moved(before, after)
    assert change[key("arp_requests_total", outcome="suppressed")] == 1, change
    assert change[key("frames_total", direction="tx")] == 2, change  # the ARP request and the echo request
    assert change[key("tx_forwarded_frames_total", kind="unicast")] == 1, change
    assert key("tx_forwarded_frames_total", kind="flood") not in change, change
    assert not [k for k in change if k[0] == "overlayd_drops_total"], change


def test_tables_are_what_overlayctl_shows(mesh: BgpOverlay):
    mesh.converge()
    for i in range(2):
        samples = scrape(mesh, i)
        peer = mesh.vtep(1 - i)
        assert samples[key("bgp_peer_up", peer=peer)] == 1
        assert samples[key("bgp_peer_state", peer=peer, state="Established")] == 1
        assert samples[key("bgp_peer_flaps_total", peer=peer)] == 0
        assert samples[key("bgp_messages_received_total", peer=peer, type="open")] == 1
        assert samples[key("bgp_messages_received_total", peer=peer, type="keepalive")] >= 1
        fdb = Counter(r["learned"] for r in mesh.query(i, "fdb"))
        for source in ("local", "data", "bgp", "static"):
            assert samples[key("fdb_entries", network="blue", source=source)] == fdb[source], (source, fdb)
        assert fdb["bgp"] == 1 and fdb["local"] >= 1
        rib = Counter((r["peer"], r["type"]) for r in mesh.query(i, "rib"))
        paths = {(dict(k[1])["peer"], dict(k[1])["type"]): v for k, v in samples.items()
                 if k[0] == "overlayd_bgp_rib_paths"}
        assert paths == rib and paths[(peer, "imet")] == 1 and paths[(peer, "macip")] >= 1, paths
        assert samples[key("flood_list_vteps", network="blue")] == 1
        assert samples[key("network_mtu_bytes", network="blue")] == mesh.query(i, "status")["networks"][0]["mtu"]


# -- one daemon's lifecycle ---------------------------------------------------------------------


@pytest.fixture
def host(lab) -> Host:
    return lab.add_host("a", v4="10.0.0.1/24")


def metrics_config(socket: Path, listen: str = "127.0.0.1:9477") -> dict:
    config = node_config(0, 4)
    config["node"]["status_socket"] = str(socket)
    config["metrics"] = {"listen": listen}
    return config


# Listen on 127.0.0.1:PORT as a restarted daemon would (SO_REUSEADDR: the endpoint's closed
# connections may sit in TIME_WAIT), which fails only while something listens there.
BIND = ("import socket, sys; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        "s.bind(('127.0.0.1', int(sys.argv[1]))); s.listen()")


def test_port_in_use_exits_3_naming_metrics_listen_and_leaves_nothing(host: Host):
    holder = host.popen(sys.executable, "-c", BIND + "; import time; print('listening', flush=True); time.sleep(60)",
                        "9477")
    wait_for(lambda: "listening" in host.log(holder), 5, what="another program to hold port 9477")
    socket = host.lab.tmpdir / "run" / "a.sock"
    node = start_overlayd(host, metrics_config(socket), wait=False)
    assert node.proc.wait(timeout=15) == 3, node.log()
    assert "setup failed: metrics.listen: cannot listen on 127.0.0.1:9477: Address already in use" in node.log()
    assert host.ip("link", "show", "dev", DEVICE, check=False).returncode != 0  # no TAP made
    assert not socket.exists()
    holder.terminate()


def test_a_clean_stop_closes_the_listening_socket_even_with_a_client_connected(host: Host):
    socket = host.lab.tmpdir / "run" / "a.sock"
    node = start_overlayd(host, metrics_config(socket))
    assert "overlayd_frames_total" in node.metrics()
    idle = host.popen(sys.executable, "-c", "import socket, time; s = socket.create_connection(('127.0.0.1', 9477)); "
                      "print('connected', flush=True); time.sleep(60)")
    wait_for(lambda: "connected" in host.log(idle), 5, what="an idle client of the metrics endpoint")
    assert node.stop(signal.SIGTERM) == 0, node.log()
    host.run(sys.executable, "-c", BIND, "9477")  # the port is free again
    assert "metrics: http://127.0.0.1:9477/metrics" in node.log()
    idle.terminate()


def services_config(lab: Lab) -> dict:
    """One node routing 10.244.1.0/24 (userspace, tun) with a service to a backend there."""
    config = metrics_config(lab.tmpdir / "run" / "s.sock")
    del config["networks"]
    config["bgp"] = {"asn": 65000}
    config["routing"] = {"vni": 1, "network": "10.244.0.0/16", "subnet": "10.244.1.0/24",
                         "env_file": str(lab.tmpdir / "s-subnet.env")}
    config["services_network"] = "10.96.0.0/16"
    config["services"] = [{"name": "web", "vip": "10.96.0.10", "port": 80, "backends": ["10.244.1.5:8080"]}]
    return config


def test_every_metric_the_contrib_dashboard_and_alerts_use_is_in_a_real_scrape(mesh: BgpOverlay, host: Host):
    node = start_overlayd(host, services_config(host.lab))
    scrapes = {"two-node BGP mesh": mesh.nodes[0].metrics(), "node with services": node.metrics()}
    assert node.stop() == 0, node.log()
    with_samples: set[str] = set()
    for text in scrapes.values():
        with_samples |= {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    assert "overlayd_service_backend_healthy" in with_samples and "overlayd_bgp_peer_up" in with_samples
    for path in CONTRIB:
        used = metric_names_in(path)
        missing = used - with_samples
        assert not missing, f"{path.relative_to(ROOT)} uses metrics no scrape has: {sorted(missing)}"
        print(f"{path.relative_to(ROOT)}: {len(used)} metrics, each with samples in a scrape of {' or '.join(scrapes)}")
