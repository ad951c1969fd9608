"""Fuzz every decoder: `make fuzz` (1e6 inputs per target), and the short run CI does.

    python tools/fuzz.py                      every target, 1e6 inputs each, 2 at a time
    python tools/fuzz.py --runs 3000 --seed 1 the short run (tests/unit/test_fuzz.py does this)
    python tools/fuzz.py --only config,ip     some targets
    python tools/fuzz.py --engine hypothesis  without atheris

The targets are in tests/fuzz/targets.py. Each runs in a process of its own
(atheris, i.e. libFuzzer, fuzzes once per process), `--jobs` at a time
(default 2: this project's machines have 2 cores). Its starting inputs are
the target's seeds (the golden vectors and configs/) and the crashers kept
in tests/fuzz/corpus/<target>/; a new crasher is written there
(`crash-<sha1>`, libFuzzer's name), to be fixed and kept for CI to replay.
An input taking more than 100 ms of CPU time (on its fastest of three tries) is a crasher
too. What a run finds in between (the inputs that reach new code) goes to
a temporary directory and is thrown away.

Engines: atheris (coverage-guided, the default when it imports; overlayd's
modules are instrumented, so inputs/s are below a plain call's), or
Hypothesis (`--engine hypothesis`, or when atheris is missing: it is in the
test extras only on x86-64 Linux, where PyPI has wheels of it) with the
same budget — random and mutated-seed inputs, no coverage feedback, and
about as many inputs per second.

Prints one line per target (inputs, seconds, inputs/s, crashers) and exits
1 if any target found a crasher.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

DEFAULT_RUNS = 1_000_000
MAX_LEN = 4096  # a BGP message's maximum; frames and lines fit too


def have_atheris() -> bool:
    try:
        import atheris  # noqa: F401
    except ImportError:
        return False
    return True


# -- one target, in its own process ---------------------------------------------------------------


def child_atheris(name: str, runs: int, seconds: int, slow_dir: Path, seed: int) -> None:
    import atheris

    with atheris.instrument_imports(include=["overlayd"]):
        from tests.fuzz import targets
    targets.WORLD_REUSE = 64  # the data-plane targets: see targets.world()
    clock = time.thread_time  # CPU time: a busy machine does not make a decoder slow
    slow = [0]

    def one_input(data: bytes) -> None:
        try:
            targets.check(name, data, clock)
        except targets.SlowInput:
            # Instrumented code runs slower, and the other target shares the CPUs: the
            # parent times it again, uninstrumented, before calling it a crasher.
            if slow[0] < 20:
                slow[0] += 1
                (slow_dir / f"slow-{hashlib.sha1(data).hexdigest()}").write_bytes(data)

    corpus = targets.CORPUS / name
    corpus.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"overlayd-fuzz-{name}-"))
    try:
        for i, data in enumerate(targets.TARGETS[name].seeds()):
            (work / f"seed-{i}").write_bytes(data)
        argv = [sys.argv[0], f"-runs={runs}", f"-max_len={MAX_LEN}", "-timeout=10", "-rss_limit_mb=2048",
                f"-artifact_prefix={corpus}/", "-print_final_stats=1", str(work), str(corpus)]
        if seconds:
            argv.insert(1, f"-max_total_time={seconds}")
        if seed:
            argv.insert(1, f"-seed={seed}")
        atheris.Setup(argv, one_input)
        atheris.Fuzz()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def child_hypothesis(name: str, runs: int, seconds: int, slow_dir: Path, seed: int) -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    from tests.fuzz import targets
    from tests.fuzz.strategies import inputs

    def seed_of(value: int):
        return hypothesis_seed(value) if value else (lambda test: test)

    clock = time.thread_time
    count = [0]
    last: list[bytes] = []
    deadline = time.monotonic() + seconds if seconds else None
    start = time.monotonic()

    @settings(max_examples=runs, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @seed_of(seed)
    @given(inputs(name))
    def fuzz(data: bytes) -> None:
        if deadline is not None and time.monotonic() > deadline:
            return
        count[0] += 1
        last[:] = [data]
        targets.check(name, data, clock)

    for path in targets.corpus(name):
        targets.check(name, path.read_bytes(), clock)
    try:
        fuzz()
    except Exception as err:  # noqa: BLE001 - any error is a crasher; the shrunk input is the last one run
        data = last[0] if last else b""
        path = targets.CORPUS / name / f"crash-{hashlib.sha1(data).hexdigest()}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        print(f"==CRASH== {type(err).__name__}: {err}\nartifact: {path}", flush=True)
        sys.exit(77)
    finally:
        took = time.monotonic() - start
        print(f"stat::number_of_executed_units: {count[0]}\nstat::seconds: {took:.1f}", flush=True)
    del st


# -- the parent: every target, a few at a time -------------------------------------------------------


@dataclass
class Result:
    name: str
    engine: str
    runs: int
    seconds: float  # the whole process: start-up (imports, instrumentation) included
    fuzz_seconds: float  # fuzzing alone, as the engine counts it (whole seconds for libFuzzer)
    crashers: list[str]
    slow: int  # inputs over 100 ms when instrumented (timed again uninstrumented: see crashers)
    returncode: int
    tail: str

    @property
    def per_second(self) -> float:
        return self.runs / self.fuzz_seconds if self.fuzz_seconds >= 10 else self.runs / self.seconds


def confirm_slow(name: str, slow_dir: Path) -> list[str]:
    """Time the inputs the instrumented run found slow again, here, uninstrumented: the ones
    still over 100 ms are crashers, kept in the corpus as slow-<sha1>."""
    from tests.fuzz import targets

    kept = []
    for path in sorted(slow_dir.iterdir()):
        data = path.read_bytes()
        try:
            targets.check(name, data, time.thread_time)
        except targets.SlowInput:
            dest = targets.CORPUS / name / path.name
            dest.write_bytes(data)
            kept.append(str(dest))
    return kept


def run_target(name: str, engine: str, runs: int, seconds: int, log_dir: Path | None, seed: int = 0) -> Result:
    slow_dir = Path(tempfile.mkdtemp(prefix=f"overlayd-fuzz-slow-{name}-"))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", name, "--engine", engine,
           "--runs", str(runs), "--seconds", str(seconds), "--slow-dir", str(slow_dir), "--seed", str(seed)]
    start = time.monotonic()
    proc = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, errors="replace")
    took = time.monotonic() - start
    out = proc.stdout + proc.stderr
    slow_found = len(list(slow_dir.iterdir()))
    slow_kept = confirm_slow(name, slow_dir)
    shutil.rmtree(slow_dir, ignore_errors=True)
    out += f"\nslow inputs: {slow_found} over 100 ms instrumented, {len(slow_kept)} still over it uninstrumented\n"
    if log_dir is not None:
        (log_dir / f"{name}.log").write_text(out)
    executed = re.findall(r"stat::number_of_executed_units: (\d+)", out)
    done = re.findall(r"Done (\d+) runs in (\d+) second", out)
    runs_done = int(executed[-1]) if executed else int(done[-1][0]) if done else 0
    fuzzing = re.findall(r"Done \d+ runs in (\d+) second|stat::seconds: ([\d.]+)", out)
    fuzz_seconds = float(next(x for x in fuzzing[-1] if x)) if fuzzing else took
    crashers = re.findall(r"(?:Test unit written to|artifact:) (\S+)", out) + slow_kept
    return Result(name, engine, runs_done, took, fuzz_seconds, crashers, slow_found, proc.returncode, "\n".join(out.splitlines()[-40:]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=DEFAULT_RUNS, help="inputs per target (default 1e6)")
    ap.add_argument("--seconds", type=int, default=0, help="stop each target after this long (default: no limit)")
    ap.add_argument("--jobs", type=int, default=2, help="targets fuzzed at once (default 2)")
    ap.add_argument("--only", default="", help="comma-separated target names")
    ap.add_argument("--engine", choices=("auto", "atheris", "hypothesis"), default="auto")
    ap.add_argument("--logs", default="", help="keep each target's output in this directory")
    ap.add_argument("--seed", type=int, default=0, help="the engine's random seed (default: a new one each run)")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--slow-dir", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.child:
        child = child_atheris if args.engine == "atheris" else child_hypothesis
        child(args.child, args.runs, args.seconds, Path(args.slow_dir or tempfile.mkdtemp()), args.seed)
        return 0

    from tests.fuzz.targets import TARGETS

    names = [n for n in args.only.split(",") if n] or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        ap.error(f"unknown targets {unknown}; known: {', '.join(TARGETS)}")
    engine = args.engine
    if engine == "auto":
        engine = "atheris" if have_atheris() else "hypothesis"
        if engine == "hypothesis":
            print("fuzz: atheris is not installed (the test extras bring it on x86-64 Linux: "
                  "`pip install atheris`); using Hypothesis with the same budget, without coverage feedback",
                  file=sys.stderr)
    elif engine == "atheris" and not have_atheris():
        print("fuzz: --engine atheris, but atheris does not import here: `pip install atheris` "
              "(PyPI has wheels for x86-64 Linux, CPython 3.11-3.13)", file=sys.stderr)
        return 2
    log_dir = Path(args.logs) if args.logs else None
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    print(f"fuzz: {len(names)} targets, {args.runs} inputs each, {engine}, {args.jobs} at a time, "
          f"{os.cpu_count()} CPUs ({_cpu_model()})", flush=True)
    start = time.monotonic()
    failed = 0
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = [pool.submit(run_target, n, engine, args.runs, args.seconds, log_dir, args.seed) for n in names]
        for future in futures:
            r = future.result()
            bad = r.returncode != 0 or r.crashers
            failed += bool(bad)
            status = f"CRASH {' '.join(r.crashers) or f'exit {r.returncode}'}" if bad else "ok"
            if r.slow and not bad:
                status += f" ({r.slow} inputs over 100 ms instrumented, none uninstrumented)"
            print(f"{r.name:15} {r.runs:>9} inputs {r.seconds:8.1f} s {r.per_second:9.0f} inputs/s  {status}",
                  flush=True)
            if bad:
                print("    " + r.tail.replace("\n", "\n    "), flush=True)
    print(f"fuzz: {len(names)} targets in {time.monotonic() - start:.0f} s, {failed} with crashers", flush=True)
    return 1 if failed else 0


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    sys.exit(main())
