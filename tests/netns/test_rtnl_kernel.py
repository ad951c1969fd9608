"""io.rtnl against this machine's kernel: every kind of route overlayd writes reads back as written.

The unit tests hold `pack` equal to pyroute2's encoding and `route_of` to `pack`; this one
asks the kernel itself, in a namespace of its own with a veth: what `Writer.apply` sends
is accepted, and `read_owned` (a dump) gives back exactly the routes sent, and after the
deletes none.
"""

from __future__ import annotations

import sys

import pytest

from tests.support import require_netns
from tools.lab import Lab

pytestmark = pytest.mark.root

SCRIPT = r'''
import asyncio, ipaddress as ip
from pyroute2 import AsyncIPRoute
from overlayd.io.rtnl import Devices, Writer, read_owned
from overlayd.kernel.state import Op, Route

async def main():
    async with AsyncIPRoute() as ipr:
        index = {l.get("IFLA_IFNAME"): l["index"] async for l in await ipr.get_links()}
    devices = Devices(index, owned=[])
    routes = [
        Route(ip.ip_network("10.244.2.0/24"), ip.ip_address("10.244.2.0"), "eth0", onlink=True),
        Route(ip.ip_network("10.244.3.0/24"), ip.ip_address("10.0.0.9"), "eth0"),
        Route(ip.ip_network("10.244.0.0/16"), None, "eth0"),
        Route(ip.ip_network("fd00:244:0:2::/64"), None, "eth0", encap=ip.ip_address("fd00::5")),
        Route(ip.ip_network("10.245.0.0/24"), None, "eth0", encap=ip.ip_address("fd00::5")),
        Route(ip.ip_network("fd00:244:0:3::/64"), ip.ip_address("fd00::9"), "eth0"),
    ]
    writer = Writer(149)
    bad = [o.describe() for o in writer.apply([Op("add", r) for r in routes], devices) if not o.ok]
    assert not bad, bad
    async with AsyncIPRoute() as ipr:
        back = await read_owned(ipr, devices, 149)
    assert set(back.routes.values()) == set(routes), (sorted(map(str, back.routes.values())), sorted(map(str, routes)))
    bad = [o.describe() for o in writer.apply([Op("delete", r) for r in routes], devices) if not o.ok]
    assert not bad, bad
    async with AsyncIPRoute() as ipr:
        assert not (await read_owned(ipr, devices, 149)).routes
    print("ok:", ", ".join(map(str, routes)))

asyncio.run(main())
'''


def test_routes_of_every_kind_read_back_as_written():
    require_netns()
    with Lab() as lab:
        host = lab.add_host("k", v4="10.0.0.1/24", v6="fd00::1/64")
        out = host.run(sys.executable, "-c", SCRIPT, check=False)
        assert out.returncode == 0, out.stdout + out.stderr
        print(out.stdout)
