#!/usr/bin/env python3
"""Check bgp_messages/messages.json against tshark's BGP dissector.

Each vector's `hex` is one whole BGP message; it goes into a TCP segment
from 10.0.0.1:<50000 + n> to 10.0.0.2:179 (one TCP stream per vector, so
tshark sees no retransmissions), in an Ethernet/IPv4 frame of a classic
pcap written by check_tshark.write_pcap. tshark runs with
`-o tcp.check_checksum:FALSE -T json`; what it reports is compared with
what the vector's `decoded` says, field by field (the expected tshark
values are derived here from `decoded`, not from overlayd). Not checked:
the vectors under `errors` (malformed on purpose) and those with a
`tshark_skip` reason (a format this tshark does not dissect).

Like check_tshark.py it does not import overlayd.

    python tests/vectors/check_tshark_bgp_messages.py            # check, a line per vector
    python tests/vectors/check_tshark_bgp_messages.py --record   # check; if all agree, record
                                                                 # "checked_with" in the file
"""

from __future__ import annotations

import ipaddress
import json
import struct
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import check_tshark  # noqa: E402  (a sibling script, not a package import)

BGP_FILE = check_tshark.VECTORS_DIR / "bgp_messages" / "messages.json"
BGP_PORT = 179


def dissect(messages: list[bytes]) -> list[dict[str, Any]]:
    """tshark's `bgp` layer for each message, as nested JSON."""
    with tempfile.TemporaryDirectory(prefix="overlayd-bgp-vectors-") as tmp:
        pcap = Path(tmp) / "bgp.pcap"
        check_tshark.write_pcap(pcap, [check_tshark.in_tcp179(m, 50000 + i) for i, m in enumerate(messages)])
        run = subprocess.run(
            ["tshark", "-n", "-r", str(pcap), "-o", "tcp.check_checksum:FALSE", "-T", "json", "-x",
             "--no-duplicate-keys"],
            capture_output=True, text=True, timeout=120,
        )
    if run.returncode != 0:
        raise RuntimeError(f"tshark failed ({run.returncode}): {run.stderr.strip()}")
    packets = json.loads(run.stdout)
    if len(packets) != len(messages):
        raise RuntimeError(f"tshark decoded {len(packets)} packets out of {len(messages)}")
    return [p["_source"]["layers"] for p in packets]


def _items(node: Any) -> list:
    """tshark's JSON has a dict for one child and a list for several."""
    if node is None:
        return []
    return node if isinstance(node, list) else [node]


def _raws(node: Any) -> list[str]:
    """The hex of each `<field>_raw` entry (tshark -x: [hex, offset, length, ...], one or a list)."""
    if not node:
        return []
    return [node[0]] if isinstance(node[0], str) else [n[0] for n in node]


def _fields(node: Any, out: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
    out = {} if out is None else out
    check_tshark._flatten(node, out) if isinstance(node, dict) else None
    return out


def _capability_problems(i: int, seen: dict[str, Any], want: dict[str, Any]) -> list[str]:
    try:
        return _capability_differences(i, seen, want)
    except KeyError as missing:
        return [f"capability {i}: the vector has no {missing} for capability code {want.get('code')}"]


def _capability_differences(i: int, seen: dict[str, Any], want: dict[str, Any]) -> list[str]:
    where = f"capability {i}"
    got = _fields(seen)
    problems = []

    def expect(field: str, value: Any) -> None:
        values = got.get(field)
        if not values:
            problems.append(f"{where}: tshark has no {field}, vector says {value!r}")
        elif str(values[0]).lower() != str(value).lower():
            problems.append(f"{where}: {field} is {values[0]!r}, vector says {value!r}")

    code = want["code"]
    expect("bgp.cap.type", code)
    if code == 1:
        expect("bgp.cap.mp.afi", want["afi"])
        expect("bgp.cap.mp.safi", want["safi"])
    elif code == 2:
        expect("bgp.cap.length", 0)
    elif code == 65:
        expect("bgp.cap.4as", want["asn"])
    elif code == 64:
        expect("bgp.cap.gr.timers.restart_time", want["restart_time_s"])
        expect("bgp.cap.gr.timers.restart_flag", int(want["restarting"]))
        afis, safis, pfs = got.get("bgp.cap.gr.afi", []), got.get("bgp.cap.gr.safi", []), got.get("bgp.cap.gr.flag.pfs", [])
        wanted = [(str(a), str(s), str(int(f))) for a, s, f in want["families"]]
        if list(zip(afis, safis, pfs)) != wanted or len(afis) != len(wanted):
            problems.append(f"{where}: graceful restart families {list(zip(afis, safis, pfs))}, vector says {wanted}")
    else:
        expect("bgp.cap.length", len(bytes.fromhex(want.get("value", ""))))
    return problems


def compare(vector: dict[str, Any], layers: dict[str, Any]) -> list[str]:
    """Where tshark's reading of one vector differs from its `decoded`."""
    problems: list[str] = []
    if "_ws.malformed" in _fields(layers):
        problems.append("tshark finds the packet malformed")
    bgp = layers.get("bgp")
    if not isinstance(bgp, dict):
        return problems + ["tshark did not dissect the segment as one BGP message"]
    got = _fields(bgp)
    want = vector["decoded"]

    def expect(field: str, value: Any) -> None:
        values = got.get(field)
        if not values:
            problems.append(f"tshark has no {field}, vector says {value!r}")
        elif str(values[0]) != str(value):
            problems.append(f"{field} is {values[0]!r}, vector says {value!r}")

    expect("bgp.type", want["type"])
    expect("bgp.length", len(bytes.fromhex(vector["hex"])))
    if want["type"] == 1:
        expect("bgp.open.version", want["version"])
        expect("bgp.open.myas", want["my_as"])
        expect("bgp.open.holdtime", want["hold_time_s"])
        expect("bgp.open.identifier", want["router_id"])
        # the real AS: the 4-octet AS capability's when there is one (RFC 6793), else My AS
        four = [v for p in _items(bgp.get("bgp.open.opt", {}).get("bgp.open.opt.param"))
                for c in _items(p.get("bgp.cap")) for v in _fields(c).get("bgp.cap.4as", [])]
        real_as = four[0] if four else got.get("bgp.open.myas", [None])[0]
        if str(real_as) != str(want["asn"]):
            problems.append(f"tshark's AS is {real_as!r}, vector says {want['asn']!r}")
        params = _items(bgp.get("bgp.open.opt", {}).get("bgp.open.opt.param"))
        if len(params) != len(want["params"]):
            problems.append(f"tshark sees {len(params)} optional parameters, vector says {len(want['params'])}")
        n = 0
        for param, caps in zip(params, want["params"]):
            if str(param.get("bgp.open.opt.param.type")) != "2":
                problems.append(f"optional parameter type {param.get('bgp.open.opt.param.type')!r}, not 2")
            seen_caps = _items(param.get("bgp.cap"))
            raw_caps = _raws(param.get("bgp.cap_raw"))
            if len(seen_caps) != len(caps):
                problems.append(f"tshark sees {len(seen_caps)} capabilities in a parameter, vector says {len(caps)}")
            for seen, raw, cap in zip(seen_caps, raw_caps, caps):
                problems += _capability_problems(n, seen, cap)
                if "value" in cap:  # one overlayd keeps uninterpreted: compare every octet
                    value = bytes.fromhex(cap["value"])
                    whole = (bytes((cap["code"], len(value))) + value).hex()
                    if raw != whole:
                        problems.append(f"capability {n}: tshark's octets are {raw}, vector says {whole}")
                n += 1
    elif want["type"] == 3:
        expect("bgp.notify.major_error", want["code"])
        minor = [v for k, v in got.items() if k.startswith("bgp.notify.minor_error") and not k.endswith("_raw")]
        if not minor or str(minor[0][0]) != str(want["subcode"]):
            problems.append(f"minor error {minor!r}, vector says {want['subcode']!r}")
        if "data_capabilities" in want:  # RFC 5492 5: the data of OPEN error 7 holds capabilities
            seen_caps = _items(bgp.get("bgp.cap"))
            if len(seen_caps) != len(want["data_capabilities"]):
                problems.append(f"tshark sees {len(seen_caps)} capabilities in the data")
            for i, (seen, cap) in enumerate(zip(seen_caps, want["data_capabilities"])):
                problems += _capability_problems(i, seen, cap)
        elif "communication" in want:
            expect("bgp.notify.communication", want["communication"])
        elif want["data"]:
            expect("bgp.notify.minor_data", ":".join(want["data"][i : i + 2] for i in range(0, len(want["data"]), 2)))
    elif want["type"] == 5:
        expect("bgp.route_refresh.afi", want["afi"])
        expect("bgp.route_refresh.subtype", want["subtype"])
        expect("bgp.route_refresh.safi", want["safi"])
    return problems


def check() -> dict[str, list[str]]:
    """Vector name -> problems (empty when tshark agrees), for the vectors without `tshark_skip`."""
    vectors = [v for v in json.loads(BGP_FILE.read_text())["vectors"] if not v.get("tshark_skip")]
    layers = dissect([bytes.fromhex(v["hex"]) for v in vectors])
    return {v["name"]: compare(v, l) for v, l in zip(vectors, layers)}


def main(argv: list[str]) -> int:
    version = check_tshark.tshark_version()
    print(f"checking with {version}")
    results = ((BGP_FILE.name, name, problems, "") for name, problems in check().items())
    return check_tshark.report(results, [BGP_FILE], argv, version)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
