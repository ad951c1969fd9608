import pytest

from tests import support

SKIP = pytest.skip.Exception
FAIL = pytest.fail.Exception


@pytest.fixture(params=[None, "", "0", "false", "FALSE"])
def not_ci(request, monkeypatch):
    if request.param is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", request.param)


@pytest.fixture(params=["true", "1", "yes"])
def ci(request, monkeypatch):
    monkeypatch.setenv("CI", request.param)


@pytest.fixture
def not_root(monkeypatch):
    monkeypatch.setattr(support.os, "geteuid", lambda: 1000)


def test_missing_program_skips_outside_ci(not_ci):
    with pytest.raises(SKIP, match="no-such-program-xyz"):
        support.require_programs("sh", "no-such-program-xyz")


def test_missing_program_fails_in_ci(ci):
    with pytest.raises(FAIL, match="no-such-program-xyz"):
        support.require_programs("sh", "no-such-program-xyz")


def test_present_programs_pass(ci):
    support.require_programs("sh")


def test_not_root_skips_outside_ci(not_ci, not_root):
    with pytest.raises(SKIP, match="root"):
        support.require_root()
    with pytest.raises(SKIP, match="root"):
        support.require_netns()


def test_not_root_fails_in_ci(ci, not_root):
    with pytest.raises(FAIL, match="root"):
        support.require_root()
    with pytest.raises(FAIL, match="root"):
        support.require_netns()
