"""`overlayctl explain`: the life of one packet on this node, step by step.

`explain(view, now, destination, source, network)` answers the `explain`
request of the status protocol. It picks the device the packet enters
(from `source` when given: this node, a local host or pod, or a remote one
whose packet arrives over VXLAN; else from the destination and `network`),
asks `dataplane.explain` what the data path decides on the node's live
tables, and writes down each step with where its entry came from (learned
locally, static config, which BGP peer, route, RD and MAC mobility
sequence, how long ago), the outer headers the datagrams leave with, the
MTU on the way, and, where the data path drops or floods, the counter of
`overlayctl stats` that moves. Where the kernel carries the packet (the
kernel backends), the step names the route, neighbour or FDB entry
overlayd programmed there and whether the kernel holds it.

The reply is a dict with stable keys:

    destination, source, network   as asked (network: the one explained)
    path       "l2", "routed" or "none" (an address no network here has)
    direction  "out" (sent from this node) or "in" (arrives over VXLAN from
               `vteps`: `source` is behind another node)
    carrier    "overlayd" or "kernel": who moves the packet
    verdict    unicast | flooded | dropped | refused | local | delivered |
               routed | elsewhere
    counters   the counters that move, in step order
    vni, vteps what the datagrams carry and where they go
    steps      [{"step": 1, "kind": ..., "text": ..., "counters": [...],
                 and facts by kind: "entry", "origin", "outer", "mtu", ...}]

Nothing here changes a table: no learning, no counter, no flow, no
affinity. Each step is one line of `overlayctl explain`.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from overlayd.config import ENCAP_OVERHEAD, IPIP_OVERHEAD
from overlayd.dataplane import explain as dp
from overlayd.fabric.endpoint import format_endpoint, parse_endpoint
from overlayd.fabric.services import PROTOCOLS
from overlayd.kernel.routed import device_address
from overlayd.kernel.state import ZERO_MAC, FdbEntry, Neighbor
from overlayd.status.origins import Origins
from overlayd.status.protocol import StatusError
from overlayd.wire.ethernet import BROADCAST, mac_str, parse_mac

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
PROTOCOL_NAMES = {number: name for name, number in PROTOCOLS.items()}
MAX_BACKENDS_SHOWN = 8


def explain(view, now: float, destination: str, source: str | None = None,
            network: str | None = None) -> dict[str, Any]:
    """The `explain` request on a `status.view.SwitchView` (see the module docstring)."""
    return _Explainer(view, now).run(destination, source, network)


def parse_destination(text: str) -> tuple[bytes | None, IP | None, int | None, int | None]:
    """(MAC, IP, port, protocol) of `explain`'s destination: a MAC, an address, or a service's
    VIP:PORT ([V6]:PORT), optionally /tcp or /udp."""
    try:
        return parse_mac(text), None, None, None
    except ValueError:
        pass
    try:
        return None, ipaddress.ip_address(text.strip("[]")), None, None
    except ValueError:
        pass
    endpoint, _, proto_name = text.partition("/")
    if proto_name and proto_name not in PROTOCOLS:
        raise StatusError("bad_request", f"{text!r}: the protocol after '/' is tcp or udp")
    try:
        packed, port = parse_endpoint(endpoint)
    except ValueError:
        raise StatusError("bad_request", f"{text!r} is not a MAC, an IP address or a service's VIP:PORT "
                                         "(02:00:00:00:00:01, 10.244.1.5, 10.96.0.10:80/tcp)") from None
    return None, ipaddress.ip_address(packed), port, PROTOCOLS[proto_name] if proto_name else None


def _ask(ip: IP) -> str:
    """How a host asks for the MAC of `ip`."""
    return "an ARP request (broadcast)" if ip.version == 4 else "a neighbour solicitation (multicast)"


def _encap_text(family: int, what: str) -> str:
    outer = f"outer IPv{family} {20 if family == 4 else 40}"
    return outer if what == "ipip" else f"{outer} + UDP 8 + VXLAN 8 + inner Ethernet 14"


class _Explainer:
    def __init__(self, view, now: float):
        self.view = view
        self.now = now
        self.config = view.config
        self.switch = view.switch
        self.speaker = view.speaker
        self.kernel = view.kernel
        self.origins = Origins(view.config, view.switch, view.speaker)
        self.our_vtep = str(self.config.node.vtep)
        self.port = self.config.node.vxlan_port
        self.steps: list[dict[str, Any]] = []
        self.result: dict[str, Any] = {"path": "none", "direction": "out", "carrier": "overlayd",
                                       "verdict": "elsewhere", "vni": None, "vteps": []}

    def step(self, kind: str, text: str, counters: tuple[str, ...] = (), **facts: Any) -> None:
        self.steps.append({"step": len(self.steps) + 1, "kind": kind, "text": text, "counters": list(counters),
                           **facts})

    def done(self, verdict: str, vteps: tuple[str, ...] = ()) -> None:
        self.result["verdict"] = verdict
        self.result["vteps"] = list(vteps)

    # -- what was asked ---------------------------------------------------------------------

    def run(self, destination: str, source: str | None, network: str | None) -> dict[str, Any]:
        mac, ip, port, proto = parse_destination(destination)
        src = None
        if source is not None:
            try:
                src = ipaddress.ip_address(source.strip("[]"))
            except ValueError:
                raise StatusError("bad_request", f"--from {source!r} is not an IP address") from None
        net = self._named_network(network) if network is not None else None
        if net is None:
            net = self._network_of(mac, ip)
        routing = self.config.routing
        vip = self._in(ip, self.config.services_network)
        if port is not None and (net is not None or not vip):
            vips = ", ".join(map(str, self.config.services_network)) or "no services_network here"
            raise StatusError("bad_request", f"{destination}: a port goes with a service's VIP ({vips})")
        if net is not None:
            self._l2(net, mac, ip, src)
        elif routing is not None and self.speaker is not None and self.speaker.routed is not None and (
                vip or self._in(ip, self.config.cluster_networks)):
            self._routed(ip, port, proto, src)
        else:
            where = [f"{n.name} {n.address.network}" for n in self.config.networks if n.address is not None]
            where += [f"cluster network {n}" for n in self.config.cluster_networks]
            where += [f"services network {n}" for n in self.config.services_network]
            self.step("enter", f"{ip} is on none of this node's networks ({', '.join(where) or 'none'}): the kernel "
                               "routes it by its own table and overlayd never sees it; give --network for a host "
                               "of an L2 network without an address here")
        counters: list[str] = []
        for s in self.steps:
            counters += [c for c in s["counters"] if c not in counters]
        return {"destination": destination, "source": source, "network": self.result.pop("network", None),
                **self.result, "counters": counters, "steps": self.steps}

    @staticmethod
    def _in(ip: IP | None, networks) -> bool:
        return ip is not None and any(ip.version == n.version and ip in n for n in networks)

    def _named_network(self, name: str):
        net = next((n for n in self.config.networks if name in (n.name, str(n.vni))), None)
        if net is None:
            names = ", ".join(n.name for n in self.config.networks) or "none"
            raise StatusError("bad_request", f"no network named {name!r} (L2 networks here: {names})")
        return net

    def _network_of(self, mac: bytes | None, ip: IP | None):
        """The L2 network a destination is on, or None (routed, or nowhere)."""
        nets = self.config.networks
        if mac is not None:
            if not nets:
                raise StatusError("bad_request", f"{mac_str(mac)}: a MAC is on an L2 network, and this node has none")
            if len(nets) == 1:
                return nets[0]
            known = [n for n in nets if self.switch.fdb.get(n.vni, mac) is not None]
            if len(known) == 1:
                return known[0]
            raise StatusError("bad_request", f"{mac_str(mac)} is known on {len(known)} of the networks "
                                             f"{', '.join(n.name for n in nets) or '(none)'}: give --network")
        on = [n for n in nets if n.address is not None and self._in(ip, [n.address.network])]
        if on:
            return on[0]
        bound = [n for n in nets if self.switch.neighbors.lookup(n.vni, ip) is not None]
        return bound[0] if bound else None

    # -- where entries came from ----------------------------------------------------------------

    def _device(self, net) -> str:
        if net.vlan is not None:  # a VLAN trunk's TAP
            return f"TAP {net.device} tagged VLAN {net.vlan}" + (" (or untagged: the native VLAN)" if net.native else "")
        return f"TAP {net.device}" if net.backend == "userspace" else f"bridge {net.device}"

    def _programmed(self, entry) -> str:
        """`entry` as `ip` / `bridge` show it, and whether the kernel holds it."""
        state = self.kernel.programmed_state(entry) if self.kernel is not None else "unknown"
        return f"`{entry}` ({'programmed' if state == 'yes' else state})"

    # -- outer headers and MTU --------------------------------------------------------------------

    def _outer(self, vni: int, vteps: tuple[str, ...]) -> dict[str, Any]:
        return {"src": self.our_vtep, "dst": list(vteps), "udp_dst_port": self.port, "vni": vni,
                "udp_src_port": "hash of the inner flow"}

    def _vxlan_text(self, vni: int, vteps: tuple[str, ...], device: str = "") -> str:
        family = self.config.node.family
        dst = vteps[0] if len(vteps) == 1 else "{" + ", ".join(vteps) + "}, one datagram each"
        return (f"leaves {device or 'as VXLAN'}: outer IPv{family} {self.our_vtep} -> {dst}, UDP dst port "
                f"{self.port} (src port from the inner flow's hash), VXLAN VNI {vni}")

    def _mtu(self, device: str, mtu: int | None, encap: str) -> None:
        family = self.config.node.family
        overhead = {"vxlan": ENCAP_OVERHEAD[family], "ipip": IPIP_OVERHEAD[family]}.get(encap, 0)
        underlay = getattr(self.view, "underlay_mtu", None)
        facts = {"device": device, "device_mtu": mtu, "underlay_mtu": underlay, "overhead_bytes": overhead}
        if mtu is None or underlay is None:
            self.step("mtu", f"MTU: {device} {mtu or 'unknown'}, underlay {underlay or 'unknown'}", mtu=facts)
            return
        room = underlay - overhead
        how = f"underlay {underlay} - {overhead} ({_encap_text(family, encap)}) = {room}" if overhead else \
            f"underlay {underlay}, no encapsulation"
        facts["fits"] = mtu <= room
        if mtu <= room:
            self.step("mtu", f"MTU: {device} {mtu}; {how}: a full-size packet fits in one datagram", mtu=facts)
        else:
            self.step("mtu", f"MTU: {device} {mtu} is {mtu - room} more than the {how}: full-size packets leave as "
                             f"fragmented datagrams, or are lost where the path does not fragment; set the MTU "
                             f"to {room}", mtu=facts)

    # -- an L2 segment ----------------------------------------------------------------------------

    def _l2(self, net, mac: bytes | None, ip: IP | None, src: IP | None) -> None:
        vni = net.vni
        kernel = net.backend == "kernel"
        self.result.update(path="l2", network=net.name, vni=vni, carrier="kernel" if kernel else "overlayd")
        came_from = ""
        if src is not None:
            vtep, came_from = self._l2_source(net, src)
            if vtep is not None:
                self._l2_in(net, mac, ip, src, vtep, came_from)
                return
        seg = self.switch.segment(vni)
        if kernel:
            self.step("enter", f"enters {self._device(net)} of network {net.name} (VNI {vni}){came_from}; backend "
                               f"kernel: the kernel's bridge and VXLAN device {net.vxlan_device} move it, from the "
                               f"tables overlayd programs there", device=net.device)
        else:
            self.step("enter", f"enters {self._device(net)} of network {net.name} (VNI {vni}){came_from}",
                      ("tx_frames", "tx_bytes"), device=net.device)
        ours = net.address is not None and ip == net.address.ip
        if ours or (mac is not None and mac in seg.own_macs):
            self.step("local", f"{ip or mac_str(mac)} is this node's own address on {net.device}: the host's kernel "
                               "takes it, it never leaves the node")
            self.done("local")
            return
        if ip is not None:
            mac = self._resolve(net, ip, src)
            if mac is None:
                return
        self._frame(net, mac)

    def _l2_source(self, net, src: IP) -> tuple[str | None, str]:
        """Where a packet from `src` on `net` comes from: (remote VTEP or None, the words for it)."""
        if net.address is not None and src == net.address.ip:
            return None, f", sent by this node ({src} on {net.device})"
        binding = self.switch.neighbors.lookup(net.vni, src)
        if binding is not None:
            entry = self.switch.fdb.get(net.vni, binding.mac)
            if entry is not None and entry.vtep is not None:
                return entry.vtep, f"{src} is at {mac_str(binding.mac)}, behind VTEP {entry.vtep}"
            return None, f", from host {src} ({mac_str(binding.mac)}, on this node)"
        if net.address is not None and self._in(src, [net.address.network]):
            return None, f", from host {src} (not seen yet: taken to be on this node)"
        raise StatusError("bad_request", f"--from {src} is not on network {net.name}"
                                         + (f" ({net.address.network})" if net.address is not None else ""))

    def _resolve(self, net, ip: IP, src: IP | None) -> bytes | None:
        """The ARP / ND step: the MAC frames to `ip` go to, or None (flooded or dropped: said)."""
        vni = net.vni
        ask = _ask(ip)
        asker = b""
        if src is not None and (b := self.switch.neighbors.lookup(vni, src)) is not None:
            asker = b.mac
        decision = dp.solicitation_out(self.switch, vni, ip, asker)
        binding = decision.entry
        if binding is None:
            counters = () if net.backend == "kernel" else decision.counters
            hint = "" if self.switch.neighbor_snooping else \
                " (overlayd keeps ARP/ND bindings only with bgp:; explain the host's MAC to see its frames' way)"
            self.step("neighbor", f"ARP/ND: no binding for {ip} on network {net.name}{hint}: {ask} for it is not "
                                  f"answered here and goes out to every host of the network", counters)
            self._frame(net, BROADCAST, unknown=ip)
            return None
        origin_text, origin = self.origins.binding(binding, self.now)
        entry = {"ip": str(ip), "mac": mac_str(binding.mac)}
        if net.backend == "kernel":
            answered = binding.source.rank > 0 and (e := self.switch.fdb.get(vni, binding.mac)) is not None \
                and e.vtep is not None
            neighbor = Neighbor(net.device, ip, binding.mac, extern_learn=True)
            how = (f"; the bridge answers {ask} for it (neigh_suppress) from {self._programmed(neighbor)}"
                   if answered else f"; {ask} for it is not answered here (a host on this node answers itself)")
            self.step("neighbor", f"ARP/ND: {ip} is at {mac_str(binding.mac)}, {origin_text}{how}", entry=entry,
                      origin=origin)
        elif decision.outcome == dp.ANSWERED:
            self.step("neighbor", f"ARP/ND: {ip} is at {mac_str(binding.mac)}, {origin_text}; {ask} for it is answered "
                                  "here (ARP suppression) and never crosses the overlay", decision.counters,
                      entry=entry, origin=origin)
        else:
            why = "suppression is off (no bgp:)" if not self.switch.arp_suppression else \
                "its MAC is not behind a remote VTEP" if binding.mac != asker else "it is the asker's own"
            self.step("neighbor", f"ARP/ND: {ip} is at {mac_str(binding.mac)}, {origin_text}; {ask} for it is not "
                                  f"answered here ({why}): it goes out to every host of the network, and the "
                                  f"answer teaches the host the MAC", decision.counters, entry=entry, origin=origin)
        return binding.mac

    def _frame(self, net, mac: bytes, unknown: IP | None = None) -> None:
        """The FDB step and what follows, for a frame to `mac` (BROADCAST for `unknown`'s ARP request)."""
        vni = net.vni
        kernel = net.backend == "kernel"
        decision = dp.frame_out(self.switch, vni, mac)
        counters = () if kernel else decision.counters
        what = f"{_ask(unknown)} for {unknown}" if unknown is not None else mac_str(mac)
        if decision.outcome == dp.UNICAST:
            entry = decision.entry
            text, origin = self.origins.fdb(entry, self.now)
            self.step("fdb", f"FDB: {mac_str(mac)} is behind VTEP {entry.vtep}, {text}", counters,
                      entry={"mac": mac_str(mac), "vtep": entry.vtep, "vni": vni}, origin=origin)
            self._l2_egress(net, decision.vteps, mac)
            self.done("unicast", decision.vteps)
        elif decision.outcome == dp.FLOOD:
            if mac[0] & 1:
                why = f"{what} goes to every VTEP of network {net.name}'s flood list"
            else:
                why = f"no FDB entry for {mac_str(mac)} (unknown unicast): flooded to network {net.name}'s flood list"
            members = self.origins.flood_members(vni, decision.vteps)
            self.step("flood", f"{why}: {', '.join(members)}", counters,
                      entry={"flood_list": list(decision.vteps), "vni": vni})
            self._l2_egress(net, decision.vteps, ZERO_MAC)
            self.done("flooded", decision.vteps)
        elif decision.entry is not None:  # a local MAC
            text, origin = self.origins.fdb(decision.entry, self.now)
            tail = "" if kernel else f"; a frame for it that reaches {net.device} anyway is dropped"
            self.step("fdb", f"FDB: {mac_str(mac)} is local, {text}: the host reaches it directly, not through "
                             f"overlayd{tail}", counters, entry={"mac": mac_str(mac), "vtep": None, "vni": vni},
                      origin=origin)
            self.done("local")
        else:
            what = f"{what} would be flooded" if mac[0] & 1 or unknown else \
                f"no FDB entry for {mac_str(mac)} (unknown unicast): it would be flooded"
            self.step("drop", f"dropped: {what}, but network {net.name}'s flood list is empty (no static vteps, no "
                              f"type-3 route received)", counters, entry={"flood_list": [], "vni": vni})
            self.done("dropped")
        if unknown is not None and decision.outcome == dp.FLOOD:
            self.step("wait", f"no frame to {unknown} itself leaves until a reply teaches the host its MAC; a host "
                              f"that does not answer is unknown here")

    def _l2_egress(self, net, vteps: tuple[str, ...], mac: bytes) -> None:
        vni = net.vni
        outer = self._outer(vni, vteps)
        if net.backend == "kernel":
            programmed = "; ".join(self._programmed(FdbEntry(net.vxlan_device, mac, ipaddress.ip_address(v)))
                                   for v in vteps)
            self.step("vxlan", f"{self._vxlan_text(vni, vteps, f'the kernel VXLAN device {net.vxlan_device}')}; from "
                               f"{programmed}", outer=outer)
        else:
            self.step("vxlan", self._vxlan_text(vni, vteps), outer=outer)
        self._mtu(net.device, self.view.mtus.get(vni), "vxlan")

    def _l2_in(self, net, mac: bytes | None, ip: IP | None, src: IP, vtep: str, came_from: str) -> None:
        vni = net.vni
        self.result["direction"] = "in"
        outer = {"src": vtep, "dst": [self.our_vtep], "udp_dst_port": self.port, "vni": vni}
        self.step("enter", f"arrives as VXLAN from VTEP {vtep} ({came_from}): outer {vtep} -> {self.our_vtep}, "
                           f"UDP dst port {self.port}, VXLAN VNI {vni}",
                  () if net.backend == "kernel" else ("rx_datagrams",), outer=outer)
        decision = dp.frame_in(self.switch, vni, vtep)
        self.result["vteps"] = [vtep]
        if net.backend == "kernel":
            self.step("deliver", f"the kernel's {net.vxlan_device} takes it and bridge {net.device} delivers it "
                                 f"(overlayd's counters do not move)")
            self.done("delivered", (vtep,))
            return
        if decision.outcome == dp.DROPPED:
            self.step("drop", f"dropped: {vtep} is not on network {net.name}'s flood list and no static or BGP MAC "
                              f"of it lives there", decision.counters)
            self.done("dropped", (vtep,))
            return
        why = "on the flood list" if vtep in self.switch.flood.targets(vni) else "behind a static or BGP MAC"
        target = mac_str(mac) if mac is not None else str(ip)
        self.step("deliver", f"accepted ({vtep} is {why} of network {net.name}) and written to {net.device} for the "
                             f"host to deliver to {target}", decision.counters)
        if mac is None and ip is not None and (b := self.switch.neighbors.lookup(vni, ip)) is not None:
            mac = b.mac
        entry = self.switch.fdb.get(vni, mac) if mac is not None else None
        if entry is not None and entry.vtep is not None:
            self.step("transit", f"{target} is behind VTEP {entry.vtep}, not here: nothing the overlay brings in is "
                                 f"sent out to it again (no transit)")
        self.done("delivered", (vtep,))

    # -- the routed network ------------------------------------------------------------------------

    def _routed(self, ip: IP, port: int | None, proto: int | None, src: IP | None) -> None:
        r = self.config.routing
        routed = self.speaker.routed
        self.table = routed.table
        self.result.update(path="routed", network=str(r.network), vni=r.vni,
                           carrier="overlayd" if r.backend == "userspace" else "kernel")
        came_from = ""
        if src is not None:
            remote, came_from = self._routed_source(src)
            if remote is not None:
                self._routed_in(ip, src, remote)
                return
        entry = self.table.lookup(ip.packed)
        if entry is not None and entry.vtep is None:
            self._local_subnet(ip, entry, came_from)
            return
        self._enter_routed(ip, came_from)
        if self._in(ip, self.config.services_network) and self.view.services_runtime is not None:
            self._service(ip, port, proto, src)
            return
        self._routed_egress([self._route(ip)])

    def _routed_source(self, src: IP):
        """(the remote prefix entry `src` is in, or None; the words for a local source)."""
        r = self.config.routing
        routed = self.speaker.routed
        mine = {str(self.config.node.vtep)} | {str(n.address.ip) for n in self.config.networks if n.address}
        mine |= {str(device_address(s).ip) for s in routed.subnets}
        if str(src) in mine:
            return None, f"from this node ({src})"
        if self._in(src, routed.subnets):
            return None, f"from pod {src} on {r.cni_bridge} (our subnet)"
        entry = routed.table.lookup(src.packed)
        if entry is not None and entry.vtep is not None:
            return entry, ""
        raise StatusError("bad_request", f"--from {src} is neither this node's, nor in our subnets "
                                         f"({', '.join(map(str, routed.subnets)) or 'none'}), nor in another "
                                         f"node's subnet")

    def _enter_routed(self, ip: IP, came_from: str) -> None:
        r = self.config.routing
        who = came_from or "from this node or one of its pods"
        if r.backend != "userspace":
            self.step("enter", f"{who}: the kernel routes {ip} by the routes overlayd programmed from the subnet "
                               f"table (backend {r.backend})")
            return
        route = None
        if self.kernel is not None and self.kernel.plan is not None:
            route = next((rt for rt in self.kernel.plan.state.routes.values()
                          if rt.device == r.device and ip.version == rt.dst.version and ip in rt.dst), None)
        how = f" by {self._programmed(route)}" if route is not None else ""
        self.step("enter", f"{who}: the kernel routes {ip} to {r.device} ({r.device_type}){how}", device=r.device)
        router = self.view.routed.router if self.view.routed is not None else None
        if router is not None and router.mode == "tap":
            decision = dp.device_solicitation(router, ip)
            said = "answered with our router MAC" if decision.outcome == dp.ANSWERED else "not answered"
            self.step("neighbor", f"ARP/ND for {ip} on {r.device}: {said}", decision.counters)

    def _local_subnet(self, ip: IP, entry, came_from: str) -> None:
        r = self.config.routing
        text, origin = self.origins.prefix(entry, self.now)
        who = f"{came_from}: " if came_from else ""
        tail = ""
        counters: tuple[str, ...] = ()
        if r.backend == "userspace":
            decision = dp.packet_out(self.table, ip)
            counters = decision.counters
            tail = f"; a packet for it that reaches {r.device} anyway is dropped"
        self.step("route", f"{who}{ip} is in {entry.prefix}, {text}: the kernel delivers it on {r.cni_bridge}, our "
                           f"pods' bridge, without overlayd{tail}", counters,
                  entry={"prefix": str(entry.prefix), "node": entry.node, "vtep": None}, origin=origin)
        self.done("local")

    def _route(self, ip: IP, label: str = "") -> dp.Decision:
        """The subnet route step for `ip` (and the kernel's, where it carries the packet)."""
        r = self.config.routing
        decision = dp.packet_out(self.table, ip)
        entry = decision.entry
        userspace = r.backend == "userspace"
        lead = f"{label}{ip}"
        if entry is None:
            if userspace:
                self.step("drop", f"dropped: no subnet in the table covers {lead}", decision.counters)
                return decision
            self.step("route", f"no subnet in the table covers {lead}: overlayd programs no route for it, the kernel "
                               f"sends it by its other routes (the default route, if any)")
            return dp.Decision("elsewhere")
        text, origin = self.origins.prefix(entry, self.now)
        facts = {"prefix": str(entry.prefix), "node": entry.node, "vtep": entry.vtep, "vni": entry.vni,
                 "router_mac": mac_str(entry.router_mac) if entry.router_mac else None}
        if entry.vtep is None:
            self.step("route", f"{lead} is in our own subnet {entry.prefix}: the kernel delivers it on "
                               f"{r.cni_bridge}", entry=facts, origin=origin)
            return dp.Decision("local", entry=entry)
        mac = f", router MAC {mac_str(entry.router_mac)}" if entry.router_mac else ", no router MAC"
        way = self.kernel.way_of(entry.prefix) if self.kernel is not None else None
        carried = way is not None and way.way not in ("userspace", "none") and way.route is not None
        counters = decision.counters if userspace and not carried and decision.outcome == dp.UNICAST else ()
        self.step("route", f"subnet route: {lead} is in {entry.prefix} of node {entry.node} (VTEP {entry.vtep}"
                           f"{mac}, VNI {entry.vni}), {text}", counters, entry=facts, origin=origin)
        if carried or not userspace:
            if way is None:
                self.step("kernel", "the kernel's routes are not planned yet (the daemon is starting)")
                return dp.Decision("elsewhere", entry=entry)
            return self._kernel_way(entry, way)
        if decision.outcome == dp.DROPPED:
            self.step("drop", f"dropped: node {entry.node} takes no VXLAN (its route says encapsulation "
                              f"{entry.encap}) and names no router MAC", decision.counters)
        return decision

    def _kernel_way(self, entry, way) -> dp.Decision:
        """The kernel carries the packet (kernel backends, direct routing): its programmed entries."""
        if way.route is None:
            self.step("kernel", f"overlayd programs no route for {entry.prefix}: {way.reason}; the kernel sends it by "
                                f"its other routes (the default route, if any)")
            return dp.Decision("elsewhere", entry=entry)
        route = way.route
        parts = [self._programmed(route)]
        if way.way == "vxlan" and self.kernel.plan is not None:
            state = self.kernel.plan.state
            for found in (state.neighbors.get((route.device, route.gateway)),
                          state.fdb.get((route.device, entry.router_mac, None))):
                if found is not None:
                    parts.append(self._programmed(found))
        self.step("kernel", f"the kernel carries it ({way.way}): {', '.join(parts)}; overlayd's counters do not "
                            f"move", route=str(route))
        return dp.Decision(way.way, entry=entry, vteps=(entry.vtep,), vni=entry.vni)

    def _routed_egress(self, decisions: list[dp.Decision]) -> None:
        """The datagrams of the decided packets, and the MTU on their way; the verdict. (An outcome
        here is the data path's, or where the kernel sends it: "local", "elsewhere", a `RouteWay.way`.)"""
        r = self.config.routing
        family = self.config.node.family
        sent = [d for d in decisions if d.vteps]
        vteps = tuple(dict.fromkeys(v for d in sent for v in d.vteps))
        if not sent:
            outcomes = {d.outcome for d in decisions}
            self.done("local" if outcomes == {"local"} else "elsewhere" if "elsewhere" in outcomes else "dropped")
            return
        ways = {d.outcome for d in sent}
        vni = sent[0].vni
        device = r.device
        if ways & {dp.UNICAST, "vxlan"}:
            via = f"the kernel VXLAN device {device}" if dp.UNICAST not in ways else ""
            self.step("vxlan", f"{self._vxlan_text(vni, vteps, via)}; inner Ethernet from our router MAC to "
                               f"the node's (symmetric IRB), then the IP packet", outer=self._outer(vni, vteps))
            encap = "vxlan"
        elif "ipip" in ways:
            self.step("ipip", f"leaves {device} as IP in IP: outer IPv{family} {self.our_vtep} -> "
                              f"{', '.join(vteps)}, IP protocol 4 (an IPv4 packet inside) or 41 (IPv6)",
                      outer={"src": self.our_vtep, "dst": list(vteps)})
            encap = "ipip"
        else:
            self.step("direct", f"leaves without encapsulation, the node's underlay address ({', '.join(vteps)}) or "
                                f"the gateway as next hop")
            self.done("routed", vteps)
            self._mtu(device if r.has_device else "pods' network", self._routed_mtu(), "none")
            return
        self.result["vni"] = vni
        self.done("unicast", vteps)
        self._mtu(device, self._routed_mtu(), encap)

    def _routed_mtu(self) -> int | None:
        if self.view.routed is not None:
            return self.view.routed.mtu
        return self.kernel.routed_mtu if self.kernel is not None else None

    def _routed_in(self, ip: IP, src: IP, remote) -> None:
        r = self.config.routing
        routed = self.speaker.routed
        vtep = remote.vtep
        self.result["direction"] = "in"
        outer = {"src": vtep, "dst": [self.our_vtep], "udp_dst_port": self.port, "vni": r.vni}
        self.step("enter", f"arrives as VXLAN from VTEP {vtep} ({src} is in {remote.prefix} of node {remote.node}): "
                           f"outer {vtep} -> {self.our_vtep}, UDP dst port {self.port}, VXLAN VNI {r.vni}, inner "
                           f"Ethernet to our router MAC {mac_str(routed.router_mac)}",
                  ("rx_datagrams",) if r.backend == "userspace" else (), outer=outer)
        self.result["vteps"] = [vtep]
        if r.backend != "userspace":
            self.step("deliver", f"the kernel's {r.device} takes it and routes it by its own table"
                                 + (f" to {r.cni_bridge}" if self._in(ip, routed.subnets) else ""))
            self.done("delivered", (vtep,))
            return
        decision = dp.datagram_in(self.table, routed.subnets, r.vni, vtep, ip)
        if decision.outcome == dp.DROPPED:
            why = (f"{vtep} is the VTEP of no subnet in the table" if decision.counters[0].endswith("vtep") else
                   f"{ip} is not in our subnets ({', '.join(map(str, routed.subnets))}): a routed packet is "
                   f"never sent on to another node (no transit)")
            self.step("drop", f"dropped: {why}", decision.counters)
            self.done("dropped", (vtep,))
            return
        self.step("deliver", f"written to {r.device}; the kernel routes it to {r.cni_bridge}, our pods' bridge",
                  decision.counters)
        self.done("delivered", (vtep,))

    # -- services --------------------------------------------------------------------------------

    def _service(self, vip: IP, port: int | None, proto: int | None, src: IP | None) -> None:
        runtime = self.view.services_runtime
        userspace = self.config.routing.backend == "userspace"
        at_vip = [s for s in runtime.table if s.vip == vip.packed and (port is None or s.port == port)
                  and (proto is None or s.proto == proto)]
        if at_vip:
            service = at_vip[0]
            if len(at_vip) > 1:
                listed = ", ".join(f"{s.name} {s.port}/{PROTOCOL_NAMES[s.proto]}" for s in at_vip)
                self.step("service", f"services at {vip}: {listed}; following {service.name} (give VIP:PORT/PROTO "
                                     f"for another)")
            port, proto = service.port, service.proto
        proto = proto or PROTOCOLS["tcp"]
        port = port or 0
        decision = dp.new_flow(runtime.table, proto, vip, port)
        name = f"{vip}:{port}/{PROTOCOL_NAMES[proto]}" if port else str(vip)
        if decision.outcome == dp.REFUSED:
            service = decision.entry
            if service is None:
                what = f"no service at {name}"
                tail = ("every packet to it is refused: a TCP reset or an ICMP port unreachable" if userspace else
                        "nftables has no rule for it, and the kernel sends it by its other routes")
            else:
                down = ", ".join(service.backends) or "none"
                what = f"service {service.name} ({name}) has no healthy backend (down: {down})"
                tail = "a new flow is refused: a TCP reset or an ICMP port unreachable"
            self.step("service", f"{what}: {tail}", decision.counters if userspace else ())
            self.done("refused" if userspace or service is not None else "elsewhere")
            return
        service = decision.entry
        healthy = [b for b in service.backends if b in service.healthy]
        down = [b for b in service.backends if b not in service.healthy]
        how = ("Maglev over the healthy backends by the hash of the 5-tuple" if userspace else
               "nftables (table inet overlayd) picks one at random")
        if service.affinity_timeout_s is not None:
            how += f", a client keeping its backend for {service.affinity_timeout_s:.0f}s (affinity client-ip)"
        text = (f"service {service.name} ({name}): a new flow gets a backend, {how}: {', '.join(healthy)}"
                + (f" (down: {', '.join(down)})" if down else "") + "; its destination is rewritten to it (DNAT) and "
                "the replies come back from the VIP")
        self.step("service", text, decision.counters if userspace else (),
                  entry={"service": service.name, "vip": service.vip_text, "port": service.port,
                         "protocol": PROTOCOL_NAMES[service.proto], "backends": healthy, "down": down})
        if src is not None:
            flows = runtime.conntrack.flows(service=service.name, client=src.packed)
            if flows:
                pinned = ", ".join(f"{format_endpoint(f.client)} -> {format_endpoint(f.backend)}" for f in flows[:4])
                self.step("conntrack", f"flows of {src} already tracked keep their backend: {pinned}"
                                       + (f" and {len(flows) - 4} more" if len(flows) > 4 else ""),
                          flows=len(flows))
        decisions = []
        for backend in healthy[:MAX_BACKENDS_SHOWN]:
            address, _ = service.endpoints[backend]
            ip = ipaddress.ip_address(address)
            if self._in(ip, self.speaker.routed.subnets):
                hairpin = ("back to the routing device with its source rewritten to the VIP, so that the reply "
                           "returns through overlayd" if userspace else "delivered on the pods' bridge, masqueraded "
                           "to the node so that the reply returns through the kernel's DNAT")
                self.step("route", f"backend {backend} is on this node: {hairpin}")
                decisions.append(dp.Decision("local"))
                continue
            decisions.append(self._route(ip, label=f"backend {backend}: "))
        if len(healthy) > MAX_BACKENDS_SHOWN:
            self.step("route", f"(and {len(healthy) - MAX_BACKENDS_SHOWN} more backends)")
        self._routed_egress(decisions)
