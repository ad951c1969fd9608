"""Issue 13, item 11, against the running kernel: every interface name the kernel refuses is
refused by overlayd's config check too (and "eth%d", which the kernel takes as a template) (overlayd refuses some more; none it accepts is refused
by the kernel). The kernel is asked directly through rtnetlink (pyroute2), not through `ip`,
whose own argument check would answer first for names with white space.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from overlayd.config.fields import ifname_problem
from tests.support import require_netns
from tests.unit.test_config_names import ACCEPTED, KERNEL_REFUSES, OVERLAYD_REFUSES
from tools.lab import Lab

pytestmark = pytest.mark.root

ASK_KERNEL = """
import json, sys
from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
out = {}
with IPRoute() as ipr:
    for name in json.load(sys.stdin):
        try:
            ipr.link("add", ifname=name, kind="bridge")
        except NetlinkError as err:
            out[name] = err.code
            continue
        except Exception as err:  # pyroute2 refusing to encode it
            out[name] = repr(err)
            continue
        index = ipr.link_lookup(ifname=name)
        out[name] = 0 if index else "created under another name"
        for i in index:
            ipr.link("del", index=i)
json.dump(out, sys.stdout)
"""


def test_every_name_the_kernel_refuses_overlayd_refuses():
    require_netns()
    names = [n for n in KERNEL_REFUSES + OVERLAYD_REFUSES + ACCEPTED if "\x00" not in n]
    with Lab() as lab:
        host = lab.add_host("k")
        out = subprocess.run(["ip", "netns", "exec", host.netns, sys.executable, "-c", ASK_KERNEL],
                             input=json.dumps(names), capture_output=True, text=True, timeout=60, check=True)
    kernel = json.loads(out.stdout)
    not_taken = [n for n, result in kernel.items() if result != 0]  # refused, or a template renamed
    missed = [n for n in not_taken if ifname_problem(n) is None]
    assert missed == [], f"the kernel does not take {missed!r} as given, overlayd's check lets them through"
    assert set(not_taken) >= {n for n in KERNEL_REFUSES if "\x00" not in n}, kernel  # the list is honest
    assert all(kernel[n] == 0 for n in ACCEPTED), kernel
    stricter = [n for n in names if kernel[n] == 0 and ifname_problem(n) is not None]
    print(f"\nthe kernel refused (or renamed) {len(not_taken)} of {len(names)} names, overlayd's check all "
          f"of them; overlayd also refuses {len(stricter)} the kernel takes: {stricter!r}")
