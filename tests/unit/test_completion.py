"""Shell completion generated from overlayctl's parser (status/completion.py): the bash script
is valid bash, lists every command, and completes subcommands, options and their values."""

from __future__ import annotations

import subprocess

import pytest

from overlayd.status import ctl
from overlayd.status.completion import bash, tree, zsh
from tests.support import require_programs


@pytest.fixture(scope="module")
def bash_script() -> str:
    return bash(ctl.build_parser())


def complete(script: str, *words: str) -> list[str]:
    """What bash offers after `words` (the last one is the word being completed)."""
    words_text = " ".join(f"'{w}'" for w in words)
    program = (f"{script}\nCOMP_WORDS=({words_text}); COMP_CWORD={len(words) - 1}; _overlayctl; "
               'printf "%s\\n" "${COMPREPLY[@]}"')
    done = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], capture_output=True, text=True,
                          timeout=30, check=False)
    assert done.returncode == 0, done.stderr
    return [line for line in done.stdout.splitlines() if line]


def test_the_tree_is_the_parser():
    root = tree(ctl.build_parser())
    commands = [c.path[-1] for c in root.commands]
    assert commands[:3] == ["status", "fdb", "stats"] and {"doctor", "topology", "completion"} <= set(commands)
    [clear] = [c for c in root.commands if c.path == ("clear",)]
    assert [c.path for c in clear.commands] == [("clear", "counters"), ("clear", "mac"), ("clear", "peer")]


def test_overlayctl_completion_prints_the_scripts(capsys):
    assert ctl.main(["completion", "bash"]) == 0
    assert "complete -F _overlayctl overlayctl" in capsys.readouterr().out
    assert ctl.main(["completion", "zsh"]) == 0
    assert capsys.readouterr().out.startswith("#compdef overlayctl\n")


def test_the_bash_script_is_valid_bash(bash_script, tmp_path):
    require_programs("bash")
    path = tmp_path / "overlayctl.bash"
    path.write_text(bash_script)
    done = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (0, "")


def test_bash_completes_every_command_then_options_and_values(bash_script):
    require_programs("bash")
    commands = [c.path[-1] for c in tree(ctl.build_parser()).commands]
    assert complete(bash_script, "overlayctl", "") == commands
    assert complete(bash_script, "overlayctl", "-s", "/run/x.sock", "to") == ["topology"]
    assert complete(bash_script, "overlayctl", "topology", "--format", "") == ["text", "json", "dot", "svg"]
    assert complete(bash_script, "overlayctl", "doctor", "--") == ["--help", "--json", "--no-probe"]
    assert complete(bash_script, "overlayctl", "clear", "") == ["counters", "mac", "peer"]
    assert complete(bash_script, "overlayctl", "completion", "") == ["bash", "zsh"]


def test_the_zsh_script_is_valid_zsh(tmp_path):
    require_programs("zsh")
    path = tmp_path / "_overlayctl"
    path.write_text(zsh(ctl.build_parser()))
    done = subprocess.run(["zsh", "-n", str(path)], capture_output=True, text=True, check=False)
    assert (done.returncode, done.stderr) == (0, "")
    # sourced after compinit, it registers itself and defines a function per command
    program = (f"autoload -Uz compinit && compinit -u -D; source {path}; "
               "print -r -- $_comps[overlayctl] ${+functions[_overlayctl_clear_mac]}")
    done = subprocess.run(["zsh", "-f", "-c", program], capture_output=True, text=True, timeout=30, check=False)
    assert done.stdout.split() == ["_overlayctl", "1"], done.stderr
