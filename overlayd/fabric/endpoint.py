"""An endpoint of a service: an IP address and a port, as text and as the data path holds it.

Services name their backends as text, "10.244.1.5:8080" or
"[fd00::5]:8080" (the config, Maglev's slots, the health checker, every
listing); the data path and the connection-tracking table hold the same
thing as `Endpoint`, (the address's 4 or 16 packed octets as they sit in
the IP header, the port), so that a key is built from a packet without
converting anything. `parse_endpoint` and `format_endpoint` go between the
two; a port is 1..65535.
"""

from __future__ import annotations

import ipaddress

Endpoint = tuple[bytes, int]  # (packed IPv4 or IPv6 address, port)


def parse_endpoint(text: str) -> Endpoint:
    """ "10.244.1.5:8080" or "[fd00::5]:8080" -> (packed address, port); ValueError naming what is wrong."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"endpoint {text!r} is not address:port")
    bracketed = host.startswith("[") and host.endswith("]")
    try:
        address = ipaddress.ip_address(host[1:-1] if bracketed else host)
    except ValueError:
        raise ValueError(f"endpoint {text!r}: {host!r} is not an IP address") from None
    if bracketed:
        if address.version != 6:
            raise ValueError(f"endpoint {text!r}: brackets are for IPv6 addresses")
    else:
        if address.version != 4:
            raise ValueError(f"endpoint {text!r}: an IPv6 address is written in brackets, [{host}]:{port_text}")
    port = int(port_text)
    if not 1 <= port <= 65535:
        raise ValueError(f"endpoint {text!r}: port {port} is not in 1..65535")
    return address.packed, port


def format_address(packed: bytes) -> str:
    """4 or 16 packed octets as the usual text form of the address."""
    return str(ipaddress.ip_address(packed))


def format_endpoint(endpoint: Endpoint) -> str:
    """(packed address, port) -> "10.244.1.5:8080" or "[fd00::5]:8080", as `parse_endpoint` reads it."""
    packed, port = endpoint
    address = format_address(packed)
    return f"[{address}]:{port}" if len(packed) == 16 else f"{address}:{port}"
