"""dataplane.services through the Router (tun), in memory: a flow to a VIP gets a backend,
its packets are rewritten both ways with valid checksums, same-node backends come back
through the VIP, refusals are answered, a failed backend's clients get a reset."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace

import pytest

from overlayd.dataplane.counters import Counters
from overlayd.dataplane.router import Router
from overlayd.dataplane.services import ServicePath
from overlayd.fabric.conntrack import Conntrack
from overlayd.fabric.endpoint import parse_endpoint
from overlayd.fabric.fdb import Source
from overlayd.fabric.prefixes import PrefixEntry, PrefixTable
from overlayd.fabric.services import ServiceTable
from overlayd.wire.ip import TCP_ACK, TCP_RST, TCP_SYN, parse_flow
from tests.unit.packet_model import Spec, build, checksums_verify

OURS, THEIRS = b"\x02\x00\x0a\x00\x00\x01", b"\x02\x00\x0a\x00\x00\x02"
VIP = ipaddress.ip_address("10.96.0.10")
CLIENT = ipaddress.ip_address("10.244.1.7")
LOCAL_BACKEND, REMOTE_BACKEND = "10.244.1.5:8080", "10.244.2.7:8080"


def spec(**kw) -> SimpleNamespace:
    base = dict(name="web", vip=VIP, port=80, protocol="tcp", backends=(REMOTE_BACKEND,), affinity="none",
                affinity_timeout=10800.0, maglev_table_size=251)
    base.update(kw)
    return SimpleNamespace(**base)


def setup(backends=(REMOTE_BACKEND,), **kw):
    table = PrefixTable()
    table.install(PrefixEntry(ipaddress.ip_network("10.244.1.0/24"), None, OURS, 1, "10.0.0.1", "local",
                              Source.LOCAL), 0)
    table.install(PrefixEntry(ipaddress.ip_network("10.244.2.0/24"), "10.0.0.2", THEIRS, 1, "10.0.0.2",
                              "10.0.0.2", Source.BGP), 0)
    router = Router(1, OURS, "tun", table, 4789, ["10.244.1.0/24"], counters=Counters())
    services = ServiceTable()
    services.replace([spec(backends=backends, **kw)])
    conntrack = Conntrack(64)
    router.attach_services(ServicePath(services, conntrack, [ipaddress.ip_network("10.96.0.0/16")], (),
                                       router.counters, emit=lambda p: None))
    return router, services, conntrack


def packet(src, dst, sport, dport, flags=TCP_SYN, seq=1000, ack=0, payload=b"") -> bytearray:
    return bytearray(build(Spec(ipaddress.ip_address(src).packed, ipaddress.ip_address(dst).packed, 6, sport,
                                dport, payload, seq=seq, ack=ack, flags=flags)))


def tuple_of(data) -> tuple:
    f = parse_flow(bytes(data))
    return (str(ipaddress.ip_address(f.src)), f.sport, str(ipaddress.ip_address(f.dst)), f.dport)


def vxlan(inner: bytes) -> bytearray:
    """A datagram from node 2 on the routed VNI: VXLAN header, inner Ethernet to our router MAC."""
    return bytearray(b"\x08\x00\x00\x00\x00\x00\x01\x00" + OURS + THEIRS + b"\x08\x00" + inner)


def test_a_flow_to_the_vip_goes_to_its_backend_and_the_reply_comes_from_the_vip():
    router, services, conntrack = setup()
    syn = packet(CLIENT, VIP, 40000, 80)
    egress = router.from_device(memoryview(syn), 1.0)
    assert egress is not None and egress[1] == (("10.0.0.2", 4789),)
    assert tuple_of(syn) == ("10.244.1.7", 40000, "10.244.2.7", 8080) and checksums_verify(bytes(syn))
    (flow,) = list(conntrack)
    assert flow.service == "web" and flow.snat is None
    reply = packet("10.244.2.7", CLIENT, 8080, 40000, flags=TCP_SYN | TCP_ACK, seq=5000, ack=1001)
    out = router.from_vxlan("10.0.0.2", memoryview(vxlan(bytes(reply))), 1.1)
    assert tuple_of(out) == ("10.96.0.10", 80, "10.244.1.7", 40000) and checksums_verify(bytes(out))
    assert flow.replied and flow.server_next_seq == 5001
    c = router.counters
    assert (c.svc_new_flows, c.svc_packets_to_backend, c.svc_packets_from_backend) == (1, 1, 1)
    # the next packet of the flow finds it: no second pick
    data = packet(CLIENT, VIP, 40000, 80, flags=TCP_ACK, seq=1001, ack=5001, payload=b"GET /")
    assert router.from_device(memoryview(data), 1.2) is not None and c.svc_new_flows == 1
    assert tuple_of(data)[2:] == ("10.244.2.7", 8080)
    assert services.get("web").hits == 1


def test_a_backend_on_this_node_is_reached_through_the_vip_both_ways():
    router, _, conntrack = setup(backends=(LOCAL_BACKEND,))
    syn = packet(CLIENT, VIP, 40000, 80)
    assert router.from_device(memoryview(syn), 1.0) is None
    ((_, sent),) = router.pop_replies()  # written back to the device, for the local pod
    (flow,) = list(conntrack)
    assert tuple_of(sent) == ("10.96.0.10", flow.snat[1], "10.244.1.5", 8080) and checksums_verify(sent)
    # the backend answers the VIP (routed to the device): back to the client, from VIP:80
    reply = packet("10.244.1.5", VIP, 8080, flow.snat[1], flags=TCP_SYN | TCP_ACK, seq=7000, ack=1001)
    assert router.from_device(memoryview(reply), 1.1) is None
    ((_, back),) = router.pop_replies()
    assert tuple_of(back) == ("10.96.0.10", 80, "10.244.1.7", 40000) and checksums_verify(back)


def test_a_client_that_is_its_own_backend():
    router, _, conntrack = setup(backends=("10.244.1.7:80",))
    syn = packet(CLIENT, VIP, 40000, 80)
    router.from_device(memoryview(syn), 1.0)
    ((_, sent),) = router.pop_replies()
    (flow,) = list(conntrack)
    assert tuple_of(sent) == ("10.96.0.10", flow.snat[1], "10.244.1.7", 80)


@pytest.mark.parametrize("backends, port, counter", [((), 80, "svc_reject_no_backend"),
                                                     ((REMOTE_BACKEND,), 81, "svc_reject_no_service")])
def test_refused_flows_get_a_reset_at_once(backends, port, counter):
    router, _, conntrack = setup(backends=backends)
    assert router.from_device(memoryview(packet(CLIENT, VIP, 40000, port)), 1.0) is None
    ((_, rst),) = router.pop_replies()
    f = parse_flow(rst)
    assert tuple_of(rst) == ("10.96.0.10", port, "10.244.1.7", 40000) and f.tcp_flags & TCP_RST
    assert getattr(router.counters, counter) == 1 and not len(conntrack)


def test_a_backend_that_fails_resets_its_clients_from_the_vip():
    router, services, conntrack = setup()
    router.from_device(memoryview(packet(CLIENT, VIP, 40000, 80)), 1.0)
    reply = packet("10.244.2.7", CLIENT, 8080, 40000, flags=TCP_SYN | TCP_ACK, seq=5000, ack=1001)
    router.from_vxlan("10.0.0.2", memoryview(vxlan(bytes(reply))), 1.1)
    services.set_health("web", REMOTE_BACKEND, False)
    assert router.services.backend_down("web", parse_endpoint(REMOTE_BACKEND)) == 1
    ((_, rst),) = router.pop_replies()
    f = parse_flow(rst)
    assert tuple_of(rst) == ("10.96.0.10", 80, "10.244.1.7", 40000)
    assert f.tcp_flags & TCP_RST and f.seq == 5001 and checksums_verify(rst)
    assert not len(conntrack) and router.counters.svc_reset_backend_down == 1
    # and new flows are refused now
    router.from_device(memoryview(packet(CLIENT, VIP, 40001, 80)), 2.0)
    assert router.counters.svc_reject_no_backend == 1


def test_packets_not_for_a_vip_are_not_touched():
    router, _, conntrack = setup()
    data = packet(CLIENT, "10.244.2.9", 40000, 22)
    before = bytes(data)
    assert router.from_device(memoryview(data), 1.0) is not None
    assert bytes(data) == before and not len(conntrack)


def test_affinity_keeps_a_client_on_its_backend():
    router, services, _ = setup(backends=(REMOTE_BACKEND, "10.244.2.8:8080", "10.244.2.9:8080"),
                                affinity="client-ip")
    chosen = set()
    for port in range(40000, 40030):
        data = packet(CLIENT, VIP, port, 80)
        router.from_device(memoryview(data), 1.0)
        chosen.add(tuple_of(data)[2])
    assert len(chosen) == 1 and services.get("web").hits == 30
