"""`routing.ipmasq`: the nftables table that masquerades pod traffic leaving the cluster, without I/O.

flanneld's `--ip-masq` rule, in a table of overlayd's own (`inet overlayd`),
written with nftables' JSON API:

    table inet overlayd {
      chain postrouting {
        type nat hook postrouting priority srcnat; policy accept;
        ip saddr 10.244.1.0/24 ip daddr != { 10.244.0.0/16, 224.0.0.0/4 } masquerade fully-random
        ip6 saddr fd00:244:0:1::/64 ip6 daddr != { fd00:244::/48, ff00::/8 } masquerade fully-random
      }
    }

Traffic between pods (the cluster network), to services (`services_network`)
and to multicast keeps its source; everything else from our pods leaves
with the node's address. `table` is this chain as a part of the table
(`nft.Table`), which the services' part (services.py) joins with
`nft.merge`; `nft.diff` gives the commands from one state to the next.
`ruleset` is the transaction that makes the table with this part alone, as
one transaction (the kernel swaps it atomically, so there is never a moment
without the rule); `delete` removes the table.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from overlayd.kernel import nft

Prefix = ipaddress.IPv4Network | ipaddress.IPv6Network

TABLE = nft.TABLE
CHAIN = "postrouting"
MULTICAST = {4: ipaddress.ip_network("224.0.0.0/4"), 6: ipaddress.ip_network("ff00::/8")}


def _prefix(p: Prefix) -> dict[str, Any]:
    return {"prefix": {"addr": str(p.network_address), "len": p.prefixlen}}


def _rule(subnet: Prefix, keep: list[Prefix]) -> nft.Rule:
    proto = "ip" if subnet.version == 4 else "ip6"
    exempt = sorted({*keep, MULTICAST[subnet.version]}, key=lambda p: (int(p.network_address), p.prefixlen))
    return (
        {"match": {"op": "==", "left": {"payload": {"protocol": proto, "field": "saddr"}}, "right": _prefix(subnet)}},
        {"match": {"op": "!=", "left": {"payload": {"protocol": proto, "field": "daddr"}},
                   "right": {"set": [_prefix(p) for p in exempt]}}},
        {"masquerade": {"flags": ["fully-random"]}},
    )


def table(subnets: Iterable[Prefix], keep_source_to: Iterable[Prefix]) -> nft.Table:
    """ipmasq's part of the table: masquerade traffic from `subnets` to anything outside
    `keep_source_to` (the cluster networks, services_network) and multicast."""
    keep = list(keep_source_to)
    rules = tuple(_rule(subnet, [p for p in keep if p.version == subnet.version]) for subnet in subnets)
    return nft.Table(chains={CHAIN: nft.Chain(rules, nft.Hook("nat", "postrouting", 100))})


def ruleset(subnets: Iterable[Prefix], keep_source_to: Iterable[Prefix]) -> dict[str, Any]:
    """The transaction that makes the table hold ipmasq's chain alone (whatever it held before)."""
    return nft.document(nft.diff(None, table(subnets, keep_source_to)))


def delete() -> dict[str, Any]:
    """The transaction that removes the table (and only it)."""
    return nft.delete()
