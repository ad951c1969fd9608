"""`overlayctl explain` from real speakers' tables: nodes of a BGP mesh (real speakers, back to
back in memory) with an L2 network, routed subnets and a service, and what their explanations
say, step by step, through the status protocol and overlayctl too. Whether the decisions are the
data path's own: test_dataplane_explain.py.
"""

from __future__ import annotations

import ipaddress
import json
from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tests.unit.test_speaker as base
from overlayd.config import parse_config
from overlayd.control.speaker import Speaker
from overlayd.dataplane.router import Router
from overlayd.dataplane.switch import Switch
from overlayd.fabric.conntrack import Conntrack
from overlayd.fabric.prefixes import PrefixTable
from overlayd.fabric.services import ServiceTable
from overlayd.kernel.routed import Connected, Host, RoutedSpec, plan_routed
from overlayd.sim.frames import arp_request, ethernet, mac
from overlayd.status import ctl
from overlayd.status.protocol import (
    StatusError,
    decode_reply,
    encode_request,
    handle_line,
)
from overlayd.status.view import SwitchView
from overlayd.wire.ethernet import BROADCAST, mac_str
from tests.unit.test_status import static_view

VNI = 100
UNKNOWN = mac(9)  # a MAC nobody has


class ExplainNode(base.Node):
    """Node i of a mesh: network blue (VNI 100, 192.168.100.i/24), routed subnet 10.244.i.0/24 on
    VNI 1 with `backend`, and service web (10.96.0.10:80) on a pod of node 2."""

    backend = "userspace"

    def __init__(self, i: int, peers: list[int], now: float, rt: str | None = None):
        self.vtep = f"10.0.0.{i}"
        kernel = self.backend == "kernel"
        self.config = parse_config({
            "node": {"name": f"n{i}", "vtep": self.vtep},
            "bgp": {"asn": 65000, "hold_time": 3,
                    "neighbors": [{"address": f"10.0.0.{p}", "asn": 65000} for p in peers]},
            "networks": [{"name": "blue", "vni": VNI, "device": "blue0", "address": f"192.168.100.{i}/24",
                          "backend": "kernel" if kernel else "userspace"}],
            "routing": {"vni": 1, "network": "10.244.0.0/16", "subnet": f"10.244.{i}.0/24", "backend": self.backend},
            "services_network": "10.96.0.0/16",
            "services": [{"name": "web", "vip": "10.96.0.10", "port": 80, "backends": ["10.244.2.7:8080"]}],
        })
        self.switch = Switch(4789, 300)
        (self.switch.add_kernel_segment if kernel else self.switch.add_segment)(VNI, "blue", [mac(1000 + i)])
        self.switch.data_learning = False
        self.switch.neighbor_snooping = self.switch.arp_suppression = True
        self.table = PrefixTable()
        self.speaker = Speaker(self.config, self.switch, now, self.table)


class FakeKernel:
    """What the view reads of io.backend.KernelBackend, over the real planner: every planned
    entry is held by the kernel."""

    def __init__(self, node):
        r = node.config.routing
        spec = RoutedSpec(r.backend, r.device, node.config.node.vtep, r.vni, (r.network,),
                          services_networks=node.config.services_network)
        self.plan = plan_routed(spec, node.table, Host((Connected(ipaddress.ip_network("10.0.0.0/24"), "eth0"),)))
        self.routed_mtu = 1450

    def way_of(self, prefix):
        return self.plan.ways.get(prefix)

    def programmed_state(self, entry) -> str:
        return "yes"


@pytest.fixture
def mesh(monkeypatch):
    def make(backend: str = "userspace", n: int = 3) -> base.Mesh:
        monkeypatch.setattr(base, "Node", ExplainNode)
        monkeypatch.setattr(ExplainNode, "backend", backend)
        return announced(base.Mesh(n))
    return make


def announced(m: base.Mesh) -> base.Mesh:
    """Each node's host (mac(i), 192.168.100.1i) says who it is: snooped, announced everywhere."""
    for i, node in m.nodes.items():
        node.tap(arp_request(mac(i), f"192.168.100.{10 + i}", f"192.168.100.{10 + i}"), m.now)
    m.pump()
    return m


def view_of(node, mtu: int = 1450) -> SwitchView:
    cfg = node.config
    r = cfg.routing
    routed_device = None
    if r.backend == "userspace":
        router = Router(r.vni, node.speaker.routed.router_mac, "tun", node.table, 4789, node.speaker.routed.subnets,
                        networks=[r.network, *cfg.services_network])
        routed_device = SimpleNamespace(router=router, mtu=1450)
    table = ServiceTable()
    table.replace(cfg.services)
    services = SimpleNamespace(table=table, conntrack=Conntrack(64), checkers={}, path=None, file_error="")
    return SwitchView(cfg, node.switch, 0.0, {VNI: mtu}, speaker=node.speaker, routed=routed_device,
                      kernel=FakeKernel(node), services=services, underlay_mtu=1500)


def texts(result: dict) -> list[str]:
    return [s["text"] for s in result["steps"]]


def kinds(result: dict) -> list[str]:
    return [s["kind"] for s in result["steps"]]


def test_a_remote_host_by_ip_names_the_arp_answer_the_peer_its_route_the_vtep_and_the_vni(mesh):
    m = mesh()
    m.now += 30
    r = view_of(m[1]).explain(m.now, "192.168.100.12")
    assert (r["path"], r["network"], r["verdict"], r["vni"], r["vteps"], r["carrier"]) == (
        "l2", "blue", "unicast", VNI, ["10.0.0.2"], "overlayd")
    assert kinds(r) == ["enter", "neighbor", "fdb", "vxlan", "mtu"]
    neighbor, fdb, vxlan, mtu = r["steps"][1:]
    assert "192.168.100.12 is at " + mac_str(mac(2)) in neighbor["text"]
    assert neighbor["counters"] == ["tx_arp_suppressed"] and neighbor["origin"]["peer"] == "10.0.0.2"
    assert fdb["origin"] == {"source": "bgp", "age_s": 30.0, "peer": "10.0.0.2", "route": "macip",
                             "rd": "10.0.0.2:100", "next_hop": "10.0.0.2", "sequence": 0, "received_s_ago": 30.0}
    assert fdb["counters"] == ["tx_unicast_frames", "tx_datagrams"]
    assert "learned from BGP peer 10.0.0.2: type-2 route RD 10.0.0.2:100, MAC mobility sequence 0" in fdb["text"]
    assert vxlan["outer"] == {"src": "10.0.0.1", "dst": ["10.0.0.2"], "udp_dst_port": 4789, "vni": VNI,
                              "udp_src_port": "hash of the inner flow"}
    assert mtu["mtu"] == {"device": "blue0", "device_mtu": 1450, "underlay_mtu": 1500, "overhead_bytes": 50,
                          "fits": True}
    assert r["counters"] == ["tx_frames", "tx_bytes", "tx_arp_suppressed", "tx_unicast_frames", "tx_datagrams"]


def test_a_moved_mac_shows_its_new_vtep_and_mobility_sequence(mesh):
    m = mesh()
    m.now += 1
    m[3].tap(ethernet(BROADCAST, mac(2), 0x88B5, b"x" * 46), m.now)  # host 2 moved to node 3
    m.pump()
    r = view_of(m[1]).explain(m.now, mac_str(mac(2)))
    fdb = r["steps"][1]
    assert r["vteps"] == ["10.0.0.3"] and fdb["origin"]["sequence"] == 1 and fdb["origin"]["peer"] == "10.0.0.3"
    local = view_of(m[3]).explain(m.now, mac_str(mac(2)))
    assert local["verdict"] == "local" and "we announce it, MAC mobility sequence 1" in texts(local)[1]


def test_an_unknown_address_is_flooded_to_the_type3_flood_list_and_the_counters_say_so(mesh):
    m = mesh()
    r = view_of(m[1]).explain(m.now, "192.168.100.99")
    assert (r["verdict"], r["vteps"]) == ("flooded", ["10.0.0.2", "10.0.0.3"])
    assert kinds(r) == ["enter", "neighbor", "flood", "vxlan", "mtu", "wait"]
    assert r["steps"][1]["counters"] == ["tx_arp_flooded"]
    assert r["steps"][2]["counters"] == ["tx_flood_frames", "tx_datagrams"]
    assert "10.0.0.2 (type-3 route RD 10.0.0.2:100 from BGP peer 10.0.0.2)" in texts(r)[2]
    unknown_mac = view_of(m[1]).explain(m.now, mac_str(UNKNOWN))
    assert unknown_mac["verdict"] == "flooded" and "unknown unicast" in texts(unknown_mac)[1]
    assert unknown_mac["steps"][1]["counters"] == ["tx_flood_frames", "tx_unknown_unicast_frames", "tx_datagrams"]


def test_without_a_flood_list_an_unknown_address_is_dropped_naming_the_counter(mesh):
    m = mesh(n=1)
    r = view_of(m[1]).explain(m.now, "192.168.100.99")
    assert r["verdict"] == "dropped" and r["steps"][-1]["counters"] == ["tx_drop_no_flood_list"]
    assert "flood list is empty" in texts(r)[-1]


def test_local_addresses_stay_on_the_node(mesh):
    m = mesh()
    own = view_of(m[1]).explain(m.now, "192.168.100.1")
    assert own["verdict"] == "local" and "this node's own address on blue0" in texts(own)[-1]
    host = view_of(m[1]).explain(m.now, mac_str(mac(1)))
    assert host["verdict"] == "local" and host["steps"][-1]["counters"] == ["tx_drop_local_dst"]


def test_a_frame_from_a_remote_host_arrives_over_vxlan(mesh):
    m = mesh()
    r = view_of(m[1]).explain(m.now, "192.168.100.11", source="192.168.100.12")
    assert (r["verdict"], r["vteps"]) == ("delivered", ["10.0.0.2"])
    assert r["steps"][0]["outer"] == {"src": "10.0.0.2", "dst": ["10.0.0.1"], "udp_dst_port": 4789, "vni": VNI}
    assert r["counters"] == ["rx_datagrams", "rx_frames", "rx_bytes"]
    transit = view_of(m[1]).explain(m.now, "192.168.100.13", source="192.168.100.12")
    assert "no transit" in texts(transit)[-1]


def test_a_remote_subnet_names_its_route_node_vtep_and_l3_vni(mesh):
    m = mesh()
    m.now += 12
    r = view_of(m[1]).explain(m.now, "10.244.2.5", source="10.244.1.7")
    assert (r["path"], r["verdict"], r["vni"], r["vteps"]) == ("routed", "unicast", 1, ["10.0.0.2"])
    assert kinds(r) == ["enter", "route", "vxlan", "mtu"]
    enter, route, vxlan, _ = r["steps"]
    assert "from pod 10.244.1.7 on cni0" in enter["text"] and "`10.244.0.0/16 dev ovl0` (programmed)" in enter["text"]
    assert route["entry"] == {"prefix": "10.244.2.0/24", "node": "10.0.0.2", "vtep": "10.0.0.2", "vni": 1,
                              "router_mac": "02:00:0a:00:00:02"}
    assert route["origin"]["peer"] == "10.0.0.2" and route["origin"]["rd"] == "10.0.0.2:1"
    assert route["counters"] == ["tx_routed_packets", "tx_routed_bytes"]
    assert "type-5 route RD 10.0.0.2:1, installed 12s ago" in route["text"]
    assert "inner Ethernet from our router MAC to the node's" in vxlan["text"]


def test_routed_local_no_route_and_arrivals(mesh):
    m = mesh()
    view = view_of(m[1])
    local = view.explain(m.now, "10.244.1.5")
    assert local["verdict"] == "local" and local["steps"][-1]["counters"] == ["tx_route_drop_local"]
    nowhere = view.explain(m.now, "10.244.99.5")
    assert nowhere["verdict"] == "dropped" and nowhere["counters"] == ["tx_route_drop_no_route"]
    arrives = view.explain(m.now, "10.244.1.5", source="10.244.3.8")
    assert (arrives["verdict"], arrives["vteps"]) == ("delivered", ["10.0.0.3"])
    assert arrives["counters"] == ["rx_datagrams", "rx_routed_packets", "rx_routed_bytes"]
    transit = view.explain(m.now, "10.244.2.5", source="10.244.3.8")
    assert transit["verdict"] == "dropped" and transit["counters"][-1] == "rx_route_drop_not_local"


def test_a_service_vip_names_its_backends_and_where_each_is_routed(mesh):
    m = mesh()
    r = view_of(m[1]).explain(m.now, "10.96.0.10:80")
    assert kinds(r) == ["enter", "service", "route", "vxlan", "mtu"]
    service, route = r["steps"][1:3]
    assert service["entry"]["backends"] == ["10.244.2.7:8080"] and "Maglev" in service["text"]
    assert service["counters"] == ["svc_new_flows", "svc_packets_to_backend"]
    assert route["entry"]["node"] == "10.0.0.2" and (r["verdict"], r["vteps"]) == ("unicast", ["10.0.0.2"])
    refused = view_of(m[1]).explain(m.now, "10.96.0.10:81")
    assert refused["verdict"] == "refused" and refused["counters"] == ["svc_reject_no_service"]
    hairpin = view_of(m[2]).explain(m.now, "10.96.0.10")
    assert hairpin["verdict"] == "local" and "is on this node" in texts(hairpin)[-1]


def test_the_kernel_backend_names_the_route_neighbour_and_fdb_entry_it_programmed(mesh):
    m = mesh("kernel")
    r = view_of(m[1]).explain(m.now, "10.244.2.5")
    assert (r["carrier"], r["verdict"], r["vteps"]) == ("kernel", "unicast", ["10.0.0.2"])
    kernel = next(s for s in r["steps"] if s["kind"] == "kernel")
    assert kernel["counters"] == [] and kernel["route"] == "10.244.2.0/24 via 10.244.2.0 dev ovl0 onlink"
    assert ("`10.244.2.0 lladdr 02:00:0a:00:00:02 dev ovl0` (programmed), `02:00:0a:00:00:02 dev ovl0 dst 10.0.0.2` "
            "(programmed)") in kernel["text"]
    assert "the kernel VXLAN device ovl0" in texts(r)[-2]
    l2 = view_of(m[1]).explain(m.now, mac_str(mac(2)))
    assert l2["carrier"] == "kernel" and l2["counters"] == []
    assert "`02:00:00:00:00:02 dev vx100 dst 10.0.0.2` (programmed)" in texts(l2)[-2]


def test_host_gw_sends_without_encapsulation(mesh):
    m = mesh("host-gw")
    r = view_of(m[1]).explain(m.now, "10.244.3.5")
    assert r["verdict"] == "routed" and "`10.244.3.0/24 via 10.0.0.3 dev eth0` (programmed)" in texts(r)[2]
    assert r["steps"][-1]["mtu"]["overhead_bytes"] == 0


def test_a_device_mtu_too_big_for_the_underlay_says_what_fits(mesh):
    m = mesh()
    mtu = view_of(m[1], mtu=1500).explain(m.now, mac_str(mac(2)))["steps"][-1]
    assert mtu["mtu"]["fits"] is False and "is 50 more than the underlay" in mtu["text"]
    assert "set the MTU to 1450" in mtu["text"]


def test_static_networks_without_bgp_name_config_keys_and_data_learning():
    view = static_view()  # the status tests' node: two networks, static flood list and FDB, no bgp:
    view.underlay_mtu = 1500
    static = view.explain(110.0, "02:00:00:00:02:01")
    assert static["vteps"] == ["10.0.0.2"] and "static: networks[0].fdb of the config" in texts(static)[1]
    assert "UDP dst port 4790" in texts(static)[2]
    learned = view.explain(110.0, "02:00:00:00:01:01")
    assert "learned from the inner source MAC of a VXLAN frame from 10.0.0.3, 2s ago" in texts(learned)[1]
    assert learned["steps"][1]["origin"] == {"source": "data", "age_s": 2.0}
    by_ip = view.explain(110.0, "192.168.100.7")
    assert by_ip["verdict"] == "flooded" and "keeps ARP/ND bindings only with bgp:" in texts(by_ip)[1]
    assert "10.0.0.2 (static: networks[0].vteps)" in texts(by_ip)[2]
    red = view.explain(110.0, "02:00:00:00:09:09", network="red")
    assert (red["verdict"], red["counters"]) == ("dropped", ["tx_frames", "tx_bytes", "tx_drop_no_flood_list"])
    assert view.explain(110.0, "8.8.8.8")["path"] == "none"


@pytest.mark.parametrize("args, words", [
    ({"destination": "nowhere"}, "is not a MAC, an IP address or a service's VIP:PORT"),
    ({"destination": "10.96.0.10:80/sctp"}, "tcp or udp"),
    ({"destination": "192.168.100.12", "network": "green"}, "no network named 'green'"),
    ({"destination": "192.168.100.12", "source": "10.1.1.1"}, "--from 10.1.1.1 is not on network blue"),
    ({"destination": "10.244.2.5", "source": "192.0.2.1"}, "--from 192.0.2.1 is neither"),
    ({"destination": "192.168.100.12:80"}, "a port goes with a service's VIP"),
    ({}, "explain needs a destination"),
    ({"destination": "10.244.2.5", "colour": "blue"}, "takes no argument 'colour'"),
], ids=["garbage", "protocol", "network", "l2-source", "routed-source", "port-on-l2", "missing", "unknown-arg"])
def test_bad_requests_are_refused_naming_the_problem(mesh, args, words):
    m = mesh(n=1)
    reply = json.loads(handle_line(encode_request("explain", **args), view_of(m[1]), m.now))
    assert reply["ok"] is False and reply["error"]["code"] == "bad_request"
    assert words in reply["error"]["message"]


def test_overlayctl_prints_one_numbered_step_a_line_and_json(mesh, monkeypatch, capsys):
    m = mesh()
    view = view_of(m[1])

    def fake_request(path, command, **args):
        return decode_reply(handle_line(encode_request(command, **args), view, m.now))

    monkeypatch.setattr(ctl, "request", fake_request)
    assert ctl.main(["explain", "192.168.100.12", "--from", "192.168.100.11", "-n", "blue"]) == 0
    head, *steps = capsys.readouterr().out.splitlines()
    assert head == "192.168.100.12 from 192.168.100.11: network blue (VNI 100): unicast to 10.0.0.2 (overlayd)"
    assert [s.split(". ", 1)[0] for s in steps] == ["1", "2", "3", "4", "5"]
    assert steps[2].endswith("[counts tx_unicast_frames, tx_datagrams]")
    assert ctl.main(["explain", "10.244.2.5", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["vteps"] == ["10.0.0.2"]
    monkeypatch.setattr(ctl, "request", lambda *a, **k: (_ for _ in ()).throw(StatusError("bad_request", "no")))
    assert ctl.main(["explain", "x"]) == ctl.EXIT_REFUSED


@given(st.fixed_dictionaries({"destination": st.text(max_size=24) | st.sampled_from(
    ["10.96.0.10:80", "[fd00::1]:53/udp", "02:00:00:00:00:02", "ff:ff:ff:ff:ff:ff", "::", "10.244.2.5", "[::1]"])},
    optional={"source": st.text(max_size=16) | st.sampled_from(["10.244.3.8", "192.168.100.12", "::1"]),
              "network": st.text(max_size=8) | st.sampled_from(["blue", "100", "200"])}))
@settings(max_examples=300, deadline=None)
def test_any_request_gets_an_answer_or_bad_request(explain_view, args):
    view, now = explain_view
    reply = json.loads(handle_line(encode_request("explain", **args), view, now))
    assert reply["ok"] or reply["error"]["code"] == "bad_request", reply


@pytest.fixture(scope="module")
def explain_view():
    """One converged mesh for the property test (hypothesis runs it many times)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(base, "Node", ExplainNode)
        m = announced(base.Mesh(3))
        yield view_of(m[1]), m.now
