"""fabric.services: the service table keeps what did not change, and picks by Maglev or affinity."""

from __future__ import annotations

import ipaddress
from types import SimpleNamespace

from overlayd.fabric.services import ServiceAdded, ServiceChanged, ServiceRemoved, ServiceTable

VIP = ipaddress.ip_address("10.96.0.10")


def spec(name="web", port=80, backends=("10.244.1.5:8080", "10.244.2.7:8080"), **kw):
    base = dict(name=name, vip=VIP, port=port, protocol="tcp", backends=tuple(backends), affinity="none",
                affinity_timeout=10.0, maglev_table_size=251)
    base.update(kw)
    return SimpleNamespace(**base)


def test_replace_returns_what_changed_and_keeps_the_rest():
    t = ServiceTable()
    (added,) = t.replace([spec()])
    assert isinstance(added, ServiceAdded) and t.version == 1
    web = t.lookup(6, VIP.packed, 80)
    assert web is added.service and web.healthy == {"10.244.1.5:8080", "10.244.2.7:8080"}
    t.set_health("web", "10.244.2.7:8080", False)
    assert t.replace([spec()]) == [] and t.lookup(6, VIP.packed, 80) is web  # unchanged: same object, health kept
    (changed,) = t.replace([spec(backends=("10.244.2.7:8080", "10.244.3.9:8080"))])
    assert isinstance(changed, ServiceChanged) and changed.gone == ("10.244.1.5:8080",)
    # the backend it still has keeps its verdict (down); the new one starts healthy
    assert changed.new.healthy == {"10.244.3.9:8080"}
    (removed, added) = t.replace([spec(name="dns", port=53, protocol="udp")])
    assert isinstance(removed, ServiceRemoved) and isinstance(added, ServiceAdded)
    assert t.lookup(6, VIP.packed, 80) is None and t.lookup(17, VIP.packed, 53) is not None


def test_maglev_spreads_new_flows_and_skips_unhealthy_backends():
    t = ServiceTable()
    t.replace([spec(backends=[f"10.244.{i}.5:80" for i in range(1, 4)])])
    web = t.get("web")
    picked = [web.pick(h * 2654435761 % 2**32, b"\x0a\xf4\x01\x07", 0.0) for h in range(3000)]
    counts = {b: picked.count(b) for b in set(picked)}
    assert len(counts) == 3 and all(800 < c < 1200 for c in counts.values()), counts
    assert t.set_health("web", "10.244.1.5:80", False) and not t.set_health("web", "10.244.1.5:80", False)
    assert all(web.pick(h, b"x", 0.0)[0] != ipaddress.ip_address("10.244.1.5").packed for h in range(500))
    for b in list(web.healthy):
        t.set_health("web", b, False)
    assert web.pick(1, b"x", 0.0) is None and web.rejected == 1


def test_affinity_lasts_its_timeout_and_ends_with_the_backends_health():
    t = ServiceTable()
    t.replace([spec(backends=[f"10.244.{i}.5:80" for i in range(1, 4)], affinity="client-ip")])
    web = t.get("web")
    first = web.pick(1, b"client", 0.0)
    assert all(web.pick(h, b"client", 1.0) == first for h in range(50))
    assert t.expire(100.0) == 1 and web.affinities == 0  # 10 s timeout, refreshed at 1.0
    first = web.pick(1, b"client", 200.0)
    name = next(b for b, e in web.endpoints.items() if e == first)
    t.set_health("web", name, False)
    assert web.affinities == 0 and web.pick(1, b"client", 201.0) != first
