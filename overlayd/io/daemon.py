"""The daemon: owns TAP devices, UDP sockets, the status socket and the metrics
endpoint, and runs the asyncio loop that moves frames between them through the Switch.

Setup is all or nothing: anything created before a failure is removed
again. The hot paths (io/plainpath.py; io/fastpath.py with offloads) read
each ready descriptor until it would block, a batch per wake-up, into
preallocated buffers, and log nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable

from overlayd.config import Config, ConfigError, NetworkConfig, load_config
from overlayd.config.reload import ReloadPlan, reload_plan
from overlayd.dataplane.offload import tso_max_bytes
from overlayd.dataplane.switch import Switch
from overlayd.dataplane.vlan import Trunk
from overlayd.fabric.fdb import Source
from overlayd.fabric.flood import FloodMemberAdded
from overlayd.control.hub import EventHub
from overlayd.control.routed import default_router_mac
from overlayd.control.speaker import Speaker
from overlayd.io import fastpath
from overlayd.fabric.prefixes import PrefixTable
from overlayd.io.backend import KernelBackend
from overlayd.io.bgp import BgpService, TcpAuthError
from overlayd.io.devices import DeviceTaken
from overlayd.io.metrics import MetricsServer
from overlayd.io.routing import RoutedDevice
from overlayd.io.services import Services
from overlayd.dataplane.services import ServicePath
from overlayd.io.netlink import Netlink, interface_address
from overlayd.io.notify import notify
from overlayd.io.offload import enable_tap_tso
from overlayd.io.offload import plan as plan_offloads
from overlayd.io.plainpath import PlainPath
from overlayd.io.tap import Tap, TapExistsError
from overlayd.io.udp import VxlanSockets
from overlayd.status.protocol import StatusError
from overlayd.status.server import SocketInUseError, StatusServer, claim_path
from overlayd.status.view import SwitchView
from overlayd.fabric.macs import DeviceMac
from overlayd.fabric.macs import plan as plan_macs
from overlayd.wire.arp import gratuitous_frame
from overlayd.wire.ethernet import mac_str, parse_mac
from overlayd.wire.ndp import unsolicited_advertisement_frame

log = logging.getLogger("overlayd")

AGING_TICK_S = 1.0
VTEP_CHECK_S = 5.0  # how often node.vtep_interface's addresses are read (a change is shown, not followed)
ROUTE_CHECK_S = 10.0  # how often the subnet table is compared with the host's own routes
EVENTS_TICK_S = 0.05  # with BGP: how soon a MAC learned on a TAP is announced
ANNOUNCE_DELAY_S = 0.2  # a flood list grew: announce our addresses once it has settled a moment


class SetupError(Exception):
    """The system cannot be set up as configured; nothing was left behind."""


class Daemon:
    def __init__(self, config: Config, clock: Callable[[], float] = time.monotonic,
                 config_path: str | None = None):
        self.config = config
        self.config_path = config_path  # what SIGHUP reads again
        self.clock = clock
        self.switch = Switch(config.node.vxlan_port, config.node.fdb_aging)
        self.events = EventHub()  # what the log and `overlayctl watch` hear (control/hub.py)
        self.events.network_of = self._network_name
        self.taps: dict[int, Tap] = {}
        self.mtus: dict[int, int] = {}
        self.sockets: VxlanSockets | None = None
        self.status: StatusServer | None = None
        self.metrics: MetricsServer | None = None  # `metrics:`: bound in setup, served from run()
        self._stack = contextlib.ExitStack()
        self._stopping = asyncio.Event()
        # OVERLAYD_OFFLOAD; trimmed to what the kernel grants in setup. A VLAN trunk's tags are put
        # and taken in the plain data path only: with one, no offloads.
        trunks = any(net.trunk is not None for net in config.networks)
        self.offloads = plan_offloads(frozenset() if trunks else None)
        self.fastpath: fastpath.FastPath | None = None
        self.plainpath: PlainPath | None = None  # the hot loops without offloads (and for VLAN trunks)
        self.speaker: Speaker | None = None
        self.prefixes: PrefixTable | None = None
        self.routed: RoutedDevice | None = None
        self.fds: dict[int, int] = {}  # VNI -> the device its frames (or packets) are written to
        self.trunks: dict[int, Trunk] = {}  # TAP fd -> its VLANs, for VLAN trunks (networks[].vlans)
        self.vlan_tags: dict[int, bytes] = {}  # VNI -> its tag on its trunk's TAP (not the native VLAN)
        self.bgp: BgpService | None = None
        self.kernel: KernelBackend | None = None  # what overlayd programs into the kernel
        self.device_macs: dict = {}  # role -> fabric.macs.DeviceMac: every device's MAC and its source
        self._announce: dict[int, float] = {}  # VNI -> when to announce its TAP's addresses (GARP / NA)
        self.services: Services | None = None  # `services:`, `services_file`
        self.status_view: SwitchView | None = None  # what the status socket shows
        self.underlay_mtu = 0
        self._services_task: asyncio.Task | None = None
        self._reload_lock = asyncio.Lock()
        self._reloads: set[asyncio.Task] = set()

    # -- setup and teardown ---------------------------------------------------

    async def setup(self) -> None:
        """Create devices and sockets; on any failure undo what was done and raise SetupError."""
        try:
            await self._setup()
        except BaseException:
            await self._close_kernel()
            await self._close_metrics()
            self._stack.close()
            raise

    async def _setup(self) -> None:
        cfg = self.config
        node = cfg.node
        self.device_macs = device_macs(cfg)
        for dm in self.device_macs.values():
            for skipped in dm.skipped:
                log.warning("%s: derived MAC %s is taken already: using the next derivation, %s",
                            dm.role, mac_str(skipped), mac_str(dm.mac))
        async with Netlink() as nl:
            underlay = await nl.underlay_for(node.vtep)
            if underlay is None:
                raise SetupError(f"node.vtep: {node.vtep} is not assigned to any interface on this host")
            underlay_mtu = self.underlay_mtu = node.underlay_mtu or underlay.mtu
            for i, net in enumerate(cfg.networks):
                if net.backend == "userspace" and await nl.link_exists(net.device):
                    raise SetupError(f"networks[{i}].device: {net.device} already exists")
            routing = cfg.routing
            if routing is not None and routing.backend == "userspace" and await nl.link_exists(routing.device):
                raise SetupError(f"routing.device: {routing.device} already exists")
            try:
                claim_path(node.status_socket)
            except (SocketInUseError, OSError) as err:
                raise SetupError(f"node.status_socket: {err}") from None
            if cfg.metrics is not None:
                self.metrics = MetricsServer(cfg.metrics.address, cfg.metrics.port)
                try:
                    self.metrics.bind()
                except OSError as err:
                    raise SetupError(
                        f"metrics.listen: cannot listen on {cfg.metrics.listen}: {err.strerror or err}"
                    ) from None
            if cfg.uses_userspace_vxlan():
                try:
                    self.sockets = VxlanSockets(
                        str(node.vtep), node.vxlan_port, node.udp_source_ports, node.vtep.version == 6
                    )
                except OSError as err:
                    raise SetupError(
                        f"node.vxlan_port: cannot bind {node.vtep} port {node.vxlan_port}: {err.strerror}"
                    ) from None
                self._stack.callback(self.sockets.close)
            self.underlay_mtu = underlay_mtu
            trunk_taps: dict[str, tuple[Tap, int, bytes]] = {}  # a VLAN trunk's one TAP, by trunk
            for i, net in enumerate(cfg.networks):
                if net.backend != "userspace":
                    continue
                if net.trunk is not None and net.trunk in trunk_taps:
                    tap, mtu, mac = trunk_taps[net.trunk]
                else:
                    tap, mtu, mac = await self._open_tap(nl, i, net)
                    self._stack.callback(tap.close)
                    if net.trunk is not None:
                        trunk_taps[net.trunk] = tap, mtu, mac
                        self._add_trunk(net.trunk, tap)
                self._add_tap(net, tap, mtu, mac)
        if cfg.routing is not None:
            # Routed datagrams are decided one by one (destination subnet, TAP MAC rewrite),
            # which the GRO batch path does not do.
            self.offloads.gro = False
        if self.sockets is not None:
            self.fastpath = fastpath.start(self.offloads, self.switch, self.taps, self.sockets,
                                           node.vtep.version == 6, self.clock)
            self.plainpath = PlainPath(self.switch, self.sockets, self.fds, self.vlan_tags, self.clock)
        now = self.clock()
        for net in cfg.networks:
            self._apply_static(net, None, now)
            if net.backend == "userspace":
                self._log_network(net)
        if cfg.bgp is not None:
            # Remote MACs come from the control plane only (kernel VXLAN `nolearning`);
            # snooped IP bindings go into type-2 routes, remote ones answer ARP/ND here.
            self.switch.data_learning = False
            self.switch.neighbor_snooping = True
            self.switch.arp_suppression = True
            self.prefixes = PrefixTable()
            self.speaker = Speaker(cfg, self.switch, now, self.prefixes, events=self.events)
        if cfg.routing is not None and cfg.routing.backend == "userspace":
            assert self.speaker is not None
            self.routed = RoutedDevice(cfg, self.switch, self.speaker, self.clock, self.offloads.vnet_hdr)
            async with Netlink() as nl:
                try:
                    routing_mac = self.device_macs.get("routing")
                    await self.routed.setup(nl, underlay_mtu, self._stack,
                                            mac=mac_str(routing_mac.mac) if routing_mac else None)
                except OSError as err:
                    raise SetupError(f"routing.device: {err.strerror or err}") from None
                except Exception as err:  # pyroute2's NetlinkError and friends
                    raise SetupError(f"routing: cannot configure {cfg.routing.device}: {err}") from None
            self.fds[cfg.routing.vni] = self.routed.fd
            if self.fastpath is not None:
                self.fastpath.fds[cfg.routing.vni] = self.routed.fd
        if cfg.services or cfg.services_file:
            self.services = Services(cfg, self.clock)
            if self.routed is not None:
                self._attach_service_path()
            self.services.load()
        kernel = KernelBackend(cfg, self.switch, self.speaker, self.prefixes, self.clock, self.device_macs)
        if kernel.needed:
            self.kernel = kernel
            if self.services is not None:
                kernel.services = self.services.table
            try:
                await kernel.setup(underlay_mtu)
            except DeviceTaken as err:
                raise SetupError(f"{self._device_field(str(err).split()[0])}: {err}") from None
            except OSError as err:
                raise SetupError(f"kernel backend: {err.strerror or err}") from None
            except Exception as err:  # pyroute2's NetlinkError and friends
                raise SetupError(f"kernel backend: {err}") from None
            if kernel.adopted is not None and self.speaker is not None and not cfg.uses_userspace_vxlan():
                # The kernel carries every packet and kept forwarding while we were away.
                self.speaker.preserve_forwarding()
                log.info("the kernel kept forwarding across the restart: graceful restart F bit set")
            for net in cfg.networks:
                if net.backend == "kernel":
                    self.mtus[net.vni] = cfg.mtu_for(net, underlay_mtu)
                    log.info("network %s: vni %d on bridge %s with kernel VXLAN %s", net.name, net.vni,
                             net.device, net.vxlan_device)
            if cfg.routing is not None:
                log.info("routing: backend %s%s", cfg.routing.backend,
                         ", direct routing" if cfg.routing.direct_routing else "")
        # (the table changes of setup reach the log and the speaker on the first tick, once BGP runs)
        log.info(
            "node %s: vtep %s port %d on %s (underlay mtu %d), source ports %s",
            node.name, node.vtep, node.vxlan_port, underlay.ifname, underlay_mtu,
            ",".join(map(str, self.sockets.source_ports)) if self.sockets else "none (no userspace VXLAN)",
        )

    async def _open_tap(self, nl: Netlink, i: int, net: NetworkConfig) -> tuple[Tap, int, bytes]:
        """Create and configure the TAP of networks[i]: (tap, MTU, MAC). Raises SetupError naming
        the field; a TAP made before the failure is closed again."""
        address = net.address
        if net.trunk is not None:  # the trunk's address is its native VLAN's
            address = next((n.address for n in self.config.networks if n.trunk == net.trunk and n.native), None)
        try:
            tap = Tap(net.device, vnet_hdr=self.offloads.vnet_hdr)
        except TapExistsError:
            raise SetupError(f"networks[{i}].device: {net.device} already exists") from None
        except OSError as err:
            raise SetupError(f"networks[{i}].device: {err.strerror}") from None
        mtu = self.config.mtu_for(net, self.underlay_mtu)
        try:
            mac = await nl.configure(net.device, mtu, address,
                                     tso_max_bytes(mtu, self.config.node.vtep.version) if self.offloads.tso else None,
                                     mac=mac_str(self.device_macs[f"network {net.name}"].mac))
        except Exception as err:  # pyroute2's NetlinkError and friends
            tap.close()
            raise SetupError(f"networks[{i}]: cannot configure {net.device}: {err}") from None
        return tap, mtu, mac

    def _add_tap(self, net: NetworkConfig, tap: Tap, mtu: int, mac: bytes) -> None:
        self.taps[net.vni] = tap
        self.fds[net.vni] = tap.fd
        self.mtus[net.vni] = mtu
        self.switch.add_segment(net.vni, net.name, own_macs=[mac])
        self.switch.set_limits(net.vni, max_local_macs=net.max_local_macs,
                               learn_rate_per_s=net.mac_learn_rate_per_s, learn_burst=net.mac_learn_burst,
                               flood_rate_pps=net.flood_rate_pps, flood_burst=net.flood_burst,
                               now=self.clock(), max_local_ips=net.max_local_ips)
        if self.fastpath is not None:
            self.fastpath.fds[net.vni] = self.fastpath.tap_fds[net.vni] = tap.fd

    def _add_trunk(self, name: str, tap: Tap) -> None:
        """TAP `tap` carries VLAN trunk `name`: its frames are tagged (dataplane/vlan.py)."""
        members = [n for n in self.config.networks if n.trunk == name]
        native = next((n.vlan for n in members if n.native), None)
        trunk = self.trunks[tap.fd] = Trunk({n.vlan: n.vni for n in members if n.vlan is not None}, native)
        self.vlan_tags.update(trunk.tags)

    def _apply_static(self, net: NetworkConfig, was: NetworkConfig | None, now: float) -> None:
        """Make network `net`'s static flood list and FDB entries (`vteps`, `fdb`) what its config
        says, given what it said before (`was`; None at start)."""
        switch, vni = self.switch, net.vni
        before = {str(v) for v in was.vteps} if was is not None else set()
        after = {str(v) for v in net.vteps}
        for vtep in sorted(before - after):
            switch.remove_flood_vtep(vni, vtep, Source.STATIC)
        for vtep in sorted(after - before):
            switch.add_flood_vtep(vni, vtep, Source.STATIC)
        old_fdb = {e.mac_bytes: str(e.vtep) for e in was.fdb} if was is not None else {}
        new_fdb = {e.mac_bytes: str(e.vtep) for e in net.fdb}
        for mac in sorted(old_fdb.keys() - new_fdb.keys()):
            switch.withdraw_mac(vni, mac, Source.STATIC)
        for mac, vtep in new_fdb.items():
            if old_fdb.get(mac) != vtep:
                switch.install_mac(vni, mac, vtep, Source.STATIC, now)

    def _log_network(self, net: NetworkConfig) -> None:
        log.info(
            "network %s: vni %d on %s%s (mtu %d, mac %s), flood list: %s",
            net.name, net.vni, net.device,
            "" if net.vlan is None else f" VLAN {net.vlan}{' (native)' if net.native else ''}",
            self.mtus[net.vni],
            mac_str(min(self.switch.segment(net.vni).own_macs)),
            ", ".join(self.switch.flood.targets(net.vni)) or "empty",
        )

    def _network_name(self, vni: int) -> str | None:
        """The name of network `vni` (for events), None for a VNI without a segment."""
        try:
            return self.switch.segment(vni).name
        except KeyError:
            return None

    def _device_field(self, name: str) -> str:
        """The config field that names device `name` (for an error message)."""
        for i, net in enumerate(self.config.networks):
            if name in (net.device, net.vxlan_device):
                return f"networks[{i}].device"
        return "routing.device"

    async def _close_kernel(self, keep: bool = False) -> None:
        if self.kernel is not None:
            kernel, self.kernel = self.kernel, None
            try:
                await kernel.close(asyncio.get_running_loop(), keep=keep)
            except Exception as err:  # noqa: BLE001 - cleanup goes on, and says what failed
                log.error("kernel backend cleanup: %s", err)

    async def _close_metrics(self) -> None:
        if self.metrics is not None:
            await self.metrics.close()

    def close(self) -> None:
        """Remove what setup created (TAP devices, sockets). Safe to call twice."""
        self._stack.close()
        self.taps.clear()

    # -- running --------------------------------------------------------------

    async def run(self) -> None:
        """Set up, serve until SIGTERM/SIGINT or `stop()`, then clean up."""
        loop = asyncio.get_running_loop()
        await self.setup()
        try:
            offloads = self.offloads if self.sockets is not None else None  # no userspace VXLAN: none apply
            view = SwitchView(self.config, self.switch, self.clock(), self.mtus, offloads,
                              self.speaker, self.routed, self.kernel, self.services, self.device_macs,
                              self.underlay_mtu, self.events)
            node = self.config.node
            self.status = StatusServer(node.status_socket, view, self.clock, max_clients=node.status_max_clients,
                                       idle_timeout_s=node.status_idle_timeout_s, group=node.status_group,
                                       max_watchers=node.status_max_watchers)
            view.status_socket = self.status
            view.reload_hook = self._reload_command
            self.status_view = view
            try:
                await self.status.start()
            except KeyError as err:
                raise SetupError(f"node.status_group: {err.args[0]}") from None
            except OSError as err:
                raise SetupError(f"node.status_socket: {err}") from None
            if self.metrics is not None:
                # prometheus_client is imported only with `metrics:` on (its import costs startup time)
                from overlayd.status.metrics import registry as metrics_registry

                await self.metrics.start(metrics_registry(view, self.clock))
                view.metrics_server = self.metrics
                log.info("metrics: http://%s/metrics", self.metrics.listen)
            if self.speaker is not None:
                self.bgp = BgpService(self.config, self.speaker, self.clock)
                try:
                    await self.bgp.start()
                except TcpAuthError as err:
                    self.bgp = None
                    raise SetupError(str(err)) from None
                except OSError as err:
                    self.bgp = None
                    raise SetupError(
                        f"bgp.listen: cannot listen on port {self.config.bgp.port}: {err.strerror or err}"
                    ) from None
                view.after_change = self.bgp.kick  # `clear` changed the speaker: send what follows
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.stop)
            loop.add_signal_handler(signal.SIGHUP, self.reload_soon)
            for vni, tap in self.taps.items():
                if tap.fd in self.trunks:  # one reader for all the VLANs of a trunk
                    loop.add_reader(tap.fd, self.plainpath.tap_readable, vni, tap.fd, self.trunks[tap.fd])
                else:
                    loop.add_reader(tap.fd, (self.fastpath or self.plainpath).tap_readable,
                                    vni, tap.fd)
            if self.sockets is not None:
                loop.add_reader(self.sockets.rx.fileno(),
                                (self.fastpath or self.plainpath).udp_readable)
            if self.kernel is not None:
                self.kernel.watch(loop)
                await self.kernel.step()
            if self.routed is not None:
                loop.add_reader(self.routed.fd, self.routed.readable, self.sockets.tx, self.switch.counters)
            log.info("ready; status socket %s", self.config.node.status_socket)
            notify(f"READY=1\nSTATUS=serving; status socket {self.config.node.status_socket}")
            tick = loop.create_task(self._tick())
            if self.services is not None:
                self._services_task = loop.create_task(self.services.run())
            await self._stopping.wait()
            tick.cancel()
            for task in self._reloads:
                task.cancel()
            if self._services_task is not None:
                self._services_task.cancel()
                await self.services.close()
            log.info("stopping")
            notify("STOPPING=1")
        finally:
            # A second SIGTERM/SIGINT while cleaning up only sets the event again: the
            # handlers stay until everything is removed.
            for tap in self.taps.values():
                loop.remove_reader(tap.fd)
            if self.routed is not None and self.routed.tap is not None:
                loop.remove_reader(self.routed.fd)
            if self.sockets is not None:
                loop.remove_reader(self.sockets.rx.fileno())
            # node.on_stop: keep, on a stop (not a failed start): the kernel goes on forwarding,
            # and peers that help with graceful restart keep our routes until we are back.
            keep = self.config.node.on_stop == "keep" and self._stopping.is_set()
            if self.bgp is not None:
                await self.bgp.close(graceful=keep and self.speaker.restart_time_s is not None)
            if self.status is not None:
                await self.status.close()
            await self._close_metrics()
            kept = keep and self.kernel is not None
            await self._close_kernel(keep=keep)
            self.close()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            if kept:
                log.info("stopped; status socket and metrics endpoint closed, the kernel backends left forwarding "
                         "(node.on_stop: keep)")
            else:
                log.info("stopped; devices, kernel entries, status socket and metrics endpoint removed")

    def stop(self) -> None:
        self._stopping.set()

    # -- reloading the config (SIGHUP) ------------------------------------------

    def reload_soon(self) -> None:
        """SIGHUP: reload the config file in a task of its own."""
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> tuple[bool, str]:
        """Read the config file again and apply what changed: (applied, what happened).

        What did not change carries on untouched (sessions, devices, flows). A file that does
        not load, or that changes what only a restart can change (config/reload.py), is refused
        as a whole, with the reason logged: the running config stays.
        """
        if self.config_path is None:
            return False, "reload refused: the daemon was started without a config file"
        async with self._reload_lock:
            try:
                new = load_config(self.config_path, interface_address)
            except ConfigError as err:
                why = "; ".join(line.strip() for line in str(err).splitlines() if line.strip())
                return self._refuse(why if self.config_path in why else f"{self.config_path}: {why}")
            plan = reload_plan(self.config, new)
            if plan.restart_needed:
                return self._refuse("these keys change only with a restart: " + ", ".join(plan.restart_needed))
            for role, dm in device_macs(new).items():
                self.device_macs.setdefault(role, dm)
            opened: list[tuple[NetworkConfig, Tap, int, bytes]] = []
            try:
                async with Netlink() as nl:
                    for net in plan.networks_added:
                        if await nl.link_exists(net.device):
                            raise SetupError(f"networks[{new.networks.index(net)}].device: {net.device} already exists")
                        opened.append((net, *await self._open_tap(nl, new.networks.index(net), net)))
                        if self.offloads.tso and not enable_tap_tso(opened[-1][1].fd):
                            raise SetupError(f"networks[{new.networks.index(net)}].device: the TAP refuses TSO, "
                                             f"which the others use")
            except (SetupError, OSError) as err:
                for _, tap, _, _ in opened:
                    tap.close()
                return self._refuse(str(err))
            self._apply(plan, new, opened)
            what = plan.describe()
            self.events.emit("reload_applied", f"reload: {self.config_path} applied: {what}", config=self.config_path,
                             changes=what)
            return True, what

    async def _reload_command(self) -> dict:
        """`overlayctl reload`: as SIGHUP, with the outcome in the reply."""
        applied, what = await self.reload()
        if not applied:
            raise StatusError("reload_refused", what)
        return {"reloaded": self.config_path, "changes": what}

    def _refuse(self, why: str) -> tuple[bool, str]:
        self.events.emit("reload_refused", f"reload refused, the running config stays: {why}", reason=why,
                         config=self.config_path)
        return False, f"reload refused: {why}"

    def _apply(self, plan: ReloadPlan, new: Config, opened: list) -> None:
        """Apply a checked plan; nothing here can fail half-way (the TAPs are open already)."""
        loop = asyncio.get_running_loop()
        now = self.clock()
        old, self.config = self.config, new
        for holder in (self.status_view, self.bgp, self.kernel, self.services):
            if holder is not None:
                holder.config = new
        for net in plan.networks_removed:
            vni = net.vni
            tap = self.taps.pop(vni)
            loop.remove_reader(tap.fd)
            self.fds.pop(vni, None)
            if self.fastpath is not None:
                self.fastpath.fds.pop(vni, None)
                self.fastpath.tap_fds.pop(vni, None)
            if self.speaker is not None:
                self.speaker.remove_network(new, vni, now)
            self.switch.remove_segment(vni)
            self._log_events()  # the speaker and the log hear of what left while the VNI is known
            tap.close()
            self.mtus.pop(vni, None)
            self._announce.pop(vni, None)
            self.device_macs.pop(f"network {net.name}", None)
            log.info("network %s: vni %d removed, %s closed", net.name, vni, net.device)
        for net, tap, mtu, mac in opened:
            self._stack.callback(tap.close)
            self._add_tap(net, tap, mtu, mac)
            self._apply_static(net, None, now)
            if self.speaker is not None:
                self.speaker.add_network(new, net.vni, now)
            loop.add_reader(tap.fd, (self.fastpath or self.plainpath).tap_readable,
                            net.vni, tap.fd)
            self._log_network(net)
        for was, net in plan.networks_changed:
            self._apply_static(net, was, now)
        if self.bgp is not None:
            for address in plan.neighbors_removed:
                self.bgp.remove_neighbor(address)
            for nb in plan.neighbors_added:
                self.bgp.add_neighbor(nb)
        if plan.services_changed:
            self._reload_services(new)
        del old

    def _attach_service_path(self) -> None:
        """The userspace routed path rewrites packets to VIPs itself."""
        assert self.services is not None and self.routed is not None
        path = ServicePath(self.services.table, self.services.conntrack, self.config.services_network, (),
                           self.switch.counters, emit=lambda packet: None)
        self.routed.router.attach_services(path)
        self.services.path = path

    def _reload_services(self, new: Config) -> None:
        if self.services is None:
            self.services = Services(new, self.clock)
            if self.routed is not None:
                self._attach_service_path()
            if self.kernel is not None:
                self.kernel.services = self.services.table
            if self.status_view is not None:
                self.status_view.services_runtime = self.services
            self._services_task = asyncio.get_running_loop().create_task(self.services.run())
        self.services.load()

    async def _tick(self) -> None:
        """Age the tables every AGING_TICK_S; hand table changes on every EVENTS_TICK_S."""
        next_aging = self.clock() + AGING_TICK_S
        next_route_check = self.clock() + 1.0
        next_vtep_check = self.clock() + VTEP_CHECK_S
        while True:
            tick = EVENTS_TICK_S if self.bgp is not None else AGING_TICK_S
            if self.switch.events or self._announce:  # an announcement is due before the next tick
                tick = min(tick, ANNOUNCE_DELAY_S)
            await asyncio.sleep(tick)
            if self.clock() >= next_aging:
                self.switch.expire(self.clock())
                next_aging += AGING_TICK_S
            if self.switch.events:
                self._log_events()
            self.events.limits(self.clock(), {seg.name: self.switch.refused(seg.vni)
                                              for seg in self.switch.segments()})
            if self.routed is not None:
                moved = self.speaker is not None and self.speaker.subnet_moves
                if moved or self.clock() >= next_route_check:
                    next_route_check = self.clock() + ROUTE_CHECK_S
                    async with Netlink() as nl:
                        await self.routed.follow_moves(nl)
                        await self.routed.check_local_routes(nl)
            if self.kernel is not None:
                self.kernel.follow_moves()
                await self.kernel.step()
            if self._announce:
                self._announce_addresses()
            if self.config.node.vtep_interface is not None and self.clock() >= next_vtep_check:
                next_vtep_check = self.clock() + VTEP_CHECK_S
                await self._check_vtep_interface()
            if self.routed is not None and self.routed.router is not None and self.routed.router.replies:
                self.routed.flush_replies()  # resets the service path sent outside a read

    async def _check_vtep_interface(self) -> None:
        """node.vtep_interface's addresses changed? Say so (log, status); the VTEP stays until a
        restart binds again."""
        node = self.config.node
        async with Netlink() as nl:
            now = await nl.global_addresses(node.vtep_interface, node.family)
        shown = None if node.vtep in now else [str(a) for a in now]
        if shown != self.status_view.vtep_interface_now:
            if shown is None:
                log.info("node.vtep_interface %s: holds %s again", node.vtep_interface, node.vtep)
            else:
                log.warning("node.vtep_interface %s: its addresses are now %s, not %s; the VTEP stays %s "
                            "until a restart", node.vtep_interface, ", ".join(shown) or "none", node.vtep, node.vtep)
            self.status_view.vtep_interface_now = shown

    def _announce_addresses(self) -> None:
        """A gratuitous ARP and an unsolicited neighbour advertisement for each TAP address whose
        network's flood list grew: its neighbours' caches get its (stable) MAC at once."""
        now = self.clock()
        for vni in [v for v, due in self._announce.items() if due <= now]:
            del self._announce[vni]
            net = next(n for n in self.config.networks if n.vni == vni)
            if net.address is None or self.sockets is None:
                continue
            mac = self.device_macs[f"network {net.name}"].mac
            ip = net.address.ip
            frame = gratuitous_frame(mac, ip) if ip.version == 4 else unsolicited_advertisement_frame(mac, ip)
            egress = self.switch.from_tap(vni, frame, now)
            if egress is None:
                continue
            header, targets, flow = egress
            tx = self.sockets.tx[flow % len(self.sockets.tx)]
            for addr in targets:
                with contextlib.suppress(OSError):
                    tx.sendmsg((header, frame), (), 0, addr)
            log.debug("network %s: announced %s at %s to %d VTEP(s)", net.name, ip, mac_str(mac), len(targets))

    def _log_events(self) -> None:
        events = self.switch.pop_events()
        self.events.fabric(events)
        if self.kernel is not None and events:
            self.kernel.segment_events(events)
        for event in events:  # a VTEP joined a flood list: tell it where our TAP's addresses are
            if isinstance(event, FloodMemberAdded) and event.vni in self.taps:
                self._announce.setdefault(event.vni, self.clock() + ANNOUNCE_DELAY_S)
        if self.bgp is not None and events:
            self.bgp.local_events(events)


def device_macs(cfg: Config) -> dict[str, DeviceMac]:
    """Every device's MAC: configured, the router MAC (the routed tap), or derived from the node
    name and the device's role so that it is the same at every start (fabric/macs.py)."""
    devices: list[tuple[str, bytes | None, str]] = []
    aliases: dict[str, str] = {}  # a trunk's VLANs share its device's MAC
    for net in cfg.networks:
        if net.trunk is not None:
            aliases[f"network {net.name}"] = f"network {net.trunk}"
            if any(role == f"network {net.trunk}" for role, _, _ in devices):
                continue
            devices.append((f"network {net.trunk}", parse_mac(net.mac) if net.mac else None, "config"))
            continue
        devices.append((f"network {net.name}", parse_mac(net.mac) if net.mac else None, "config"))
        if net.backend == "kernel":
            devices.append((f"vxlan {net.name}", None, "derived"))
    taken = [parse_mac(e.mac) for net in cfg.networks for e in net.fdb]
    r = cfg.routing
    if r is not None:
        router = parse_mac(r.router_mac) if r.router_mac else default_router_mac(cfg.router_id)
        taken.append(router)
        if r.backend == "userspace" and r.device_type == "tap":
            devices.append(("routing", parse_mac(r.mac) if r.mac else router, "config" if r.mac else "router"))
    macs = plan_macs(cfg.node.name, devices, taken)
    for member, trunk in aliases.items():
        macs[member] = macs[trunk]
    return macs


def run(config: Config, config_path: str | None = None) -> None:
    """Run a Daemon for `config` in a new event loop until it stops (the `overlayd` command);
    SIGHUP reads `config_path` again."""
    asyncio.run(Daemon(config, config_path=config_path).run())
