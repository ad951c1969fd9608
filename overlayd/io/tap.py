"""TAP (and TUN) devices through python-pytun: created exclusively, non-persistent,
non-blocking. Closing the file descriptor removes the device, and so does
the kernel if the daemon dies."""

from __future__ import annotations

import os

import pytun


class TapExistsError(OSError):
    """The device name is taken by an interface overlayd did not create."""


class Tap:
    def __init__(self, name: str, vnet_hdr: bool = False, tun: bool = False):
        """`vnet_hdr`: every frame read or written starts with a virtio-net header (IFF_VNET_HDR).
        `tun`: a TUN device instead, carrying IP packets without an Ethernet header."""
        flags = (pytun.IFF_TUN if tun else pytun.IFF_TAP) | pytun.IFF_NO_PI | pytun.IFF_TUN_EXCL
        if vnet_hdr:
            flags |= pytun.IFF_VNET_HDR
        try:
            self._dev = pytun.TunTapDevice(name=name, flags=flags)
        except pytun.Error as err:
            code = err.args[0] if err.args and isinstance(err.args[0], int) else 0
            if code in (16, 17):  # EBUSY, EEXIST
                raise TapExistsError(code, f"device {name} already exists") from None
            raise OSError(code, f"cannot create {'TUN' if tun else 'TAP'} device {name}: {err}") from None
        self.name: str = self._dev.name
        self.fd: int = self._dev.fileno()
        self.vnet_hdr = vnet_hdr
        self.tun = tun
        os.set_blocking(self.fd, False)

    def close(self) -> None:
        if self._dev is not None:
            self._dev.close()
            self._dev = None

    def __repr__(self) -> str:
        return f"Tap({self.name!r}, fd={self.fd})"
