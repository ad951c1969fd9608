"""Offload helpers, pure: fewer, bigger units through Python, standard VXLAN on the wire.

Out (TAP -> VXLAN). With IFF_VNET_HDR and TSO on, the TAP hands over TCP
"super-frames" of up to 64 KB, each behind a virtio-net header naming the
segment size (MSS). `segment_tcp` cuts one into MSS-sized inner segments
the way the kernel's own TSO does (IP ids counting up, sequence numbers
advancing, FIN/PSH only on the last segment, CWR only on the first, full IP
and TCP checksums) and lays them out back to back, each behind the VXLAN
header, as complete standard VXLAN datagrams of one size (the last may be
shorter): exactly what one `sendmsg` with UDP_SEGMENT wants. Nothing is
IP-fragmented (RFC 7348 section 4.3). The per-segment work is whole-array
NumPy: the super-frame becomes an (n, datagram) array.

In (VXLAN -> TAP). With UDP_GRO the kernel hands over up to 64 datagrams of
one flow in one buffer. `from_vxlan_batch` runs them through the Switch,
calling `Switch.from_vxlan` only when the 22 bytes that decide its answer
(VXLAN header, inner Ethernet header) change, and counting the rest as it
would. `coalesce_tcp` then finds runs of consecutive in-order TCP segments
of one flow whose checksums verify, and turns each run into one super-frame
(virtio-net header with GSO and NEEDS_CSUM, the first segment's headers
with the lengths fixed, the payloads) to write to the TAP at once, as
Linux GRO and wireguard-go's TCP GRO do. Everything else is written as it
came.

Checksums use the one's complement sum as a residue mod 0xFFFF: the sum of
the 16-bit big-endian words of some bytes is congruent to their value as one
big integer (2**16 == 1 mod 0xFFFF). A run of bytes summed as little-endian
words, or as 32-bit little-endian words, is congruent to 256 times that.
"""

from __future__ import annotations

import importlib.util
import struct
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from overlayd.wire.vxlan import VXLAN_HEADER_LEN

if TYPE_CHECKING:
    from overlayd.dataplane.switch import Switch


def _lazy_numpy() -> Any:
    """NumPy, loaded on its first use: a daemon with tso and coalesce off never pays its import.

    The recipe of importlib's documentation (importlib.util.LazyLoader). None
    when NumPy is not installed: then there is no segmentation and no coalescing.
    """
    if "numpy" in sys.modules:
        return sys.modules["numpy"]
    spec = importlib.util.find_spec("numpy")
    if spec is None or spec.loader is None:  # pragma: no cover - depends on the environment
        return None
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules["numpy"] = module
    spec.loader.exec_module(module)
    return module


np = _lazy_numpy()
HAVE_NUMPY = np is not None


def load_numpy() -> None:
    """Import NumPy now (at startup, when tso or coalesce is on), not on the first super-frame."""
    if np is not None:
        np.ndarray  # noqa: B018 - the first attribute access runs the import

# struct virtio_net_hdr (little-endian, as the TAP uses on x86 and arm64)
VNET_HDR = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
VNET_HDR_LEN = VNET_HDR.size
F_NEEDS_CSUM = 1
F_DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
GSO_TCPV6 = 4
GSO_ECN = 0x80
ZERO_VNET_HDR = bytes(VNET_HDR_LEN)

MAX_GSO_SEGMENTS = 64  # UDP_MAX_SEGMENTS
MAX_UDP_PAYLOAD = {4: 65535 - 20 - 8, 6: 65535 - 8}
MAX_COALESCED_IP = 65535  # an IPv4 total length (IPv6: payload length) must fit 16 bits

ETH = 14
TCP_FIN, TCP_PSH, TCP_ACK, TCP_CWR = 0x01, 0x08, 0x10, 0x80
_MOD = 0xFFFF
_DECIDES = VXLAN_HEADER_LEN + ETH  # VXLAN header + inner Ethernet header: what from_vxlan looks at


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """The one's complement sum of `data` as 16-bit big-endian words, mod 0xFFFF (0..0xFFFE)."""
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    return value % _MOD


def _sum_np(block: np.ndarray) -> np.ndarray:
    """Row sums, mod 0xFFFF as big-endian words, of a 2-D uint8 array (rows of even length)."""
    width = block.shape[1]
    if width % 4 == 0:
        raw = block.view(np.uint32).sum(axis=1, dtype=np.uint64)
    else:
        raw = block.view(np.uint16).sum(axis=1, dtype=np.uint64)
    if np.little_endian:
        raw = raw * 256
    else:  # pragma: no cover - big-endian hosts
        pass
    return (raw % _MOD).astype(np.int64)


def sum_any(data: bytes | bytearray | memoryview) -> int:
    """`ones_sum`, with NumPy for large buffers."""
    n = len(data)
    if np is None or n < 512:
        return ones_sum(data)
    even = n & ~3
    total = int(_sum_np(np.frombuffer(data, np.uint8, even).reshape(1, even))[0])
    if n != even:
        total += ones_sum(bytes(data[even:]) + bytes(4 - (n - even)))
    return total % _MOD


def finish_checksum(frame: bytearray | memoryview, start: int, offset: int) -> bool:
    """Complete a NEEDS_CSUM frame in place: the field at start+offset holds the pseudo-header sum."""
    where = start + offset
    if start >= len(frame) or where + 2 > len(frame):
        return False
    total = sum_any(frame[start:])
    csum = _MOD - total if total else _MOD
    frame[where] = csum >> 8
    frame[where + 1] = csum & 0xFF
    return True


# -- out: TCP segmentation --------------------------------------------------------


class Segmented:
    """One super-frame cut into complete VXLAN datagrams laid out back to back."""

    __slots__ = ("data", "datagram_bytes", "count", "total_bytes", "inner_bytes")

    def __init__(self, data: memoryview, datagram_bytes: int, count: int, inner_bytes: int):
        self.data = data  # count datagrams of datagram_bytes each, the last possibly shorter
        self.datagram_bytes = datagram_bytes
        self.count = count
        self.total_bytes = len(data)
        self.inner_bytes = inner_bytes  # the inner Ethernet frames' bytes, all segments

    def chunks(self, ipv6_outer: bool) -> Iterable[memoryview]:
        """Slices of at most 64 datagrams and at most one UDP payload's worth, for UDP_SEGMENT."""
        per_call = min(MAX_GSO_SEGMENTS, MAX_UDP_PAYLOAD[6 if ipv6_outer else 4] // self.datagram_bytes)
        step = per_call * self.datagram_bytes
        for at in range(0, self.total_bytes, step):
            yield self.data[at : at + step]

    def datagrams(self) -> Iterable[memoryview]:
        step = self.datagram_bytes
        for at in range(0, self.total_bytes, step):
            yield self.data[at : at + step]


_DTYPES: dict[tuple, object] = {}


def _fields(width: int, **at: tuple[str, int]):
    """A structured dtype of `width` bytes naming big-endian fields at offsets (cached)."""
    key = (width, *at.items())
    dt = _DTYPES.get(key)
    if dt is None:
        names = list(at)
        dt = _DTYPES[key] = np.dtype({"names": names, "formats": [at[n][0] for n in names],
                                      "offsets": [at[n][1] for n in names], "itemsize": width})
    return dt


def tcp_layout(frame: bytes | memoryview) -> tuple[int, int, int] | None:
    """(IP version, TCP header offset, TCP header length) of an untagged TCP frame, or None."""
    if len(frame) < ETH + 40:
        return None
    et = frame[12] << 8 | frame[13]
    if et == 0x0800:
        ihl = (frame[14] & 0x0F) * 4
        if frame[14] >> 4 != 4 or ihl < 20 or frame[23] != 6 or frame[20] & 0x3F or frame[21]:
            return None
        l4, version = ETH + ihl, 4
    elif et == 0x86DD:
        if frame[14] >> 4 != 6 or frame[20] != 6:  # no extension headers
            return None
        l4, version = ETH + 40, 6
    else:
        return None
    if len(frame) < l4 + 20:
        return None
    thl = (frame[l4 + 12] >> 4) * 4
    if thl < 20 or len(frame) < l4 + thl:
        return None
    return version, l4, thl


def tso_max_bytes(mtu: int, outer_version: int, vxlan_header_bytes: int = VXLAN_HEADER_LEN) -> int:
    """The TAP's gso_max_size: a TSO frame for this MTU then fits one sendmsg with UDP_SEGMENT.

    Each inner segment (at most `mtu` + 14 bytes) becomes a datagram of that
    plus the VXLAN header; a sendmsg carries at most 64 of them and one UDP
    payload's worth. The TCP payload the kernel puts in a TSO frame stays
    below gso_max_size minus its header allowance, so k full segments of the
    smallest common MSS (IP and TCP headers with timestamps: 52 bytes) fit.
    """
    datagram = vxlan_header_bytes + ETH + mtu
    k = min(MAX_GSO_SEGMENTS, MAX_UDP_PAYLOAD[outer_version] // datagram)
    return max(k * (mtu - 52), mtu)


_ROWS: dict[tuple[int, int, int, int], tuple] = {}


def _rows(n: int, mss: int, thl: int, last: int) -> tuple:
    """Per-row constants of a cut: row index, sequence offset, TCP length (cached by shape)."""
    key = (n, mss, thl, last)
    got = _ROWS.get(key)
    if got is None:
        if len(_ROWS) > 256:
            _ROWS.clear()
        index = np.arange(n, dtype=np.int64)
        tcp_lens = np.full(n, thl + mss, np.int64)
        tcp_lens[-1] = thl + last
        got = _ROWS[key] = (index, index * mss, tcp_lens)
    return got


def segment_tcp(frame: bytes | memoryview, mss: int, vxlan_header: bytes) -> Segmented | None:
    """Cut a TCP super-frame (IPv4 or IPv6, untagged) into `mss`-byte segments behind `vxlan_header`.

    The frame's TCP checksum field is ignored (a TSO frame holds the pseudo-header sum there).
    None if the frame is not one this can cut (then the caller drops and counts it).
    """
    if np is None or mss <= 0:
        return None
    layout = tcp_layout(frame)
    if layout is None:
        return None
    version, l4, thl = layout
    hdr_len = l4 + thl
    plen = len(frame) - hdr_len
    if plen <= 0:
        return None
    n = -(-plen // mss)
    vx = len(vxlan_header)
    head = vx + hdr_len  # bytes before the payload in each datagram
    dgram = head + mss
    if dgram > MAX_UDP_PAYLOAD[4]:
        return None
    width = (dgram + 3) & ~3
    ip = vx + ETH
    tcp = vx + l4
    src = np.frombuffer(frame, np.uint8)
    out = np.empty((n, width), np.uint8)
    out[:, :vx] = np.frombuffer(vxlan_header, np.uint8)
    out[:, vx:head] = src[:hdr_len]
    full = n - 1
    last = plen - full * mss
    if full:
        out[:full, head : head + mss] = src[hdr_len : hdr_len + full * mss].reshape(full, mss)
    out[full, head : head + last] = src[hdr_len + full * mss :]
    out[full, head + last :] = 0
    if width != dgram:
        out[:full, dgram:] = 0
    if version == 4:
        rec = out.view(_fields(width, tot=(">u2", ip + 2), id=(">u2", ip + 4), ipsum=(">u2", ip + 10),
                               seq=(">u4", tcp + 4), flags=("u1", tcp + 13), tcpsum=(">u2", tcp + 16)))[:, 0]
    else:
        rec = out.view(_fields(width, plen=(">u2", ip + 4), seq=(">u4", tcp + 4),
                               flags=("u1", tcp + 13), tcpsum=(">u2", tcp + 16)))[:, 0]
    index, offsets, tcp_lens = _rows(n, mss, thl, last)
    seq0 = int.from_bytes(frame[l4 + 4 : l4 + 8], "big")
    rec["seq"] = (offsets + seq0) & 0xFFFFFFFF
    flags = frame[l4 + 13]
    if n > 1:
        rec["flags"] = flags & ~(TCP_FIN | TCP_PSH | TCP_CWR)
        rec["flags"][0] = flags & ~(TCP_FIN | TCP_PSH)
        rec["flags"][-1] = flags & ~TCP_CWR
    rec["tcpsum"] = 0
    if version == 4:
        ihl = l4 - ETH
        id0 = frame[18] << 8 | frame[19]
        # What the rows' IP headers have in common: all but the length, id and checksum.
        base = ones_sum(frame[ETH : ETH + ihl]) - (frame[16] << 8 | frame[17]) - id0 - (frame[24] << 8 | frame[25])
        tots = tcp_lens + ihl
        ids = (index + id0) & 0xFFFF
        rec["tot"] = tots
        rec["id"] = ids
        rec["ipsum"] = _MOD - (tots + ids + base % _MOD) % _MOD
        pseudo = ones_sum(frame[26:34]) + 6
    else:
        rec["plen"] = tcp_lens
        pseudo = ones_sum(frame[22:54]) + 6
    rec["tcpsum"] = _MOD - (_sum_np(out[:, tcp:]) + tcp_lens + pseudo) % _MOD  # 0xFFFF is as good as 0
    total = full * dgram + head + last
    if width == dgram:
        data = memoryview(out.reshape(-1))[:total]
    else:
        data = memoryview(np.ascontiguousarray(out[:, :dgram]).reshape(-1))[:total]
    return Segmented(data, dgram, n, n * hdr_len + plen)


# -- in: batches through the Switch, and TCP coalescing ----------------------------


def from_vxlan_batch(switch: Switch, vtep: str, data: memoryview, seg: int,
                     now: float) -> list[tuple[int, int, int]]:
    """Run datagrams of `seg` bytes back to back in `data` (the last may be shorter) through `switch`.

    Returns runs (vni, first, end) of consecutive datagrams accepted with the
    same VXLAN and inner Ethernet headers. Counters and the FDB end up as if
    `switch.from_vxlan` had seen every datagram: it is called whenever those
    22 bytes change, and the repeats are counted as it counts them.
    """
    from_vxlan = switch.from_vxlan
    size = len(data)
    count = -(-size // seg)
    if np is not None and count > 2 and size - (count - 1) * seg >= _DECIDES:
        # The usual case, one comparison for the lot: every datagram repeats the first one's 22 bytes.
        rows = np.frombuffer(data, np.uint8, (count - 1) * seg).reshape(count - 1, seg)[:, :_DECIDES]
        if (rows == rows[0]).all() and data[(count - 1) * seg : (count - 1) * seg + _DECIDES] == data[:_DECIDES]:
            got = from_vxlan(vtep, data[:seg], now)
            if got is None:
                for at in range(seg, size, seg):  # each counts its drop, as before
                    from_vxlan(vtep, data[at : at + seg], now)
                return []
            c = switch.counters
            c.rx_datagrams += count - 1
            c.rx_frames += count - 1
            c.rx_bytes += size - seg - (count - 1) * VXLAN_HEADER_LEN
            return [(got[0], 0, count)]
    runs: list[tuple[int, int, int]] = []
    ref = None
    vni = first = 0
    repeats = repeat_bytes = 0
    index = 0
    for at in range(0, size, seg):
        end = min(at + seg, size)
        prefix = data[at : at + _DECIDES]
        if ref is not None and end - at >= _DECIDES and prefix == ref:
            repeats += 1
            repeat_bytes += end - at - VXLAN_HEADER_LEN
        else:
            if ref is not None:
                runs.append((vni, first, index))
                ref = None
            got = from_vxlan(vtep, data[at:end], now)
            if got is not None:
                vni, first = got[0], index
                ref = bytes(prefix)
        index += 1
    if ref is not None:
        runs.append((vni, first, index))
    if repeats:
        c = switch.counters
        c.rx_datagrams += repeats
        c.rx_frames += repeats
        c.rx_bytes += repeat_bytes
    return runs


_MASKS: dict[tuple[int, int], object] = {}


def _same_mask(version: int, thl: int):
    """Bytes from the inner IP header to the end of the TCP header that must equal the first row's."""
    key = (version, thl)
    mask = _MASKS.get(key)
    if mask is None:
        l3 = 20 if version == 4 else 40
        mask = np.full(l3 + thl, 0xFF, np.uint8)
        varying = [2, 3, 4, 5, 10, 11] if version == 4 else [4, 5]  # lengths, IPv4 id and checksum
        varying += [l3 + 4, l3 + 5, l3 + 6, l3 + 7, l3 + 13, l3 + 16, l3 + 17]  # seq, flags, checksum
        mask[varying] = 0
        mask = _MASKS[key] = mask
    return mask


def _coalescable(rows: np.ndarray, last_len: int, version: int):
    """Per-row facts of a block of VXLAN datagrams carrying untagged TCP: which rows may join a run."""
    ip = VXLAN_HEADER_LEN + ETH
    seg = rows.shape[1]
    r0 = rows[0]
    if version == 4:
        tcp = ip + 20
        first_ok = r0[ip] == 0x45 and r0[ip + 9] == 6 and not (r0[ip + 6] & 0x3F or r0[ip + 7])
        rec = rows.view(_fields(seg, tot=(">u2", ip + 2), seq=(">u4", tcp + 4), flags=("u1", tcp + 13)))[:, 0]
        ip_len = rec["tot"].astype(np.int64)
        addrs = (ip + 12, ip + 20)
    else:
        tcp = ip + 40
        first_ok = r0[ip] >> 4 == 6 and r0[ip + 6] == 6
        rec = rows.view(_fields(seg, plen=(">u2", ip + 4), seq=(">u4", tcp + 4), flags=("u1", tcp + 13)))[:, 0]
        ip_len = rec["plen"].astype(np.int64) + 40
        addrs = (ip + 8, ip + 40)
    thl = (int(r0[tcp + 12]) >> 4) * 4
    end = tcp + thl
    if not first_ok or thl < 20 or end > seg:
        none = np.zeros(len(rows), bool)
        return none, none, none, none, tcp, thl, 0
    differs = ((rows[:, ip:end] ^ r0[ip:end]) & _same_mask(version, thl)).any(axis=1)
    tcp_len = ip_len - (tcp - ip)
    payload = tcp_len - thl
    pseudo = ones_sum(bytes(r0[addrs[0] : addrs[1]])) + 6
    start = tcp - (seg - tcp) % 4  # sum from a 4-byte multiple before the end; those bytes are constant
    sums = _sum_np(rows[:, start:]) + (tcp_len + pseudo - ones_sum(bytes(r0[start:tcp])))
    whole = ip_len + ip == seg  # the datagram is the frame, no more, no less
    whole[-1] = ip_len[-1] + ip == last_len
    ok = ~differs & whole & (payload > 0) & (sums % _MOD == 0)
    return ok, rec["seq"].astype(np.int64), payload, rec["flags"], tcp, thl, pseudo


def coalesce_tcp(buf: bytearray, seg: int, nbytes: int, first: int, end: int) -> list[tuple[list, int]]:
    """The TAP writes (iovec list, virtio-net header first; frames it holds) for datagrams first..end-1.

    `buf[:nbytes]` holds datagrams of `seg` bytes back to back, all with the
    same VXLAN and inner Ethernet headers from `first` to `end` (one run of
    `from_vxlan_batch`). `buf` must have room up to a whole number of `seg`:
    the tail of the last datagram is zeroed for the checksum arithmetic.
    Consecutive in-order segments of one TCP flow with valid checksums, all
    but the last MSS-sized, merge into one GSO super-frame; everything else
    is written one frame at a time with an empty header.
    """
    mv = memoryview(buf)
    writes: list[tuple[list, int]] = []
    count = end - first
    at0 = first * seg
    et = (buf[at0 + 20] << 8) | buf[at0 + 21]
    version = 4 if et == 0x0800 else 6 if et == 0x86DD else 0
    if np is None or count < 2 or not version or seg < 8 + ETH + 60:
        for i in range(first, end):
            writes.append(([ZERO_VNET_HDR, mv[i * seg + VXLAN_HEADER_LEN : min((i + 1) * seg, nbytes)]], 1))
        return writes
    stop = end * seg
    if stop > nbytes:
        buf[nbytes:stop] = bytes(stop - nbytes)
    rows = np.frombuffer(buf, np.uint8, count * seg, at0).reshape(count, seg)
    last_len = min(stop, nbytes) - (end - 1) * seg
    ok, seq, payload, flags, tcp, thl, pseudo = _coalescable(rows, last_len, version)
    # Row i continues the run of row i-1 when both may join, i-1 is a full segment without PSH,
    # and i starts where i-1 ended. GRO batches hold datagrams of one size, so full means the first's.
    mss = int(payload[0])
    joins = np.zeros(count, bool)
    joins[1:] = (ok[1:] & ok[:-1] & (flags[:-1] == TCP_ACK) & ((flags[1:] | TCP_PSH) == (TCP_ACK | TCP_PSH))
                 & (payload[:-1] == mss) & (seq[1:] == (seq[:-1] + payload[:-1]) & 0xFFFFFFFF))
    starts = np.flatnonzero(~joins).tolist() + [count]
    max_rows = max(1, (MAX_COALESCED_IP - (tcp - VXLAN_HEADER_LEN - ETH) - thl) // max(mss, 1))
    for a, b in zip(starts, starts[1:]):
        while a < b:
            c = min(b, a + max_rows)
            if c - a == 1 or not ok[a]:
                at = (first + a) * seg
                writes.append(([ZERO_VNET_HDR, mv[at + VXLAN_HEADER_LEN : at + (seg if a < count - 1 else last_len)]], 1))
                a += 1
                continue
            total = mss * (c - 1 - a) + int(payload[c - 1])  # all but the last of a run are full
            iov = _superframe(mv, seg, first + a, version, tcp, thl, mss, total, int(flags[c - 1]), pseudo)
            iov.append(rows[a : c - 1, tcp + thl :].copy())  # the full segments' payloads, gathered
            at = (first + c - 1) * seg
            iov.append(mv[at + tcp + thl : at + (seg if c < count else last_len)])
            writes.append((iov, c - a))
            a = c
    return writes


def _superframe(mv: memoryview, seg: int, first: int, version: int, tcp: int,
                thl: int, mss: int, payload: int, last_flags: int, pseudo: int) -> list:
    """The virtio-net header and the inner headers of a super-frame of `payload` bytes."""
    at = first * seg
    hdr = bytearray(mv[at + VXLAN_HEADER_LEN : at + tcp + thl])
    l4 = tcp - VXLAN_HEADER_LEN  # offset of TCP in the inner frame
    ip = ETH
    tcp_len = thl + payload
    if version == 4:
        total = l4 - ip + tcp_len
        hdr[ip + 2], hdr[ip + 3] = total >> 8, total & 0xFF
        hdr[ip + 10] = hdr[ip + 11] = 0
        csum = _MOD - ones_sum(hdr[ip:l4])
        hdr[ip + 10], hdr[ip + 11] = csum >> 8, csum & 0xFF
        gso = GSO_TCPV4
    else:
        hdr[ip + 4], hdr[ip + 5] = tcp_len >> 8, tcp_len & 0xFF
        gso = GSO_TCPV6
    hdr[l4 + 13] = last_flags
    partial = (pseudo + tcp_len) % _MOD  # NEEDS_CSUM: the field holds the pseudo-header sum
    hdr[l4 + 16], hdr[l4 + 17] = partial >> 8, partial & 0xFF
    return [VNET_HDR.pack(F_NEEDS_CSUM, gso, l4 + thl, mss, l4, 16), hdr]
