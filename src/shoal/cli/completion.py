"""`shoal completion bash|zsh|fish`, as `docker completion`: a shell script that completes
commands, subcommands and flags, and the names of containers, images, networks and volumes.

The script is generated from the argparse tree of this very shoal, so it cannot go stale: every
command path, its subcommands (aliases included), its flags and the flags that take a value come
from the parsers. Names are completed by asking shoal itself (`shoal ps -a --format ...`), which
is cheap for the objects of this node; services, nodes, secrets and configs are left out, since
listing them would start shoald from a TAB key.

    source <(shoal completion bash)
    shoal completion zsh > "${fpath[1]}/_shoal"
    shoal completion fish | source
"""

from __future__ import annotations

import argparse
import shlex
import sys

from shoal.cli.helptext import children, walk

# What a command's first positional names (by its dest or metavar), and the shell command
# listing those names. The swarm objects are listed only when shoald's socket is there: a TAB
# key must not start a daemon.
_KINDS = {"container": "container", "containers": "container", "image": "image", "images": "image",
          "source_image": "image", "target_image": "image", "network": "network", "networks": "network",
          "volume": "volume", "volumes": "volume", "service": "service", "services": "service",
          "node": "node", "nodes": "node", "secret": "secret", "config": "config", "stack": "stack",
          "stacks": "stack", "context": "context"}
_LISTERS = {
    "container": "shoal ps -a --format '{{.Names}}'",
    "image": "shoal images --format '{{.Repository}}:{{.Tag}}' | grep -v '<none>'",
    "network": "shoal network ls --format '{{.Name}}'",
    "volume": "shoal volume ls -q",
    "context": "shoal context ls --format '{{.Name}}'",
    "service": "__shoal_up && shoal service ls --format '{{.Name}}'",
    "node": "__shoal_up && shoal node ls --format '{{.Hostname}}'",
    "secret": "__shoal_up && shoal secret ls --format '{{.Name}}'",
    "config": "__shoal_up && shoal config ls --format '{{.Name}}'",
    "stack": "__shoal_up && shoal stack ls --format '{{.Name}}'",
}
# shoald's socket (api/client.py socket_path): $SHOAL_SOCKET, else <run root>/shoal.sock
_UP_FUNCTION = """__shoal_up() {
    local run="${SHOAL_RUN:-}"
    [[ -z $run && -n ${SHOAL_ROOT:-} ]] && run="$SHOAL_ROOT/run"
    [ -S "${SHOAL_SOCKET:-${run:-/run/shoal}/shoal.sock}" ]
}"""


class Node:
    """One command of the tree, flattened for the shells."""

    def __init__(self, path: tuple[str, ...], names: list[tuple[str, ...]], parser: argparse.ArgumentParser) -> None:
        self.path = path
        self.names = names  # every spelling of the path (aliases at each level)
        self.parser = parser
        self.subs: list[tuple[str, str]] = [(n, h) for name, aliases, _p, h in children(parser) if h
                                            for n in (name, *aliases)]
        self.flags = [o for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS
                      for o in a.option_strings]
        self.valued = [o for a in parser._actions if a.option_strings and a.nargs != 0
                       and not isinstance(a, argparse._HelpAction) for o in a.option_strings]
        positional = next((a for a in parser._actions if not a.option_strings
                           and not isinstance(a, argparse._SubParsersAction)), None)
        self.kind = ""
        if positional is not None:
            names = (positional.dest, positional.metavar.lower() if isinstance(positional.metavar, str) else "")
            self.kind = next((_KINDS[n] for n in names if n in _KINDS), "")
            if path[-1:] == ("create",) and path[:1] == (self.kind,):
                self.kind = ""  # `secret create NAME` names a new one
        self.flag_help = {o: (a.help or "").split("\n")[0] for a in parser._actions if a.option_strings
                          for o in a.option_strings}


def nodes(root: argparse.ArgumentParser) -> list[Node]:
    """Every command once, with all the ways of spelling its path."""
    out: list[Node] = []

    def visit(parser: argparse.ArgumentParser, spellings: list[tuple[str, ...]], path: tuple[str, ...]) -> None:
        out.append(Node(path, spellings, parser))
        for name, aliases, sub, text in children(parser):
            if not text:
                continue  # hidden commands (no help) are not offered
            visit(sub, [(*s, n) for s in spellings for n in (name, *aliases)], (*path, name))

    visit(root, [()], ())
    return out


def _case_label(node: Node) -> str:
    return "|".join(shlex.quote(" ".join(s)) if s else "''" for s in node.names)


def bash_script(root: argparse.ArgumentParser) -> str:
    tree = nodes(root)
    subs, flags, valued, kinds = [], [], [], []
    for node in tree:
        label = _case_label(node)
        if node.subs:
            subs.append(f"        {label}) echo {shlex.quote(' '.join(n for n, _ in node.subs))} ;;")
        if node.flags:
            flags.append(f"        {label}) echo {shlex.quote(' '.join(node.flags))} ;;")
        if node.valued:
            valued.append(f"        {label}) echo {shlex.quote(' '.join(node.valued))} ;;")
        if node.kind:
            kinds.append(f"        {label}) echo {node.kind} ;;")
    listers = "\n".join(f"        {kind}) {cmd} 2>/dev/null ;;" for kind, cmd in _LISTERS.items())
    nl = "\n"
    return f"""# bash completion for shoal                                -*- shell-script -*-
# Generated by `shoal completion bash` from shoal's own command tree: regenerate it after an
# upgrade. Load it with:  source <(shoal completion bash)

__shoal_subs() {{
    case "$1" in
{nl.join(subs)}
    esac
}}

__shoal_flags() {{
    case "$1" in
{nl.join(flags)}
    esac
}}

__shoal_valued() {{
    case "$1" in
{nl.join(valued)}
    esac
}}

__shoal_kind() {{
    case "$1" in
{nl.join(kinds)}
    esac
}}

{_UP_FUNCTION}

__shoal_names() {{
    case "$1" in
{listers}
    esac
}}

# COMP_WORDS[n]: bash indexes arrays from 0, zsh from 1
__shoal_word() {{
    if [[ -n ${{ZSH_VERSION:-}} ]]; then
        printf '%s' "${{COMP_WORDS[$1 + 1]}}"
    else
        printf '%s' "${{COMP_WORDS[$1]}}"
    fi
}}

_shoal() {{
    # no variable named `path`: zsh (running this through bashcompinit) ties it to PATH
    local cur cmdpath="" i word sub positional=0
    cur="$(__shoal_word "$COMP_CWORD")"
    COMPREPLY=()
    # the command path so far: subcommands in order, skipping flags and the values they take
    for (( i = 1; i < COMP_CWORD; i++ )); do
        word="$(__shoal_word "$i")"
        if [[ $word == -* ]]; then
            if [[ $word != *=* && " $(__shoal_valued "$cmdpath") " == *" $word "* ]]; then
                (( i++ ))
            fi
            continue
        fi
        if (( positional == 0 )) && [[ " $(__shoal_subs "$cmdpath") " == *" $word "* ]]; then
            cmdpath="${{cmdpath:+$cmdpath }}$word"
        else
            positional=1
        fi
    done
    local prev
    prev="$(__shoal_word "$(( COMP_CWORD - 1 ))")"
    if (( COMP_CWORD > 1 )) && [[ $prev == -* && $prev != *=* && " $(__shoal_valued "$cmdpath") " == *" $prev "* ]]; then
        return 0  # a flag's value: nothing shoal can guess
    fi
    if [[ $cur == -* ]]; then
        COMPREPLY=( $(compgen -W "$(__shoal_flags "$cmdpath")" -- "$cur") )
        return 0
    fi
    sub="$(__shoal_subs "$cmdpath")"
    if [[ -n $sub ]] && (( positional == 0 )); then
        COMPREPLY=( $(compgen -W "$sub" -- "$cur") )
        return 0
    fi
    local kind
    kind="$(__shoal_kind "$cmdpath")"
    if [[ -n $kind ]]; then
        COMPREPLY=( $(compgen -W "$(__shoal_names "$kind")" -- "$cur") )
        return 0
    fi
    COMPREPLY=( $(compgen -f -- "$cur") )
}}

complete -o default -F _shoal shoal
"""


def zsh_script(root: argparse.ArgumentParser) -> str:
    """zsh runs the bash function through bashcompinit (zsh's own emulation of `complete`)."""
    return ("#compdef shoal\n# zsh completion for shoal, generated by `shoal completion zsh`.\n"
            "# Put it in a directory of $fpath as _shoal, or: source <(shoal completion zsh)\n"
            "(( $+functions[compdef] )) || { autoload -U +X compinit && compinit }\n"
            "autoload -U +X bashcompinit && bashcompinit\n" + bash_script(root).split("\n", 3)[3])


def _fish_quote(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def fish_script(root: argparse.ArgumentParser, descriptions: bool = True) -> str:
    tree = nodes(root)
    lines = ["# fish completion for shoal, generated by `shoal completion fish`.",
             "# Load it with:  shoal completion fish | source",
             "",
             "function __shoal_subs",
             "    switch $argv[1]"]
    for node in tree:
        if node.subs:
            labels = " ".join(_fish_quote(" ".join(s)) for s in node.names)
            lines.append(f"        case {labels}")
            lines.append(f"            echo {' '.join(n for n, _ in node.subs)}")
    lines += ["    end", "end", "",
              "function __shoal_path --description 'the shoal command path typed so far'",
              "    set -l path ''",
              "    for word in (commandline -opc)[2..-1]",
              "        string match -q -- '-*' $word; and continue",
              "        if contains -- $word (string split ' ' (__shoal_subs \"$path\"))",
              "            set path (string trim \"$path $word\")",
              "        else",
              "            break",
              "        end",
              "    end",
              "    echo $path",
              "end", "",
              "function __shoal_at",
              "    test (__shoal_path) = \"$argv\"",
              "end", "",
              "function __shoal_up",
              "    set -l run $SHOAL_RUN",
              "    test -z \"$run\"; and set -q SHOAL_ROOT; and set run $SHOAL_ROOT/run",
              "    test -z \"$run\"; and set run /run/shoal",
              "    set -l sock $SHOAL_SOCKET",
              "    test -z \"$sock\"; and set sock $run/shoal.sock",
              "    test -S $sock",
              "end", "",
              "function __shoal_names",
              "    switch $argv[1]",
              *[f"        case {kind}\n            {cmd.replace('&&', '; and')} 2>/dev/null"
                for kind, cmd in _LISTERS.items()],
              "    end",
              "end", "",
              "complete -c shoal -f"]
    for node in tree:
        cond = _fish_quote("__shoal_at " + " ".join(node.path))
        for name, text in node.subs:
            described = f" -d {_fish_quote(text)}" if descriptions else ""
            lines.append(f"complete -c shoal -n {cond} -a {_fish_quote(name)}{described}")
        for action in node.parser._actions:
            if not action.option_strings or action.help == argparse.SUPPRESS:
                continue
            parts = [f"complete -c shoal -n {cond}"]
            for option in action.option_strings:
                if option.startswith("--"):
                    parts.append(f"-l {option[2:]}")
                elif len(option) == 2:
                    parts.append(f"-s {option[1]}")
                else:
                    parts.append(f"-o {option[1:]}")
            if action.nargs != 0:
                parts.append("-r")
            if action.help and descriptions:
                parts.append(f"-d {_fish_quote(action.help.splitlines()[0])}")
            lines.append(" ".join(parts))
        if node.kind:
            lines.append(f"complete -c shoal -n {cond} -a '(__shoal_names {node.kind})'")
    return "\n".join(lines) + "\n"


def cmd_completion(args: argparse.Namespace) -> int:
    from shoal.cli.main import build_parser  # the whole tree, every group loaded

    root = build_parser(["__completion__"])
    if args.shell == "fish":
        script = fish_script(root, descriptions=not args.no_descriptions)
    else:
        script = {"bash": bash_script, "zsh": zsh_script}[args.shell](root)
    sys.stdout.write(script)
    return 0


_HOW = {
    "bash": "To load completions in your current shell session:\n\n    source <(shoal completion bash)\n\n"
            "To load completions for every new session, execute once:\n\n"
            "    shoal completion bash > /etc/bash_completion.d/shoal",
    "zsh": "To load completions in your current shell session:\n\n    source <(shoal completion zsh)\n\n"
           "To load completions for every new session, execute once:\n\n"
           "    shoal completion zsh > \"${fpath[1]}/_shoal\"",
    "fish": "To load completions in your current shell session:\n\n    shoal completion fish | source\n\n"
            "To load completions for every new session, execute once:\n\n"
            "    shoal completion fish > ~/.config/fish/completions/shoal.fish",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser(
        "completion", help="Generate the autocompletion script for the specified shell",
        description="Generate the autocompletion script for shoal for the specified shell.\n"
                    "See each sub-command's help for details on how to use the generated script.")
    sub = group.add_subparsers(dest="completion_shell", metavar="COMMAND")
    for shell in ("bash", "fish", "zsh"):
        p = sub.add_parser(shell, help=f"Generate the autocompletion script for {shell}",
                           description=f"Generate the autocompletion script for the {shell} shell.\n\n{_HOW[shell]}")
        p.add_argument("--no-descriptions", action="store_true", help="disable completion descriptions")
        p.set_defaults(func=cmd_completion, shell=shell)
    group.set_defaults(func=lambda _a: group.print_help() or 0)
