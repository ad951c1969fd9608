"""The services' nftables table in Debian's kernel: every diff applies as one transaction.

kube-proxy's nftables mode deletes a chain only a second after the map
element that named it, because kernels before 6.2 could still count the
element as a reference within the same transaction. overlayd's diff deletes
elements, flushes and deletes chains in one transaction; this walks it
through backends going and coming, services going to no backend, affinity
timeouts changing, IPv6 services, in Debian's (6.1) kernel, reading the
table back after each step.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from ipaddress import ip_network

from overlayd.kernel import masq, nft
from overlayd.kernel import services as sv
from tests.support import require_netns, require_programs

NODE = [ip_network("10.244.1.0/24"), ip_network("fd00:244:0:1::/64")]
CLUSTER = [ip_network("10.244.0.0/16"), ip_network("fd00:244::/48")]
B = [("10.244.1.11", 8080), ("10.244.2.12", 8080), ("10.244.2.13", 8080)]


def web(n: int) -> sv.Service:
    return sv.Service("web", "10.96.0.10", 80, "tcp", B[:n])


def dns(affinity: str = "client-ip", timeout_s: int = 30) -> sv.Service:
    return sv.Service("dns", "10.96.0.10", 53, "udp", B[:2], affinity, timeout_s)


WEB6 = sv.Service("web6", "fd00:96::10", 80, "tcp", [("fd00:244:0:1::11", 8080)])
# a backend gone; the last one gone and affinity sets made again; all back, affinity off, IPv6; none
STEPS = [[web(3), dns()], [web(2), dns()], [web(0), dns(timeout_s=60)], [web(3), dns("none"), WEB6], []]


def test_every_diff_applies_in_one_transaction_and_reads_back():
    require_netns()
    require_programs("nft")
    netns = f"ovlsvc-{secrets.token_hex(2)}"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        previous = None
        for i, services in enumerate(STEPS):
            want = nft.merge(masq.table(NODE, CLUSTER), sv.table(services, NODE, CLUSTER))
            doc = json.dumps(nft.document(nft.diff(previous, want)))
            out = subprocess.run(["ip", "netns", "exec", netns, "nft", "-j", "-f", "-"], input=doc,
                                 capture_output=True, text=True, check=False)
            assert out.returncode == 0, f"step {i}: {out.stderr}"
            listing = subprocess.run(["ip", "netns", "exec", netns, "nft", "-j", "list", "table", "inet", "overlayd"],
                                     capture_output=True, text=True, check=True).stdout
            assert nft.parse(json.loads(listing)) == nft.canonical(want), f"step {i}"
            previous = want
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
