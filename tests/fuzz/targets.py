"""Fuzz targets: every decoder of bytes (or lines, or config documents) from outside.

A target is a function `bytes -> None` that feeds one input to the code
under test and checks what came back. The one rule: **only the decoder's
own error escapes** (`Target.allowed`; the harness catches those) and no
input takes more than `SLOW_S`. Any other exception is a crash, the input
a crasher for tests/fuzz/corpus/<target>/.

The contracts, module by module:

    vxlan, ethernet, arp, ndp      DecodeError (wire/errors.py)
    ip                             parse_flow: a Flow, None or DecodeError; nat.rewrite_*: nothing
    bgp_stream, bgp_message,
    bgp_update, bgp_attributes     BgpError (wire/bgp/errors.py: the NOTIFICATION to send)
    evpn_nlri, unicast_nlri        DecodeError
    status                         nothing: handle_line answers every line with one reply line
    config                         ConfigError (config/fields.py)
    switch_tap, switch_vxlan,
    router_device, router_vxlan    nothing: the data plane counts and drops

Most targets also check a property where one is cheap: what decodes
encodes back to the same bytes, a route decoded from the wire can be sent
on (a route reflector would), a rewritten packet still parses the same.

The same functions run under Hypothesis (tests/unit/test_fuzz.py, in the
normal suite), under atheris (`make fuzz`, tools/fuzz.py) and replay the
corpus. Inputs are plain bytes everywhere, so a crasher found by one engine
replays in the others.
"""

from __future__ import annotations

import copy
import ipaddress
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import yaml

from overlayd.config import parse_config
from overlayd.config.fields import ConfigError
from overlayd.dataplane.counters import Counters
from overlayd.dataplane.router import Router
from overlayd.dataplane.services import ServicePath
from overlayd.dataplane.switch import Switch
from overlayd.fabric.conntrack import Conntrack
from overlayd.fabric.fdb import Source
from overlayd.fabric.prefixes import PrefixEntry, PrefixTable
from overlayd.fabric.services import ServiceTable
from overlayd.status.protocol import PROTOCOL_VERSION, StatusError, handle_line
from overlayd.wire import nat
from overlayd.wire.arp import ARP_LEN, ArpPacket
from overlayd.wire.bgp import evpn, unicast
from overlayd.wire.bgp import messages as bgp
from overlayd.wire.bgp.attributes import (
    FLAG_EXTENDED_LENGTH,
    FramedAttribute,
    decode_path_attributes,
)
from overlayd.wire.bgp.errors import BgpError
from overlayd.wire.bgp.unicast import IPV4_UNICAST, IPV6_UNICAST
from overlayd.wire.bgp.update import (
    L2VPN_EVPN,
    decode_update,
    encode_update,
    split_update,
)
from overlayd.wire.errors import DecodeError
from overlayd.wire.ethernet import EthernetHeader, payload
from overlayd.wire.ip import parse_flow
from overlayd.wire.ndp import NeighborMessage
from overlayd.wire.vxlan import VxlanHeader, decode_header, encode_header

ROOT = Path(__file__).resolve().parents[2]
CORPUS = Path(__file__).resolve().parent / "corpus"
VECTORS = ROOT / "tests" / "vectors"
SLOW_S = 0.100  # no input may take longer (issue 13, item 10)
ALL_FAMILIES = (L2VPN_EVPN, IPV4_UNICAST, IPV6_UNICAST)


@dataclass(frozen=True)
class Target:
    name: str
    run: Callable[[bytes], None]
    allowed: tuple[type[BaseException], ...]  # the decoder's own errors: not a crash
    what: str
    seeds: Callable[[], list[bytes]] = field(default=list)

    def __call__(self, data: bytes) -> None:
        """One input; raises only what is a bug (the allowed errors are swallowed)."""
        try:
            self.run(data)
        except self.allowed:
            pass


TARGETS: dict[str, Target] = {}


def target(name: str, allowed: tuple[type[BaseException], ...], what: str, seeds: Callable[[], list[bytes]]):
    def register(fn: Callable[[bytes], None]) -> Callable[[bytes], None]:
        TARGETS[name] = Target(name, fn, allowed, what, seeds)
        return fn
    return register


def _hex_vectors(path: str) -> list[bytes]:
    """The bytes of every vector (and error case) of a tests/vectors file."""
    doc = json.loads((VECTORS / path).read_text())
    return [bytes.fromhex(v["hex"].replace(" ", "")) for v in doc["vectors"] + doc.get("errors", [])]


def _frames() -> list[bytes]:
    return (_hex_vectors("ethernet.json") + _hex_vectors("arp.json") + _hex_vectors("ndp.json")
            + _hex_vectors("packets.json"))


# -- wire: VXLAN, Ethernet, ARP, ND ----------------------------------------------------------


def _vxlan_seeds() -> list[bytes]:
    return _hex_vectors("vxlan.json") + [encode_header(100), b"\x08" + bytes(7)]


@target("vxlan", (DecodeError,), "wire/vxlan.py decode_header", _vxlan_seeds)
def fuzz_vxlan(data: bytes) -> None:
    vni = decode_header(data)
    assert VxlanHeader.decode(memoryview(data)).vni == vni
    assert encode_header(vni) == data[:8], "a header that decodes is the canonical one (reserved bits dropped)"


@target("ethernet", (DecodeError,), "wire/ethernet.py EthernetHeader.decode, payload", _frames)
def fuzz_ethernet(data: bytes) -> None:
    header = EthernetHeader.decode(data)
    assert len(payload(data)) == len(data) - header.length
    if header.vlan is None:
        assert header.encode() == data[:14]


@target("arp", (DecodeError,), "wire/arp.py ArpPacket.decode", lambda: [f[14:] for f in _frames()])
def fuzz_arp(data: bytes) -> None:
    packet = ArpPacket.decode(data)
    assert packet.encode() == data[:ARP_LEN]


@target("ndp", (DecodeError,), "wire/ndp.py NeighborMessage.decode", lambda: [f[14:] for f in _frames()])
def fuzz_ndp(data: bytes) -> None:
    msg = NeighborMessage.decode(data)
    # what decodes encodes to a packet that decodes the same (options overlayd skips are dropped)
    assert NeighborMessage.decode(msg.encode()) == msg


# -- wire: IPv4/IPv6 with TCP/UDP, NAT ---------------------------------------------------------


def _ip_seeds() -> list[bytes]:
    return _hex_vectors("services/packets.json") + [f[14:] for f in _frames()]


@target("ip", (DecodeError,), "wire/ip.py parse_flow, wire/nat.py rewrite_dst/rewrite_src", _ip_seeds)
def fuzz_ip(data: bytes) -> None:
    flow = parse_flow(data)
    if flow is None:
        return
    assert flow.ip_len <= len(data) and flow.l4_offset < flow.payload_offset <= flow.ip_len
    packet = bytearray(data)
    size = 4 if flow.version == 4 else 16
    addr = bytes(range(1, size + 1))
    for partial in (False, True):
        nat.rewrite_dst(packet, flow, addr, 8080, partial=partial)
        nat.rewrite_src(packet, flow, addr[::-1], 53, partial=partial)
        again = parse_flow(packet)
        assert again is not None and again[6:] == flow[6:], "a rewrite moves nothing but addresses and ports"
        assert (again.dst, again.dport, again.src, again.sport) == (addr, 8080, addr[::-1], 53)
        nat.rewrite_dst(packet, again, flow.dst, flow.dport, partial=partial)
        nat.rewrite_src(packet, again, flow.src, flow.sport, partial=partial)
    assert len(packet) == len(data)
    if flow.version == 6:  # IPv6 has no header checksum: its header comes back as it was
        assert packet[:40] == data[:40]


# -- BGP --------------------------------------------------------------------------------------


def _bgp_messages() -> list[bytes]:
    out = _hex_vectors("bgp_messages/messages.json")
    for name in ("announce.json", "withdraw.json", "malformed.json", "unicast.json", "unicast_malformed.json"):
        out += _hex_vectors(f"bgp_update/{name}")
    return out


def _options(byte: int) -> tuple[bool, tuple]:
    """A session's four_octet_as and negotiated families, from one byte of the input."""
    families = tuple(f for bit, f in enumerate(ALL_FAMILIES) if byte >> bit & 1) or (L2VPN_EVPN,)
    return not byte & 0x80, families


def _check_update(update, four_octet_as: bool) -> None:
    """A decoded UPDATE can be sent on: split_update and encode_update take it (a reflector's job)."""
    if update.treat_as_withdraw or not (update.announced or update.withdrawn or update.end_of_rib):
        return
    for part in split_update(update, four_octet_as):
        encode_update(part, four_octet_as)


@target("bgp_stream", (BgpError,), "wire/bgp/messages.py MessageReader + decode_message on a TCP stream",
        lambda: [b"\x07" + m for m in _bgp_messages()] + [b"\x07" + b"".join(_bgp_messages())])
def fuzz_bgp_stream(data: bytes) -> None:
    if not data:
        return
    four_octet_as, families = _options(data[0])
    reader = bgp.MessageReader()
    stream = data[1:]
    step = 1 + data[0] % 61  # feed in pieces: a message cut anywhere
    for at in range(0, len(stream), step):
        reader.feed(stream[at : at + step])
        for msg_type, body in reader:
            msg = bgp.decode_message(msg_type, body, four_octet_as, families)
            if msg_type == bgp.UPDATE:
                _check_update(msg, four_octet_as)
            elif msg_type == bgp.OPEN:
                bgp.encode_message(msg, four_octet_as)


@target("bgp_message", (BgpError,), "wire/bgp/messages.py decode_message: OPEN, NOTIFICATION, ... bodies",
        lambda: [bytes((m[18], 0x07)) + m[19:] for m in _bgp_messages()])
def fuzz_bgp_message(data: bytes) -> None:
    """First byte: the message type (1..5 mostly); second: the session's options; then the body."""
    if len(data) < 2:
        return
    msg_type = data[0] % 6 if data[0] < 0xF0 else data[0]
    four_octet_as, families = _options(data[1])
    msg = bgp.decode_message(msg_type, data[2:], four_octet_as, families)
    if msg_type == bgp.OPEN:
        bgp.encode_message(msg, four_octet_as)
    elif msg_type == bgp.UPDATE:
        _check_update(msg, four_octet_as)


@target("bgp_update", (BgpError,), "wire/bgp/update.py decode_update",
        lambda: [b"\x07" + m[19:] for m in _bgp_messages() if m[18:19] == b"\x02"])
def fuzz_bgp_update(data: bytes) -> None:
    if not data:
        return
    four_octet_as, families = _options(data[0])
    _check_update(decode_update(data[1:], four_octet_as, families), four_octet_as)


def _framed(data: bytes) -> Iterator[FramedAttribute]:
    """Path attributes as update.py frames them, cut short at the first overrun."""
    at = 0
    while at + 3 <= len(data):
        flags, code = data[at], data[at + 1]
        head = 4 if flags & FLAG_EXTENDED_LENGTH else 3
        if at + head > len(data):
            return
        length = int.from_bytes(data[at + 2 : at + head], "big")
        end = at + head + length
        if end > len(data):
            return
        yield FramedAttribute(flags, code, data[at + head : end], data[at:end])
        at = end


def _attribute_seeds() -> list[bytes]:
    out = []
    for m in _bgp_messages():
        if m[18:19] == b"\x02" and len(m) >= 23:
            body = m[19:]
            withdrawn = int.from_bytes(body[:2], "big")
            at = 2 + withdrawn
            if at + 2 <= len(body):
                length = int.from_bytes(body[at : at + 2], "big")
                out.append(b"\x00" + body[at + 2 : at + 2 + length])
    return out


@target("bgp_attributes", (BgpError,), "wire/bgp/attributes.py decode_path_attributes", _attribute_seeds)
def fuzz_bgp_attributes(data: bytes) -> None:
    if not data:
        return
    found = [a for a in _framed(data[1:]) if a.type_code not in (14, 15)]  # MP_* are update.py's
    decoded = decode_path_attributes(found, four_octet_as=not data[0] & 1)
    assert decoded.treat_as_withdraw or not any("treat-as-withdraw" in e for e in decoded.errors)


def _evpn_seeds() -> list[bytes]:
    rd = evpn.RouteDistinguisher.for_vtep(ipaddress.IPv4Address("10.0.0.1"), 100)
    routes = [
        evpn.MacIpRoute(rd, b"\x02\x00\x00\x00\x00\x01", None, 100),
        evpn.MacIpRoute(rd, b"\x02\x00\x00\x00\x00\x01", ipaddress.ip_address("192.168.100.5"), 100, 1),
        evpn.MacIpRoute(rd, b"\x02\x00\x00\x00\x00\x01", ipaddress.ip_address("fd00::5"), 100),
        evpn.ImetRoute(rd, ipaddress.ip_address("10.0.0.1")),
        evpn.ImetRoute(rd, ipaddress.ip_address("fd00::1")),
        evpn.PrefixRoute(rd, ipaddress.ip_network("10.244.1.0/24"), 1),
        evpn.PrefixRoute(rd, ipaddress.ip_network("fd00:244:0:1::/64"), 1),
    ]
    return [evpn.encode_nlri(r) for r in routes] + [b"".join(evpn.encode_nlri(r) for r in routes)]


@target("evpn_nlri", (DecodeError,), "wire/bgp/evpn.py decode_nlri", _evpn_seeds)
def fuzz_evpn_nlri(data: bytes) -> None:
    routes = evpn.decode_nlri(data)
    again = evpn.decode_nlri(b"".join(evpn.encode_nlri(r) for r in routes))
    assert again == routes, "a decoded route encodes to bytes that decode the same"


@target("unicast_nlri", (DecodeError,), "wire/bgp/unicast.py decode_nlri",
        lambda: [b"\x01\x18\x0a\xf4\x01", b"\x02\x40\xfd\x00\x02\x44\x00\x00\x00\x01", b"\x01\x00"])
def fuzz_unicast_nlri(data: bytes) -> None:
    if not data:
        return
    afi = 1 + (data[0] & 1)
    routes = unicast.decode_nlri(data[1:], afi)
    assert unicast.decode_nlri(b"".join(unicast.encode_nlri(r) for r in routes), afi) == routes


# -- status requests ---------------------------------------------------------------------------


class FakeView:
    """Every command answered with canned rows; an unknown network or filter is refused as the real view does."""

    def status(self, now):
        return {"node": "node1", "networks": [{"name": "blue", "vni": 100}]}

    def fdb(self, now, network=None):
        if network not in (None, "blue"):
            raise StatusError("bad_request", f"no network named {network!r}")
        return [{"mac": "02:00:00:00:00:01", "network": "blue"}]

    def stats(self, now):
        return {"counters": {"tx_frames": 3}}

    def peers(self, now):
        return [{"address": "10.0.0.2", "state": "Established"}]

    def rib(self, now):
        return []

    def routes(self, now):
        return [{"prefix": "10.244.1.0/24"}]

    def services(self, now):
        return []

    def conntrack(self, now, service=None, client=None, backend=None):
        if service not in (None, "web"):
            raise StatusError("bad_request", f"no service named {service!r}")
        return []


_VIEW = FakeView()


def _status_seeds() -> list[bytes]:
    out = [json.dumps({"version": 1, "command": c}).encode() for c in
           ("status", "fdb", "stats", "peers", "rib", "routes", "services", "conntrack")]
    out += [b'{"version": 1, "command": "fdb", "args": {"network": "blue"}}',
            b'{"version": 1, "command": "conntrack", "args": {"service": "web", "client": "10.0.0.1:80"}}',
            b"[" * 100 + b"]" * 100, b'{"version": 1e400}', b"\xff\xfe{}"]
    return out


@target("status", (), "status/protocol.py handle_line (a fake view)", _status_seeds)
def fuzz_status(data: bytes) -> None:
    reply = handle_line(data, _VIEW, 1.0)
    assert reply.endswith("\n") and reply.count("\n") == 1, "one reply is one line"
    decoded = json.loads(reply)
    assert decoded["version"] == PROTOCOL_VERSION and isinstance(decoded["ok"], bool)


# -- config ----------------------------------------------------------------------------------


def _base_configs() -> list[dict]:
    docs = []
    for path in sorted((ROOT / "configs").rglob("*.yaml")):
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError:
            continue
        if isinstance(doc, dict) and "node" in doc:
            docs.append(doc)
    return docs


_BASES = _base_configs()
# Values a mutation puts somewhere: the edges of every kind of field the config has.
_PALETTE: tuple = (
    None, True, False, 0, 1, -1, 65535, 65536, 2**24, 2**32, 2**64, 1e308, float("nan"), float("inf"), -0.0,
    "", " ", ".", "..", "a" * 16, "a/b", "eth0", "x" * 300, "\x00", "ü", "auto",
    "10.0.0.1", "10.0.0.2", "0.0.0.0", "127.0.0.1", "255.255.255.255", "224.0.0.1", "::", "::1", "fd00::1",
    "ff02::1", "10.244.0.0/16", "10.244.1.0/24", "10.96.0.0/16", "0.0.0.0/0", "10.0.0.1/33", "fd00::/129",
    "fd00:96::/112", "10.244.1.1/24", "02:00:00:00:00:01", "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00",
    "01:00:5e:00:00:01", "65000:100", "10.0.0.1:7", "4294967295:1", "1:2:3", "10.244.1.5:8080",
    "[fd00::5]:8080", "10.244.1.5:0", "10.244.1.5:65536", "tcp", "udp", "sctp", "none", "client-ip",
    "userspace", "kernel", "host-gw", "ipip", "native", "tun", "tap", "evpn", "ipv4-unicast", "warn",
    "teardown", "keep", [], {}, [None], {"": None}, ["10.0.0.2"], {"address": "10.0.0.2", "asn": 65000},
    {"name": "x", "vip": "10.96.0.9", "port": 80, "backends": ["10.244.1.5:80"]},
    {"name": "n", "vni": 7, "device": "n0"},
)


def _paths(doc, prefix=()) -> Iterator[tuple]:
    """Every place in a document a mutation can touch: its containers' keys and indexes."""
    yield prefix
    if isinstance(doc, dict):
        for key, value in doc.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _paths(value, prefix + (i,))


def _at(doc, path):
    for part in path:
        doc = doc[part]
    return doc


MAX_PATHS = 2000  # a mutated document stays this small: far beyond any real config's size


def config_document(data: bytes):
    """A YAML-ish document from bytes: a YAML text, or a base config with mutations.

    First byte < 0x20: the rest is read as YAML text (what `--check` reads). Otherwise
    the first byte picks one of configs/*.yaml and each following 3 bytes is a
    mutation: where (an index into the document's paths), what (replace with a
    palette value, delete, add an unknown or a known key, wrap in a list, turn
    a number into a string) and which value.
    """
    if not data:
        return None
    if data[0] < 0x20:
        try:
            return yaml.safe_load(data[1:].decode("utf-8", "replace"))
        except (yaml.YAMLError, RecursionError):
            return None
    doc = copy.deepcopy(_BASES[data[0] % len(_BASES)])
    for at in range(1, len(data) - 2, 3):
        where, op, which = data[at], data[at + 1], data[at + 2]
        paths = list(_paths(doc))
        if len(paths) > MAX_PATHS:  # wrapping and appending copies grows a document exponentially
            break
        path = paths[where % len(paths)]
        value = _PALETTE[which % len(_PALETTE)]
        op %= 6
        if not path:
            if isinstance(doc, dict) and op == 0:
                doc[["node", "networks", "bgp", "routing", "services", "conntrack", "x"][which % 7]] = copy.deepcopy(value)
            continue
        parent, key = _at(doc, path[:-1]), path[-1]
        if op == 0:
            parent[key] = copy.deepcopy(value)
        elif op == 1:
            del parent[key]
        elif op == 2 and isinstance(parent[key], dict):
            parent[key][["x", "name", "vni", "device", "asn", "address", "port", "mtu"][which % 8]] = copy.deepcopy(value)
        elif op == 3:
            parent[key] = [parent[key]]
        elif op == 4 and isinstance(parent[key], (int, float)) and not isinstance(parent[key], bool):
            parent[key] = str(parent[key])
        elif op == 5 and isinstance(parent[key], list):
            parent[key].append(copy.deepcopy(parent[key][0] if parent[key] else value))
    return doc


@target("config", (ConfigError,), "config parse_config on YAML-ish documents",
        lambda: [bytes((0x20 + i,)) for i in range(len(_BASES))]
        + [b"\x00" + p.read_bytes() for p in sorted((ROOT / "configs").rglob("*.yaml"))])
def fuzz_config(data: bytes) -> None:
    doc = config_document(data)
    parse_config(doc)


# -- the data plane ---------------------------------------------------------------------------

OWN = bytes.fromhex("020000000001")  # our TAP's MAC on VNI 100
REMOTE = bytes.fromhex("020000000002")  # a MAC behind 10.0.0.2
ROUTER_MAC = bytes.fromhex("02aa00000001")
PEER_ROUTER_MAC = bytes.fromhex("02bb00000001")
DEVICE_MAC = bytes.fromhex("02dd00000001")
L2_VNI, TUN_VNI, TAP_VNI = 100, 1, 2
PEER = "10.0.0.2"


def _services() -> ServiceTable:
    table = ServiceTable()

    def spec(name, vip, port, protocol, backends, affinity="none"):
        return SimpleNamespace(name=name, vip=ipaddress.ip_address(vip), port=port, protocol=protocol,
                               backends=backends, affinity=affinity, affinity_timeout=10800.0,
                               maglev_table_size=251)
    table.replace([
        spec("web", "10.96.0.10", 80, "tcp", ("10.244.1.5:8080", "10.244.2.7:8080")),
        spec("dns", "10.96.0.53", 53, "udp", ("10.244.2.8:53",), "client-ip"),
        spec("web6", "fd00:96::10", 80, "tcp", ("[fd00:244:0:1::5]:8080", "[fd00:244:0:2::7]:8080")),
        spec("empty", "10.96.0.11", 80, "tcp", ()),
    ])
    return table


_SERVICE_TABLE = _services()  # the data path only counts hits in it: shared by every input


def _prefixes() -> PrefixTable:
    table = PrefixTable()
    for prefix, vtep, mac in (("10.244.1.0/24", None, None), ("fd00:244:0:1::/64", None, None),
                              ("10.244.2.0/24", PEER, PEER_ROUTER_MAC), ("fd00:244:0:2::/64", PEER, PEER_ROUTER_MAC),
                              ("10.244.4.0/24", "10.0.0.4", None)):
        source = Source.LOCAL if vtep is None else Source.BGP
        table.install(PrefixEntry(ipaddress.ip_network(prefix), vtep, mac, TUN_VNI, vtep or "10.0.0.1",
                                  "local" if vtep is None else PEER, source), 0)
    return table


_PREFIXES = _prefixes()  # read-only for the data path: shared by every input
_LOCAL = tuple(map(ipaddress.ip_network, ("10.244.1.0/24", "fd00:244:0:1::/64")))
_NETWORKS = tuple(map(ipaddress.ip_network, ("10.244.0.0/16", "fd00:244::/48")))
_VIPS = tuple(map(ipaddress.ip_network, ("10.96.0.0/16", "fd00:96::/112")))


def make_world() -> tuple[Switch, Router, Router]:
    """A node with an L2 segment (ARP suppression, a remote MAC and binding), a tun and a tap routed VNI
    with services: what each data-plane target starts from."""
    sw = Switch(4789, 300.0)
    sw.neighbor_snooping = sw.arp_suppression = True
    sw.data_learning = False
    sw.add_segment(L2_VNI, "blue", own_macs={OWN})
    sw.add_flood_vtep(L2_VNI, PEER, Source.BGP)
    sw.install_mac(L2_VNI, REMOTE, PEER, Source.BGP, 0.0)
    sw.install_neighbor(L2_VNI, "192.168.100.2", REMOTE, Source.BGP, 0.0)
    sw.install_neighbor(L2_VNI, "fd00:100::2", REMOTE, Source.BGP, 0.0)
    routers = []
    for vni, mode in ((TUN_VNI, "tun"), (TAP_VNI, "tap")):
        router = Router(vni, ROUTER_MAC, mode, _PREFIXES, 4789, _LOCAL, DEVICE_MAC if mode == "tap" else None,
                        networks=_NETWORKS, gateways=("10.244.1.1",), counters=Counters())
        router.attach_services(ServicePath(_SERVICE_TABLE, Conntrack(64), _VIPS, (), router.counters,
                                           emit=lambda p: None))
        sw.add_router(router)
        routers.append(router)
    return sw, routers[0], routers[1]


# How many inputs share one world. 1 (fresh for every input) everywhere but under atheris
# (tools/fuzz.py), where building the world through instrumented code would cost ten times
# the input itself; there a world serves WORLD_REUSE inputs, its clock moving on, and a
# crasher that needs the state earlier inputs left does not replay alone (its traceback is
# in the fuzzer's log).
WORLD_REUSE = 1
_shared: list = [None, 0, 0.0]  # world, inputs it served, its clock


def world() -> tuple[Switch, Router, Router, float]:
    """A world for one input and the time it starts at."""
    if _shared[0] is None or _shared[1] >= WORLD_REUSE:
        _shared[0], _shared[1] = make_world(), 0
    _shared[1] += 1
    _shared[2] += 10.0
    sw, tun, tap = _shared[0]
    sw.events.clear()
    return sw, tun, tap, _shared[2]


def _packets(data: bytes) -> Iterator[bytes]:
    """Up to 4 packets: a 2-octet length before each, the last one taking what is left."""
    at = 0
    for _ in range(3):
        if at + 2 > len(data):
            break
        size = int.from_bytes(data[at : at + 2], "big")
        if at + 2 + size > len(data):
            break
        yield data[at + 2 : at + 2 + size]
        at += 2 + size
    yield data[at:]


def _dataplane_seeds(prefix: Callable[[bytes], bytes]) -> Callable[[], list[bytes]]:
    def seeds() -> list[bytes]:
        frames = _frames()
        out = []
        for i, frame in enumerate(frames):
            out.append(bytes((i & 0xFF,)) + prefix(frame))
        for packet in _hex_vectors("services/packets.json"):
            out.append(b"\x00" + prefix(bytes(12) + b"\x08\x00" + packet))
        return out
    return seeds


def _with_header(vni: int) -> Callable[[bytes], bytes]:
    return lambda frame: encode_header(vni) + frame


@target("switch_tap", (), "dataplane/switch.py Switch.from_tap", _dataplane_seeds(lambda f: f))
def fuzz_switch_tap(data: bytes) -> None:
    if not data:
        return
    sw, _, _, now = world()
    for i, frame in enumerate(_packets(data[1:])):
        sw.from_tap(L2_VNI, frame if data[0] & 1 else memoryview(bytearray(frame)), now + i)
        sw.pop_replies()
    if data[0] & 2:
        sw.expire(now + 1000.0)


@target("switch_vxlan", (), "dataplane/switch.py Switch.from_vxlan (L2 and routed VNIs)",
        _dataplane_seeds(_with_header(L2_VNI)))
def fuzz_switch_vxlan(data: bytes) -> None:
    """First byte: bit 0 read-only bytes or a writable buffer, bits 1-2 the VNI in the header if
    the input's own header is not to be used (`L2_VNI`, `TUN_VNI`, `TAP_VNI`)."""
    if not data:
        return
    sw, _, _, now = world()
    vni = (None, L2_VNI, TUN_VNI, TAP_VNI)[data[0] >> 1 & 3]
    vtep = (PEER, "10.0.0.9")[data[0] >> 3 & 1]
    for i, datagram in enumerate(_packets(data[1:])):
        if vni is not None:
            datagram = encode_header(vni) + datagram[8:]
        buf = datagram if data[0] & 1 else bytearray(datagram)
        out = sw.from_vxlan(vtep, buf, now + i)
        if out is not None:
            bytes(out[1])
        sw.pop_replies()


@target("router_device", (), "dataplane/router.py Router.from_device (tun and tap, with services)",
        _dataplane_seeds(lambda f: f))
def fuzz_router_device(data: bytes) -> None:
    """First byte: bit 0 tun (IP packets) or tap (frames), bit 1 the packet in a bytearray or in a
    memoryview of a larger receive buffer (as io/ reads it), bit 2 tun takes the input whole
    (else a frame's payload: what the seeds are). Always writable: the service path rewrites
    in place, and io/ always hands it its receive buffer (dataplane/services.py)."""
    if not data:
        return
    _, tun, tap, now = world()
    router = tap if data[0] & 1 else tun
    for i, packet in enumerate(_packets(data[1:])):
        if router is tun and not data[0] & 4:
            packet = packet[14:]
        buf = memoryview(bytearray(10) + packet)[10:] if data[0] & 2 else bytearray(packet)
        router.from_device(buf, now + i)
        router.pop_replies()


@target("router_vxlan", (), "dataplane/router.py Router.from_vxlan (tun and tap, with services)",
        _dataplane_seeds(_with_header(TUN_VNI)))
def fuzz_router_vxlan(data: bytes) -> None:
    """First byte: bit 0 tun or tap, bit 1 writable, bit 2 inner MACs to our router MAC,
    bit 3 the datagram comes from an unknown VTEP."""
    if not data:
        return
    _, tun, tap, now = world()
    router = tap if data[0] & 1 else tun
    vtep = "10.0.0.9" if data[0] & 8 else PEER
    for i, datagram in enumerate(_packets(data[1:])):
        if data[0] & 4 and len(datagram) >= 20:
            datagram = datagram[:8] + ROUTER_MAC + PEER_ROUTER_MAC + datagram[20:]
        buf = bytearray(datagram) if data[0] & 2 else datagram
        out = router.from_vxlan(vtep, buf, now + i)
        if out is not None:
            bytes(out)
        router.pop_replies()


# -- the corpus --------------------------------------------------------------------------------


def corpus(name: str) -> list[Path]:
    """The crashers kept for `name` (tests/fuzz/corpus/<name>/), which CI replays."""
    folder = CORPUS / name
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")) if folder.is_dir() else []


class SlowInput(AssertionError):
    """An input that took longer than SLOW_S on its fastest of three tries."""


def check(name: str, data: bytes, clock: Callable[[], float]) -> float:
    """Run one input through `name`; the seconds it took by `clock` (the callers pass
    time.thread_time: CPU time, which other work on a busy machine does not inflate). SlowInput
    if it took more than SLOW_S on its fastest of three tries; any escaping error is raised as it is."""
    t = TARGETS[name]
    start = clock()
    t(data)
    took = clock() - start
    if took > SLOW_S:
        tries = [took]
        for _ in range(2):
            start = clock()
            t(data)
            tries.append(clock() - start)
        took = min(tries)
        if took > SLOW_S:
            raise SlowInput(f"{name}: an input of {len(data)} bytes took {took * 1000:.0f} ms (> 100 ms)")
    return took
