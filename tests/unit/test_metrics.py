"""The Prometheus metrics: names by the conventions, the collector against a Switch, a BGP speaker
and a service table on a fake clock (every figure is the one overlayctl shows), and the HTTP
endpoint on the loopback."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import re
import socket
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from overlayd import __version__
from overlayd.config import parse_config
from overlayd.control.session import State
from overlayd.dataplane.counters import COUNTERS
from overlayd.dataplane.switch import Switch
from overlayd.fabric.conntrack import Conntrack
from overlayd.fabric.endpoint import parse_endpoint
from overlayd.fabric.fdb import Source
from overlayd.fabric.services import ServiceTable
from overlayd.io.metrics import MetricsServer
from overlayd.sim.frames import mac
from overlayd.status import ctl
from overlayd.status.metrics import FAMILIES, PREFIX, dataplane_metric, registry
from overlayd.status.view import SwitchView
from overlayd.wire.vxlan import encode_header
from tests.unit.bgp_scripted import PEER, Scripted

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = [ROOT / "contrib" / "grafana" / "overlayd.json", ROOT / "contrib" / "prometheus" / "overlayd-alerts.yml"]
CONFIG = parse_config({
    "node": {"name": "node1", "vtep": "10.0.0.1"},
    "networks": [
        {"name": "blue", "vni": 100, "device": "blue0", "vteps": ["10.0.0.2", "10.0.0.3"]},
        {"name": "red", "vni": 200, "device": "red0"},
    ],
})
HOST, REMOTE, OURS = mac(1), mac(2), mac(1000)


def scrape(view, now: float = 0.0) -> dict[tuple[str, frozenset], float]:
    """{(sample name, its labels): value} of one scrape in the text format, parsed back."""
    text = generate_latest(registry(view, lambda: now)).decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def family_names(view) -> set[str]:
    text = generate_latest(registry(view, lambda: 0.0)).decode()
    return {family.name for family in text_string_to_metric_families(text)}


def value(samples, name: str, **labels) -> float:
    return samples[(PREFIX + name, frozenset((k, str(v)) for k, v in labels.items()))]


def switch_view() -> SwitchView:
    sw = Switch(CONFIG.node.vxlan_port, CONFIG.node.fdb_aging)
    sw.add_segment(100, "blue", own_macs=[OURS])
    sw.add_segment(200, "red")
    for vtep in CONFIG.networks[0].vteps:
        sw.add_flood_vtep(100, str(vtep), Source.STATIC)
    sw.install_mac(100, REMOTE, "10.0.0.2", Source.STATIC, now=0.0)
    sw.from_tap(100, b"\xff" * 6 + HOST + b"\x88\xb5" + b"x" * 46, now=1.0)  # learns HOST, flooded
    return SwitchView(CONFIG, sw, started=0.0, mtus={100: 1450, 200: 1450})


# -- names --------------------------------------------------------------------------------


def test_names_and_labels_follow_the_conventions():
    names = [f.name for f in FAMILIES]
    assert len(names) == len(set(names))
    for f in FAMILIES:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", f.name) and f.kind in ("counter", "gauge"), f
        assert not f.name.endswith("_total"), f"{f.name}: prometheus_client adds _total to counters"
        assert all(re.fullmatch(r"[a-z][a-z0-9_]*", label) for label in f.labels), f
        assert not {"le", "quantile", "job", "instance"} & set(f.labels), f
        assert not re.search(r"(^|_)(ms|millis|milliseconds|kb|mb|kbytes|bits)(_|$)", f.name), f"{f.name}: base units"
        assert f.help and (f.help[0].isupper() or f.help[0].isdigit()), f


def test_every_data_plane_counter_has_one_sample_of_its_own():
    seen = {}
    names = {f.name: f for f in FAMILIES}
    for counter in COUNTERS:
        family, labels = dataplane_metric(counter)
        assert set(labels) == set(names[family].labels), counter
        key = (family, frozenset(labels.items()))
        assert key not in seen, f"{counter} and {seen.get(key)} would be the same sample"
        seen[key] = counter
    assert dataplane_metric("tx_route_drop_no_route") == (
        "drops", {"direction": "tx", "path": "routed", "reason": "no_route"})
    assert dataplane_metric("rx_drop_unknown_vni") == (
        "drops", {"direction": "rx", "path": "bridged", "reason": "unknown_vni"})
    assert dataplane_metric("svc_drop_conntrack_full") == (
        "drops", {"direction": "tx", "path": "service", "reason": "conntrack_full"})


def test_every_family_is_exposed_whatever_is_configured():
    names = family_names(switch_view())  # no BGP, no services: those families have no samples
    assert {PREFIX + f.name for f in FAMILIES} <= names
    assert {"process_cpu_seconds", "process_resident_memory_bytes"} <= names


def exprs_in(node) -> list[str]:
    """Every `expr` (PromQL) in a parsed dashboard or rules file."""
    if isinstance(node, dict):
        return [e for k, v in node.items() for e in ([v] if k == "expr" else exprs_in(v))]
    return [e for v in node for e in exprs_in(v)] if isinstance(node, list) else []


def metric_names_in(path: Path) -> set[str]:
    """Every overlayd_ or process_ metric named in the PromQL of a dashboard or a rules file."""
    exprs = exprs_in(json.loads(path.read_text()) if path.suffix == ".json" else yaml.safe_load(path.read_text()))
    assert exprs, path
    return {m for e in exprs for m in re.findall(r"\b((?:overlayd|process)_[a-z0-9_]+)\b", e)}


@pytest.mark.parametrize("path", CONTRIB, ids=[p.name for p in CONTRIB])
def test_contrib_uses_only_metrics_overlayd_has(path):
    """The static half of tests/netns/test_metrics.py's check against a real scrape."""
    ours = {PREFIX + f.name + ("_total" if f.kind == "counter" else "") for f in FAMILIES}
    used = metric_names_in(path)
    assert not {m for m in used if m.startswith(PREFIX)} - ours
    if path.suffix == ".json":
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] == "overlayd" and dashboard["panels"]
        for panel in dashboard["panels"]:
            assert panel["type"] == "row" or panel["targets"], panel["title"]
    else:
        rules = [r for g in yaml.safe_load(path.read_text())["groups"] for r in g["rules"]]
        assert {"OverlaydBgpPeerDown", "OverlaydDropsRising", "OverlaydFdbNearCap"} <= {r["alert"] for r in rules}
        for rule in rules:
            assert rule["labels"]["severity"] in ("warning", "critical") and rule["annotations"]["summary"], rule


# -- the collector against the tables -----------------------------------------------------


def test_data_plane_counters_are_the_switchs_as_overlayctl_stats_shows_them():
    view = switch_view()
    samples = scrape(view)
    for counter, n in view.stats(0.0)["counters"].items():
        family, labels = dataplane_metric(counter)
        assert value(samples, family + "_total", **labels) == n, counter
    assert value(samples, "tx_forwarded_frames_total", kind="flood") == 1
    assert value(samples, "vxlan_datagrams_total", direction="tx") == 2  # one copy per flood-list VTEP


def test_unicast_frames_move_the_counters_by_exactly_the_frames_sent():
    view = switch_view()
    before = scrape(view)
    frame = REMOTE + HOST + b"\x08\x00" + b"x" * 84  # 98 bytes, as a 56-byte ping
    for i in range(25):
        assert view.switch.from_tap(100, frame, now=2.0 + i) is not None
    after = scrape(view)
    moved = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert moved == {
        (PREFIX + "frames_total", frozenset({("direction", "tx")})): 25,
        (PREFIX + "frame_bytes_total", frozenset({("direction", "tx")})): 25 * 98,
        (PREFIX + "tx_forwarded_frames_total", frozenset({("kind", "unicast")})): 25,
        (PREFIX + "vxlan_datagrams_total", frozenset({("direction", "tx")})): 25,
    } | {k: v for k, v in moved.items() if k[0].startswith("process_")}  # the process' own CPU and memory


def test_networks_fdb_flood_lists_and_bindings():
    view = switch_view()
    sw = view.switch
    sw.neighbor_snooping = True
    arp = (b"\xff" * 6 + HOST + b"\x08\x06" + bytes.fromhex("0001080006040001") + HOST
           + bytes([192, 168, 100, 7]) + bytes(6) + bytes([192, 168, 100, 8]))
    sw.from_tap(100, arp, now=3.0)  # snoops 192.168.100.7 at HOST
    samples = scrape(view)
    assert value(samples, "network_info", network="blue", vni=100, device="blue0", backend="userspace") == 1
    assert value(samples, "network_mtu_bytes", network="red") == 1450
    rows = Counter((r["network"], r["learned"]) for r in view.fdb(3.0))
    for net in ("blue", "red"):
        for source in ("local", "data", "bgp", "static"):
            assert value(samples, "fdb_entries", network=net, source=source) == rows[net, source]
    assert rows[("blue", "local")] == 1 and rows[("blue", "static")] == 1
    assert value(samples, "flood_list_vteps", network="blue") == 2
    assert value(samples, "flood_list_vteps", network="red") == 0
    assert value(samples, "neighbor_bindings", network="blue", source="local") == 1
    assert value(samples, "neighbor_bindings", network="blue", source="bgp") == 0
    assert value(samples, "info", node="node1", vtep="10.0.0.1", version=__version__) == 1


def test_mac_moves_count_a_change_of_place_not_of_source():
    view = switch_view()
    sw = view.switch
    sw.from_vxlan("10.0.0.3", encode_header(100) + OURS + HOST + b"\x88\xb5x", now=5.0)  # HOST moved to .3
    sw.from_tap(100, b"\xff" * 6 + HOST + b"\x88\xb5" + b"x" * 46, now=6.0)  # and back
    sw.install_mac(100, mac(3), "10.0.0.2", Source.BGP, now=6.0)
    sw.install_mac(100, mac(3), "10.0.0.2", Source.STATIC, now=7.0)  # same place, another source
    samples = scrape(view)
    assert value(samples, "mac_moves_total", network="blue") == 2
    assert value(samples, "mac_moves_total", network="red") == 0


def test_the_caps_and_what_they_refused():
    view = switch_view()
    sw = view.switch
    sw.set_limits(100, max_local_macs=3, learn_rate_per_s=None, learn_burst=None, flood_rate_pps=None,
                  flood_burst=None, now=1.0)
    for n in range(5):  # HOST is local already: two more fit, three are refused
        sw.from_tap(100, b"\xff" * 6 + mac(50 + n) + b"\x88\xb5" + b"x" * 46, now=2.0)
    samples = scrape(view)
    assert value(samples, "fdb_local_macs_limit", network="blue") == 3
    assert value(samples, "neighbor_local_bindings_limit", network="blue") == 6  # twice the MACs' cap
    assert value(samples, "fdb_entries", network="blue", source="local") == 3 == sw.fdb.local_count(100)
    assert value(samples, "mac_learn_refused_total", reason="fdb_full") == 3
    assert (PREFIX + "fdb_local_macs_limit", frozenset({("network", "red")})) not in samples  # no cap set


def test_bgp_session_state_flaps_messages_and_routes_by_type():
    n = Scripted()
    view = SwitchView(n.config, n.switch, started=0.0, mtus={}, speaker=n.speaker)
    samples = scrape(view)
    assert value(samples, "bgp_peer_up", peer=PEER) == 0
    n.connect()
    n.send(n.imet())
    n.send(n.announce(mac(1), mac(2)))
    n.advance(1.0)
    samples = scrape(view, n.now)
    assert value(samples, "bgp_peer_up", peer=PEER) == 1
    assert value(samples, "bgp_peer_state", peer=PEER, state="Established") == 1
    assert sum(value(samples, "bgp_peer_state", peer=PEER, state=s.value) for s in State) == 1
    assert value(samples, "bgp_peer_uptime_seconds", peer=PEER) == 1.0
    assert value(samples, "bgp_peer_flaps_total", peer=PEER) == 0
    assert value(samples, "bgp_messages_received_total", peer=PEER, type="open") == 1
    assert value(samples, "bgp_messages_received_total", peer=PEER, type="update") == 2
    assert value(samples, "bgp_messages_received_total", peer=PEER, type="keepalive") == 1
    sent = Counter(type(m).__name__ for m in n.received)
    assert value(samples, "bgp_messages_sent_total", peer=PEER, type="open") == sent["Open"] == 1
    assert value(samples, "bgp_messages_sent_total", peer=PEER, type="keepalive") == sent["Keepalive"]
    assert value(samples, "bgp_rib_paths", peer=PEER, type="macip") == 2
    assert value(samples, "bgp_rib_paths", peer=PEER, type="imet") == 1
    assert value(samples, "bgp_rib_paths", peer="local", type="imet") == 1  # our own flood-list route
    assert value(samples, "bgp_peer_routes_received", peer=PEER) == 3
    assert value(samples, "bgp_peer_routes_limit", peer=PEER) == 200_000  # max_prefixes' default
    assert value(samples, "bgp_routes_refused_total", peer=PEER) == 0
    assert value(samples, "bgp_peer_routes_sent", peer=PEER) == view.peers(n.now)[0]["routes_sent"] == 1
    n.lose()
    n.connect()
    n.lose("hold timer expired")
    samples = scrape(view, n.now)
    assert value(samples, "bgp_peer_up", peer=PEER) == 0
    assert value(samples, "bgp_peer_flaps_total", peer=PEER) == 2 == view.peers(n.now)[0]["flaps"]
    assert value(samples, "bgp_peer_uptime_seconds", peer=PEER) == 0
    assert (PREFIX + "bgp_rib_paths", frozenset({("peer", PEER), ("type", "macip")})) not in samples


def test_services_hits_per_service_and_backend():
    table = ServiceTable()
    backends = ("10.244.1.5:8080", "10.244.2.7:8080")
    table.replace([SimpleNamespace(name="web", vip=ipaddress.ip_address("10.96.0.10"), port=80,
                                   protocol="tcp", backends=backends, affinity="none", affinity_timeout=10800.0,
                                   maglev_table_size=251)])
    web = table.get("web")
    for b in backends:
        table.set_health("web", b, False)
    assert web.pick(1, b"\x0a\x00\x00\x01", 0.0) is None  # nothing healthy: refused
    for b in backends:
        table.set_health("web", b, True)
    for h in range(40):
        web.pick(h * 7919, b"\x0a\x00\x00\x01", 0.0)
    conntrack = Conntrack(64)
    vip = parse_endpoint("10.96.0.10:80")
    for port in range(3):  # three flows pinned to the second backend
        conntrack.create(6, (b"\x0a\x00\x00\x01", 40000 + port), vip, parse_endpoint(backends[1]), 0.0, service="web")
    runtime = SimpleNamespace(table=table, checkers={}, conntrack=conntrack, path=None, file_error="")
    view = SwitchView(CONFIG, switch_view().switch, started=0.0, mtus={}, services=runtime)
    samples = scrape(view)
    assert value(samples, "service_hits_total", service="web") == 40
    assert value(samples, "service_rejected_flows_total", service="web") == 1
    hits = [value(samples, "service_backend_hits_total", service="web", backend=b) for b in backends]
    assert sum(hits) == 40 and all(hits) and hits == [web.backend_hits[b] for b in backends]
    assert all(value(samples, "service_backend_healthy", service="web", backend=b) == 1 for b in backends)
    flows = [value(samples, "service_backend_flows", service="web", backend=b) for b in backends]
    assert flows == [0, 3] == [b["flows"] for b in view.services(0.0)[0]["backends"]]
    assert value(samples, "conntrack_entries") == 3 and value(samples, "conntrack_entries_limit") == 64


# -- the HTTP endpoint --------------------------------------------------------------------


async def request(server: MetricsServer, raw: bytes) -> tuple[int, dict[str, str], bytes]:
    reader, writer = await asyncio.open_connection(server.address, server.port)
    writer.write(raw)
    data = await asyncio.wait_for(reader.read(), 5)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


@pytest.fixture
async def server():
    server = MetricsServer("127.0.0.1", 0)
    server.bind()
    await server.start(registry(switch_view(), lambda: 10.0))
    yield server
    await server.close()


async def test_get_metrics_is_the_text_format_prometheus_parses(server):
    status, headers, body = await request(server, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    assert int(headers["Content-Length"]) == len(body) and headers["Connection"] == "close"
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert families["overlayd_tx_forwarded_frames"].type == "counter"
    assert server.summary()["scrapes"] == 1


async def test_overlayctl_status_shows_the_endpoint(server):
    view = switch_view()
    view.metrics_server = server
    await request(server, b"GET /metrics HTTP/1.1\r\n\r\n")
    status = view.status(1.0)["metrics"]
    assert status == {"listen": f"127.0.0.1:{server.port}", "path": "/metrics", "clients": 0,
                      "max_clients": 16, "scrapes": 1, "refused_busy": 0, "bad_requests": 0}
    assert f"metrics: http://127.0.0.1:{server.port}/metrics  1 scrapes" in ctl.render_status(view.status(1.0))
    assert switch_view().status(1.0)["metrics"] is None


async def test_openmetrics_when_asked(server):
    status, headers, body = await request(
        server, b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text; version=1.0.0\r\n\r\n")
    assert status == 200 and headers["Content-Type"].startswith("application/openmetrics-text")
    assert body.endswith(b"# EOF\n")


@pytest.mark.parametrize("raw, code", [
    (b"GET / HTTP/1.1\r\n\r\n", 200),
    (b"GET /metrics?x=1 HTTP/1.0\r\n\r\n", 200),
    (b"GET /nope HTTP/1.1\r\n\r\n", 404),
    (b"POST /metrics HTTP/1.1\r\n\r\n", 405),
    (b"hello\r\n\r\n", 400),
])
async def test_other_requests(server, raw, code):
    status, headers, _ = await request(server, raw)
    assert status == code
    if code == 405:
        assert headers["Allow"] == "GET, HEAD"


async def test_head_has_the_headers_and_no_body(server):
    status, headers, body = await request(server, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert status == 200 and int(headers["Content-Length"]) > 1000 and body == b""


async def test_a_request_too_long_or_too_slow_is_closed(server):
    server.timeout_s = 0.2
    reader, writer = await asyncio.open_connection(server.address, server.port)
    writer.write(b"GET /metrics HTTP/1.1\r\n")  # and never the blank line
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    reader, writer = await asyncio.open_connection(server.address, server.port)
    writer.write(b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 9000 + b"\r\n\r\n")
    with contextlib.suppress(ConnectionResetError):  # closed with our request unread
        assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    assert server.summary()["bad_requests"] == 2


async def test_clients_beyond_the_cap_get_503(server):
    server.max_clients = 2
    held = [await asyncio.open_connection(server.address, server.port) for _ in range(2)]
    await asyncio.sleep(0.05)
    status, _, _ = await request(server, b"")  # answered at once, before any request
    assert status == 503 and server.summary()["refused_busy"] == 1
    for _, writer in held:
        writer.close()


async def test_close_frees_the_port_and_a_taken_port_is_refused():
    first = MetricsServer("127.0.0.1", 0)
    first.bind()
    await first.start(registry(switch_view(), lambda: 0.0))
    taken = MetricsServer("127.0.0.1", first.port)
    with pytest.raises(OSError):
        taken.bind()
    reader, writer = await asyncio.open_connection(first.address, first.port)  # a client left open
    await first.close()
    assert await asyncio.wait_for(reader.read(), 5) == b""
    writer.close()
    again = MetricsServer("127.0.0.1", first.port)
    again.bind()  # free again
    await again.close()
    await again.close()  # twice is fine, and without start()


async def test_ipv6_loopback():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    server = MetricsServer("::1", 0)
    try:
        server.bind()
    except OSError as err:
        pytest.skip(f"no ::1 here: {err}")
    await server.start(registry(switch_view(), lambda: 0.0))
    assert server.listen == f"[::1]:{server.port}"
    status, _, body = await request(server, b"GET /metrics HTTP/1.1\r\n\r\n")
    await server.close()
    assert status == 200 and b"overlayd_info" in body
