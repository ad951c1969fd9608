#!/usr/bin/env python3
"""Check the golden vectors in this directory against tshark's dissectors.

Each `*.json` file here holds vectors: `hex` (the bytes; spaces between
fields are ignored), `fields` (what the bytes mean, by layer) and optional
`malformed` (true when a dissector must find the bytes cut short). This
script turns each file into a classic pcap, one packet per vector, runs
`tshark -T json` over it and compares what tshark decodes with `fields`.
Files whose `encap` is `udp:4789` hold UDP payloads; they are wrapped in
Ethernet/IPv4/UDP headers with destination port 4789, so tshark dissects
them as VXLAN.

It deliberately does not import overlayd: the unit tests check overlayd's
codecs against the vectors, this checks the vectors against a real peer.

    python tests/vectors/check_tshark.py            # check, print a line per vector
    python tests/vectors/check_tshark.py --record   # check; if all agree, record
                                                    # "checked_with": "tshark <version>"
"""

from __future__ import annotations

import ipaddress
import json
import re
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

VECTORS_DIR = Path(__file__).resolve().parent
VXLAN_PORT = 4789

# -- building the capture ------------------------------------------------------

_PCAP_HEADER = struct.Struct("<IHHiIII")  # magic, v2.4, thiszone, sigfigs, snaplen, linktype
_PCAP_RECORD = struct.Struct("<IIII")  # ts_sec, ts_usec, incl_len, orig_len
LINKTYPE_ETHERNET = 1


def write_pcap(path: Path, frames: Iterable[bytes]) -> None:
    """A classic (libpcap 2.4, microsecond) capture of Ethernet frames, one second apart."""
    with open(path, "wb") as f:
        f.write(_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, LINKTYPE_ETHERNET))
        for i, frame in enumerate(frames):
            f.write(_PCAP_RECORD.pack(i, 0, len(frame), len(frame)))
            f.write(frame)



def in_tcp179(payload: bytes, src_port: int) -> bytes:
    """`payload` as one TCP segment 10.0.0.1:src_port -> 10.0.0.2:179 (PSH/ACK, TCP checksum 0:
    read with `-o tcp.check_checksum:FALSE`), in an Ethernet frame."""
    tcp = struct.pack("!HHIIBBHHH", src_port, 179, 1, 1, 5 << 4, 0x18, 65535, 0, 0) + payload
    ip = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 0, 0x4000, 64, 6, 0,
            ipaddress.IPv4Address("10.0.0.1").packed, ipaddress.IPv4Address("10.0.0.2").packed,
        )
    )
    ip[10:12] = struct.pack("!H", _checksum(bytes(ip)))
    return bytes.fromhex("02000000aa02 02000000aa01 0800") + bytes(ip) + tcp

def _checksum(data: bytes) -> int:
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def in_udp4789(payload: bytes) -> bytes:
    """`payload` as the UDP payload of 10.0.0.1:49152 -> 10.0.0.2:4789 in an Ethernet frame."""
    udp = struct.pack("!HHHH", 49152, VXLAN_PORT, 8 + len(payload), 0) + payload  # no UDP checksum
    ip = bytearray(
        struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0,
            ipaddress.IPv4Address("10.0.0.1").packed, ipaddress.IPv4Address("10.0.0.2").packed,
        )
    )
    ip[10:12] = struct.pack("!H", _checksum(bytes(ip)))
    eth = bytes.fromhex("02000000aa02 02000000aa01 0800")
    return eth + bytes(ip) + udp


ENCAPS: dict[str, Callable[[bytes], bytes]] = {
    "ethernet": lambda frame: frame,
    "udp:4789": in_udp4789,
}

# -- running tshark ------------------------------------------------------------


def tshark_version() -> str:
    """`tshark 4.0.17`, from the first line of `tshark --version`."""
    out = subprocess.run(
        ["tshark", "--version"], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    match = re.search(r"TShark \(Wireshark\) (\S+)", out)
    return f"tshark {match.group(1) if match else out.splitlines()[0]}"


Seen = dict[str, list[str]]
"""Every field tshark reported for one packet, in order of appearance (outer before inner)."""


def _flatten(node: Any, out: Seen) -> None:
    for key, value in node.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, dict):
                out.setdefault(key, [])  # a layer or subtree: record that it is there
                _flatten(item, out)
            else:
                out.setdefault(key, []).append(item)


def layers(frames: list[bytes], *options: str) -> list[dict[str, Any]]:
    """Run tshark (with extra command line `options`) over `frames`; its layers of each frame, as nested JSON."""
    with tempfile.TemporaryDirectory(prefix="overlayd-vectors-") as tmp:
        pcap = Path(tmp) / "vectors.pcap"
        write_pcap(pcap, frames)
        run = subprocess.run(
            ["tshark", "-n", "-r", str(pcap), *options, "-T", "json", "--no-duplicate-keys"],
            capture_output=True, text=True, timeout=120,
        )
    if run.returncode != 0:
        raise RuntimeError(f"tshark failed ({run.returncode}): {run.stderr.strip()}")
    packets = json.loads(run.stdout)
    if len(packets) != len(frames):
        raise RuntimeError(f"tshark decoded {len(packets)} packets out of {len(frames)}")
    return [packet["_source"]["layers"] for packet in packets]


def dissect(frames: list[bytes]) -> list[Seen]:
    """Run tshark over `frames`; return, per frame, every field it decoded."""
    seen = []
    for tree in layers(frames):
        fields: Seen = {}
        _flatten(tree, fields)
        seen.append(fields)
    return seen


# -- comparing -----------------------------------------------------------------


def _int(text: str) -> int:
    return int(text, 0)


def _same(kind: str, tshark_value: str, expected: Any) -> bool:
    if kind == "int":
        expected = _int(expected) if isinstance(expected, str) else expected
        return _int(tshark_value) == expected
    if kind == "bool":
        return (tshark_value == "1") == bool(expected)
    if kind == "mac":
        return tshark_value.lower() == str(expected).lower()
    if kind == "ip":
        return ipaddress.ip_address(tshark_value) == ipaddress.ip_address(expected)
    raise ValueError(kind)


# (layer in the vector, key) -> (tshark fields to try in order, kind)
FIELD_MAP: dict[tuple[str, str], tuple[tuple[str, ...], str]] = {
    ("ethernet", "dst"): (("eth.dst",), "mac"),
    ("ethernet", "src"): (("eth.src",), "mac"),
    ("ethernet", "vlan"): (("vlan.id",), "int"),
    ("arp", "op"): (("arp.opcode",), "int"),
    ("arp", "sender_mac"): (("arp.src.hw_mac",), "mac"),
    ("arp", "sender_ip"): (("arp.src.proto_ipv4",), "ip"),
    ("arp", "target_mac"): (("arp.dst.hw_mac",), "mac"),
    ("arp", "target_ip"): (("arp.dst.proto_ipv4",), "ip"),
    ("arp", "htype"): (("arp.hw.type",), "int"),
    ("arp", "ptype"): (("arp.proto.type",), "int"),
    ("arp", "hlen"): (("arp.hw.size",), "int"),
    ("arp", "plen"): (("arp.proto.size",), "int"),
    ("vxlan", "flags"): (("vxlan.flags",), "int"),
    ("vxlan", "i_flag"): (("vxlan.flag_i",), "bool"),
    # tshark 4.0 shows the 16 bits after the flags as the GBP policy ID even when G is clear
    ("vxlan", "reserved_16"): (("vxlan.reserved_16", "vxlan.gbp"), "int"),
    ("vxlan", "vni"): (("vxlan.vni",), "int"),
    ("vxlan", "reserved8"): (("vxlan.reserved8",), "int"),
    ("ipv4", "src"): (("ip.src",), "ip"),
    ("ipv4", "dst"): (("ip.dst",), "ip"),
    ("ipv4", "proto"): (("ip.proto",), "int"),
    ("ipv6", "src"): (("ipv6.src",), "ip"),
    ("ipv6", "dst"): (("ipv6.dst",), "ip"),
    ("ipv6", "hop_limit"): (("ipv6.hlim",), "int"),
    ("ipv6", "next_header"): (("ipv6.nxt",), "int"),
    ("ipv6", "payload_length"): (("ipv6.plen",), "int"),
    ("icmpv6", "type"): (("icmpv6.type",), "int"),
    ("icmpv6", "code"): (("icmpv6.code",), "int"),
    ("icmpv6", "checksum"): (("icmpv6.checksum",), "int"),
    ("icmpv6", "checksum_good"): (("icmpv6.checksum.status",), "bool"),  # 1 good, 0 bad
    ("icmpv6", "target"): (("icmpv6.nd.ns.target_address", "icmpv6.nd.na.target_address"), "ip"),
    ("icmpv6", "router"): (("icmpv6.nd.na.flag.r",), "bool"),
    ("icmpv6", "solicited"): (("icmpv6.nd.na.flag.s",), "bool"),
    ("icmpv6", "override"): (("icmpv6.nd.na.flag.o",), "bool"),
    ("icmpv6", "source_lladdr"): (("icmpv6.opt.src_linkaddr",), "mac"),
    ("icmpv6", "target_lladdr"): (("icmpv6.opt.target_linkaddr",), "mac"),
}


def _last(seen: Seen, names: tuple[str, ...]) -> tuple[str, str | None]:
    """The innermost value of the first of `names` tshark reported."""
    for name in names:
        if seen.get(name):
            return name, seen[name][-1]
    return names[0], None


def compare(vector: dict[str, Any], seen: Seen, encap: str) -> list[str]:
    """Where tshark's reading of one vector differs from the vector's `fields`."""
    problems: list[str] = []

    def expect(name: str, value: str | None, kind: str, wanted: Any) -> None:
        if value is None:
            problems.append(f"{name}: tshark has no such field, vector says {wanted!r}")
        elif not _same(kind, value, wanted):
            problems.append(f"{name}: tshark says {value!r}, vector says {wanted!r}")

    for layer, fields in vector["fields"].items():
        for key, wanted in fields.items():
            if layer == "ethernet" and key == "ethertype":
                # after a single 802.1Q tag the ethertype is the tag's; the outer one is 0x8100
                if fields.get("vlan") is not None:
                    expect(*_last(seen, ("eth.type",)), "int", 0x8100)
                    expect(*_last(seen, ("vlan.etype",)), "int", wanted)
                else:
                    expect(*_last(seen, ("eth.type",)), "int", wanted)
                continue
            if layer == "ethernet" and key == "vlan" and wanted is None:
                continue
            if layer == "arp" and key == "gratuitous":
                _, value = _last(seen, ("arp.isgratuitous",))
                if (value == "1") != wanted:
                    problems.append(f"arp.isgratuitous: tshark says {value!r}, vector says {wanted!r}")
                continue
            names, kind = FIELD_MAP[(layer, key)]
            expect(*_last(seen, names), kind, wanted)
    malformed = "_ws.malformed" in seen
    if malformed != vector.get("malformed", False):
        problems.append(f"tshark {'finds' if malformed else 'does not find'} the packet malformed")
    if encap == "udp:4789" and "vxlan" not in seen:
        problems.append("tshark did not dissect the UDP payload as VXLAN")
    return problems


def vector_files() -> list[Path]:
    return sorted(VECTORS_DIR.glob("*.json"))


def check_file(path: Path) -> dict[str, list[str]]:
    """Vector name -> problems (empty when tshark agrees), for one file."""
    doc = json.loads(path.read_text())
    encap = doc["encap"]
    vectors = doc["vectors"]
    frames = [ENCAPS[encap](bytes.fromhex(v["hex"])) for v in vectors]
    seen = dissect(frames)
    return {v["name"]: compare(v, s, encap) for v, s in zip(vectors, seen)}


def check_all() -> list[str]:
    """Every disagreement in every file, as `file: vector: problem` lines."""
    out = []
    for path in vector_files():
        for name, problems in check_file(path).items():
            out.extend(f"{path.name}: {name}: {p}" for p in problems)
    return out


def record(path: Path, checked_with: str) -> None:
    doc = json.loads(path.read_text())
    doc["checked_with"] = checked_with
    path.write_text(json.dumps(doc, indent=2) + "\n")


def report(results, files: list[Path], argv: list[str], version: str, record=record) -> int:
    """Print each (file name, vector name, problems, note) result; with --record, and only if
    every vector agreed, write `checked_with: version` into `files` with `record(path, version)`.
    The exit status."""
    failed = False
    for file_name, name, problems, note in results:
        print(f"{'FAIL' if problems else 'ok  '} {file_name}: {name}{note}")
        for p in problems:
            print(f"       {p}")
        failed |= bool(problems)
    if failed:
        print("tshark disagrees with the vectors above; nothing recorded")
        return 1
    if "--record" in argv:
        for path in files:
            record(path, version)
        print(f'recorded "checked_with": "{version}" in {len(files)} files')
    return 0


def main(argv: list[str]) -> int:
    version = tshark_version()
    print(f"checking with {version}")
    results = (
        (path.name, name, problems, "")
        for path in vector_files()
        for name, problems in check_file(path).items()
    )
    return report(results, vector_files(), argv, version)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
