"""The full-kernel tier, host side: one boot of Debian's kernel runs every guest test.

This host's kernel lacks bonding, 802.1Q VLAN, ipvlan, IPIP, netem and more;
Debian's `linux-image-amd64` has them. The tests that need them live in
tests/vm/guest/ and run there, inside a qemu guest booted by virtme-ng
(tools/vm.py), all in one pytest run in one boot: booting takes 20-55 s and
everything is about 20x slower emulated.

On the host, `pytest --collect-only` lists the guest tests, and each becomes
a `test_guest[<file>::<test>]` here. The module fixture `guest_run` boots the
guest once for the selected ones (`-k` works), and the guest's pytest writes a
JSON line per finished test (tests/vm/report.py) to a directory shared with
the host; each host test passes, fails with the guest's report and captured
output, or skips as its guest test did. A test the guest never reported (a
timeout, a crash) fails with the end of the guest's console.

Without root, vng, qemu, busybox or a kernel image the tests skip, or fail
when CI is set. OVERLAYD_VM_TIMEOUT_S (default 600, the tier's 10 minutes) bounds the whole guest run.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support import unmet
from tests.vm import conftest as vm_conftest
from tools.vm import GUEST_ENV, REPO, GuestResult, Vm, vm_problem

pytestmark = pytest.mark.vm

GUEST_TESTS_DIR = "tests/vm/guest"
TIMEOUT_S = float(os.environ.get("OVERLAYD_VM_TIMEOUT_S", "600"))  # the tier's 10 minutes (DECISIONS)
COLLECT_ERROR = "collect-guest-tests"
# The guest's pytest goes without the plugins no guest test uses (pytest-asyncio, Hypothesis)
# and the cache (the repository is read-only there): every import costs 50-100x the host's.
GUEST_PYTEST_FLAGS = ["-p", "no:cacheprovider", "-p", "no:asyncio", "-p", "no:hypothesispytest",
                      "-W", "ignore::pytest.PytestConfigWarning"]


def _host_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTEST_ADDOPTS"}
    return {**env, **extra}


def collect_guest_tests() -> tuple[list[str], str]:
    """The guest tests' node ids, from `pytest --collect-only` on the host; and its output."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", *GUEST_PYTEST_FLAGS, GUEST_TESTS_DIR],
        cwd=REPO, capture_output=True, text=True, timeout=120, check=False,
        env=_host_env(**{GUEST_ENV: "collect"}))
    ids = [line.strip() for line in result.stdout.splitlines() if line.startswith(GUEST_TESTS_DIR + "/")]
    if result.returncode != 0 or not ids:
        return [], result.stdout + result.stderr
    return ids, ""


GUEST_TESTS, COLLECT_OUTPUT = collect_guest_tests()


@dataclass
class GuestRun:
    """What one boot reported: a record per finished guest test, the console, the timings."""

    result: GuestResult
    records: dict[str, dict] = field(default_factory=dict)
    events: dict[str, dict] = field(default_factory=dict)  # start, collected, finish
    notes: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, result: GuestResult, report: Path) -> GuestRun:
        run = cls(result)
        lines = report.read_text(errors="replace").splitlines() if report.exists() else []
        for line in lines:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a timeout
            if record["event"] == "test":
                run.records[record["nodeid"]] = record
            elif record["event"] == "note":
                run.notes.append(record["text"])
            else:
                run.events[record["event"]] = record
        return run

    def timings(self) -> list[str]:
        r = self.result
        if r.up_s is None:
            return [f"the guest never came up; qemu exited after {r.wall_s:.1f} s"
                    + (" (TIMED OUT)" if r.timed_out else "")]
        lines = [f"boot: the guest was up {r.up_s:.1f} s after vng started "
                 f"(guest uptime {r.guest_uptime_s or 0:.1f} s); qemu exited after {r.wall_s:.1f} s"
                 + (" (TIMED OUT)" if r.timed_out else "")]
        start, collected, finish = (self.events.get(e) for e in ("start", "collected", "finish"))
        up = r.guest_uptime_s or 0.0
        if start:  # guest-clock intervals from the prologue
            lines.append(f"guest pytest: up after {start['uptime'] - up:.1f} s (Python and pytest imports)"
                         + (f", collected after {collected['uptime'] - up:.1f} s" if collected else "")
                         + (f", done after {finish['uptime'] - up:.1f} s" if finish else ", never done"))
        lines += self.notes
        tests_s = sum(rec["duration_s"] for rec in self.records.values())
        lines.append(f"{len(self.records)} guest tests reported, {tests_s:.1f} s in tests"
                     + ("; the slowest:" if self.records else ""))
        for rec in sorted(self.records.values(), key=lambda rec: -rec["duration_s"])[:3]:
            lines.append(f"  {rec['duration_s']:6.1f} s  {rec['outcome']:7}  {rec['nodeid']}")
        return lines

    def check(self, nodeid: str) -> None:
        """Pass, fail or skip as the guest's run of `nodeid` did."""
        record = self.records.get(nodeid)
        if record is None:
            why = ("the guest run timed out" if self.result.timed_out
                   else f"the guest run ended (status {self.result.returncode})")
            pytest.fail(f"{nodeid}: no result from the guest; {why} before it reported.\n"
                        f"--- guest console (end) ---\n{self.result.tail()}", pytrace=False)
        if record["outcome"] == "skipped":
            pytest.skip(f"in the guest: {record['longrepr']}")
        if record["outcome"] == "failed":
            sections = "".join(f"\n--- {title} ---\n{text}" for title, text in record["sections"])
            pytest.fail(f"in the guest ({record['duration_s']:.1f} s):\n{record['longrepr']}{sections}",
                        pytrace=False)


def guest_command(report: Path, nodeids: list[str]) -> str:
    """The guest's pytest run over `nodeids`, reporting to `report`."""
    return shlex.join([sys.executable, "-m", "pytest", *GUEST_PYTEST_FLAGS, "-p", "tests.vm.report",
                       f"--vm-report={report}", "-ra", "-v", *nodeids])


def _precompile() -> None:
    """Byte-compile the repository's Python on the host: the guest cannot write it (read-only)
    and compiling there, emulated, would cost it minutes."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", "overlayd", "tools", "tests"],
                   cwd=REPO, capture_output=True, check=False, env=_host_env(PYTHONDONTWRITEBYTECODE=""))


@pytest.fixture(scope="module")
def guest_run(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> GuestRun:
    """Boot the guest once and run the selected guest tests in it."""
    problem = vm_problem()
    if problem:
        unmet(f"full-kernel tier: {problem}")
    selected = [item.callspec.params["guest_test"] for item in request.session.items
                if item.module is request.module and hasattr(item, "callspec")]
    shared = tmp_path_factory.mktemp("vm")
    report = shared / "report.jsonl"
    _precompile()
    start = time.monotonic()
    result = Vm().run(guest_command(report, selected), timeout=TIMEOUT_S,
                      log=shared / "console.log", workdir=shared)
    run = GuestRun.read(result, report)
    vm_conftest.TIMINGS[:] = [*run.timings(),
                              (f"the guest run took {time.monotonic() - start:.1f} s on the host "
                               f"(console: {shared / 'console.log'})")]
    print("\n".join(vm_conftest.TIMINGS))
    return run


@pytest.mark.parametrize("guest_test", GUEST_TESTS or [COLLECT_ERROR],
                         ids=[t.removeprefix(GUEST_TESTS_DIR + "/") for t in GUEST_TESTS] or [COLLECT_ERROR])
def test_guest(guest_test: str, request: pytest.FixtureRequest) -> None:
    if guest_test == COLLECT_ERROR:
        pytest.fail(f"`pytest --collect-only {GUEST_TESTS_DIR}` on the host failed:\n{COLLECT_OUTPUT}",
                    pytrace=False)
    request.getfixturevalue("guest_run").check(guest_test)
