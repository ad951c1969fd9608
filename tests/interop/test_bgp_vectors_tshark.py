"""tshark's BGP dissector reads the UPDATE vectors as the vectors say
(tests/vectors/check_bgp_tshark.py).

tests/unit/test_bgp_update.py checks overlayd's codec against the same
vectors, so together they show overlayd and Wireshark agree on them: routes,
RDs, labels as VNIs, unicast prefixes, next hops, attributes, extended
communities and End-of-RIB.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support import require_programs
from tests.vectors import check_bgp_tshark

pytestmark = pytest.mark.peer

FILES = check_bgp_tshark.vector_files()


@pytest.fixture(scope="module")
def checked() -> dict[str, dict[str, check_bgp_tshark.Checked]]:
    require_programs("tshark")
    return {path.name: check_bgp_tshark.check_file(path) for path in FILES}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_tshark_agrees_with_the_bgp_update_vectors(checked, path):
    problems = {name: c.problems for name, c in checked[path.name].items() if c.problems}
    assert problems == {}


def test_labels_were_seen_as_vnis(checked):
    """Every announcement with a label was also dissected with the VXLAN encapsulation first."""
    probed = [name for file in checked.values() for name, c in file.items() if c.probe is not None]
    assert len(probed) >= 15


MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
HEX = re.compile(r"^[0-9a-f]+$")


def _mutation(value: Any) -> Any:
    """A different value of the same kind, to prove the comparison would notice."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if value == "":  # an empty attribute value
        return "00"
    if value in ("set", "sequence"):  # an AS_PATH segment type
        return "sequence" if value == "set" else "set"
    if value in ("ipv4-unicast", "ipv6-unicast"):  # a unicast route's or an End-of-RIB's family
        return "ipv6-unicast" if value == "ipv4-unicast" else "ipv4-unicast"
    if value.startswith("0x"):
        return hex(int(value, 16) + 1)
    if MAC.match(value):
        return ("0a" if not value.startswith("0a") else "0b") + value[2:]
    if "/" in value:
        net = ipaddress.ip_network(value)
        return str(net.supernet() if net.prefixlen else next(net.subnets()))  # /0 has no supernet
    if re.match(r"^[^:]+:\d+$", value):  # an RD or a route target
        admin, number = value.rsplit(":", 1)
        return f"{admin}:{int(number) + 1}"
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        return str(type(address)(int(address) ^ 1))
    if HEX.match(value):
        return ("1" if value[0] != "1" else "2") + value[1:]
    raise ValueError(value)


def _leaves(node: Any, path: tuple = ()) -> Iterator[tuple]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _leaves(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _leaves(value, path + (i,))
    elif node is not None and path[0] != "errors":
        yield path


def _set(node: Any, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_the_check_notices_every_wrong_field(checked, path):
    for vector in json.loads(path.read_text())["vectors"]:
        c = checked[path.name][vector["name"]]
        expect = vector["expect"]
        if "reset" in expect:
            continue
        compared = ("announced", "withdrawn")
        if check_bgp_tshark.well_formed(vector):
            compared += ("attributes", "end_of_rib", "end_of_rib_family", "nlri_next_hop")
        for leaf in _leaves(expect):
            if leaf[0] not in compared and leaf != ("attributes", "next_hop"):
                continue
            wrong = copy.deepcopy(vector)
            _set(wrong["expect"], leaf, _mutation(_get(expect, leaf)))
            assert check_bgp_tshark.compare(wrong, c.packet, c.probe), f"{vector['name']}: {leaf} not checked"
        for key in ("announced", "withdrawn"):
            if expect[key]:
                wrong = copy.deepcopy(vector)
                wrong["expect"][key].pop()
                assert check_bgp_tshark.compare(wrong, c.packet, c.probe), f"{vector['name']}: {key} count not checked"


def _get(node: Any, path: tuple) -> Any:
    for key in path:
        node = node[key]
    return node


def test_version_is_recorded():
    require_programs("tshark")
    version = check_bgp_tshark.check_tshark.tshark_version()
    for path in FILES:
        assert json.loads(path.read_text())["checked_with"].startswith("tshark "), version
