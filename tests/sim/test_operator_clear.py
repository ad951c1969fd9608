"""Issue 13, item 16: `overlayctl clear` in a BGP mesh on the fake clock, through the status
protocol (as root) and the SwitchView the daemon serves:

- `clear mac NETWORK MAC` lifts a duplicate-MAC freeze long before its hold-down runs out: the
  node advertises the MAC again (sequence + 1) and the network follows;
- `clear peer ADDRESS` resets one session (Cease / administrative reset): both ends go down,
  the routes of that peer leave and come back, and the session is Established again.
"""

from __future__ import annotations

import json

from overlayd.control.session import State
from overlayd.sim.bgp import bgp_fdb
from overlayd.status.protocol import encode_request, handle_line
from overlayd.status.view import SwitchView
from overlayd.wire.ethernet import mac_str
from tests.sim.bgp_support import VNI, tables_match
from tests.sim.test_bgp_mobility import mesh, move, settled


def view_of(node, sim) -> SwitchView:
    view = SwitchView(node.speaker.config, node.switch, sim.now, {}, speaker=node.speaker)
    view.after_change = lambda: sim._kick(sim.host(node))  # as the daemon's BGP service kick
    return view


def ask(view, now, command, privileged=True, **args) -> dict:
    return json.loads(handle_line(encode_request(command, **args), view, now, privileged=privileged))


def freeze(sim, hosts, nodes):
    b, host, ip = hosts[2]
    c = nodes[2]
    where = [b, c]
    for flap in range(1, 6):  # as test_a_mac_flapping_five_times_within_180s_is_frozen
        old, new = where[(flap - 1) % 2], where[flap % 2]
        sim.run(for_s=20)
        move(sim, host, ip, old, new)
        sim.run(for_s=1)
    assert [f.mac for f in c.speaker.mobility.frozen()] == [host]
    return b, c, host


def test_clear_mac_lifts_the_freeze_and_the_network_follows():
    sim, nodes, hosts = mesh(4)
    _b, c, host = freeze(sim, hosts, nodes)
    view = view_of(c, sim)
    assert view.status(sim.now)["bgp"]["duplicate_macs"][0]["mac"] == mac_str(host)
    refused = ask(view, sim.now, "clear", privileged=False, what="mac", network="net100", mac=mac_str(host))
    assert refused["error"]["code"] == "not_permitted"
    assert c.speaker.mobility.frozen()
    frozen_at = sim.now
    reply = ask(view, sim.now, "clear", what="mac", network="net100", mac=mac_str(host))
    assert reply["ok"] and reply["result"] == {"cleared": "mac", "network": "net100", "vni": VNI,
                                                "mac": mac_str(host)}
    assert not c.speaker.mobility.frozen() and view.status(sim.now)["bgp"]["duplicate_macs"] == []
    sim.run_until(lambda: settled(sim, host, c), timeout_s=5, step_s=0.001)
    assert c.speaker.mobility.sequence(VNI, host) == 5
    print(f"\nclear mac: the network placed the MAC behind the node clearing it {sim.now - frozen_at:.3f} s "
          f"later (the freeze had {c.speaker.mobility.freeze_s - 1:.0f} s to go)")
    # a MAC that is not frozen (any more), by VNI this time
    again = ask(view, sim.now, "clear", what="mac", network=str(VNI), mac=mac_str(host))
    assert again["error"]["code"] == "not_found"
    bad = ask(view, sim.now, "clear", what="mac", network="net100", mac="02:00")
    assert bad["error"]["code"] == "bad_request"
    assert ask(view, sim.now, "clear", what="mac", network="green", mac=mac_str(host))["error"]["code"] == \
        "bad_request"


def test_clear_peer_resets_that_session_only():
    sim, nodes, hosts = mesh(3)
    a, b, c = nodes
    view = view_of(a, sim)
    b_addr = b.vtep
    a_to_c = a.speaker.peers[c.vtep].established_since
    reply = ask(view, sim.now, "clear", what="peer", neighbor=b_addr)
    assert reply["ok"] and reply["result"] == {"cleared": "peer", "neighbor": b_addr}
    t0 = sim.now
    assert a.speaker.peers[b_addr].state is not State.ESTABLISHED
    sim.run_until(lambda: b.speaker.peers[a.vtep].state is not State.ESTABLISHED, timeout_s=1, step_s=0.001)
    assert "reset by operator" in b.speaker.stats[a.vtep].last_error or "administrative reset" in \
        b.speaker.stats[a.vtep].last_error
    sim.run_until(lambda: a.speaker.peers[b_addr].state is State.ESTABLISHED
                  and b.speaker.peers[a.vtep].state is State.ESTABLISHED, timeout_s=10, step_s=0.01)
    back = sim.now - t0
    sim.run_until(lambda: tables_match(sim, hosts), timeout_s=5)
    assert a.speaker.peers[c.vtep].established_since == a_to_c  # the other session never noticed
    assert bgp_fdb(a)  # routes are back
    print(f"\nclear peer: Established again after {back:.3f} s (simulated), tables equal after "
          f"{sim.now - t0:.3f} s")
    assert ask(view, sim.now, "clear", what="peer", neighbor="10.9.9.9")["error"]["code"] == "not_found"
    assert ask(view, sim.now, "clear", what="peer", neighbor="b")["error"]["code"] == "bad_request"
