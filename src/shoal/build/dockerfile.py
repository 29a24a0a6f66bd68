"""Dockerfile parser: the line grammar of buildkit's frontend/dockerfile/parser (directives,
escape token, continuations, comments, JSON forms, heredocs) and the instruction checks of
frontend/dockerfile/instructions, producing stages of typed commands.

Errors name the file and line: `Dockerfile:4: unknown instruction: RUNN`."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from shoal.build.shell import Lex, ShellError
from shoal.errors import ShoalError

_WHITESPACE = re.compile(r"[\t\v\f\r ]+")
_HEREDOC = re.compile(r"^(\d*)<<(-?)\s*([^<]*)$")
_LEADING_TABS = re.compile(r"^\t+", re.MULTILINE)
_DIRECTIVE = re.compile(r"^([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*$")
_STAGE_NAME = re.compile(r"^[a-z][a-z0-9-_.]*$")
_VALID_DIRECTIVES = {"syntax", "escape", "check"}

INSTRUCTIONS = (
    "add", "arg", "cmd", "copy", "entrypoint", "env", "expose", "from", "healthcheck", "label",
    "maintainer", "onbuild", "run", "shell", "stopsignal", "user", "volume", "workdir",
)


class DockerfileError(ShoalError):
    """A Dockerfile that cannot be parsed; the message starts with `<file>:<line>: `."""


# --- syntax tree ---------------------------------------------------------------------------------

@dataclass
class Heredoc:
    name: str
    content: str = ""
    expand: bool = True
    chomp: bool = False
    fd: int = 0

    def data(self) -> str:
        return _LEADING_TABS.sub("", self.content) if self.chomp else self.content


@dataclass
class Node:
    """One instruction as the line parser sees it (buildkit's parser.Node, flattened)."""

    cmd: str                      # as written: "RUN", "copy"
    original: str                 # the whole logical line, continuations joined
    flags: list[str]
    args: list[str]
    json: bool
    start_line: int
    end_line: int
    heredocs: list[Heredoc] = field(default_factory=list)
    child: Node | None = None     # ONBUILD's instruction


# --- commands ------------------------------------------------------------------------------------

@dataclass
class Command:
    name: str          # lower-case instruction
    code: str          # what "Step n/m : <code>" prints
    line: int


@dataclass
class KeyValueCommand(Command):        # ENV, LABEL
    pairs: list[tuple[str, str]]


@dataclass
class ArgCommand(Command):
    args: list[tuple[str, str | None]]


@dataclass
class SourceContent:                   # `COPY <<EOF /path`
    path: str
    data: str
    expand: bool


@dataclass
class CopyCommand(Command):            # COPY, ADD
    sources: list[str]
    contents: list[SourceContent]
    dest: str
    from_stage: str = ""
    chown: str = ""
    chmod: str = ""
    exclude: list[str] = field(default_factory=list)
    checksum: str = ""   # ADD --checksum: the digest an ADD'ed URL's bytes must have
    parents: bool = False
    unpack: bool | None = None   # ADD --unpack: None is the default (a local archive only)


@dataclass
class ShellFormCommand(Command):       # RUN, CMD, ENTRYPOINT
    cmdline: list[str] | None
    prepend_shell: bool
    files: list[Heredoc] = field(default_factory=list)


@dataclass
class WordCommand(Command):            # WORKDIR, USER, STOPSIGNAL, MAINTAINER
    value: str


@dataclass
class ListCommand(Command):            # EXPOSE, VOLUME, SHELL
    values: list[str]


@dataclass
class HealthcheckCommand(Command):
    test: list[str]
    interval: int = 0                  # nanoseconds, as Docker stores them
    timeout: int = 0
    start_period: int = 0
    start_interval: int = 0
    retries: int = 0


@dataclass
class OnbuildCommand(Command):
    expression: str


@dataclass
class Stage:
    base: str
    name: str                          # lower-case "AS" name or ""
    code: str
    line: int
    platform: str = ""
    commands: list[Command] = field(default_factory=list)


@dataclass
class Dockerfile:
    meta_args: list[ArgCommand]
    stages: list[Stage]
    escape: str = "\\"

    def stage_index(self, name_or_index: str) -> int | None:
        for i, stage in enumerate(self.stages):
            if stage.name and stage.name == name_or_index.lower():
                return i
        return None


# --- line parser ---------------------------------------------------------------------------------

class _Directives:
    def __init__(self) -> None:
        self.escape = "\\"
        self._cont = self._continuation_regex("\\")
        self.done = False
        self.seen: set[str] = set()

    @staticmethod
    def _continuation_regex(token: str) -> re.Pattern[str]:
        t = re.escape(token)
        return re.compile(r"([^" + t + r"])" + t + r"[ \t]*$|^" + t + r"[ \t]*$")

    def parse_line(self, line: str) -> bool:
        """True if `line` is a parser directive (only before any other line)."""
        if self.done:
            return False
        if not line.startswith("#"):
            self.done = True
            return False
        m = _DIRECTIVE.match(line[1:].lstrip())
        if not m or m.group(1).lower() not in _VALID_DIRECTIVES:
            self.done = True
            return False
        key = m.group(1).lower()
        if key in self.seen:
            raise ValueError(f"only one {key} parser directive can be used")
        self.seen.add(key)
        if key == "escape":
            value = m.group(2)
            if value not in ("`", "\\"):
                raise ValueError(f"invalid escape token '{value}' does not match ` or \\")
            self.escape = value
            self._cont = self._continuation_regex(value)
        return True

    def trim_continuation(self, line: str) -> tuple[str, bool]:
        if self._cont.search(line):
            return self._cont.sub(r"\1", line, count=1), False
        return line, True


def _is_comment(line: str) -> bool:
    s = line.lstrip()
    return s.startswith("#")


def _process_line(d: _Directives, token: str, strip_left: bool) -> str:
    token = token.rstrip("\r\n")
    if strip_left:
        token = token.lstrip()
    d.parse_line(token)
    return "" if _is_comment(token) else token


def _parse_words(rest: str, escape: str) -> list[str]:
    """buildkit parseWords: split on spaces, keep quotes and escapes for later expansion."""
    words: list[str] = []
    buf: list[str] = []
    phase = "spaces"
    quote = ""
    blank_ok = False
    i = 0
    n = len(rest)
    while i <= n:
        ch = rest[i] if i < n else ""
        if phase == "spaces":
            if i == n:
                break
            if ch.isspace():
                i += 1
                continue
            phase = "word"
        if i == n:
            if blank_ok or buf:
                words.append("".join(buf))
            break
        if phase == "word":
            if ch.isspace():
                phase = "spaces"
                if blank_ok or buf:
                    words.append("".join(buf))
                buf = []
                blank_ok = False
                i += 1
                continue
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
                phase = "quote"
            if ch == escape:
                if i + 1 == n:
                    i += 1
                    continue
                buf.append(ch)
                i += 1
                ch = rest[i]
            buf.append(ch)
            i += 1
            continue
        # inside quotes
        if ch == quote:
            phase = "word"
        if ch == escape and quote != "'":
            if i + 1 == n:
                phase = "word"
                i += 1
                continue
            buf.append(ch)
            i += 1
            ch = rest[i]
        buf.append(ch)
        i += 1
    return words


def _extract_flags(line: str, escape: str) -> tuple[str, list[str]]:
    """buildkit extractBuilderFlags: leading `--name=value` words; returns (rest, flags)."""
    words: list[str] = []
    buf: list[str] = []
    phase = "spaces"
    quote = ""
    blank_ok = False
    i = 0
    n = len(line)
    while i <= n:
        ch = line[i] if i < n else ""
        if phase == "spaces":
            if i == n:
                break
            if ch.isspace():
                i += 1
                continue
            if ch != "-" or i + 1 == n or line[i + 1] != "-":
                return line[i:], words
            phase = "word"
        if i == n:
            word = "".join(buf)
            if word != "--" and (blank_ok or word):
                words.append(word)
            break
        if phase == "word":
            if ch.isspace():
                word = "".join(buf)
                phase = "spaces"
                if word == "--":
                    return line[i:], words
                if blank_ok or word:
                    words.append(word)
                buf = []
                blank_ok = False
                i += 1
                continue
            if ch in ("'", '"'):
                quote = ch
                blank_ok = True
                phase = "quote"
                i += 1
                continue
            if ch == escape:
                if i + 1 == n:
                    i += 1
                    continue
                i += 1
                ch = line[i]
            buf.append(ch)
            i += 1
            continue
        if ch == quote:
            phase = "word"
            i += 1
            continue
        if ch == escape:
            if i + 1 == n:
                phase = "word"
                i += 1
                continue
            i += 1
            ch = line[i]
        buf.append(ch)
        i += 1
    return "", words


class _NotJSON(Exception):
    pass


def _parse_json(rest: str) -> list[str]:
    rest = rest.lstrip()
    if not rest.startswith("["):
        raise _NotJSON
    try:
        value = json.loads(rest)
    except ValueError:
        raise _NotJSON from None
    if not isinstance(value, list):
        raise _NotJSON
    if not all(isinstance(v, str) for v in value):
        raise ValueError("when using JSON array syntax, arrays must be comprised of strings only")
    return value


def _line_args(cmd: str, rest: str, escape: str) -> tuple[list[str], bool]:
    """The per-instruction line parsers of line_parsers.go: (args, is_json)."""
    if cmd in ("env", "label"):
        words = _parse_words(rest, escape)
        if not words:
            return [], False
        if "=" not in words[0]:
            parts = _WHITESPACE.split(rest, maxsplit=1)
            if len(parts) < 2:
                raise ValueError(f"{cmd.upper()} must have two arguments")
            return [parts[0], parts[1], ""], False
        out: list[str] = []
        for word in words:
            if "=" not in word:
                raise ValueError(f"Syntax error - can't find = in {json.dumps(word)}. Must be of the form: name=value")
            k, _, v = word.partition("=")
            out += [k, v, "="]
        return out, False
    if cmd == "arg":
        return _parse_words(rest, escape), False
    if cmd in ("expose", "from"):
        return ([w for w in _WHITESPACE.split(rest) if w] if rest else []), False
    if cmd in ("maintainer", "stopsignal", "user", "workdir"):
        return ([rest] if rest else []), False
    if cmd in ("cmd", "entrypoint", "run", "shell"):
        if not rest:
            return [], False
        try:
            return _parse_json(rest), True
        except _NotJSON:
            return [rest], False
    if cmd in ("add", "copy", "volume"):
        try:
            return _parse_json(rest), True
        except _NotJSON:
            return ([w for w in _WHITESPACE.split(rest) if w] if rest else []), False
    if cmd == "healthcheck":
        m = re.match(r"(\S+)\s*(.*)$", rest, re.DOTALL)
        if not m:
            return [], False
        typ, cmd_rest = m.group(1), m.group(2)
        if not cmd_rest:
            return [typ], False
        try:
            return [typ] + _parse_json(cmd_rest), True
        except _NotJSON:
            return [typ, cmd_rest], False
    return [], False


def _node_from_line(line: str, d: _Directives, start: int, end: int) -> Node:
    parts = _WHITESPACE.split(line.strip(), maxsplit=1)
    cmd = parts[0]
    flags: list[str] = []
    rest = ""
    if len(parts) == 2:
        rest, flags = _extract_flags(parts[1], d.escape)
    rest = rest.strip()
    lower = cmd.lower()
    child = None
    if lower == "onbuild":
        args: list[str] = []
        is_json = False
        if rest:
            child = _node_from_line(rest, d, start, end)
    else:
        args, is_json = _line_args(lower, rest, d.escape)
    return Node(cmd=cmd, original=line, flags=flags, args=args, json=is_json,
                start_line=start, end_line=end, child=child)


def _can_contain_heredoc(node: Node) -> bool:
    if node.cmd.lower() == "onbuild" and node.child is not None:
        node = node.child
    return node.cmd.lower() in ("add", "copy", "run") and not node.json


def parse_heredoc(word: str) -> Heredoc | None:
    """A `<<[-]WORD` token as a heredoc, or None."""
    m = _HEREDOC.match(word)
    if not m or not m.group(3):
        return None
    rest = m.group(3)
    plain = Lex("\\", skip_unset=True).process_words(rest, {})
    if len(plain) != 1:
        return None
    raw = Lex("\\", raw_quotes=True, skip_unset=True).process_words(rest, {})
    quotes = plain[0].count("'") + plain[0].count('"')
    raw_quotes = raw[0].count("'") + raw[0].count('"')
    return Heredoc(name=plain[0], expand=quotes == raw_quotes, chomp=m.group(2) == "-",
                   fd=int(m.group(1) or 0))


def check_heredoc_file_name(name: str) -> None:
    """A heredoc that becomes a file (COPY/ADD sources, a RUN script with #!) is named by its
    word: it must be a plain file name, never a path (`<<../../x` once wrote outside the image).
    BuildKit creates it in a scratch directory, where a path could not lead anywhere either."""
    if not name or "/" in name or name in (".", "..") or "\x00" in name:
        raise ValueError(f"invalid heredoc name {name!r}: a heredoc used as a file must be a plain name")


def _heredocs_from_line(line: str) -> list[Heredoc]:
    try:
        words = Lex("\\", raw_quotes=True, raw_escapes=True, skip_unset=True).process_words(line, {})
    except ShellError:
        words = []
    return [h for h in (parse_heredoc(w) for w in words) if h is not None]


# BuildKit reads a Dockerfile with bufio.Scanner, whose token (a line and its \r) is at most
# MaxScanTokenSize-1 bytes; past that the file is refused. Without the limit a single 100MB
# LABEL line took 75 s and 2GB of memory to build.
MAX_LINE = 65535


def _check_line_lengths(lines: list[str], filename: str) -> None:
    for number, raw in enumerate(lines, 1):
        body = raw[:-1] if raw.endswith("\n") else raw
        if len(body) > MAX_LINE or len(body.encode("utf-8", "surrogateescape")) > MAX_LINE:
            raise DockerfileError(f"{filename}:{number}: dockerfile line greater than max allowed size of {MAX_LINE}")


def parse_nodes(text: str, filename: str = "Dockerfile") -> tuple[list[Node], str]:
    """The raw instruction list and the escape token."""
    d = _Directives()
    lines = text.splitlines(keepends=True)
    _check_line_lengths(lines, filename)
    nodes: list[Node] = []
    current = 0
    i = 0

    def fail(msg: str, line: int) -> DockerfileError:
        return DockerfileError(f"{filename}:{line}: {msg}")

    while i < len(lines):
        raw = lines[i]
        i += 1
        if current == 0 and raw.startswith("\ufeff"):
            raw = raw[1:]
        try:
            token = _process_line(d, raw, True)
        except ValueError as exc:
            raise fail(str(exc), current + 1) from None
        current += 1
        start = current
        token, is_end = d.trim_continuation(token)
        if is_end and not token:
            continue
        buf = [token]
        while not is_end and i < len(lines):
            raw = lines[i]
            i += 1
            try:
                token = _process_line(d, raw, False)
            except ValueError as exc:
                raise fail(str(exc), current + 1) from None
            current += 1
            if _is_comment(raw):
                continue
            if not token.strip():
                continue
            token, is_end = d.trim_continuation(token)
            buf.append(token)
        line = "".join(buf)
        try:
            node = _node_from_line(line, d, start, current)
        except ValueError as exc:
            raise fail(str(exc), start) from None
        if _can_contain_heredoc(node) and "<<" in line:
            for heredoc in _heredocs_from_line(line):
                content: list[str] = []
                terminated = False
                while i < len(lines):
                    raw = lines[i]
                    i += 1
                    current += 1
                    candidate = raw.rstrip("\r\n")
                    if heredoc.chomp:
                        candidate = candidate.lstrip("\t")
                    if candidate == heredoc.name:
                        terminated = True
                        break
                    content.append(raw)
                if not terminated:
                    raise fail("unterminated heredoc", start)
                heredoc.content = "".join(content)
                node.heredocs.append(heredoc)
            node.end_line = current
        nodes.append(node)
    if not nodes:
        raise fail("file with no instructions", max(current, 1))
    return nodes, d.escape


# --- instructions --------------------------------------------------------------------------------

_FLAGS: dict[str, dict[str, str]] = {
    # name -> {flag: "string" | "bool" | "strings"}
    "copy": {"from": "string", "chown": "string", "chmod": "string", "link": "bool",
             "exclude": "strings", "parents": "bool"},
    "add": {"chown": "string", "chmod": "string", "link": "bool", "keep-git-dir": "bool",
            "checksum": "string", "unpack": "bool", "exclude": "strings"},
    "from": {"platform": "string"},
    "healthcheck": {"interval": "string", "timeout": "string", "start-period": "string",
                    "start-interval": "string", "retries": "string"},
}


def _parse_flags(name: str, flags: list[str]) -> dict[str, object]:
    """buildkit BFlags: `--name=value`, `--bool`; unknown flags are errors."""
    allowed = _FLAGS.get(name, {})
    out: dict[str, object] = {}
    for raw in flags:
        if not raw.startswith("--"):
            raise ValueError(f"Arg should start with -- : {raw}")
        body = raw[2:]
        key, has_value, value = body.partition("=")
        kind = allowed.get(key)
        if kind is None:
            if name == "run" and key in ("mount", "network", "security", "device"):
                raise ValueError(f"the --{key} option is not supported by shoal build")
            raise ValueError(f"unknown flag: {key}")
        if kind == "bool":
            if has_value and value.lower() not in ("true", "false"):
                raise ValueError(f'expecting boolean value for flag {key}, not: {value}')
            out[key] = (value.lower() != "false") if has_value else True
        else:
            if not has_value:
                raise ValueError(f"Missing a value on flag: {key}")
            if kind == "strings":
                cur = out.setdefault(key, [])
                assert isinstance(cur, list)
                cur.append(value)
            else:
                if key in out:
                    raise ValueError(f"Duplicate flag specified: {key}")
                out[key] = value
    return out


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
_DURATION_UNIT = {"ns": 1, "us": 1_000, "µs": 1_000, "ms": 1_000_000, "s": 1_000_000_000,
                  "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_go_duration(text: str) -> int:
    """Go's time.ParseDuration, in nanoseconds ("30s", "1m30s", "500ms")."""
    if text in ("0", ""):
        return 0
    pos = 0
    total = 0.0
    while pos < len(text):
        m = _DURATION_PART.match(text, pos)
        if not m:
            raise ValueError(f'time: invalid duration "{text}"')
        total += float(m.group(1)) * _DURATION_UNIT[m.group(2)]
        pos = m.end()
    return int(total)


def _interval(flags: dict[str, object], key: str) -> int:
    value = str(flags.get(key, "") or "")
    if not value:
        return 0
    ns = parse_go_duration(value)
    if 0 < ns < 1_000_000:
        raise ValueError(f'Interval "{key}" cannot be less than 1ms')
    return ns


def _kv_pairs(name: str, args: list[str]) -> list[tuple[str, str]]:
    if not args:
        raise ValueError(f"{name.upper()} requires at least one argument")
    if len(args) % 3:
        raise ValueError(f"Bad input to {name.upper()}, too many arguments")
    pairs = []
    for j in range(0, len(args), 3):
        if not args[j]:
            raise ValueError(f"{name.upper()} names can not be blank")
        pairs.append((args[j], args[j + 1]))
    return pairs


def _shell_form(node: Node, name: str, empty_as_none: bool) -> ShellFormCommand:
    args = node.args if node.json else ([" ".join(node.args)] if node.args else [])
    cmdline: list[str] | None = args
    if empty_as_none and not args:
        cmdline = None
    return ShellFormCommand(name, node.original.strip(), node.start_line, cmdline,
                            prepend_shell=not node.json, files=list(node.heredocs))


def _command(node: Node) -> Command | Stage:
    name = node.cmd.lower()
    code = node.original.strip()
    line = node.start_line
    args = node.args
    if name not in INSTRUCTIONS:
        raise ValueError(f"unknown instruction: {node.cmd}")
    flags = _parse_flags(name, node.flags)
    if name in ("env", "label"):
        return KeyValueCommand(name, code, line, _kv_pairs(name, args))
    if name == "arg":
        if not args:
            raise ValueError("ARG requires at least one argument")
        out: list[tuple[str, str | None]] = []
        for a in args:
            if "=" in a:
                k, _, v = a.partition("=")
                if not k:
                    raise ValueError("ARG names can not be blank")
                out.append((k, v))
            else:
                out.append((a, None))
        return ArgCommand(name, code, line, out)
    if name in ("copy", "add"):
        if len(args) < 2:
            raise ValueError(f"{name.upper()} requires at least two arguments, but only one was provided. "
                             "Destination could not be determined")
        dest = args[-1]
        if parse_heredoc(dest) is not None:
            raise ValueError(f"{name.upper()} cannot accept a heredoc as a destination")
        docs = {h.name: h for h in node.heredocs}
        sources: list[str] = []
        contents: list[SourceContent] = []
        for src in args[:-1]:
            h = parse_heredoc(src)
            if h is not None and h.name in docs:
                check_heredoc_file_name(h.name)
                doc = docs[h.name]
                contents.append(SourceContent(h.name, doc.data(), h.expand))
            else:
                sources.append(src)
        return CopyCommand(name, code, line, sources, contents, dest,
                           from_stage=str(flags.get("from", "")), chown=str(flags.get("chown", "")),
                           chmod=str(flags.get("chmod", "")), exclude=list(flags.get("exclude", []) or []),  # type: ignore[call-overload]
                           checksum=str(flags.get("checksum", "")), parents=flags.get("parents") is True,
                           unpack=flags.get("unpack") if isinstance(flags.get("unpack"), bool) else None)
    if name == "from":
        if len(args) == 3 and args[1].lower() == "as":
            stage_name = args[2].lower()
            if not _STAGE_NAME.fullmatch(stage_name):
                raise ValueError(f'invalid name for build stage: "{args[2]}", name can\'t start with a number or contain symbols')
        elif len(args) != 1:
            raise ValueError("FROM requires either one or three arguments")
        else:
            stage_name = ""
        return Stage(args[0], stage_name, code, line, platform=str(flags.get("platform", "")))
    if name == "onbuild":
        if node.child is None:
            raise ValueError("ONBUILD requires at least one argument")
        trigger = node.child.cmd.upper()
        if trigger == "ONBUILD":
            raise ValueError("Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed")
        if trigger in ("MAINTAINER", "FROM"):
            raise ValueError(f"{trigger} isn't allowed as an ONBUILD trigger")
        _command(node.child)   # validate the trigger now rather than in a child build
        expression = re.sub(r"(?i)^\s*ONBUILD\s*", "", node.original)
        for h in node.heredocs:
            expression += "\n" + h.content + h.name
        return OnbuildCommand(name, code, line, expression)
    if name in ("workdir", "user", "stopsignal", "maintainer"):
        if len(args) != 1:
            raise ValueError(f"{name.upper()} requires exactly one argument")
        return WordCommand(name, code, line, args[0])
    if name == "run":
        return _shell_form(node, name, False)
    if name == "cmd":
        return _shell_form(node, name, False)
    if name == "entrypoint":
        return _shell_form(node, name, True)
    if name == "shell":
        if not args:
            raise ValueError("SHELL requires at least one argument")
        if not node.json:
            raise ValueError("SHELL requires the arguments to be in JSON form")
        return ListCommand(name, code, line, list(args))
    if name == "expose":
        if not args:
            raise ValueError("EXPOSE requires at least one argument")
        return ListCommand(name, code, line, sorted(args))
    if name == "volume":
        if not args:
            raise ValueError("VOLUME requires at least one argument")
        values = [v.strip() for v in args]
        if any(not v for v in values):
            raise ValueError("VOLUME specified can not be an empty string")
        return ListCommand(name, code, line, values)
    if name == "healthcheck":
        if not args:
            raise ValueError("HEALTHCHECK requires at least one argument")
        typ = args[0].upper()
        rest = args[1:]
        if typ == "NONE":
            if rest:
                raise ValueError("HEALTHCHECK NONE takes no arguments")
            return HealthcheckCommand(name, code, line, ["NONE"])
        if typ != "CMD":
            raise ValueError(f'Unknown type "{typ}" in HEALTHCHECK (try CMD)')
        if not rest:
            raise ValueError("Missing command after HEALTHCHECK CMD")
        test = ["CMD"] + rest if node.json else ["CMD-SHELL", " ".join(rest)]
        retries = 0
        if flags.get("retries"):
            try:
                retries = int(str(flags["retries"]))
            except ValueError:
                raise ValueError(f'strconv.ParseInt: parsing "{flags["retries"]}": invalid syntax') from None
            if retries < 0:
                raise ValueError(f"--retries cannot be negative ({retries})")
        return HealthcheckCommand(name, code, line, test, _interval(flags, "interval"),
                                  _interval(flags, "timeout"), _interval(flags, "start-period"),
                                  _interval(flags, "start-interval"), retries)
    raise ValueError(f"unknown instruction: {node.cmd}")


def parse_onbuild_trigger(expression: str, filename: str = "ONBUILD") -> Command:
    """A recorded ONBUILD trigger back as a command (for images built FROM this one)."""
    nodes, _ = parse_nodes(expression, filename)
    if len(nodes) != 1:
        raise DockerfileError("onbuild trigger should be a single expression")
    cmd = _command(nodes[0])
    if isinstance(cmd, Stage):
        raise DockerfileError("FROM isn't allowed as an ONBUILD trigger")
    return cmd


def parse(text: str, filename: str = "Dockerfile") -> Dockerfile:
    nodes, escape = parse_nodes(text, filename)
    meta_args: list[ArgCommand] = []
    stages: list[Stage] = []
    for node in nodes:
        try:
            cmd = _command(node)
        except ValueError as exc:
            raise DockerfileError(f"{filename}:{node.start_line}: {exc}") from None
        if isinstance(cmd, Stage):
            stages.append(cmd)
            continue
        if not stages:
            if isinstance(cmd, ArgCommand):
                meta_args.append(cmd)
                continue
            raise DockerfileError(f"{filename}:{node.start_line}: no build stage in current context")
        stages[-1].commands.append(cmd)
    if not stages:
        raise DockerfileError(f"{filename}:{nodes[-1].end_line}: no build stage in current context")
    return Dockerfile(meta_args, stages, escape)
