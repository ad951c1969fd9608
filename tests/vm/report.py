"""A pytest plugin for the guest's run: one JSON line per finished test, written as it finishes.

    python -m pytest -p tests.vm.report --vm-report=/shared/report.jsonl tests/vm/guest

Lines, in order (each with `uptime`, the guest's /proc/uptime in seconds):
    {"event": "start"}                         pytest is up (its imports and plugins done)
    {"event": "collected", "nodeids": [...]}   what it will run
    {"event": "test", "nodeid": ..., "outcome": "passed" | "failed" | "skipped",
     "duration_s": ..., "longrepr": "...", "sections": [[title, text], ...]}
    {"event": "note", "text": ...}             a figure a test wants shown on the host (`note`)
    {"event": "finish", "exitstatus": N}

A line is flushed as soon as it is written, so the host keeps every result
that finished before a timeout cut the guest short. The host side
(tests/vm/test_guest.py) reports each line as its own test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

_reporter: Reporter | None = None


def note(text: str) -> None:
    """Show `text` in the host's summary of the tier (a timing, a figure); printed here too."""
    print(text)
    if _reporter is not None:
        _reporter.write({"event": "note", "text": text})


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--vm-report", default=None, help="write the guest's JSON-lines report here")


def _uptime() -> float:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return -1.0


class Reporter:
    def __init__(self, path: Path):
        self.file = open(path, "a", encoding="utf-8")
        self.tests: dict[str, dict] = {}

    def write(self, record: dict) -> None:
        self.file.write(json.dumps({**record, "uptime": _uptime()}) + "\n")
        self.file.flush()

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        self.write({"event": "start"})

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.write({"event": "collected", "nodeids": [item.nodeid for item in session.items]})

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        test = self.tests.setdefault(report.nodeid, {
            "event": "test", "nodeid": report.nodeid, "outcome": "passed",
            "duration_s": 0.0, "longrepr": "", "sections": []})
        test["duration_s"] += report.duration
        if report.failed:
            test["outcome"] = "failed"
            test["longrepr"] += (f"[{report.when}] " if report.when != "call" else "") + report.longreprtext
        elif report.skipped and test["outcome"] == "passed":
            test["outcome"] = "skipped"
            test["longrepr"] = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longreprtext
        if report.when == "teardown":
            test["sections"] = [list(s) for s in report.sections]
            self.write(self.tests.pop(report.nodeid))

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        self.write({"event": "finish", "exitstatus": int(exitstatus)})
        self.file.close()


def pytest_configure(config: pytest.Config) -> None:
    global _reporter
    path = config.getoption("--vm-report")
    if path:
        _reporter = Reporter(Path(path))
        config.pluginmanager.register(_reporter, "vm-report")
