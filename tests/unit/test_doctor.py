"""`overlayctl doctor`'s checks (status/doctor.py), each on made-up daemon facts and host readings;
the daemon's side of them (status/facts.py) on real tables; overlayctl's exit status."""

from __future__ import annotations

import copy
import json

import pytest

import tests.unit.test_speaker as base
from overlayd.status import ctl, doctor
from overlayd.status.doctor import Finding, Host, Probe, Severity
from overlayd.status.view import SwitchView
from tests.unit.test_routed_speaker import RoutedNode

FACTS = {
    "node": "a", "vtep": "10.0.0.1", "family": 4, "vxlan_port": 4789, "vxlan_overhead": 50, "underlay_mtu": None,
    "uptime_s": 120.0,
    "devices": [{"name": "blue0", "role": "network blue", "kind": "tap", "encap": "VXLAN", "overhead": 50,
                 "mtu": 1450, "config": None}],
    "vteps": ["10.0.0.2", "10.0.0.3"],
    "peers": [], "route_flaps": None, "flap_window_s": 300.0, "flap_changes": 6,
    "routing": None, "subnets": [], "subnet_conflicts": [], "kernel": None,
}


def facts(**changes) -> dict:
    f = copy.deepcopy(FACTS)
    f.update(changes)
    return f


def healthy_host(**changes) -> Host:
    host = Host(underlay="eth0", mtus={"eth0": 1500, "blue0": 1450},
                sysctls={"net.ipv4.conf.all.rp_filter": "0", "net.ipv4.conf.eth0.rp_filter": "0",
                         "net.ipv4.conf.blue0.rp_filter": "0", "net.ipv4.ip_forward": "0"},
                probes={"10.0.0.2": Probe("silent", 1500), "10.0.0.3": Probe("silent", 1500)}, probe_bytes=1500)
    for key, value in changes.items():
        setattr(host, key, value)
    return host


def worst(findings: list[Finding], check: str) -> list[tuple[str, str]]:
    """(severity, subject) of a check's findings that are not ok."""
    return [(f.severity.label, f.subject) for f in findings if f.check == check and f.severity > Severity.OK]


def test_a_healthy_node_has_only_ok_findings_and_exits_0():
    found = doctor.run_checks(facts(), healthy_host())
    assert {f.severity for f in found} == {Severity.OK}
    assert {f.check for f in found} >= {"mtu", "path-mtu", "rp_filter", "vxlan-port", "udp-checksum"}
    assert doctor.exit_status(found) == 0


# -- MTU ------------------------------------------------------------------------------------------


def test_a_tap_mtu_above_the_underlay_minus_vxlan_is_an_error_naming_device_and_fix():
    found = doctor.check_mtu(facts(), healthy_host(mtus={"eth0": 1500, "blue0": 1500}))
    [f] = [f for f in found if f.severity is Severity.ERROR]
    assert f.subject == "blue0" and "1500 is above 1450" in f.message and "50 bytes of VXLAN over IPv4" in f.message
    assert f.fix.startswith("ip link set blue0 mtu 1450")
    assert doctor.exit_status(found) == doctor.EXIT_ERRORS == 4


def test_ipv6_vxlan_needs_70_bytes_and_a_configured_mtu_is_fixed_in_the_config():
    f6 = facts(family=6, vtep="fd00::1", devices=[dict(FACTS["devices"][0], overhead=70, config="networks[0].mtu")])
    [f] = doctor.check_mtu(f6, healthy_host(mtus={"eth0": 1500, "blue0": 1450}))
    assert f.severity is Severity.ERROR and "above 1430" in f.message and "70 bytes of VXLAN over IPv6" in f.message
    assert f.fix.startswith("networks[0].mtu: 1430")
    [ok] = doctor.check_mtu(f6, healthy_host(mtus={"eth0": 1500, "blue0": 1430}))
    assert ok.severity is Severity.OK


def test_node_underlay_mtu_lowers_the_limit_and_may_not_exceed_the_device():
    found = doctor.check_mtu(facts(underlay_mtu=1400), healthy_host())
    assert worst(found, "mtu") == [("error", "blue0")]  # 1450 > 1400 - 50
    found = doctor.check_mtu(facts(underlay_mtu=9000), healthy_host())
    assert worst(found, "mtu") == [("error", "eth0")]
    assert "node.underlay_mtu 9000 is above eth0's mtu 1500" in found[0].message


def test_a_missing_device_and_an_unknown_underlay_are_reported():
    assert worst(doctor.check_mtu(facts(), healthy_host(mtus={"eth0": 1500})), "mtu") == [("error", "blue0")]
    [f] = doctor.check_mtu(facts(), healthy_host(underlay=None))
    assert f.severity is Severity.WARNING and "not on this host" in f.message


def test_ipip_devices_count_their_own_overhead_and_no_probe_without_vxlan():
    f = facts(devices=[{"name": "ovl0", "role": "routing", "kind": "ipip", "encap": "IP in IP", "overhead": 20,
                        "mtu": 1480, "config": None}])
    host = healthy_host(mtus={"eth0": 1500, "ovl0": 1480})
    assert [x.severity for x in doctor.check_mtu(f, host)] == [Severity.OK]
    assert doctor.probe_size(f, host) is None


def test_the_probe_is_the_largest_vxlan_packet_but_no_larger_than_the_underlay():
    assert doctor.probe_size(facts(), healthy_host()) == 1500
    assert doctor.probe_size(facts(), healthy_host(mtus={"eth0": 1500, "blue0": 1400})) == 1450
    assert doctor.probe_size(facts(), healthy_host(mtus={"eth0": 1500, "blue0": 9000})) == 1500


# -- the probes -----------------------------------------------------------------------------------


@pytest.mark.parametrize("probe, check, severity", [
    (Probe("refused"), "vxlan-port", Severity.ERROR),
    (Probe("unreachable", detail="No route to host"), "vxlan-port", Severity.ERROR),
    (Probe("error", detail="Permission denied"), "vxlan-port", Severity.WARNING),
    (Probe("too_big", 1400, "fragmentation needed"), "path-mtu", Severity.ERROR),
    (Probe("silent", 1500), "vxlan-port", Severity.OK),
])
def test_each_probe_outcome_has_its_finding(probe, check, severity):
    host = healthy_host(probes={"10.0.0.2": probe, "10.0.0.3": Probe("silent", 1500)})
    found = [f for f in doctor.run_checks(facts(), host) if f.subject == "10.0.0.2" and f.check == check]
    assert [f.severity for f in found] == [severity]


def test_a_small_path_mtu_names_the_underlay_mtu_to_set():
    host = healthy_host(probes={"10.0.0.2": Probe("too_big", 1400, "ICMP fragmentation needed"),
                                "10.0.0.3": Probe("silent", 1500)})
    [f] = [f for f in doctor.check_path_mtu(facts(), host) if f.severity is Severity.ERROR]
    assert "carries 1400 bytes, the overlay sends 1500" in f.message
    assert f.fix.startswith("set node.underlay_mtu: 1400 (overlay devices then get mtu 1350)")
    refused = doctor.check_vxlan_port(facts(), healthy_host(probes={"10.0.0.2": Probe("refused")}))
    assert "nothing listens on UDP port 4789" in refused[0].message


# -- rp_filter and ip_forward ---------------------------------------------------------------------------


def test_strict_rp_filter_on_an_overlay_device_is_a_warning_with_a_loose_fix():
    host = healthy_host()
    host.sysctls["net.ipv4.conf.blue0.rp_filter"] = "1"
    found = doctor.check_rp_filter(facts(), host)
    assert worst(found, "rp_filter") == [("warning", "blue0")]
    [f] = [f for f in found if f.subject == "blue0"]
    assert f.fix.startswith("sysctl -w net.ipv4.conf.blue0.rp_filter=2")
    assert doctor.exit_status(found) == doctor.EXIT_WARNINGS == 1


def test_strict_all_applies_to_every_device_and_the_fix_lowers_all_too():
    host = healthy_host()
    host.sysctls["net.ipv4.conf.all.rp_filter"] = "1"
    host.routes_back = {"10.0.0.2": "eth0", "10.0.0.3": "eth0"}
    found = doctor.check_rp_filter(facts(), host)
    assert worst(found, "rp_filter") == [("warning", "eth0"), ("warning", "blue0")]
    assert all(f.fix.startswith("sysctl -w net.ipv4.conf.all.rp_filter=2 net.ipv4.conf.") for f in found)


def test_strict_rp_filter_where_the_route_back_leaves_elsewhere_is_an_error():
    host = healthy_host(routes_back={"10.0.0.2": "eth0", "10.0.0.3": "eth1"})
    host.sysctls["net.ipv4.conf.eth0.rp_filter"] = "1"
    [f] = [f for f in doctor.check_rp_filter(facts(), host) if f.subject == "eth0"]
    assert f.severity is Severity.ERROR and "from 10.0.0.3" in f.message and "leaves through eth1" in f.message
    host.sysctls["net.ipv4.conf.eth0.rp_filter"] = "2"  # loose: only a missing route drops
    assert worst(doctor.check_rp_filter(facts(), host), "rp_filter") == []
    host.routes_back["10.0.0.3"] = None
    assert worst(doctor.check_rp_filter(facts(), host), "rp_filter") == [("error", "eth0")]


def test_the_sources_checked_are_the_vteps_and_remote_subnets():
    f = facts(routing={"backend": "userspace", "device": "ovl0", "network": "10.244.0.0/16", "families": [4]},
              subnets=[{"prefix": "10.244.1.0/24", "local": True}, {"prefix": "10.244.2.0/24", "local": False}])
    assert doctor.rp_filter_sources(f, healthy_host()) == {"eth0": ["10.0.0.2", "10.0.0.3"], "ovl0": ["10.244.2.1"]}
    f["routing"]["backend"] = "host-gw"
    assert doctor.rp_filter_sources(f, healthy_host()) == {"eth0": ["10.244.2.1"]}


def test_ip_forward_matters_only_when_routing_is_configured():
    assert doctor.check_forwarding(facts(), healthy_host()) == []
    f = facts(routing={"backend": "userspace", "device": "ovl0", "network": "10.244.0.0/16", "families": [4, 6]})
    host = healthy_host()
    host.sysctls["net.ipv6.conf.all.forwarding"] = "1"
    found = doctor.check_forwarding(f, host)
    assert [(x.severity.label, x.subject) for x in found] == [("error", "net.ipv4.ip_forward"),
                                                              ("ok", "net.ipv6.conf.all.forwarding")]
    assert found[0].fix.startswith("sysctl -w net.ipv4.ip_forward=1")


# -- IPv6 UDP checksums -----------------------------------------------------------------------------


def test_zero_udp_checksums_on_ipv6():
    vx = {"name": "vx100", "role": "network blue", "kind": "vxlan", "encap": "VXLAN", "overhead": 70,
          "mtu": 1430, "config": None}
    f6 = facts(family=6, vtep="fd00::1", devices=[vx])
    found = doctor.check_udp_checksum(f6, healthy_host(vxlan={"vx100": {"udp6zerocsumtx": True}},
                                                       udp6_checksum_errors=0))
    assert worst(found, "udp-checksum") == [("error", "vx100")]
    found = doctor.check_udp_checksum(f6, healthy_host(vxlan={"vx100": {"udp6zerocsumrx": False}},
                                                       udp6_checksum_errors=12))
    assert worst(found, "udp-checksum") == [("warning", "fd00::1")]
    assert "dropped 12 IPv6 UDP datagrams" in found[-1].message
    assert worst(doctor.check_udp_checksum(facts(), healthy_host(udp6_checksum_errors=5)), "udp-checksum") == []


# -- BGP, flaps, subnets, kernel ------------------------------------------------------------------------


def peer(**changes) -> dict:
    p = {"neighbor": "10.0.0.2", "state": "Established", "uptime_s": 61.0, "last_error": "",
         "established_count": 1, "passive": False, "hold_time_s": 9, "recent_downs": 0, "flap_downs": 3,
         "last_down_reason": None}
    p.update(changes)
    return p


@pytest.mark.parametrize("error, cause", [
    ("connect failed: Connection refused", "nothing listens on the peer's BGP port"),
    ("connect failed: connect timed out", "cannot be reached"),
    ("peer sent NOTIFICATION OPEN message error/bad peer AS", "the AS numbers disagree"),
    ("sent NOTIFICATION OPEN message error/bad peer AS: peer AS 65001, expected 65000", "the AS numbers disagree"),
    ("peer sent NOTIFICATION cease/connection rejected", "does not have us as a neighbor"),
    ("connection closed by the peer", "does not know us"),
    ("", "no connection was ever answered"),
])
def test_a_neighbor_never_established_is_an_error_with_its_likely_cause(error, cause):
    f = facts(peers=[peer(state="Active", uptime_s=None, last_error=error, established_count=0)])
    [x] = doctor.check_neighbors(f, healthy_host())
    assert x.severity is Severity.ERROR and "never Established" in x.message and cause in x.message
    assert x.fix


def test_a_young_daemon_is_still_connecting_and_a_lost_session_is_an_error():
    f = facts(uptime_s=3.0, peers=[peer(state="Connect", established_count=0)])
    assert [x.severity for x in doctor.check_neighbors(f, healthy_host())] == [Severity.INFO]
    f = facts(peers=[peer(state="Idle", established_count=2, last_error="hold timer expired: nothing heard")])
    [x] = doctor.check_neighbors(f, healthy_host())
    assert x.severity is Severity.ERROR and "keepalives get lost" in x.message


def test_a_flapping_session_and_flapping_routes_are_warnings():
    f = facts(peers=[peer(recent_downs=4, last_down_reason="hold timer expired")],
              route_flaps=[{"route": "macip 02:00:00:00:00:02 vni 100 rd 10.0.0.2:100", "changes": 8,
                            "peer": "10.0.0.2", "next_hop": "10.0.0.2", "since_s": 40.0}])
    found = doctor.run_checks(f, healthy_host())
    assert worst(found, "bgp") == [("warning", "10.0.0.2")]
    assert worst(found, "route-flap") == [("warning", "macip 02:00:00:00:00:02 vni 100 rd 10.0.0.2:100")]
    assert doctor.exit_status(found) == 1
    assert worst(doctor.run_checks(facts(route_flaps=[]), healthy_host()), "route-flap") == []


def test_duplicate_subnets_are_errors_overlaps_warnings():
    routing = {"backend": "userspace", "device": "ovl0", "network": "10.244.0.0/16", "families": [4]}
    f = facts(routing=routing, subnet_conflicts=[
        {"reason": "duplicate", "prefix": "10.244.1.0/24", "text": "subnet 10.244.1.0/24 from node 10.0.0.3 ..."},
        {"reason": "overlap", "prefix": "10.244.2.0/23", "text": "subnet 10.244.2.0/23 overlaps ..."}])
    assert worst(doctor.check_subnets(f, healthy_host()), "subnets") == [
        ("error", "10.244.1.0/24"), ("warning", "10.244.2.0/23")]


def test_kernel_entries_out_of_step_are_errors_unless_pending():
    kernel = {"out_of_step": [{"entry": "route 10.244.2.0/24", "state": "pending"},
                              {"entry": "route 10.244.3.0/24", "state": "File exists"}],
              "drift_repairs": 0, "failing": 1, "last_errors": []}
    found = doctor.check_kernel(facts(kernel=kernel), healthy_host())
    assert [(x.severity.label, x.subject) for x in found] == [("warning", "route 10.244.2.0/24"),
                                                              ("error", "route 10.244.3.0/24")]
    assert [x.severity for x in doctor.check_kernel(facts(kernel=dict(kernel, out_of_step=[])), healthy_host())] \
        == [Severity.OK]


# -- the daemon's facts, from real tables -------------------------------------------------------------


def test_facts_name_the_vteps_devices_and_duplicate_subnets(monkeypatch):
    monkeypatch.setattr(base, "Node", RoutedNode)
    monkeypatch.setattr(RoutedNode, "subnets", {1: "10.244.0.0/25", 2: "10.244.0.0/25", 3: "10.244.0.128/25"})
    m = base.Mesh(3)
    node = m[3]
    view = SwitchView(node.config, node.switch, started=0.0, mtus={}, speaker=node.speaker)
    f = json.loads(json.dumps(view.doctor(m.now + 30)))
    assert f["vteps"] == ["10.0.0.1", "10.0.0.2"]
    assert f["devices"] == [{"name": "ovl0", "role": "routing", "kind": "tun", "encap": "VXLAN", "overhead": 50,
                             "mtu": None, "config": None}]
    assert [(p["neighbor"], p["state"], p["established_count"]) for p in f["peers"]] == [
        ("10.0.0.1", "Established", 1), ("10.0.0.2", "Established", 1)]
    [dup] = f["subnet_conflicts"]
    assert dup["reason"] == "duplicate" and dup["prefix"] == "10.244.0.0/25" and "10.0.0.1 keeps it" in dup["text"]
    assert f["routing"] == {"backend": "userspace", "device": "ovl0", "network": "10.244.0.0/24", "families": [4]}
    assert f["route_flaps"] == [] and f["kernel"] is None
    assert [x.severity.label for x in doctor.check_subnets(f, healthy_host())] == ["error"]


# -- overlayctl doctor ---------------------------------------------------------------------------------


@pytest.fixture
def fake_daemon(monkeypatch):
    """overlayctl against canned facts and host readings: no socket, no netlink, no probes."""
    state = {"facts": facts(), "host": healthy_host()}
    monkeypatch.setattr(ctl, "request", lambda path, command, **args: state["facts"])
    import overlayd.io.host
    monkeypatch.setattr(overlayd.io.host, "read_host", lambda f, probe=True: state["host"])
    return state


def test_overlayctl_doctor_exit_status_follows_the_worst_finding(fake_daemon, capsys):
    assert ctl.main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("doctor: node a, vtep 10.0.0.1") and out.rstrip().endswith("healthy")
    fake_daemon["host"].sysctls["net.ipv4.conf.blue0.rp_filter"] = "1"
    assert ctl.main(["doctor"]) == 1
    fake_daemon["host"].mtus["blue0"] = 1500
    assert ctl.main(["doctor"]) == 4
    out = capsys.readouterr().out.splitlines()
    errors = [i for i, line in enumerate(out) if line.startswith("ERROR")]
    assert "blue0" in out[errors[0]] and out[errors[0] + 1].strip().startswith("fix: ip link set blue0 mtu 1450")


def test_overlayctl_doctor_json(fake_daemon, capsys):
    fake_daemon["host"].sysctls["net.ipv4.conf.blue0.rp_filter"] = "1"
    assert ctl.main(["doctor", "--json"]) == 1
    result = json.loads(capsys.readouterr().out)
    assert result["exit_status"] == 1 and result["counts"]["warning"] == 1
    [w] = [f for f in result["findings"] if f["severity"] == "warning"]
    assert set(w) == {"check", "severity", "subject", "message", "fix"} and w["subject"] == "blue0"
