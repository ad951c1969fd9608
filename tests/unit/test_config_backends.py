"""The backend keys of the config: routing.backend, direct_routing, route_protocol,
install_routes, networks[].backend and bgp.neighbors[].families, with errors
that name the field (DECISIONS.md: backends)."""

from __future__ import annotations

import copy

import pytest

from overlayd.config import DEFAULT_ROUTE_PROTOCOL, ConfigError, parse_config

ROUTED = {
    "node": {"vtep": "10.0.0.1"},
    "bgp": {"asn": 65000, "neighbors": [{"address": "10.0.0.2", "asn": 65000}]},
    "routing": {"vni": 1, "network": "10.244.0.0/16", "subnet": "10.244.1.0/24"},
}


def routed(**routing) -> dict:
    doc = copy.deepcopy(ROUTED)
    doc["routing"].update(routing)
    return doc


def error_of(doc) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    return str(err.value)


def test_defaults_are_todays_behaviour():
    cfg = parse_config(ROUTED)
    r = cfg.routing
    assert (r.backend, r.direct_routing, r.install_routes) == ("userspace", False, False)
    assert r.route_protocol == DEFAULT_ROUTE_PROTOCOL == 149
    assert cfg.bgp.neighbors[0].families == ("evpn",)
    assert cfg.uses_userspace_vxlan()


@pytest.mark.parametrize("backend, mtu, device", [
    ("userspace", 1450, True), ("kernel", 1450, True), ("ipip", 1480, True),
    ("host-gw", 1500, False),
])
def test_each_backend_leaves_its_own_mtu(backend, mtu, device):
    cfg = parse_config(routed(backend=backend))
    assert cfg.routing_mtu(1500) == mtu
    assert cfg.routing.has_device is device


def test_ipip_over_ipv6_leaves_40_octets():
    doc = routed(backend="ipip")
    doc["node"]["vtep"] = "fd00::1"
    doc["bgp"]["router_id"] = "10.0.0.1"
    doc["bgp"]["neighbors"][0]["address"] = "fd00::2"
    assert parse_config(doc).routing_mtu(1500) == 1460


def test_native_needs_a_neighbor_with_the_unicast_family():
    assert "no bgp.neighbors[] entry has ipv4-unicast" in error_of(routed(backend="native"))
    doc = routed(backend="native", install_routes=True)
    doc["bgp"]["neighbors"][0]["families"] = ["ipv4-unicast"]
    cfg = parse_config(doc)
    assert cfg.routing.install_routes and not cfg.uses_userspace_vxlan()
    assert cfg.routing_mtu(9000) == 9000


@pytest.mark.parametrize("change, message", [
    (dict(backend="vxlan"), "routing.backend: Input should be 'userspace', 'kernel', 'host-gw', 'ipip' or 'native'"),
    (dict(backend="host-gw", direct_routing=True),
     "routing.direct_routing: applies to the tunnel backends (userspace, kernel, ipip), not to backend host-gw"),
    (dict(install_routes=True), "routing.install_routes: applies to backend native, not to backend userspace"),
    (dict(backend="kernel", device_type="tap"), "routing.device_type: the kernel backend makes no TUN/TAP device"),
    (dict(backend="host-gw", device="ovl0"), "routing.device: the host-gw backend creates no device"),
    (dict(route_protocol=11), "routing.route_protocol: 11 is the route protocol of zebra"),
    (dict(route_protocol=186), "routing.route_protocol: 186 is the route protocol of bgp"),
    (dict(route_protocol=256), "routing.route_protocol: Input should be less than or equal to 255"),
])
def test_bad_backend_keys_name_the_field(change, message):
    assert message in error_of(routed(**change))


def test_route_protocol_may_be_any_unassigned_number():
    assert parse_config(routed(route_protocol=250)).routing.route_protocol == 250


def test_a_kernel_and_a_userspace_vxlan_backend_cannot_share_the_port():
    doc = routed(backend="kernel")
    doc["networks"] = [{"name": "blue", "vni": 100, "device": "blue0"}]
    msg = error_of(doc)
    assert msg.startswith("routing.backend: kernel VXLAN binds UDP port 4789 on every address")
    assert "networks[0].backend (userspace)" in msg
    doc["networks"][0]["backend"] = "kernel"
    cfg = parse_config(doc)
    assert not cfg.uses_userspace_vxlan() and cfg.networks[0].vxlan_device == "vx100"


@pytest.mark.parametrize("backend", ["host-gw", "ipip"])
def test_non_vxlan_backends_combine_with_userspace_networks(backend):
    doc = routed(backend=backend)
    doc["networks"] = [{"name": "blue", "vni": 100, "device": "blue0"}]
    assert parse_config(doc).uses_userspace_vxlan()


def test_two_networks_on_the_kernel_backend():
    doc = copy.deepcopy(ROUTED)
    del doc["routing"]
    doc["networks"] = [{"name": "blue", "vni": 100, "device": "br-blue", "backend": "kernel"},
                       {"name": "red", "vni": 200, "device": "br-red", "backend": "kernel"}]
    assert [n.vxlan_device for n in parse_config(doc).networks] == ["vx100", "vx200"]


def test_a_device_named_like_a_kernel_vxlan_device_is_refused():
    doc = copy.deepcopy(ROUTED)
    del doc["routing"]
    doc["networks"] = [{"name": "blue", "vni": 100, "device": "br-blue", "backend": "kernel"},
                       {"name": "red", "vni": 200, "device": "vx100", "backend": "kernel"}]
    assert error_of(doc) == "networks[1].device: vx100 is the name of networks[0]'s kernel VXLAN device"


@pytest.mark.parametrize("families, message", [
    ([], "bgp.neighbors[0].families: name at least one of evpn, ipv4-unicast, ipv6-unicast"),
    (["evpn", "evpn"], "bgp.neighbors[0].families: evpn is listed twice"),
    (["ipv4-multicast"], "bgp.neighbors[0].families[0]: Input should be 'evpn', 'ipv4-unicast' or 'ipv6-unicast'"),
])
def test_bad_families_name_the_field(families, message):
    doc = copy.deepcopy(ROUTED)
    doc["bgp"]["neighbors"][0]["families"] = families
    assert message in error_of(doc)
