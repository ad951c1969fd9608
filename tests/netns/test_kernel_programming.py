"""The short version of `make bench`'s kernel programming rate: routes from a synthetic EVPN
speaker reach the kernel through the kernel backends, and leave it when withdrawn.

The bench (tools/bench_backends.py, `make bench BENCH_ARGS="--only backends"`) takes 10,000
type-2 and 1,000 type-5 routes; here 2,000 and 200 keep CI short. `programming_rate`
checks with iproute2 that the kernel holds exactly the entries the routes imply (per MAC a
FDB entry of vx100 and one of its bridge; a route, a permanent neighbour and, per router MAC,
a FDB entry on ovl0)
and, after the withdrawal, none of them.
"""

from __future__ import annotations

import pytest

from tests.support import require_netns, require_programs
from tools.bench_backends import programming_rate

pytestmark = pytest.mark.root


def test_routes_reach_the_kernel_and_their_withdrawal_empties_it():
    require_netns()
    require_programs("bridge")
    result = programming_rate(2000, 200, 20, print)
    print(f"kernel programming: {result}")
    assert result["entries"] == 2 * 2000 + 200 + 200 + 20
    assert result["withdraw_s"] < 5.0, result
