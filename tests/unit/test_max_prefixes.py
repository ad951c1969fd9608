"""Max-prefix per BGP peer: routes beyond the limit refused (warn) or the session torn down
with Cease/1 and an idle time (teardown); the speaker between real Switches, sessions in memory."""

from __future__ import annotations

import ipaddress

from overlayd.config import parse_config
from overlayd.control.prefix_limit import PrefixLimit, Verdict
from overlayd.control.session import State
from overlayd.control.speaker import Speaker
from overlayd.dataplane.switch import Switch
from overlayd.sim.frames import mac
from overlayd.wire.bgp import errors as E
from overlayd.wire.bgp.attributes import Encapsulation, PathAttributes, RouteTarget
from overlayd.wire.bgp.evpn import MacIpRoute, RouteDistinguisher
from overlayd.wire.bgp.update import Update
from tests.unit.test_speaker import VNI, Mesh, _inject, fdb

PEER = "10.0.0.2"


def routes(n: int, first: int = 0) -> list[MacIpRoute]:
    rd = RouteDistinguisher.parse(f"{PEER}:100")
    return [MacIpRoute(rd, mac(5000 + first + i), None, vni=VNI) for i in range(n)]


ATTRS = PathAttributes(next_hop=ipaddress.ip_address(PEER), local_pref=100,
                       ext_communities=(RouteTarget.parse("65000:100"), Encapsulation()))


def announce(m: Mesh, rs: list[MacIpRoute], attrs: PathAttributes = ATTRS) -> None:
    for i in range(0, len(rs), 32):
        _inject(m, Update(announced=tuple(rs[i : i + 32]), attributes=attrs))


def limited(action: str, limit: int = 10, restart_s: float = 5.0) -> Mesh:
    m = Mesh(2)
    m[1].speaker.prefix_limits[PEER] = PrefixLimit(limit, action, restart_s)
    return m


def test_the_config_reaches_the_speaker_and_the_number_alone_is_the_limit():
    def speaker(max_prefixes) -> Speaker:
        nb = {"address": PEER, "asn": 65000}
        if max_prefixes is not None:
            nb["max_prefixes"] = max_prefixes
        cfg = parse_config({"node": {"vtep": "10.0.0.1"}, "networks": [{"name": "b", "vni": VNI, "device": "b0"}],
                            "bgp": {"asn": 65000, "neighbors": [nb]}})
        return Speaker(cfg, Switch(4789, 300), 0.0)

    default = speaker(None).prefix_limits[PEER]
    print(f"\ndefault max_prefixes: {default.limit} ({default.action}, warning at {default.warn_at}, "
          f"restart after {default.restart_s:g} s when torn down)")
    assert (default.limit, default.action, default.warn_at) == (200_000, "warn", 180_000)
    assert speaker(5000).prefix_limits[PEER].limit == 5000
    custom = speaker({"limit": 7, "action": "teardown", "restart_s": 2}).prefix_limits[PEER]
    assert (custom.limit, custom.action, custom.restart_s) == (7, "teardown", 2.0)


def test_warn_refuses_routes_beyond_the_limit_and_keeps_the_session(caplog):
    m = limited("warn")
    held = m[1].speaker.rib.count_from(PEER)  # its type-3 route
    announce(m, routes(15))
    limit = m[1].speaker.prefix_limits[PEER]
    rib = m[1].speaker.rib
    print(f"\nlimit 10, 1 type-3 + 15 type-2 announced: {rib.count_from(PEER)} accepted, {limit.refused} refused")
    assert rib.count_from(PEER) == 10 and limit.refused == 15 - (10 - held)
    assert len([v for v in fdb(m[1]).values() if v == (PEER, "bgp")]) == 10 - held
    assert m[1].speaker.peers[PEER].state is State.ESTABLISHED
    assert "9 routes accepted: 90% of its max_prefixes (10)" in caplog.text
    assert caplog.text.count("refusing its new routes") == 1
    # a route it holds may change at the limit (same NLRI, new attributes): not one more
    first = routes(1)[0]
    newer = PathAttributes(next_hop=ATTRS.next_hop, local_pref=200, ext_communities=ATTRS.ext_communities)
    announce(m, [first], newer)
    assert rib.paths_from(PEER) and any(p.attributes.local_pref == 200 for p in rib.paths_from(PEER))
    # room again once it withdraws: what it announces then is accepted
    _inject(m, Update(withdrawn=tuple(routes(3))))
    announce(m, routes(3, first=100))
    assert rib.count_from(PEER) == 10 and mac(5100) in fdb(m[1])


def test_teardown_sends_cease_1_drops_the_routes_and_stays_idle_for_the_restart_time():
    m = limited("teardown", restart_s=5.0)
    node1, peer = m[1].speaker, m[1].speaker.peers[PEER]
    announce(m, routes(15))
    m.pump()  # deliver what the last poll wrote (the NOTIFICATION)
    limit = node1.prefix_limits[PEER]
    assert limit.teardowns == 1 and peer.state is State.IDLE
    assert node1.rib.count_from(PEER) == 0
    assert not [v for v in fdb(m[1]).values() if v[0] == PEER]
    assert PEER not in m[1].switch.flood.targets(VNI)
    # node 2 got the NOTIFICATION: Cease / Maximum Number of Prefixes Reached
    remote = m[2].speaker.stats["10.0.0.1"].last_error.lower()
    assert "cease" in remote and "prefixes" in remote, remote
    # idle: no connect of ours, connections from it refused
    start = m.now
    m.pump(4.9)
    assert peer.connect_due(m.now) is None and peer.accept(m.now) is None
    m.pump(0.2)
    assert m.now - start >= 5.0 and limit.idle_until is None
    conn = peer.connect_due(m.now)
    assert conn is not None, "connects again once the idle time is over"
    print(f"\nteardown at 10 routes: Cease/1 sent, Idle for {limit.restart_s:g} s, then connecting again")


def test_the_verdicts_and_the_warning_threshold():
    lim = PrefixLimit(100, "teardown", 30.0)
    assert lim.warn_at == 90
    assert [lim.warning(c) for c in (89, 90, 95, 80, 91)] == [False, True, False, False, True]
    assert lim.admit(99, now=0.0) is Verdict.ADMIT
    assert lim.admit(100, now=1.0) is Verdict.TEARDOWN and lim.idle_until == 31.0
    assert lim.admit(0, now=2.0) is Verdict.REFUSE  # whatever was on its way after the teardown
    assert not lim.restart_due(30.9) and lim.restart_due(31.0) and not lim.restart_due(31.0)
    assert PrefixLimit(100).admit(100, 0.0) is Verdict.REFUSE


def test_cease_subcode_1_is_what_rfc_4486_calls_maximum_number_of_prefixes_reached():
    assert (E.CEASE, E.CEASE_MAX_PREFIXES) == (6, 1)


def test_status_and_peers_show_each_peers_limit_and_what_it_refused():
    from overlayd.status import ctl
    from overlayd.status.bgp_view import peer_rows
    from overlayd.status.view import SwitchView

    m = limited("warn", limit=5)
    announce(m, routes(8))
    [row] = peer_rows(m[1].speaker, m.now)
    assert (row["routes_received"], row["max_prefixes"], row["max_prefixes_action"], row["prefixes_refused"],
            row["max_prefix_teardowns"]) == (5, 5, "warn", 4, 0)
    status = SwitchView(m[1].config, m[1].switch, 0.0, {}, speaker=m[1].speaker).status(m.now)
    assert status["bgp"]["max_prefixes"] == [{"neighbor": PEER, "routes_received": 5, "max_prefixes": 5,
                                              "max_prefixes_action": "warn", "prefixes_refused": 4,
                                              "max_prefix_teardowns": 0}]
    line = next(x for x in ctl.render_status(status).splitlines() if x.startswith("bgp max prefixes"))
    print(f"\n{line}")
    assert line == "bgp max prefixes: 10.0.0.2 5/5 warn (4 refused, 0 teardowns)"
