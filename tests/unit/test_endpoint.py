"""Endpoints as text and as the data path holds them."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlayd.fabric.endpoint import format_address, format_endpoint, parse_endpoint


def test_ipv4_and_ipv6():
    assert parse_endpoint("10.244.1.5:8080") == (bytes([10, 244, 1, 5]), 8080)
    assert parse_endpoint("[fd00::5]:53") == (bytes.fromhex("fd00" + "00" * 13 + "05"), 53)
    assert format_endpoint(parse_endpoint("[fd00::5]:53")) == "[fd00::5]:53"
    assert format_address(bytes([10, 96, 0, 10])) == "10.96.0.10"


@given(st.ip_addresses(), st.integers(1, 65535))
def test_text_round_trips(address, port):
    endpoint = (address.packed, port)
    assert parse_endpoint(format_endpoint(endpoint)) == endpoint


@pytest.mark.parametrize(
    "text, said",
    [
        ("10.244.1.5", "is not address:port"),
        ("10.244.1.5:http", "is not address:port"),
        ("10.244.1.5:0", "port 0 is not in 1..65535"),
        ("10.244.1.5:65536", "port 65536 is not in 1..65535"),
        ("fd00::5:80", "written in brackets"),
        ("[10.244.1.5]:80", "brackets are for IPv6"),
        ("web:80", "'web' is not an IP address"),
    ],
)
def test_bad_endpoints_are_named(text, said):
    with pytest.raises(ValueError, match=said) as caught:
        parse_endpoint(text)
    assert repr(text) in str(caught.value)
