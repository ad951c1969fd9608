"""A VLAN trunk's TAP (config/trunk.py): 802.1Q tags in, VNIs out, and back.

Out (TAP -> VXLAN). `Trunk.classify` reads a frame's tag: an 802.1Q tag
(TPID 0x8100) whose VLAN ID the trunk maps gives that VLAN's VNI and the
frame with the tag removed (VXLAN carries untagged frames, RFC 8365 5.1.2);
the priority (PCP) and DEI bits do not take part in the lookup, and a
priority-tagged frame (VLAN ID 0) is an untagged one. An untagged frame
belongs to the native VLAN, when there is one. Refused, each counted:
a VLAN ID the trunk does not map (`tx_drop_vlan_unmapped`), an untagged
frame without a native VLAN (`tx_drop_vlan_untagged`), and a stacked tag,
an 802.1ad S-tag (0x88a8) or a tag inside the 802.1Q tag
(`tx_drop_vlan_stacked`).

In (VXLAN -> TAP). `Trunk.tags` maps each VNI of the trunk but the native
VLAN's to its 4-byte tag (PCP 0), which `tagged` puts after the source MAC.
"""

from __future__ import annotations

import struct

from overlayd.dataplane.counters import Counters

TPID_8021Q = 0x8100
TPID_8021AD = 0x88A8
STACKED = (TPID_8021Q, TPID_8021AD)
TAG_LEN = 4
_TAG = struct.Struct("!HH")


def tag(vid: int, pcp: int = 0) -> bytes:
    """The 802.1Q tag (TPID and TCI) of VLAN `vid` with priority `pcp`."""
    return _TAG.pack(TPID_8021Q, (pcp & 7) << 13 | (vid & 0xFFF))


def tagged(frame: bytes | memoryview, tag_bytes: bytes) -> bytes:
    """`frame` with `tag_bytes` after its source MAC."""
    return b"".join((frame[:12], tag_bytes, frame[12:]))


class Trunk:
    """The VLANs of one TAP: `vlans` maps VLAN ID -> VNI, `native` is the VLAN ID of untagged frames."""

    __slots__ = ("native_vni", "tags", "vni_of")

    def __init__(self, vlans: dict[int, int], native: int | None = None):
        self.vni_of = dict(vlans)
        self.native_vni = vlans[native] if native is not None else None
        self.tags = {vni: tag(vid) for vid, vni in vlans.items() if vid != native}

    def classify(self, frame: bytes | memoryview, counters: Counters) -> tuple[int, bytes | memoryview] | None:
        """(VNI, the frame without its tag) for a frame read from the TAP, or None (counted)."""
        if len(frame) < 14:
            # too short to hold a tag: the switch counts it (a runt) on the native VLAN
            if self.native_vni is None:
                counters.tx_drop_vlan_untagged += 1
                return None
            return self.native_vni, frame
        tpid = frame[12] << 8 | frame[13]
        if tpid == TPID_8021Q:
            if len(frame) < 18:
                counters.tx_drop_runt += 1
                return None
            inner = frame[16] << 8 | frame[17]
            if inner in STACKED:
                counters.tx_drop_vlan_stacked += 1
                return None
            vid = (frame[14] & 0x0F) << 8 | frame[15]
            untagged = b"".join((frame[:12], frame[16:]))
            if vid == 0:  # priority-tagged: the native VLAN's
                if self.native_vni is None:
                    counters.tx_drop_vlan_untagged += 1
                    return None
                return self.native_vni, untagged
            vni = self.vni_of.get(vid)
            if vni is None:
                counters.tx_drop_vlan_unmapped += 1
                return None
            return vni, untagged
        if tpid == TPID_8021AD:
            counters.tx_drop_vlan_stacked += 1
            return None
        if self.native_vni is None:
            counters.tx_drop_vlan_untagged += 1
            return None
        return self.native_vni, frame
