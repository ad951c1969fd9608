"""The kernel backends at run time: devices, the plan applied as a diff, drift put back.

`KernelBackend` owns what overlayd writes into the kernel for the routed
backends (`routing.backend`, `direct_routing`, `ipmasq`) and for the L2
segments on the kernel (`networks[].backend: kernel`):

- setup: the devices (`io.devices`: the routed VXLAN or IPIP device, a
  bridge and a VXLAN device per kernel segment), a `Writer` and a `Monitor`
  (`io.rtnl`), and a first read of what overlayd owns in the kernel. What
  an earlier run left there is adopted: kept until the first full table is
  known (every configured peer Established and its End-of-RIB in, or
  SWEEP_AFTER_S), then whatever the tables do not want is removed (the
  sweep). Nothing of another program's is ever read as ours.
- `step(now)`, called from the daemon's tick: when the tables moved (the
  subnet table's version, the segments' FDB events, BGP unicast routes, the
  host's addresses and routes), plan again (`kernel.routed`,
  `kernel.segment`) and apply the diff against what is programmed, in
  chunks of CHUNK operations with the event loop let run in between.
  Failed operations are counted, kept per entry with the kernel's error,
  and retried after RETRY_S.
- drift: the monitor says an owned entry was deleted or changed by someone
  else; the owned entries are read again at once and the diff puts them
  back (and `drift_repairs` counts it). A full re-read runs every RESYNC_S
  too, and after the monitor lost notifications.
- local learning on kernel segments: the bridge's FDB (MACs on its local
  ports) and the host's neighbour table on the bridge feed the Switch's
  tables (`Switch.learn_local`, `bind_local`), from which the speaker
  announces type-2 routes, exactly as frames read from a TAP do. When a
  host moves here, our neighbour entry for its IP is handed to the host's
  table as a probe rather than deleted (`kernel.segment.probe_instead`).
- `close()`: the devices are removed (with every entry on them), then every
  route of our protocol and the ipmasq table: only what overlayd created.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import ipaddress
import json
import logging
import socket
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterable

from pyroute2 import AsyncIPRoute

from overlayd.config import Config
from overlayd.fabric.fdb import Source
from overlayd.io import devices as dev
from overlayd.io.rtnl import (
    AF_BRIDGE,
    NTF_EXT_LEARNED,
    NUD_PERMANENT,
    NUD_PROBE,
    Devices,
    Monitor,
    Notice,
    Writer,
    read_owned,
)
from overlayd.io.subnet_env import remove as remove_file
from overlayd.io.subnet_env import write_subnet_files
from overlayd.kernel import masq, nft
from overlayd.kernel import services as nft_services
from overlayd.kernel.routed import Connected, Gateway, Host, RoutedPlan, RoutedSpec, RouteWay, plan_routed
from overlayd.kernel.segment import SegmentSpec, plan_segment, probe_instead
from overlayd.kernel.state import Address, KernelState, Op, diff, kind_of

log = logging.getLogger("overlayd.kernel")


def kernel_services(table) -> list[nft_services.Service]:
    """The service table as the nftables planner takes it: healthy backends only."""
    out = []
    for s in table:
        backends = tuple(s.endpoints[b] for b in s.backends if b in s.healthy)
        out.append(nft_services.Service(
            s.name, s.vip_text, s.port, "tcp" if s.proto == 6 else "udp",
            tuple((ipaddress.ip_address(ip), port) for ip, port in backends),
            "client-ip" if s.affinity_timeout_s is not None else "none",
            s.affinity_timeout_s or nft_services.DEFAULT_AFFINITY_TIMEOUT_S))
    return out

CHUNK = 2000  # operations per batch before the event loop gets a turn
MIN_PLAN_INTERVAL_S = 0.05  # while the tables move, plan at most this often ...
PLAN_BACKOFF = 3.0  # ... and leave the event loop this many times the last plan's cost in between
RETRY_S = 5.0  # failed operations are tried again after this long
RESYNC_S = 60.0  # a full read of the owned entries, whatever the monitor said
SWEEP_AFTER_S = 30.0  # the latest an adopted entry the tables do not want is removed
NUD_VALID_LEARNED = 0x02 | 0x04 | 0x08 | 0x10  # REACHABLE, STALE, DELAY, PROBE


class KernelBackend:
    def __init__(self, config: Config, switch, speaker, prefixes, clock: Callable[[], float], macs=None):
        self.config = config
        self.switch = switch
        self.speaker = speaker
        self.prefixes = prefixes
        self.clock = clock
        r = config.routing
        self.routing = r
        self.protocol = r.route_protocol if r is not None else 149
        self.segments = [n for n in config.networks if n.backend == "kernel"]
        self.macs = macs or {}  # role -> fabric.macs.DeviceMac (the daemon's plan)
        self.writer: Writer | None = None
        self.monitor: Monitor | None = None
        self.devices = Devices()
        self.owned: list[str] = []  # devices we made, in the order made
        self.specs: list[dev.DeviceSpec] = []
        self.programmed = KernelState()
        self.adopted: KernelState | None = None
        self.errors: dict[tuple, str] = {}  # (kind, key) -> what the kernel said
        self.counters: Counter[str] = Counter()
        self.last_errors: list[str] = []
        self.plan: RoutedPlan | None = None
        self.host = Host()
        self.routed_mtu = 0
        self._started = 0.0
        self._dirty = True  # diff desired against programmed on the next step
        self._stale: set = {"routed", *(n.vni for n in self.segments)}  # parts of the plan to make again
        self._parts: dict = {}  # part -> its KernelState, as last planned
        self._next_plan = 0.0
        self._host_dirty = True
        self._resync_at = 0.0  # 0: not due
        self._retry_at = 0.0
        self._next_full = 0.0
        self._versions: tuple = ()
        self._nft_table: nft.Table | None = None  # `inet overlayd` as last applied
        self.services = None  # fabric.services.ServiceTable, when services are configured
        self._bridge_vni: dict[int, int] = {}  # bridge index -> VNI of its kernel segment
        self._vxlan_of: dict[int, int] = {}  # bridge index -> index of its VXLAN port

    @property
    def needed(self) -> bool:
        return self.routing is not None or bool(self.segments)

    # -- setup and teardown ---------------------------------------------------------------

    def device_specs(self, underlay_mtu: int) -> list[dev.DeviceSpec]:
        cfg, node = self.config, self.config.node
        specs = []
        r = self.routing
        if r is not None and r.backend in ("kernel", "ipip"):
            mtu = cfg.routing_mtu(underlay_mtu)
            if r.backend == "kernel":
                mac = self.speaker.routed.router_mac.hex(":")
                specs.append(dev.DeviceSpec(r.device, "vxlan", mtu, mac=mac, vni=r.vni, local=node.vtep,
                                            port=node.vxlan_port))
            else:
                if node.vtep.version == 4:
                    specs.append(dev.DeviceSpec(r.device, "ipip", mtu, local=node.vtep))
                else:
                    specs.append(dev.DeviceSpec(r.device, "ip6tnl", mtu))
        for net in self.segments:
            mtu = cfg.mtu_for(net, underlay_mtu)
            specs.append(dev.DeviceSpec(net.device, "bridge", mtu, mac=self._mac(f"network {net.name}", net.mac)))
            specs.append(dev.DeviceSpec(net.vxlan_device, "vxlan", mtu, vni=net.vni, local=node.vtep,
                                        port=node.vxlan_port, master=net.device, neigh_suppress=True,
                                        mac=self._mac(f"vxlan {net.name}", None)))
        return specs

    def _mac(self, role: str, configured: str | None) -> str | None:
        planned = self.macs.get(role)
        return planned.mac.hex(":") if planned is not None else configured

    async def setup(self, underlay_mtu: int) -> None:
        """Make the devices, read what we own, start watching; raises on failure (the caller
        then calls `close`, which removes what was made)."""
        self._started = self.clock()
        if self.routing is not None:
            self.routed_mtu = self.config.routing_mtu(underlay_mtu)
        self.specs = self.device_specs(underlay_mtu)
        self.monitor = Monitor(self.protocol)  # before the devices: their first entries are seen
        self.writer = Writer(self.protocol)
        async with AsyncIPRoute() as ipr:
            for spec in self.specs:
                if spec.name not in self.owned:  # first: a device made and then failing is removed too
                    self.owned.append(spec.name)  # (removal checks the owner alias: never another's)
                _, how = await dev.ensure(ipr, spec)
                log.info("%s: %s (%s, mtu %d)", spec.name, how, spec.kind, spec.mtu)
            await self._refresh_devices(ipr)
            for net in self.segments:
                mac = await dev.mac_of(ipr, net.device)
                self.switch.add_kernel_segment(net.vni, net.name, own_macs=[mac])
                # The bridge learns and floods by itself: what overlayd bounds is what it takes
                # from the bridge into its FDB, and so announces.
                self.switch.set_limits(net.vni, max_local_macs=net.max_local_macs, learn_rate_per_s=None,
                                       learn_burst=None, flood_rate_pps=None, flood_burst=None,
                                       now=self.clock(), max_local_ips=net.max_local_ips)
                self.switch.learn_local(net.vni, mac, self.clock())
                if net.address is not None:  # the bridge's own address, as a TAP's is snooped
                    self.switch.bind_local(net.vni, net.address.ip, mac, self.clock())
            self.programmed = await read_owned(ipr, self.devices, self.protocol)
            await self._read_local(ipr)
            await self._read_host(ipr)
        self.adopted = self.programmed.copy() if len(self.programmed) else None
        if self.adopted is not None:
            log.info("adopted %d kernel entries an earlier run left; the ones the tables do not want "
                     "go once the first full table is in", len(self.adopted))
        self._next_full = self.clock() + RESYNC_S
        if self.routing is not None and self.routing.backend != "userspace":
            write_subnet_files(self.routing, self.speaker.routed.subnets, self.routed_mtu)

    def watch(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.monitor is not None
        loop.add_reader(self.monitor.fileno(), self._on_monitor)

    async def close(self, loop: asyncio.AbstractEventLoop | None = None, keep: bool = False) -> None:
        """Remove everything overlayd made in the kernel: devices, routes of our protocol, ipmasq
        (`keep`: none of it, only let go of the sockets; the next start adopts what is there)."""
        if self.monitor is not None:
            if loop is not None:
                loop.remove_reader(self.monitor.fileno())
            self.monitor.close()
            self.monitor = None
        if keep:
            if self.writer is not None:
                self.writer.close()
                self.writer = None
            log.info("kept in the kernel (node.on_stop: keep): %s, %d entries, services and ipmasq rules",
                     ", ".join(self.owned) or "no devices", len(self.programmed))
            return
        try:
            async with AsyncIPRoute() as ipr:
                for name in reversed(self.owned):
                    if await dev.remove(ipr, name):
                        log.info("%s: removed", name)
                self.owned.clear()
                await self._refresh_devices(ipr)
                left = await read_owned(ipr, self.devices, self.protocol)
            if self.writer is not None and left.routes:
                ops = [Op("delete", route) for route in left.routes.values()]
                bad = [o for o in self.writer.apply(ops, self.devices) if not o.ok]
                for outcome in bad:
                    log.error("cleanup: %s", outcome.describe())
                log.info("removed %d route(s) of protocol %d", len(ops) - len(bad), self.protocol)
        finally:
            if self._nft_table is not None:
                self._nft(nft.delete(), "remove the ipmasq table")
                self._nft_table = None
            if self.writer is not None:
                self.writer.close()
                self.writer = None
            if self.routing is not None and self.routing.backend != "userspace":
                remove_file(self.routing.env_file)
                if self.routing.cni_conflist:
                    remove_file(self.routing.cni_conflist)

    # -- running ------------------------------------------------------------------------------

    def segment_events(self, events: Iterable[object]) -> None:
        """The Switch's table changes: a kernel segment's FDB, flood list or bindings moved."""
        vnis = {n.vni for n in self.segments}
        if vnis:
            self._stale |= vnis & {getattr(e, "vni", None) for e in events}

    def follow_moves(self) -> None:
        """Our subnet moved (`subnet: auto` lost a collision): rewrite subnet.env, plan again."""
        if self.routing is None or self.routing.backend == "userspace" or not self.speaker.subnet_moves:
            return
        self.speaker.subnet_moves.clear()
        write_subnet_files(self.routing, self.speaker.routed.subnets, self.routed_mtu)
        self._stale.add("routed")

    async def step(self) -> None:
        """Bring the kernel in line with the tables, if anything moved (see the module docstring)."""
        now = self.clock()
        versions = self._table_versions()
        if versions != self._versions:
            self._versions = versions
            self._stale.add("routed")
        if self._retry_at and now >= self._retry_at:
            self._retry_at, self._dirty = 0.0, True
        if now >= self._next_full:
            self._resync_at = now
        if self.adopted is not None and self._first_table_in(now):
            log.info("first full table in: sweeping what an earlier run left and the tables do not want")
            self.adopted, self._dirty = None, True
        if self._host_dirty or (self._resync_at and now >= self._resync_at):
            async with AsyncIPRoute() as ipr:
                if self._host_dirty:
                    self._host_dirty = False
                    await self._refresh_devices(ipr)
                    await self._ensure_devices(ipr)
                    await self._read_host(ipr)
                    self._stale.add("routed")
                if self._resync_at and now >= self._resync_at:
                    self._resync_at = 0.0
                    self._next_full = now + RESYNC_S
                    self.counters["resyncs"] += 1
                    self.programmed = await read_owned(ipr, self.devices, self.protocol)
                    await self._read_local(ipr)
            self._dirty = True
        if self._stale:
            if now < self._next_plan:
                return  # tables still moving: plan again once the last plan's cost is paid back
            started = time.perf_counter()
            self._replan()
            self._next_plan = now + max(MIN_PLAN_INTERVAL_S, PLAN_BACKOFF * (time.perf_counter() - started))
            self._dirty = True
        if not self._dirty:
            return
        self._dirty = False
        desired = KernelState()
        for part in self._parts.values():
            desired.update(part)
        self._apply_nft()
        ops = diff(desired, self.programmed, keep=self.adopted)
        if self.segments:
            ops = probe_instead(ops, self._local_mac)
        for start in range(0, len(ops), CHUNK):
            self._record(self.writer.apply(ops[start : start + CHUNK], self.devices))
            if start + CHUNK < len(ops):
                await asyncio.sleep(0)

    def _table_versions(self) -> tuple:
        unicast = self.speaker.unicast_version if self.speaker is not None else 0
        services = self.services.version if self.services is not None else 0
        return (self.prefixes.version if self.prefixes is not None else 0, unicast, services)

    def _first_table_in(self, now: float) -> bool:
        if now - self._started >= SWEEP_AFTER_S:
            return True
        sp = self.speaker
        if sp is None or not sp.peers:
            return True
        return all(p.established is not None and p.negotiated is not None
                   and set(p.negotiated.families) <= sp.stats[a].end_of_rib for a, p in sp.peers.items())

    def _replan(self) -> None:
        """Plan again the parts whose tables moved: the routed subnets, each kernel segment."""
        stale, self._stale = self._stale, set()
        r = self.routing
        if r is not None and "routed" in stale:
            spec = RoutedSpec(r.backend, r.device, self.config.node.vtep, r.vni,
                              tuple(n for n in (r.network, r.network6) if n is not None),
                              r.direct_routing, r.install_routes, self.config.services_network)
            unicast = self.speaker.unicast_routes() if r.install_routes else {}
            self.plan = plan_routed(spec, self.prefixes, dataclasses.replace(self.host, unicast=unicast))
            self._parts["routed"] = self.plan.state
        for net in self.segments:
            if net.vni not in stale:
                continue
            spec = SegmentSpec(net.vni, net.device, net.vxlan_device, self.config.node.family)
            fdb = [e for e in self.switch.fdb if e.vni == net.vni]
            bindings = [b for b in self.switch.neighbors if b.vni == net.vni and b.source.rank > 0]
            state = plan_segment(spec, fdb, self.switch.flood.targets(net.vni), bindings)
            if net.address is not None:
                state.add(Address(net.device, net.address))
            self._parts[net.vni] = state

    def _record(self, outcomes) -> None:
        failed = 0
        for outcome in outcomes:
            op = outcome.op
            key = (kind_of(op.entry), op.entry.key)
            if outcome.ok:
                self.counters["ops_applied"] += 1
                self.errors.pop(key, None)
                if op.action in ("delete", "probe"):
                    self.programmed.discard(op.entry)
                else:
                    self.programmed.add(op.entry)
                continue
            failed += 1
            self.counters["op_errors"] += 1
            text = outcome.describe()
            if self.errors.get(key) != text:
                log.warning("kernel: %s", text)
            self.errors[key] = text
            self.last_errors.append(text)
            del self.last_errors[:-10]
            if outcome.error == errno.ENODEV:
                self._host_dirty = True
        if failed:
            self._retry_at = self.clock() + RETRY_S

    # -- ipmasq -----------------------------------------------------------------------------

    def _apply_nft(self) -> None:
        """`inet overlayd`: ipmasq's chain and the services' rules, applied as a diff."""
        r = self.routing
        parts = []
        subnets = self.speaker.routed.subnets if self.speaker is not None and self.speaker.routed else ()
        if r is not None and r.ipmasq:
            keep = [*self.config.cluster_networks, *self.config.services_network]
            parts.append(masq.table(subnets, keep))
        if self.services is not None and r is not None and r.backend != "userspace":
            parts.append(nft_services.table(kernel_services(self.services), subnets, self.config.cluster_networks))
        if not parts and self._nft_table is None:
            return
        desired = nft.merge(*parts)
        commands = nft.diff(self._nft_table, desired)
        if not commands:
            return
        if self._nft(nft.document(commands), "apply the nftables table"):
            first = self._nft_table is None
            self._nft_table = desired
            if first and r is not None and r.ipmasq:
                log.info("ipmasq: masquerading %s to outside %s", ", ".join(map(str, subnets)) or "nothing",
                         ", ".join(map(str, [*self.config.cluster_networks, *self.config.services_network])))

    def _nft(self, doc: dict, what: str) -> bool:
        try:
            out = subprocess.run(["nft", "-j", "-f", "-"], input=json.dumps(doc), capture_output=True,
                                 text=True, timeout=10)
        except (OSError, subprocess.SubprocessError) as err:
            ok, why = False, str(err)
        else:
            ok, why = out.returncode == 0, out.stderr.strip()
        if not ok:
            self.counters["op_errors"] += 1
            self.last_errors.append(f"nft: cannot {what}: {why}")
            del self.last_errors[:-10]
            log.error("nft: cannot %s: %s", what, why)
            self._retry_at = self.clock() + RETRY_S
        return ok

    # -- the kernel around us ---------------------------------------------------------------

    async def _refresh_devices(self, ipr) -> None:
        index: dict[str, int] = {}
        async for link in await ipr.get_links():
            index[link.get("IFLA_IFNAME")] = link["index"]
        self.devices = Devices(index, owned={n for n in self.owned if n in index})
        self._bridge_vni = {index[n.device]: n.vni for n in self.segments if n.device in index}
        self._vxlan_of = {index[n.device]: index[n.vxlan_device] for n in self.segments
                          if n.device in index and n.vxlan_device in index}

    async def _ensure_devices(self, ipr) -> None:
        """A device of ours deleted from outside is made again (its entries follow by diff)."""
        missing = [s for s in self.specs if s.name not in self.devices.index]
        for spec in missing:
            try:
                await dev.ensure(ipr, spec)
            except Exception as err:  # pyroute2's NetlinkError, DeviceTaken
                self.counters["op_errors"] += 1
                self.last_errors.append(f"{spec.name}: cannot make it again: {err}")
                log.error("%s: deleted from outside and cannot be made again: %s", spec.name, err)
                continue
            self.counters["drift_repairs"] += 1
            log.warning("%s: deleted from outside: made again", spec.name)
        if missing:
            await self._refresh_devices(ipr)
            self._resync_at = self.clock()

    async def _read_host(self, ipr) -> None:
        """Connected networks (not on our own devices) and default gateways, for the planner."""
        owned = set(self.devices.owned_indexes())
        names = {i: n for n, i in self.devices.index.items()}
        connected = []
        async for msg in await ipr.get_addr():
            if msg["index"] in owned or names.get(msg["index"]) == "lo":
                continue
            local = msg.get_attr("IFA_LOCAL") or msg.get_attr("IFA_ADDRESS")
            if local is None:
                continue
            iface = ipaddress.ip_interface(f"{local}/{msg['prefixlen']}")
            if not iface.ip.is_link_local:
                connected.append(Connected(iface.network, names.get(msg["index"], "?")))
        gateways: dict[int, Gateway] = {}
        for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
            best = None
            async for msg in await ipr.get_routes(family=family, table=254):
                gw = msg.get_attr("RTA_GATEWAY")
                if msg["dst_len"] != 0 or gw is None or msg["proto"] == self.protocol:
                    continue
                metric = msg.get_attr("RTA_PRIORITY") or 0
                if best is None or metric < best[0]:
                    best = (metric, Gateway(ipaddress.ip_address(gw), names.get(msg.get_attr("RTA_OIF"), "?")))
            if best is not None:
                gateways[version] = best[1]
        self.host = Host(tuple(connected), gateways)

    async def _read_local(self, ipr) -> None:
        """What the kernel bridges of our segments hold locally: their MACs and IP bindings."""
        if not self._bridge_vni:
            return
        now = self.clock()
        for net in self.segments:  # the bridge's own MAC and address, as at setup
            own = self.switch.segment(net.vni).own_macs
            for mac in own:
                self.switch.learn_local(net.vni, mac, now)
                if net.address is not None:
                    self.switch.bind_local(net.vni, net.address.ip, mac, now)
        async for msg in await ipr.fdb("dump"):
            self._learn_fdb(msg, deleted=False, now=now)
        async for msg in await ipr.get_neighbours():
            self._learn_neighbor(msg, deleted=False, now=now)
        # Whatever the dump no longer holds left while notifications were lost: forget it.
        vnis = set(self._bridge_vni.values())
        for e in self.switch.fdb:
            if e.vni in vnis and e.vtep is None and e.updated < now:
                self.switch.forget_local(e.vni, e.mac)
        for b in self.switch.neighbors:
            if b.vni in vnis and b.source is Source.LOCAL and b.updated < now:
                self.switch.unbind_local(b.vni, b.ip, b.mac)

    def _learn_fdb(self, msg, deleted: bool, now: float) -> None:
        master = msg.get_attr("NDA_MASTER")
        bridge = master if master in self._bridge_vni else msg["ifindex"] if msg["ifindex"] in self._bridge_vni else None
        if bridge is None or msg.get_attr("NDA_VLAN") or msg["ifindex"] == self._vxlan_of.get(bridge):
            return
        lladdr = msg.get_attr("NDA_LLADDR")
        if lladdr is None:
            return
        mac = bytes.fromhex(lladdr.replace(":", ""))
        if mac[0] & 1:
            return
        if msg["state"] & NUD_PERMANENT and msg["ifindex"] != bridge:
            return  # a port's own address (the host end of a veth), not a host behind it
        vni = self._bridge_vni[bridge]
        if deleted:
            self.switch.forget_local(vni, mac)
        else:
            self.switch.learn_local(vni, mac, now)

    def _local_mac(self, bridge: str, mac: bytes) -> bool:
        """Whether the kernel segment on `bridge` has `mac` on a local port."""
        vni = next((n.vni for n in self.segments if n.device == bridge), None)
        entry = self.switch.fdb.get(vni, mac) if vni is not None else None
        return entry is not None and entry.vtep is None

    def _learn_neighbor(self, msg, deleted: bool, now: float) -> None:
        vni = self._bridge_vni.get(msg["ifindex"])
        if vni is None or msg["family"] == AF_BRIDGE or msg["flags"] & NTF_EXT_LEARNED:
            return
        dst, lladdr = msg.get_attr("NDA_DST"), msg.get_attr("NDA_LLADDR")
        if dst is None:
            return
        ip = ipaddress.ip_address(dst)
        mac = bytes.fromhex(lladdr.replace(":", "")) if lladdr else None
        if not deleted and msg["state"] == NUD_PROBE:
            # being asked (a probe_instead hand-over, or a re-check): no news until it answers,
            # but a binding it already had stays fresh
            held = self.switch.neighbors.get(vni, ip, Source.LOCAL)
            if held is not None and held.mac == mac:
                self.switch.bind_local(vni, ip, mac, now)
            return
        if deleted or mac is None or not msg["state"] & NUD_VALID_LEARNED:
            self.switch.unbind_local(vni, ip)
            return
        entry = self.switch.fdb.get(vni, mac)
        if entry is not None and entry.vtep is None:  # the host's cache holds remote IPs too: only local ones
            self.switch.bind_local(vni, ip, mac, now)

    def _on_monitor(self) -> None:
        assert self.monitor is not None and self.writer is not None
        notices = self.monitor.read(self.devices, self.writer.port_id, learning=bool(self._bridge_vni))
        now = self.clock()
        for notice in notices:
            self._notice(notice, now)

    def _notice(self, notice: Notice, now: float) -> None:
        if notice.host:
            self._host_dirty = True
            if notice.resync:
                self._resync_at = now
            return
        if notice.entry is not None:
            have = self.programmed.table(kind_of(notice.entry)).get(notice.entry.key)
            drifted = have is not None if notice.deleted else have != notice.entry
            if drifted and not (notice.deleted and have != notice.entry):
                self.counters["drift_repairs"] += 1
                log.warning("kernel: %s %s from outside: putting it back", notice.entry,
                            "deleted" if notice.deleted else "changed")
                self._resync_at = now
            return
        if notice.msg is not None:
            if notice.msg["family"] == AF_BRIDGE:
                self._learn_fdb(notice.msg, notice.deleted, now)
            else:
                self._learn_neighbor(notice.msg, notice.deleted, now)

    # -- what the status socket shows -----------------------------------------------------------

    def way_of(self, prefix) -> RouteWay | None:
        return self.plan.ways.get(prefix) if self.plan is not None else None

    def programmed_state(self, entry) -> str:
        """'yes', or the kernel's error, for a planned entry."""
        key = (kind_of(entry), entry.key)
        if key in self.errors:
            return self.errors[key]
        have = self.programmed.table(key[0]).get(entry.key)
        return "yes" if have == entry else "pending"

    def summary(self) -> dict:
        by_kind = {kind: len(self.programmed.table(kind)) for kind in ("routes", "neighbors", "fdb", "addresses")}
        return {
            "route_protocol": self.protocol,
            "devices": list(self.owned),
            "programmed": by_kind,
            "ops_applied": self.counters["ops_applied"],
            "op_errors": self.counters["op_errors"],
            "failing": len(self.errors),
            "drift_repairs": self.counters["drift_repairs"],
            "resyncs": self.counters["resyncs"],
            "adopted_pending_sweep": len(self.adopted) if self.adopted is not None else 0,
            "ipmasq": self._nft_table is not None,
            "last_errors": list(self.last_errors),
            "monitor_overruns": self.monitor.overruns if self.monitor is not None else 0,
        }
