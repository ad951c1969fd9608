#!/usr/bin/env python3
"""Check services/packets.json against tshark's IPv4, IPv6, TCP, UDP, ICMP and ICMPv6 dissectors.

Each vector's `hex` is a bare IP packet, as a TUN device carries it; it
goes behind an Ethernet header (ethertype from the version nibble) into a
classic pcap written by check_tshark.write_pcap, one packet per vector.
tshark runs with every checksum check on (`-o ip.check_checksum:TRUE
-o tcp.check_checksum:TRUE -o udp.check_checksum:TRUE`; it always checks
ICMP and ICMPv6 checksums) and, for each packet:

- reports no expert info of the checksum group anywhere — a bad checksum
  in the packet or in the packet an ICMP error quotes — and nothing
  malformed;
- reads every field of the vector's `fields` as the vector says. Layers
  `ipv4`, `ipv6`, `tcp`, `udp`, `icmp`, `icmpv6` are the packet's own;
  `quoted_ipv4`, `quoted_ipv6`, `quoted_tcp`, `quoted_udp` are the
  offending packet an ICMP error quotes (tshark nests those inside its
  ICMP layer). `checksum_status` is tshark's verdict: good, bad,
  unverified (it could not: a quoted packet cut short), not present (a
  UDP checksum of 0).

What overlayd does with these packets (`rewritten_from`, `answers`) is the
unit tests' business (tests/unit/test_services_vectors.py); like
check_tshark.py this does not import overlayd.

    python tests/vectors/check_tshark_services.py            # check, a line per vector
    python tests/vectors/check_tshark_services.py --record   # check; if all agree, record
                                                             # "checked_with" in the file
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import check_tshark  # noqa: E402  (a sibling script, not a package import)

SERVICES_FILE = check_tshark.VECTORS_DIR / "services" / "packets.json"
TSHARK_OPTIONS = (
    "-o", "ip.check_checksum:TRUE", "-o", "tcp.check_checksum:TRUE", "-o", "udp.check_checksum:TRUE",
)
EXPERT_GROUP_CHECKSUM = str(0x01000000)  # PI_CHECKSUM
QUOTED_LAYERS = ("ip", "ipv6", "tcp", "udp")  # what tshark nests inside an ICMP error
ICMP_LAYERS = ("icmp", "icmpv6")

CHECKSUM_STATUS = {"bad": "0", "good": "1", "unverified": "2", "not present": "3", "illegal": "4"}

# layer in the vector (quoted_* alike) -> key -> (tshark field, kind)
FIELD_MAP: dict[str, dict[str, tuple[str, str]]] = {
    "ipv4": {
        "src": ("ip.src", "ip"), "dst": ("ip.dst", "ip"), "proto": ("ip.proto", "int"),
        "length": ("ip.len", "int"), "header_length": ("ip.hdr_len", "int"), "ttl": ("ip.ttl", "int"),
        "dsfield": ("ip.dsfield", "int"), "checksum": ("ip.checksum", "int"),
        "checksum_status": ("ip.checksum.status", "status"),
    },
    "ipv6": {
        "src": ("ipv6.src", "ip"), "dst": ("ipv6.dst", "ip"), "next_header": ("ipv6.nxt", "int"),
        "payload_length": ("ipv6.plen", "int"), "hop_limit": ("ipv6.hlim", "int"),
    },
    "tcp": {
        "srcport": ("tcp.srcport", "int"), "dstport": ("tcp.dstport", "int"), "seq": ("tcp.seq_raw", "int"),
        "ack": ("tcp.ack_raw", "int"), "flags": ("tcp.flags", "int"), "len": ("tcp.len", "int"),
        "checksum": ("tcp.checksum", "int"), "checksum_status": ("tcp.checksum.status", "status"),
    },
    "udp": {
        "srcport": ("udp.srcport", "int"), "dstport": ("udp.dstport", "int"), "length": ("udp.length", "int"),
        "checksum": ("udp.checksum", "int"), "checksum_status": ("udp.checksum.status", "status"),
    },
    "icmp": {
        "type": ("icmp.type", "int"), "code": ("icmp.code", "int"), "checksum": ("icmp.checksum", "int"),
        "checksum_status": ("icmp.checksum.status", "status"),
    },
    "icmpv6": {
        "type": ("icmpv6.type", "int"), "code": ("icmpv6.code", "int"), "checksum": ("icmpv6.checksum", "int"),
        "checksum_status": ("icmpv6.checksum.status", "status"),
    },
}


def in_ethernet(packet: bytes) -> bytes:
    """A bare IP packet behind an Ethernet header whose ethertype its version says."""
    ethertype = "86dd" if packet and packet[0] >> 4 == 6 else "0800"
    return bytes.fromhex("02000000aa02 02000000aa01" + ethertype) + packet


class Reading:
    """tshark's fields of one packet: its own, the quoted packet's, all of them, and its expert infos."""

    def __init__(self, tree: dict[str, Any]):
        self.own: check_tshark.Seen = {}
        self.quoted: check_tshark.Seen = {}
        self.every: check_tshark.Seen = {}
        check_tshark._flatten(tree, self.every)
        self.experts: list[dict[str, Any]] = list(_experts(tree))
        for name, layer in tree.items():
            if name in ICMP_LAYERS and isinstance(layer, dict):
                check_tshark._flatten({k: v for k, v in layer.items() if k in QUOTED_LAYERS}, self.quoted)
                layer = {k: v for k, v in layer.items() if k not in QUOTED_LAYERS}
            check_tshark._flatten({name: layer}, self.own)


def _experts(node: Any):
    """Every expert info (a `_ws.expert` object) anywhere in tshark's tree."""
    for key, value in node.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                if key == "_ws.expert":
                    yield item
                yield from _experts(item)


def dissect(packets: list[bytes]) -> list[Reading]:
    return [Reading(tree) for tree in check_tshark.layers([in_ethernet(p) for p in packets], *TSHARK_OPTIONS)]


def _same(kind: str, value: str, wanted: Any) -> bool:
    if kind == "status":
        return CHECKSUM_STATUS.get(str(wanted)) == value
    return check_tshark._same(kind, value, wanted)


def compare(vector: dict[str, Any], reading: Reading) -> list[str]:
    """Where tshark's reading of one vector differs from the vector, and any checksum it finds bad."""
    problems: list[str] = []
    for layer, fields in vector["fields"].items():
        quoted = layer.startswith("quoted_")
        seen = reading.quoted if quoted else reading.own
        for key, wanted in fields.items():
            name, kind = FIELD_MAP[layer.removeprefix("quoted_")][key]
            label = f"{'quoted ' if quoted else ''}{name}"
            values = seen.get(name)
            if not values:
                problems.append(f"{label}: tshark has no such field, vector says {wanted!r}")
            elif len(values) > 1:
                problems.append(f"{label}: tshark reports it {len(values)} times: {values}")
            elif not _same(kind, values[0], wanted):
                problems.append(f"{label}: tshark says {values[0]!r}, vector says {wanted!r}")
    for expert in reading.experts:
        if expert.get("_ws.expert.group") == EXPERT_GROUP_CHECKSUM:
            problems.append(f"tshark: {expert.get('_ws.expert.message')}")
    if "_ws.malformed" in reading.every:
        problems.append("tshark finds the packet malformed")
    return problems


def vectors() -> list[dict[str, Any]]:
    return json.loads(SERVICES_FILE.read_text())["vectors"]


def check() -> dict[str, list[str]]:
    """Vector name -> problems (empty when tshark agrees)."""
    all_vectors = vectors()
    readings = dissect([bytes.fromhex(v["hex"]) for v in all_vectors])
    return {v["name"]: compare(v, r) for v, r in zip(all_vectors, readings)}


def main(argv: list[str]) -> int:
    version = check_tshark.tshark_version()
    print(f"checking with {version}")
    results = ((SERVICES_FILE.name, name, problems, "") for name, problems in check().items())
    return check_tshark.report(results, [SERVICES_FILE], argv, version)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
