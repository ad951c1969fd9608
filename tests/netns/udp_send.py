"""Send raw UDP datagrams, one per hex argument, from inside a lab host.

    python udp_send.py ADDRESS PORT HEX [HEX ...]

Run as a script in a namespace (`host.run(sys.executable, udp_send.__file__, ...)`)
to hand crafted VXLAN datagrams to a daemon; it imports nothing from the
repository, only `asyncio_dgram`.
"""

from __future__ import annotations

import asyncio
import sys

import asyncio_dgram


async def send(address: str, port: int, payloads: list[bytes]) -> None:
    stream = await asyncio_dgram.connect((address, port))
    try:
        for payload in payloads:
            await stream.send(payload)
    finally:
        stream.close()


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    address, port, *hexes = argv
    asyncio.run(send(address, int(port), [bytes.fromhex(h) for h in hexes]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
