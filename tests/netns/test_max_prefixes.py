"""Max-prefix against a real daemon (issue 13, item 12): two synthetic EVPN speakers
(tools/evpn_load.py `announce`) each send ROUTES type-2 routes to node a, whose limit
for both is LIMIT. The one with `action: warn` stays Established with LIMIT routes
accepted and the rest refused; the one with `action: teardown` gets NOTIFICATION
Cease / Maximum Number of Prefixes Reached, its routes go, and a keeps it Idle for
`restart_s` before connecting again. The figures are printed.
"""

from __future__ import annotations

import json
import sys
import time

import pytest

from tests.netns.topology import add_underlay_host
from tests.support import require_netns
from tools.lab import Lab, wait_for
from tools.nodes import start_overlayd

pytestmark = pytest.mark.root

ASN = 65000
ROUTES = 1000
LIMIT = 500
RESTART_S = 3


def peer_row(node, address: str) -> dict:
    return next(p for p in node.ctl("peers") if p["neighbor"] == address)


def test_warn_refuses_beyond_the_limit_and_teardown_sends_cease_1_then_waits(lab: Lab):
    require_netns()
    a, warn, teardown = (add_underlay_host(lab, name, i + 1, 4) for i, name in enumerate(("a", "w", "t")))
    config = {
        "node": {"vtep": "10.0.0.1"},
        "networks": [{"name": "blue", "vni": 100, "device": "blue0"}],
        "bgp": {"asn": ASN, "hold_time": 9, "connect_retry": 1, "neighbors": [
            {"address": "10.0.0.2", "asn": ASN, "passive": True, "max_prefixes": LIMIT},
            {"address": "10.0.0.3", "asn": ASN, "max_prefixes": {"limit": LIMIT, "action": "teardown",
                                                                  "restart_s": RESTART_S}},
        ]},
    }
    node = start_overlayd(a, config, log_level="info")
    speakers = {}
    for host, address in ((warn, "10.0.0.2"), (teardown, "10.0.0.3")):
        speakers[host.name] = host.popen(sys.executable, "-m", "tools.evpn_load", "announce", "--peer", "10.0.0.1",
                                         "--local", address, "--asn", str(ASN), "--routes", str(ROUTES),
                                         "--vteps", "1", "--hold-time", "9")
    wait_for(lambda: peer_row(node, "10.0.0.2")["prefixes_refused"] >= ROUTES - LIMIT, timeout=20,
             what="the warn peer's routes beyond the limit refused")
    closed = wait_for(lambda: next((json.loads(x) for x in teardown.log(speakers["t"]).splitlines()
                                    if x.startswith("{") and "closed" in x), None),
                      timeout=20, what="node a to close the teardown peer's session")
    w, t = peer_row(node, "10.0.0.2"), peer_row(node, "10.0.0.3")
    status = node.ctl_text("status")
    print(f"\nwarn peer: {w['state']}, {w['routes_received']} routes accepted of {ROUTES}, "
          f"{w['prefixes_refused']} refused (limit {w['max_prefixes']})"
          f"\nteardown peer: sent {closed['notification']!r}; {t['state']}, {t['routes_received']} routes held, "
          f"last error {t['last_error']!r}"
          f"\n{next(x for x in status.splitlines() if x.startswith('bgp max prefixes'))}")
    assert (w["state"], w["routes_received"], w["prefixes_refused"]) == ("Established", LIMIT, ROUTES - LIMIT)
    assert closed["notification"] == "cease/maximum number of prefixes reached"
    assert t["state"] != "Established" and t["routes_received"] == 0 and t["max_prefix_teardowns"] == 1
    assert "maximum number of prefixes" in t["last_error"]
    fdb = node.ctl("fdb")
    assert sum(1 for r in fdb if r["where"] != "local") == LIMIT  # the warn peer's, and none of the other's
    # Idle for restart_s: then a connects again (nothing listens on t: the attempt fails, and is counted)
    wait_for(lambda: "restarting after the max-prefix idle time" in node.log(), timeout=RESTART_S + 5,
             what="node a to start the session again")
    waited = time.monotonic() - closed["closed"]  # CLOCK_MONOTONIC: the same in every process
    print(f"restarted {waited:.1f} s after the teardown (restart_s {RESTART_S}; seen by polling the log)")
    # The idle time runs from the read that crossed the limit; the speaker sees the close only
    # after node a has gone through the rest of that read (up to ~1 s of routes on a busy host).
    assert RESTART_S - 1 <= waited <= RESTART_S + 3
