"""segment_tcp and coalesce_tcp against slow, obvious models, on random input (Hypothesis).

The models work one segment at a time with struct and a naive one's complement
sum; the NumPy code works on whole arrays. Checksums compare as equal when one
says 0x0000 and the other 0xFFFF (both are "all ones" in one's complement, and
receivers accept either).
"""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlayd.dataplane import offload
from overlayd.wire.vxlan import encode_header

np = pytest.importorskip("numpy")

VX = encode_header(100)
MACS = bytes.fromhex("020000000002") + bytes.fromhex("020000000001")
SRC6, DST6 = ipaddress.IPv6Address("fd10::1").packed, ipaddress.IPv6Address("fd10::2").packed
FIN, PSH, ACK, CWR = 0x01, 0x08, 0x10, 0x80


def naive_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def checksum(data: bytes) -> int:
    return ~naive_sum(data) & 0xFFFF


def frame(version: int, payload: bytes, *, ip_options: bytes = b"", tcp_options: bytes = b"",
          flags: int = ACK, seq: int = 0, ip_id: int = 0, tcp_csum: int = 0) -> bytes:
    """An Ethernet frame with TCP; the IPv4 header checksum is right, the TCP one is `tcp_csum`."""
    thl = 20 + len(tcp_options)
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 555, (thl // 4) << 4, flags, 502, tcp_csum, 0)
    tcp += tcp_options
    if version == 4:
        ihl = 20 + len(ip_options)
        ip = struct.pack("!BBHHHBBH4s4s", 0x40 | ihl // 4, 0, ihl + thl + len(payload), ip_id, 0x4000,
                         64, 6, 0, bytes([192, 168, 100, 1]), bytes([192, 168, 100, 2])) + ip_options
        ip = ip[:10] + checksum(ip).to_bytes(2, "big") + ip[12:]
        return MACS + b"\x08\x00" + ip + tcp + payload
    ip = struct.pack("!IHBB", 0x60000000, thl + len(payload), 6, 64) + SRC6 + DST6
    return MACS + b"\x86\xdd" + ip + tcp + payload


def pseudo_header(version: int, f: bytes, tcp_len: int) -> bytes:
    if version == 4:
        return f[26:34] + b"\0\x06" + tcp_len.to_bytes(2, "big")
    return f[22:54] + tcp_len.to_bytes(4, "big") + b"\0\0\0\x06"


def with_tcp_checksum(version: int, f: bytes, l4: int) -> bytes:
    f = bytearray(f)
    f[l4 + 16 : l4 + 18] = b"\0\0"
    f[l4 + 16 : l4 + 18] = checksum(pseudo_header(version, f, len(f) - l4) + f[l4:]).to_bytes(2, "big")
    return bytes(f)


def same(a: bytes, b: bytes, csum_at: list[int]) -> bool:
    """Equal, but for checksum fields at csum_at that are 0x0000 in one and 0xFFFF in the other."""
    a, b = bytearray(a), bytearray(b)
    for at in csum_at:
        for x in (a, b):
            if x[at : at + 2] == b"\xff\xff":
                x[at : at + 2] = b"\0\0"
    return a == b


def naive_segments(version: int, payload: bytes, mss: int, ip_options: bytes, tcp_options: bytes,
                   flags: int, seq: int, ip_id: int) -> list[bytes]:
    """What the kernel's TSO makes of the super-frame: one complete frame per mss bytes."""
    chunks = [payload[at : at + mss] for at in range(0, len(payload), mss)]
    out = []
    for i, chunk in enumerate(chunks):
        f = flags
        if i < len(chunks) - 1:
            f &= ~(FIN | PSH)
        if i > 0:
            f &= ~CWR
        one = frame(version, chunk, ip_options=ip_options, tcp_options=tcp_options, flags=f,
                    seq=(seq + i * mss) % 2**32, ip_id=(ip_id + i) % 2**16)
        out.append(with_tcp_checksum(version, one, 14 + (20 + len(ip_options) if version == 4 else 40)))
    return out


options4 = st.sampled_from([b"", b"\x01\x01\x01\x01", b"\x07\x07\x04" + bytes(5)])  # NOP, record route
tcp_options = st.sampled_from([b"", b"\x01\x01\x08\x0a" + bytes(range(8)), b"\x02\x04\x05\xb4",
                               b"\x01" * 40])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(version=st.sampled_from([4, 6]), mss=st.integers(1, 1460), data=st.data(),
       ip_options=options4, tcp_options=tcp_options, flags=st.integers(0, 255),
       seq=st.integers(0, 2**32 - 1), ip_id=st.integers(0, 2**16 - 1))
def test_segment_tcp_cuts_as_the_naive_model(version, mss, data, ip_options, tcp_options, flags, seq, ip_id):
    ip_options = ip_options if version == 4 else b""
    length = data.draw(st.integers(1, min(64 * mss, 30000)), label="length")
    payload = data.draw(st.binary(min_size=length, max_size=length), label="payload")
    sf = frame(version, payload, ip_options=ip_options, tcp_options=tcp_options, flags=flags, seq=seq,
               ip_id=ip_id, tcp_csum=0x1234)  # a TSO frame's TCP checksum field is not a checksum
    got = offload.segment_tcp(memoryview(sf), mss, VX)
    want = naive_segments(version, payload, mss, ip_options, tcp_options, flags, seq, ip_id)
    assert got is not None and got.count == len(want)
    l4 = 14 + (20 + len(ip_options) if version == 4 else 40)
    datagrams = [bytes(d) for d in got.datagrams()]
    assert [d[:8] for d in datagrams] == [VX] * len(want)
    for i, (d, w) in enumerate(zip(datagrams, want)):
        assert same(d[8:], w, [24, l4 + 16]), f"segment {i} of {len(want)}"


# -- coalescing ----------------------------------------------------------------------------


def parse(version: int, d: bytes) -> dict | None:
    """The facts of one VXLAN datagram the naive coalescer looks at, or None if it carries no usable TCP."""
    f = d[8:]
    ip = 14
    if version == 4:
        if len(f) < 34 + 20 or f[ip] != 0x45 or f[ip + 9] != 6 or f[ip + 6] & 0x3F or f[ip + 7]:
            return None
        tcp, ip_len = 34, int.from_bytes(f[16:18], "big")
    else:
        if len(f) < 54 + 20 or f[ip] >> 4 != 6 or f[ip + 6] != 6:
            return None
        tcp, ip_len = 54, int.from_bytes(f[18:20], "big") + 40
    thl = (f[tcp + 12] >> 4) * 4
    if thl < 20 or len(f) < tcp + thl:
        return None
    # Everything in the IP and TCP headers but lengths, IPv4 id and checksum, seq, flags, checksum.
    varying = {2, 3, 4, 5, 10, 11} if version == 4 else {4, 5}
    varying |= {tcp - ip + k for k in (4, 5, 6, 7, 13, 16, 17)}
    fixed = bytes(b for k, b in enumerate(f[ip : tcp + thl]) if k not in varying)
    whole = ip_len == len(f) - ip
    valid = whole and naive_sum(pseudo_header(version, f, len(f) - tcp) + f[tcp:]) == 0xFFFF
    return {"fixed": fixed, "thl": thl, "tcp": tcp, "ok": valid and len(f) > tcp + thl,
            "seq": int.from_bytes(f[tcp + 4 : tcp + 8], "big"), "flags": f[tcp + 13],
            "payload": f[tcp + thl :], "frame": f}


def naive_coalesce(version: int, datagrams: list[bytes]) -> list[tuple[int, bytes]]:
    """(segments, frame with complete checksums) for each TAP write, the slow way."""
    rows = [parse(version, d) for d in datagrams]
    first = rows[0]
    ok = [r is not None and first is not None and r["ok"] and r["fixed"] == first["fixed"]
          and r["thl"] == first["thl"] for r in rows]
    mss = len(datagrams[0]) - 8 - (first["tcp"] + first["thl"]) if first else 0
    runs: list[list[int]] = []
    for i, r in enumerate(rows):
        if runs and i > 0 and ok[i] and ok[i - 1] and rows[i - 1]["flags"] == ACK \
                and r["flags"] | PSH == ACK | PSH and r["seq"] == (rows[i - 1]["seq"] + mss) % 2**32 \
                and len(rows[i - 1]["payload"]) == mss \
                and len(runs[-1]) < (65535 - (first["tcp"] - 14) - first["thl"]) // mss:
            runs[-1].append(i)
        else:
            runs.append([i])
    writes = []
    for run in runs:
        if len(run) == 1:
            writes.append((1, datagrams[run[0]][8:]))
            continue
        head = rows[run[0]]
        payload = b"".join(rows[i]["payload"] for i in run)
        tcp = head["tcp"]
        f = bytearray(head["frame"][: tcp + head["thl"]] + payload)
        if version == 4:
            f[16:18] = (len(f) - 14).to_bytes(2, "big")
            f[24:26] = b"\0\0"
            f[24:26] = checksum(f[14:34]).to_bytes(2, "big")
        else:
            f[18:20] = (len(f) - 54).to_bytes(2, "big")
        f[tcp + 13] = rows[run[-1]]["flags"]
        writes.append((len(run), with_tcp_checksum(version, bytes(f), tcp)))
    return writes


def damage(version: int, datagrams: list[bytes], how: list[tuple[int, int]]) -> list[bytes]:
    """Change some datagrams the ways a coalescer must notice."""
    out = [bytearray(d) for d in datagrams]
    n = len(out)
    tcp = 8 + (34 if version == 4 else 54)
    for kind, at in how:
        i = at % n
        d = out[i]
        if kind == 0:  # corrupted payload byte: the checksum no longer verifies
            d[-1] ^= 0x5A
        elif kind == 1 and i + 1 < n and len(out[i + 1]) == len(d):  # reordered
            out[i], out[i + 1] = out[i + 1], out[i]
        elif kind in (2, 3):  # PSH, or another window: the TCP checksum fixed up, a valid segment
            d[tcp + (13 if kind == 2 else 14)] |= PSH if kind == 2 else 1
            d[tcp + 16 : tcp + 18] = b"\0\0"
            d[tcp + 16 : tcp + 18] = checksum(pseudo_header(version, d[8:], len(d) - tcp) + d[tcp:]).to_bytes(2, "big")
        elif kind == 4:  # IP length shorter than the datagram (padding)
            at_len = 8 + (16 if version == 4 else 18)
            value = int.from_bytes(d[at_len : at_len + 2], "big") - 1
            d[at_len : at_len + 2] = value.to_bytes(2, "big")
    return [bytes(d) for d in out]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(version=st.sampled_from([4, 6]), mss=st.integers(40, 1460), count=st.integers(2, 64),
       tail=st.integers(0, 1460), tcp_options=tcp_options, seq=st.integers(0, 2**32 - 1),
       how=st.lists(st.tuples(st.integers(0, 4), st.integers(0, 63)), max_size=4),
       pure_ack=st.booleans(), data=st.data())
def test_coalesce_tcp_merges_as_the_naive_model(version, mss, count, tail, tcp_options, seq, how, pure_ack, data):
    length = mss * (count - 1) + max(1, min(tail, mss))
    payload = data.draw(st.binary(min_size=length, max_size=length), label="payload")
    datagrams = [VX + f for f in naive_segments(version, payload, mss, b"", tcp_options, ACK | PSH, seq, 7)]
    if pure_ack:  # a GRO batch may end with a shorter datagram of the same UDP flow: an ACK
        ack = frame(version, b"", tcp_options=tcp_options, seq=seq)
        datagrams[-1] = VX + with_tcp_checksum(version, ack, 34 if version == 4 else 54)
    datagrams = damage(version, datagrams, how)
    seg = len(datagrams[0])
    if any(len(d) > seg for d in datagrams):  # a reordered tail: not a GRO batch any more
        return
    buf = bytearray(len(datagrams) * seg + 64)
    blob = b"".join(datagrams)
    buf[: len(blob)] = blob
    writes = offload.coalesce_tcp(buf, seg, len(blob), 0, len(datagrams))
    want = naive_coalesce(version, datagrams)
    assert [n for _, n in writes] == [n for n, _ in want]
    for (iov, n), (_, expect) in zip(writes, want):
        raw = b"".join(bytes(part) for part in iov)
        vnet, got = raw[:10], bytearray(raw[10:])
        flags, gso, hdr_len, gso_size, start, off = offload.VNET_HDR.unpack(vnet)
        if n == 1:
            assert vnet == offload.ZERO_VNET_HDR and bytes(got) == expect
            continue
        l4 = 34 if version == 4 else 54
        assert (flags, gso, start, off) == (offload.F_NEEDS_CSUM,
                                            offload.GSO_TCPV4 if version == 4 else offload.GSO_TCPV6, l4, 16)
        assert hdr_len == l4 + 20 + len(tcp_options) and gso_size == mss
        assert offload.finish_checksum(got, start, off)
        assert same(bytes(got), expect, [l4 + 16])
