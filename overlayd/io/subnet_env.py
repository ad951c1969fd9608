"""Files other tools read to learn this node's subnet: flannel's
`subnet.env` (so tooling built for flannel works unchanged) and, when
asked, a CNI conflist for the standard `bridge` + `host-local` plugins.

Both are written atomically (temporary file + rename) and removed again on
a clean shutdown.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import tempfile
from pathlib import Path

Network = ipaddress.IPv4Network | ipaddress.IPv6Network



def render_subnet_env(network: Network, subnet: Network, mtu: int, ipmasq: bool,
                      network6: Network | None = None, subnet6: Network | None = None) -> str:
    """The keys flannel writes: FLANNEL_SUBNET is the subnet's first address with its length."""
    lines = [
        f"FLANNEL_NETWORK={network}",
        f"FLANNEL_SUBNET={next(subnet.hosts())}/{subnet.prefixlen}",
    ]
    if network6 is not None and subnet6 is not None:
        lines += [
            f"FLANNEL_IPV6_NETWORK={network6}",
            f"FLANNEL_IPV6_SUBNET={next(subnet6.hosts())}/{subnet6.prefixlen}",
        ]
    lines += [f"FLANNEL_MTU={mtu}", f"FLANNEL_IPMASQ={'true' if ipmasq else 'false'}"]
    return "\n".join(lines) + "\n"


def render_cni_conflist(name: str, bridge: str, subnet: Network, mtu: int,
                        subnet6: Network | None = None, network: Network | None = None) -> str:
    """A conflist giving pods addresses from `subnet` on `bridge`, gateway = the subnet's first address."""
    ranges = [[{"subnet": str(subnet), "gateway": str(next(subnet.hosts()))}]]
    if subnet6 is not None:
        ranges.append([{"subnet": str(subnet6), "gateway": str(next(subnet6.hosts()))}])
    routes = [{"dst": "0.0.0.0/0" if subnet.version == 4 else "::/0"}]
    if subnet6 is not None:
        routes.append({"dst": "::/0"})
    conf = {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": False,
                "mtu": mtu,
                "ipam": {"type": "host-local", "ranges": ranges, "routes": routes},
            }
        ],
    }
    return json.dumps(conf, indent=2) + "\n"


def write_subnet_files(routing, subnets: tuple[Network, ...], mtu: int) -> None:
    """Write `routing.env_file` (and `routing.cni_conflist`, when set) for our current subnets;
    with no subnet of the main family (an exhausted `auto`), remove subnet.env instead."""
    r = routing
    v4 = [s for s in subnets if s.version == r.network.version]
    v6 = [s for s in subnets if s.version == 6 and r.network6 is not None]
    if not v4:
        remove(r.env_file)
        return
    text = render_subnet_env(r.network, v4[0], mtu, r.ipmasq, r.network6, v6[0] if v6 else None)
    write_atomically(r.env_file, text)
    if r.cni_conflist:
        conflist = render_cni_conflist("overlayd", r.cni_bridge, v4[0], mtu, v6[0] if v6 else None)
        write_atomically(r.cni_conflist, conflist)


def write_atomically(path: str | Path, text: str, mode: int = 0o644) -> None:
    """Write `text` to a new file next to `path` and rename it over `path`. The temporary file
    gets an unpredictable name and is created with O_EXCL (tempfile.mkstemp), so a symlink
    planted in a directory others can write to is never followed; the rename replaces `path`
    itself, even if it is a symlink, never its target."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            os.fchmod(f.fileno(), mode)
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove(path: str | Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
