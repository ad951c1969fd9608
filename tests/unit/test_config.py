"""The config file: defaults, and errors that name the field they are about."""

from __future__ import annotations

import copy
import ipaddress
import re
from pathlib import Path

import pydantic
import pytest
import yaml

from overlayd.config import DEFAULT_STATUS_SOCKET, ConfigError, load_config, parse_config

ROOT = Path(__file__).resolve().parents[2]

MINIMAL = {
    "node": {"vtep": "10.0.0.1"},
    "networks": [{"name": "blue", "vni": 100, "device": "blue0"}],
}


def with_changes(change) -> dict:
    doc = copy.deepcopy(MINIMAL)
    change(doc)
    return doc


def error_of(doc) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    return str(err.value)


# -- defaults ------------------------------------------------------------------------------


def test_minimal_config_gets_the_documented_defaults():
    cfg = parse_config(MINIMAL)
    node = cfg.node
    assert node.vtep == ipaddress.IPv4Address("10.0.0.1") and node.family == 4
    assert node.vxlan_port == 4789
    assert node.status_socket == DEFAULT_STATUS_SOCKET == "/run/overlayd/overlayd.sock"
    assert node.fdb_aging == 300
    assert node.underlay_mtu is None
    assert node.udp_source_ports == 16
    assert node.name  # the host name
    (net,) = cfg.networks
    assert (net.name, net.vni, net.device) == ("blue", 100, "blue0")
    assert (net.address, net.mac, net.mtu, net.vteps, net.fdb) == (None, None, None, (), ())
    limits = (net.max_local_macs, net.mac_learn_rate_per_s, net.mac_learn_burst, net.flood_rate_pps, net.flood_burst,
              net.max_local_ips)
    print(f"\nnetwork limits by default: max_local_macs {limits[0]}, mac_learn_rate_per_s {limits[1]:g} "
          f"burst {limits[2]}, flood_rate_pps {limits[3]:g} burst {limits[4]}, max_local_ips {limits[5]}")
    assert limits == (8192, 1000, 1000, 2000, 2000, 16384)


@pytest.mark.parametrize(
    "vtep, remote, underlay, mtu",
    [("10.0.0.1", "10.0.0.2", 1500, 1450), ("fd00::1", "fd00::2", 1500, 1430), ("10.0.0.1", "10.0.0.2", 9000, 8950)],
)
def test_mtu_fits_the_underlay_after_encapsulation(vtep, remote, underlay, mtu):
    cfg = parse_config({"node": {"vtep": vtep},
                        "networks": [{"name": "blue", "vni": 100, "device": "blue0", "vteps": [remote]}]})
    assert cfg.mtu_for(cfg.networks[0], underlay) == mtu


def test_explicit_mtu_wins():
    cfg = parse_config(with_changes(lambda d: d["networks"][0].update(mtu=1400)))
    assert cfg.mtu_for(cfg.networks[0], 1500) == 1400
    assert cfg.mtu_for(cfg.networks[0], 9000) == 1400


def test_values_are_parsed_and_normalised():
    cfg = parse_config(with_changes(lambda d: d["networks"][0].update(
        address="192.168.100.1/24",
        mac="02-AA-00-00-00-01",
        vteps=["10.0.0.2", "10.0.0.3"],
        fdb=[{"mac": "02-00-00-00-02-0A", "vtep": "10.0.0.2"}],
    )))
    net = cfg.networks[0]
    assert net.address == ipaddress.ip_interface("192.168.100.1/24")
    assert net.mac == "02:aa:00:00:00:01"
    assert net.vteps == (ipaddress.ip_address("10.0.0.2"), ipaddress.ip_address("10.0.0.3"))
    assert net.fdb[0].mac == "02:00:00:00:02:0a"
    assert net.fdb[0].mac_bytes == bytes.fromhex("02000000020a")


def test_config_is_frozen():
    cfg = parse_config(MINIMAL)
    with pytest.raises(pydantic.ValidationError):
        cfg.node.vxlan_port = 1


# -- errors name the field -----------------------------------------------------------------------

def _set(path, value):
    def change(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return change


def _del(path):
    def change(doc):
        target = doc
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]
    return change


def _add_network(**net):
    return lambda doc: doc["networks"].append(net)


CASES = [
    ("vni-zero", _set(["networks", 0, "vni"], 0), r"^networks\[0\]\.vni: .*greater than or equal to 1"),
    ("vni-too-big", _set(["networks", 0, "vni"], 1 << 24), r"^networks\[0\]\.vni: .*16777215"),
    ("vni-not-a-number", _set(["networks", 0, "vni"], "blue"), r"^networks\[0\]\.vni: .*integer"),
    ("vtep-not-an-address", _set(["node", "vtep"], "ten.0.0.1"),
     r"^node\.vtep: 'ten\.0\.0\.1' is not an IPv4 or IPv6"),
    ("vtep-multicast", _set(["node", "vtep"], "239.1.1.1"), r"^node\.vtep: 239\.1\.1\.1 cannot be a VTEP"),
    ("vtep-unspecified", _set(["node", "vtep"], "0.0.0.0"), r"^node\.vtep: 0\.0\.0\.0 cannot be a VTEP"),
    ("vtep-ipv6-loopback", _set(["node", "vtep"], "::1"), r"^node\.vtep: ::1 cannot be a VTEP"),
    ("vtep-missing", _del(["node", "vtep"]), r"^node\.vtep: required but missing$"),
    ("networks-missing", _del(["networks"]), r"^networks: required but missing \(or configure `routing:`\)$"),
    ("networks-empty", _set(["networks"], []), r"^networks: required but missing"),
    ("unknown-node-key", _set(["node", "vxlan_prot"], 4789), r"^node\.vxlan_prot: unknown key$"),
    ("unknown-network-key", _set(["networks", 0, "vnid"], 1), r"^networks\[0\]\.vnid: unknown key$"),
    ("unknown-top-level-key", _set(["nodes"], {}), r"^nodes: unknown key$"),
    ("port-zero", _set(["node", "vxlan_port"], 0), r"^node\.vxlan_port: "),
    ("port-too-big", _set(["node", "vxlan_port"], 65536), r"^node\.vxlan_port: "),
    ("aging-zero", _set(["node", "fdb_aging"], 0), r"^node\.fdb_aging: "),
    ("underlay-mtu-too-small", _set(["node", "underlay_mtu"], 1000), r"^node\.underlay_mtu: "),
    ("network-mtu-too-small", _set(["networks", 0, "mtu"], 67), r"^networks\[0\]\.mtu: "),
    ("device-name-too-long", _set(["networks", 0, "device"], "a" * 16),
     r"^networks\[0\]\.device: .*not a valid interface name"),
    ("device-name-with-slash", _set(["networks", 0, "device"], "blue/0"), r"^networks\[0\]\.device: "),
    ("empty-name", _set(["networks", 0, "name"], ""), r"^networks\[0\]\.name: "),
    ("address-without-prefix-syntax", _set(["networks", 0, "address"], "blue"),
     r"^networks\[0\]\.address: 'blue' is not an address"),
    ("duplicate-vni", _add_network(name="red", vni=100, device="red0"),
     r"^networks\[1\]\.vni: 100 is already used by networks\[0\]$"),
    ("duplicate-name", _add_network(name="blue", vni=200, device="red0"),
     r"^networks\[1\]\.name: blue is already used by networks\[0\]$"),
    ("duplicate-device", _add_network(name="red", vni=200, device="blue0"),
     r"^networks\[1\]\.device: blue0 is already used by networks\[0\]$"),
    ("vtep-listed-twice", _set(["networks", 0, "vteps"], ["10.0.0.2", "10.0.0.2"]),
     r"^networks\[0\]\.vteps: 10\.0\.0\.2 is listed twice$"),
    ("vteps-family-mismatch", _set(["networks", 0, "vteps"], ["fd00::2"]),
     r"^networks\[0\]\.vteps: fd00::2 is IPv6 but node\.vtep is IPv4$"),
    ("fdb-family-mismatch", _set(["networks", 0, "fdb"], [{"mac": "02:00:00:00:00:02", "vtep": "fd00::2"}]),
     r"^networks\[0\]\.fdb: fd00::2 is IPv6 but node\.vtep is IPv4$"),
    ("own-vtep-in-vteps", _set(["networks", 0, "vteps"], ["10.0.0.2", "10.0.0.1"]),
     r"^networks\[0\]\.vteps: 10\.0\.0\.1 is this node's own VTEP$"),
    ("own-vtep-in-fdb", _set(["networks", 0, "fdb"], [{"mac": "02:00:00:00:00:02", "vtep": "10.0.0.1"}]),
     r"^networks\[0\]\.fdb: 10\.0\.0\.1 is this node's own VTEP$"),
    ("fdb-mac-garbage", _set(["networks", 0, "fdb"], [{"mac": "02:00:00:00:00", "vtep": "10.0.0.2"}]),
     r"^networks\[0\]\.fdb\[0\]\.mac: not a MAC address"),
    ("fdb-mac-multicast", _set(["networks", 0, "fdb"], [{"mac": "01:00:5e:00:00:01", "vtep": "10.0.0.2"}]),
     r"^networks\[0\]\.fdb\[0\]\.mac: 01:00:5e:00:00:01 is not a unicast MAC"),
    ("fdb-mac-zero", _set(["networks", 0, "fdb"], [{"mac": "00:00:00:00:00:00", "vtep": "10.0.0.2"}]),
     r"^networks\[0\]\.fdb\[0\]\.mac: .* is not a unicast MAC"),
    ("network-mac-multicast", _set(["networks", 0, "mac"], "33:33:00:00:00:01"),
     r"^networks\[0\]\.mac: 33:33:00:00:00:01 is not a unicast MAC"),
    ("network-mac-garbage", _set(["networks", 0, "mac"], "02:00:00"),
     r"^networks\[0\]\.mac: not a MAC address"),
    ("network-mac-unquoted-number", _set(["networks", 0, "mac"], 12345),
     r"^networks\[0\]\.mac: write the MAC in quotes"),
    ("fdb-vtep-missing", _set(["networks", 0, "fdb"], [{"mac": "02:00:00:00:00:02"}]),
     r"^networks\[0\]\.fdb\[0\]\.vtep: required but missing$"),
    ("max-local-macs-zero", _set(["networks", 0, "max_local_macs"], 0),
     r"^networks\[0\]\.max_local_macs: .*greater than or equal to 1"),
    ("max-local-ips-zero", _set(["networks", 0, "max_local_ips"], 0), r"^networks\[0\]\.max_local_ips: "),
    ("learn-rate-zero", _set(["networks", 0, "mac_learn_rate_per_s"], 0), r"^networks\[0\]\.mac_learn_rate_per_s: "),
    ("learn-burst-zero", _set(["networks", 0, "mac_learn_burst"], 0), r"^networks\[0\]\.mac_learn_burst: "),
    ("flood-rate-negative", _set(["networks", 0, "flood_rate_pps"], -5), r"^networks\[0\]\.flood_rate_pps: "),
    ("flood-burst-not-a-number", _set(["networks", 0, "flood_burst"], "lots"), r"^networks\[0\]\.flood_burst: "),
    ("max-prefixes-action", _set(["bgp"], {"asn": 65000, "neighbors": [
        {"address": "10.0.0.2", "asn": 65000, "max_prefixes": {"limit": 10, "action": "drop"}}]}),
     r"^bgp\.neighbors\[0\]\.max_prefixes\.action: Input should be 'warn' or 'teardown'"),
    ("max-prefixes-zero", _set(["bgp"], {"asn": 65000, "neighbors": [
        {"address": "10.0.0.2", "asn": 65000, "max_prefixes": 0}]}),
     r"^bgp\.neighbors\[0\]\.max_prefixes\.limit: .*greater than or equal to 1"),
    ("fdb-unknown-key", _set(["networks", 0, "fdb"], [{"mac": "02:00:00:00:00:02", "vtep": "10.0.0.2", "via": 1}]),
     r"^networks\[0\]\.fdb\[0\]\.via: unknown key$"),
    ("metrics-host-name", _set(["metrics"], {"listen": "localhost:9477"}),
     r"^metrics\.listen: 'localhost:9477': 'localhost' is not an IP address \(write 127\.0\.0\.1:9477"),
    ("metrics-no-port", _set(["metrics"], {"listen": "127.0.0.1"}), r"^metrics\.listen: '127\.0\.0\.1' is not address:port"),
    ("metrics-no-address", _set(["metrics"], {"listen": ":9477"}), r"^metrics\.listen: ':9477': '' is not an IP address"),
    ("metrics-ipv6-unbracketed", _set(["metrics"], {"listen": "::1:9477"}),
     r"^metrics\.listen: '::1:9477': an IPv6 address is written in brackets, \[::1\]:9477"),
    ("metrics-port-zero", _set(["metrics"], {"listen": "127.0.0.1:0"}), r"^metrics\.listen: .*port 0 is not in 1\.\.65535"),
    ("metrics-port-number", _set(["metrics"], {"listen": 9477}), r"^metrics\.listen: Input should be a valid string"),
    ("metrics-empty", _set(["metrics"], {}), r"^metrics\.listen: required but missing$"),
    ("metrics-unknown-key", _set(["metrics"], {"listen": "127.0.0.1:9477", "path": "/m"}),
     r"^metrics\.path: unknown key$"),
]


@pytest.mark.parametrize("change, expected", [pytest.param(c, e, id=i) for i, c, e in CASES])
def test_error_names_the_field(change, expected):
    message = error_of(with_changes(change))
    assert re.search(expected, message, re.MULTILINE), message


@pytest.mark.parametrize("doc", [None, [], "node: x", 42], ids=["empty", "list", "string", "number"])
def test_top_level_must_be_a_mapping(doc):
    assert error_of(doc).startswith("config: the top level must be a mapping")


def test_every_problem_is_reported_one_per_line():
    doc = with_changes(lambda d: (d["node"].update(vtep="x", vxlan_port=0), d["networks"][0].update(vni=0)))
    lines = error_of(doc).splitlines()
    assert [line.split(":")[0] for line in lines] == ["node.vtep", "node.vxlan_port", "networks[0].vni"]


@pytest.mark.parametrize("listen, address, port", [
    ("127.0.0.1:9477", "127.0.0.1", 9477), ("[::1]:9477", "::1", 9477), ("0.0.0.0:80", "0.0.0.0", 80),
    ("[::]:9477", "::", 9477), ("[fd00:0::1]:9477", "fd00::1", 9477),
])
def test_metrics_listen(listen, address, port):
    metrics = parse_config(with_changes(lambda d: d.update(metrics={"listen": listen}))).metrics
    assert (metrics.address, metrics.port) == (address, port)
    assert metrics.listen == (f"[{address}]:{port}" if ":" in address else f"{address}:{port}")


def test_metrics_are_off_unless_configured():
    assert parse_config(MINIMAL).metrics is None


def test_ipv6_underlay():
    cfg = parse_config({"node": {"vtep": "fd00::1"}, "networks": [
        {"name": "blue", "vni": 100, "device": "blue0", "vteps": ["fd00::2"],
         "fdb": [{"mac": "02:00:00:00:00:02", "vtep": "fd00::3"}]}]})
    assert cfg.node.family == 6


def test_own_vtep_is_recognised_in_any_spelling():
    doc = {"node": {"vtep": "fd00::1"}, "networks": [
        {"name": "blue", "vni": 100, "device": "blue0", "vteps": ["fd00:0:0::0001"]}]}
    assert "is this node's own VTEP" in error_of(doc)


# -- files ------------------------------------------------------------------------------------


def test_load_config_from_a_file(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text("node:\n  vtep: 10.0.0.1\nnetworks:\n  - {name: blue, vni: 100, device: blue0}\n")
    assert load_config(path) == parse_config(MINIMAL)
    assert load_config(str(path)) == parse_config(MINIMAL)


def test_bad_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text("node: [vtep: 10.0.0.1\n")
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: not valid YAML"):
        load_config(path)


def test_empty_file_is_a_config_error(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text("")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(path)


@pytest.mark.parametrize("name", ["missing.yaml", "."], ids=["missing", "directory"])
def test_unreadable_file_is_a_config_error(tmp_path, name):
    path = tmp_path / name
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(path))}: cannot read: "):
        load_config(path)


def test_yaml_errors_name_the_field_too(tmp_path):
    path = tmp_path / "node.yaml"
    path.write_text("node:\n  vtep: 10.0.0.1\nnetworks:\n  - {name: blue, vni: 20000000, device: blue0}\n")
    with pytest.raises(ConfigError, match=r"^networks\[0\]\.vni: "):
        load_config(path)


SHIPPED = sorted((ROOT / "configs").rglob("*.yaml"))


def test_there_are_shipped_example_configs():
    assert SHIPPED


@pytest.mark.parametrize("path", SHIPPED, ids=[str(p.relative_to(ROOT / "configs")) for p in SHIPPED])
def test_shipped_example_config_loads(path):
    cfg = load_config(path)
    assert cfg.networks or cfg.routing is not None


def test_readme_configuration_example_loads():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Configuration", 1)[1]
    example = re.search(r"```yaml\n(.*?)```", section, re.DOTALL).group(1)
    cfg = parse_config(yaml.safe_load(example))
    assert cfg.networks[0].fdb[0].mac == "02:00:00:00:02:01"


def test_readme_bgp_and_routing_examples_load():
    readme = (ROOT / "README.md").read_text()
    bgp = yaml.safe_load(re.search(r"```yaml\n(.*?)```", readme.split("## BGP EVPN", 1)[1], re.DOTALL).group(1))
    routing = yaml.safe_load(re.search(r"```yaml\n(.*?)```", readme.split("## Routed subnets", 1)[1],
                                       re.DOTALL).group(1))
    cfg = parse_config({"node": {"vtep": "10.0.0.1"}, **bgp, **routing})
    assert cfg.bgp.neighbors[0].families == ("evpn",)
    assert str(cfg.routing.subnet6) == "fd00:244:0:1::/64" and cfg.routing.route_target == "65000:1"


def test_on_stop_is_remove_unless_keep_is_asked_for_and_nothing_else_is_taken():
    assert parse_config(MINIMAL).node.on_stop == "remove"
    assert parse_config(with_changes(lambda d: d["node"].update(on_stop="keep"))).node.on_stop == "keep"
    assert "node.on_stop" in error_of(with_changes(lambda d: d["node"].update(on_stop="leave")))


# -- node.vtep_interface ----------------------------------------------------------------------


def on_interface(**node) -> dict:
    doc = copy.deepcopy(MINIMAL)
    del doc["node"]["vtep"]
    doc["node"].update(node)
    return doc


def finder(addresses: dict):
    """A fake vtep_of: (interface, family) -> address, LookupError otherwise."""
    def vtep_of(name: str, family: int):
        if (name, family) not in addresses:
            raise LookupError(f"{name} has no global IPv{family} address")
        return addresses[name, family]
    return vtep_of


def test_the_vtep_is_the_first_global_address_of_its_interface_in_its_family():
    find = finder({("bond0.100", 4): "10.0.0.9", ("bond0.100", 6): "fd00::9"})
    cfg = parse_config(on_interface(vtep_interface="bond0.100"), find)
    assert (str(cfg.node.vtep), cfg.node.vtep_interface, cfg.node.vtep_family) == ("10.0.0.9", "bond0.100", "ipv4")
    cfg = parse_config(on_interface(vtep_interface="bond0.100", vtep_family="ipv6"), find)
    assert str(cfg.node.vtep) == "fd00::9"


@pytest.mark.parametrize("node, vtep_of, message", [
    ({"vtep_interface": "eth0", "vtep": "10.0.0.1"}, None, "node.vtep_interface: give node.vtep or node.vtep_interface, not both"),
    ({"vtep_interface": "eth9"}, finder({}), "node.vtep_interface: eth9 has no global IPv4 address"),
    ({"vtep_interface": "eth0"}, None, "node.vtep_interface: eth0: its address can only be found on the host"),
    ({"vtep_interface": "a/b"}, finder({}), "node.vtep_interface: "),
    ({"vtep_interface": "eth0", "vtep_family": "ipx"}, finder({}), "node.vtep_family: "),
    ({"vtep_interface": "eth0", "vtep_family": "ipv6"}, finder({("eth0", 6): "10.0.0.1"}), "node.vtep_family: eth0's address 10.0.0.1 is not ipv6"),
    ({}, None, "node.vtep: required"),
])
def test_a_vtep_interface_that_cannot_give_an_address_is_an_error_naming_it(node, vtep_of, message):
    with pytest.raises(ConfigError) as err:
        parse_config(on_interface(**node), vtep_of)
    assert str(err.value).startswith(message), str(err.value)
def test_a_bad_value_is_shown_cut_short_however_big_it_is():
    message = error_of(with_changes(lambda d: d["node"].update(vtep=[["10.0.0.1"] * 1000] * 1000)))
    assert message.startswith("node.vtep: ") and message.endswith("...)") and len(message) < 300, message
