"""VLAN trunks: `networks[].vlans: {VID: VNI}` carries several VLANs on one TAP.

A trunk is written as one network whose `vlans` maps 802.1Q VLAN IDs to
VNIs (RFC 8365's VLAN-based service interface, the mapping the kernel's
single VXLAN device makes with `vlan_tunnel`/`tunnel_info`/`vnifilter`):

    networks:
      - name: blue
        device: trunk0
        vlans: {10: 1010, 20: 1020}
        native_vlan: 10          # optional: untagged frames belong to VLAN 10
        vteps: [10.0.0.2]
        fdb: [{mac: "02:00:00:00:00:0a", vtep: 10.0.0.2, vlan: 20}]

`expand` turns it into one network per VLAN before the rest of the config
is checked: `blue.10` (VNI 1010, `vlan` 10) and `blue.20` (VNI 1020), both on
device trunk0 (`trunk` names the network they came from). Each is a network
of its own (FDB, flood list, type-2/3 routes with the route target derived
from its VNI, limits, counters); what the trunk says once (device, mtu, mac,
vteps, limits) each of them gets; a static `fdb` entry goes to the VLAN its
`vlan` names; the `address` goes to the native VLAN (the host's own frames
on the TAP are untagged).

Refused, each naming its field: a VID outside 1-4094, a VNI outside 1-2^24-1
or given twice (a VID given twice is refused by the YAML loader: a duplicate
key), `vlans` beside `vni` or `route_target`, a `native_vlan` that is not one
of `vlans`, an `address` without `native_vlan`, a static `fdb` entry without
its `vlan` (or with one outside the trunk), `vlans` on the kernel backend,
and `vlan` on an `fdb` entry of a network that is no trunk.
"""

from __future__ import annotations

from typing import Any

VID_MIN, VID_MAX = 1, 4094
VNI_MAX = (1 << 24) - 1
SET_BY_EXPANSION = ("vlan", "trunk")  # a member network's own keys: never written by hand


def member_name(trunk: str, vid: int) -> str:
    """The name of a trunk's network for VLAN `vid`: `blue.10`, as Linux names a VLAN device."""
    return f"{trunk}.{vid}"


def _int(value: Any) -> int | None:
    """An integer from YAML (int) or JSON (a string of digits), else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return None


def _vlans(where: str, raw: Any) -> dict[int, int]:
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{where}.vlans: a mapping of VLAN IDs to VNIs, like {{10: 1010, 20: 1020}}")
    vlans: dict[int, int] = {}
    vid_of_vni: dict[int, int] = {}
    for key, value in raw.items():
        vid, vni = _int(key), _int(value)
        if vid is None or not VID_MIN <= vid <= VID_MAX:
            raise ValueError(f"{where}.vlans: VLAN ID {key!r} is not in {VID_MIN}-{VID_MAX}")
        if vid in vlans:
            raise ValueError(f"{where}.vlans: VLAN ID {vid} is given twice")
        if vni is None or not 1 <= vni <= VNI_MAX:
            raise ValueError(f"{where}.vlans: VNI {value!r} of VLAN {vid} is not in 1-{VNI_MAX}")
        if vni in vid_of_vni:
            raise ValueError(f"{where}.vlans: VNI {vni} is given twice (VLANs {vid_of_vni[vni]} and {vid})")
        vlans[vid] = vni
        vid_of_vni[vni] = vid
    return vlans


def _members(where: str, net: dict[str, Any]) -> list[dict[str, Any]]:
    """The networks trunk `net` (networks[i], named by `where`) stands for, one per VLAN."""
    for key in ("vni", "route_target"):
        if key in net:
            why = ("give vni or vlans, not both" if key == "vni"
                   else "a VLAN trunk derives one route target per VNI; leave it out")
            raise ValueError(f"{where}.{key}: {why}")
    if net.get("backend", "userspace") != "userspace":
        raise ValueError(f"{where}.backend: a VLAN trunk (vlans) needs the userspace backend")
    vlans = _vlans(where, net["vlans"])
    native = net.get("native_vlan")
    if native is not None and _int(native) not in vlans:
        raise ValueError(f"{where}.native_vlan: {native!r} is not one of vlans "
                         f"({', '.join(map(str, vlans))})")
    native = _int(native) if native is not None else None
    if net.get("address") is not None and native is None:
        raise ValueError(f"{where}.address: a trunk's address is on its native VLAN: set native_vlan")
    name = net.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name: required but missing")
    fdb = net.get("fdb") or []
    by_vlan: dict[int, list[Any]] = {vid: [] for vid in vlans}
    for j, entry in enumerate(fdb if isinstance(fdb, list) else []):
        vid = _int(entry.get("vlan")) if isinstance(entry, dict) else None
        if vid is None:
            raise ValueError(f"{where}.fdb[{j}].vlan: required on a VLAN trunk (the VLAN the MAC is in)")
        if vid not in vlans:
            raise ValueError(f"{where}.fdb[{j}].vlan: {vid} is not one of vlans ({', '.join(map(str, vlans))})")
        by_vlan[vid].append({k: v for k, v in entry.items() if k != "vlan"})
    shared = {k: v for k, v in net.items() if k not in ("name", "vlans", "native_vlan", "fdb", "address")}
    members = []
    for vid, vni in vlans.items():
        member = {**shared, "name": member_name(name, vid), "vni": vni, "vlan": vid, "trunk": name,
                  "fdb": by_vlan[vid]}
        if vid == native:
            member["native"] = True
            if net.get("address") is not None:
                member["address"] = net["address"]
        members.append(member)
    return members


def expand(networks: Any) -> tuple[Any, list[int]]:
    """The `networks` list with each trunk replaced by its members (see the module docstring),
    and for each network of that list the index of the one it came from (for error messages).
    Anything that is not a list of mappings is left to the model's own checks."""
    if not isinstance(networks, (list, tuple)):
        return networks, []
    out: list[Any] = []
    origin: list[int] = []
    names = {net["name"]: i for i, net in enumerate(networks)
             if isinstance(net, dict) and "vlans" not in net and isinstance(net.get("name"), str)}
    for i, net in enumerate(networks):
        where = f"networks[{i}]"
        if not isinstance(net, dict):
            out.append(net)
            origin.append(i)
            continue
        for key in (*SET_BY_EXPANSION, "native"):
            if key in net:
                raise ValueError(f"{where}.{key}: unknown key (a VLAN trunk is written with vlans)")
        if "vlans" in net:
            if isinstance(net.get("name"), str) and net["name"] in names:
                raise ValueError(f"{where}.name: {net['name']} is already used by networks[{names[net['name']]}]")
            members = _members(where, net)
            out.extend(members)
            origin.extend([i] * len(members))
            continue
        if "native_vlan" in net:
            raise ValueError(f"{where}.native_vlan: only with vlans (a VLAN trunk)")
        fdb = net.get("fdb")
        for j, entry in enumerate(fdb if isinstance(fdb, list) else []):
            if isinstance(entry, dict) and "vlan" in entry:
                raise ValueError(f"{where}.fdb[{j}].vlan: only on a VLAN trunk ({where}.vlans)")
        out.append(net)
        origin.append(i)
    return out, origin
