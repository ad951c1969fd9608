"""What a reloaded config changes, and whether a running daemon can take it (SIGHUP).

    plan = reload_plan(running, reloaded)
    if plan.restart_needed:      # keys a running daemon cannot change: refuse the whole reload
        ...
    plan.neighbors_added, plan.neighbors_removed, plan.networks_added, ...

Live: the neighbor list (a neighbor whose settings changed gets a new session;
one whose description alone changed keeps its session), userspace networks
coming and going, every network's static `vteps` and `fdb`, and the services
(`services`, `services_file`). Everything else — `node`, the speaker's own
`bgp` settings, `routing`, `services_network`, `conntrack`, `metrics`, a kernel segment
coming or going, a network whose VNI, device, address, MAC, MTU, route target
or backend changed, the set of unicast families the neighbors carry — needs a
restart; the plan names each such key, and the daemon then applies nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from overlayd.config import Config, NeighborConfig, NetworkConfig

LIVE_NETWORK_KEYS = frozenset({"vteps", "fdb"})  # a network's keys a reload changes in place
LIVE_NEIGHBOR_KEYS = frozenset({"description"})  # a neighbor's keys that keep its session


@dataclass
class ReloadPlan:
    neighbors_added: list[NeighborConfig] = field(default_factory=list)
    neighbors_removed: list[str] = field(default_factory=list)  # addresses
    networks_added: list[NetworkConfig] = field(default_factory=list)
    networks_removed: list[NetworkConfig] = field(default_factory=list)
    networks_changed: list[tuple[NetworkConfig, NetworkConfig]] = field(default_factory=list)  # (was, now)
    services_changed: bool = False
    restart_needed: list[str] = field(default_factory=list)  # the keys, as the config spells them

    @property
    def empty(self) -> bool:
        return not (self.neighbors_added or self.neighbors_removed or self.networks_added
                    or self.networks_removed or self.networks_changed or self.services_changed)

    def describe(self) -> str:
        parts = []
        if self.neighbors_removed:
            parts.append("neighbors - " + ", ".join(self.neighbors_removed))
        if self.neighbors_added:
            parts.append("neighbors + " + ", ".join(str(nb.address) for nb in self.neighbors_added))
        if self.networks_removed:
            parts.append("networks - " + ", ".join(n.name for n in self.networks_removed))
        if self.networks_added:
            parts.append("networks + " + ", ".join(n.name for n in self.networks_added))
        if self.networks_changed:
            parts.append("static vteps/fdb of " + ", ".join(now.name for _, now in self.networks_changed))
        if self.services_changed:
            parts.append("services")
        return "; ".join(parts) or "nothing changed"


def _changed(old, new, prefix: str, live: frozenset[str] = frozenset()) -> list[str]:
    """The keys of pydantic models `old` and `new` that differ (outside `live`), as `prefix.key`."""
    return [f"{prefix}.{k}" for k in type(new).model_fields if k not in live and getattr(old, k) != getattr(new, k)]


def _unicast_families(config: Config) -> set[str]:
    assert config.bgp is not None
    return {f for nb in config.bgp.neighbors for f in nb.families if f != "evpn"}


def reload_plan(old: Config, new: Config) -> ReloadPlan:
    plan = ReloadPlan()
    need = plan.restart_needed
    need += _changed(old.node, new.node, "node")
    if (old.bgp is None) != (new.bgp is None):
        need.append("bgp")
    elif old.bgp is not None and new.bgp is not None:
        need += _changed(old.bgp, new.bgp, "bgp", live=frozenset({"neighbors"}))
        if _unicast_families(old) != _unicast_families(new):
            need.append("bgp.neighbors[].families (the unicast families carried)")
        before = {str(nb.address): nb for nb in old.bgp.neighbors}
        after = {str(nb.address): nb for nb in new.bgp.neighbors}
        for address, nb in before.items():
            if address not in after or _changed(nb, after[address], "", LIVE_NEIGHBOR_KEYS):
                plan.neighbors_removed.append(address)
        for address, nb in after.items():
            if address not in before or _changed(before[address], nb, "", LIVE_NEIGHBOR_KEYS):
                plan.neighbors_added.append(nb)
    if old.routing != new.routing:
        need += _changed(old.routing, new.routing, "routing") if old.routing and new.routing else ["routing"]
    for key in ("services_network", "conntrack", "metrics"):
        if getattr(old, key) != getattr(new, key):
            need.append(key)
    plan.services_changed = (old.services, old.services_file) != (new.services, new.services_file)
    before_nets = {n.name: n for n in old.networks}
    after_nets = {n.name: n for n in new.networks}
    for name, net in before_nets.items():
        if name not in after_nets:
            plan.networks_removed.append(net)
    for name, net in after_nets.items():
        was = before_nets.get(name)
        if was is None:
            plan.networks_added.append(net)
        elif was != net:
            fixed = _changed(was, net, f"networks[{name}]", LIVE_NETWORK_KEYS)
            if fixed:
                need += fixed
            else:
                plan.networks_changed.append((was, net))
    if old.uses_userspace_vxlan() != new.uses_userspace_vxlan():
        need.append("networks (the VXLAN socket of the first or last userspace network opens or closes at start)")
    for net in plan.networks_added + plan.networks_removed:
        if net.backend == "kernel":
            need.append(f"networks[{net.name}] (a kernel segment: added or removed at start only)")
        if net.trunk is not None:
            need.append(f"networks[{net.trunk}].vlans (a VLAN trunk's VLANs: set at start only)")
    return plan
