"""dataplane/explain.py against the data path itself: for every outcome, the packet it stands for
goes through the real Switch, Router or service path on the same tables, and exactly the counters
the decision names move (besides the ones every packet read moves), to the VTEPs it names."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace

import pytest

from overlayd.dataplane import explain as dp
from overlayd.dataplane.counters import Counters
from overlayd.dataplane.router import Router
from overlayd.dataplane.services import ServicePath
from overlayd.dataplane.switch import Switch
from overlayd.fabric.conntrack import Conntrack
from overlayd.fabric.fdb import Source
from overlayd.fabric.prefixes import PrefixEntry, PrefixTable
from overlayd.fabric.services import ServiceTable
from overlayd.sim.frames import arp_request, ethernet, mac
from overlayd.wire.ethernet import BROADCAST
from overlayd.wire.ip import TCP_SYN
from overlayd.wire.vxlan import encode_header
from tests.unit.packet_model import Spec, build
from tests.unit.test_router import ipv4, routed

VNI = 100
HOST, REMOTE, UNKNOWN = mac(1), mac(2), mac(9)  # a host on our TAP, one behind 10.0.0.2, one nowhere
OURS, THEIRS = b"\x02\x00\x0a\x00\x00\x01", b"\x02\x00\x0a\x00\x00\x02"
ALWAYS = {"tx_frames", "tx_bytes"}  # every frame read from a TAP moves these


def moved(counters: Counters, before: dict[str, int]) -> set[str]:
    return {k for k, v in counters.as_dict().items() if v != before[k]}


# -- the L2 switch ------------------------------------------------------------------------------


def switch(flood: bool = True, suppression: bool = False) -> Switch:
    sw = Switch(4789, 300)
    sw.add_segment(VNI, "blue", own_macs=[mac(1000)])
    sw.add_segment(200, "red")
    if flood:
        for vtep in ("10.0.0.2", "10.0.0.3"):
            sw.add_flood_vtep(VNI, vtep, Source.STATIC)
    sw.install_mac(VNI, REMOTE, "10.0.0.2", Source.BGP, 0.0)
    sw.install_neighbor(VNI, "192.168.100.2", REMOTE, Source.BGP, 0.0)
    sw.from_tap(VNI, ethernet(BROADCAST, HOST, 0x88B5, b"x" * 46), 0.0)  # HOST learned local
    sw.from_tap(VNI, arp_request(HOST, "192.168.100.1", "192.168.100.1"), 0.0) if suppression else None
    sw.neighbor_snooping = sw.arp_suppression = suppression
    return sw


def send(sw: Switch, vni: int, frame: bytes) -> tuple[set[str], set[str] | None]:
    """(the counters that moved, the VTEPs the datagrams went to or None)."""
    before = sw.counters.as_dict()
    egress = sw.from_tap(vni, frame, 1.0)
    return moved(sw.counters, before), None if egress is None else {a for a, _ in egress[1]}


@pytest.mark.parametrize("vni, dst, outcome", [
    (VNI, REMOTE, dp.UNICAST),
    (VNI, HOST, dp.DROPPED),  # a local MAC
    (VNI, UNKNOWN, dp.FLOOD),  # unknown unicast
    (VNI, BROADCAST, dp.FLOOD),
    (VNI, b"\x01\x00\x5e\x00\x00\x01", dp.FLOOD),  # IPv4 multicast
    (200, UNKNOWN, dp.DROPPED),  # no flood list
    (200, BROADCAST, dp.DROPPED),
], ids=["known-remote", "local", "unknown-unicast", "broadcast", "multicast", "no-flood-list", "broadcast-nowhere"])
def test_a_frame_moves_the_counters_its_decision_names(vni, dst, outcome):
    sw = switch()
    decision = dp.frame_out(sw, vni, dst)
    assert decision.outcome == outcome
    counters, vteps = send(sw, vni, ethernet(dst, HOST, 0x88B5, b"x" * 46))
    assert counters == ALWAYS | set(decision.counters)
    assert vteps == (set(decision.vteps) if decision.vteps else None)


@pytest.mark.parametrize("target, asker, suppression, outcome", [
    ("192.168.100.2", HOST, True, dp.ANSWERED),  # bound to a MAC behind a remote VTEP
    ("192.168.100.1", mac(3), True, dp.FORWARDED),  # bound to a local host: it answers itself
    ("192.168.100.9", HOST, True, dp.FORWARDED),  # no binding
    ("192.168.100.2", HOST, False, dp.FORWARDED),  # suppression off
], ids=["answered", "local-binding", "unbound", "suppression-off"])
def test_an_arp_request_moves_the_counters_its_decision_names(target, asker, suppression, outcome):
    sw = switch(suppression=suppression)
    ip = ipaddress.ip_address(target)
    decision = dp.solicitation_out(sw, VNI, ip, asker)
    assert decision.outcome == outcome
    frame = arp_request(asker, "192.168.100.1" if asker == HOST else "192.168.100.3", target)
    counters, vteps = send(sw, VNI, frame)
    if outcome == dp.ANSWERED:
        assert counters == ALWAYS | set(decision.counters) and vteps is None
        return
    flood = dp.frame_out(sw, VNI, BROADCAST)  # the request goes on as the broadcast it is
    assert counters == ALWAYS | set(decision.counters) | set(flood.counters)
    assert vteps == set(flood.vteps)


@pytest.mark.parametrize("vni, vtep, outcome", [
    (VNI, "10.0.0.3", dp.DELIVERED),  # on the flood list
    (VNI, "10.0.0.9", dp.DROPPED),  # a VTEP nobody named
    (300, "10.0.0.3", dp.DROPPED),  # a VNI of no network here
], ids=["known-vtep", "unknown-vtep", "unknown-vni"])
def test_a_datagram_moves_the_counters_its_decision_names(vni, vtep, outcome):
    sw = switch()
    decision = dp.frame_in(sw, vni, vtep)
    assert decision.outcome == outcome
    before = sw.counters.as_dict()
    delivered = sw.from_vxlan(vtep, encode_header(vni) + HOST + mac(5) + b"\x88\xb5" + b"x" * 46, 1.0)
    assert moved(sw.counters, before) == {"rx_datagrams"} | set(decision.counters)
    assert (delivered is not None) == (outcome == dp.DELIVERED)


# -- the router and the service path ---------------------------------------------------------------


def router_and_services():
    table = PrefixTable()
    for prefix, vtep, router_mac, node, source in [
        ("10.244.1.0/24", None, OURS, "10.0.0.1", Source.LOCAL),
        ("10.244.2.0/24", "10.0.0.2", THEIRS, "10.0.0.2", Source.BGP),
        ("10.244.3.0/24", "10.0.0.3", None, "10.0.0.3", Source.BGP),  # a host-gw node: no router MAC
    ]:
        table.install(PrefixEntry(ipaddress.ip_network(prefix), vtep, router_mac, 1, node, node, source,
                                  encap="vxlan" if router_mac else "none"), 0.0)
    router = Router(1, OURS, "tun", table, 4789, ["10.244.1.0/24"], counters=Counters())
    services = ServiceTable()
    services.replace([SimpleNamespace(name=name, vip=ipaddress.ip_address("10.96.0.10"), port=port, protocol="tcp",
                                      backends=("10.244.2.7:8080",), affinity="none", affinity_timeout=10800.0,
                                      maglev_table_size=251) for name, port in (("web", 80), ("down", 81))])
    services.set_health("down", "10.244.2.7:8080", False)
    router.attach_services(ServicePath(services, Conntrack(64), [ipaddress.ip_network("10.96.0.0/16")], (),
                                       router.counters, emit=lambda p: None))
    return router, table, services


@pytest.mark.parametrize("dst, outcome", [
    ("10.244.2.5", dp.UNICAST),
    ("10.244.1.5", dp.DROPPED),  # our own subnet
    ("10.244.3.5", dp.DROPPED),  # a route without a router MAC
    ("10.244.9.5", dp.DROPPED),  # no route
    ("224.0.0.5", dp.DROPPED),  # multicast
], ids=["remote-subnet", "local-subnet", "no-router-mac", "no-route", "multicast"])
def test_a_routed_packet_moves_the_counters_its_decision_names(dst, outcome):
    router, table, _ = router_and_services()
    decision = dp.packet_out(table, ipaddress.ip_address(dst))
    assert decision.outcome == outcome
    before = router.counters.as_dict()
    egress = router.from_device(memoryview(bytearray(ipv4("10.244.1.7", dst))), 1.0)
    assert moved(router.counters, before) == set(decision.counters)
    assert (None if egress is None else {a for a, _ in egress[1]}) == (set(decision.vteps) or None)


@pytest.mark.parametrize("vtep, dst, outcome", [
    ("10.0.0.2", "10.244.1.5", dp.DELIVERED),
    ("10.0.0.9", "10.244.1.5", dp.DROPPED),  # a VTEP of no subnet
    ("10.0.0.2", "10.244.3.5", dp.DROPPED),  # not ours: no transit
], ids=["delivered", "unknown-vtep", "not-local"])
def test_a_routed_datagram_moves_the_counters_its_decision_names(vtep, dst, outcome):
    router, table, _ = router_and_services()
    decision = dp.datagram_in(table, router.local_subnets, 1, vtep, ipaddress.ip_address(dst))
    assert decision.outcome == outcome
    before = router.counters.as_dict()
    out = router.from_vxlan(vtep, memoryview(bytearray(routed(1, OURS, THEIRS, 0x0800, ipv4("10.244.2.5", dst)))), 1.0)
    assert moved(router.counters, before) == set(decision.counters)
    assert (out is not None) == (outcome == dp.DELIVERED)


@pytest.mark.parametrize("port, outcome", [(80, dp.REWRITTEN), (81, dp.REFUSED), (82, dp.REFUSED)],
                         ids=["healthy", "no-healthy-backend", "no-service"])
def test_a_new_flow_to_a_vip_moves_the_counters_its_decision_names(port, outcome):
    router, table, services = router_and_services()
    vip = ipaddress.ip_address("10.96.0.10")
    decision = dp.new_flow(services, 6, vip, port)
    assert decision.outcome == outcome
    before = router.counters.as_dict()
    syn = bytearray(build(Spec(ipaddress.ip_address("10.244.1.7").packed, vip.packed, 6, 40000, port, b"",
                               flags=TCP_SYN)))
    egress = router.from_device(memoryview(syn), 1.0)
    routed_on = dp.packet_out(table, ipaddress.ip_address("10.244.2.7")).counters if egress else ()
    assert moved(router.counters, before) == set(decision.counters) | set(routed_on)


def test_a_tap_routing_device_answers_what_its_decision_says():
    _, table, _ = router_and_services()
    router = Router(1, OURS, "tap", table, 4789, ["10.244.1.0/24"], b"\x02\xdd\x00\x00\x00\x01",
                    networks=["10.244.0.0/16"], counters=Counters())
    for target, outcome in (("10.244.2.5", dp.ANSWERED), ("10.244.1.5", dp.FORWARDED)):
        decision = dp.device_solicitation(router, ipaddress.ip_address(target))
        assert decision.outcome == outcome
        before = router.counters.as_dict()
        router.from_device(arp_request(b"\x02\xee\x00\x00\x00\x01", "10.244.1.7", target), 1.0)
        assert moved(router.counters, before) == set(decision.counters)
