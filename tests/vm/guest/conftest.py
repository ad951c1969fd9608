"""Guest tests: they run inside Debian's kernel, booted by tests/vm/test_guest.py.

Run them with `make vm-test` (or `pytest tests/vm`, `-k` to pick), never
directly on the host: outside the guest every test here skips.

A new guest test is a `test_*` function in a `test_*.py` file here: the host
lists it with `pytest --collect-only` and reports it as
`test_guest[<file>::<test>]`. Keep to what the host's kernel cannot do: Python
runs 50-100x slower there (guest.py forks daemons rather than start Pythons).
In the guest:
- you are root in Debian's kernel with its modules (`ip link add ... type
  bond` loads bonding), tun loaded, the repository as the working directory,
  read-only, like the rest of the host's files;
- TMPDIR is /run/overlayd-vm/tmp (tmpfs), so a Lab's files and overlayd's
  status sockets land there (a Unix socket on the 9p-shared /tmp: ENXIO);
- pytest runs without pytest-asyncio and Hypothesis (startup cost): write
  plain synchronous tests;
- CI is passed through, so tests/support.py's require_* fail under CI here too;
- guest.py starts overlayd in lab hosts with the guest's timeouts and queries
  status sockets in-process; `tests.vm.report.note(text)` puts a figure in
  the host's summary of the tier.
"""

from __future__ import annotations

import pytest

from tools.vm import in_guest


@pytest.fixture(autouse=True)
def _inside_the_guest() -> None:
    if not in_guest():
        pytest.skip("a guest test: it runs inside the full-kernel VM (make vm-test)")
