"""What the data plane counts: frames and bytes each way, and one counter per drop reason.

`tx` is the direction TAP -> VXLAN, `rx` is VXLAN -> TAP.
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
    "rx_gro_superframes": "TCP super-frames written to TAP devices, each coalesced from several rx_frames",
}


class Counters:
    """Plain integer attributes, cheap to bump on the hot path."""

    __slots__ = tuple(COUNTERS)

    def __init__(self) -> None:
        for name in COUNTERS:
            setattr(self, name, 0)

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTERS}
