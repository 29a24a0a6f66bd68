"""`--help` as docker/cli prints it (cli/cobra.go's usage template and pflag's FlagUsages).

    Usage:  shoal ps [OPTIONS]

    List containers

    Aliases:
      shoal container ls, shoal container list, shoal container ps, shoal ps

    Options:
      -a, --all             Show all containers (default shows just running)
      -f, --filter filter   Filter output based on conditions provided

The argparse tree stays the source of truth: the usage line, the aliases and the flag table are
derived from it, so they cannot drift from what the parser accepts.
"""

from __future__ import annotations

import argparse
import re
from typing import Any

# A top-level shortcut and the group command it stands for, where the names differ
# (docker/cli's "aliases" annotations).
_SHORTCUTS = {"ps": ("container", "ls"), "images": ("image", "ls"), "rmi": ("image", "rm"),
              "events": ("system", "events"), "info": ("system", "info")}
# The groups whose verbs also exist at the top level under the same name.
_SHORTCUT_GROUPS = ("container", "image")
# Top-level commands of their own, though a group has a verb of that name: `docker inspect` is
# system inspect (any object), not `container inspect`'s shortcut.
_NOT_SHORTCUTS = ("inspect",)


def _columns() -> int:
    """shutil.get_terminal_size().columns, without importing shutil."""
    import os
    import sys

    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class DockerArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose help reads as Docker's. Subparsers made from it are of the same
    class (argparse's add_subparsers default), so the whole tree gets it."""

    short_help: str | None = None  # the one line the parent's command list shows
    parent: DockerArgumentParser | None = None

    def format_help(self) -> str:
        return docker_help(self)

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse makes a formatter per add_argument, and its own default width comes from
        # shutil.get_terminal_size: importing shutil (with bz2, lzma, zlib) cost every command ~4 ms.
        return self.formatter_class(prog=self.prog, width=_columns() - 2)  # type: ignore[call-arg]

    # The parser of the command being parsed: argparse reports unknown flags from the root
    # parser, and docker names the command they were given to.
    _active: argparse.ArgumentParser | None = None

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        DockerArgumentParser._active = self
        return super().parse_known_args(args, namespace)

    def error(self, message: str):  # type: ignore[no-untyped-def]
        """argparse's complaints in docker/cli's words and exit codes (cli/cobra.go
        FlagErrorFunc: 125; cli/required.go: 1)."""
        import sys

        parser = DockerArgumentParser._active or self
        text, code = docker_error(parser, message)
        sys.stderr.write(text + "\n")
        sys.exit(code)


def sub_actions(parser: argparse.ArgumentParser) -> list[argparse._SubParsersAction]:
    return [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]


def children(parser: argparse.ArgumentParser) -> list[tuple[str, list[str], argparse.ArgumentParser, str]]:
    """(name, aliases, parser, help) of each subcommand, in the order they were added."""
    out = []
    for action in sub_actions(parser):
        helps = {a.dest: a.help or "" for a in action._choices_actions}
        seen: dict[int, tuple[str, list[str], argparse.ArgumentParser, str]] = {}
        for name, sub in action.choices.items():
            if id(sub) in seen:
                seen[id(sub)][1].append(name)
            else:
                seen[id(sub)] = (name, [], sub, helps.get(name, ""))
        for entry in seen.values():
            # a second parser registered under another name with the same help and flags
            # (`service ls` and `service list`) is an alias, as cobra's Aliases
            twin = next((o for o in out if o[3] and o[3] == entry[3] and _signature(o[2]) == _signature(entry[2])),
                        None)
            if twin is not None:
                twin[1].append(entry[0])
                twin[1].extend(entry[1])
            else:
                out.append(entry)
    return out


def _signature(parser: argparse.ArgumentParser) -> tuple[object, ...]:
    return tuple((tuple(a.option_strings), a.dest, a.nargs) for a in parser._actions
                 if not isinstance(a, argparse._HelpAction))


def link_tree(parser: argparse.ArgumentParser) -> None:
    """Give every subparser its parent and its one-line help (argparse keeps them apart)."""
    for _name, _aliases, sub, text in children(parser):
        sub.parent = parser  # type: ignore[attr-defined]
        sub.short_help = text  # type: ignore[attr-defined]
        link_tree(sub)


def _path(parser: argparse.ArgumentParser) -> list[str]:
    return parser.prog.split()[1:]


def _root(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    while getattr(parser, "parent", None) is not None:
        parser = parser.parent  # type: ignore[assignment]
    return parser


def _lookup(root: argparse.ArgumentParser, path: list[str]) -> tuple[str, list[str], argparse.ArgumentParser, str] | None:
    node: tuple[str, list[str], argparse.ArgumentParser, str] | None = None
    current = root
    for word in path:
        node = next((c for c in children(current) if word == c[0] or word in c[1]), None)
        if node is None:
            return None
        current = node[2]
    return node


def aliases(parser: argparse.ArgumentParser) -> list[str]:
    """Every command line that runs this command: `shoal container ls, ..., shoal ps`."""
    path = _path(parser)
    if not path:
        return []
    root = _root(parser)
    prog = root.prog
    group_path: list[str] | None = None
    if len(path) == 1:  # a top-level shortcut: its group twin, if any
        if path[0] in _SHORTCUTS:
            group_path = list(_SHORTCUTS[path[0]])
        elif path[0] not in _NOT_SHORTCUTS:
            for group in _SHORTCUT_GROUPS:
                if _lookup(root, [group, path[0]]) is not None:
                    group_path = [group, path[0]]
                    break
    elif len(path) == 2:
        group_path = path
    if group_path is None:
        node = _lookup(root, path)
        if node is None or not node[1]:
            return []
        return [" ".join([prog, *path[:-1], n]) for n in [node[0], *node[1]]]
    node = _lookup(root, group_path)
    if node is None:
        return []
    lines = [" ".join([prog, *group_path[:-1], n]) for n in [node[0], *node[1]]]
    shortcut = next((s for s, g in _SHORTCUTS.items() if list(g) == [group_path[0], node[0]]), None)
    if shortcut is None and group_path[0] in _SHORTCUT_GROUPS and node[0] not in _NOT_SHORTCUTS:
        shortcut = node[0]
    if shortcut is not None and _lookup(root, [shortcut]) is not None:
        lines.append(f"{prog} {shortcut}")
    return lines if len(lines) > 1 else []


def _singular(name: str) -> str:
    name = name.upper().replace("_", "-")
    if name.endswith("IES"):
        return name[:-3] + "Y"
    if name.endswith("S") and not name.endswith("SS"):
        return name[:-1]
    return name


def usage_line(parser: argparse.ArgumentParser) -> str:
    """docker's UseLine: `shoal ps [OPTIONS]`, `shoal stop [OPTIONS] CONTAINER [CONTAINER...]`."""
    if parser.usage:
        return parser.usage.replace("%(prog)s", parser.prog)
    words = [parser.prog]
    if sub_actions(parser):
        if _options(parser):
            words.append("[OPTIONS]")
        words.append("COMMAND")
        return " ".join(words)
    if _options(parser):
        words.append("[OPTIONS]")
    for action in parser._actions:
        if action.option_strings or isinstance(action, argparse._SubParsersAction):
            continue
        if action.help == argparse.SUPPRESS:
            continue
        name = action.metavar if isinstance(action.metavar, str) else _singular(action.dest)
        if action.nargs == argparse.REMAINDER:
            words.append("[COMMAND] [ARG...]" if name in ("COMMAND", "CMD") else f"[{name}...]")
        elif action.nargs == "+":
            words.append(f"{name} [{name}...]")
        elif action.nargs == "*":
            words.append(f"[{name}...]")
        elif action.nargs == "?":
            words.append(f"[{name}]")
        else:
            words.append(name)
    return " ".join(words)


def _options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    # -h/--help is hidden in docker's help (cli/cobra.go marks it Hidden)
    return [a for a in parser._actions if a.option_strings and a.help != argparse.SUPPRESS
            and not isinstance(a, argparse._HelpAction)]


def _varname(action: argparse.Action) -> str:
    """pflag's type word after the flag: `string`, `int`, `list`, or the metavar given."""
    if action.nargs == 0:
        return ""
    if action.nargs == "?" and (isinstance(action.const, bool) or action.const in ("true", "false")):
        return ""  # --sig-proxy, --pause, --human: pflag bools that also take =false
    if isinstance(action.metavar, str):
        return action.metavar
    if action.dest == "filter":
        return "filter"  # docker/cli's opts.FilterOpt type
    if isinstance(action, argparse._AppendAction):
        return "list"
    if action.type is int:
        return "int"
    if action.type is float:
        return "float"
    return "string"


def _zero(value: Any) -> bool:
    return value in (None, False, 0, "", [], {}) or value is argparse.SUPPRESS


def flag_usages(parser: argparse.ArgumentParser) -> str:
    """pflag's FlagUsages: flags sorted by long name, help aligned two columns past the longest
    flag, a help's own lines indented to that column, `(default X)` for a non-zero default."""
    rows: list[tuple[str, str]] = []
    for action in sorted(_options(parser), key=lambda a: _long(a).lstrip("-")):
        shorts = [o for o in action.option_strings if not o.startswith("--")]
        line = f"  {shorts[0]}, {_long(action)}" if shorts else f"      {_long(action)}"
        var = _varname(action)
        if var:
            line += " " + var
        text = action.help or ""
        text = text.replace("%(default)s", str(action.default))
        default = action.default
        if not _zero(default) and "(default" not in text and not isinstance(action, argparse._StoreConstAction):
            text += f' (default "{default}")' if isinstance(default, str) else f" (default {_go(default)})"
        rows.append((line, text))
    if not rows:
        return ""
    width = max(len(line) for line, _ in rows) + 1
    out = []
    for line, text in rows:
        body = text.replace("\n", "\n" + " " * (width + 2))
        out.append(f"{line}{' ' * (width - len(line))}  {body}".rstrip())
    return "\n".join(out)


def _go(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(str(v) for v in value) + "]"
    return str(value)


def _long(action: argparse.Action) -> str:
    longs = [o for o in action.option_strings if o.startswith("--")]
    return longs[0] if longs else action.option_strings[0]


def docker_help(parser: argparse.ArgumentParser) -> str:
    short = getattr(parser, "short_help", None)
    description = parser.description or short or ""
    parts = [f"\nUsage:  {usage_line(parser)}\n"]
    if description:
        parts.append(f"{description.strip()}\n")
    names = aliases(parser)
    if names:
        parts.append("Aliases:\n  " + ", ".join(names) + "\n")
    flags = flag_usages(parser)
    if flags:
        parts.append("Options:\n" + flags + "\n")
    # cobra sorts commands by name and leaves hidden ones (no help text here) out
    subs = sorted((c for c in children(parser) if c[3]), key=lambda c: c[0])
    if subs:
        groups = [c for c in subs if children(c[2])]
        verbs = [c for c in subs if not children(c[2])]
        width = max(len(c[0]) for c in subs)
        pad = max(width, 11)  # cobra's minimum NamePadding
        if groups and verbs and getattr(parser, "parent", None) is None:
            parts.append("Management Commands:\n" + "\n".join(f"  {c[0].ljust(pad)} {c[3]}" for c in groups) + "\n")
            parts.append("Commands:\n" + "\n".join(f"  {c[0].ljust(pad)} {c[3]}" for c in verbs) + "\n")
        else:
            parts.append("Commands:\n" + "\n".join(f"  {c[0].ljust(pad)} {c[3]}" for c in subs) + "\n")
        parts.append(f"Run '{parser.prog} COMMAND --help' for more information on a command.\n")
    return "\n".join(parts)


def option_strings(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in _options(parser) for o in a.option_strings]


_WORD = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """Every (path, parser) of the tree, each parser once (an alias is not walked again)."""
    yield path, parser
    for name, _aliases, sub, _text in children(parser):
        if _WORD.match(name):
            yield from walk(sub, (*path, name))


def _positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if not a.option_strings and not isinstance(a, argparse._SubParsersAction)]


def _plural(n: int) -> str:
    return f"{n} argument" if n == 1 else f"{n} arguments"


# strconv.ParseBool's spellings.
_PARSE_BOOL = ("1", "t", "T", "TRUE", "true", "True", "0", "f", "F", "FALSE", "false", "False")


def docker_error(parser: argparse.ArgumentParser, message: str) -> tuple[str, int]:
    """(text, exit code) for one of argparse's error messages."""
    prog = parser.prog
    usage = usage_line(parser)
    flag_error = f"\n\nUsage:  {usage}\n\nRun '{prog} --help' for more information"
    binary = prog.split()[0]
    m = re.match(r"unrecognized arguments: (.*)", message)
    if m:
        first = m.group(1).split()[0]
        if first.startswith("--"):
            return f"unknown flag: {first.split('=')[0]}{flag_error}", 125
        if first.startswith("-") and len(first) > 1:
            return f"unknown shorthand flag: '{first[1]}' in {first}{flag_error}", 125
        if not _positionals(parser):
            return (f"{binary}: '{prog}' accepts no arguments\n\nUsage:  {usage}\n\n"
                    f"Run '{prog} --help' for more information"), 1
        return _count_error(parser, binary, usage), 1
    if message.startswith("the following arguments are required"):
        return _count_error(parser, binary, usage), 1
    m = re.match(r"argument (\S+): expected one argument", message)
    if m:
        return f"flag needs an argument: {_flag_names(parser, m.group(1))[-1]}{flag_error}", 125
    m = re.match(r"argument (\S+): invalid (\w+) value: '(.*)'", message, re.S)
    if m:
        why = {"int": f'strconv.ParseInt: parsing "{m.group(3)}": invalid syntax',
               "float": f'strconv.ParseFloat: parsing "{m.group(3)}": invalid syntax'}.get(m.group(2), "invalid value")
        names = ", ".join(_flag_names(parser, m.group(1)))
        return f'invalid argument "{m.group(3)}" for "{names}" flag: {why}{flag_error}', 125
    m = re.match(r'argument (\S+): (strconv\.\w+: parsing "(.*)": .*)', message, re.S)
    if m:  # a type function's refusal in strconv's words (a bool flag given =x)
        names = ", ".join(_flag_names(parser, m.group(1)))
        return f'invalid argument "{m.group(3)}" for "{names}" flag: {m.group(2)}{flag_error}', 125
    m = re.match(r"argument (\S+): ignored explicit argument '(.*)'", message, re.S)
    if m and m.group(2) not in _PARSE_BOOL:
        # a bool flag given `=x` that strconv.ParseBool refuses, as pflag says it (a valid
        # spelling reaching here is a bool flag without its `=false` forms: argparse's words)
        names = ", ".join(_flag_names(parser, m.group(1)))
        return (f'invalid argument "{m.group(2)}" for "{names}" flag: strconv.ParseBool: parsing '
                f'"{m.group(2)}": invalid syntax{flag_error}'), 125
    m = re.match(r"argument (\S+): invalid choice: '(.*?)'", message, re.S)
    if m and m.group(1) in ("COMMAND", "command") or (m and not m.group(1).startswith("-")):
        return f"{binary}: unknown command: {prog} {m.group(2)}\n\nRun '{prog} --help' for more information", 1
    if m:
        names = ", ".join(_flag_names(parser, m.group(1)))
        return f'invalid argument "{m.group(2)}" for "{names}" flag{flag_error}', 125
    return f"{message}{flag_error}", 125


def _count_error(parser: argparse.ArgumentParser, binary: str, usage: str) -> str:
    """cli/required.go's words for a wrong number of arguments, by the rule the command's
    positionals make: ExactArgs (`requires 2 arguments`), RequiresRangeArgs (`requires at least 1
    and at most 2 arguments`), RequiresMaxArgs (`requires at most 1 argument`), all `Run '...
    --help'`; RequiresMinArgs (`requires at least 1 argument`) alone says `See '... --help'`."""
    prog = parser.prog
    positionals = _positionals(parser)
    least = sum(1 for a in positionals if a.nargs in (None, "+"))
    unbounded = any(a.nargs in ("+", "*", argparse.REMAINDER) for a in positionals)
    most = sum(1 for a in positionals if a.nargs in (None, "?"))
    tail = f"\n\nUsage:  {usage}\n\nRun '{prog} --help' for more information"
    if unbounded:
        return (f"{binary}: '{prog}' requires at least {_plural(max(least, 1))}\n\nUsage:  {usage}\n\n"
                f"See '{prog} --help' for more information")
    if least == most:
        return f"{binary}: '{prog}' requires {_plural(least)}{tail}"
    if least == 0:
        return f"{binary}: '{prog}' requires at most {_plural(most)}{tail}"
    return f"{binary}: '{prog}' requires at least {least} and at most {_plural(most)}{tail}"


def _flag_names(parser: argparse.ArgumentParser, spec: str) -> list[str]:
    """`-n/--last` (argparse's) -> ["-n", "--last"] as the parser declares them."""
    wanted = set(spec.split("/"))
    for action in parser._actions:
        if wanted & set(action.option_strings):
            shorts = [o for o in action.option_strings if not o.startswith("--")]
            return [*shorts[:1], _long(action)] if shorts else [_long(action)]
    return sorted(wanted)
