"""Three overlayd nodes that learn everything from each other over BGP EVPN.

The `bgp_overlay` fixture (conftest.py): hosts a, b, c, an iBGP full mesh in
AS 65000 with hold time 3 s, network blue (VNI 100) with no static flood
list, on an IPv4 and an IPv6 underlay. Each test first brings the overlay to
convergence (`converge()`: sessions up, flood lists full, every pair pinged,
every MAC announced) and asserts what it changes. The last three tests take
node c down (SIGTERM, SIGKILL, SIGSTOP) and start it again afterwards.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.netns.test_three_nodes import PAIRS, delta, ping_many
from tests.netns.topology import ASN, DEVICE, HOLD_TIME_S, VNI, BgpOverlay, overlay_ip, router_id

pytestmark = pytest.mark.root

A, B, C = 0, 1, 2
# Withdrawal deadlines are measured from the signal; the slack covers a loaded
# 2-core machine (a keepalive is up to a third of the hold time old already).
SLACK_S = 2.0
CEASE_DEADLINE_S = HOLD_TIME_S - 1.0  # sooner than any hold timer could (keepalives come every 1 s)
ECHO_REQUEST_BYTES = 14 + 20 + 8 + 56  # Ethernet, IPv4, ICMP, ping's default payload


def wait_gone(overlay: BgpOverlay, victim: int, timeout: float) -> float:
    """Wait until no survivor has anything of `victim` left; return how long that took."""
    vtep, mac = overlay.vtep(victim), overlay.macs[victim]
    survivors = overlay.others(victim)
    start = time.monotonic()
    deadline = start + timeout
    left: dict[str, list] = {}
    while True:
        left = {}
        for i in survivors:
            name = overlay.hosts[i].name
            fdb = [r for r in overlay.query(i, "fdb") if r["mac"] == mac or r["where"] == vtep]
            flood = [v for v in overlay.query(i, "status")["networks"][0]["flood_list"] if v == vtep]
            rib = [r for r in overlay.query(i, "rib") if vtep in (r["next_hop"], r["peer"])]
            if fdb or flood or rib:
                left[name] = fdb + flood + rib
        if not left:
            return time.monotonic() - start
        if time.monotonic() >= deadline:
            pytest.fail(f"after {timeout} s the survivors still have {overlay.hosts[victim].name}'s "
                        f"routes/entries: {left}")
        time.sleep(0.05)


def peer_row(overlay: BgpOverlay, i: int, neighbor: int) -> dict:
    """Node i's `peers` row for `neighbor` (asked directly: overlayctl costs a Python start)."""
    [row] = [r for r in overlay.query(i, "peers") if r["neighbor"] == overlay.vtep(neighbor)]
    return row


def restart_and_converge(overlay: BgpOverlay, i: int) -> None:
    """Start node i again; its TAP has a new MAC, so the kernels' ARP entries for it go."""
    overlay.start(i)
    for host in overlay.hosts:
        host.ip("neigh", "flush", "dev", DEVICE)
    overlay.converge(timeout=30)


# -- control plane ----------------------------------------------------------------------


def test_sessions_establish_and_flood_lists_come_from_type3_routes(bgp_overlay: BgpOverlay):
    bgp_overlay.converge()
    for i, node in enumerate(bgp_overlay.nodes):
        peers = node.ctl("peers")
        assert {p["neighbor"]: (p["asn"], p["state"]) for p in peers} == {
            bgp_overlay.vtep(j): (ASN, "Established") for j in bgp_overlay.others(i)
        }, peers
        assert all(p["end_of_rib_received"] for p in peers), peers
        status = node.ctl("status")
        assert status["bgp"]["asn"] == ASN
        rid = router_id(i) if bgp_overlay.family == 6 else bgp_overlay.vtep(i)
        assert status["bgp"]["router_id"] == rid
        assert status["bgp"]["peers_established"] == 2
        # the config has no `vteps`: the flood list is the others' type-3 routes
        [net] = status["networks"]
        assert sorted(net["flood_list"]) == sorted(bgp_overlay.vtep(j) for j in bgp_overlay.others(i))


def test_macs_are_learned_via_bgp_into_fdb_and_rib(bgp_overlay: BgpOverlay):
    bgp_overlay.converge()
    a = bgp_overlay.nodes[A]
    macs = bgp_overlay.macs
    fdb = {r["mac"]: r for r in a.ctl("fdb")}
    assert set(fdb) == set(macs), fdb
    assert (fdb[macs[A]]["where"], fdb[macs[A]]["learned"]) == ("local", "local")
    for j in (B, C):
        row = fdb[macs[j]]
        assert (row["network"], row["vni"], row["where"], row["learned"]) == (
            "blue", VNI, bgp_overlay.vtep(j), "bgp"), row
    fdb_text = a.ctl_text("fdb")
    for j in (B, C):
        assert any(macs[j] in line and bgp_overlay.vtep(j) in line and "bgp" in line
                   for line in fdb_text.splitlines()), fdb_text

    rib = a.ctl("rib")
    rt = f"{ASN}:{VNI}"
    for j in (B, C):
        vtep = bgp_overlay.vtep(j)
        theirs = [r for r in rib if r["peer"] == vtep]
        macip = {r["ip"]: r for r in theirs if r["type"] == "macip"}
        assert set(macip) == {None, overlay_ip(j)}, theirs  # the MAC alone, and MAC + IP
        for r in macip.values():
            assert (r["mac"], r["vni"], r["label"], r["next_hop"], r["best"]) == (
                macs[j], VNI, VNI, vtep, True), r
            assert rt in r["route_targets"], r
            assert r["esi"] == "0" and r["sequence"] == 0, r
        [imet] = [r for r in theirs if r["type"] == "imet"]
        assert (imet["ip"], imet["next_hop"], imet["vni"], imet["label"], imet["best"]) == (
            vtep, vtep, VNI, VNI, True), imet
        assert rt in imet["route_targets"], imet
    ours = [r for r in rib if r["peer"] == "local"]
    assert {(r["type"], r["mac"], r["ip"]) for r in ours} == {
        ("imet", None, bgp_overlay.vtep(A)), ("macip", macs[A], None), ("macip", macs[A], overlay_ip(A))}
    for row in a.ctl("peers"):  # each peer: its type-3, its MAC, its MAC/IP; ours likewise
        assert (row["routes_received"], row["routes_accepted"], row["routes_sent"]) == (3, 3, 3), row

    peers_text, rib_text = a.ctl_text("peers"), a.ctl_text("rib")
    for j in (B, C):
        assert any(line.startswith(bgp_overlay.vtep(j)) and "Established" in line
                   for line in peers_text.splitlines()), peers_text
        assert any(macs[j] in line and overlay_ip(j) in line for line in rib_text.splitlines()), rib_text
    # for the record (pytest -rP shows it): what the closing note quotes
    print(f"--- overlayctl peers (node a, IPv{bgp_overlay.family} underlay) ---\n{peers_text}")
    print(f"--- overlayctl rib (node a, IPv{bgp_overlay.family} underlay) ---\n{rib_text}")


# -- data plane -----------------------------------------------------------------------------


def test_every_pair_pings(bgp_overlay: BgpOverlay):
    bgp_overlay.converge()
    failed = [(bgp_overlay.hosts[i].name, bgp_overlay.hosts[j].name) for i, j in PAIRS
              if not bgp_overlay.hosts[i].ping(overlay_ip(j))]
    assert not failed, f"no reply over the overlay for {failed}"


def test_unicast_is_never_flooded_after_convergence(bgp_overlay: BgpOverlay):
    bgp_overlay.converge()
    before = bgp_overlay.counters()
    ping_many(bgp_overlay.hosts[A], overlay_ip(B), 50)
    moved = [delta(x, y) for x, y in zip(before, bgp_overlay.counters())]
    assert moved[A].get("tx_flood_frames", 0) == 0, moved[A]
    assert moved[A].get("tx_unknown_unicast_frames", 0) == 0, moved[A]
    assert moved[A].get("tx_arp_flooded", 0) == 0, moved[A]
    assert moved[A].get("tx_unicast_frames", 0) >= 50, moved[A]
    assert moved[A].get("rx_frames", 0) >= 50, moved[A]  # the replies
    assert moved[B].get("rx_frames", 0) >= 50, moved[B]
    assert moved[B].get("tx_flood_frames", 0) == 0, moved[B]
    # None of it reached C. With BGP, a kernel's ARP refresh is answered by its own
    # daemon (suppression), so unlike the static mode nothing at all crosses to C.
    assert moved[C].get("rx_datagrams", 0) == 0, f"C saw traffic between A and B: {moved[C]}"
    assert moved[C].get("rx_frames", 0) == 0, f"C saw traffic between A and B: {moved[C]}"


def test_arp_for_a_remote_binding_is_answered_locally(bgp_overlay: BgpOverlay):
    bgp_overlay.converge()
    a = bgp_overlay.hosts[A]
    a.ip("neigh", "flush", "to", overlay_ip(B), "dev", DEVICE)
    assert not a.json_ip("neigh", "show", overlay_ip(B), "dev", DEVICE)
    before = bgp_overlay.counters()
    assert a.ping(overlay_ip(B))
    moved = [delta(x, y) for x, y in zip(before, bgp_overlay.counters())]
    [neigh] = a.json_ip("neigh", "show", overlay_ip(B), "dev", DEVICE)
    assert neigh["lladdr"] == bgp_overlay.macs[B], neigh  # the answer A's daemon gave
    assert moved[A].get("tx_arp_suppressed", 0) >= 1, moved[A]
    assert moved[A].get("tx_arp_flooded", 0) == 0, moved[A]
    assert moved[A].get("tx_flood_frames", 0) == 0, moved[A]
    # B received the echo request(s), and nothing else: no 42-byte ARP request
    assert moved[B].get("rx_frames", 0) >= 1, moved[B]
    assert moved[B].get("rx_bytes", 0) == ECHO_REQUEST_BYTES * moved[B]["rx_frames"], moved[B]
    assert moved[C].get("rx_datagrams", 0) == 0, f"C received something: {moved[C]}"


# -- a node goes away -------------------------------------------------------------------------


def test_sigterm_sends_cease_and_the_routes_leave_at_once(bgp_overlay: BgpOverlay):
    bgp_overlay.converge()
    node = bgp_overlay.nodes[C]
    node.proc.send_signal(signal.SIGTERM)
    # c sends Cease before it closes anything: no waiting for a hold timer
    gone = wait_gone(bgp_overlay, C, timeout=CEASE_DEADLINE_S)
    assert node.proc.wait(timeout=10) == 0, node.log()  # (a second SIGTERM would kill it)
    for i in (A, B):
        row = peer_row(bgp_overlay, i, C)
        assert row["state"] != "Established", row
        assert "NOTIFICATION" in row["last_error"] and "administrative shutdown" in row["last_error"], row
    print(f"SIGTERM: c's routes were gone after {gone:.2f} s "
          f"(last error on a: {peer_row(bgp_overlay, A, C)['last_error']!r})")
    restart_and_converge(bgp_overlay, C)


def test_sigkill_is_withdrawn_everywhere_within_the_hold_time(bgp_overlay: BgpOverlay):
    bgp_overlay.converge()
    start = time.monotonic()
    bgp_overlay.nodes[C].stop(signal.SIGKILL)
    gone = time.monotonic() - start
    gone += wait_gone(bgp_overlay, C, timeout=HOLD_TIME_S + SLACK_S - gone)
    for i in (A, B):
        row = peer_row(bgp_overlay, i, C)
        assert row["state"] != "Established", row
        assert row["last_error"], row
    print(f"SIGKILL: c's routes were gone after {gone:.2f} s "
          f"(last error on a: {peer_row(bgp_overlay, A, C)['last_error']!r})")
    # what is left still works
    a = bgp_overlay.hosts[A]
    assert a.ping(overlay_ip(B))
    # and c's IP binding went with its routes: nobody answers ARP for a dead host
    a.ip("neigh", "flush", "to", overlay_ip(C), "dev", DEVICE)
    before = bgp_overlay.query(A, "stats")["counters"]
    assert not a.ping(overlay_ip(C), timeout=1)
    moved = delta(before, bgp_overlay.query(A, "stats")["counters"])
    assert moved.get("tx_arp_suppressed", 0) == 0, moved
    assert moved.get("tx_arp_flooded", 0) >= 1, moved
    restart_and_converge(bgp_overlay, C)


def test_a_silent_node_is_withdrawn_by_the_hold_timer(bgp_overlay: BgpOverlay):
    """SIGSTOP: c's TCP connections stay open but it sends nothing; the hold timers expire."""
    bgp_overlay.converge()
    proc = bgp_overlay.nodes[C].proc
    proc.send_signal(signal.SIGSTOP)
    try:
        gone = wait_gone(bgp_overlay, C, timeout=HOLD_TIME_S + SLACK_S)
        for i in (A, B):
            row = peer_row(bgp_overlay, i, C)
            assert row["state"] != "Established", row
            assert "hold timer expired" in row["last_error"], row
        print(f"SIGSTOP: c's routes were gone after {gone:.2f} s "
              f"(last error on a: {peer_row(bgp_overlay, A, C)['last_error']!r})")
    finally:
        proc.send_signal(signal.SIGCONT)
    # woken up, c finds its sessions torn down, reconnects and announces itself again
    bgp_overlay.converge(timeout=30)
