"""The EVPN benchmark's pure parts: the synthetic speaker's UPDATEs (tools.evpn_load) and
gobgpd's Adj-RIB-In-only policy (tools.gobgp). Both were checked against gobgpd 3.10 by
`tools/bench.py --only control`: it learned every route, and kept the rejected ones out of
its RIB. Also the AFI/SAFIs a gobgpd neighbor gets (ipv4-unicast checked against gobgpd 3.10
by tests/interop/test_frr.py)."""

from __future__ import annotations

import ipaddress
import tomllib
from collections import Counter

from overlayd.wire.bgp.messages import UPDATE, MessageReader, encode_message
from overlayd.wire.bgp.update import decode_update
from tools.evpn_load import IN_MAC_BASE, type2_updates
from tools.gobgp import Neighbor, config_toml


def test_type2_updates_announce_each_route_once_from_its_vtep():
    reader = MessageReader()
    for update in type2_updates(1000, vni=100, rt="65000:100", vteps=7, asn=65000):
        reader.feed(encode_message(update))
    routes = []
    for msg_type, body in reader:
        assert msg_type == UPDATE
        update = decode_update(body)
        assert not update.errors and not update.withdrawn
        attrs = update.attributes
        assert [str(rt) for rt in attrs.route_targets()] == ["65000:100"] and attrs.local_pref == 100
        for route in update.announced:
            assert route.ip is None and route.vni == 100
            assert str(route.rd) == f"{attrs.next_hop}:100"
            routes.append((int.from_bytes(route.mac, "big") - IN_MAC_BASE, attrs.next_hop))
    assert sorted(i for i, _ in routes) == list(range(1000))
    assert all(hop == ipaddress.IPv4Address("10.1.0.1") + i % 7 for i, hop in routes)
    assert Counter(hop for _, hop in routes).most_common()[-1][1] == 1000 // 7


def test_adj_in_only_neighbors_are_rejected_by_the_global_import_policy():
    config = tomllib.loads(config_toml(65000, "10.0.0.9", ["10.0.0.9"], 179, [
        Neighbor("10.0.0.1", 65000, adj_in_only=True), Neighbor("10.0.0.3", 65000)]))
    policy = config["global"]["apply-policy"]["config"]
    assert policy == {"import-policy-list": ["adj-in-only"], "default-import-policy": "accept-route"}
    [neighbors] = config["defined-sets"]["neighbor-sets"]
    assert neighbors["neighbor-info-list"] == ["10.0.0.1"]
    [statement] = config["policy-definitions"][0]["statements"]
    assert statement["conditions"]["match-neighbor-set"]["neighbor-set"] == neighbors["neighbor-set-name"]
    assert statement["actions"]["route-disposition"] == "reject-route"
    plain = tomllib.loads(config_toml(65000, "10.0.0.9", ["10.0.0.9"], 179, [Neighbor("10.0.0.3", 65000)]))
    assert "apply-policy" not in plain["global"] and "policy-definitions" not in plain


def test_gobgp_neighbors_take_their_families():
    config = tomllib.loads(config_toml(65000, "10.0.0.9", ["10.0.0.9"], 179, [
        Neighbor("10.0.0.2", 65000, families=("ipv4-unicast",)),
        Neighbor("10.0.0.3", 65000)]))
    names = [[f["config"]["afi-safi-name"] for f in nb["afi-safis"]] for nb in config["neighbors"]]
    assert names == [["ipv4-unicast"], ["l2vpn-evpn"]]


def test_macs_are_sequential_or_random_unicast_locally_administered_and_reproducible():
    from tools.evpn_load import OUT_MAC_BASE, source_macs

    assert list(source_macs(3, first=5)) == [(OUT_MAC_BASE + i).to_bytes(6, "big") for i in (5, 6, 7)]
    macs = list(source_macs(10_000, seed=1))
    assert macs == list(source_macs(10_000, seed=1)) and macs != list(source_macs(10_000, seed=2))
    assert all(m[0] & 0x03 == 0x02 for m in macs)  # unicast, locally administered
    assert len(set(macs)) == len(macs)


def test_the_last_notification_is_found_at_the_end_of_what_the_peer_sent():
    from overlayd.wire.bgp.messages import Keepalive, Notification
    from tools.evpn_load import last_notification

    ka = encode_message(Keepalive())
    cease = encode_message(Notification(6, 1, b""))
    assert last_notification(ka * 3) is None
    assert last_notification(ka[5:] + ka + cease) == "cease/maximum number of prefixes reached"
    assert last_notification(cease + ka) == "cease/maximum number of prefixes reached"
    assert last_notification(cease[:-1]) is None  # cut short: not there yet
