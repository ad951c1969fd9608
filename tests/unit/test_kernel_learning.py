"""io.backend's local learning on a kernel segment, fed decoded notifications (no socket):
which of the host's neighbour entries on the bridge become local bindings."""

from __future__ import annotations

import ipaddress

from pyroute2.netlink.rtnl import RTM_NEWNEIGH
from pyroute2.netlink.rtnl.ndmsg import ndmsg

from overlayd.config import parse_config
from overlayd.dataplane.switch import Switch
from overlayd.fabric.fdb import Source
from overlayd.io.backend import KernelBackend

CONFIG = parse_config({
    "node": {"vtep": "10.0.0.3"},
    "networks": [{"name": "blue", "vni": 100, "device": "br-blue", "backend": "kernel"}],
})
BRIDGE = 7
POD = bytes([2, 0, 0, 0, 2, 2])
IP = ipaddress.ip_address("192.168.100.22")
REACHABLE, STALE, PROBE, FAILED = 0x02, 0x04, 0x10, 0x20


def neighbour(state: int) -> ndmsg:
    msg = ndmsg()
    msg["family"] = 2
    msg["ifindex"] = BRIDGE
    msg["state"] = state
    msg["attrs"] = [("NDA_DST", str(IP)), ("NDA_LLADDR", POD.hex(":"))]
    msg["header"]["type"] = RTM_NEWNEIGH
    msg.encode()
    out = ndmsg(bytes(msg.data))
    out.decode()
    return out


def backend() -> KernelBackend:
    switch = Switch(4789, 300.0)
    switch.add_kernel_segment(100, "blue")
    kernel = KernelBackend(CONFIG, switch, None, None, lambda: 0.0)
    kernel._bridge_vni = {BRIDGE: 100}
    switch.learn_local(100, POD, 0.0)  # the bridge has the pod's MAC on a local port
    return kernel


def bound(kernel: KernelBackend):
    b = kernel.switch.neighbors.get(100, IP, Source.LOCAL)
    return None if b is None else b.mac


def test_a_probed_address_is_bound_once_it_answers_and_not_before():
    kernel = backend()
    kernel._learn_neighbor(neighbour(PROBE), deleted=False, now=1.0)
    assert bound(kernel) is None  # asked, not answered: nothing to announce yet
    kernel._learn_neighbor(neighbour(REACHABLE), deleted=False, now=1.1)
    assert bound(kernel) == POD


def test_a_probe_that_fails_binds_nothing():
    kernel = backend()
    kernel._learn_neighbor(neighbour(PROBE), deleted=False, now=1.0)
    kernel._learn_neighbor(neighbour(FAILED), deleted=False, now=4.0)
    assert bound(kernel) is None


def test_a_bound_address_being_rechecked_stays_bound_until_the_answer():
    kernel = backend()
    kernel._learn_neighbor(neighbour(STALE), deleted=False, now=1.0)
    assert bound(kernel) == POD
    kernel._learn_neighbor(neighbour(PROBE), deleted=False, now=2.0)
    assert bound(kernel) == POD
    kernel._learn_neighbor(neighbour(FAILED), deleted=False, now=5.0)
    assert bound(kernel) is None
