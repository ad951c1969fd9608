"""The data path's decision for one destination, asked without side effects (`overlayctl explain`).

`Switch.from_tap` / `from_vxlan`, `Router.from_device` / `from_vxlan` and
`ServicePath.from_pods` decide packet by packet, inline on the hot path,
learning and counting as they go. The functions here put the same questions
to the same tables, in the same order, for a destination instead of a
packet, and change nothing: no MAC learned, no counter bumped, no flow
tracked, no Maglev affinity taken. Each answers with a `Decision`:

    outcome   what happens: UNICAST (one VTEP), FLOOD (every VTEP of the flood
              list), ANSWERED (an ARP request / neighbour solicitation answered
              on this node), FORWARDED (not answered: it goes on as a frame),
              DELIVERED (written to the device), REWRITTEN (a VIP's new flow
              got a backend), REFUSED (a VIP refused it), DROPPED
    counters  the counters of `counters.COUNTERS` the decision moves (not the
              ones every packet read moves: tx_frames, tx_bytes, rx_datagrams)
    entry     the table entry that decided (FdbEntry, Binding, PrefixEntry,
              Service), None when none matched
    vteps     where its datagrams go
    vni       the VNI they carry

tests/unit/test_explain.py sends the packet each outcome stands for
through the real data path on the same tables and checks that exactly the
named counters move: the hot path and this file cannot drift apart
unnoticed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from overlayd.dataplane.switch import Switch
from overlayd.fabric.services import ServiceTable

UNICAST, FLOOD, ANSWERED, FORWARDED = "unicast", "flood", "answered", "forwarded"
DELIVERED, REWRITTEN, REFUSED, DROPPED = "delivered", "rewritten", "refused", "dropped"

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Decision:
    """What the data path does with one packet (see the module docstring)."""

    outcome: str
    counters: tuple[str, ...] = ()
    entry: object | None = None
    vteps: tuple[str, ...] = ()
    vni: int | None = None


# -- an L2 segment (Switch) -----------------------------------------------------------------


def frame_out(switch: Switch, vni: int, dst: bytes) -> Decision:
    """A frame to MAC `dst` read from the TAP of `vni` (from a valid source MAC; not an ARP
    request or neighbour solicitation suppression answers: `solicitation_out` first)."""
    if not dst[0] & 1:
        entry = switch.fdb.get(vni, dst)
        if entry is not None:
            if entry.vtep is None:
                return Decision(DROPPED, ("tx_drop_local_dst",), entry, vni=vni)
            return Decision(UNICAST, ("tx_unicast_frames", "tx_datagrams"), entry, (entry.vtep,), vni)
    targets = switch.flood.targets(vni)
    if not targets:
        return Decision(DROPPED, ("tx_drop_no_flood_list",), vni=vni)
    unknown = ("tx_unknown_unicast_frames",) if not dst[0] & 1 else ()
    return Decision(FLOOD, ("tx_flood_frames", *unknown, "tx_datagrams"), None, targets, vni)


def solicitation_out(switch: Switch, vni: int, ip: IP, asker: bytes = b"") -> Decision:
    """An ARP request (IPv4) or neighbour solicitation (IPv6) for `ip` from the host with MAC
    `asker`: ANSWERED here (ARP suppression) or FORWARDED as a frame; `entry` is the binding."""
    binding = switch.neighbors.lookup(vni, ip)
    if not switch.arp_suppression:
        return Decision(FORWARDED, (), binding, vni=vni)
    if switch.suppression_answer(vni, ip, asker) is not None:
        return Decision(ANSWERED, ("tx_arp_suppressed",), binding, vni=vni)
    return Decision(FORWARDED, ("tx_arp_flooded",), binding, vni=vni)


def frame_in(switch: Switch, vni: int, vtep: str) -> Decision:
    """A VXLAN datagram of `vni` from `vtep` (a well-formed one, from a host's valid MAC)."""
    segments = {s.vni: s for s in switch.segments()}
    seg = segments.get(vni)
    if seg is None:
        if vni in switch.routers:
            raise ValueError(f"VNI {vni} is routed: ask datagram_in")
        return Decision(DROPPED, ("rx_drop_unknown_vni",), vni=vni)
    if vtep not in seg.allowed:
        return Decision(DROPPED, ("rx_drop_unknown_vtep",), vni=vni)
    return Decision(DELIVERED, ("rx_frames", "rx_bytes"), vni=vni)


# -- the routed VNI (Router, and the prefix table the kernel planners read) -----------------------


def packet_out(table, dst: IP) -> Decision:
    """An IP packet to `dst` routed by `Router.from_device` through prefix table `table`."""
    entry = table.lookup(dst.packed)
    if entry is None:
        return Decision(DROPPED, ("tx_route_drop_multicast" if dst.is_multicast else "tx_route_drop_no_route",))
    if entry.vtep is None:
        return Decision(DROPPED, ("tx_route_drop_local",), entry, vni=entry.vni)
    if entry.router_mac is None:
        return Decision(DROPPED, ("tx_route_drop_no_router_mac",), entry, vni=entry.vni)
    return Decision(UNICAST, ("tx_routed_packets", "tx_routed_bytes"), entry, (entry.vtep,), entry.vni)


def datagram_in(table, local_subnets: Iterable[Network], vni: int, vtep: str, dst: IP) -> Decision:
    """A routed datagram (L3 VNI `vni`) from `vtep` whose inner IP packet goes to `dst`
    (inner destination MAC our router MAC, ethertype and IP version agreeing)."""
    if vtep not in table.vteps():
        return Decision(DROPPED, ("rx_route_drop_unknown_vtep",), vni=vni)
    if not any(dst.version == net.version and dst in net for net in local_subnets):
        return Decision(DROPPED, ("rx_route_drop_not_local",), vni=vni)
    return Decision(DELIVERED, ("rx_routed_packets", "rx_routed_bytes"), vni=vni)


def device_solicitation(router, ip: IP) -> Decision:
    """An ARP request / neighbour solicitation for `ip` on a tap routing device."""
    if router.answers_for(ip):
        return Decision(ANSWERED, ("tx_route_arp_answered",))
    return Decision(FORWARDED, ("tx_route_arp_ignored",))


# -- services ------------------------------------------------------------------------------------


def new_flow(table: ServiceTable, proto: int, vip: IP, port: int) -> Decision:
    """A new TCP (6) or UDP (17) flow to `vip`:`port`, as `ServicePath.from_pods` meets it: the
    service's healthy backends share it by Maglev (`entry` the Service, `vteps` left empty)."""
    service = table.lookup(proto, vip.packed, port)
    if service is None:
        return Decision(REFUSED, ("svc_reject_no_service",))
    if service.maglev is None:
        return Decision(REFUSED, ("svc_reject_no_backend",), service)
    return Decision(REWRITTEN, ("svc_new_flows", "svc_packets_to_backend"), service)
