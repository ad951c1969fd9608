"""Receive side: what one run of a UDP_GRO batch becomes on the TAP.

`coalesce` looks at the inner protocol: TCP goes to `offload.coalesce_tcp`,
UDP to `coalesce_udp` here, anything else is written a frame at a time.

UDP: a burst of small UDP datagrams (a media stream, iperf3 -u) arrives in one
UDP_GRO batch, all of one size but the last. Written to the TAP one by one
they cost a system call and a trip through the Python loop each; written
as one frame with a virtio-net header asking for UDP segmentation
(GSO_UDP_L4, with the checksum left partial) they cost one, and the kernel
cuts them apart again exactly where they were cut before. Only datagrams
whose checksums verify join such a frame: the kernel fills checksums in
when it cuts, so a bad one would otherwise come out good. IPv4 datagrams
must have DF set (their IP ids carry nothing then, RFC 6864: the kernel
numbers the cut datagrams itself) and a UDP checksum (not zero).
"""

from __future__ import annotations

from overlayd.dataplane.offload import (
    _MOD,
    HAVE_NUMPY,
    ETH,
    F_NEEDS_CSUM,
    MAX_COALESCED_IP,
    MAX_GSO_SEGMENTS,
    VNET_HDR,
    ZERO_VNET_HDR,
    coalesce_tcp,
    _fields,
    _sum_np,
    np,
    ones_sum,
)
from overlayd.wire.vxlan import VXLAN_HEADER_LEN

GSO_UDP_L4 = 5
UDP = 17


def coalesce(buf: bytearray, seg: int, nbytes: int, first: int, end: int) -> list[tuple[list, int]]:
    """The TAP writes for datagrams first..end-1 of a GRO batch (one run of `from_vxlan_batch`).

    See `offload.coalesce_tcp` for the arguments and what comes back.
    """
    at = first * seg + VXLAN_HEADER_LEN
    proto = version = 0
    if end - first > 1 and HAVE_NUMPY and seg > VXLAN_HEADER_LEN + ETH + 48:  # the first is whole
        et = buf[at + 12] << 8 | buf[at + 13]
        if et == 0x0800:
            version, proto = 4, buf[at + ETH + 9]
        elif et == 0x86DD:
            version, proto = 6, buf[at + ETH + 6]
    if proto == UDP:
        return coalesce_udp(buf, seg, nbytes, first, end, version)
    return coalesce_tcp(buf, seg, nbytes, first, end)
_MASKS: dict[int, object] = {}


def _same_mask(version: int):
    """Bytes of the inner IP and UDP headers that must equal the first datagram's."""
    mask = _MASKS.get(version)
    if mask is None:
        l3 = 20 if version == 4 else 40
        mask = np.full(l3 + 8, 0xFF, np.uint8)
        varying = [2, 3, 4, 5, 10, 11] if version == 4 else [4, 5]  # lengths, IPv4 id and checksum
        varying += [l3 + 4, l3 + 5, l3 + 6, l3 + 7]  # UDP length and checksum
        mask[varying] = 0
        mask = _MASKS[version] = mask
    return mask


def coalesce_udp(buf: bytearray, seg: int, nbytes: int, first: int, end: int,
                 version: int) -> list[tuple[list, int]]:
    """Like `offload.coalesce_tcp`, for datagrams first..end-1 carrying untagged UDP over `version`."""
    mv = memoryview(buf)
    count = end - first
    at0 = first * seg
    stop = end * seg
    if stop > nbytes:
        buf[nbytes:stop] = bytes(stop - nbytes)
    last_len = min(stop, nbytes) - (end - 1) * seg
    rows = np.frombuffer(buf, np.uint8, count * seg, at0).reshape(count, seg)
    r0 = rows[0]
    ip = VXLAN_HEADER_LEN + ETH
    if version == 4:
        udp = ip + 20
        first_ok = r0[ip] == 0x45 and r0[ip + 9] == UDP and r0[ip + 6] == 0x40 and r0[ip + 7] == 0
        rec = rows.view(_fields(seg, tot=(">u2", ip + 2), ulen=(">u2", udp + 4), ucsum=(">u2", udp + 6)))[:, 0]
        ip_len = rec["tot"].astype(np.int64)
        addrs = (ip + 12, ip + 20)
    else:
        udp = ip + 40
        first_ok = r0[ip] >> 4 == 6 and r0[ip + 6] == UDP
        rec = rows.view(_fields(seg, plen=(">u2", ip + 4), ulen=(">u2", udp + 4), ucsum=(">u2", udp + 6)))[:, 0]
        ip_len = rec["plen"].astype(np.int64) + 40
        addrs = (ip + 8, ip + 40)
    writes: list[tuple[list, int]] = []
    if not first_ok or udp + 8 >= seg:
        for i in range(count):
            at = at0 + i * seg
            writes.append(([ZERO_VNET_HDR, mv[at + VXLAN_HEADER_LEN : at + (seg if i < count - 1 else last_len)]], 1))
        return writes
    differs = ((rows[:, ip : udp + 8] ^ r0[ip : udp + 8]) & _same_mask(version)).any(axis=1)
    udp_len = rec["ulen"].astype(np.int64)
    whole = ip_len + ip == seg
    whole[-1] = ip_len[-1] + ip == last_len
    pseudo = ones_sum(bytes(r0[addrs[0] : addrs[1]])) + UDP
    start = udp - (seg - udp) % 4  # sum from a 4-byte multiple before the end; those bytes are constant
    sums = _sum_np(rows[:, start:]) + (udp_len + pseudo - ones_sum(bytes(r0[start:udp])))
    ok = (~differs & whole & (udp_len == ip_len - (udp - ip)) & (udp_len > 8)
          & (rec["ucsum"] != 0) & (sums % _MOD == 0))
    payload = udp_len - 8
    size = int(payload[0])
    joins = np.zeros(count, bool)
    joins[1:] = ok[1:] & ok[:-1] & (payload[:-1] == size) & (payload[1:] <= size)
    starts = np.flatnonzero(~joins).tolist() + [count]
    max_rows = max(1, min(MAX_GSO_SEGMENTS, (MAX_COALESCED_IP - (udp - ip) - 8) // max(size, 1)))
    l4 = udp - VXLAN_HEADER_LEN  # offset of UDP in the inner frame
    for a, b in zip(starts, starts[1:]):
        while a < b:
            c = min(b, a + max_rows)
            if c - a == 1 or not ok[a]:
                at = at0 + a * seg
                writes.append(([ZERO_VNET_HDR, mv[at + VXLAN_HEADER_LEN : at + (seg if a < count - 1 else last_len)]], 1))
                a += 1
                continue
            total = size * (c - 1 - a) + int(payload[c - 1])
            at = at0 + a * seg
            hdr = bytearray(mv[at + VXLAN_HEADER_LEN : at + udp + 8])
            length = 8 + total
            if version == 4:
                tot = 20 + length
                hdr[ETH + 2], hdr[ETH + 3] = tot >> 8, tot & 0xFF
                hdr[ETH + 10] = hdr[ETH + 11] = 0
                csum = _MOD - ones_sum(hdr[ETH : ETH + 20])
                hdr[ETH + 10], hdr[ETH + 11] = csum >> 8, csum & 0xFF
            else:
                hdr[ETH + 4], hdr[ETH + 5] = length >> 8, length & 0xFF
            hdr[l4 + 4], hdr[l4 + 5] = length >> 8, length & 0xFF
            partial = (pseudo + length) % _MOD  # NEEDS_CSUM: the field holds the pseudo-header sum
            hdr[l4 + 6], hdr[l4 + 7] = partial >> 8, partial & 0xFF
            iov: list = [VNET_HDR.pack(F_NEEDS_CSUM, GSO_UDP_L4, l4 + 8, size, l4, 6), hdr,
                         rows[a : c - 1, udp + 8 :].copy()]  # the full datagrams' payloads, gathered
            last = at0 + (c - 1) * seg
            iov.append(mv[last + udp + 8 : last + (seg if c < count else last_len)])
            writes.append((iov, c - a))
            a = c
    return writes
