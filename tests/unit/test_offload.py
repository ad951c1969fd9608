"""dataplane.offload against slow, obvious models: segmentation, checksums, batches, coalescing."""

from __future__ import annotations

import ipaddress
import random
import struct

import pytest

from overlayd.dataplane import offload
from overlayd.dataplane.switch import Switch
from overlayd.fabric.fdb import Source
from overlayd.wire.vxlan import encode_header

np = pytest.importorskip("numpy")

VX = encode_header(100)
MAC_A, MAC_B = bytes.fromhex("020000000001"), bytes.fromhex("020000000002")


def naive_sum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return total


def tcp_ok(frame: bytes) -> bool:
    """Both checksums of an untagged IPv4/IPv6 TCP frame verify (the naive way)."""
    if frame[12:14] == b"\x08\x00":
        ihl = (frame[14] & 15) * 4
        if naive_sum(frame[14 : 14 + ihl]) != 0xFFFF:
            return False
        total = int.from_bytes(frame[16:18], "big")
        seg = frame[14 + ihl : 14 + total]
        pseudo = frame[26:34] + b"\0\x06" + len(seg).to_bytes(2, "big")
    else:
        seg = frame[54 : 54 + int.from_bytes(frame[18:20], "big")]
        pseudo = frame[22:54] + len(seg).to_bytes(4, "big") + b"\0\0\0\x06"
    return naive_sum(pseudo + seg) == 0xFFFF


def superframe(version: int, payload: bytes, *, options: bytes = b"", flags: int = 0x18,
               seq: int = 1000, ip_id: int = 7) -> bytes:
    thl = 20 + len(options)
    tcp = (struct.pack("!HHIIBBHHH", 40000, 5201, seq, 555, (thl // 4) << 4, flags, 502, 0xABCD, 0)
           + options)
    if version == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + thl + len(payload) & 0xFFFF, ip_id, 0x4000,
                         64, 6, 0, bytes([192, 168, 100, 1]), bytes([192, 168, 100, 2]))
        et = b"\x08\x00"
    else:
        ip = (struct.pack("!IHBB", 0x60000000, thl + len(payload) & 0xFFFF, 6, 64)
              + ipaddress.IPv6Address("fd10::1").packed + ipaddress.IPv6Address("fd10::2").packed)
        et = b"\x86\xdd"
    return MAC_B + MAC_A + et + ip + tcp + payload


@pytest.mark.parametrize("size", [0, 1, 2, 3, 511, 512, 513, 1400, 65000])
def test_ones_sum_matches_the_naive_sum(size):
    data = random.Random(size).randbytes(size)
    assert offload.ones_sum(data) % 0xFFFF == naive_sum(data) % 0xFFFF
    assert offload.sum_any(data) % 0xFFFF == naive_sum(data) % 0xFFFF


def test_finish_checksum_completes_a_partial_udp_checksum():
    payload = b"x" * 37
    udp = struct.pack("!HHHH", 1, 2, 8 + len(payload), 0) + payload
    src, dst = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
    partial = naive_sum(src + dst + b"\0\x11" + len(udp).to_bytes(2, "big"))
    frame = bytearray(b"\0" * 34 + udp)
    frame[34 + 6 : 34 + 8] = partial.to_bytes(2, "big")
    assert offload.finish_checksum(frame, 34, 6)
    assert naive_sum(src + dst + b"\0\x11" + len(udp).to_bytes(2, "big") + bytes(frame[34:])) == 0xFFFF


@pytest.mark.parametrize("version", [4, 6])
@pytest.mark.parametrize("length,mss,options,flags", [
    (65000, 1398, b"\x01\x01\x08\x0a" + bytes(8), 0x18),   # timestamps, PSH
    (4 * 1398, 1398, b"", 0x10),                           # an exact multiple
    (3001, 1000, b"", 0x19 | 0x80),                        # FIN, PSH, CWR; odd last segment
    (10, 1398, b"", 0x18),                                 # one segment
    (7777, 777, b"\x02\x04\x05\xb4", 0x10),                # an odd MSS
])
def test_segments_are_complete_standard_datagrams(version, length, mss, options, flags):
    payload = random.Random(length).randbytes(length)
    frame = superframe(version, payload, options=options, flags=flags, seq=0xFFFFF000)
    out = offload.segment_tcp(memoryview(frame), mss, VX)
    assert out is not None
    datagrams = [bytes(d) for d in out.datagrams()]
    n = -(-length // mss)
    assert out.count == len(datagrams) == n
    hdr = len(frame) - length
    assert all(len(d) == out.datagram_bytes for d in datagrams[:-1])
    assert out.datagram_bytes == 8 + hdr + mss
    joined = b""
    for i, d in enumerate(datagrams):
        assert d[:8] == VX
        inner = d[8:]
        assert inner[:14] == frame[:14]
        assert tcp_ok(inner), f"segment {i}"
        l4 = 34 if version == 4 else 54
        if version == 4:
            assert int.from_bytes(inner[18:20], "big") == 7 + i
            assert int.from_bytes(inner[16:18], "big") == len(inner) - 14
        else:
            assert int.from_bytes(inner[18:20], "big") == len(inner) - 54
        assert int.from_bytes(inner[l4 + 4 : l4 + 8], "big") == (0xFFFFF000 + i * mss) & 0xFFFFFFFF
        got_flags = inner[l4 + 13]
        want = flags
        if i < n - 1:
            want &= ~0x09
        if i > 0:
            want &= ~0x80
        assert got_flags == want
        assert inner[l4 + 20 : hdr] == options
        joined += inner[hdr:]
    assert joined == payload
    assert out.inner_bytes == sum(len(d) - 8 for d in datagrams)
    chunks = list(out.chunks(ipv6_outer=False))
    assert b"".join(bytes(c) for c in chunks) == b"".join(datagrams)
    assert all(len(c) <= 65507 and len(c) <= 64 * out.datagram_bytes for c in chunks)


def test_what_cannot_be_cut_is_refused():
    frame = superframe(4, b"x" * 3000)
    assert offload.segment_tcp(frame[:14] + b"\x81\x00" + frame[14:], 1000, VX) is None  # VLAN tag
    udp = bytearray(frame)
    udp[23] = 17
    assert offload.segment_tcp(bytes(udp), 1000, VX) is None


def gro_buffer(datagrams: list[bytes]) -> tuple[bytearray, int, int]:
    seg = len(datagrams[0])
    data = b"".join(datagrams)
    buf = bytearray(len(datagrams) * seg + 64)
    buf[: len(data)] = data
    return buf, seg, len(data)


def rebuild(iov: list) -> tuple[bytes, bytes]:
    """(virtio-net header, frame) of one TAP write."""
    data = b"".join(bytes(part) for part in iov)
    return data[:10], data[10:]


@pytest.mark.parametrize("version", [4, 6])
def test_segments_coalesce_back_into_the_superframe(version):
    payload = random.Random(1).randbytes(30000)
    frame = superframe(version, payload, options=b"\x01\x01\x08\x0a" + bytes(8))
    out = offload.segment_tcp(frame, 1398, VX)
    buf, seg, nbytes = gro_buffer([bytes(d) for d in out.datagrams()])
    writes = offload.coalesce_tcp(buf, seg, nbytes, 0, out.count)
    assert len(writes) == 1 and writes[0][1] == out.count
    vnet, got = rebuild(writes[0][0])
    flags, gso, hdr_len, gso_size, start, off = offload.VNET_HDR.unpack(vnet)
    l4 = 34 if version == 4 else 54
    assert (flags, gso, hdr_len, gso_size, start, off) == (
        offload.F_NEEDS_CSUM, offload.GSO_TCPV4 if version == 4 else offload.GSO_TCPV6,
        l4 + 32, 1398, l4, 16)
    assert len(got) == len(frame) and got[l4 + 32 :] == payload
    assert got[:l4 + 16] == frame[:l4 + 16] or version == 4  # IPv4: length and checksum redone
    if version == 4:
        assert naive_sum(got[14:34]) == 0xFFFF
        assert got[:18] == frame[:18] and got[20:24] == frame[20:24]
    # Completing the partial checksum gives a valid TCP segment.
    done = bytearray(got)
    offload.finish_checksum(done, l4, 16)
    assert tcp_ok(bytes(done))


def test_bad_checksums_out_of_order_and_pure_acks_are_written_alone():
    payload = random.Random(2).randbytes(8 * 1000)
    out = offload.segment_tcp(superframe(4, payload), 1000, VX)
    dgrams = [bytearray(d) for d in out.datagrams()]
    dgrams[3][-1] ^= 0xFF  # corrupted in flight: its checksum no longer verifies
    dgrams[5], dgrams[6] = dgrams[6], dgrams[5]  # reordered
    buf, seg, nbytes = gro_buffer([bytes(d) for d in dgrams])
    writes = offload.coalesce_tcp(buf, seg, nbytes, 0, len(dgrams))
    assert sum(frames for _, frames in writes) == len(dgrams)
    writes = [iov for iov, _ in writes]
    shapes = [(offload.VNET_HDR.unpack(rebuild(w)[0])[1], n) for w, (_, n) in
              zip(writes, offload.coalesce_tcp(buf, seg, nbytes, 0, len(dgrams)))]
    # 0-2 merge; 3 alone (bad); 4 alone (6 follows it, out of order); 6 alone, then 5, 7 ...
    assert shapes[0] == (offload.GSO_TCPV4, 3)
    assert shapes[1][0] == offload.GSO_NONE
    frames = [rebuild(w)[1] for w in writes]
    assert sum(len(f) for f in frames) >= len(payload)
    single = [f for w, f in zip(writes, frames) if offload.VNET_HDR.unpack(rebuild(w)[0])[1] == 0]
    assert bytes(dgrams[3][8:]) in single
    # Each merged frame carries its segments' payload in order.
    for w in writes:
        vnet, f = rebuild(w)
        if offload.VNET_HDR.unpack(vnet)[1]:
            seq = int.from_bytes(f[38:42], "big")
            start = (seq - 1000) % 2**32
            assert f[54:] == payload[start : start + len(f) - 54]


def switch_pair():
    switches = []
    for _ in range(2):
        sw = Switch(4789, 300)
        sw.add_segment(100, "blue", own_macs=[bytes.fromhex("0a0000000001")])
        sw.add_flood_vtep(100, "10.0.0.2", Source.STATIC)
        switches.append(sw)
    return switches


def test_a_batch_counts_and_learns_as_one_datagram_at_a_time():
    batched, single = switch_pair()
    good = VX + MAC_B + MAC_A + b"\x08\x00" + bytes(50)
    other = VX + MAC_B + bytes.fromhex("020000000003") + b"\x08\x00" + bytes(50)
    bad_vni = encode_header(999) + MAC_B + MAC_A + b"\x08\x00" + bytes(50)
    own = VX + MAC_B + bytes.fromhex("0a0000000001") + b"\x08\x00" + bytes(50)
    datagrams = [good, good, good, other, bad_vni, bad_vni, own, good, good[:30]]
    seg = len(good)
    data = memoryview(b"".join(datagrams))
    runs = offload.from_vxlan_batch(batched, "10.0.0.2", data, seg, 5.0)
    for d in datagrams:
        single.from_vxlan("10.0.0.2", d, 5.0)
    assert batched.counters.as_dict() == single.counters.as_dict()
    assert sorted((e.mac, e.vtep) for e in batched.fdb) == sorted((e.mac, e.vtep) for e in single.fdb)
    assert runs == [(100, 0, 3), (100, 3, 4), (100, 7, 9)]  # a short repeat is still a repeat


def test_tso_frames_fit_one_sendmsg():
    for mtu, version in ((1450, 4), (1430, 6), (8950, 4), (1280, 6)):
        limit = offload.tso_max_bytes(mtu, version)
        mss = mtu - 52  # IP + TCP with timestamps: the smallest usual MSS
        segments = -(-limit // mss)
        datagram = 8 + 14 + mtu
        assert segments <= offload.MAX_GSO_SEGMENTS
        assert segments * datagram <= offload.MAX_UDP_PAYLOAD[version]


def udp_datagram(version: int, payload: bytes, *, ip_id: int = 1, df: bool = True,
                 zero_csum: bool = False) -> bytes:
    """A VXLAN datagram carrying one inner UDP datagram with a correct checksum."""
    udp_len = 8 + len(payload)
    if version == 4:
        src, dst = bytes([192, 168, 100, 1]), bytes([192, 168, 100, 2])
        pseudo = src + dst + b"\0\x11" + udp_len.to_bytes(2, "big")
    else:
        src, dst = ipaddress.IPv6Address("fd10::1").packed, ipaddress.IPv6Address("fd10::2").packed
        pseudo = src + dst + udp_len.to_bytes(4, "big") + b"\0\0\0\x11"
    udp = struct.pack("!HHHH", 5001, 5201, udp_len, 0) + payload
    csum = 0 if zero_csum else (0xFFFF - naive_sum(pseudo + udp)) or 0xFFFF
    udp = udp[:6] + csum.to_bytes(2, "big") + udp[8:]
    if version == 4:
        ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + udp_len, ip_id, 0x4000 if df else 0,
                                   64, 17, 0, src, dst))
        ip[10:12] = (0xFFFF - naive_sum(bytes(ip))).to_bytes(2, "big")
        et = b"\x08\x00"
    else:
        ip = struct.pack("!IHBB", 0x60000000, udp_len, 17, 64) + src + dst
        et = b"\x86\xdd"
    return VX + MAC_B + MAC_A + et + bytes(ip) + udp


@pytest.mark.parametrize("version", [4, 6])
def test_udp_datagrams_of_one_flow_become_one_udp_gso_frame(version):
    from overlayd.dataplane import gro

    payloads = [bytes([i]) * 64 for i in range(20)] + [b"tail"]
    dgrams = [udp_datagram(version, p, ip_id=100 + i) for i, p in enumerate(payloads)]
    buf, seg, nbytes = gro_buffer(dgrams)
    writes = gro.coalesce(buf, seg, nbytes, 0, len(dgrams))
    assert [frames for _, frames in writes] == [len(dgrams)]
    vnet, frame = rebuild(writes[0][0])
    l4 = 34 if version == 4 else 54
    assert offload.VNET_HDR.unpack(vnet) == (offload.F_NEEDS_CSUM, gro.GSO_UDP_L4, l4 + 8, 64, l4, 6)
    assert frame[l4 + 8 :] == b"".join(payloads)
    length = 8 + sum(map(len, payloads))
    assert int.from_bytes(frame[l4 + 4 : l4 + 6], "big") == length
    if version == 4:
        assert int.from_bytes(frame[16:18], "big") == 20 + length and naive_sum(frame[14:34]) == 0xFFFF
    else:
        assert int.from_bytes(frame[18:20], "big") == length
    done = bytearray(frame)  # what the kernel does with NEEDS_CSUM: a valid checksum over the whole
    offload.finish_checksum(done, l4, 6)
    pseudo = (frame[26:34] + b"\0\x11" + length.to_bytes(2, "big") if version == 4
              else frame[22:54] + length.to_bytes(4, "big") + b"\0\0\0\x11")
    assert naive_sum(pseudo + bytes(done[l4:])) == 0xFFFF


def test_udp_datagrams_that_cannot_join_are_written_as_they_came():
    from overlayd.dataplane import gro

    good = [udp_datagram(4, bytes([i]) * 64) for i in range(4)]
    bad = bytearray(good[1])
    bad[-1] ^= 1  # its checksum no longer verifies
    no_csum = udp_datagram(4, b"z" * 64, zero_csum=True)
    dgrams = [good[0], bytes(bad), good[2], good[3], no_csum]
    buf, seg, nbytes = gro_buffer(dgrams)
    writes = gro.coalesce(buf, seg, nbytes, 0, len(dgrams))
    assert [frames for _, frames in writes] == [1, 1, 2, 1]
    assert rebuild(writes[1][0]) == (offload.ZERO_VNET_HDR, bytes(bad[8:]))
    assert rebuild(writes[3][0]) == (offload.ZERO_VNET_HDR, no_csum[8:])
    # Without DF the IPv4 ids would be renumbered: such datagrams go alone.
    plain = [udp_datagram(4, bytes([i]) * 64, df=False) for i in range(3)]
    buf, seg, nbytes = gro_buffer(plain)
    assert [frames for _, frames in gro.coalesce(buf, seg, nbytes, 0, 3)] == [1, 1, 1]
