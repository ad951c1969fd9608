"""overlayd's nftables table as a value, and the diff between two of them, without I/O.

Every kernel backend feature that needs netfilter (`ipmasq`: masq.py, the
services' VIPs: services.py) contributes a part of one table, `inet overlayd`.
A part is a `Table`: named chains (with their rules), sets and verdict maps
(with their elements). `merge` joins the parts into the desired table;
`diff(previous, desired)` returns the nftables JSON commands that turn the
table overlayd last applied into the desired one, as one transaction:

    previous is None    create: `add table; delete table; add table`, then
                        everything (replaces whatever an earlier run left)
    otherwise           only what changed: map elements added and deleted,
                        only the chains whose rules changed flushed and
                        refilled, new chains, sets and maps added, unused
                        ones deleted

in an order the kernel accepts:

    1. delete map elements that are gone or changed
    2. flush chains that change or go (their rules may name what goes next)
    3. delete maps and sets that go or change their type, timeout or flags
    4. delete chains that go, or whose hook changes
    5. add sets and maps (empty), then chains (empty)
    6. add the rules of new and changed chains
    7. add map elements (they name chains, which exist by now)

A chain whose rules name a set, map or chain that is re-created (3, 4 then
5) counts as changed, so that nothing is deleted while a rule names it.
`delete()` removes the table and everything in it.

Rules are lists of nftables JSON expressions (`nft -j list` prints the same
form), so `parse` can read the kernel's listing back into a `Table` and a
test can compare it with what was desired.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

FAMILY = "inet"
NAME = "overlayd"
TABLE = {"family": FAMILY, "name": NAME}

Expr = dict[str, Any]            # one nftables JSON expression or statement
Rule = tuple[Expr, ...]
Key = tuple[Any, ...]            # a map element's key: the parts of a concatenation
Verdict = dict[str, Any]         # {"goto": {"target": "chain"}}, {"drop": None}, ...


@dataclass(frozen=True)
class Hook:
    """What makes a chain a base chain: `type TYPE hook HOOK priority PRIO; policy POLICY;`."""

    type: str                    # "nat" | "filter"
    hook: str                    # "prerouting" | "input" | "forward" | "output" | "postrouting"
    prio: int                    # dstnat is -100, srcnat 100, filter 0
    policy: str = "accept"


@dataclass(frozen=True)
class Chain:
    rules: tuple[Rule, ...] = ()
    hook: Hook | None = None     # None: a regular chain, reached by jump or goto


@dataclass(frozen=True)
class Set:
    type: str | tuple[str, ...]  # "ipv4_addr", or the parts of a concatenation
    flags: tuple[str, ...] = ()  # e.g. ("dynamic", "timeout")
    timeout_s: int | None = None


@dataclass(frozen=True)
class Map:
    """A verdict map (`type KEY : verdict`) and its elements."""

    type: tuple[str, ...]
    elements: Mapping[Key, Verdict] = field(default_factory=dict)

    def same_type(self, other: Map) -> bool:
        return self.type == other.type


@dataclass(frozen=True)
class Table:
    chains: Mapping[str, Chain] = field(default_factory=dict)
    sets: Mapping[str, Set] = field(default_factory=dict)
    maps: Mapping[str, Map] = field(default_factory=dict)

    def names(self) -> set[str]:
        return {*self.chains, *self.sets, *self.maps}


EMPTY = Table()


def merge(*parts: Table) -> Table:
    """One table from the parts; a name defined by two parts is our bug (ValueError)."""
    chains: dict[str, Chain] = {}
    sets: dict[str, Set] = {}
    maps: dict[str, Map] = {}
    seen: set[str] = set()
    for part in parts:
        clash = seen & part.names()
        if clash:
            raise ValueError(f"nftables objects defined twice: {', '.join(sorted(clash))}")
        seen |= part.names()
        chains.update(part.chains)
        sets.update(part.sets)
        maps.update(part.maps)
    return Table(chains, sets, maps)


# -- references --------------------------------------------------------------------------------


def references(rule: Rule) -> set[str]:
    """The chains (jump, goto) and named sets and maps ("@name") a rule names."""
    found: set[str] = set()

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                if k in ("jump", "goto") and isinstance(v, dict) and "target" in v:
                    found.add(v["target"])
                else:
                    walk(v)
        elif isinstance(x, list | tuple):
            for v in x:
                walk(v)
        elif isinstance(x, str) and x.startswith("@"):
            found.add(x[1:])

    walk(list(rule))
    return found


def _target(verdict: Verdict) -> str | None:
    for k in ("goto", "jump"):
        if k in verdict:
            return verdict[k]["target"]
    return None


# -- the commands ------------------------------------------------------------------------------


def _ref(**kw: Any) -> dict[str, Any]:
    return {"family": FAMILY, "table": NAME, **kw}


def _chain_obj(name: str, chain: Chain) -> dict[str, Any]:
    obj = _ref(name=name)
    if chain.hook is not None:
        h = chain.hook
        obj.update(type=h.type, hook=h.hook, prio=h.prio, policy=h.policy)
    return obj


def _set_obj(name: str, s: Set) -> dict[str, Any]:
    obj = _ref(name=name, type=list(s.type) if isinstance(s.type, tuple) else s.type)
    if s.flags:
        obj["flags"] = list(s.flags)
    if s.timeout_s is not None:
        obj["timeout"] = s.timeout_s
    return obj


def _map_obj(name: str, m: Map) -> dict[str, Any]:
    return _ref(name=name, type=list(m.type), map="verdict")


def _key(key: Key) -> Any:
    return {"concat": list(key)} if len(key) > 1 else key[0]


def _elements(name: str, items: Iterable[tuple[Key, Verdict]]) -> dict[str, Any]:
    return {"element": _ref(name=name, elem=[[_key(k), v] for k, v in items])}


def _rule(chain: str, rule: Rule) -> dict[str, Any]:
    return {"rule": _ref(chain=chain, expr=list(rule))}


def diff(previous: Table | None, desired: Table) -> list[dict[str, Any]]:
    """The commands that turn `previous` (what was applied; None: nothing known) into `desired`."""
    if previous is None:
        head = [{"add": {"table": dict(TABLE)}}, {"delete": {"table": dict(TABLE)}}, {"add": {"table": dict(TABLE)}}]
        return head + diff(EMPTY, desired)
    p, d = previous, desired
    # Objects re-created: kept names whose definition the kernel cannot change in place.
    remade_sets = {n for n in p.sets.keys() & d.sets.keys() if p.sets[n] != d.sets[n]}
    remade_maps = {n for n in p.maps.keys() & d.maps.keys() if not p.maps[n].same_type(d.maps[n])}
    remade_chains = {n for n in p.chains.keys() & d.chains.keys() if p.chains[n].hook != d.chains[n].hook}
    remade = remade_sets | remade_maps | remade_chains
    gone_chains = [n for n in p.chains if n not in d.chains]
    changed = [n for n in d.chains if n in p.chains and n not in remade_chains and (
        p.chains[n].rules != d.chains[n].rules or any(references(r) & remade for r in p.chains[n].rules))]
    new_chains = [n for n in d.chains if n not in p.chains or n in remade_chains]

    out: list[dict[str, Any]] = []
    # 1. map elements that go or change (a kept map; a re-made map goes whole)
    add_elements: dict[str, list[tuple[Key, Verdict]]] = {}
    for name, m in d.maps.items():
        old = p.maps.get(name)
        if old is None or name in remade_maps:
            add_elements[name] = list(m.elements.items())
            continue
        stale = [k for k, v in old.elements.items()
                 if m.elements.get(k) != v or _target(v) in remade_chains]
        if stale:
            out.append({"delete": _elements(name, ((k, old.elements[k]) for k in stale))})
        fresh = [(k, v) for k, v in m.elements.items() if k in stale or k not in old.elements]
        if fresh:
            add_elements[name] = fresh
    # 2. flush what changes or goes
    for name in [*changed, *gone_chains, *sorted(remade_chains)]:
        out.append({"flush": {"chain": _ref(name=name)}})
    # 3. maps and sets that go or are re-made
    for name in [*(n for n in p.maps if n not in d.maps), *sorted(remade_maps)]:
        out.append({"delete": {"map": _ref(name=name)}})
    for name in [*(n for n in p.sets if n not in d.sets), *sorted(remade_sets)]:
        out.append({"delete": {"set": _ref(name=name)}})
    # 4. chains that go or are re-made
    for name in [*gone_chains, *sorted(remade_chains)]:
        out.append({"delete": {"chain": _ref(name=name)}})
    # 5. new sets, maps and chains, empty
    for name, s in d.sets.items():
        if name not in p.sets or name in remade_sets:
            out.append({"add": {"set": _set_obj(name, s)}})
    for name, m in d.maps.items():
        if name not in p.maps or name in remade_maps:
            out.append({"add": {"map": _map_obj(name, m)}})
    for name in new_chains:
        out.append({"add": {"chain": _chain_obj(name, d.chains[name])}})
    # 6. rules
    for name in [*new_chains, *changed]:
        out.extend({"add": _rule(name, r)} for r in d.chains[name].rules)
    # 7. map elements
    for name, items in add_elements.items():
        if items:
            out.append({"add": _elements(name, items)})
    return out


def document(commands: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The JSON document `nft -j -f -` reads: one transaction."""
    return {"nftables": [{"metainfo": {"json_schema_version": 1}}, *commands]}


def delete() -> dict[str, Any]:
    """The transaction that removes the table (and only it)."""
    return {"nftables": [{"delete": {"table": dict(TABLE)}}]}


# -- reading the kernel back -------------------------------------------------------------------


def _canonical(x: Any) -> Any:
    """The few places where `nft -j list` prints a value in another form than it accepts:
    a one-flag list as a bare string (`"flags": "fully-random"`), an anonymous set of one
    element as that element."""
    if isinstance(x, dict):
        if set(x) == {"set"} and isinstance(x["set"], list) and len(x["set"]) == 1 \
                and not isinstance(x["set"][0], list):
            return _canonical(x["set"][0])
        return {k: (v[0] if k == "flags" and isinstance(v, list) and len(v) == 1 else _canonical(v))
                for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_canonical(v) for v in x]
    return x


def canonical(table: Table) -> Table:
    """`table` as the kernel lists it back (see `parse`): comparable with a parsed listing."""
    return Table(
        chains={n: Chain(tuple(tuple(_canonical(list(r))) for r in c.rules), c.hook) for n, c in table.chains.items()},
        # the kernel adds "dynamic" to a set that `update` writes to; `nft list` shows it,
        # `nft -j list` (1.0.6) does not, and its JSON parser refuses it: never compared
        sets={n: Set(s.type, tuple(f for f in s.flags if f != "dynamic"), s.timeout_s) for n, s in table.sets.items()},
        maps=dict(table.maps),
    )


def parse(listing: dict[str, Any]) -> Table:
    """Our table from `nft -j list table inet overlayd`, in `canonical` form."""
    chains: dict[str, Chain] = {}
    rules: dict[str, list[Rule]] = {}
    sets: dict[str, Set] = {}
    maps: dict[str, Map] = {}
    for obj in listing.get("nftables", []):
        if "chain" in obj:
            c = obj["chain"]
            hook = Hook(c["type"], c["hook"], c["prio"], c.get("policy", "accept")) if "hook" in c else None
            chains[c["name"]] = Chain((), hook)
            rules.setdefault(c["name"], [])
        elif "rule" in obj:
            r = obj["rule"]
            rules.setdefault(r["chain"], []).append(tuple(_canonical(r["expr"])))
        elif "set" in obj:
            s = obj["set"]
            t = tuple(s["type"]) if isinstance(s["type"], list) else s["type"]
            flags = s.get("flags", [])
            flags = [flags] if isinstance(flags, str) else flags
            sets[s["name"]] = Set(t, tuple(f for f in flags if f != "dynamic"), s.get("timeout"))
        elif "map" in obj:
            m = obj["map"]
            elements = {}
            for k, v in m.get("elem", []):
                key = tuple(k["concat"]) if isinstance(k, dict) and "concat" in k else (k,)
                elements[key] = v
            maps[m["name"]] = Map(tuple(m["type"]) if isinstance(m["type"], list) else (m["type"],), elements)
    return Table({n: Chain(tuple(rules[n]), c.hook) for n, c in chains.items()}, sets, maps)
