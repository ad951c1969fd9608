"""The userspace service path: a packet to a VIP gets a backend, its destination
rewritten, and every packet of its flow after it; replies come back from the VIP.

The Router calls it on the routed data path, without I/O:

    from_pods(packet, now)  a packet the kernel handed to the routing device (from
                            this node's pods, or its host): if it goes to a VIP,
                            DNAT it; if it is the reply of a same-node backend
                            (addressed to the VIP the flow was source-rewritten
                            to), reverse it. Returns ROUTE (rewritten: route it by
                            its new destination), LOCAL (rewritten, for this node:
                            write it back to the device), DROP, or None (not a
                            service packet: untouched). Packets the path makes
                            itself (a TCP reset, an ICMP port unreachable) go to
                            `emit`, to be written to the device.
    to_pods(packet, now)    a packet for one of our subnets, arrived over the
                            overlay: the reply of a backend elsewhere to a client
                            here gets its source back to VIP:port, in place.
    backend_down(name, b)   a backend failed its checks: each TCP flow pinned to it
                            gets a reset from VIP:port (so the client sees a reset,
                            not a hang), each UDP flow is dropped.

A new flow: the service at (protocol, VIP, port), its backend from
`Service.pick` (client-ip affinity, else Maglev on the 5-tuple's hash); no
service there or no healthy backend: a reset or a port unreachable, counted.
A backend on this node (hairpin, or the client itself) would answer the
client directly, past the rewrite: DECISIONS says the source becomes an
address that routes back through overlayd; here that is the VIP itself,
with a port from `Conntrack.snat_port`, as `services_network` is routed to
the routing device. Conntrack pins the flow either way; a full table refuses
the new flow (counted), never an existing one.

Packets are rewritten in place (`wire.nat`, incremental checksums), so the
caller passes writable memoryviews of its receive buffer.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable
from zlib import crc32

from overlayd.dataplane.counters import Counters
from overlayd.fabric.conntrack import TCP, Conntrack
from overlayd.fabric.services import ServiceTable
from overlayd.wire import nat
from overlayd.wire.errors import DecodeError
from overlayd.wire.ip import parse_flow
from overlayd.wire.reject import reject, tcp_reset

ROUTE, LOCAL, DROP = "route", "local", "drop"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _masks(networks: Iterable[Network], version: int) -> tuple[tuple[int, int], ...]:
    return tuple((int(n.netmask), int(n.network_address)) for n in networks if n.version == version)


class ServicePath:
    def __init__(self, table: ServiceTable, conntrack: Conntrack, services_networks: Iterable[Network],
                 local_subnets: Iterable[Network], counters: Counters, emit: Callable[[bytes], None]):
        self.table = table
        self.conntrack = conntrack
        self.counters = counters
        self.emit = emit
        nets = list(services_networks)
        self._vips = {4: _masks(nets, 4), 6: _masks(nets, 6)}
        self.set_local_subnets(local_subnets)

    def set_local_subnets(self, subnets: Iterable[Network]) -> None:
        subnets = list(subnets)
        self._local = {4: _masks(subnets, 4), 6: _masks(subnets, 6)}
        self._local_backend: dict[int, bool] = {}  # flow serial -> its backend is on this node

    @staticmethod
    def _inside(address: bytes | memoryview, masks: tuple[tuple[int, int], ...], _int=int.from_bytes) -> bool:
        n = _int(address, "big")
        for mask, net in masks:
            if n & mask == net:
                return True
        return False

    def from_pods(self, packet: memoryview, now: float) -> str | None:
        version = packet[0] >> 4
        vips = self._vips.get(version)
        if not vips:
            return None
        dst = packet[16:20] if version == 4 else packet[24:40]
        if not self._inside(dst, vips):
            return None
        c = self.counters
        try:
            flow = parse_flow(packet)
        except DecodeError:
            c.svc_drop_malformed += 1
            return DROP
        if flow is None:
            c.svc_drop_not_tcp_udp += 1  # ICMP to a VIP, a fragment: a VIP only takes TCP and UDP
            return DROP
        key = (flow.proto, flow.src, flow.sport, flow.dst, flow.dport)
        ct = self.conntrack
        tracked = ct.lookup(key)
        if tracked is not None:
            local = self._local_backend.get(tracked.serial)
            if local is not None:  # the flow's steady state: no second look at where it goes
                backend = tracked.backend
                nat.rewrite_dst(packet, flow, backend[0], backend[1])
                if tracked.snat is not None:
                    nat.rewrite_src(packet, flow, tracked.snat[0], tracked.snat[1])
                ct.original(tracked, flow.ip_len, now, flow.tcp_flags, flow.seq, flow.payload_len)
                self.counters.svc_packets_to_backend += 1
                return LOCAL if local else ROUTE
            return self._forward(packet, flow, tracked, now)
        tracked = ct.lookup_reply(key)
        if tracked is not None:  # a same-node backend answering the VIP its flow's source became
            self._reverse(packet, flow, tracked, now)
            nat.rewrite_dst(packet, flow, tracked.client[0], tracked.client[1])
            return LOCAL
        service = self.table.lookup(flow.proto, flow.dst, flow.dport)
        if service is None:
            c.svc_reject_no_service += 1
            return self._refuse(packet, flow)
        five_tuple = flow.src + flow.dst + bytes((flow.proto,)) + flow.sport.to_bytes(2, "big") \
            + flow.dport.to_bytes(2, "big")
        backend = service.pick(crc32(five_tuple), flow.src, now)
        if backend is None:
            c.svc_reject_no_backend += 1
            return self._refuse(packet, flow)
        snat = None
        if self._inside(backend[0], self._local[version]):
            port = ct.snat_port(flow.proto, flow.dst, backend, preferred=flow.sport)
            if port is None:
                c.svc_drop_no_snat_port += 1
                return DROP
            snat = (flow.dst, port)
        created = ct.create(flow.proto, (flow.src, flow.sport), (flow.dst, flow.dport), backend, now,
                            snat=snat, service=service.name)
        if created is None:
            c.svc_drop_conntrack_full += 1
            return DROP
        c.svc_new_flows += 1
        return self._forward(packet, flow, created.flow, now)

    def _forward(self, packet: memoryview, flow, tracked, now: float) -> str:
        backend = tracked.backend
        nat.rewrite_dst(packet, flow, backend[0], backend[1])
        if tracked.snat is not None:
            nat.rewrite_src(packet, flow, tracked.snat[0], tracked.snat[1])
        self.conntrack.original(tracked, flow.ip_len, now, flow.tcp_flags, flow.seq, flow.payload_len)
        self.counters.svc_packets_to_backend += 1
        local = self._inside(backend[0], self._local[flow.version])
        cache = self._local_backend
        if len(cache) > 2 * len(self.conntrack) + 1024:  # flows that left: start over
            cache.clear()
        cache[tracked.serial] = local
        return LOCAL if local else ROUTE

    def _reverse(self, packet: memoryview, flow, tracked, now: float) -> None:
        vip = tracked.vip
        nat.rewrite_src(packet, flow, vip[0], vip[1])
        self.conntrack.reply(tracked, flow.ip_len, now, flow.tcp_flags, flow.seq, flow.payload_len)
        self.counters.svc_packets_from_backend += 1

    def _refuse(self, packet: memoryview, flow) -> str:
        answer = reject(packet, flow)
        if answer is not None:
            self.emit(answer)
        return DROP

    def to_pods(self, packet: memoryview, now: float) -> None:
        """Reverse the NAT of a backend's reply to a client here, in place (anything else: untouched)."""
        if not len(self.conntrack):
            return
        try:
            flow = parse_flow(packet)
        except DecodeError:
            return  # the kernel will drop it; not ours to count
        if flow is None:
            return
        tracked = self.conntrack.lookup_reply((flow.proto, flow.src, flow.sport, flow.dst, flow.dport))
        if tracked is not None:
            self._reverse(packet, flow, tracked, now)

    def backend_down(self, service: str, backend) -> int:
        """Reset (TCP) or drop (UDP) every flow pinned to a failed backend; how many went."""
        flows = self.conntrack.flows_of_backend(backend, service)
        for tracked in flows:
            if tracked.proto == TCP and tracked.server_next_seq is not None:
                vip, client = tracked.vip, tracked.client
                self.emit(tcp_reset(vip[0], client[0], vip[1], client[1], tracked.server_next_seq))
                self.counters.svc_reset_backend_down += 1
            self.conntrack.remove(tracked)
        return len(flows)
