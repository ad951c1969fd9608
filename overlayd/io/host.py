"""What `overlayctl doctor` reads of this host, and its probes to the VTEPs.

Everything here reads: device MTUs and VXLAN flags (netlink), sysctls
(/proc/sys), the route back to a source address (netlink route get), the
kernel's IPv6 UDP checksum drops (/proc/net/snmp6). The one thing it sends
is a probe datagram to each VTEP the daemon named (status/doctor.py says
what the probe is and what its answers mean); no other address is ever
sent to. The checks themselves are pure (status/doctor.py).
"""

from __future__ import annotations

import errno
import ipaddress
import select
import socket
import time
from typing import Any

from pyroute2 import IPRoute

from overlayd.status.doctor import (
    MAX_PROBES,
    PROBE_WAIT_S,
    UDP_IP_HEADERS,
    Host,
    Probe,
    probe_size,
    rp_filter_sources,
)
from overlayd.wire.vxlan import encode_header

# Linux socket options Python does not name (linux/in.h, linux/in6.h)
IP_MTU_DISCOVER, IP_PMTUDISC_DO, IP_MTU = 10, 2, 14
IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO, IPV6_MTU = 23, 2, 24
PROBE_VNI = 0  # no overlayd network has it (config: vni >= 1)
PROBE_ETHERTYPE = b"\x88\xb5"  # IEEE 802 local experimental: nothing acts on it
PROBE_TEXT = b"overlayd doctor: path MTU and VXLAN port probe"


def sysctl(key: str) -> str | None:
    """A sysctl's value as /proc/sys has it ('net.ipv4.ip_forward'), None if it cannot be read."""
    try:
        with open("/proc/sys/" + key.replace(".", "/")) as f:
            return f.read().strip()
    except OSError:
        return None


def udp6_checksum_errors() -> int | None:
    try:
        with open("/proc/net/snmp6") as f:
            for line in f:
                name, _, value = line.partition(" ")
                if name == "Udp6InCsumErrors":
                    return int(value.strip())
    except (OSError, ValueError):
        pass
    return None


def _links(ipr: IPRoute) -> dict[str, Any]:
    return {link.get("IFLA_IFNAME"): link for link in ipr.get_links()}


def _underlay(ipr: IPRoute, vtep: str, names: dict[int, str]) -> str | None:
    address = ipaddress.ip_address(vtep)
    for msg in ipr.get_addr(family=socket.AF_INET if address.version == 4 else socket.AF_INET6):
        local = msg.get("IFA_LOCAL") or msg.get("IFA_ADDRESS")
        if local and ipaddress.ip_address(local) == address:
            return names.get(msg["index"])
    return None


def _vxlan_flags(link: Any) -> dict[str, Any] | None:
    info = link.get("IFLA_LINKINFO")
    if info is None or info.get("IFLA_INFO_KIND") != "vxlan":
        return None
    data = info.get("IFLA_INFO_DATA")
    if data is None:
        return {}
    return {"udp6zerocsumtx": bool(data.get("IFLA_VXLAN_UDP_ZERO_CSUM6_TX")),
            "udp6zerocsumrx": bool(data.get("IFLA_VXLAN_UDP_ZERO_CSUM6_RX")),
            "port": data.get("IFLA_VXLAN_PORT")}


def _route_back(ipr: IPRoute, source: str, names: dict[int, str]) -> str | None:
    try:
        routes = list(ipr.route("get", dst=source))
    except Exception:  # noqa: BLE001 - pyroute2's NetlinkError: no route (ENETUNREACH and friends)
        return None
    if not routes or routes[0].get("RTA_OIF") is None:
        return None
    return names.get(routes[0].get("RTA_OIF"))


def read_host(facts: dict[str, Any], probe: bool = True, wait_s: float = PROBE_WAIT_S) -> Host:
    """This host as the doctor's checks take it, for the daemon's `facts`."""
    host = Host()
    try:
        with IPRoute() as ipr:
            links = _links(ipr)
            names = {link["index"]: name for name, link in links.items()}
            host.underlay = _underlay(ipr, facts["vtep"], names)
            host.mtus = {name: link.get("IFLA_MTU") for name, link in links.items()}
            host.vxlan = {name: flags for name, link in links.items() if (flags := _vxlan_flags(link)) is not None}
            for sources in rp_filter_sources(facts, host).values():
                for source in sources:
                    host.routes_back[source] = _route_back(ipr, source, names)
    except OSError as err:
        host.problems.append(f"cannot read the host's links over netlink: {err.strerror or err}")
    keys = ["net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding", "net.ipv4.conf.all.rp_filter"]
    keys += [f"net.ipv4.conf.{d['name']}.rp_filter" for d in facts["devices"]]
    if host.underlay:
        keys.append(f"net.ipv4.conf.{host.underlay}.rp_filter")
    host.sysctls = {key: value for key in keys if (value := sysctl(key)) is not None}
    if facts["family"] == 6:
        host.udp6_checksum_errors = udp6_checksum_errors()
    if host.underlay is None:
        host.problems.append(f"the VTEP address {facts['vtep']} is not on this host: overlayctl runs in another "
                             "network namespace than overlayd")
    elif probe:
        size = probe_size(facts, host)
        if size is not None:
            host.probe_bytes = size
            host.probes = probe_vteps(facts["vtep"], facts["vteps"][:MAX_PROBES], facts["vxlan_port"], size, wait_s)
    return host


# -- the probes -----------------------------------------------------------------------------------


def probe_datagram(ip_bytes: int, version: int) -> bytes:
    """A VXLAN datagram (VNI 0) whose IP packet is `ip_bytes` long: the UDP payload."""
    payload = max(0, ip_bytes - UDP_IP_HEADERS[version])
    inner = b"\0" * 6 + b"\x02" + b"\0" * 5 + PROBE_ETHERTYPE + PROBE_TEXT
    datagram = encode_header(PROBE_VNI) + inner
    return datagram + b"\0" * max(0, payload - len(datagram))


def _outcome(err: OSError) -> tuple[str, str]:
    if err.errno == errno.ECONNREFUSED:
        return "refused", "ICMP port unreachable"
    if err.errno == errno.EMSGSIZE:
        return "too_big", "ICMP fragmentation needed / packet too big, or the local route's mtu"
    if err.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EACCES, errno.EPERM, errno.EHOSTDOWN):
        return "unreachable", err.strerror or str(err)
    return "error", err.strerror or str(err)


def _path_mtu(sock: socket.socket, version: int) -> int | None:
    level, name = (socket.IPPROTO_IP, IP_MTU) if version == 4 else (socket.IPPROTO_IPV6, IPV6_MTU)
    try:
        return sock.getsockopt(level, name)
    except OSError:
        return None


def probe_vteps(local: str, vteps: list[str], port: int, ip_bytes: int,
                wait_s: float = PROBE_WAIT_S) -> dict[str, Probe]:
    """One probe datagram from `local` to each VTEP's `port`, DF set, `ip_bytes` long; then up to
    `wait_s` for each one's ICMP error. Sent all at once, so the wait is paid once."""
    version = ipaddress.ip_address(local).version
    family = socket.AF_INET if version == 4 else socket.AF_INET6
    level, option, value = ((socket.IPPROTO_IP, IP_MTU_DISCOVER, IP_PMTUDISC_DO) if version == 4
                            else (socket.IPPROTO_IPV6, IPV6_MTU_DISCOVER, IPV6_PMTUDISC_DO))
    data = probe_datagram(ip_bytes, version)
    results: dict[str, Probe] = {}
    waiting: dict[socket.socket, str] = {}
    try:
        for vtep in vteps:
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.setsockopt(level, option, value)
                sock.bind((local, 0))
                sock.connect((vtep, port))
                sock.send(data)
            except OSError as err:
                outcome, detail = _outcome(err)
                results[vtep] = Probe(outcome, _path_mtu(sock, version), detail)
                sock.close()
                continue
            waiting[sock] = vtep
        deadline = time.monotonic() + wait_s
        while waiting and (left := deadline - time.monotonic()) > 0:
            ready, _, _ = select.select(list(waiting), [], [], left)
            for sock in ready:
                vtep = waiting.pop(sock)
                try:
                    sock.recv(2048)
                    results[vtep] = Probe("silent", _path_mtu(sock, version), "answered")
                except OSError as err:
                    outcome, detail = _outcome(err)
                    results[vtep] = Probe(outcome, _path_mtu(sock, version), detail)
                sock.close()
        for sock, vtep in waiting.items():
            results[vtep] = Probe("silent", _path_mtu(sock, version))
    finally:
        for sock in waiting:
            sock.close()
    return results
