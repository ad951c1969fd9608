"""Send a broadcast storm from inside a lab host: IPv4/UDP broadcasts at a steady rate.

    python storm.py DEVICE PPS SECONDS

Each frame is a 60-byte UDP datagram from the device's own MAC and address to
255.255.255.255 port 9 (discard), written with a packet socket in batches of
PPS/100 every 10 ms. Prints one JSON line when done: {"sent": n, "seconds": t,
"pps": n/t}. Run as a script in a namespace; it imports nothing from the
repository.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import time
from pathlib import Path


def frame(mac: bytes) -> bytes:
    udp = struct.pack("!HHHH", 40000, 9, 8 + 18, 0) + bytes(18)
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, bytes(4), b"\xff" * 4)
    total = 0
    for (word,) in struct.iter_unpack("!H", ip):
        total += word
    total = (total & 0xFFFF) + (total >> 16)
    ip = ip[:10] + struct.pack("!H", ~total & 0xFFFF) + ip[12:]
    return b"\xff" * 6 + mac + b"\x08\x00" + ip + udp


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    device, pps, seconds = argv[0], float(argv[1]), float(argv[2])
    mac = bytes.fromhex(Path(f"/sys/class/net/{device}/address").read_text().strip().replace(":", ""))
    data = frame(mac)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((device, 0))
    batch = max(1, round(pps / 100))
    start = time.monotonic()
    sent = 0
    while (now := time.monotonic()) - start < seconds:
        due = int((now - start) * pps) + batch
        while sent < due:
            try:
                sock.send(data)
            except OSError:  # the queue is full: this one is lost, as a storm's frames are
                pass
            sent += 1
        time.sleep(0.01)
    took = time.monotonic() - start
    print(json.dumps({"sent": sent, "seconds": round(took, 3), "pps": round(sent / took)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
