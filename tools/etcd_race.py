"""The lease race against a real etcd: `python -m tools.etcd_race ENDPOINT PREFIX ROUNDS CLAIMERS`.

Each round, CLAIMERS clients (each with its own connection and etcd lease)
try at once to take the same free subnet key with overlayd's transaction
(create only if absent, `io.etcd.EtcdStore.create`). Prints one JSON line:
the number of rounds and, per round, how many claimers won; exits 1 if a
round had other than exactly one winner.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import sys

from overlayd.config.datastore import DatastoreConfig
from overlayd.control.leases import lease_key, own_attrs
from overlayd.io.etcd import EtcdStore


async def race(endpoint: str, prefix: str, rounds: int, claimers: int) -> list[int]:
    config = DatastoreConfig(type="etcd", endpoints=(endpoint,), prefix=prefix, lease_ttl=30)
    stores = [EtcdStore(config) for _ in range(claimers)]
    winners = []
    try:
        for n in range(rounds):
            key = lease_key(config.subnets_prefix, ipaddress.ip_network(f"10.99.{n % 250}.0/24"))
            leases = await asyncio.gather(*(s.grant(30) for s in stores))
            values = [own_attrs("host-gw", f"10.1.{i // 250}.{i % 250 + 1}", 1, b"\x02" * 6).encode()
                      for i in range(claimers)]
            won = await asyncio.gather(*(s.create(key, v, lid) for s, v, lid in zip(stores, values, leases)))
            winners.append(sum(won))
            await asyncio.gather(*(s.revoke(lid) for s, lid in zip(stores, leases)))  # frees the key
    finally:
        for s in stores:
            await s.close()
    return winners


def main() -> int:
    endpoint, prefix, rounds, claimers = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    winners = asyncio.run(race(endpoint, prefix, rounds, claimers))
    print(json.dumps({"rounds": len(winners), "winners": winners}))
    return 0 if all(w == 1 for w in winners) else 1


if __name__ == "__main__":
    sys.exit(main())
