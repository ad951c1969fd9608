"""What a test needs from the machine, said in one line.

    require_root()               the test needs euid 0
    require_programs("gobgpd")   these programs must be on PATH
    require_netns()              root, a working `ip netns`, and /dev/net/tun

An unmet need skips the test on a developer machine. When the environment
variable CI is set (to anything but "", "0" or "false") it fails the test
instead, so a green CI run means every test really ran.

These may also be called at module level, to skip or fail a whole module.
"""

from __future__ import annotations

import functools
import os
import secrets
import shutil
import subprocess

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def unmet(reason: str) -> None:
    """Skip the current test, or fail it under CI."""
    if in_ci():
        pytest.fail(f"{reason} (CI is set, so this fails instead of skipping)", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_root() -> None:
    if os.geteuid() != 0:
        unmet("needs root")


def require_programs(*names: str) -> None:
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        unmet(f"needs programs not found on PATH: {', '.join(missing)}")


def require_netns() -> None:
    require_root()
    require_programs("ip", "sysctl")
    if not os.path.exists("/dev/net/tun"):
        unmet("needs /dev/net/tun")
    problem = _netns_problem()
    if problem:
        unmet(f"`ip netns` is not usable: {problem}")


@functools.cache
def _netns_problem() -> str | None:
    """Create and delete a throwaway namespace once per process; None if that works."""
    name = f"ovlprobe-{secrets.token_hex(3)}"
    add = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    if add.returncode != 0:
        return add.stderr.strip() or f"`ip netns add` exited {add.returncode}"
    return None
