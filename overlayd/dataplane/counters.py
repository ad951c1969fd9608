"""What the data plane counts: frames and bytes each way, and one counter per drop reason.

`tx` is the direction TAP -> VXLAN, `rx` is VXLAN -> TAP (for the routed VNI: the
routing device -> VXLAN and back; those counters have `route` in their names).
"""

from __future__ import annotations

COUNTERS: dict[str, str] = {
    "tx_frames": "frames read from TAP devices",
    "tx_bytes": "bytes of those frames",
    "tx_unicast_frames": "frames sent to the one VTEP the FDB names",
    "tx_flood_frames": "broadcast, multicast and unknown-unicast frames replicated to a flood list",
    "tx_unknown_unicast_frames": "flooded frames whose unicast destination the FDB does not know",
    "tx_datagrams": "VXLAN datagrams handed to the kernel",
    "tx_drop_runt": "frames shorter than an Ethernet header",
    "tx_drop_bad_src_mac": "frames whose source MAC is multicast or all-zero",
    "tx_drop_local_dst": "frames for a MAC that lives on this node",
    "tx_drop_no_flood_list": "frames to flood on a network whose flood list is empty",
    "tx_drop_send_error": "datagrams the kernel refused (buffer full, no route, ...)",
    "tx_drop_flood_rate": "frames to flood beyond their network's flood_rate_pps (broadcast, multicast, "
    "unknown unicast)",
    "learn_refused_fdb_full": "local source MACs not learned nor announced: their network's local FDB "
    "entries are at max_local_macs (the frames are forwarded)",
    "learn_refused_rate": "local source MACs not learned yet: more new MACs a second on the network than "
    "mac_learn_rate_per_s allows (learned once the rate allows, if they still send)",
    "learn_refused_ips": "local IP bindings (snooped ARP / neighbour discovery, or the kernel bridge's) not "
    "made nor announced: the network holds max_local_ips",
    "tx_drop_vlan_unmapped": "frames read from a VLAN trunk's TAP whose VLAN ID its `vlans` does not map",
    "tx_drop_vlan_untagged": "untagged (or priority-tagged) frames read from a VLAN trunk's TAP without "
    "a native_vlan",
    "tx_drop_vlan_stacked": "frames read from a VLAN trunk's TAP with stacked tags (an 802.1ad S-tag, or a tag "
    "inside the 802.1Q tag)",
    "tx_arp_suppressed": "ARP requests and IPv6 neighbour solicitations answered locally from a remote binding",
    "tx_arp_flooded": "ARP requests and neighbour solicitations suppression could not answer, forwarded as usual",
    "tx_tso_superframes": "TCP super-frames (TSO) read from TAP devices and cut into the frames counted above",
    "tx_drop_gso_unsupported": "TSO super-frames the segmenter cannot cut (not untagged TCP over IPv4/IPv6)",
    "rx_datagrams": "UDP datagrams read from the VXLAN port",
    "rx_frames": "inner frames written to TAP devices",
    "rx_bytes": "bytes of those frames",
    "rx_drop_runt": "datagrams too short for a VXLAN header and an inner Ethernet header",
    "rx_drop_i_flag_clear": "VXLAN headers without the I (valid VNI) flag",
    "rx_drop_reserved_bits": "VXLAN headers with reserved bits set",
    "rx_drop_unknown_vni": "datagrams for a VNI no network here uses",
    "rx_drop_unknown_vtep": "datagrams from a VTEP not known for that VNI",
    "rx_drop_bad_src_mac": "inner frames whose source MAC is multicast or all-zero",
    "rx_drop_own_mac": "inner frames whose source MAC is one of our own TAP devices' (a loop)",
    "rx_drop_write_error": "inner frames the TAP device refused",
    "rx_gro_superframes": "TCP or UDP super-frames written to TAP devices, each coalesced from several rx_frames",
    # The routed VNI (dataplane/router.py): tx is routing device -> VXLAN, rx is VXLAN -> routing device.
    "tx_routed_packets": "IP packets from the routing device sent to the VTEP owning their destination subnet",
    "tx_routed_bytes": "bytes of those IP packets (without the device's Ethernet header)",
    "tx_route_drop_runt": "packets shorter than their IP header (tap: frames shorter than the Ethernet header too)",
    "tx_route_drop_not_ip": "packets neither IPv4 nor IPv6 (tun: version nibble; tap: ethertype)",
    "tx_route_drop_bad_version": "tap frames whose IP version disagrees with their ethertype",
    "tx_route_drop_not_router_mac": "tap frames not addressed to the router MAC (multicast, other hosts)",
    "tx_route_drop_no_route": "packets whose destination no subnet in the prefix table covers",
    "tx_route_drop_multicast": "multicast packets on the routing device (IPv6 MLD, say): not routed",
    "tx_route_drop_local": "packets for one of this node's own subnets (the kernel should have kept them)",
    "tx_route_drop_no_router_mac": "packets for a subnet whose route carries no router MAC",
    "tx_route_arp_answered": "ARP requests and neighbour solicitations on a tap routing device answered "
    "with the router MAC",
    "tx_route_arp_ignored": "ARP and neighbour solicitations on a tap routing device not answered "
    "(own subnet, outside the network, probes, replies, malformed)",
    "rx_routed_packets": "IP packets from VXLAN on the routed VNI written to the routing device",
    "rx_routed_bytes": "bytes of those IP packets (without an Ethernet header)",
    "rx_route_drop_unknown_vtep": "routed datagrams from a VTEP no route in the prefix table names",
    "rx_route_drop_runt": "routed datagrams too short for VXLAN, inner Ethernet and IP headers",
    "rx_route_drop_not_router_mac": "routed datagrams whose inner destination MAC is not our router MAC",
    "rx_route_drop_not_ip": "routed datagrams whose inner ethertype is neither IPv4 nor IPv6",
    "rx_route_drop_bad_version": "routed datagrams whose IP version disagrees with the inner ethertype",
    "rx_route_drop_not_local": "routed packets for a destination outside this node's subnets (no transit)",
    # Services in the userspace path (dataplane/services.py).
    "svc_new_flows": "new flows to a VIP that got a backend (service hits)",
    "svc_packets_to_backend": "packets to a VIP rewritten to their flow's backend",
    "svc_packets_from_backend": "backends' replies rewritten to come from the VIP",
    "svc_reject_no_backend": "new flows to a service with no healthy backend, refused (TCP reset / ICMP)",
    "svc_reject_no_service": "packets to a VIP and port no service has, refused (TCP reset / ICMP)",
    "svc_drop_conntrack_full": "new flows dropped: the connection-tracking table is full of live flows",
    "svc_drop_no_snat_port": "new flows to a same-node backend dropped: no source port left on the VIP",
    "svc_drop_not_tcp_udp": "packets to a VIP that are not unfragmented TCP or UDP (a VIP takes only those)",
    "svc_drop_malformed": "packets to a VIP whose IP or TCP/UDP header is malformed",
    "svc_reset_backend_down": "TCP resets sent to clients whose backend failed its health checks",
}


class Counters:
    """Plain integer attributes, cheap to bump on the hot path."""

    __slots__ = tuple(COUNTERS)

    def __init__(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}

    def reset(self) -> None:
        """Every counter back to 0 (`overlayctl clear counters`)."""
        for name in COUNTERS:
            setattr(self, name, 0)
