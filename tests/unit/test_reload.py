"""A reloaded config: what the plan says changed, and the speaker taking neighbors and networks
while it runs (sessions back to back in memory, on a fake clock)."""

from __future__ import annotations

from typing import Any

from overlayd.config import Config, parse_config
from overlayd.config.reload import reload_plan
from overlayd.fabric.fdb import Source
from overlayd.sim.frames import ethernet, mac
from overlayd.wire.ethernet import BROADCAST
from tests.unit.test_speaker import Mesh, fdb

RED = 200


def config(**changes: Any) -> Config:
    data: dict[str, Any] = {
        "node": {"name": "n1", "vtep": "10.0.0.1"},
        "bgp": {"asn": 65000, "neighbors": [{"address": "10.0.0.2", "asn": 65000},
                                            {"address": "10.0.0.3", "asn": 65000}]},
        "networks": [{"name": "blue", "vni": 100, "device": "blue0", "vteps": ["10.0.0.9"]}],
    }
    for key, value in changes.items():
        data[key] = value
    return parse_config(data)


def with_bgp(**bgp: Any) -> Config:
    base = {"asn": 65000, "neighbors": [{"address": "10.0.0.2", "asn": 65000},
                                        {"address": "10.0.0.3", "asn": 65000}]}
    return config(bgp={**base, **bgp})


# -- the plan -------------------------------------------------------------------------------


def test_the_same_config_changes_nothing():
    plan = reload_plan(config(), config())
    assert plan.empty and not plan.restart_needed and plan.describe() == "nothing changed"


def test_neighbors_added_removed_and_changed():
    new = with_bgp(neighbors=[{"address": "10.0.0.2", "asn": 65001},  # changed: a new session
                              {"address": "10.0.0.4", "asn": 65000}])
    plan = reload_plan(config(), new)
    assert not plan.restart_needed
    assert sorted(plan.neighbors_removed) == ["10.0.0.2", "10.0.0.3"]
    assert sorted(str(nb.address) for nb in plan.neighbors_added) == ["10.0.0.2", "10.0.0.4"]
    assert plan.describe() == "neighbors - 10.0.0.2, 10.0.0.3; neighbors + 10.0.0.2, 10.0.0.4"


def test_a_description_alone_keeps_the_session():
    new = with_bgp(neighbors=[{"address": "10.0.0.2", "asn": 65000, "description": "rack 2"},
                              {"address": "10.0.0.3", "asn": 65000}])
    plan = reload_plan(config(), new)
    assert plan.empty and not plan.restart_needed


def test_networks_added_removed_and_their_static_entries_changed():
    new = config(networks=[
        {"name": "blue", "vni": 100, "device": "blue0", "vteps": ["10.0.0.8"],
         "fdb": [{"mac": "02:00:00:00:00:01", "vtep": "10.0.0.8"}]},
        {"name": "red", "vni": RED, "device": "red0"},
    ])
    plan = reload_plan(config(), new)
    assert not plan.restart_needed
    assert [n.name for n in plan.networks_added] == ["red"] and not plan.networks_removed
    [(was, now)] = plan.networks_changed
    assert (was.vteps, now.vteps) == (config().networks[0].vteps, new.networks[0].vteps)
    back = reload_plan(new, config())
    assert [n.name for n in back.networks_removed] == ["red"] and len(back.networks_changed) == 1


def test_what_only_a_restart_changes_is_named_key_by_key():
    cases = {
        "node.vxlan_port": config(node={"name": "n1", "vtep": "10.0.0.1", "vxlan_port": 4790}),
        "bgp.asn": with_bgp(asn=65001),
        "bgp.hold_time": with_bgp(hold_time=30),
        "networks[blue].vni": config(networks=[{"name": "blue", "vni": 101, "device": "blue0"}]),
        "networks[blue].address": config(networks=[{"name": "blue", "vni": 100, "device": "blue0",
                                                    "vteps": ["10.0.0.9"], "address": "10.1.0.1/24"}]),
        "conntrack": config(conntrack={"max_entries": 1024}),
        "metrics": config(metrics={"listen": "127.0.0.1:9477"}),
    }
    for key, new in cases.items():
        plan = reload_plan(config(), new)
        assert plan.restart_needed == [key], (key, plan.restart_needed)


def test_a_kernel_segment_or_a_new_unicast_family_needs_a_restart():
    blue = {"name": "blue", "vni": 100, "device": "br-blue", "backend": "kernel"}
    green = {"name": "green", "vni": 300, "device": "br-green", "backend": "kernel"}
    plan = reload_plan(config(networks=[blue]), config(networks=[blue, green]))
    assert plan.restart_needed == ["networks[green] (a kernel segment: added or removed at start only)"]
    unicast = with_bgp(neighbors=[{"address": "10.0.0.2", "asn": 65000, "families": ["evpn", "ipv4-unicast"]},
                                  {"address": "10.0.0.3", "asn": 65000}])
    assert reload_plan(config(), unicast).restart_needed == [
        "bgp.neighbors[].families (the unicast families carried)"]


ROUTING = {"vni": 1, "network": "10.244.0.0/16", "subnet": "10.244.1.0/24"}
WEB = {"name": "web", "vip": "10.96.0.10", "port": 80, "backends": ["10.244.2.5:8080"]}


def test_services_change_live_and_their_network_only_with_a_restart():
    base = config(routing=ROUTING, services_network="10.96.0.0/12")
    plan = reload_plan(base, config(routing=ROUTING, services_network="10.96.0.0/12", services=[WEB]))
    assert plan.services_changed and not plan.restart_needed and plan.describe() == "services"
    plan = reload_plan(base, config(routing=ROUTING, services_network="10.96.0.0/16"))
    assert plan.restart_needed == ["services_network"]
    plan = reload_plan(base, config(routing={**ROUTING, "subnet": "10.244.3.0/24"}, services_network="10.96.0.0/12"))
    assert plan.restart_needed == ["routing.subnet"]


# -- the speaker, live --------------------------------------------------------------------------


def add_red(m: Mesh, i: int) -> None:
    """Node i's config gains network red (VNI 200): the daemon's part (a segment), then the speaker's."""
    node = m[i]
    data = node.config.model_dump(mode="json", exclude_defaults=True)
    data["networks"].append({"name": "red", "vni": RED, "device": "red0"})
    node.config = parse_config(data)
    node.switch.add_segment(RED, "red", [mac(2000 + i)])
    node.speaker.add_network(node.config, RED, m.now)


def remove_red(m: Mesh, i: int) -> None:
    node = m[i]
    data = node.config.model_dump(mode="json", exclude_defaults=True)
    data["networks"] = [n for n in data["networks"] if n["name"] != "red"]
    node.config = parse_config(data)
    node.speaker.remove_network(node.config, RED, m.now)
    node.switch.remove_segment(RED)
    node.speaker.local_events(node.switch.pop_events(), m.now)


def established_at(m: Mesh) -> dict[tuple[int, str], float | None]:
    return {(i, a): p.established for i, n in m.nodes.items() for a, p in n.speaker.peers.items()}


def test_a_network_joins_and_leaves_while_the_others_carry_on():
    m = Mesh(3)
    sessions = established_at(m)
    m[1].tap(ethernet(BROADCAST, mac(1), 0x0800, b"x" * 46), m.now)
    m.pump()
    blue_on_2 = fdb(m[2])
    add_red(m, 2)  # node 2 first: node 1's red joins a network that already has members
    m.pump()
    add_red(m, 1)
    m.pump()
    assert list(m[1].switch.flood.targets(RED)) == ["10.0.0.2"]
    assert list(m[2].switch.flood.targets(RED)) == ["10.0.0.1"]
    assert m[3].switch.flood.targets(RED) == ()  # node 3 has no red: it imports nothing for it
    red_mac = mac(77)
    m[1].switch.from_tap(RED, ethernet(BROADCAST, red_mac, 0x0800, b"x" * 46), m.now)
    m[1].speaker.local_events(m[1].switch.pop_events(), m.now)
    m.pump()
    assert m[2].switch.fdb.get(RED, red_mac).vtep == "10.0.0.1"

    remove_red(m, 1)
    m.pump()
    assert m[2].switch.flood.targets(RED) == ()
    assert m[2].switch.fdb.get(RED, red_mac) is None
    assert not any(e.vni == RED for e in m[1].switch.fdb)
    assert RED not in {s.vni for s in m[1].switch.segments()}
    assert not [p for p in m[1].speaker.rib.bests() if p.is_local and getattr(p.route, "vni", None) == RED]
    # blue never noticed: same sessions, same entries
    assert established_at(m) == sessions
    assert fdb(m[2]) == blue_on_2 and m[2].switch.fdb.get(100, mac(1)).vtep == "10.0.0.1"


def test_a_removed_neighbor_gets_a_cease_and_its_routes_go_at_once():
    m = Mesh(3)
    sessions = established_at(m)
    m[3].tap(ethernet(BROADCAST, mac(3), 0x0800, b"x" * 46), m.now)
    m.pump()
    assert m[1].switch.fdb.get(100, mac(3)).vtep == "10.0.0.3"
    peer = m[1].speaker.remove_neighbor("10.0.0.3", m.now)
    assert peer is not None and "10.0.0.3" not in m[1].speaker.peers
    m.pump()
    assert m[1].switch.fdb.get(100, mac(3)) is None
    assert list(m[1].switch.flood.targets(100)) == ["10.0.0.2"]
    assert not list(m[1].speaker.rib.paths_from("10.0.0.3"))
    assert "administrative shutdown" in m[3].speaker.stats["10.0.0.1"].last_error.lower() or \
        m[3].speaker.peers["10.0.0.1"].established is None
    assert m[1].speaker.peers["10.0.0.2"].established == sessions[(1, "10.0.0.2")]


def test_an_added_neighbor_comes_up_and_brings_its_routes():
    m = Mesh(3)
    m[1].speaker.remove_neighbor("10.0.0.3", m.now)
    m[3].speaker.remove_neighbor("10.0.0.1", m.now)
    m.links = [link for link in m.links if {link[0].peer, link[2].peer} != {"10.0.0.1", "10.0.0.3"}]
    m.pump()
    assert m[1].switch.flood.sources(100, "10.0.0.3") == frozenset()
    nb1 = next(nb for nb in m[1].config.bgp.neighbors if str(nb.address) == "10.0.0.3")
    nb3 = next(nb for nb in m[3].config.bgp.neighbors if str(nb.address) == "10.0.0.1")
    pa = m[1].speaker.add_neighbor(nb1, m.now)
    pb = m[3].speaker.add_neighbor(nb3, m.now)
    ca = pa.connect_due(m.now)
    cb = pb.accept(m.now)
    pa.connection_made(ca, m.now)
    m.links.append((pa, ca, pb, cb))
    m.pump()
    assert pa.established is not None and pb.established is not None
    assert m[1].switch.flood.sources(100, "10.0.0.3") == frozenset({Source.BGP})
