"""VLAN trunks in the config (config/trunk.py): one network per VLAN, and every refusal naming its field."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from overlayd.config import ConfigError, load_config, parse_config
from overlayd.config.reload import reload_plan

MAC_A, MAC_B = "02:00:00:00:00:0a", "02:00:00:00:00:0b"


def trunk(**changes: Any) -> dict[str, Any]:
    net: dict[str, Any] = {"name": "blue", "device": "trunk0", "vlans": {10: 1010, 20: 1020}, "vteps": ["10.0.0.2"]}
    net.update(changes)
    return {k: v for k, v in net.items() if v is not None}


def config(*networks: dict[str, Any], **top: Any):
    return parse_config({"node": {"name": "n1", "vtep": "10.0.0.1"}, "networks": list(networks), **top})


def refused(*networks: dict[str, Any]) -> str:
    with pytest.raises(ConfigError) as err:
        config(*networks)
    return str(err.value)


def test_a_trunk_is_one_network_per_vlan_on_one_device():
    cfg = config(trunk(native_vlan=10, address="192.168.10.1/24", mtu=1400, max_local_macs=99,
                       fdb=[{"mac": MAC_A, "vtep": "10.0.0.2", "vlan": 20}]),
                 {"name": "red", "vni": 100, "device": "red0"})
    ten, twenty, red = cfg.networks
    assert (ten.name, ten.vni, ten.vlan, ten.trunk, ten.native) == ("blue.10", 1010, 10, "blue", True)
    assert (twenty.name, twenty.vni, twenty.vlan, twenty.trunk, twenty.native) == ("blue.20", 1020, 20, "blue", False)
    assert ten.device == twenty.device == "trunk0"
    assert str(ten.address) == "192.168.10.1/24" and twenty.address is None  # the native VLAN's
    assert not ten.fdb and [e.mac for e in twenty.fdb] == [MAC_A]  # the entry's VLAN's
    for member in (ten, twenty):  # what the trunk says once, each VLAN gets
        assert [str(v) for v in member.vteps] == ["10.0.0.2"]
        assert member.mtu == 1400 and member.max_local_macs == 99 and member.route_target is None
    assert (red.vlan, red.trunk, red.native) == (None, None, False)


def test_vlan_ids_and_vnis_may_be_strings_as_json_writes_them():
    [ten] = config(trunk(vlans={"10": "1010"})).networks
    assert (ten.vlan, ten.vni) == (10, 1010)


@pytest.mark.parametrize(("changes", "message"), [
    ({"vlans": {4095: 1}}, "networks[0].vlans: VLAN ID 4095 is not in 1-4094"),
    ({"vlans": {0: 1}}, "networks[0].vlans: VLAN ID 0 is not in 1-4094"),
    ({"vlans": {10: 0}}, "networks[0].vlans: VNI 0 of VLAN 10 is not in 1-16777215"),
    ({"vlans": {10: 1 << 24}}, "networks[0].vlans: VNI 16777216 of VLAN 10 is not in 1-16777215"),
    ({"vlans": {10: 1010, 20: 1010}}, "networks[0].vlans: VNI 1010 is given twice (VLANs 10 and 20)"),
    ({"vlans": {}}, "networks[0].vlans: a mapping of VLAN IDs to VNIs"),
    ({"vlans": [10, 20]}, "networks[0].vlans: a mapping of VLAN IDs to VNIs"),
    ({"vni": 5}, "networks[0].vni: give vni or vlans, not both"),
    ({"route_target": "65000:1"}, "networks[0].route_target: a VLAN trunk derives one route target per VNI"),
    ({"native_vlan": 30}, "networks[0].native_vlan: 30 is not one of vlans (10, 20)"),
    ({"address": "192.168.10.1/24"}, "networks[0].address: a trunk's address is on its native VLAN"),
    ({"fdb": [{"mac": MAC_A, "vtep": "10.0.0.2"}]}, "networks[0].fdb[0].vlan: required on a VLAN trunk"),
    ({"fdb": [{"mac": MAC_A, "vtep": "10.0.0.2", "vlan": 30}]}, "networks[0].fdb[0].vlan: 30 is not one of vlans"),
    ({"backend": "kernel"}, "networks[0].backend: a VLAN trunk (vlans) needs the userspace backend"),
    ({"vlan": 10}, "networks[0].vlan: unknown key"),
    ({"trunk": "x"}, "networks[0].trunk: unknown key"),
    ({"mtu": 20}, "networks[0].mtu: Input should be greater than or equal to 68"),
])
def test_a_bad_trunk_is_refused_naming_the_field(changes, message):
    assert message in refused(trunk(**changes))


def test_trunk_keys_on_a_network_that_is_no_trunk_are_refused():
    red = {"name": "red", "vni": 100, "device": "red0"}
    assert "networks[0].native_vlan: only with vlans" in refused({**red, "native_vlan": 10})
    assert "networks[0].fdb[0].vlan: only on a VLAN trunk" in refused(
        {**red, "fdb": [{"mac": MAC_A, "vtep": "10.0.0.2", "vlan": 10}]})


def test_collisions_name_the_networks_as_written():
    red = {"name": "red", "vni": 1020, "device": "red0"}
    # the trunk expands to networks[0] and [1]; red, written as networks[1], is networks[2] inside
    assert refused(trunk(), red) == "networks[1].vni: 1020 is already used by networks[0]"
    assert refused(trunk(), {**red, "vni": 7, "device": "trunk0"}) == \
        "networks[1].device: trunk0 is already used by networks[0]"
    assert refused({**red, "name": "blue", "vni": 7}, trunk()) == "networks[1].name: blue is already used by networks[0]"


def test_a_vlan_id_given_twice_in_yaml_is_refused(tmp_path):
    path = tmp_path / "trunk.yaml"
    path.write_text("node: {vtep: 10.0.0.1}\nnetworks:\n"
                    "  - {name: blue, device: trunk0, vlans: {10: 1010, 10: 1020}}\n")
    with pytest.raises(ConfigError, match="found the key 10 twice"):
        load_config(path)
    path.write_text("node: {vtep: 10.0.0.1}\nnetworks:\n  - {name: blue, device: trunk0, vlans: {10: 1010}}\n")
    assert [n.name for n in load_config(path).networks] == ["blue.10"]


def test_a_reload_may_change_a_vlans_static_entries_but_not_the_vlans():
    old = config(trunk())
    new = config(trunk(vteps=["10.0.0.3"]))
    plan = reload_plan(old, new)
    assert not plan.restart_needed and [n.name for _, n in plan.networks_changed] == ["blue.10", "blue.20"]
    plan = reload_plan(old, config(trunk(vlans={10: 1010, 20: 1020, 30: 1030})))
    assert plan.restart_needed == ["networks[blue].vlans (a VLAN trunk's VLANs: set at start only)"]


def test_the_readme_example_loads():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    example = re.search(r"```yaml\n(.*?)```", readme.split("### VLAN trunks", 1)[1], re.DOTALL).group(1)
    ten, twenty = parse_config({"node": {"vtep": "10.0.0.1"}, **yaml.safe_load(example)}).networks
    assert (ten.name, ten.vni, ten.native) == ("blue.10", 1010, True)
    assert (twenty.name, twenty.vni, [e.mac for e in twenty.fdb]) == ("blue.20", 1020, ["02:00:00:00:02:01"])
