"""BGP message codecs (overlayd.wire.bgp.messages) against golden vectors and their error paths.

tests/vectors/bgp_messages/messages.json was checked against tshark's BGP
dissector (tests/vectors/check_tshark_bgp_messages.py, recorded in its
`checked_with`), so agreeing with it means agreeing with Wireshark.
"""

from __future__ import annotations

import ipaddress
import json
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from overlayd.wire.bgp import errors as E
from overlayd.wire.bgp.errors import BgpError
from overlayd.wire.bgp.messages import (
    AS_TRANS,
    MAX_MESSAGE_LEN,
    FourOctetAs,
    GracefulRestart,
    Keepalive,
    MessageReader,
    Multiprotocol,
    Notification,
    Open,
    RouteRefresh,
    RouteRefreshCapability,
    UnknownCapability,
    decode_capability,
    decode_message,
    describe_notification,
    encode_capability,
    encode_message,
    frame,
    shutdown_communication,
)
from tests.vectors import VECTORS_DIR

DOC = json.loads((VECTORS_DIR / "bgp_messages" / "messages.json").read_text())


def capability(d: dict):
    code = d["code"]
    if code == 1:
        return Multiprotocol(d["afi"], d["safi"])
    if code == 2:
        return RouteRefreshCapability()
    if code == 65:
        return FourOctetAs(d["asn"])
    if code == 64:
        return GracefulRestart(d["restart_time_s"], d["restarting"], tuple(tuple(f) for f in d["families"]))
    return UnknownCapability(code, bytes.fromhex(d["value"]))


def expected(d: dict):
    """The overlayd object a vector's `decoded` describes."""
    t = d["type"]
    if t == 1:
        caps = tuple(capability(c) for param in d["params"] for c in param)
        return Open(d["asn"], d["hold_time_s"], ipaddress.IPv4Address(d["router_id"]), caps, d["version"])
    if t == 3:
        return Notification(d["code"], d["subcode"], bytes.fromhex(d["data"]))
    if t == 4:
        return Keepalive()
    if t == 5:
        return RouteRefresh(d["afi"], d["safi"], d["subtype"])
    raise AssertionError(t)


def read_all(data: bytes) -> list:
    reader = MessageReader()
    reader.feed(data)
    out = [decode_message(t, body) for t, body in reader]
    assert reader.buffered == 0
    return out


VECTORS = [pytest.param(v, id=v["name"]) for v in DOC["vectors"]]
ERRORS = [pytest.param(v, id=v["name"]) for v in DOC["errors"]]


def test_vector_file_was_checked_against_tshark():
    assert str(DOC["checked_with"]).startswith("tshark "), "run tests/vectors/check_tshark_bgp_messages.py --record"
    names = [v["name"] for v in DOC["vectors"] + DOC["errors"]]
    assert len(names) == len(set(names))


@pytest.mark.parametrize("vector", VECTORS)
def test_decodes_as_the_vector_says(vector):
    assert read_all(bytes.fromhex(vector["hex"])) == [expected(vector["decoded"])]


@pytest.mark.parametrize("vector", [v for v in VECTORS if v.values[0]["canonical"]])
def test_encodes_to_the_vector_bytes(vector):
    assert encode_message(expected(vector["decoded"])).hex() == vector["hex"]


@pytest.mark.parametrize("vector", [v for v in VECTORS if not v.values[0]["canonical"]])
def test_non_canonical_vectors_survive_a_round_trip(vector):
    msg = expected(vector["decoded"])
    assert read_all(encode_message(msg)) == [msg]


@pytest.mark.parametrize("vector", ERRORS)
def test_error_vectors_raise_the_notification_they_name(vector):
    with pytest.raises(BgpError) as info:
        read_all(bytes.fromhex(vector["hex"]))
    err = vector["error"]
    assert (info.value.code, info.value.subcode, info.value.data.hex()) == (err["code"], err["subcode"], err["data"])


def test_our_open_carries_as_trans_for_a_4_octet_as():
    vector = next(v for v in DOC["vectors"] if v["name"] == "open-overlayd-as4")
    raw = bytes.fromhex(vector["hex"])
    assert struct.unpack_from("!H", raw, 20)[0] == AS_TRANS
    assert read_all(raw)[0].asn == 4200000001


def test_all_vectors_as_one_stream_in_any_chunking():
    stream = b"".join(bytes.fromhex(v["hex"]) for v in DOC["vectors"])
    want = [expected(v["decoded"]) for v in DOC["vectors"]]
    for size in (1, 2, 3, 7, 19, 64, len(stream)):
        reader = MessageReader()
        got = []
        for i in range(0, len(stream), size):
            reader.feed(stream[i : i + size])
            got.extend(decode_message(t, body) for t, body in reader)
        assert got == want, size


# -- the reader's header checks ---------------------------------------------------------------


def test_header_errors_are_raised_before_the_body_arrives():
    reader = MessageReader()
    reader.feed(b"\xff" * 16 + struct.pack("!HB", 4000, 4))  # a KEEPALIVE claiming 4000 octets
    with pytest.raises(BgpError) as info:
        list(reader)
    assert (info.value.code, info.value.subcode, info.value.data) == (1, 2, struct.pack("!H", 4000))


def test_incomplete_message_waits_for_more():
    raw = encode_message(RouteRefresh(25, 70))
    reader = MessageReader()
    reader.feed(raw[:-1])
    assert list(reader) == []
    assert reader.buffered == len(raw) - 1
    reader.feed(raw[-1:])
    assert [decode_message(t, b) for t, b in reader] == [RouteRefresh(25, 70)]


@pytest.mark.parametrize(
    "msg_type,length,ok",
    [
        (4, 19, True), (4, 20, False),
        (1, 28, False), (1, 29, True),
        (3, 20, False), (3, 21, True),
        (2, 22, False), (2, 23, True),
        (5, 22, False), (5, 23, True), (5, 24, False),
    ],
)
def test_per_type_length_limits(msg_type, length, ok):
    raw = frame(msg_type, bytes(length - 19))
    reader = MessageReader()
    reader.feed(raw)
    if ok:
        assert [m.type for m in reader] == [msg_type]
    else:
        with pytest.raises(BgpError) as info:
            list(reader)
        assert (info.value.code, info.value.subcode, info.value.data) == (1, 2, struct.pack("!H", length))


# -- OPEN ---------------------------------------------------------------------------------------


def open_body(version=4, my_as=65001, hold=9, rid="10.0.0.2", params=b"") -> bytes:
    return struct.pack("!BHH4sB", version, my_as, hold, ipaddress.IPv4Address(rid).packed, len(params)) + params


def test_version_error_answers_with_version_4_whatever_the_peer_bid():
    for version in (3, 5, 255):
        with pytest.raises(BgpError) as info:
            decode_message(1, open_body(version=version))
        assert (info.value.code, info.value.subcode, info.value.data) == (2, 1, b"\x00\x04")


def test_open_without_capabilities_takes_my_as():
    assert decode_message(1, open_body(my_as=65001)) == Open(65001, 9, ipaddress.IPv4Address("10.0.0.2"))


def test_as_trans_without_the_capability_is_taken_literally():
    # the session then refuses it as a bad peer AS unless 23456 was configured
    assert decode_message(1, open_body(my_as=AS_TRANS)).asn == AS_TRANS


def test_empty_capabilities_parameter_is_fine():
    assert decode_message(1, open_body(params=b"\x02\x00")).capabilities == ()


def test_unknown_capability_is_kept_and_re_encoded():
    cap = decode_capability(200, b"\x01\x02")
    assert cap == UnknownCapability(200, b"\x01\x02")
    assert encode_capability(cap) == b"\xc8\x02\x01\x02"


@pytest.mark.parametrize(
    "code,value",
    [(1, b"\x00\x19\x00"), (2, b"\x00"), (65, b"\x00\x00\xfd"), (64, b"\x00"), (64, b"\x00\x78\x00\x19\x46")],
)
def test_malformed_known_capability_is_an_open_error(code, value):
    with pytest.raises(BgpError) as info:
        decode_capability(code, value)
    assert (info.value.code, info.value.subcode) == (2, 0)


def test_graceful_restart_flags():
    cap = decode_capability(64, struct.pack("!HHBB", 0x8000 | 0x4000 | 300, 25, 70, 0x80))
    assert cap == GracefulRestart(300, True, ((25, 70, True),))  # the N bit is not kept
    assert encode_capability(GracefulRestart(300, True, ((25, 70, True),))) == b"\x40\x06" + struct.pack(
        "!HHBB", 0x8000 | 300, 25, 70, 0x80
    )
    with pytest.raises(ValueError):
        encode_capability(GracefulRestart(4096))


def test_open_that_needs_more_than_255_octets_of_parameters_uses_rfc_9072():
    caps = tuple(UnknownCapability(200 + i % 50, bytes(20)) for i in range(12))
    msg = Open(65001, 9, ipaddress.IPv4Address("10.0.0.2"), caps)
    raw = encode_message(msg)
    assert raw[19 + 9] == 255 and raw[19 + 10] == 255
    assert read_all(raw) == [msg]


def test_message_longer_than_4096_octets_is_refused():
    with pytest.raises(ValueError):
        encode_message(Notification(6, 0, bytes(MAX_MESSAGE_LEN)))


# -- NOTIFICATION in words -------------------------------------------------------------------


def test_describe_notification():
    assert describe_notification(4, 0) == "hold timer expired"
    assert describe_notification(2, 7) == "OPEN message error/unsupported capability"
    assert describe_notification(6, 2, shutdown_communication("maintenance")) == (
        "cease/administrative shutdown: 'maintenance'"
    )
    assert describe_notification(6, 2, b"\x09short") == "cease/administrative shutdown"  # length overruns
    assert describe_notification(42, 1) == "error code 42/subcode 1"


def test_shutdown_communication_is_cut_on_a_character_boundary():
    data = shutdown_communication("é" * 200)  # 400 octets of UTF-8
    assert data[0] == len(data) - 1 <= 255
    data[1:].decode("utf-8")
    assert shutdown_communication("") == b""


# -- properties --------------------------------------------------------------------------------

capabilities = st.one_of(
    st.builds(Multiprotocol, st.integers(0, 0xFFFF), st.integers(0, 255)),
    st.just(RouteRefreshCapability()),
    st.builds(
        GracefulRestart,
        st.integers(0, 0xFFF),
        st.booleans(),
        st.lists(st.tuples(st.integers(0, 0xFFFF), st.integers(0, 255), st.booleans()), max_size=4).map(tuple),
    ),
    st.builds(UnknownCapability, st.integers(0, 255).filter(lambda c: c not in (1, 2, 64, 65)), st.binary(max_size=40)),
)


@st.composite
def opens(draw):
    asn = draw(st.integers(1, 0xFFFFFFFF))
    caps = draw(st.lists(capabilities, max_size=8))
    if asn > 0xFFFF or draw(st.booleans()):
        caps.insert(draw(st.integers(0, len(caps))), FourOctetAs(asn))
    rid = ipaddress.IPv4Address(draw(st.integers(1, 0xFFFFFFFF)))
    return Open(asn, draw(st.integers(0, 0xFFFF)), rid, tuple(caps))


@given(opens())
def test_open_round_trip(msg):
    assert read_all(encode_message(msg)) == [msg]


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from([1, 3, 4, 5]), st.binary(max_size=300))
def test_decoding_random_bodies_raises_only_bgp_errors(msg_type, body):
    try:
        decode_message(msg_type, body)
    except BgpError as err:
        assert err.code in (E.MESSAGE_HEADER_ERROR, E.OPEN_MESSAGE_ERROR, E.ROUTE_REFRESH_ERROR)


@given(st.lists(st.binary(max_size=60), max_size=10))
def test_reader_on_random_bytes_raises_only_bgp_errors(chunks):
    reader = MessageReader()
    try:
        for chunk in chunks:
            reader.feed(b"\xff" * 16 + chunk)  # a valid marker most of the time gets past the first check
            for msg_type, body in reader:
                assert 1 <= msg_type <= 5
    except BgpError as err:
        assert err.code in (E.MESSAGE_HEADER_ERROR, E.ROUTE_REFRESH_ERROR)
