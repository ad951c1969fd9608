"""The `docker compose` demo, driven from Python: for tests/compose and `make wheels`.

    with DockerEngine(log_path) as engine:     # starts dockerd if none answers; stops it after
        build_base_image()                     # scripts/base-image: debootstrap -> docker import
        build_wheels()                         # docker/wheelhouse from the host's pip
        demo = ComposeProject("ovlci1234", env={"BASE_IMAGE": BASE_IMAGE, "PIP_NO_INDEX": "1"})
        demo.compose("build"); demo.compose("up", "-d")
        demo.ctl("node1", "peers")             # `overlayctl --json peers` inside node1, parsed
        demo.exec("node1", "demo-node", "exec", "pod1", "ping", "-c", "1", "10.244.2.2")
        demo.down()                            # containers, network and volume; never raises

Compose itself: `docker compose` (the plugin) when the docker CLI has it,
otherwise Debian's `docker-compose`; both read the same docker-compose.yml.

    python tools/compose.py wheels             # what `make wheels` runs
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
WHEELHOUSE = REPO / "docker" / "wheelhouse"
BASE_IMAGE = "overlayd-base:bookworm"


class ComposeError(RuntimeError):
    pass


def run(*cmd: str, timeout: float = 120, check: bool = True, env: dict[str, str] | None = None,
        cwd: Path = REPO) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env=None if env is None else {**os.environ, **env})
    if check and proc.returncode != 0:
        raise ComposeError(f"{' '.join(cmd)} exited {proc.returncode}\n"
                           f"stdout: {proc.stdout.strip()[-3000:]}\nstderr: {proc.stderr.strip()[-3000:]}")
    return proc


def engine_answers() -> bool:
    try:
        return run("docker", "info", timeout=20, check=False).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class DockerEngine:
    """A running Docker engine for the length of a `with` block.

    When none answers, starts `dockerd` (its output to `log_path`), waits for
    it, and stops it again on leaving; one that already ran is left alone.
    """

    def __init__(self, log_path: Path, start_timeout_s: float = 60):
        self.log_path = log_path
        self.start_timeout_s = start_timeout_s
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> DockerEngine:
        if engine_answers():
            return self
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(["dockerd"], stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        finally:
            log.close()
        deadline = time.monotonic() + self.start_timeout_s
        while not engine_answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                tail = self.log_path.read_text(errors="replace")[-3000:]
                self.__exit__()
                raise ComposeError(f"dockerd did not come up in {self.start_timeout_s:g} s; its log:\n{tail}")
            time.sleep(0.5)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def started_here(self) -> bool:
        return self.proc is not None


def build_base_image(tag: str = BASE_IMAGE) -> None:
    """debootstrap + docker import, cached (scripts/base-image)."""
    run(str(REPO / "scripts" / "base-image"), tag, timeout=900)


def build_wheels(python: str = sys.executable) -> list[str]:
    """Wheels of overlayd's dependencies and its build backend into docker/wheelhouse."""
    run(python, "-m", "pip", "wheel", "-q", "-w", str(WHEELHOUSE), str(REPO), "setuptools", timeout=600)
    for own in WHEELHOUSE.glob("overlayd-*.whl"):  # the image installs overlayd from source
        own.unlink()
    return sorted(p.name for p in WHEELHOUSE.glob("*.whl"))


def compose_command() -> list[str]:
    """`docker compose` when the CLI has the plugin, else `docker-compose`."""
    if shutil.which("docker") and run("docker", "compose", "version", check=False, timeout=20).returncode == 0:
        return ["docker", "compose"]
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    raise ComposeError("neither `docker compose` nor `docker-compose` is installed")


class ComposeProject:
    """docker-compose.yml of this repository (plus `overrides`, such as
    docker-compose.rr.yml) under project name `name`."""

    def __init__(self, name: str, env: dict[str, str] | None = None, overrides: tuple[str, ...] = ()):
        self.name = name
        self.env = dict(env or {})
        files = [arg for f in ("docker-compose.yml", *overrides) for arg in ("-f", str(REPO / f))]
        self.base = [*compose_command(), "-p", name, *files]

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        return run(*self.base, *args, timeout=timeout, check=check, env=self.env)

    def exec(self, service: str, *cmd: str, timeout: float = 60, check: bool = True) -> subprocess.CompletedProcess:
        return self.compose("exec", "-T", service, *cmd, timeout=timeout, check=check)

    def ctl(self, service: str, command: str, *args: str) -> Any:
        """`overlayctl --json COMMAND` inside `service` (its socket from OVERLAYD_SOCKET), parsed."""
        return json.loads(self.exec(service, "overlayctl", command, *args, "--json").stdout)

    def logs(self, *services: str) -> str:
        return self.compose("logs", "--no-color", *services, check=False, timeout=60).stdout

    def down(self) -> str | None:
        """Remove containers, network and volume; what went wrong, or None. Never raises."""
        try:
            proc = self.compose("down", "-v", "--remove-orphans", "-t", "20", check=False, timeout=180)
        except (OSError, subprocess.SubprocessError) as err:
            return str(err)
        return None if proc.returncode == 0 else proc.stderr.strip()


def main() -> int:
    if sys.argv[1:] == ["wheels"]:
        names = build_wheels()
        print(f"{WHEELHOUSE.relative_to(REPO)}: {len(names)} wheels: {', '.join(names)}")
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
