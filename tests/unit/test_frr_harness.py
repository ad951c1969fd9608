"""The pure parts of the FRR harness (tools/frr.py): the config it writes and how it
reads FRR's EVPN JSON. The config was checked against FRR 8.4 by
tests/interop/test_frr.py; the JSON paths below are ones FRR 8.4.4 printed there."""

from __future__ import annotations

from tools.frr import Neighbor, bgp_config, summarize_evpn


def test_bgp_config_activates_each_neighbor_in_its_families_only():
    config = bgp_config(65000, "10.0.0.9", [
        Neighbor("10.0.0.1", 65000, families=("ipv4-unicast",), rr_client=True),
        Neighbor("10.0.0.2", 65001, families=("ipv4-unicast", "l2vpn-evpn"), passive=True),
    ], networks=["10.8.0.0/24", "fd00:8::/64"], redistribute=["connected"], debug=())
    assert config.splitlines() == [
        "frr defaults datacenter",
        "!",
        "router bgp 65000",
        " bgp router-id 10.0.0.9",
        " no bgp default ipv4-unicast",
        " no bgp network import-check",
        " timers bgp 3 9",
        " neighbor 10.0.0.1 remote-as 65000",
        " neighbor 10.0.0.1 timers connect 1",
        " neighbor 10.0.0.2 remote-as 65001",
        " neighbor 10.0.0.2 timers connect 1",
        " neighbor 10.0.0.2 passive",
        " address-family ipv4 unicast",
        "  neighbor 10.0.0.1 activate",
        "  neighbor 10.0.0.1 route-reflector-client",
        "  neighbor 10.0.0.2 activate",
        "  network 10.8.0.0/24",
        "  redistribute connected",
        " exit-address-family",
        " address-family l2vpn evpn",
        "  neighbor 10.0.0.2 activate",
        " exit-address-family",
        "exit",
    ]


def test_bgp_config_for_a_vtep():
    config = bgp_config(65000, "10.0.0.2", [Neighbor("10.0.0.1", 65000)], hold_time=30,
                        advertise_all_vni=True, debug=("bgp updates",))
    lines = config.splitlines()
    assert lines[:3] == ["frr defaults datacenter", "debug bgp updates", "!"]
    assert " timers bgp 10 30" in lines
    assert lines[-5:] == [" address-family l2vpn evpn", "  neighbor 10.0.0.1 activate",
                          "  advertise-all-vni", " exit-address-family", "exit"]


# `show bgp l2vpn evpn route detail json`, FRR 8.4.4: overlayd's MAC/IP route, and FRR's own type-3.
TYPE2_ROUTE = {
    "prefix": "[2]:[0]:[48]:[7e:11:e2:8d:90:15]:[32]:[192.168.100.1]", "prefixLen": 352,
    "rd": "10.0.0.1:100", "routeType": 2, "ethTag": 0, "macLen": 48, "mac": "7e:11:e2:8d:90:15",
    "ipLen": 32, "ip": "192.168.100.1",
}
TYPE2_PATH = {
    "VNI": "100", "vni": "100", "aspath": {"string": "Local", "segments": [], "length": 0},
    "origin": "IGP", "locPrf": 100, "valid": True, "version": 3,
    "bestpath": {"bestpathFromAs": 0, "overall": True, "selectionReason": "First path received"},
    "extendedCommunity": {"string": "RT:65000:100 ET:8"},
    "nexthops": [{"ip": "10.0.0.1", "afi": "ipv4", "metric": 0, "accessible": True, "used": True}],
    "peer": {"peerId": "10.0.0.1", "routerId": "10.0.0.1", "type": "internal"},
}
TYPE3_ROUTE = {"prefix": "[3]:[0]:[32]:[10.0.0.2]", "prefixLen": 352, "rd": "10.0.0.2:2",
               "routeType": 3, "ethTag": 0, "ipLen": 32, "ip": "10.0.0.2"}
TYPE3_PATH = {
    "VNI": "100", "vni": "100", "origin": "IGP", "weight": 32768, "valid": True, "sourced": True,
    "local": True, "bestpath": {"bestpathFromAs": 0, "overall": True},
    "extendedCommunity": {"string": "ET:8 RT:65000:100"},
    "pmsi": {"tunnelType": "Ingress Replication", "label": 100},
    "nexthops": [{"ip": "10.0.0.2", "hostname": "vm", "afi": "ipv4", "used": True}],
    "peer": {"peerId": "0.0.0.0", "routerId": "10.0.0.2"},
}


def test_summarize_evpn_reads_frrs_detailed_json():
    row = summarize_evpn("10.0.0.1:100", TYPE2_ROUTE["prefix"], TYPE2_ROUTE, TYPE2_PATH)
    assert {k: v for k, v in row.items() if k != "raw"} == {
        "rd": "10.0.0.1:100", "prefix": TYPE2_ROUTE["prefix"], "type": 2, "etag": 0,
        "mac": "7e:11:e2:8d:90:15", "ip": "192.168.100.1", "vni": 100, "next_hop": "10.0.0.1",
        "route_targets": ["65000:100"], "encapsulations": ["8"],
        "extended_communities": "RT:65000:100 ET:8", "pmsi": None, "best": True, "valid": True,
        "local": False, "peer": "10.0.0.1",
    }
    row = summarize_evpn("10.0.0.2:2", TYPE3_ROUTE["prefix"], TYPE3_ROUTE, TYPE3_PATH)
    assert (row["type"], row["ip"], row["mac"], row["local"], row["peer"]) == (
        3, "10.0.0.2", None, True, "0.0.0.0")
    assert row["pmsi"] == {"tunnelType": "Ingress Replication", "label": 100}
