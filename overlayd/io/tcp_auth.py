"""BGP's transport protection, as socket options: TCP MD5 signatures (RFC 2385) and GTSM, the
Generalized TTL Security Mechanism (RFC 5082).

- MD5: the kernel signs and checks every segment with a neighbor whose key it holds
  (TCP_MD5SIG, one key per peer address). Set on the listening socket before listen()
  (accepted connections inherit the keys) and on a connecting socket before connect().
  A segment from that address without the right signature is dropped by the kernel
  (TcpExtTCPMD5Failure / TCPMD5NotFound): no session, and nothing reaches overlayd.
- GTSM: we send with TTL (hop limit) 255 and the kernel drops what arrives with less
  (IP_MINTTL / IPV6_MINHOPCOUNT 255, counted in TcpExtTCPMinTTLDrop), so only a directly
  connected neighbor can talk to us: a packet from one hop further arrives with 254.

The key is only ever handed to the kernel; nothing here logs or formats it.
"""

from __future__ import annotations

import ipaddress
import socket
import struct

TCP_MD5SIG = 14  # linux/tcp.h
TCP_MD5SIG_MAXKEYLEN = 80
IP_MINTTL = 21  # linux/in.h
IPV6_MINHOPCOUNT = 73  # linux/in6.h
GTSM_TTL = 255
_SOCKADDR_STORAGE = 128


def md5sig(peer: str, key: bytes) -> bytes:
    """struct tcp_md5sig for `peer` (an IPv4 or IPv6 address) and `key` (an empty key deletes)."""
    if len(key) > TCP_MD5SIG_MAXKEYLEN:
        raise ValueError(f"a TCP MD5 key holds at most {TCP_MD5SIG_MAXKEYLEN} bytes")
    addr = ipaddress.ip_address(peer)
    if addr.version == 4:
        sa = struct.pack("=H", socket.AF_INET) + struct.pack("!H4s", 0, addr.packed)
    else:
        sa = struct.pack("=H", socket.AF_INET6) + struct.pack("!HI16sI", 0, 0, addr.packed, 0)
    # tcpm_addr, tcpm_flags, tcpm_prefixlen, tcpm_keylen, tcpm_ifindex, tcpm_key
    return sa.ljust(_SOCKADDR_STORAGE, b"\0") + struct.pack("=BBHi", 0, 0, len(key), 0) + \
        key.ljust(TCP_MD5SIG_MAXKEYLEN, b"\0")


def _v4_mapped(peer: str) -> str:
    return f"::ffff:{peer}"


def set_md5(sock: socket.socket, peer: str, key: bytes) -> None:
    """Sign and check every segment with `peer` using `key` (on an IPv6 socket an IPv4 peer
    is keyed by its mapped address)."""
    if sock.family == socket.AF_INET6 and ipaddress.ip_address(peer).version == 4:
        peer = _v4_mapped(peer)
    sock.setsockopt(socket.IPPROTO_TCP, TCP_MD5SIG, md5sig(peer, key))


def set_send_ttl(sock: socket.socket) -> None:
    """Send with TTL / hop limit 255 (GTSM's sending half; SYN-ACKs of a listener too)."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, GTSM_TTL)
    else:
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, GTSM_TTL)


def set_min_ttl(sock: socket.socket) -> None:
    """Drop every segment that arrives with a TTL / hop limit below 255 (GTSM's checking half)."""
    if sock.family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, IPV6_MINHOPCOUNT, GTSM_TTL)
    else:
        sock.setsockopt(socket.IPPROTO_IP, IP_MINTTL, GTSM_TTL)


def set_gtsm(sock: socket.socket) -> None:
    set_send_ttl(sock)
    set_min_ttl(sock)


def min_ttl(sock: socket.socket) -> int:
    """The socket's minimum accepted TTL / hop limit (0: no check)."""
    if sock.family == socket.AF_INET6:
        return sock.getsockopt(socket.IPPROTO_IPV6, IPV6_MINHOPCOUNT)
    return sock.getsockopt(socket.IPPROTO_IP, IP_MINTTL)
