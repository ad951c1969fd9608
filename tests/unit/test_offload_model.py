"""segment_tcp against a slow, obvious model, on random input (Hypothesis).

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
from tests.unit.test_offload import naive_sum

np = pytest.importorskip("numpy")

VX = encode_header(100)
MACS = bytes.fromhex("020000000002") + bytes.fromhex("020000000001")
SRC6, DST6 = ipaddress.IPv6Address("fd10::1").packed, ipaddress.IPv6Address("fd10::2").packed
FIN, PSH, ACK, CWR = 0x01, 0x08, 0x10, 0x80


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
