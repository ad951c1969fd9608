"""`overlayd`'s command line: exit status by outcome, without starting a daemon."""

from __future__ import annotations

from pathlib import Path

import pytest

from overlayd import cli
from overlayd.io import daemon

NODE = "node:\n  name: n1\n  vtep: 10.0.0.1\nnetworks:\n  - {name: blue, vni: 100, device: blue0}\n"


@pytest.fixture
def config_file(tmp_path) -> Path:
    path = tmp_path / "node.yaml"
    path.write_text(NODE)
    return path


def test_check_validates_and_exits_0(config_file, capsys):
    assert cli.main(["-c", str(config_file), "--check"]) == 0
    assert capsys.readouterr().out == f"{config_file}: ok: node n1, vtep 10.0.0.1, 1 network(s)\n"


def test_bad_config_exits_2_naming_each_field(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(NODE.replace("vni: 100", "vni: 20000000").replace("10.0.0.1", "10.0.0.300"))
    assert cli.main(["-c", str(path)]) == cli.EXIT_CONFIG == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"overlayd: bad config {path}:"
    assert [line.split(":")[0] for line in err[1:]] == ["  node.vtep", "  networks[0].vni"]


def test_missing_config_exits_2(tmp_path, capsys):
    assert cli.main(["-c", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read" in capsys.readouterr().err


def test_runs_the_daemon_and_maps_setup_failure_to_3(config_file, monkeypatch):
    ran = []
    monkeypatch.setattr(daemon, "run", lambda config, path: ran.append((config.node.name, path)))
    assert cli.main(["-c", str(config_file)]) == 0
    assert ran == [("n1", str(config_file))]  # the file SIGHUP reads again

    def fails(config, path):
        raise daemon.SetupError("node.vtep: 10.0.0.1 is not assigned to any interface on this host")

    monkeypatch.setattr(daemon, "run", fails)
    assert cli.main(["-c", str(config_file)]) == cli.EXIT_SETUP == 3

    def not_root(config, path):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(daemon, "run", not_root)
    assert cli.main(["-c", str(config_file)]) == 3
