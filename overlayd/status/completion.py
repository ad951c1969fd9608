"""Shell completion for `overlayctl`, generated from its argparse parser.

`overlayctl completion bash` and `overlayctl completion zsh` print a script;
nothing in it is written by hand, so a new command or option completes as
soon as the parser has it. The parser is read as a tree (`Node`): each
command's options (and which of them take a value, with the value's choices
or a file), its positional choices and its subcommands.

bash: `complete -F` with one function that walks the words typed so far to
find the command, then offers subcommands, options, or an option's values.
zsh: a `_arguments` function per command with subcommands (`->command`,
`->args` states), descriptions taken from the parser's help.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass, field

FILE = "@file"  # an option whose value is a path


@dataclass
class Option:
    flags: tuple[str, ...]
    help: str
    takes_value: bool
    values: tuple[str, ...] = ()  # its choices, or (FILE,)


@dataclass
class Node:
    """One command of the parser: the root, `fdb`, `clear`, `clear mac`, ..."""

    path: tuple[str, ...]
    help: str = ""
    options: list[Option] = field(default_factory=list)
    positionals: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)  # (name, help, choices)
    commands: list[Node] = field(default_factory=list)

    def walk(self):
        yield self
        for sub in self.commands:
            yield from sub.walk()


def _first_clause(text: str | None) -> str:
    """A help text cut to its first clause, for a completion menu."""
    text = re.sub(r"\s+", " ", (text or "").replace("%(default)s", "")).strip()
    text = re.split(r"[;(]", text, maxsplit=1)[0].strip().rstrip(":,")
    return text if len(text) <= 72 else text[:69].rstrip() + "..."


def tree(parser: argparse.ArgumentParser, path: tuple[str, ...] = (), help_text: str = "") -> Node:
    node = Node(path, _first_clause(help_text))
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sub in action.choices.items():
                node.commands.append(tree(sub, path + (name,), helps.get(name, "")))
        elif action.option_strings:
            takes_value = action.nargs != 0
            if action.choices:
                values = tuple(str(c) for c in action.choices)
            elif takes_value and ("socket" in action.dest or "file" in action.dest or action.metavar == "FILE"):
                values = (FILE,)
            else:
                values = ()
            node.options.append(Option(tuple(action.option_strings), _first_clause(action.help), takes_value,
                                       values))
        else:
            choices = tuple(str(c) for c in action.choices) if action.choices else ()
            node.positionals.append((action.dest, _first_clause(action.help), choices))
    return node


# -- bash -------------------------------------------------------------------------------------


def _lookup(name: str, subject: str, entries: list[tuple[str, str]]) -> str:
    """A bash function that echoes the words of `entries` under the key `subject` expands to."""
    cases = "\n".join(f'        "{key}") echo "{value}" ;;' for key, value in entries if value)
    return f'{name}() {{\n    case "{subject}" in\n{cases}\n    esac\n}}\n'


def bash(parser: argparse.ArgumentParser) -> str:
    root = tree(parser)
    prog = parser.prog
    fn = "_" + re.sub(r"\W", "_", prog)
    nodes = list(root.walk())
    subcommands = [(" ".join(n.path), " ".join(c.path[-1] for c in n.commands)) for n in nodes]
    options = [(" ".join(n.path), " ".join(f for o in n.options for f in o.flags)) for n in nodes]
    takes = [f'"{" ".join(n.path)}:{f}"' for n in nodes for o in n.options if o.takes_value for f in o.flags]
    values = [(f'{" ".join(n.path)}:{f}', " ".join(o.values)) for n in nodes for o in n.options if o.values
              for f in o.flags]
    positionals = [(" ".join(n.path), " ".join(c for _, _, choices in n.positionals for c in choices))
                   for n in nodes]
    return f"""\
# bash completion for {prog}, generated from its argument parser: `{prog} completion bash`.
# Install: {prog} completion bash > /etc/bash_completion.d/{prog}

{_lookup(f"{fn}_subcommands", "$1", subcommands)}
{_lookup(f"{fn}_options", "$1", options)}
{fn}_takes_value() {{
    case "$1:$2" in
        {"|".join(takes) or '""'}) return 0 ;;
    esac
    return 1
}}

{_lookup(f"{fn}_values", "$1:$2", values)}
{_lookup(f"{fn}_positionals", "$1", positionals)}
{fn}() {{
    local cur="${{COMP_WORDS[COMP_CWORD]}}" path="" word i skip=0
    COMPREPLY=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        word="${{COMP_WORDS[i]}}"
        if ((skip)); then
            skip=0
        elif {fn}_takes_value "$path" "$word"; then
            skip=1
        elif [[ " $({fn}_subcommands "$path") " == *" $word "* ]]; then
            path="${{path:+$path }}$word"
        fi
    done
    if ((skip)); then
        local values
        values="$({fn}_values "$path" "${{COMP_WORDS[COMP_CWORD-1]}}")"
        if [[ $values == "{FILE}" ]]; then
            mapfile -t COMPREPLY < <(compgen -f -- "$cur")
        elif [[ -n $values ]]; then
            mapfile -t COMPREPLY < <(compgen -W "$values" -- "$cur")
        fi
        return 0
    fi
    if [[ $cur == -* ]]; then
        mapfile -t COMPREPLY < <(compgen -W "$({fn}_options "$path")" -- "$cur")
    else
        mapfile -t COMPREPLY < <(compgen -W "$({fn}_subcommands "$path") $({fn}_positionals "$path")" -- "$cur")
    fi
    return 0
}}

complete -F {fn} {prog}
"""


# -- zsh --------------------------------------------------------------------------------------


def _zq(text: str) -> str:
    """Inside single quotes, and safe in an _arguments spec ([...] and : are special)."""
    return text.replace("'", "'\\''").replace("[", "(").replace("]", ")").replace(":", " -")


def _zsh_option(o: Option) -> str:
    action = ""
    if o.takes_value:
        if o.values == (FILE,):
            action = ":file:_files"
        elif o.values:
            action = f":value:({' '.join(o.values)})"
        else:
            action = ":value: "
    exclusive = f"({' '.join(o.flags)})" if len(o.flags) > 1 else ""
    if len(o.flags) > 1:
        return f"'{exclusive}'{{{','.join(o.flags)}}}'[{_zq(o.help)}]{action}'"
    return f"'{o.flags[0]}[{_zq(o.help)}]{action}'"


def _zsh_function(node: Node, fn: str) -> list[str]:
    name = fn + "".join(f"_{re.sub(r'[^A-Za-z0-9]', '_', p)}" for p in node.path)
    specs = [_zsh_option(o) for o in node.options if o.flags != ("-h", "--help")]
    specs.append("'(- *)'{-h,--help}'[show help]'")
    for i, (dest, help_text, choices) in enumerate(node.positionals, 1):
        action = f"({' '.join(choices)})" if choices else " "
        specs.append(f"'{i}:{_zq(help_text or dest)}:{action}'")
    out = [f"{name}() {{"]
    if not node.commands:
        out.append("    _arguments -s \\\n        " + " \\\n        ".join(specs))
        out.append("}")
        return out
    specs += ["'1:command:->command'", "'*::argument:->argument'"]
    out.append("    local curcontext=\"$curcontext\" state line")
    out.append("    _arguments -C -s \\\n        " + " \\\n        ".join(specs))
    out.append("    case $state in")
    out.append("        command)")
    out.append("            local -a commands")
    out.append("            commands=(")
    for sub in node.commands:
        out.append(f"                '{_zq(sub.path[-1])}:{_zq(sub.help)}'")
    out.append("            )")
    out.append("            _describe command commands ;;")
    out.append("        argument)")
    out.append("            case $line[1] in")
    for sub in node.commands:
        sub_fn = name + f"_{re.sub(r'[^A-Za-z0-9]', '_', sub.path[-1])}"
        out.append(f"                {sub.path[-1]}) {sub_fn} ;;")
    out.append("            esac ;;")
    out.append("    esac")
    out.append("}")
    for sub in node.commands:
        out.append("")
        out += _zsh_function(sub, fn)
    return out


def zsh(parser: argparse.ArgumentParser) -> str:
    prog = parser.prog
    fn = "_" + re.sub(r"\W", "_", prog)
    lines = [
        f"#compdef {prog}",
        f"# zsh completion for {prog}, generated from its argument parser: `{prog} completion zsh`.",
        f"# Install: {prog} completion zsh > \"${{fpath[1]}}/_{prog}\" (then start a new shell)",
        "",
        *_zsh_function(tree(parser), fn),
        "",
        f'if [[ $zsh_eval_context[-1] == loadautofunc ]]; then {fn} "$@"; else compdef {fn} {prog}; fi',
        "",
    ]
    return "\n".join(lines)


SHELLS = {"bash": bash, "zsh": zsh}
