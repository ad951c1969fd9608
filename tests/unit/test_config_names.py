"""Issue 13, items 11 and 17: names and paths from the config never reach the system unchecked.

- Every device name in the config (networks[].device, routing.device, routing.cni_bridge)
  is refused by `overlayd --check` when the kernel would refuse it (net/core/dev.c,
  dev_valid_name(): empty, over 15 bytes, "." and "..", '/', ':', white space; and "all",
  "default") or when overlayd's narrower rule does (A-Z a-z 0-9 _ . - only, no leading '-').
  tests/netns/test_ifnames.py asks the running kernel about the same names.
- A neighbor that is this node's own address (node.vtep, bgp.listen) is an error naming it.
- The files overlayd writes or reads (env_file, cni_conflist, services_file, status_socket)
  are absolute paths without '.'/'..' components or control characters.
- The one place a device name becomes a path, /proc/sys/net/ipv{4,6}/conf/<name>/..., refuses
  '../x' before opening anything; subnet.env is written through an unpredictable O_EXCL
  temporary file, so a symlink planted next to it is never followed.
"""

from __future__ import annotations

import builtins
import copy
import os
from pathlib import Path

import pytest

from overlayd import cli
from overlayd.config import ConfigError, parse_config
from overlayd.config.fields import ifname_problem
from overlayd.io import netlink
from overlayd.io.subnet_env import write_atomically

MINIMAL = {"node": {"vtep": "10.0.0.1"}, "networks": [{"name": "blue", "vni": 100, "device": "blue0"}]}
ROUTED = {
    "node": {"vtep": "10.0.0.1"},
    "bgp": {"asn": 65000, "neighbors": [{"address": "10.0.0.2", "asn": 65000}]},
    "routing": {"vni": 1, "network": "10.244.0.0/16", "subnet": "10.244.1.0/24"},
}

# What dev_valid_name() refuses, and what the kernel refuses besides (its sysctl directories).
KERNEL_REFUSES = ["", ".", "..", "a" * 16, "a/b", "../x", "..%2f", "a:b", "a b", "a\tb", "eth0\n",
                  "\n", "all", "default", "/", "x/..", "é" * 8]
# Fine for the kernel, refused by overlayd: '%' is a name template, '@' is ip's link@peer,
# ',' '=' and non-ASCII confuse tools, a leading '-' reads as an option.
OVERLAYD_REFUSES = ["eth%d", "x@y", "a,b", "br=1", "é", "-x", "a\x00b"]
ACCEPTED = ["blue0", "a" * 15, "br-1.100", "x_y", "vx100", "cni0", "a.b", "A-Z_0.9"]

DEVICE_FIELDS = {
    "networks[0].device": (MINIMAL, lambda doc, v: doc["networks"][0].__setitem__("device", v)),
    "routing.device": (ROUTED, lambda doc, v: doc["routing"].__setitem__("device", v)),
    "routing.cni_bridge": (ROUTED, lambda doc, v: doc["routing"].__setitem__("cni_bridge", v)),
}


def with_value(field: str, value) -> dict:
    base, setter = DEVICE_FIELDS[field]
    doc = copy.deepcopy(base)
    setter(doc, value)
    return doc


def error_of(doc) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(doc)
    return str(err.value)


@pytest.mark.parametrize("field", list(DEVICE_FIELDS))
@pytest.mark.parametrize("name", KERNEL_REFUSES + OVERLAYD_REFUSES, ids=repr)
def test_a_name_the_kernel_or_overlayd_refuses_is_a_config_error_naming_its_field(field, name):
    message = error_of(with_value(field, name))
    assert message.startswith(f"{field}: "), message
    assert "not a valid interface name" in message


@pytest.mark.parametrize("field", list(DEVICE_FIELDS))
@pytest.mark.parametrize("name", ACCEPTED)
def test_good_names_pass(field, name):
    parse_config(with_value(field, name))
    assert ifname_problem(name) is None


def test_check_refuses_every_bad_name_and_prints_the_figure(tmp_path, capsys):
    """`overlayd --check` on a file, as an operator runs it: exit 2 for every bad name."""
    import yaml

    refused = 0
    for name in KERNEL_REFUSES + OVERLAYD_REFUSES:
        if "\x00" in name:
            continue  # YAML cannot hold a NUL; the parse_config test above covers it
        path = tmp_path / "node.yaml"
        path.write_text(yaml.safe_dump(with_value("routing.cni_bridge", name)))
        code = cli.main(["-c", str(path), "--check"])
        err = capsys.readouterr().err
        assert code == cli.EXIT_CONFIG, (name, err)
        assert "routing.cni_bridge: " in err
        refused += 1
    path.write_text(yaml.safe_dump(with_value("routing.cni_bridge", "cni0")))
    assert cli.main(["-c", str(path), "--check"]) == 0
    capsys.readouterr()
    print(f"\noverlayd --check refused {refused} of {refused} bad device names "
          f"({len(KERNEL_REFUSES)} the kernel refuses, {len(OVERLAYD_REFUSES) - 1} by overlayd's narrower rule)")


def test_the_kernel_backend_vxlan_name_is_always_valid():
    net = parse_config({**MINIMAL, "networks": [{"name": "b", "vni": 16777215, "device": "b0"}]}).networks[0]
    assert ifname_problem(net.vxlan_device) is None


# -- a neighbor that is this node ------------------------------------------------------------


def bgp_doc(**bgp) -> dict:
    doc = copy.deepcopy(MINIMAL)
    doc["bgp"] = {"asn": 65000, **bgp}
    return doc


def test_a_neighbor_at_our_own_vtep_is_an_error():
    doc = bgp_doc(neighbors=[{"address": "10.0.0.2", "asn": 65000}, {"address": "10.0.0.1", "asn": 65000}])
    assert error_of(doc) == "bgp.neighbors[1].address: 10.0.0.1 is this node's own address (node.vtep)"


def test_a_neighbor_at_our_listen_address_is_an_error():
    doc = bgp_doc(listen="10.0.0.9", neighbors=[{"address": "10.0.0.9", "asn": 65001}])
    assert error_of(doc) == "bgp.neighbors[0].address: 10.0.0.9 is this node's own address (bgp.listen)"


def test_an_ipv6_neighbor_spelled_differently_is_still_us():
    doc = {"node": {"vtep": "fd00::1"}, "networks": MINIMAL["networks"],
           "bgp": {"asn": 65000, "router_id": "10.255.0.1",
                   "neighbors": [{"address": "fd00:0:0:0::0001", "asn": 65000}]}}
    assert error_of(doc) == "bgp.neighbors[0].address: fd00::1 is this node's own address (node.vtep)"


# -- paths from the config ------------------------------------------------------------------------


@pytest.mark.parametrize("key, where", [
    ("status_socket", "node"), ("env_file", "routing"), ("cni_conflist", "routing"), ("services_file", None)])
@pytest.mark.parametrize("value, why", [
    ("subnet.env", "is not an absolute path"),
    ("../run/x", "is not an absolute path"),
    ("/run/overlayd/../../etc/shadow", "'..' component"),
    ("/run/./x", "'.' or '..' component"),
    ("/run/x\nFLANNEL_SUBNET=1", "control character"),
    ("/run/x\x00y", "control character"),
    ("/run/overlayd/", "names a directory"),
])
def test_a_path_must_be_absolute_and_plain(key, where, value, why):
    doc = copy.deepcopy(ROUTED)
    if where is None:
        doc[key] = value
    else:
        doc[where][key] = value
    message = error_of(doc)
    assert message.startswith(f"{where + '.' if where else ''}{key}: "), message
    assert why in message


def test_the_status_socket_path_fits_a_sockaddr_un():
    doc = copy.deepcopy(MINIMAL)
    doc["node"]["status_socket"] = "/run/" + "x" * 103
    assert "a Unix socket path takes at most 107" in error_of(doc)
    doc["node"]["status_socket"] = "/run/" + "x" * 102
    parse_config(doc)


# -- the device name that becomes a path -------------------------------------------------------


@pytest.mark.parametrize("name", ["../x", "..", ".", "all", "default", "a/b", "", "x" * 16])
def test_announce_changes_refuses_a_name_that_is_not_an_interface_before_opening_anything(name, monkeypatch):
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **kw: opened.append(path) or real_open(
        os.devnull, *a, **kw))
    with pytest.raises(ValueError, match="not a valid interface name"):
        netlink.announce_changes(name)
    assert opened == []


def test_announce_changes_writes_only_under_the_devices_own_sysctl_directory(monkeypatch):
    opened = []
    real_open = builtins.open
    monkeypatch.setattr(builtins, "open", lambda path, *a, **kw: opened.append(path) or real_open(
        os.devnull, *a, **kw))
    netlink.announce_changes("blue0")
    assert opened == ["/proc/sys/net/ipv4/conf/blue0/arp_notify", "/proc/sys/net/ipv6/conf/blue0/ndisc_notify"]


# -- the files overlayd writes -------------------------------------------------------------------


def test_write_atomically_follows_no_planted_symlink(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    env = tmp_path / "subnet.env"
    # The name the old code used for its temporary file, and the file itself, both symlinks.
    (tmp_path / f".subnet.env.{os.getpid()}.tmp").symlink_to(victim)
    env.symlink_to(victim)
    write_atomically(env, "FLANNEL_MTU=1450\n")
    assert victim.read_text() == "precious\n"
    assert not env.is_symlink() and env.read_text() == "FLANNEL_MTU=1450\n"
    assert oct(env.stat().st_mode & 0o777) == oct(0o644)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp") and not p.is_symlink()]
    assert leftovers == []


def test_write_atomically_leaves_no_temporary_file_when_it_fails(tmp_path, monkeypatch):
    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError):
        write_atomically(tmp_path / "subnet.env", "x\n")
    assert list(Path(tmp_path).iterdir()) == []
