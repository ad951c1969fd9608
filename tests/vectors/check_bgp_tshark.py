#!/usr/bin/env python3
"""Check the BGP UPDATE vectors in bgp_update/ against tshark's BGP dissector.

Each vector's `hex` is a whole BGP message, read as by a session that
negotiated the vector's `families` (routes of other families are left out). This script puts each one in its
own TCP stream to port 179 (Ethernet/IPv4/TCP, one packet per vector, in a
classic pcap written by check_tshark.write_pcap), runs `tshark -T pdml` over
them and reads back, in the vectors' own terms (tests/unit/bgp_describe.py):
route type, RD, ESI, Ethernet tag, MAC, IP, originator, prefix, gateway,
labels, unicast prefixes (NLRI and withdrawn routes fields, MP_REACH_NLRI /
MP_UNREACH_NLRI for AFI 1 / 2), next hop (NEXT_HOP's for the NLRI field),
End-of-RIB and its family, ORIGIN, AS_PATH, MED, LOCAL_PREF, ORIGINATOR_ID,
CLUSTER_LIST, each extended community (route target, encapsulation, MAC
mobility, router's MAC, or its raw octets), PMSI_TUNNEL and unrecognised
attributes. It compares that with each vector's `expect`:

- a well-formed vector (no reset, errors or treat-as-withdraw): everything,
  and tshark must report nothing malformed and no warning or error;
- a vector with errors but no reset: its routes and next hop only (the
  attributes are where it is wrong);
- a reset vector: nothing; what tshark makes of it is printed for reference.

Labels. tshark 4.0 shows a 3-octet label field as a VNI only when it has
already seen the VXLAN encapsulation community in the same UPDATE; otherwise
it shows an MPLS label (the top 20 bits). The raw 24 bits it reports are
compared either way (RFC 8365 5.1.3: the field is the VNI). In addition each
announcement is dissected a second time with EXTENDED_COMMUNITIES moved in
front of MP_REACH_NLRI, where tshark must show every label as the vector's VNI.

Known tshark 4.0 limitation: a PMSI ingress replication endpoint is always
shown as IPv4; for an IPv6 tunnel identifier the 16 octets tshark located
are compared instead.

Like check_tshark.py it does not import overlayd: the unit tests check
overlayd against the vectors, this checks the vectors against tshark.

    python tests/vectors/check_bgp_tshark.py            # check, a line per vector
    python tests/vectors/check_bgp_tshark.py --record   # check; if all agree, record
                                                        # "checked_with" in each file
"""

from __future__ import annotations

import ipaddress
import json
import re
import struct
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import check_tshark  # noqa: E402  (a sibling script, not a package import)

BGP_VECTORS_DIR = check_tshark.VECTORS_DIR / "bgp_update"
BGP_PORT = 179
SEVERITY = {0x200000: "chat", 0x400000: "note", 0x600000: "warning", 0x800000: "error"}
SEGMENTS = {1: "set", 2: "sequence", 3: "confed_sequence", 4: "confed_set"}
INTERPRETED = {1, 2, 3, 4, 5, 9, 10, 14, 15, 16, 17, 22}  # attributes with their own `expect` keys

# -- building the capture ------------------------------------------------------


def in_tcp179(message: bytes, stream: int) -> bytes:
    """`message` as the payload of one TCP segment 10.0.0.1:(40000+stream) -> 10.0.0.2:179."""
    return check_tshark.in_tcp179(message, 40000 + stream)

def _attributes(message: bytes) -> tuple[bytes, list[bytes], bytes] | None:
    """(what precedes the attributes, each attribute, the NLRI), or None if it does not split."""
    body = message[19:]
    if len(body) < 4:
        return None
    withdrawn = struct.unpack_from("!H", body)[0]
    start = 4 + withdrawn
    if start > len(body):
        return None
    total = struct.unpack_from("!H", body, start - 2)[0]
    attrs, offset = [], start
    while offset < start + total:
        header = 4 if body[offset] & 0x10 else 3
        if offset + header > len(body):
            return None
        length = int.from_bytes(body[offset + 2 : offset + header], "big")
        attrs.append(body[offset : offset + header + length])
        offset += header + length
    if offset != start + total:
        return None
    return body[:start], attrs, body[offset:]


def ext_communities_first(message: bytes) -> bytes | None:
    """The same UPDATE with EXTENDED_COMMUNITIES moved in front of MP_REACH_NLRI, or None if it is not behind it."""
    parts = _attributes(message)
    if parts is None:
        return None
    head, attrs, nlri = parts
    types = [a[1] for a in attrs]
    if 14 not in types or 16 not in types or types.index(16) < types.index(14):
        return None
    ext = attrs[types.index(16)]
    body = head + ext + b"".join(a for a in attrs if a is not ext) + nlri
    return message[:16] + struct.pack("!HB", 19 + len(body), 2) + body


# -- running tshark ------------------------------------------------------------


@dataclass
class Packet:
    frame: bytes
    bgp: ET.Element | None  # the <proto name="bgp"> element
    malformed: bool
    experts: list[tuple[str, str]] = field(default_factory=list)  # (severity, message)


def dissect(frames: list[bytes]) -> list[Packet]:
    with tempfile.TemporaryDirectory(prefix="overlayd-bgp-vectors-") as tmp:
        pcap = Path(tmp) / "bgp.pcap"
        check_tshark.write_pcap(pcap, frames)
        run = subprocess.run(
            ["tshark", "-n", "-r", str(pcap), "-T", "pdml",
             "-o", "tcp.check_checksum:FALSE", "-o", "tcp.desegment_tcp_streams:FALSE"],
            capture_output=True, text=True, timeout=120,
        )
    if run.returncode != 0:
        raise RuntimeError(f"tshark failed ({run.returncode}): {run.stderr.strip()}")
    packets = []
    for frame, pkt in zip(frames, ET.fromstring(run.stdout).iter("packet")):
        experts = []
        for e in pkt.iter("field"):
            if e.get("name") == "_ws.expert":
                message = next((f.get("show") for f in e.iter("field") if f.get("name") == "_ws.expert.message"), "")
                level = next((f.get("show") for f in e.iter("field") if f.get("name") == "_ws.expert.severity"), "0")
                experts.append((SEVERITY.get(int(level), level), message))
        packets.append(Packet(
            frame,
            next((p for p in pkt.iter("proto") if p.get("name") == "bgp"), None),
            any(p.get("name") == "_ws.malformed" for p in pkt.iter("proto")),
            experts,
        ))
    if len(packets) != len(frames):
        raise RuntimeError(f"tshark decoded {len(packets)} packets out of {len(frames)}")
    return packets


# -- what tshark read, in the vectors' terms ------------------------------------


def _all(el: ET.Element, *names: str) -> list[ET.Element]:
    return [f for f in el.iter("field") if f.get("name") in names]


def _first(el: ET.Element, *names: str) -> ET.Element | None:
    found = _all(el, *names)
    return found[0] if found else None


def _show(el: ET.Element, *names: str) -> str | None:
    f = _first(el, *names)
    return None if f is None else f.get("show")


def _int(el: ET.Element, *names: str) -> int | None:
    text = _show(el, *names)
    return None if text is None else int(text, 0)


def _octets(packet: Packet, el: ET.Element, skip: int = 0) -> bytes:
    """The frame octets tshark attributes to `el`."""
    pos, size = int(el.get("pos")), int(el.get("size"))
    return packet.frame[pos + skip : pos + size]


def _labels(nlri: ET.Element) -> list[tuple[str, int]]:
    """Each label field in order: ("vni", value) when tshark shows a VNI, else ("raw", its 24 bits)."""
    out = []
    names = ("bgp.evpn.nlri.vni", "bgp.evpn.nlri.mpls_ls1", "bgp.evpn.nlri.mpls_ls2",
             "bgp.update.path_attribute.mpls_label_value")  # the last: type 5's label, as a label stack
    for f in _all(nlri, *names):
        if f.get("name") == "bgp.evpn.nlri.vni":
            out.append(("vni", int(f.get("show"))))
        else:
            out.append(("raw", int(f.get("unmaskedvalue") or f.get("value"), 16)))
    return out


def _route(nlri: ET.Element) -> dict[str, Any]:
    rtype = _int(nlri, "bgp.evpn.nlri.rt")
    rd = _first(nlri, "bgp.evpn.nlri.rd")
    d: dict[str, Any] = {"type": rtype}
    if rd is not None:
        match = re.search(r"\(([^)]*)\)\s*$", rd.get("showname", ""))
        d["rd"] = match.group(1) if match else rd.get("value")
        d["rd_type"] = int(rd.get("value")[:4], 16)
    addresses = [f.get("show") for f in _all(nlri, "bgp.evpn.nlri.ip.addr", "bgp.evpn.nlri.ipv6.addr")]
    labels = [value for _, value in _labels(nlri)]
    if rtype == 2:
        d["mac"] = _show(nlri, "bgp.evpn.nlri.mac_addr")
        if addresses:
            d["ip"] = addresses[0]
        if labels:
            d["vni"] = labels[0]
        if len(labels) > 1:
            d["vni2"] = labels[1]
    elif rtype == 3:
        d["originator"] = addresses[0] if addresses else None
    elif rtype == 5:
        d["prefix"] = str(ipaddress.ip_network(f"{addresses[0]}/{_int(nlri, 'bgp.evpn.nlri.prefix_len')}", strict=False))
        if labels:
            d["vni"] = labels[0]
        gateway = _show(nlri, "bgp.evpn.nlri.ipv4.gtw_addr", "bgp.evpn.nlri.ipv6.gtw_addr")
        if gateway is not None and ipaddress.ip_address(gateway) != ipaddress.ip_address(0 if ":" not in gateway else "::"):
            d["gateway"] = gateway
    esi = _first(nlri, "bgp.evpn.nlri.esi")
    if esi is not None and int(esi.get("value"), 16):
        d["esi"] = esi.get("value")
    tag = _int(nlri, "bgp.evpn.nlri.etag")
    if tag:
        d["ethernet_tag"] = tag
    return d


def _ext_community(packet: Packet, c: ET.Element) -> dict[str, Any]:
    kind = int(_show(c, "bgp.ext_com.type"), 16)
    subtype_field = next(f for f in c.iter("field") if (f.get("name") or "").startswith("bgp.ext_com.stype"))
    subtype = int(subtype_field.get("show"), 16)
    if subtype == 0x02 and kind in (0x00, 0x01, 0x02):
        admin = _show(c, "bgp.ext_com.value_as2", "bgp.ext_com.value_IP4", "bgp.ext_com.value_as4")
        number = _show(c, "bgp.ext_com.value_an4", "bgp.ext_com.value_an2")
        return {"route_target": f"{admin}:{number}", "rt_type": kind}
    if (kind, subtype) == (0x03, 0x0C):
        return {"encapsulation": _int(c, "bgp.ext_com.tunnel_type")}
    if (kind, subtype) == (0x06, 0x00):
        return {"mac_mobility": {"sequence": _int(c, "bgp.ext_com_evpn.mmac.seq"),
                                 "sticky": _show(c, "bgp.ext_com_evpn.mmac.flags.sticky") == "1"}}
    if (kind, subtype) == (0x06, 0x03):
        return {"router_mac": _show(c, "bgp.ext_com_evpn.esi.router_mac")}
    return {"other": _octets(packet, c).hex()}


def _pmsi(packet: Packet, attr: ET.Element) -> dict[str, Any]:
    d: dict[str, Any] = {"flags": _int(attr, "bgp.update.path_attribute.pmsi.tunnel.flags"),
                         "tunnel_type": _int(attr, "bgp.update.path_attribute.pmsi.tunnel.type")}
    vni = _first(attr, "bgp.evpn.nlri.vni")
    label = _first(attr, "bgp.update.path_attribute.mpls_label_value", "bgp.update.path_attribute.mpls_label_value_20bits")
    if vni is not None:
        d["vni"] = int(vni.get("show"))
    elif label is not None:
        d["vni"] = int(_octets(packet, label).hex(), 16)
    tunnel = _first(attr, "bgp.update.path_attribute.pmsi.tunnel.id")
    raw = _octets(packet, tunnel) if tunnel is not None else b""
    if len(raw) == 16:  # tshark 4.0 shows only an IPv4 endpoint: take the octets it located
        d["tunnel_id"] = str(ipaddress.IPv6Address(raw))
    else:
        d["tunnel_id"] = _show(attr, "bgp.update.path_attribute.pmsi.ingress_rep_ip")
    return d


def _as_path(attr: ET.Element) -> list[list[Any]]:
    return [
        [SEGMENTS.get(_int(seg, "bgp.update.path_attribute.as_path_segment.type"), "?"),
         [int(f.get("show")) for f in _all(seg, "bgp.update.path_attribute.as_path_segment.as2",
                                            "bgp.update.path_attribute.as_path_segment.as4")]]
        for seg in _all(attr, "bgp.update.path_attribute.as_path_segment")
    ]


FAMILIES = {(25, 70): "evpn", (1, 1): "ipv4-unicast", (2, 1): "ipv6-unicast"}
# the prefix fields of unicast NLRI: the withdrawn routes and NLRI fields (IPv4), MP_REACH / MP_UNREACH
PREFIX_FIELDS = ("bgp.withdrawn_prefix", "bgp.nlri_prefix", "bgp.mp_reach_nlri_ipv4_prefix",
                 "bgp.mp_reach_nlri_ipv6_prefix", "bgp.mp_unreach_nlri_ipv4_prefix", "bgp.mp_unreach_nlri_ipv6_prefix")


def _prefixes(el: ET.Element, family: str) -> list[dict[str, Any]]:
    """The unicast prefixes under `el`, each from the prefix length field before it."""
    out, length = [], None
    for f in el.iter("field"):
        if f.get("name") == "bgp.prefix_length":
            length = int(f.get("show"))
        elif f.get("name") in PREFIX_FIELDS:
            out.append({"type": family, "prefix": str(ipaddress.ip_network(f"{f.get('show')}/{length}", strict=False))})
    return out


def _mp_family(attr: ET.Element, kind: str) -> str:
    afi = _int(attr, f"bgp.update.path_attribute.{kind}.afi")
    safi = _int(attr, f"bgp.update.path_attribute.{kind}.safi")
    return FAMILIES.get((afi, safi), f"AFI {afi} / SAFI {safi}")


def _mp_routes(attr: ET.Element, kind: str) -> list[dict[str, Any]]:
    family = _mp_family(attr, kind)
    if family == "evpn":
        return [_route(n) for n in _all(attr, "bgp.evpn.nlri")]
    return _prefixes(attr, family)


def tshark_view(packet: Packet, families: list[str] = ("evpn",)) -> dict[str, Any]:
    """tshark's reading of one UPDATE, shaped like a vector's `expect`: what a session that
    negotiated `families` (their config names) takes from it."""
    view: dict[str, Any] = {"announced": [], "withdrawn": []}
    if packet.bgp is None:
        return view
    attrs: dict[int, ET.Element] = {}
    order = []
    for attr in _all(packet.bgp, "bgp.update.path_attribute"):
        code = _int(attr, "bgp.update.path_attribute.type_code")
        order.append(code)
        attrs.setdefault(code, attr)
    reach, unreach = attrs.get(14), attrs.get(15)
    if reach is not None and _mp_family(reach, "mp_reach_nlri") not in families:
        reach = None
    if unreach is not None and _mp_family(unreach, "mp_unreach_nlri") not in families:
        unreach = None
    classic = "ipv4-unicast" in families
    field_routes = {name: _prefixes(el, "ipv4-unicast") if classic else []
                    for name in ("bgp.update.withdrawn_routes", "bgp.update.nlri")
                    for el in [_first(packet.bgp, name)] if el is not None}
    in_nlri = field_routes.get("bgp.update.nlri", [])
    a: dict[str, Any] = {}
    if reach is not None:
        view["announced"] = _mp_routes(reach, "mp_reach_nlri")
        a["next_hop"] = _show(reach, "bgp.update.path_attribute.mp_reach_nlri.next_hop.ipv4",
                              "bgp.update.path_attribute.mp_reach_nlri.next_hop.ipv6")
    if in_nlri:
        view["announced"] += in_nlri
        hop = attrs.get(3)
        hop = _show(hop, "bgp.update.path_attribute.next_hop") if hop is not None and _int(
            hop, "bgp.update.path_attribute.length") == 4 else None
        if reach is None:
            a["next_hop"] = hop
        elif hop != a["next_hop"]:
            view["nlri_next_hop"] = hop
    view["withdrawn"] = field_routes.get("bgp.update.withdrawn_routes", [])
    if unreach is not None:
        mp_withdrawn = _mp_routes(unreach, "mp_unreach_nlri")
        view["withdrawn"] += mp_withdrawn
        if reach is None and not mp_withdrawn and _int(unreach, "bgp.update.path_attribute.length") == 3:
            view["end_of_rib"] = True
            family = _mp_family(unreach, "mp_unreach_nlri")
            if family != "evpn":
                view["end_of_rib_family"] = family
    if classic and _int(packet.bgp, "bgp.length") == 23:
        view.update(end_of_rib=True, end_of_rib_family="ipv4-unicast")
    for key in ("announced", "withdrawn"):  # EVPN types overlayd skips are not in `expect`
        view[key] = [r for r in view[key] if r["type"] in (2, 3, 5) or isinstance(r["type"], str)]
    if 1 in attrs:
        a["origin"] = _int(attrs[1], "bgp.update.path_attribute.origin")
    if 2 in attrs:
        a["as_path"] = _as_path(attrs[2])
        if 17 in attrs:  # RFC 6793 4.2.3, for the equal-length paths the vectors have
            as4 = _as_path(attrs[17])
            if sum(len(s[1]) for s in as4) == sum(len(s[1]) for s in a["as_path"]):
                a["as_path"] = as4
    if 4 in attrs:
        a["med"] = _int(attrs[4], "bgp.update.path_attribute.multi_exit_disc")
    if 5 in attrs:
        a["local_pref"] = _int(attrs[5], "bgp.update.path_attribute.local_pref")
    if 16 in attrs:
        a["ext_communities"] = [_ext_community(packet, c) for c in _all(attrs[16], "bgp.ext_community")]
    if 22 in attrs:
        a["pmsi_tunnel"] = _pmsi(packet, attrs[22])
    if 9 in attrs:
        a["originator_id"] = _show(attrs[9], "bgp.update.path_attribute.originator_id")
    if 10 in attrs:
        a["cluster_list"] = [f.get("show") for f in _all(attrs[10], "bgp.path_attribute.cluster_id")]
    other = []
    for code in order:
        if code not in INTERPRETED:
            attr = attrs[code]
            flags = int(_show(attr, "bgp.update.path_attribute.flags"), 16)
            other.append({"flags": f"{flags:#04x}", "type_code": code,
                          "value": _octets(packet, attr, 4 if flags & 0x10 else 3).hex()})
    if other:
        a["other"] = other
    if reach is not None or in_nlri:
        view["attributes"] = a
    return view


# -- comparing -----------------------------------------------------------------


def well_formed(vector: dict[str, Any]) -> bool:
    expect = vector["expect"]
    return not ("reset" in expect or expect.get("errors") or expect.get("treat_as_withdraw"))


def _differences(seen: dict[str, Any], expect: dict[str, Any], keys: list[str], where: str = "") -> list[str]:
    return [
        f"{where}{key}: tshark says {seen.get(key)!r}, vector says {expect.get(key)!r}"
        for key in keys
        if seen.get(key) != expect.get(key)
    ]


def compare(vector: dict[str, Any], packet: Packet, probe: Packet | None = None) -> list[str]:
    """Where tshark's reading of one vector differs from its `expect` (see the module doc)."""
    expect = vector["expect"]
    if "reset" in expect:
        return []
    seen = tshark_view(packet, vector.get("families", ["evpn"]))
    problems = _differences(seen, expect, ["announced", "withdrawn"])
    if well_formed(vector):
        problems += _differences(seen, expect, ["attributes", "end_of_rib", "end_of_rib_family", "nlri_next_hop"])
        if packet.malformed:
            problems.append("tshark finds the packet malformed")
        problems += [f"tshark {level}: {message}" for level, message in packet.experts if level in ("warning", "error")]
    elif "attributes" in expect:
        problems += _differences(seen.get("attributes", {}), expect["attributes"], ["next_hop"], "attributes.")
    if probe is not None:
        wanted = [v for r in expect["announced"] for v in (r.get("vni"), r.get("vni2")) if v is not None]
        labels = [label for n in _all(probe.bgp, "bgp.evpn.nlri") if _int(n, "bgp.evpn.nlri.rt") in (2, 5)
                  for label in _labels(n)] if probe.bgp is not None else []
        if labels != [("vni", v) for v in wanted]:
            problems.append(f"with EXTENDED_COMMUNITIES first: tshark's labels are {labels}, vector's VNIs {wanted}")
    return problems


def vector_files() -> list[Path]:
    return sorted(BGP_VECTORS_DIR.glob("*.json"))


@dataclass
class Checked:
    """One vector's result: where tshark disagrees, and the packets it dissected."""

    problems: list[str]
    packet: Packet
    probe: Packet | None  # the same UPDATE with EXTENDED_COMMUNITIES first, for announcements


def check_file(path: Path) -> dict[str, Checked]:
    """Vector name -> what tshark made of it, for one file."""
    vectors = json.loads(path.read_text())["vectors"]
    messages = [bytes.fromhex(v["hex"]) for v in vectors]
    probes = [ext_communities_first(m) if well_formed(v) and v["expect"]["announced"] else None
              for v, m in zip(vectors, messages)]
    frames = [in_tcp179(m, i) for i, m in enumerate(messages)]
    frames += [in_tcp179(p, len(messages) + i) for i, p in enumerate(probes) if p is not None]
    packets = dissect(frames)
    probe_packets = iter(packets[len(messages):])
    out = {}
    for vector, packet, probe in zip(vectors, packets, probes):
        probe_packet = next(probe_packets) if probe else None
        out[vector["name"]] = Checked(compare(vector, packet, probe_packet), packet, probe_packet)
    return out


def check_all() -> list[str]:
    """Every disagreement in every file, as `file: vector: problem` lines."""
    return [
        f"{path.name}: {name}: {p}"
        for path in vector_files()
        for name, checked in check_file(path).items()
        for p in checked.problems
    ]


def record(path: Path, checked_with: str) -> None:
    """Set `checked_with`, leaving the rest of the file as it is laid out."""
    text = path.read_text()
    new = re.sub(r'"checked_with": (null|"[^"]*")', lambda _: f'"checked_with": "{checked_with}"', text, count=1)
    assert json.loads(new)["checked_with"] == checked_with
    path.write_text(new)


def main(argv: list[str]) -> int:
    version = check_tshark.tshark_version()
    print(f"checking with {version}")

    def results():
        for path in vector_files():
            vectors = {v["name"]: v for v in json.loads(path.read_text())["vectors"]}
            for name, checked in check_file(path).items():
                packet = checked.packet
                note = "" if well_formed(vectors[name]) else "  (malformed on purpose; tshark: " + (
                    ", ".join(f"{lvl}: {msg}" for lvl, msg in packet.experts if lvl in ("warning", "error"))
                    + ("; malformed" if packet.malformed else "") or "no warnings") + ")"
                yield path.name, name, checked.problems, note

    return check_tshark.report(results(), vector_files(), argv, version, record)  # ours keeps the layout


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
