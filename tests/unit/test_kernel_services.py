"""kernel.services: the services as nftables JSON (kube-proxy's layout), its diffs, and what
`nft --check` says of every document (where nft and CAP_NET_ADMIN are there)."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
from ipaddress import ip_address, ip_network

import pytest

from overlayd.kernel import masq, nft
from overlayd.kernel import services as sv
from tests.support import unmet

NODE = [ip_network("10.244.1.0/24"), ip_network("fd00:244:0:1::/64")]
CLUSTER = [ip_network("10.244.0.0/16"), ip_network("fd00:244::/48")]

WEB = sv.Service("web", "10.96.0.10", 80, "tcp", [("10.244.2.7", 8080), ("10.244.1.5", 8080), ("10.244.3.9", 8080)])
DNS = sv.Service("dns", "10.96.0.10", 53, "udp", [("10.244.1.5", 53), ("10.244.2.7", 53)],
                 affinity="client-ip", affinity_timeout_s=600)
WEB6 = sv.Service("web6", "fd00:96::10", 80, "tcp", [("fd00:244:0:1::5", 8080), ("fd00:244:0:2::7", 8080)])
EMPTY = sv.Service("gone", "10.96.0.30", 80, "tcp", [])
EMPTY6 = sv.Service("gone6", "fd00:96::30", 53, "udp", [])
ALL = [WEB, DNS, WEB6, EMPTY, EMPTY6]


def plan(services, node=NODE, cluster=CLUSTER) -> nft.Table:
    return sv.table(services, node, cluster)


def touched(commands: list[dict]) -> set[str]:
    """The names of the chains, sets and maps the commands change (a map: its elements)."""
    out = set()
    for c in commands:
        for body in c.values():
            for kind, obj in body.items():
                out.add(obj["chain"] if kind == "rule" else obj["name"])
    return out


def rules_of(t: nft.Table, chain: str) -> list:
    return [list(r) for r in t.chains[chain].rules]


# -- the layout -----------------------------------------------------------------------------


def test_base_chains_hook_dstnat_srcnat_and_the_filter_paths_as_kube_proxy():
    t = plan([WEB])
    hooks = {n: (c.hook.type, c.hook.hook, c.hook.prio) for n, c in t.chains.items() if c.hook}
    assert hooks == {
        "nat-prerouting": ("nat", "prerouting", -100), "nat-output": ("nat", "output", -100),
        "nat-postrouting": ("nat", "postrouting", 100),
        "filter-forward": ("filter", "forward", -110), "filter-output": ("filter", "output", -110),
    }
    assert rules_of(t, "nat-prerouting") == rules_of(t, "nat-output") == [[{"jump": {"target": "services"}}]]
    assert rules_of(t, "filter-forward")[0][-1] == {"jump": {"target": "endpoints-check"}}
    v4, v6 = rules_of(t, "services")
    assert v4[0]["vmap"]["data"] == "@service-ips4" and v6[0]["vmap"]["data"] == "@service-ips6"
    assert [e["payload"]["protocol"] for e in v6[0]["vmap"]["key"]["concat"][::2]] == ["ip6", "th"]


def test_the_verdict_map_sends_each_vip_port_protocol_to_its_service_chain():
    t = plan(ALL)
    assert t.maps["service-ips4"].elements == {
        ("10.96.0.10", "tcp", 80): {"goto": {"target": "service-web/tcp/80"}},
        ("10.96.0.10", "udp", 53): {"goto": {"target": "service-dns/udp/53"}},
    }
    assert t.maps["service-ips6"].elements == {("fd00:96::10", "tcp", 80): {"goto": {"target": "service-web6/tcp/80"}}}
    assert t.maps["service-ips4"].type == ("ipv4_addr", "inet_proto", "inet_service")


def test_a_service_picks_a_backend_at_random_among_its_healthy_ones_in_a_stable_order():
    t = plan([WEB])
    *_, pick = rules_of(t, "service-web/tcp/80")
    vmap = pick[0]["vmap"]
    assert vmap["key"] == {"numgen": {"mode": "random", "mod": 3, "offset": 0}}
    # sorted by address: the order health reports came in does not matter
    assert [target["goto"]["target"] for _, target in vmap["data"]["set"]] == [
        "endpoint-web/tcp/80__10.244.1.5/8080", "endpoint-web/tcp/80__10.244.2.7/8080",
        "endpoint-web/tcp/80__10.244.3.9/8080"]
    assert plan([sv.Service("web", "10.96.0.10", 80, "tcp", reversed(WEB.backends))]) == t


def test_an_endpoint_chain_dnats_and_marks_hairpin_traffic_for_masquerade():
    t = plan([WEB, WEB6])
    local = rules_of(t, "endpoint-web/tcp/80__10.244.1.5/8080")
    remote = rules_of(t, "endpoint-web/tcp/80__10.244.2.7/8080")
    # a backend on this node: any pod of the node (the backend itself included) is masqueraded
    assert local[0] == [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                                   "right": {"prefix": {"addr": "10.244.1.0", "len": 24}}}},
                        {"jump": {"target": "mark-for-masquerade"}}]
    assert remote[0][0]["match"]["right"] == "10.244.2.7"  # kube-proxy's hairpin rule
    assert local[-1] == [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
                         {"dnat": {"family": "ip", "addr": "10.244.1.5", "port": 8080}}]
    six = rules_of(t, "endpoint-web6/tcp/80__fd00.244.0.1..5/8080")
    assert six[-1][-1] == {"dnat": {"family": "ip6", "addr": "fd00:244:0:1::5", "port": 8080}}
    assert six[0][0]["match"]["left"]["payload"]["protocol"] == "ip6"


def test_clients_outside_the_cluster_networks_are_masqueraded():
    first = rules_of(plan([WEB]), "service-web/tcp/80")[0]
    assert first == [{"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "saddr"}},
                                "right": {"prefix": {"addr": "10.244.0.0", "len": 16}}}},
                     {"jump": {"target": "mark-for-masquerade"}}]
    assert len(rules_of(plan([WEB], cluster=[]), "service-web/tcp/80")) == 1  # only the pick


def test_masquerading_only_what_is_marked_and_clearing_the_mark():
    t = sv.table([WEB], mark=0x100)
    assert rules_of(t, "mark-for-masquerade") == [[{"mangle": {"key": {"meta": {"key": "mark"}},
                                                               "value": {"|": [{"meta": {"key": "mark"}}, 0x100]}}}]]
    ret, clear, masquerade = rules_of(t, "masquerading")
    assert ret[-1] == {"return": None} and ret[0]["match"]["left"] == {"&": [{"meta": {"key": "mark"}}, 0x100]}
    assert clear[0]["mangle"]["value"] == {"^": [{"meta": {"key": "mark"}}, 0x100]}
    assert masquerade == [{"masquerade": {"flags": "fully-random"}}]
    assert rules_of(t, "nat-postrouting") == [[{"jump": {"target": "masquerading"}}]]


def test_a_service_without_healthy_backends_is_rejected_not_black_holed():
    t = plan(ALL)
    assert t.maps["no-endpoint-services4"].elements == {("10.96.0.30", "tcp", 80): {"goto": {"target": "reject-chain"}}}
    assert t.maps["no-endpoint-services6"].elements == {("fd00:96::30", "udp", 53): {"goto": {"target": "reject-chain"}}}
    assert not [n for n in t.chains if "gone" in n]
    tcp, other = rules_of(t, "reject-chain")
    assert tcp[-1] == {"reject": {"type": "tcp reset"}}
    assert other == [{"reject": {"type": "icmpx", "expr": "port-unreachable"}}]


def test_client_ip_affinity_uses_a_set_of_clients_per_backend_with_the_timeout():
    t = plan([DNS])
    names = ["affinity-dns/udp/53__10.244.1.5/53", "affinity-dns/udp/53__10.244.2.7/53"]
    assert t.sets == {n: nft.Set("ipv4_addr", ("timeout",), 600) for n in names}
    sticky = rules_of(t, "service-dns/udp/53")[1:3]
    assert [r[0]["match"]["right"] for r in sticky] == [f"@{n}" for n in names]
    assert [r[1] for r in sticky] == [{"goto": {"target": n.replace("affinity", "endpoint")}} for n in names]
    update = rules_of(t, "endpoint-dns/udp/53__10.244.1.5/53")[1]
    assert update == [{"set": {"op": "update", "elem": {"payload": {"protocol": "ip", "field": "saddr"}},
                               "set": f"@{names[0]}"}}]
    assert plan([WEB]).sets == {}
    odd = sv.Service("x", "fd00:96::1", 80, "tcp", [("fd00:244:0:1::5", 80)], "client-ip", 0.2)
    assert plan([odd]).sets["affinity-x/tcp/80__fd00.244.0.1..5/80"] == nft.Set("ipv6_addr", ("timeout",), 1)


def test_no_services_is_no_part_of_the_table():
    assert sv.table([]) == nft.EMPTY


def test_bad_input_is_refused_naming_it():
    with pytest.raises(ValueError, match="IPv6"):
        sv.Service("web", "10.96.0.10", 80, "tcp", [("fd00::1", 80)])
    with pytest.raises(ValueError, match="port"):
        sv.Service("web", "10.96.0.10", 0)
    with pytest.raises(ValueError, match="twice"):
        sv.Service("web", "10.96.0.10", 80, "tcp", [("10.244.1.5", 80), ("10.244.1.5", 80)])
    with pytest.raises(ValueError, match="name"):
        sv.Service("we b", "10.96.0.10", 80)
    with pytest.raises(ValueError, match="also service web"):
        sv.table([WEB, sv.Service("other", "10.96.0.10", 80)])
    with pytest.raises(ValueError, match="two services named"):
        sv.table([WEB, sv.Service("web", "10.96.0.11", 80)])
    assert sv.Service("web", ip_address("10.96.0.10"), 80).vip == ip_address("10.96.0.10")


# -- diffs --------------------------------------------------------------------------------------


def test_one_backend_gone_touches_that_service_and_that_backend_only():
    before = nft.merge(masq.table(NODE, CLUSTER), plan(ALL))
    web = sv.Service("web", "10.96.0.10", 80, "tcp", WEB.backends[:2])
    after = nft.merge(masq.table(NODE, CLUSTER), plan([web, DNS, WEB6, EMPTY, EMPTY6]))
    commands = nft.diff(before, after)
    assert touched(commands) == {"service-web/tcp/80", "endpoint-web/tcp/80__10.244.3.9/8080"}
    verbs = [(verb, kind, obj.get("name", obj.get("chain"))) for c in commands for verb, body in c.items()
             for kind, obj in body.items()]
    assert verbs[:3] == [("flush", "chain", "service-web/tcp/80"),
                         ("flush", "chain", "endpoint-web/tcp/80__10.244.3.9/8080"),
                         ("delete", "chain", "endpoint-web/tcp/80__10.244.3.9/8080")]
    assert {v for v in verbs[3:]} == {("add", "rule", "service-web/tcp/80")}


def test_a_backend_back_to_health_adds_its_chain_and_refills_its_service_only():
    web = sv.Service("web", "10.96.0.10", 80, "tcp", WEB.backends[:2])
    commands = nft.diff(plan([web, DNS]), plan([WEB, DNS]))
    assert touched(commands) == {"service-web/tcp/80", "endpoint-web/tcp/80__10.244.3.9/8080"}
    kinds = [(verb, kind) for c in commands for verb, body in c.items() for kind in body]
    assert kinds.index(("add", "chain")) < kinds.index(("add", "rule"))


def test_an_affinity_backend_gone_takes_its_set_along():
    dns = sv.Service("dns", "10.96.0.10", 53, "udp", DNS.backends[:1], "client-ip", 600)
    commands = nft.diff(plan([WEB, DNS]), plan([WEB, dns]))
    assert touched(commands) == {"service-dns/udp/53", "endpoint-dns/udp/53__10.244.2.7/53",
                                 "affinity-dns/udp/53__10.244.2.7/53"}


def test_the_last_backend_gone_moves_the_vip_to_the_reject_map():
    web = sv.Service("web", "10.96.0.10", 80, "tcp", [])
    commands = nft.diff(plan([WEB, DNS]), plan([web, DNS]))
    assert touched(commands) == {"service-ips4", "no-endpoint-services4", "service-web/tcp/80",
                                 *(sv.endpoint_chain(WEB, b) for b in WEB.backends)}
    first, *_, last = commands
    assert first == {"delete": {"element": {**nft._ref(name="service-ips4"), "elem": [
        [{"concat": ["10.96.0.10", "tcp", 80]}, {"goto": {"target": "service-web/tcp/80"}}]]}}}
    assert last == {"add": {"element": {**nft._ref(name="no-endpoint-services4"), "elem": [
        [{"concat": ["10.96.0.10", "tcp", 80]}, {"goto": {"target": "reject-chain"}}]]}}}


def test_a_new_service_adds_its_element_after_its_chains():
    commands = nft.diff(plan([WEB]), plan([WEB, WEB6]))
    kinds = [(verb, kind) for c in commands for verb, body in c.items() for kind in body]
    assert set(kinds) == {("add", "chain"), ("add", "rule"), ("add", "element")}
    assert kinds[-1] == ("add", "element") and kinds.count(("add", "element")) == 1


def test_the_last_service_gone_leaves_ipmasq_alone():
    with_services = nft.merge(masq.table(NODE, CLUSTER), plan(ALL))
    commands = nft.diff(with_services, nft.merge(masq.table(NODE, CLUSTER)))
    assert "postrouting" not in touched(commands)
    assert {verb for c in commands for verb in c} == {"delete", "flush"}


def test_nothing_changed_is_no_command():
    assert nft.diff(plan(ALL), plan(list(reversed(ALL)))) == []


# -- nft --check -----------------------------------------------------------------------------


def nft_check(doc: dict) -> None:
    if shutil.which("nft") is None:
        unmet("needs nft (Debian package nftables)")
    if os.geteuid() != 0:
        unmet("nft --check needs root (CAP_NET_ADMIN)")
    out = subprocess.run(["nft", "--check", "-j", "-f", "-"], input=json.dumps(doc), capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, f"{out.stderr}\n{json.dumps(doc, indent=1)[:4000]}"


STATES = [
    [],
    ALL,
    [sv.Service("web", "10.96.0.10", 80, "tcp", WEB.backends[:1]), DNS, WEB6, EMPTY, EMPTY6],
    [sv.Service("web", "10.96.0.10", 80, "tcp", []), DNS, EMPTY],
    [WEB, sv.Service("dns", "10.96.0.10", 53, "udp", DNS.backends, "client-ip", 30), WEB6],
    [WEB, sv.Service("dns", "10.96.0.10", 53, "udp", DNS.backends), WEB6, EMPTY6],
    [WEB6],
    [],
]


@pytest.mark.parametrize("masq_on", [True, False], ids=["with-ipmasq", "services-alone"])
def test_nft_accepts_every_document(masq_on: bool):
    """Each table made afresh, and each diff applied on top of the table before it (one
    transaction that `--check` runs and throws away)."""
    tables = [nft.merge(masq.table(NODE, CLUSTER) if masq_on else nft.EMPTY, plan(s)) for s in STATES]
    for t in tables:
        nft_check(nft.document(nft.diff(None, t)))
    for before, after in itertools.pairwise(tables):
        nft_check(nft.document([*nft.diff(None, before), *nft.diff(before, after)]))
