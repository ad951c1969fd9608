"""overlayd: a userspace overlay router (TAP <-> VXLAN, tables learned locally and over BGP EVPN)."""

__version__ = "0.1.0"
