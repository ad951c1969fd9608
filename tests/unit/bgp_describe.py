"""EVPN and unicast routes, path attributes and UPDATEs as plain data, the form
of `expect` in tests/vectors/bgp_update/*.json.

Defaults are left out (an ESI of zeros, Ethernet tag 0, no IP, no second
label, absent optional attributes, the L2VPN/EVPN End-of-RIB's family) so a
vector says only what is there. A unicast route is its family's name
("ipv4-unicast", "ipv6-unicast") as `type`, and its prefix.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from overlayd.wire.bgp.attributes import (
    AS_CONFED_SEQUENCE,
    AS_CONFED_SET,
    AS_SEQUENCE,
    AS_SET,
    Encapsulation,
    MacMobility,
    OtherExtCommunity,
    PathAttributes,
    RouterMac,
    RouteTarget,
)
from overlayd.wire.bgp.evpn import ZERO_ESI, ImetRoute, MacIpRoute, PrefixRoute
from overlayd.wire.bgp.unicast import UnicastRoute
from overlayd.wire.bgp.update import FAMILY_NAMES, L2VPN_EVPN, Update, family_name
from overlayd.wire.ethernet import mac_str

BGP_UPDATE_VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "bgp_update"
SEGMENT_NAMES = {AS_SET: "set", AS_SEQUENCE: "sequence", AS_CONFED_SEQUENCE: "confed_sequence", AS_CONFED_SET: "confed_set"}


def describe_route(route) -> dict[str, Any]:
    if isinstance(route, UnicastRoute):
        return {"type": family_name(route.family), "prefix": str(route.prefix)}
    d: dict[str, Any] = {"type": route.route_type, "rd": str(route.rd), "rd_type": route.rd.kind}
    if isinstance(route, MacIpRoute):
        d["mac"] = mac_str(route.mac)
        if route.ip is not None:
            d["ip"] = str(route.ip)
        d["vni"] = route.vni
        if route.vni2 is not None:
            d["vni2"] = route.vni2
    elif isinstance(route, ImetRoute):
        d["originator"] = str(route.originator)
    elif isinstance(route, PrefixRoute):
        d["prefix"] = str(route.prefix)
        d["vni"] = route.vni
        if route.gateway is not None:
            d["gateway"] = str(route.gateway)
    else:
        raise TypeError(route)
    if getattr(route, "esi", ZERO_ESI) != ZERO_ESI:
        d["esi"] = route.esi.hex()
    if route.ethernet_tag:
        d["ethernet_tag"] = route.ethernet_tag
    return d


def describe_ext_community(c) -> dict[str, Any]:
    if isinstance(c, RouteTarget):
        return {"route_target": str(c), "rt_type": c.kind}
    if isinstance(c, Encapsulation):
        return {"encapsulation": c.tunnel_type}
    if isinstance(c, MacMobility):
        return {"mac_mobility": {"sequence": c.sequence, "sticky": c.sticky}}
    if isinstance(c, RouterMac):
        return {"router_mac": mac_str(c.mac)}
    if isinstance(c, OtherExtCommunity):
        return {"other": c.raw.hex()}
    raise TypeError(c)


def describe_attributes(a: PathAttributes) -> dict[str, Any]:
    d: dict[str, Any] = {
        "origin": a.origin,
        "as_path": [[SEGMENT_NAMES[s.kind], list(s.asns)] for s in a.as_path],
        "next_hop": None if a.next_hop is None else str(a.next_hop),
    }
    if a.med is not None:
        d["med"] = a.med
    if a.local_pref is not None:
        d["local_pref"] = a.local_pref
    if a.ext_communities:
        d["ext_communities"] = [describe_ext_community(c) for c in a.ext_communities]
    if a.pmsi_tunnel is not None:
        p = a.pmsi_tunnel
        d["pmsi_tunnel"] = {"flags": p.flags, "tunnel_type": p.tunnel_type, "vni": p.vni, "tunnel_id": str(p.tunnel_id)}
    if a.originator_id is not None:
        d["originator_id"] = str(a.originator_id)
    if a.cluster_list:
        d["cluster_list"] = [str(c) for c in a.cluster_list]
    if a.other:
        d["other"] = [{"flags": f"{r.flags:#04x}", "type_code": r.type_code, "value": r.value.hex()} for r in a.other]
    return d


def describe_update(u: Update) -> dict[str, Any]:
    d: dict[str, Any] = {
        "announced": [describe_route(r) for r in u.announced],
        "withdrawn": [describe_route(r) for r in u.withdrawn],
    }
    if u.attributes is not None:
        d["attributes"] = describe_attributes(u.attributes)
    if u.nlri_next_hop is not None:
        d["nlri_next_hop"] = str(u.nlri_next_hop)
    if u.end_of_rib:
        d["end_of_rib"] = True
        if u.end_of_rib_family != L2VPN_EVPN:
            d["end_of_rib_family"] = family_name(u.end_of_rib_family)
    if u.treat_as_withdraw:
        d["treat_as_withdraw"] = True
    if u.errors:
        d["errors"] = list(u.errors)
    if u.ignored:
        d["ignored"] = list(u.ignored)
    return d


def vector_families(vector: dict[str, Any]) -> tuple[tuple[int, int], ...]:
    """The families a vector's session negotiated: its `families` names, L2VPN/EVPN by default."""
    by_name = {name: family for family, name in FAMILY_NAMES.items()}
    return tuple(by_name[name] for name in vector.get("families", ["evpn"]))


def message_bytes(vector: dict[str, Any]) -> bytes:
    return bytes.fromhex(vector["hex"])


def update_body(vector: dict[str, Any]) -> bytes:
    """The UPDATE body of a vector, after checking its 19-octet header (marker, length, type 2)."""
    message = message_bytes(vector)
    marker, length, kind = struct.unpack_from("!16sHB", message)
    assert marker == b"\xff" * 16, "marker is not all ones"
    assert length == len(message), f"header length {length}, message has {len(message)} octets"
    assert kind == 2, f"message type {kind}, not UPDATE"
    return message[19:]
