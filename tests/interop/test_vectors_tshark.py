"""tshark's dissectors read the golden vectors as the vectors say (tests/vectors/check_tshark.py).

The unit tests check overlayd's codecs against the same vectors, so together
they show overlayd and Wireshark agree on every byte of them.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import re

import pytest

from tests.support import require_programs
from tests.vectors import check_tshark

pytestmark = pytest.mark.peer

FILES = check_tshark.vector_files()


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_tshark_agrees_with_the_vectors(path):
    require_programs("tshark")
    problems = {name: p for name, p in check_tshark.check_file(path).items() if p}
    assert problems == {}


MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def _mutation(value):
    """A different value of the same kind, to prove the comparison would notice."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if value is None:
        return 7
    if value.startswith("0x"):
        return hex(int(value, 16) + 1)
    if MAC.match(value):
        return ("0a" if not value.startswith("0a") else "0b") + value[2:]
    address = ipaddress.ip_address(value)
    return str(type(address)(int(address) ^ 1))  # an IP address, last bit flipped


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_the_check_notices_every_wrong_field(path):
    require_programs("tshark")
    doc = json.loads(path.read_text())
    encap = doc["encap"]
    vectors = doc["vectors"]
    seen = check_tshark.dissect([check_tshark.ENCAPS[encap](bytes.fromhex(v["hex"])) for v in vectors])
    for vector, fields in zip(vectors, seen):
        assert check_tshark.compare(vector, fields, encap) == []
        for layer, values in vector["fields"].items():
            for key, value in values.items():
                wrong = copy.deepcopy(vector)
                wrong["fields"][layer][key] = _mutation(value)
                assert check_tshark.compare(wrong, fields, encap), f"{vector['name']}: {layer}.{key} not checked"
        wrong = dict(vector, malformed=not vector.get("malformed", False))
        assert check_tshark.compare(wrong, fields, encap)


def test_version_is_recorded():
    require_programs("tshark")
    version = check_tshark.tshark_version()
    assert version.startswith("tshark ")
    for path in FILES:
        assert json.loads(path.read_text())["checked_with"].startswith("tshark ")
