"""tshark reads tests/vectors/services/packets.json as the vectors say, every checksum good.

tests/unit/test_services_vectors.py checks that overlayd's rewrites, resets
and ICMP errors are exactly these bytes, so together they show that what
the service path sends is what Wireshark reads, checksums verified.
"""

from __future__ import annotations

import copy
import ipaddress

import pytest

from tests.support import require_programs
from tests.vectors import check_tshark_services as check

pytestmark = pytest.mark.peer


@pytest.fixture(autouse=True)
def _tshark():
    require_programs("tshark")


def test_tshark_agrees_with_the_vectors():
    assert {name: p for name, p in check.check().items() if p} == {}


def _changed(value):
    """A different value of the same kind, to prove the comparison would notice."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if value in check.CHECKSUM_STATUS:
        return "bad" if value != "bad" else "good"
    if value.startswith("0x"):
        return hex(int(value, 16) + 1)
    address = ipaddress.ip_address(value)
    return str(type(address)(int(address) ^ 1))


def test_the_check_notices_every_wrong_field():
    vectors = check.vectors()
    readings = check.dissect([bytes.fromhex(v["hex"]) for v in vectors])
    for vector, reading in zip(vectors, readings):
        assert check.compare(vector, reading) == []
        for layer, values in vector["fields"].items():
            for key, value in values.items():
                wrong = copy.deepcopy(vector)
                wrong["fields"][layer][key] = _changed(value)
                assert check.compare(wrong, reading), f"{vector['name']}: {layer}.{key} not checked"


def _corrupted(packet: bytes) -> bytes:
    """One bit flipped where some checksum covers it: the last byte, or the TTL (IPv4) of a
    datagram without a UDP checksum."""
    data = bytearray(packet)
    ihl = (data[0] & 0x0F) * 4
    if data[0] >> 4 == 4 and data[9] == 17 and data[ihl + 6 : ihl + 8] == b"\0\0":
        data[8] ^= 1
    else:
        data[-1] ^= 1
    return bytes(data)


def test_the_check_notices_a_bad_checksum():
    vectors = check.vectors()
    readings = check.dissect([_corrupted(bytes.fromhex(v["hex"])) for v in vectors])
    for vector, reading in zip(vectors, readings):
        problems = check.compare(vector, reading)
        assert any("Bad checksum" in p for p in problems), f"{vector['name']}: {problems}"


def test_version_is_recorded():
    doc = check.json.loads(check.SERVICES_FILE.read_text())
    assert doc["checked_with"].startswith("tshark ")
    assert doc["encap"] == "ip"
