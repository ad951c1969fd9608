"""Print the source address of every UDP datagram received, one line each, until killed.

    python udp_sources.py ADDRESS PORT

Run as a script in a lab host (`host.popen(sys.executable, udp_sources.__file__, ...)`):
what a server sees of its clients, e.g. whether their traffic was masqueraded.
It prints "listening" once bound.
"""

from __future__ import annotations

import socket
import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    address, port = argv
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind((address, int(port)))
        print("listening", flush=True)
        while True:
            _, peer = sock.recvfrom(2048)
            print(f"from {peer[0]}", flush=True)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
