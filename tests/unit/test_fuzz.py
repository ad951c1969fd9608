"""Every decoder fuzzed (issue 13, item 10): the short run of what `make fuzz` does at 1e6 inputs.

- Hypothesis: each target on random bytes and on its seeds mutated (tests/fuzz/strategies.py);
- the corpus: every crasher kept in tests/fuzz/corpus/<target>/ replays clean;
- atheris: a few thousand coverage-guided inputs per target through tools/fuzz.py, the
  `make fuzz` driver itself (atheris comes with the test extras on x86-64 Linux).

The rule for each input: only the decoder's own error escapes, and it takes at most
100 ms (tests/fuzz/targets.py says which error is whose).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings

from tests.fuzz import targets
from tests.fuzz.strategies import inputs
from tests.fuzz.targets import SLOW_S, TARGETS, check, corpus
from tests.support import unmet
from tools.fuzz import ROOT, have_atheris

SHORT_RUNS = 3000  # atheris inputs per target in the normal suite


@pytest.mark.parametrize("name", TARGETS)
def test_hypothesis(name):
    worst = [0.0]

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(inputs(name))
    def fuzz(data):
        worst[0] = max(worst[0], check(name, data, time.thread_time))

    fuzz()
    print(f"{name}: slowest input {worst[0] * 1000:.1f} ms (limit {SLOW_S * 1000:.0f})")


@pytest.mark.parametrize("name", TARGETS)
def test_seeds_and_corpus_replay_clean(name):
    """The seeds (golden vectors, configs/) and every crasher ever kept pass the rule."""
    found = corpus(name)
    for data in TARGETS[name].seeds():
        check(name, data, time.thread_time)
    for path in found:
        check(name, path.read_bytes(), time.thread_time)
    print(f"{name}: {len(found)} kept crashers replayed")


def test_every_target_has_a_corpus_directory():
    """Where make fuzz puts crashers, and what this file replays: one directory per target, kept in git."""
    assert sorted(p.name for p in targets.CORPUS.iterdir() if p.is_dir()) == sorted(TARGETS)


def test_a_crash_is_caught_and_a_slow_input_is_too(monkeypatch):
    """The harness itself: an error that is not the decoder's escapes, and so does slowness."""
    def boom(data):
        raise KeyError("not a DecodeError")
    monkeypatch.setitem(TARGETS, "boom", targets.Target("boom", boom, (ValueError,), "a broken decoder"))
    with pytest.raises(KeyError):
        check("boom", b"x", time.perf_counter)

    ticks = iter(range(100))  # every call of the clock is a second later
    monkeypatch.setitem(TARGETS, "slow", targets.Target("slow", lambda data: None, (), "a slow decoder"))
    with pytest.raises(targets.SlowInput, match="took"):
        check("slow", b"x", lambda: float(next(ticks)))


def test_atheris_short_run():
    """`make fuzz` with a small budget: every target, SHORT_RUNS coverage-guided inputs each, from a
    fixed seed (CI fails on the code, not on the draw; make fuzz draws anew each run)."""
    if not have_atheris():
        unmet("needs atheris (the test extras install it on x86-64 Linux): pip install atheris")
    proc = subprocess.run([sys.executable, "tools/fuzz.py", "--runs", str(SHORT_RUNS), "--engine", "atheris",
                           "--seed", "1"],
                          check=False, cwd=ROOT, capture_output=True, text=True, timeout=600)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    runs = dict(re.findall(r"^(\w+)\s+(\d+) inputs", proc.stdout, re.MULTILINE))
    assert set(runs) == set(TARGETS)
    assert all(int(n) >= SHORT_RUNS for n in runs.values()), runs
