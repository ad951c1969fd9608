"""contrib/overlayd@.service passes `systemd-analyze verify`, with ExecStart naming the
overlayd that is installed next to the Python running the tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import require_programs, unmet

pytestmark = pytest.mark.peer

UNIT = Path(__file__).resolve().parents[2] / "contrib" / "overlayd@.service"
INSTALLED_PATH = "/usr/local/bin/overlayd"  # what the unit says; the test points it at the real one


def installed_overlayd() -> str:
    beside = Path(sys.executable).parent / "overlayd"
    found = str(beside) if beside.exists() else shutil.which("overlayd")
    if found is None:
        unmet("overlayd is not installed (pip install -e .)")
    return found


def test_the_unit_says_what_the_issue_asks():
    text = UNIT.read_text()
    assert "Type=notify" in text
    assert "ExecStart=/usr/local/bin/overlayd -c /etc/overlayd/%i.yaml\n" in text
    [caps] = [line for line in text.splitlines() if line.startswith("CapabilityBoundingSet=")]
    assert caps.split("=", 1)[1].split() == ["CAP_NET_ADMIN", "CAP_NET_BIND_SERVICE", "CAP_CHOWN"]


def test_systemd_analyze_verifies_an_instance_of_the_unit(tmp_path):
    require_programs("systemd-analyze")
    overlayd = installed_overlayd()
    text = UNIT.read_text()
    assert text.count(INSTALLED_PATH) == 2  # ExecStartPre (--check) and ExecStart
    (tmp_path / UNIT.name).write_text(text.replace(INSTALLED_PATH, overlayd))
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "overlayd@node1.service")],
                            capture_output=True, text=True, timeout=60,
                          check=False)
    # verify exits 0 on many problems it only warns about ("ignoring"): any word from it is one
    assert (result.returncode, result.stdout + result.stderr) == (0, ""), result


def test_systemd_analyze_would_catch_a_broken_unit(tmp_path):
    require_programs("systemd-analyze")
    text = UNIT.read_text().replace(INSTALLED_PATH, installed_overlayd()).replace("Type=notify", "Type=notifyx")
    (tmp_path / UNIT.name).write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "overlayd@node1.service")],
                            capture_output=True, text=True, timeout=60,
                          check=False)
    assert "notifyx" in result.stdout + result.stderr
