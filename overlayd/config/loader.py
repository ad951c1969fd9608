"""Reading a config: YAML text -> `Config`, and every error worded as `networks[1].vni: ...`.

`load_config(path)` reads the file (a key given twice in one mapping is
refused); `parse_config(data)` validates an already-parsed document: it
finds `node.vtep` from `node.vtep_interface`, expands VLAN trunks
(config/trunk.py) and turns pydantic's errors into one line per problem,
each naming its field as the user wrote it.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from overlayd.config.fields import ConfigError, ifname_problem
from overlayd.config.model import Config
from overlayd.config.trunk import expand as expand_trunks


def _where(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not (isinstance(part, str) and ("[" in part or part.startswith("function-"))):
            out += ("." if out else "") + str(part)
    return out or "config"


_NAMES_ITS_FIELD = re.compile(
    r"^(node|networks|bgp|routing|services|services_network|services_file|conntrack|metrics)(\[\d+\])?(\.\w+(\[\d+\])?)*: ")
_A_FIELD_INSIDE = re.compile(r"^\w+(\[\d+\])?(\.\w+(\[\d+\])?)*: ")  # "backends[0]: ...", "health.port: ..."


def _redacted(value: Any) -> Any:
    """`value` for an error message, with every `password` in it hidden."""
    if isinstance(value, dict):
        return {k: "**********" if k == "password" else _redacted(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_redacted(v) for v in value)
    return value


def _shown(value: Any, limit: int = 120) -> str:
    """The repr of a bad value for an error message: passwords hidden, cut to `limit` characters."""
    text = repr(_redacted(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def explain_errors(err: ValidationError) -> str:
    lines = []
    errors = err.errors()
    locs = [tuple(e["loc"]) for e in errors]
    seen_where: set[str] = set()
    for e in errors:
        loc = tuple(e["loc"])
        if any(len(other) > len(loc) and other[: len(loc)] == loc for other in locs):
            continue  # a container's complaint about an item already reported
        msg = e["msg"].removeprefix("Value error, ")
        where = _where(tuple(e["loc"]))
        if where in seen_where:
            continue  # the other members of a union saying the same input does not fit them
        seen_where.add(where)
        if _NAMES_ITS_FIELD.match(msg):
            lines.append(msg)
        elif e["type"] == "missing":
            lines.append(f"{where}: required but missing")
        elif e["type"] == "extra_forbidden":
            lines.append(f"{where}: unknown key")
        elif e["type"] == "value_error" and where != "config" and _A_FIELD_INSIDE.match(msg):
            lines.append(f"{where}.{msg}")  # a model's own check naming one of its fields
        elif e["type"] == "value_error":
            lines.append(f"{where}: {msg}")
        elif where.endswith(".password"):
            lines.append(f"{where}: {msg}")  # never the input: it may be the key
        else:
            lines.append(f"{where}: {msg} (got {_shown(e.get('input'))})")
    return "\n".join(dict.fromkeys(lines))


# Finds `node.vtep` from `node.vtep_interface` and `node.vtep_family` (4 or 6) on this host, or
# raises LookupError saying why not (the I/O layer provides one: io/netlink.interface_address).
VtepFinder = Callable[[str, int], Any]


def parse_config(data: Any, vtep_of: VtepFinder | None = None) -> Config:
    """Validate an already-parsed YAML document. With `node.vtep_interface`, `vtep_of` finds
    the VTEP address (without it, such a config is refused: nothing can find the address)."""
    if not isinstance(data, dict):
        raise ConfigError("config: the top level must be a mapping with `node` and `networks`")
    node = data.get("node")
    if isinstance(node, dict) and node.get("vtep_interface") is not None:
        if node.get("vtep") is not None:
            raise ConfigError("node.vtep_interface: give node.vtep or node.vtep_interface, not both")
        data = {**data, "node": {**node, "vtep": _find_vtep(node, vtep_of)}}
    origin: list[int] = []
    if isinstance(data.get("networks"), list):
        try:
            networks, origin = expand_trunks(data["networks"])
        except ValueError as err:
            raise ConfigError(str(err)) from None
        data = {**data, "networks": networks}
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_renumbered(explain_errors(err), origin)) from None


def _renumbered(text: str, origin: list[int]) -> str:
    """Error text with each `networks[i]` of the expanded list (config/trunk.py) as the network
    the user wrote: a trunk's VLANs all point at the trunk."""
    if not origin or len(set(origin)) == len(origin):
        return text
    return re.sub(r"networks\[(\d+)\]", lambda m: f"networks[{origin[int(m.group(1))]}]"
                  if int(m.group(1)) < len(origin) else m.group(0), text)


def _find_vtep(node: dict, vtep_of: VtepFinder | None) -> Any:
    name, family = node["vtep_interface"], node.get("vtep_family", "ipv4")
    problem = ifname_problem(name) if isinstance(name, str) else "must be a string"
    if problem is not None:
        raise ConfigError(f"node.vtep_interface: {problem}")
    if family not in ("ipv4", "ipv6"):
        raise ConfigError(f"node.vtep_family: must be ipv4 or ipv6, got {_shown(family)}")
    if vtep_of is None:
        raise ConfigError(f"node.vtep_interface: {name}: its address can only be found on the host that runs it")
    try:
        return str(vtep_of(name, 4 if family == "ipv4" else 6))
    except LookupError as err:
        raise ConfigError(f"node.vtep_interface: {err}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key given twice in one mapping (PyYAML keeps the last one
    silently: a VLAN ID given twice in `vlans` would lose a VLAN)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> Any:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:  # unhashable: construct_mapping says so
            break
        if duplicate:
            raise yaml.constructor.ConstructorError("while constructing a mapping", node.start_mark,
                                                    f"found the key {key!r} twice", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def load_config(path: str | Path, vtep_of: VtepFinder | None = None) -> Config:
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # a SafeLoader
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    return parse_config(data, vtep_of)
