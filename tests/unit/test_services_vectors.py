"""overlayd.wire's service path against the golden vectors in tests/vectors/services/packets.json.

tshark read every one of those packets, every checksum verified
(tests/vectors/check_tshark_services.py, recorded in `checked_with`); here
overlayd must produce exactly those bytes: a `rewritten_from` vector is
what rewrite_dst / rewrite_src make of the packet it names, an `answers`
vector is what reject() sends back to the one it names; and parse_flow
must read each TCP/UDP packet as tshark did.
"""

from __future__ import annotations

import ipaddress
import json

import pytest

from overlayd.wire.ip import parse_flow
from overlayd.wire.nat import rewrite_dst, rewrite_src
from overlayd.wire.reject import reject
from tests.vectors import VECTORS_DIR

DOC = json.loads((VECTORS_DIR / "services" / "packets.json").read_text())
VECTORS = {v["name"]: v for v in DOC["vectors"]}


def raw(name: str) -> bytes:
    return bytes.fromhex(VECTORS[name]["hex"])


def by_key(key: str) -> list:
    return [pytest.param(v, id=v["name"]) for v in DOC["vectors"] if key in v]


def test_the_file_was_checked_against_tshark():
    assert str(DOC["checked_with"]).startswith("tshark "), "run tests/vectors/check_tshark_services.py --record"
    assert len(VECTORS) == len(DOC["vectors"]), "vector names must be unique"
    assert DOC["encap"] == "ip"
    for vector in DOC["vectors"]:
        for key in ("rewritten_from", "answers"):
            assert vector.get(key, vector["name"]) in VECTORS


@pytest.mark.parametrize("vector", by_key("rewritten_from"))
@pytest.mark.parametrize("buffer", (bytearray, lambda b: memoryview(bytearray(b))))
def test_rewrite(vector, buffer):
    packet = buffer(raw(vector["rewritten_from"]))
    flow = parse_flow(packet)
    how = vector["rewrite"]
    if "dst" in how:
        rewrite_dst(packet, flow, ipaddress.ip_address(how["dst"]).packed, how["dport"])
    if "src" in how:
        rewrite_src(packet, flow, ipaddress.ip_address(how["src"]).packed, how["sport"])
    assert bytes(packet) == raw(vector["name"])


@pytest.mark.parametrize("vector", by_key("rewritten_from"))
def test_the_reverse_rewrite_gives_the_original(vector):
    packet = bytearray(raw(vector["name"]))
    before = parse_flow(raw(vector["rewritten_from"]))
    if "dst" in vector["rewrite"]:
        rewrite_dst(packet, parse_flow(packet), before.dst, before.dport)
    else:
        rewrite_src(packet, parse_flow(packet), before.src, before.sport)
    assert bytes(packet) == raw(vector["rewritten_from"])


@pytest.mark.parametrize("vector", by_key("answers"))
def test_reject(vector):
    offending = raw(vector["answers"])
    assert reject(offending, parse_flow(offending)) == raw(vector["name"])


@pytest.mark.parametrize("vector", [pytest.param(v, id=v["name"]) for v in DOC["vectors"]
                                    if "tcp" in v["fields"] or "udp" in v["fields"]])
def test_parse_flow_reads_what_tshark_read(vector):
    fields = vector["fields"]
    flow = parse_flow(raw(vector["name"]))
    ip = fields.get("ipv4") or fields["ipv6"]
    l4 = fields.get("tcp") or fields["udp"]
    assert flow.version == (4 if "ipv4" in fields else 6)
    assert flow.proto == ip.get("proto", ip.get("next_header"))
    assert (str(ipaddress.ip_address(flow.src)), str(ipaddress.ip_address(flow.dst))) == (ip["src"], ip["dst"])
    assert (flow.sport, flow.dport) == (l4["srcport"], l4["dstport"])
    if "tcp" in fields:
        assert (flow.seq, flow.ack, flow.tcp_flags, flow.payload_len) == (
            int(l4["seq"], 16), int(l4["ack"], 16), int(l4["flags"], 16), l4["len"])
    else:
        assert flow.payload_len == l4["length"] - 8
    assert flow.ip_len == ip.get("length", ip.get("payload_length", 0) + 40)
