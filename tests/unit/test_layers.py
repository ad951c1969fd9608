"""DESIGN.md's layering rules, checked on the source with `ast`.

- Only `overlayd/io/` and the status socket's server and client import
  asyncio, socket, fcntl, pyroute2 or pytun: everything else is deterministic
  and runs in a plain unit test.
- `wire/` is pure codecs: it imports nothing from the layers above it.
- `fabric/`, `dataplane/`, `kernel/` (the backends' planners) and `sim/` do no I/O: they
  import nothing from `io/` or `status/`.

Every import counts, wherever it is written (inside functions, under
`if TYPE_CHECKING:`): the rule is about what a module can reach.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "overlayd"
IO_MODULES = frozenset({"asyncio", "socket", "fcntl", "pyroute2", "pytun"})
MAY_DO_IO = ("overlayd/io/", "overlayd/status/server.py", "overlayd/status/client.py")


def module_name(path: Path, package: Path = PACKAGE) -> str:
    parts = path.relative_to(package.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, root: Path = PACKAGE) -> set[str]:
    """Every module `path` imports, as absolute dotted names (relative imports resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    name = module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            # `from overlayd import io` imports the module overlayd.io
            found.update(f"{prefix}.{alias.name}" for alias in node.names if alias.name != "*")
    return found


def relative(path: Path) -> str:
    return path.relative_to(PACKAGE.parent).as_posix()


SOURCES = sorted(PACKAGE.rglob("*.py"))
IDS = [relative(p) for p in SOURCES]


def test_the_walk_finds_the_package():
    names = set(IDS)
    assert {"overlayd/config/__init__.py", "overlayd/wire/vxlan.py", "overlayd/io/daemon.py"} <= names
    # and the import finder sees what is there
    assert "asyncio" in imports(PACKAGE / "io" / "daemon.py")
    assert "overlayd.fabric.fdb" in imports(PACKAGE / "dataplane" / "switch.py")


@pytest.mark.parametrize("path", SOURCES, ids=IDS)
def test_only_io_and_the_status_socket_import_io_modules(path):
    if relative(path).startswith(MAY_DO_IO):
        return
    used = {name for name in imports(path) if name.split(".")[0] in IO_MODULES}
    assert not used, f"{relative(path)} imports {sorted(used)}; only {', '.join(MAY_DO_IO)} may"


def _layer_imports(path: Path, layers: tuple[str, ...]) -> set[str]:
    return {
        name
        for name in imports(path)
        if any(name == f"overlayd.{layer}" or name.startswith(f"overlayd.{layer}.") for layer in layers)
    }


WIRE = [p for p in SOURCES if relative(p).startswith("overlayd/wire/")]


@pytest.mark.parametrize("path", WIRE, ids=[relative(p) for p in WIRE])
def test_wire_imports_no_higher_layer(path):
    used = _layer_imports(path, ("fabric", "control", "dataplane", "io", "status"))
    assert not used, f"{relative(path)} imports {sorted(used)}"


PURE_PACKAGES = ("overlayd/fabric/", "overlayd/dataplane/", "overlayd/kernel/", "overlayd/sim/")
PURE = [p for p in SOURCES if relative(p).startswith(PURE_PACKAGES)]


@pytest.mark.parametrize("path", PURE, ids=[relative(p) for p in PURE])
def test_tables_and_decisions_import_no_io_or_status(path):
    used = _layer_imports(path, ("io", "status"))
    assert not used, f"{relative(path)} imports {sorted(used)}"


def test_the_import_finder_sees_every_spelling(tmp_path):
    sample = tmp_path / "overlayd" / "fabric" / "sample.py"
    sample.parent.mkdir(parents=True)
    sample.write_text(
        "import socket\n"
        "from asyncio import sleep\n"
        "from . import fdb\n"
        "from ..io import tap\n"
        "def later():\n"
        "    import fcntl.x\n"
    )
    assert imports(sample, root=tmp_path / "overlayd") == {
        "socket", "asyncio", "asyncio.sleep", "overlayd.fabric", "overlayd.fabric.fdb",
        "overlayd.io", "overlayd.io.tap", "fcntl.x",
    }
