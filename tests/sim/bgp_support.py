"""Shared steps of the BGP simulations: hosts that announce themselves, and what
the tables must say afterwards."""

from __future__ import annotations

from overlayd.control.session import State
from overlayd.fabric.flood import FloodMemberRemoved
from overlayd.fabric.fdb import MacMoved, MacRemoved, Source
from overlayd.fabric.neighbors import NeighborRemoved
from overlayd.sim.frames import arp_request, ethernet, mac
from overlayd.sim.bgp import BgpSimulator, bgp_fdb
from overlayd.wire.bgp.evpn import MacIpRoute
from overlayd.wire.ethernet import BROADCAST

VNI = 100
HELLO = 0x88B5  # IEEE local experimental ethertype: a broadcast nobody answers


def host_ip(k: int) -> str:
    return f"192.168.{k // 250}.{k % 250 + 1}"


def announce(sim: BgpSimulator, node, host_mac: bytes, ip: str | None = None, vni: int = VNI):
    """The host sends one frame from behind `node`'s TAP: a gratuitous ARP when it has an IP
    (snooped: its type-2 route carries the IP), else a broadcast hello."""
    if ip is not None:
        return sim.send(node, vni, arp_request(host_mac, ip, ip))
    return sim.send(node, vni, ethernet(BROADCAST, host_mac, HELLO, b"hello"))


def attach_hosts(sim: BgpSimulator, nodes, per_node: int = 2, *, first: int = 1, with_ip: int = 1):
    """`per_node` hosts behind each node (the first `with_ip` of them with an IPv4 address),
    each announcing itself once. Returns [(node, mac, ip or None)]."""
    hosts = []
    k = first
    for node in nodes:
        for j in range(per_node):
            ip = host_ip(k) if j < with_ip else None
            node.attach(VNI, mac(k), ip)
            announce(sim, node, mac(k), ip)
            hosts.append((node, mac(k), ip))
            k += 1
    return hosts


def sessions_established(sim: BgpSimulator) -> int:
    """How many configured neighbors of hosts still alive (both ends counted) are Established."""
    return sum(1 for name, _, state in sim.sessions() if state is State.ESTABLISHED and not sim.host(name).crashed)


def tables_match(sim: BgpSimulator, hosts, vni: int = VNI) -> bool:
    """`check_tables`, as a condition to run until."""
    try:
        check_tables(sim, hosts, vni)
    except AssertionError:
        return False
    return True


def check_tables(sim: BgpSimulator, hosts, vni: int = VNI) -> None:
    """Every live node: its `bgp` FDB is exactly the other live nodes' hosts at their VTEPs,
    its local entries are its own hosts, its flood list is every other live node."""
    live = sim.live_nodes()
    for node in live:
        want = {m: n.vtep for n, m, _ in hosts if n is not node and n in live}
        assert bgp_fdb(node, vni) == want, f"{node.name}: FDB differs from the union of announcements"
        assert bgp_fdb(node, vni) == sim.expected_fdb(node, vni)
        local = {e.mac for e in node.switch.fdb if e.vni == vni and e.source is Source.LOCAL}
        assert local == {m for n, m, _ in hosts if n is node}
        assert sorted(node.switch.flood.targets(vni)) == sorted(n.vtep for n in live if n is not node)


def mac_paths(node, host_mac: bytes) -> list:
    """Every type-2 path for `host_mac` in the node's RIB (all peers, best or not)."""
    return [e.path for e in node.speaker.rib if isinstance(e.path.route, MacIpRoute) and e.path.route.mac == host_mac]


def rib_mentions(node, vtep: str) -> bool:
    """Whether any path in the node's RIB has `vtep` as next hop."""
    return any(str(e.path.next_hop) == vtep for e in node.speaker.rib)


def table_mentions(node, vtep: str, vni: int = VNI) -> bool:
    """Whether the node's FDB, flood list, ARP bindings or RIB still point at `vtep`."""
    fdb = any(e.vtep == vtep for e in node.switch.fdb)
    flood = vtep in node.switch.flood.targets(vni)
    return fdb or flood or rib_mentions(node, vtep)


def last_removal(sim: BgpSimulator, vtep: str, since: float, macs=()) -> dict[str, float]:
    """Node name -> when its tables last dropped something of `vtep` (from `sim.fabric_log`):
    an FDB entry, a flood list member, or an ARP binding for one of `macs`."""
    out: dict[str, float] = {}
    for at, name, ev in sim.fabric_log:
        if at < since:
            continue
        gone = (
            isinstance(ev, MacRemoved) and ev.vtep == vtep
            or isinstance(ev, MacMoved) and ev.old_vtep == vtep
            or isinstance(ev, FloodMemberRemoved) and ev.vtep == vtep
            or isinstance(ev, NeighborRemoved) and ev.source is Source.BGP and ev.mac in macs
        )
        if gone:
            out[name] = max(out.get(name, at), at)
    return out
