"""The full-kernel tier: tests/vm/test_guest.py boots Debian's kernel once and runs tests/vm/guest there.

The guest tests only make sense inside that kernel, so a host run does not
collect tests/vm/guest itself: each guest test shows up as a parametrized
`test_guest[...]` instead. Inside the guest (OVERLAYD_VM_GUEST=1) and for the
host's `--collect-only` of the guest tests (OVERLAYD_VM_GUEST=collect) they
are collected as usual.
"""

from __future__ import annotations

import os

import pytest

from tools.vm import GUEST_ENV

collect_ignore = [] if os.environ.get(GUEST_ENV) else ["guest"]

# Filled by test_guest.py's fixture; printed at the end of the run.
TIMINGS: list[str] = []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if TIMINGS:
        terminalreporter.section("full-kernel tier (tests/vm)")
        for line in TIMINGS:
            terminalreporter.write_line(line)
