"""kernel.nft: the diff between two tables, run on a naive model of the kernel's rules for a
transaction (no deleting what a rule or element still names, no naming what is not there)."""

from __future__ import annotations

from ipaddress import ip_network

from hypothesis import given, settings
from hypothesis import strategies as st

from overlayd.kernel import masq, nft
from overlayd.kernel import services as sv


class Kernel:
    """What `inet overlayd` holds, changed one command at a time, as strictly as the kernel."""

    def __init__(self) -> None:
        self.exists = False
        self.chains: dict[str, dict] = {}      # name -> {"hook": ..., "rules": [expr lists]}
        self.sets: dict[str, dict] = {}
        self.maps: dict[str, dict] = {}        # name -> {"type": ..., "elements": {key: verdict}}

    def referrers(self, name: str) -> list[str]:
        found = [f"rule in {c}" for c, chain in self.chains.items()
                 for rule in chain["rules"] if name in nft.references(tuple(rule))]
        found += [f"element of {m}" for m, mp in self.maps.items()
                  for v in mp["elements"].values() if nft.references((v,)) == {name}]
        return found

    def known(self, name: str) -> bool:
        return name in self.chains or name in self.sets or name in self.maps

    def run(self, commands: list[dict]) -> None:
        for command in commands:
            [(verb, body)] = command.items()
            [(kind, obj)] = body.items()
            getattr(self, f"_{verb}_{kind}")(obj)

    def _add_table(self, obj: dict) -> None:
        self.exists = True

    def _delete_table(self, obj: dict) -> None:
        assert self.exists
        self.__init__()

    def _add_chain(self, obj: dict) -> None:
        assert self.exists and obj["name"] not in self.chains, f"chain {obj['name']} is there"
        hook = nft.Hook(obj["type"], obj["hook"], obj["prio"], obj["policy"]) if "hook" in obj else None
        self.chains[obj["name"]] = {"hook": hook, "rules": []}

    def _flush_chain(self, obj: dict) -> None:
        self.chains[obj["name"]]["rules"] = []

    def _delete_chain(self, obj: dict) -> None:
        name = obj["name"]
        assert not self.chains[name]["rules"], f"deleting chain {name} with rules"
        assert not self.referrers(name), f"deleting chain {name} named by {self.referrers(name)}"
        del self.chains[name]

    def _add_rule(self, obj: dict) -> None:
        missing = [n for n in nft.references(tuple(obj["expr"])) if not self.known(n)]
        assert not missing, f"rule in {obj['chain']} names {missing}, not there"
        self.chains[obj["chain"]]["rules"].append(obj["expr"])

    def _add_set(self, obj: dict) -> None:
        assert obj["name"] not in self.sets
        self.sets[obj["name"]] = obj

    def _delete_set(self, obj: dict) -> None:
        assert not self.referrers(obj["name"]), f"deleting set {obj['name']} in use"
        del self.sets[obj["name"]]

    def _add_map(self, obj: dict) -> None:
        assert obj["name"] not in self.maps
        self.maps[obj["name"]] = {"type": tuple(obj["type"]), "elements": {}}

    def _delete_map(self, obj: dict) -> None:
        assert not self.referrers(obj["name"]), f"deleting map {obj['name']} in use"
        del self.maps[obj["name"]]

    @staticmethod
    def _keys(obj: dict) -> list:
        return [(tuple(k["concat"]) if isinstance(k, dict) else (k,), v) for k, v in obj["elem"]]

    def _add_element(self, obj: dict) -> None:
        elements = self.maps[obj["name"]]["elements"]
        for key, verdict in self._keys(obj):
            assert key not in elements, f"element {key} is in {obj['name']}"
            assert all(n in self.chains for n in nft.references((verdict,))), f"{verdict}: no such chain"
            elements[key] = verdict

    def _delete_element(self, obj: dict) -> None:
        elements = self.maps[obj["name"]]["elements"]
        for key, _ in self._keys(obj):
            del elements[key]

    def table(self) -> nft.Table:
        chains = {name: nft.Chain(tuple(tuple(r) for r in c["rules"]), c["hook"]) for name, c in self.chains.items()}
        sets = {n: nft.Set(tuple(s["type"]) if isinstance(s["type"], list) else s["type"],
                           tuple(s.get("flags", ())), s.get("timeout")) for n, s in self.sets.items()}
        maps = {n: nft.Map(m["type"], dict(m["elements"])) for n, m in self.maps.items()}
        return nft.Table(chains, sets, maps)


VIPS = ["10.96.0.10", "10.96.0.11", "fd00:96::10"]
BACKENDS = {4: [("10.244.1.5", 8080), ("10.244.1.6", 8080), ("10.244.2.7", 8080), ("10.244.2.7", 9090)],
            6: [("fd00:244:1::5", 8080), ("fd00:244:2::7", 8080)]}
NAMES = ["web", "dns", "api"]


@st.composite
def service_lists(draw) -> list[sv.Service]:
    out, keys = [], set()
    for name in draw(st.lists(st.sampled_from(NAMES), unique=True, max_size=3)):
        vip = draw(st.sampled_from(VIPS))
        port = draw(st.sampled_from([53, 80]))
        proto = draw(st.sampled_from(["tcp", "udp"]))
        if (vip, port, proto) in keys:
            continue
        keys.add((vip, port, proto))
        version = 6 if ":" in vip else 4
        backends = draw(st.lists(st.sampled_from(BACKENDS[version]), unique=True, max_size=3))
        affinity = draw(st.sampled_from(["none", "client-ip"]))
        out.append(sv.Service(name, vip, port, proto, tuple(backends), affinity, draw(st.sampled_from([30, 10800]))))
    return out


def desired(services: list[sv.Service], masq_on: bool) -> nft.Table:
    masq_part = masq.table([ip_network("10.244.1.0/24")], [ip_network("10.244.0.0/16")]) if masq_on else nft.EMPTY
    return nft.merge(masq_part, sv.table(services, [ip_network("10.244.1.0/24")], [ip_network("10.244.0.0/16")]))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(service_lists(), st.booleans()), min_size=1, max_size=5))
def test_diff_takes_the_kernel_from_any_table_to_any_other(steps):
    kernel = Kernel()
    previous = None
    for services, masq_on in steps:
        want = desired(services, masq_on)
        commands = nft.diff(previous, want)
        kernel.run(commands)
        assert kernel.table() == want
        assert nft.diff(want, want) == []
        previous = want


def test_the_first_application_replaces_whatever_was_there():
    commands = nft.diff(None, desired([], True))
    assert commands[:3] == [{"add": {"table": nft.TABLE}}, {"delete": {"table": nft.TABLE}}, {"add": {"table": nft.TABLE}}]


def test_a_set_whose_timeout_changes_is_made_again_and_the_rules_naming_it_refilled():
    a = sv.Service("web", "10.96.0.10", 80, "tcp", [("10.244.1.5", 8080)], "client-ip", 30)
    b = sv.Service("web", "10.96.0.10", 80, "tcp", [("10.244.1.5", 8080)], "client-ip", 60)
    kernel = Kernel()
    kernel.run(nft.diff(None, desired([a], False)))
    commands = nft.diff(desired([a], False), desired([b], False))
    kernel.run(commands)
    assert kernel.table() == desired([b], False)
    verbs = [(verb, kind) for c in commands for verb, body in c.items() for kind in body]
    assert verbs.index(("flush", "chain")) < verbs.index(("delete", "set")) < verbs.index(("add", "set"))
    assert ("delete", "chain") not in verbs and ("delete", "element") not in verbs


def test_merge_refuses_a_name_defined_twice():
    part = nft.Table(chains={"postrouting": nft.Chain()})
    try:
        nft.merge(part, part)
    except ValueError as err:
        assert "postrouting" in str(err)
    else:
        raise AssertionError("merged a clash")


def test_references_finds_chains_sets_and_maps():
    rule = ({"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": "@aff"}},
            {"goto": {"target": "endpoint-x"}},
            {"vmap": {"key": {"numgen": {"mode": "random", "mod": 1, "offset": 0}},
                      "data": {"set": [[0, {"jump": {"target": "other"}}]]}}})
    assert nft.references(rule) == {"aff", "endpoint-x", "other"}
