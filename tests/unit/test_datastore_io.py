"""io/datastore.py's Datastore against an in-memory etcd (no network): start, race, outage, lost lease."""

import asyncio
import ipaddress
import json

import pytest

from overlayd.config import parse_config
from overlayd.control.leases import LeaseAttrs
from overlayd.io.datastore import Datastore, DatastoreError
from overlayd.io.etcd import EtcdUnavailable, KeyValue

PREFIX = "/coreos.com/network"
SUBNETS = PREFIX + "/subnets/"
NET = {"Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "vxlan"}}


class FakeEtcd:
    """Keys with leases and revisions; `down` makes every call fail; `before_create` runs first."""

    def __init__(self):
        self.kv: dict[str, KeyValue] = {}
        self.leases: dict[int, set[str]] = {}
        self.revision = 1
        self.next_lease = 100
        self.down = False
        self.before_create = None
        self.endpoint = "fake:2379"

    def _check(self):
        if self.down:
            raise EtcdUnavailable("fake: down")

    def put(self, key, value, lease=0):
        self.revision += 1
        self.kv[key] = KeyValue(key, value if isinstance(value, bytes) else value.encode(), self.revision, lease)
        if lease:
            self.leases[lease].add(key)

    def expire(self, lease):
        for key in self.leases.pop(lease, ()):
            if key in self.kv and self.kv[key].lease == lease:
                del self.kv[key]

    async def get(self, key):
        self._check()
        return self.kv.get(key)

    async def get_prefix(self, prefix):
        self._check()
        return [kv for k, kv in sorted(self.kv.items()) if k.startswith(prefix)], self.revision

    async def grant(self, ttl):
        self._check()
        self.next_lease += 1
        self.leases[self.next_lease] = set()
        return self.next_lease

    async def refresh(self, lease_id):
        self._check()
        return 10 if lease_id in self.leases else 0

    async def revoke(self, lease_id):
        self._check()
        self.expire(lease_id)

    async def create(self, key, value, lease_id):
        self._check()
        if self.before_create is not None:
            hook, self.before_create = self.before_create, None
            hook(key)
        if key in self.kv:
            return False
        self.put(key, value, lease_id)
        return True

    async def replace(self, key, value, lease_id, mod_revision):
        self._check()
        if key not in self.kv or self.kv[key].mod_revision != mod_revision:
            return False
        self.put(key, value, lease_id)
        return True

    async def watch(self, prefix, start):
        await asyncio.sleep(3600)
        yield  # pragma: no cover

    async def close(self):
        pass


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def make(etcd, clock, vtep="10.0.0.1"):
    cfg = parse_config({"node": {"vtep": vtep}, "datastore": {"type": "etcd", "endpoints": ["fake:2379"],
                                                            "lease_ttl": 30}})
    ds = Datastore(cfg, clock)
    ds.store = etcd
    return ds


def other(ip):
    return LeaseAttrs(ipaddress.IPv4Address(ip), "vxlan", 1, "02:00:00:00:00:09").encode()


@pytest.fixture
def etcd():
    e = FakeEtcd()
    e.put(PREFIX + "/config", json.dumps(NET))
    return e


async def test_start_takes_a_subnet_and_a_restart_keeps_it(etcd):
    clock = Clock()
    first = await make(etcd, clock).start()
    subnet = first.routing.subnet
    key = f"{SUBNETS}{subnet.network_address}-24"
    value = json.loads(etcd.kv[key].value)
    assert value["PublicIP"] == "10.0.0.1" and value["BackendData"]["VtepMAC"] == "02:00:0a:00:00:01"
    again = await make(etcd, clock).start()  # same PublicIP: the same lease, rewritten
    assert again.routing.subnet == subnet and len([k for k in etcd.kv if k.startswith(SUBNETS)]) == 1


async def test_a_lost_race_picks_another_subnet(etcd):
    etcd.before_create = lambda key: etcd.put(key, other("10.0.0.7"), 0)  # someone else is first
    cfg = await make(etcd, Clock()).start()
    mine = [k for k, kv in etcd.kv.items() if k.startswith(SUBNETS) and b"10.0.0.1" in kv.value]
    assert len(mine) == 1 and mine[0] == f"{SUBNETS}{cfg.routing.subnet.network_address}-24"


async def test_a_bad_network_config_names_the_key(etcd):
    etcd.put(PREFIX + "/config", json.dumps({**NET, "Network": "10.244.0.0/33"}))
    with pytest.raises(DatastoreError, match=PREFIX + "/config: Network"):
        await make(etcd, Clock()).start()


async def test_outage_then_renewal_resumes_and_an_expired_lease_is_taken_again(etcd):
    clock = Clock()
    ds = make(etcd, clock)
    await ds.start()
    key, lease = ds.key, ds.lease_id
    etcd.down = True
    clock.t += 10
    await ds._renew()
    assert ds.state == "unavailable" and ds.since == clock.t
    etcd.expire(lease)  # the TTL ran out meanwhile
    etcd.down = False
    clock.t += 30
    await ds._renew()
    assert ds.state == "available" and ds.key == key and etcd.kv[key].lease == ds.lease_id != lease


async def test_a_lease_lost_while_away_moves_the_node(etcd):
    clock = Clock()
    ds = make(etcd, clock)
    await ds.start()
    old = ds.subnet
    moved = []
    ds.on_move = moved.append
    etcd.expire(ds.lease_id)
    etcd.put(ds.key, other("10.0.0.99"), 0)  # another node took it
    await ds._renew()
    assert moved == [ds.subnet] and ds.subnet != old and ds.state == "available"
    assert json.loads(etcd.kv[ds.key].value)["PublicIP"] == "10.0.0.1"
    assert "taken by 10.0.0.99" in ds.summary(clock())["alarms"][0]


async def test_watch_resumes_from_the_next_revision_and_a_compacted_one_reads_everything(etcd):
    from overlayd.fabric.prefixes import PrefixTable
    from overlayd.io.etcd import Compacted, WatchEvent

    clock = Clock()
    ds = make(etcd, clock)
    await ds.start()
    table = PrefixTable()
    await ds.attach(table)
    starts = []

    async def watch(prefix, start):
        starts.append(start)
        if len(starts) == 1:  # a change, then the stream breaks
            etcd.put(SUBNETS + "10.244.200.0-24", other("10.0.0.5"))
            yield WatchEvent("PUT", SUBNETS + "10.244.200.0-24", other("10.0.0.5"), etcd.revision)
            raise EtcdUnavailable("stream broke")
        if len(starts) == 2:  # meanwhile compacted; and a lease came that no event will tell
            etcd.put(SUBNETS + "10.244.201.0-24", other("10.0.0.6"))
            raise Compacted()
        await asyncio.sleep(3600)
        yield  # pragma: no cover

    etcd.watch = watch
    task = asyncio.get_running_loop().create_task(ds._watch())
    for _ in range(40):
        await asyncio.sleep(0.1)
        if len(starts) >= 3:
            break
    task.cancel()
    assert starts[1] == starts[0] + 1  # resumed after the revision seen
    assert table.lookup(ipaddress.ip_address("10.244.200.1").packed).vtep == "10.0.0.5"
    assert table.lookup(ipaddress.ip_address("10.244.201.1").packed).vtep == "10.0.0.6"  # from the re-read
