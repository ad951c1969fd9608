"""services_network, services and services_file: defaults and errors that name the field
(issue 12; DECISIONS.md: services)."""

from __future__ import annotations

import copy

import pytest

from overlayd.config import ConfigError, parse_config
from overlayd.config.services import parse_services_file

BASE = {
    "node": {"vtep": "10.0.0.1"},
    "bgp": {"asn": 65000, "neighbors": [{"address": "10.0.0.2", "asn": 65000}]},
    "routing": {"vni": 1, "network": "10.244.0.0/16", "subnet": "10.244.1.0/24",
                "network6": "fd00:244::/48", "subnet6": "fd00:244:0:1::/64"},
    "services_network": ["10.96.0.0/16", "fd00:96::/112"],
    "services": [{"name": "web", "vip": "10.96.0.10", "port": 80,
                  "backends": ["10.244.1.5:8080", "10.244.2.7:8080"]}],
}


def doc(**change) -> dict:
    d = copy.deepcopy(BASE)
    d.update(change)
    return d


def service(**change) -> dict:
    s = copy.deepcopy(BASE["services"][0])
    s.update(change)
    return s


def error_of(d) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(d)
    return str(err.value)


def test_defaults():
    cfg = parse_config(doc(services_network="10.96.0.0/16"))
    (s,) = cfg.services
    assert (s.protocol, s.affinity, s.affinity_timeout, s.maglev_table_size) == ("tcp", "none", 10800, 16381)
    assert s.checks.type == "tcp" and (s.checks.interval, s.checks.timeout, s.checks.fall, s.checks.rise) == (1, 0.5, 2, 2)
    assert [str(b) for b in s.backends] == ["10.244.1.5:8080", "10.244.2.7:8080"]
    assert cfg.conntrack.max_entries == 65536
    udp = parse_config(doc(services=[service(protocol="udp")])).services[0]
    assert udp.checks.type == "none"


def test_an_ipv6_service():
    s = parse_config(doc(services=[service(vip="fd00:96::10", backends=["[fd00:244:0:1::5]:8080"])])).services[0]
    assert str(s.backends[0]) == "[fd00:244:0:1::5]:8080"


@pytest.mark.parametrize("services, message", [
    ([service(vip="10.97.0.1")], "services[0].vip: 10.97.0.1 is not inside services_network (10.96.0.0/16, fd00:96::/112)"),
    ([service(backends=["192.168.1.1:80"])],
     "services[0].backends[0]: 192.168.1.1:80 is not inside the cluster network (10.244.0.0/16, fd00:244::/48)"),
    ([service(), service(name="web2")], "services[1]: 10.96.0.10:80/tcp is already services[0]"),
    ([service(), service(port=81)], "services[1].name: web is already services[0]"),
    ([service(port=0)], "services[0].port: Input should be greater than or equal to 1"),
    ([service(port=65536)], "services[0].port: Input should be less than or equal to 65535"),
    ([service(backends=["10.244.1.5"])], "10.244.1.5' is not a backend like 10.244.1.5:8080"),
    ([service(backends=["fd00:244::1:80"])], "write an IPv6 backend in brackets"),
    ([service(backends=["10.244.1.5:0"])], "services[0].backends[0].port: Input should be greater than or equal to 1"),
    ([service(backends=["10.244.1.5:80", "10.244.1.5:80"])], "services[0].backends[1]: 10.244.1.5:80 is listed twice"),
    ([service(backends=["[fd00:244::1]:80"])], "services[0].backends[0]: [fd00:244::1]:80 is IPv6, the VIP 10.96.0.10 IPv4"),
    ([service(protocol="udp", health={"type": "tcp"})],
     "services[0].health.port: a TCP check of a UDP service needs the port to connect to"),
    ([service(maglev_table_size=16000)], "services[0].maglev_table_size: 16000 is not a prime"),
    ([service(name="web service")], "services[0].name: 'web service' is not a service name"),
    ([service(health={"type": "tcp", "interval": 1, "timeout": 2})],
     "services[0].health.timeout: 2.0 s is longer than interval 1.0 s"),
])
def test_bad_services_name_the_field(services, message):
    assert message in error_of(doc(services=services))


def test_services_need_routing_and_a_services_network():
    d = doc()
    del d["routing"]
    d["networks"] = [{"name": "blue", "vni": 100, "device": "blue0"}]
    assert "services: need `routing:`" in error_of(d)
    assert "services_network: required with services" in error_of(doc(services_network=[]))


@pytest.mark.parametrize("networks, message", [
    (["10.96.0.0/16", "10.97.0.0/16"], "services_network: 10.96.0.0/16 and 10.97.0.0/16 are both IPv4"),
    (["10.244.128.0/20"], "services_network: 10.244.128.0/20 overlaps the cluster network 10.244.0.0/16"),
])
def test_bad_services_network(networks, message):
    assert message in error_of(doc(services_network=networks, services=[]))


def test_a_services_file_passes_the_same_checks_and_names_itself():
    cfg = parse_config(doc())
    args = (cfg.services_network, cfg.cluster_networks)
    assert [s.name for s in parse_services_file({"services": [service(name="f")]}, "svc.yaml", *args)] == ["f"]
    assert parse_services_file([service()], "svc.yaml", *args)[0].name == "web"
    assert parse_services_file(None, "svc.yaml", *args) == ()
    with pytest.raises(ConfigError) as err:
        parse_services_file([service(vip="10.97.0.1"), service(name="b", port=0)], "svc.yaml", *args)
    assert str(err.value) == "svc.yaml: services[1].port: Input should be greater than or equal to 1 (got 0)"
    with pytest.raises(ConfigError) as err:
        parse_services_file([service(vip="10.97.0.1")], "svc.yaml", *args)
    assert str(err.value).startswith("svc.yaml: services[0].vip: 10.97.0.1 is not inside services_network")
    with pytest.raises(ConfigError) as err:
        parse_services_file("web", "svc.yaml", *args)
    assert "svc.yaml: a services file holds a list of services" in str(err.value)
