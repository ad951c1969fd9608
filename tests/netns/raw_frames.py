"""Send or capture raw Ethernet frames on an interface, from inside a lab host (AF_PACKET).

    python raw_frames.py send IFACE HEX [HEX ...]
    python raw_frames.py recv IFACE SECONDS

`send` transmits each frame as given (an 802.1Q tag in it stays in it: on a
TAP, the daemon reads exactly these bytes). `recv` prints "listening", then
one JSON line per frame the interface received (not those it sent) for
SECONDS: {"vlan": VLAN ID or null, "pcp": priority or null, "frame": hex
without the tag}. The kernel takes a received frame's 802.1Q tag out of the
data into the packet's metadata; PACKET_AUXDATA gives it back. Run as a
script in a namespace (`host.run(sys.executable, raw_frames.__file__, ...)`);
it imports nothing from the repository.
"""

from __future__ import annotations

import json
import select
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
SOL_PACKET = 263
PACKET_AUXDATA = 8
PACKET_OUTGOING = 4
TP_STATUS_VLAN_VALID = 0x10
AUXDATA = struct.Struct("IIIHHHH")  # struct tpacket_auxdata


def send(iface: str, frames: list[bytes]) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as sock:
        sock.bind((iface, 0))
        for frame in frames:
            sock.send(frame)


def recv(iface: str, seconds: float) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL)) as sock:
        sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
        sock.bind((iface, 0))
        print("listening", flush=True)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if not select.select([sock], [], [], left)[0]:
                continue
            data, ancillary, _, addr = sock.recvmsg(65535, socket.CMSG_SPACE(AUXDATA.size))
            if addr[2] == PACKET_OUTGOING:
                continue
            vlan = pcp = None
            for level, kind, value in ancillary:
                if level == SOL_PACKET and kind == PACKET_AUXDATA and len(value) >= AUXDATA.size:
                    status, _, _, _, _, tci, _ = AUXDATA.unpack_from(value)
                    if status & TP_STATUS_VLAN_VALID:
                        vlan, pcp = tci & 0xFFF, tci >> 13
            if vlan is None and data[12:14] == b"\x81\x00":  # left in the data after all
                tci = int.from_bytes(data[14:16], "big")
                vlan, pcp, data = tci & 0xFFF, tci >> 13, data[:12] + data[16:]
            print(json.dumps({"vlan": vlan, "pcp": pcp, "frame": data.hex()}), flush=True)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[0] not in ("send", "recv"):
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    if argv[0] == "send":
        send(argv[1], [bytes.fromhex(h) for h in argv[2:]])
    else:
        recv(argv[1], float(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
