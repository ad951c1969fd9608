"""tshark's BGP dissector reads tests/vectors/bgp_messages/messages.json as the vectors say.

tests/unit/test_bgp_messages.py checks overlayd's codecs against the same
vectors, so together they show overlayd and Wireshark agree on those bytes.
"""

from __future__ import annotations

import copy
import json

import pytest

from tests.support import require_programs
from tests.vectors import check_tshark_bgp_messages as check

pytestmark = pytest.mark.peer


@pytest.fixture(autouse=True)
def _tshark():
    require_programs("tshark")


def _vectors() -> list[dict]:
    return [v for v in json.loads(check.BGP_FILE.read_text())["vectors"] if not v.get("tshark_skip")]


def test_tshark_agrees_with_the_vectors():
    assert {name: p for name, p in check.check().items() if p} == {}


def _mutations(decoded: dict):
    """Copies of `decoded` with one checked value changed."""
    for key, value in decoded.items():
        if key in ("version", "extended_params", "data"):
            continue
        if key == "params":
            for i, param in enumerate(value):
                for j, cap in enumerate(param):
                    for ckey, cvalue in cap.items():
                        wrong = copy.deepcopy(decoded)
                        wrong["params"][i][j][ckey] = _changed(cvalue)
                        yield f"params[{i}][{j}].{ckey}", wrong
                wrong = copy.deepcopy(decoded)
                wrong["params"][i] = param + [{"code": 2}]
                yield f"params[{i}] one more capability", wrong
            continue
        if key == "data_capabilities":
            continue
        wrong = dict(decoded)
        wrong[key] = _changed(value)
        yield key, wrong


def _changed(value):
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, list):
        return value + [[1, 1, False]]
    if value == "":
        return "00"
    if all(c in "0123456789abcdef" for c in value) and len(value) % 2 == 0:
        return "ff" + value[2:]
    if value.count(".") == 3:
        return "10.9.9.9"
    return value + "x"


def test_the_check_notices_every_wrong_field():
    vectors = _vectors()
    layers = check.dissect([bytes.fromhex(v["hex"]) for v in vectors])
    for vector, seen in zip(vectors, layers):
        assert check.compare(vector, seen) == []
        for what, wrong in _mutations(vector["decoded"]):
            if what == "type":
                continue  # a different type compares other fields; covered by the length and fields
            assert check.compare(dict(vector, decoded=wrong), seen), f"{vector['name']}: {what} not checked"


def test_version_is_recorded():
    assert json.loads(check.BGP_FILE.read_text())["checked_with"] == check.check_tshark.tshark_version()
