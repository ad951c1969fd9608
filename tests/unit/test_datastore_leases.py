"""etcd datastore: flannel's network config, lease values and keys, the lease decisions (fake time)."""

import ipaddress
import json

import pytest

from overlayd.config import parse_config
from overlayd.config.datastore import parse_flannel_config, resolve
from overlayd.config.fields import ConfigError
from overlayd.control.leases import (
    DatastoreSubnets,
    LeaseAdded,
    LeaseAttrs,
    LeaseRemoved,
    LeaseValueError,
    RemoteLeases,
    Renewal,
    choose_subnet,
    lease_key,
    own_attrs,
    subnet_of_key,
)
from overlayd.fabric.fdb import Source
from overlayd.fabric.prefixes import PrefixEntry, PrefixTable
from overlayd.fabric.subnets import NetworkExhausted

KEY = "/coreos.com/network/config"
SUBNETS = "/coreos.com/network/subnets/"
N = ipaddress.ip_network
A = ipaddress.ip_address


def base(**extra):
    return {"node": {"vtep": "192.0.2.1"},
            "datastore": {"type": "etcd", "endpoints": ["127.0.0.1:2379"]}, **extra}


# -- config ---------------------------------------------------------------------------------


def test_flannel_defaults_as_flannel():
    net = parse_flannel_config('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}', KEY)
    assert (net.subnet_len, net.vni, net.port, net.direct_routing) == (24, 1, 8472, False)


@pytest.mark.parametrize("doc, words", [
    ('{"Network": "10.244.0.0/33"}', "Network"),
    ('{"Network": "banana"}', "Network"),
    ('{"SubnetLen": 24}', "Network"),
    ('{"Network": "10.244.0.0/16", "SubnetLen": 16}', "SubnetLen"),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "udp"}}', "udp is flannel's own"),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "aws-vpc"}}', "Backend.Type"),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": 0}}', "Backend.VNI"),
    ('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "Port": 70000}}', "Backend.Port"),
    ('not json', "not valid JSON"),
])
def test_bad_network_config_names_key_and_field(doc, words):
    with pytest.raises(ConfigError) as err:
        parse_flannel_config(doc, KEY)
    assert str(err.value).startswith(KEY) and words in str(err.value)


def test_routing_waits_for_the_datastore_then_resolves():
    cfg = parse_config(base(routing={"backend": "kernel"}))
    assert cfg.routing is None and cfg.awaits_datastore and cfg.bgp is None
    net = parse_flannel_config('{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan", "VNI": 7}}', KEY)
    full = resolve(cfg, net, N("10.244.3.0/24"), KEY)
    r = full.routing
    assert (r.network, r.subnet, r.vni, r.backend) == (N("10.244.0.0/16"), N("10.244.3.0/24"), 7, "kernel")
    assert full.node.vxlan_port == 8472 and full.bgp is not None and not full.awaits_datastore
    assert full.datastore_key == KEY


def test_host_gw_from_etcd_and_conflicts_named():
    cfg = parse_config(base())
    net = parse_flannel_config('{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}', KEY)
    assert resolve(cfg, net, N("10.244.3.0/24"), KEY).routing.backend == "host-gw"
    with pytest.raises(ConfigError, match="routing.backend.*host-gw.*" + KEY):
        resolve(parse_config(base(routing={"backend": "kernel"})), net, N("10.244.3.0/24"), KEY)
    with pytest.raises(ConfigError, match="routing.network.*differs"):
        resolve(parse_config(base(routing={"network": "10.9.0.0/16"})), net, N("10.244.3.0/24"), KEY)
    with pytest.raises(ConfigError, match="routing.subnet"):
        resolve(parse_config(base(routing={"subnet": "10.244.3.0/24"})), net, N("10.244.3.0/24"), KEY)


def test_datastore_fields_named():
    with pytest.raises(ConfigError, match="datastore.endpoints"):
        parse_config({"node": {"vtep": "192.0.2.1"}, "datastore": {"type": "etcd", "endpoints": []}})
    with pytest.raises(ConfigError, match="datastore.tls"):
        parse_config(base(datastore={"type": "etcd", "endpoints": ["a:1"], "tls": {"ca_file": "/x"}}))
    with pytest.raises(ConfigError, match="datastore.prefer"):
        parse_config(base(datastore={"type": "etcd", "endpoints": ["a:1"], "prefer": "both"}))


# -- keys and values -------------------------------------------------------------------------


def test_key_layout_and_value_are_flannels():
    assert lease_key(SUBNETS, N("10.244.1.0/24")) == "/coreos.com/network/subnets/10.244.1.0-24"
    assert subnet_of_key(SUBNETS, SUBNETS + "10.244.1.0-24") == N("10.244.1.0/24")
    with pytest.raises(LeaseValueError, match="10.244.1.0_24"):
        subnet_of_key(SUBNETS, SUBNETS + "10.244.1.0_24")
    attrs = own_attrs("kernel", "192.0.2.1", 1, bytes.fromhex("0200c0000201"))
    doc = json.loads(attrs.encode())
    assert doc == {"PublicIP": "192.0.2.1", "PublicIPv6": None, "BackendType": "vxlan",
                   "BackendData": {"VNI": 1, "VtepMAC": "02:00:c0:00:02:01"}}
    assert LeaseAttrs.decode(attrs.encode(), "k") == attrs
    hostgw = own_attrs("host-gw", "192.0.2.1", 1, b"\x02" * 6)
    assert json.loads(hostgw.encode()) == {"PublicIP": "192.0.2.1", "PublicIPv6": None, "BackendType": "host-gw"}


def test_flannels_own_lease_value_decodes():
    value = ('{"PublicIP":"10.0.0.5","PublicIPv6":null,"BackendType":"vxlan",'
             '"BackendData":{"VNI":1,"VtepMAC":"6e:1d:2a:3b:4c:5d"}}')
    attrs = LeaseAttrs.decode(value, "k")
    assert attrs.public_ip == A("10.0.0.5") and attrs.vtep_mac == "6e:1d:2a:3b:4c:5d"


# -- choosing ---------------------------------------------------------------------------------


def test_own_lease_is_kept_across_restarts():
    net = N("10.244.0.0/16")
    mine = LeaseAttrs(A("192.0.2.1"), "vxlan", 1, "02:00:00:00:00:01")
    other = LeaseAttrs(A("192.0.2.2"), "vxlan", 1, "02:00:00:00:00:02")
    leases = {N("10.244.9.0/24"): mine, N("10.244.8.0/24"): other}
    assert choose_subnet(net, 24, leases, A("192.0.2.1"), A("192.0.2.1")) == (N("10.244.9.0/24"), True)


def test_choice_is_free_never_the_first_and_prefers_the_old_subnet():
    net = N("10.244.0.0/28")  # four /30s; the first is never leased
    other = LeaseAttrs(A("192.0.2.2"), "host-gw")
    leases = {N("10.244.0.4/30"): other}
    for rid in range(1, 50):
        subnet, ours = choose_subnet(net, 30, leases, A("192.0.2.1"), A(f"10.0.0.{rid}"))
        assert not ours and subnet in (N("10.244.0.8/30"), N("10.244.0.12/30"))
    assert choose_subnet(net, 30, leases, A("192.0.2.1"), A("10.0.0.1"),
                         preferred=N("10.244.0.12/30"))[0] == N("10.244.0.12/30")
    full = {**leases, N("10.244.0.8/30"): other, N("10.244.0.12/30"): other}
    with pytest.raises(NetworkExhausted):
        choose_subnet(net, 30, full, A("192.0.2.1"), A("10.0.0.1"))


# -- renewal (fake time) -------------------------------------------------------------------------


def test_renewal_before_ttl_retry_and_expiry():
    r = Renewal(ttl_s=30, granted_at=100)
    assert not r.due(109) and r.due(110)
    r.renewed(110)
    assert r.expires_at == 140 and r.next_at == 120
    r.failed(120)
    assert r.failing_since == 120 and r.next_at == 122 and not r.expired(139)
    r.failed(122)
    assert r.failing_since == 120 and r.expired(140)
    r.renewed(141)
    assert r.failing_since is None and r.next_at == 151


# -- other nodes' leases -> the subnet table ----------------------------------------------------


def value(ip, mac="02:00:00:00:00:02", kind="vxlan"):
    return LeaseAttrs(A(ip), kind, 1 if kind == "vxlan" else None, mac if kind == "vxlan" else None).encode()


def test_watch_events_and_reset_feed_the_table():
    table = PrefixTable()
    own = N("10.244.1.0/24")
    remote = RemoteLeases(SUBNETS)
    subnets = DatastoreSubnets(table, 1, own)
    subnets.apply(remote.reset([(SUBNETS + "10.244.2.0-24", value("192.0.2.2")),
                                (SUBNETS + "junk", b"{}")]), now=1)
    entry = table.get("10.244.2.5/32") or table.lookup(A("10.244.2.5").packed)
    assert entry.vtep == "192.0.2.2" and entry.router_mac == bytes.fromhex("020000000002")
    assert entry.source is Source.STATIC and entry.encap == "vxlan"
    assert any("junk" in e for e in remote.errors)
    subnets.apply(remote.put(SUBNETS + "10.244.3.0-24", value("192.0.2.3", kind="host-gw")), now=2)
    assert table.lookup(A("10.244.3.9").packed).encap == "none"
    changes = remote.delete(SUBNETS + "10.244.2.0-24")
    assert [type(c) for c in changes] == [LeaseRemoved]
    subnets.apply(changes, now=3)
    assert table.lookup(A("10.244.2.5").packed) is None
    # a full re-read after compaction: what vanished meanwhile is withdrawn, what came is added
    changes = remote.reset([(SUBNETS + "10.244.4.0-24", value("192.0.2.4"))])
    assert {type(c) for c in changes} == {LeaseAdded, LeaseRemoved}
    subnets.apply(changes, now=4)
    assert table.lookup(A("10.244.3.9").packed) is None and table.lookup(A("10.244.4.9").packed).vtep == "192.0.2.4"


def test_prefer_says_who_wins_and_the_conflict_is_listed():
    for prefer, vtep in (("etcd", "192.0.2.2"), ("bgp", "192.0.2.9")):
        table = PrefixTable()
        table.install(PrefixEntry(N("10.244.2.0/24"), "192.0.2.9", b"\x02" * 6, 1, "192.0.2.9", "p", Source.BGP), 0)
        subnets = DatastoreSubnets(table, 1, N("10.244.1.0/24"), prefer=prefer)
        subnets.apply([LeaseAdded(N("10.244.2.0/24"), LeaseAttrs.decode(value("192.0.2.2"), "k"))], 1)
        assert table.lookup(A("10.244.2.1").packed).vtep == vtep
        assert subnets.conflicts and "10.244.2.0/24" in subnets.conflicts[0]


def test_a_lease_on_our_own_subnet_is_not_installed():
    table = PrefixTable()
    subnets = DatastoreSubnets(table, 1, N("10.244.1.0/24"))
    subnets.apply([LeaseAdded(N("10.244.1.0/24"), LeaseAttrs.decode(value("192.0.2.7"), "k"))], 1)
    assert table.lookup(A("10.244.1.1").packed) is None and "overlaps our subnet" in subnets.conflicts[0]
