"""Run commands inside Debian's own kernel under qemu (the full-kernel test tier).

The host kernel of the development and CI machines is a minimal build without
bonding, 802.1Q VLAN, ipvlan, IPIP, netem and more. Debian's `linux-image-amd64`
has them all, so tests that need them run in that kernel, booted by virtme-ng
(`vng`, from the test extras) under qemu. The guest sees the host's files
read-only (so the repository and its venv run unchanged inside), runs as root,
and gets the directories named with `rwdirs` writable and shared with the host.

    python tools/vm.py                          # an interactive root shell in the guest
    python tools/vm.py -- ip link add b0 type bond    # one command; exits with its status
    python tools/vm.py --rwdir /tmp/out -- sh -c 'ip -d link > /tmp/out/links'

    from tools.vm import Vm, vm_problem
    problem = vm_problem()     # None, or why no guest can boot on this machine
    result = Vm().run("ip -V", timeout=300)   # GuestResult: returncode, output, timed_out,
                                              # wall_s, up_s (boot, on the host's clock)

Inside the guest, before the command (GUEST_PROLOGUE): `modprobe tun`, PATH
with the venv's bin and the sbin directories, the working directory is the
repository, TMPDIR is /run/overlayd-vm/tmp (a tmpfs: /tmp may be a 9p share,
where a Unix socket fails with ENXIO, so status sockets and labs go there),
OVERLAYD_VM_GUEST=1, and CI is passed through. The command runs under `sh`.

Environment:
    OVERLAYD_VM_KVM=1        use KVM. Never probed nor used otherwise: on the
                             development and CI machines it hangs and stalls the
                             host, so the default is qemu's emulation (--disable-kvm).
    OVERLAYD_VM_KERNEL=PATH  the kernel image (default: the newest /boot/vmlinuz-*
                             whose modules are installed)
    OVERLAYD_VM_CPUS=N       guest CPUs (default 2)
    OVERLAYD_VM_MEMORY=SIZE  guest memory (default 2G)

Emulated, the guest is slow (measured on the 2-core development machine): it is
up 30-45 s after vng starts, and Python runs 50-100x slower than on the host
(importing the daemon: 30-65 s; so the guest tests fork their daemons from
one process that imported it, tests/vm/guest/guest.py). Keep guest work to
what the host kernel cannot do, and give it its own timeouts. One vCPU was as fast as two for the tier (less contention in
qemu's emulation), so OVERLAYD_VM_CPUS=1 is a fine choice on a busy host.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GUEST_ENV = "OVERLAYD_VM_GUEST"  # set to 1 inside the guest
GUEST_RUN_DIR = "/run/overlayd-vm"  # tmpfs in the guest: TMPDIR, sockets
KVM_ENV = "OVERLAYD_VM_KVM"
DEFAULT_CPUS = 2
DEFAULT_MEMORY = "2G"

# What the guest does before the command. {placeholders} are filled by Vm.
GUEST_PROLOGUE = """\
export PATH={path}
export {guest_env}=1 TMPDIR={run_dir}/tmp HOME={run_dir}/home PYTHONDONTWRITEBYTECODE=1 {passed_env}
mkdir -p {run_dir}/tmp {run_dir}/home /run/overlayd
modprobe tun || echo "vm: modprobe tun failed" >&2
echo "vm: guest up after $(cut -d' ' -f1 /proc/uptime) s, kernel $(uname -r)" >&2
{marker}
cd {cwd}
"""

PASSED_ENV = ("CI", "OVERLAYD_VM_READY_TIMEOUT_S", "OVERLAYD_SOAK")  # OVERLAYD_SOAK: tests/soak.py


def in_guest() -> bool:
    return os.environ.get(GUEST_ENV) == "1"


def kvm_wanted() -> bool:
    return os.environ.get(KVM_ENV, "").strip().lower() in ("1", "true", "yes")


def _version_key(path: Path) -> list:
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", path.name)]


def find_kernel() -> Path | None:
    """OVERLAYD_VM_KERNEL, or the newest /boot/vmlinuz-* whose /lib/modules/<version> exists."""
    if os.environ.get("OVERLAYD_VM_KERNEL"):
        return Path(os.environ["OVERLAYD_VM_KERNEL"])
    images = sorted(Path("/boot").glob("vmlinuz-*"), key=_version_key, reverse=True)
    for image in images:
        if Path("/lib/modules", image.name.removeprefix("vmlinuz-")).is_dir():
            return image
    return None


def find_vng() -> str | None:
    """`vng` next to this Python (the venv's, from the test extras), else on PATH."""
    beside = Path(sys.executable).parent / "vng"
    if beside.exists():
        return str(beside)
    return shutil.which("vng")


def vm_problem() -> str | None:
    """Why no guest can boot here (root, vng, qemu, busybox for the initramfs, a kernel), or None."""
    if os.geteuid() != 0:
        return "needs root (the guest runs as root over the host's files)"
    if find_vng() is None:
        return "needs virtme-ng's `vng` (pip install -e '.[test]', i.e. scripts/bootstrap)"
    missing = [p for p in ("qemu-system-x86_64", "busybox") if shutil.which(p) is None]
    if missing:
        return (f"needs programs not found on PATH: {', '.join(missing)} "
                "(apt-get install qemu-system-x86 busybox-static, i.e. scripts/bootstrap)")
    kernel = find_kernel()
    if kernel is None:
        return "needs a kernel image with its modules: /boot/vmlinuz-* (apt-get install linux-image-amd64)"
    if not os.access(kernel, os.R_OK):
        return f"cannot read the kernel image {kernel}"
    return None


@dataclass
class Vm:
    """How to boot a guest: kernel, CPUs, memory, KVM or not, shared writable directories."""

    kernel: Path | None = None
    cpus: int = field(default_factory=lambda: int(os.environ.get("OVERLAYD_VM_CPUS", DEFAULT_CPUS)))
    memory: str = field(default_factory=lambda: os.environ.get("OVERLAYD_VM_MEMORY", DEFAULT_MEMORY))
    kvm: bool = field(default_factory=kvm_wanted)
    rwdirs: list[Path] = field(default_factory=list)
    cwd: Path = REPO

    def __post_init__(self) -> None:
        if self.kernel is None:
            self.kernel = find_kernel()

    def script(self, command: str, marker: Path | None = None) -> str:
        """The guest's shell script: the prologue, then `command`."""
        venv_bin = str(Path(sys.executable).parent)
        passed = " ".join(f"{k}={shlex.quote(os.environ[k])}" for k in PASSED_ENV if k in os.environ)
        prologue = GUEST_PROLOGUE.format(
            path=f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            guest_env=GUEST_ENV, run_dir=GUEST_RUN_DIR, passed_env=passed,
            marker=f"cut -d' ' -f1 /proc/uptime > {shlex.quote(str(marker))}" if marker else "",
            cwd=shlex.quote(str(self.cwd)))
        return prologue + command + "\n"

    def argv(self, script_path: Path | None) -> list[str]:
        """The vng command line; `script_path` None gives an interactive shell."""
        vng = find_vng()
        if vng is None or self.kernel is None:
            raise RuntimeError(vm_problem() or "no vng or kernel")
        argv = [vng, "--run", str(self.kernel), "--user", "root",
                "--cpus", str(self.cpus), "--memory", self.memory, "--cwd", str(self.cwd)]
        if not self.kvm:
            argv.append("--disable-kvm")
        for d in self.rwdirs:
            argv.append(f"--rwdir={d}")
        if script_path is not None:
            argv += ["--exec", f"sh {shlex.quote(str(script_path))}"]
        return argv

    def env(self) -> dict[str, str]:
        """vng runs virtme-run, which sits beside it in the venv's bin."""
        venv_bin = str(Path(sys.executable).parent)
        return {**os.environ, "PATH": f"{venv_bin}:{os.environ.get('PATH', '/usr/bin:/bin')}"}

    def run(self, command: str, timeout: float, log: Path | None = None,
            workdir: Path | None = None) -> GuestResult:
        """Boot, run `command` (sh) in the guest, power off. Output goes to `log` (or is kept).

        The script and the "guest is up" marker live in `workdir` (a new temporary
        directory unless given), shared read-write with the guest. On timeout the
        whole qemu process group is killed and the result says so.
        """
        own_workdir = workdir is None
        workdir = Path(tempfile.mkdtemp(prefix="overlayd-vm-")) if workdir is None else workdir
        try:
            marker = workdir / "guest-up"
            script = workdir / "guest.sh"
            script.write_text(self.script(command, marker))
            vm = Vm(self.kernel, self.cpus, self.memory, self.kvm, [workdir, *self.rwdirs], self.cwd)
            out = open(log, "wb") if log else subprocess.PIPE
            start, start_wall = time.monotonic(), time.time()
            proc = subprocess.Popen(vm.argv(script), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=vm.env(), start_new_session=True)
            timed_out = False
            try:
                stdout, _ = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                timed_out = True
                _killpg(proc)
                stdout, _ = proc.communicate()
            finally:
                if log:
                    out.close()
            wall_s = time.monotonic() - start
            # The marker is written through the share, so its mtime is the host's clock;
            # it holds the guest's uptime then.
            up_s = guest_uptime_s = None
            if marker.exists():
                up_s = marker.stat().st_mtime - start_wall
                with contextlib.suppress(ValueError):
                    guest_uptime_s = float(marker.read_text())
            text = log.read_text(errors="replace") if log else stdout.decode(errors="replace")
            return GuestResult(proc.returncode, text, timed_out, wall_s, up_s, guest_uptime_s)
        finally:
            if own_workdir:
                shutil.rmtree(workdir, ignore_errors=True)

    def interactive(self, command: str | None) -> int:
        """Run `command` with the terminal attached (or a shell when None); return its status."""
        with tempfile.TemporaryDirectory(prefix="overlayd-vm-") as tmp:
            workdir = Path(tmp)
            vm = Vm(self.kernel, self.cpus, self.memory, self.kvm, [workdir, *self.rwdirs], self.cwd)
            script = workdir / "guest.sh"
            script.write_text(self.script(command if command is not None else "exec bash -i"))
            return subprocess.call(vm.argv(script), env=vm.env())


@dataclass
class GuestResult:
    returncode: int | None
    output: str  # the guest's console: its command's stdout and stderr, and vng's
    timed_out: bool
    wall_s: float  # from starting vng to qemu's exit
    up_s: float | None  # from starting vng to the guest's prologue (boot), when it got there
    guest_uptime_s: float | None = None  # the guest's /proc/uptime at its prologue

    def tail(self, chars: int = 6000) -> str:
        return self.output[-chars:]


def _killpg(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Run a command (default: an interactive shell) as root inside Debian's own "
                    "kernel under qemu, booted by virtme-ng, in this repository with its venv.",
        epilog=f"KVM is off unless {KVM_ENV}=1 (it stalls the development and CI machines).")
    parser.add_argument("--rwdir", action="append", type=Path, default=[],
                        help="a host directory the guest may write (repeatable); the rest is read-only")
    parser.add_argument("--cpus", type=int, default=None, help=f"guest CPUs (default {DEFAULT_CPUS})")
    parser.add_argument("--memory", default=None, help=f"guest memory (default {DEFAULT_MEMORY})")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the command and its arguments (after --), run under sh")
    args = parser.parse_args(argv)
    problem = vm_problem()
    if problem:
        print(f"vm: {problem}", file=sys.stderr)
        return 2
    vm = Vm(rwdirs=[d.resolve() for d in args.rwdir])
    if args.cpus:
        vm.cpus = args.cpus
    if args.memory:
        vm.memory = args.memory
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    return vm.interactive(shlex.join(command) if command else None)


if __name__ == "__main__":
    sys.exit(main())
