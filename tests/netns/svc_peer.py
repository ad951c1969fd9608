"""Both ends of a service, as scripts run in lab hosts.

    python svc_peer.py serve NAME PORT
        TCP and UDP on PORT, IPv4 and IPv6: every connection or datagram is
        answered with "NAME PEER" (PEER: the source address it came from), the
        connection then closed. Prints "listening" once bound.
    python svc_peer.py tcp ADDRESS PORT COUNT
    python svc_peer.py udp ADDRESS PORT COUNT [--connect]
        COUNT connections (TCP) or datagrams from fresh sockets (UDP: a new
        source port each, so a new flow each) to ADDRESS:PORT; prints one JSON
        object: {"answers": [[name, seen-as], ...], "replied_from": [addresses the
        answers came from], "refused": n, "timeouts": n, "max_refusal_s": s}.
        UDP without --connect reads with recvfrom (the reply's source address);
        with it, an ICMP unreachable shows as a refusal.
"""

from __future__ import annotations

import json
import selectors
import socket
import sys
import time

TIMEOUT_S = 2.0


def serve(name: str, port: int) -> None:
    tcp = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    udp = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    for s in (tcp, udp):
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
    tcp.listen(256)
    sel = selectors.DefaultSelector()
    sel.register(tcp, selectors.EVENT_READ)
    sel.register(udp, selectors.EVENT_READ)
    print("listening", flush=True)
    while True:
        for key, _ in sel.select():
            if key.fileobj is tcp:
                conn, peer = tcp.accept()
                with conn:
                    conn.sendall(f"{name} {_plain(peer[0])}".encode())
            else:
                _, peer = udp.recvfrom(2048)
                udp.sendto(f"{name} {_plain(peer[0])}".encode(), peer)


def _plain(address: str) -> str:
    return address.removeprefix("::ffff:")


def clients(kind: str, address: str, port: int, count: int, connect: bool) -> dict:
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    answers, replied_from = [], set()
    refused = timeouts = 0
    max_refusal = 0.0
    for _ in range(count):
        started = time.monotonic()
        try:
            if kind == "tcp":
                with socket.create_connection((address, port), timeout=TIMEOUT_S) as s:
                    replied_from.add(s.getpeername()[0])
                    data = s.recv(256)
            else:
                with socket.socket(family, socket.SOCK_DGRAM) as s:
                    s.settimeout(TIMEOUT_S)
                    if connect:
                        s.connect((address, port))
                        s.send(b"hello")
                        data = s.recv(256)
                        replied_from.add(s.getpeername()[0])
                    else:
                        s.sendto(b"hello", (address, port))
                        data, peer = s.recvfrom(256)
                        replied_from.add(peer[0])
            answers.append(data.decode().split())
        except ConnectionRefusedError:
            refused += 1
            max_refusal = max(max_refusal, time.monotonic() - started)
        except TimeoutError:
            timeouts += 1
    return {"answers": answers, "replied_from": sorted(replied_from), "refused": refused,
            "timeouts": timeouts, "max_refusal_s": round(max_refusal, 3)}


def main(argv: list[str]) -> int:
    if len(argv) == 3 and argv[0] == "serve":
        serve(argv[1], int(argv[2]))
        return 0
    if len(argv) in (4, 5) and argv[0] in ("tcp", "udp"):
        result = clients(argv[0], argv[1], int(argv[2]), int(argv[3]), argv[4:] == ["--connect"])
        print(json.dumps(result))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
