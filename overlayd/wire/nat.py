"""Address and port translation of a TCP/UDP packet in place, checksums updated incrementally.

The service path changes a packet's destination (DNAT: VIP:port ->
backend:port) and, on the replies, its source (backend:port -> VIP:port);
a hairpin flow gets both. `rewrite_dst` and `rewrite_src` do that to a
packet held in a writable buffer (a bytearray, or a memoryview of one: the
receive buffer itself), given the `Flow` that `ip.parse_flow` returned for
it. Nothing is allocated for the packet and nothing else in it moves:
only the address, the port and the checksums change.

Checksums (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')): with the sums taken
mod 0xFFFF, ~x is -x, so the new field is HC - (m' - m) for the words m
that changed, here read as whole integers (an address, a port) since a
run of 16-bit-aligned words is congruent to its value as one integer.

- IPv4 header checksum: the address changed.
- TCP and UDP checksum: the address (through the pseudo-header, which
  both cover, in both families) and the port. IPv6 has no header checksum.
- The result is the form a full computation gives, as Linux computes it:
  TCP and IPv4 headers 0..0xFFFE, UDP 1..0xFFFF (a checksum that works
  out to 0 is sent as 0xFFFF, RFC 768). So a rewrite followed by its
  reverse gives back the original bytes of any packet whose checksums
  were in that form; a packet whose checksums were in the other form of
  zero (0xFFFF for TCP) gets an equal one back.
- A UDP checksum of 0 means "none" and stays 0: always over IPv4 (RFC
  768), and over IPv6 too, where it is only legal on tunnels (RFC 6935,
  6936) — we do not invent a checksum for data nobody summed.
- Wrong checksums stay wrong by the same amount (nothing is verified).

Partial checksums (`partial=True`). A packet read from a TUN/TAP with
IFF_VNET_HDR and the virtio-net header flag NEEDS_CSUM (CHECKSUM_PARTIAL in
the kernel) carries in its TCP/UDP checksum field only the sum of the
pseudo-header — not complemented —, and whoever sends it (the kernel, the
NIC, `dataplane.offload.finish_checksum`) sums the TCP/UDP header and
payload onto that later and complements the total. Then:

- only the pseudo-header part changes: the field becomes P + (m' - m) for
  the address alone; the port is in the TCP/UDP header, summed later;
- the result is **not** complemented, and it is 1..0xFFFF (0xFFFF for a
  zero sum, as the kernel writes it: never a 0 field);
- the UDP zero rule does not apply: the checksum is still to be computed;
- the IPv4 header checksum is complete in such a packet and is updated
  as usual.

`partial` must match what the virtio-net header says; TSO super-frames
(gso_type set) always carry a partial checksum.
"""

from __future__ import annotations

import struct

from overlayd.wire.ip import PROTO_TCP, Flow

_MOD = 0xFFFF
# Fields read together, one struct call each.
_u16_from = struct.Struct("!H").unpack_from
_u16_into = struct.Struct("!H").pack_into
_u32 = struct.Struct("!I").unpack  # an IPv4 address
_u128 = struct.Struct("!QQ").unpack  # an IPv6 address: 2**64 == 1 mod 0xFFFF, so hi + lo is its sum
_u128_from = struct.Struct("!QQ").unpack_from
_v4_src_from = struct.Struct("!HI").unpack_from  # at 10: header checksum, source address
_v4_dst_from = struct.Struct("!H4xI").unpack_from  # at 10: header checksum, destination address
_tcp_from = struct.Struct("!HH12xH").unpack_from  # ports, checksum
_udp_from = struct.Struct("!HH2xH").unpack_from  # ports, checksum


def rewrite_dst(packet: bytearray | memoryview, flow: Flow, addr: bytes, port: int, *, partial: bool = False) -> None:
    """DNAT in place: the destination becomes `addr`:`port`, checksums updated (see the module docstring).

    `flow` is what `parse_flow(packet)` returned: only its family,
    protocol and offsets are used, which a rewrite does not change (the
    old address and port are read from the packet, so rewriting again with
    the same `flow` is fine; its `dst` and `dport` are then stale). `addr`
    is 4 or 16 octets (an address's `.packed`), of the packet's family.
    ValueError for an address of the wrong length or a port outside
    0..65535, before anything is written.
    """
    _rewrite(packet, flow, addr, port, partial, _v4_dst_from, 16, 24, 2)


def rewrite_src(packet: bytearray | memoryview, flow: Flow, addr: bytes, port: int, *, partial: bool = False) -> None:
    """SNAT (or the reverse of a DNAT, on a reply) in place: the source becomes `addr`:`port`.

    Same rules as `rewrite_dst`.
    """
    _rewrite(packet, flow, addr, port, partial, _v4_src_from, 12, 8, 0)


def _rewrite(packet: bytearray | memoryview, flow: Flow, addr: bytes, port: int, partial: bool,
             v4_from, v4_at: int, v6_at: int, port_at: int) -> None:
    """The address at `v4_at` or `v6_at` (as `v4_from` reads it, with the IPv4 header checksum)
    and the port at `port_at` in the TCP/UDP header become `addr` and `port`."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port {port} is outside 0..65535")
    if flow[0] == 4:
        if len(addr) != 4:
            raise ValueError(f"a {len(addr)}-octet address in an IPv4 packet")
        header_checksum, old = v4_from(packet, 10)
        addr_delta = _u32(addr)[0] - old
        _u16_into(packet, 10, (header_checksum - addr_delta) % _MOD)
        packet[v4_at : v4_at + 4] = addr
    else:
        if len(addr) != 16:
            raise ValueError(f"a {len(addr)}-octet address in an IPv6 packet")
        hi, lo = _u128(addr)
        old_hi, old_lo = _u128_from(packet, v6_at)
        addr_delta = hi + lo - old_hi - old_lo
        packet[v6_at : v6_at + 16] = addr
    l4 = flow[6]
    if flow[1] == PROTO_TCP:
        sport, dport, c = _tcp_from(packet, l4)
        at = l4 + 16
    else:
        sport, dport, c = _udp_from(packet, l4)
        at = l4 + 6
    _u16_into(packet, l4 + port_at, port)
    if partial:
        c = (c + addr_delta) % _MOD or _MOD
    else:
        delta = addr_delta + port - (dport if port_at else sport)
        if at == l4 + 16:
            c = (c - delta) % _MOD
        elif c:
            c = (c - delta) % _MOD or _MOD
        else:
            return  # UDP without a checksum
    _u16_into(packet, at, c)
