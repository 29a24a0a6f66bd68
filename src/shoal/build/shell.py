"""Dockerfile word splitting and variable expansion, ported from buildkit's shell lexer
(frontend/dockerfile/shell/lex.go): quotes, the escape token, $VAR, ${VAR}, ${VAR:-x},
${VAR-x}, ${VAR:+x}, ${VAR+x}, ${VAR:?x}, ${VAR#p}, ${VAR##p}, ${VAR%p}, ${VAR%%p},
${VAR/p/r}, ${VAR//p/r}. Nested expansions work because the word after a modifier is
processed recursively, as buildkit does."""

from __future__ import annotations

import re
from collections.abc import Mapping

from shoal.gofmt import quote as _go_quote

_SPECIAL_PARAMS = set("@*#?-$!0")
_EOF = ""


# What all of a build's variable substitutions may produce together: far above any real
# Dockerfile's needs (an environment variable longer than 128KiB cannot even reach a RUN step:
# execve's MAX_ARG_STRLEN), far below what would exhaust a node's memory.
EXPANSION_LIMIT = 16 << 20

# How deep `${a:-${b:-...}}` may nest. buildkit's lexer recurses as this one does, on Go's
# growing stack; Python's stops near 1000 frames (~300 levels): a RecursionError traceback.
MAX_NESTING = 128


class ShellError(ValueError):
    """A malformed word (unbalanced quote, bad substitution)."""


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else _EOF

    def next(self) -> str:
        if self.pos >= len(self.text):
            return _EOF
        ch = self.text[self.pos]
        self.pos += 1
        return ch


class _Words:
    def __init__(self) -> None:
        self.buf: list[str] = []
        self.words: list[str] = []
        self.in_word = False

    def add_char(self, ch: str) -> None:
        if ch.isspace():
            if self.in_word and self.buf:
                self.words.append("".join(self.buf))
                self.buf = []
                self.in_word = False
        else:
            self.add_raw_char(ch)

    def add_raw_char(self, ch: str) -> None:
        self.buf.append(ch)
        self.in_word = True

    def add_string(self, s: str) -> None:
        for ch in s:
            self.add_char(ch)

    def add_raw_string(self, s: str) -> None:
        self.buf.append(s)
        self.in_word = True

    def get(self) -> list[str]:
        if self.buf:
            self.words.append("".join(self.buf))
            self.buf = []
            self.in_word = False
        return self.words


class Lex:
    """Expands one Dockerfile word (or splits a line into words) against an environment."""

    def __init__(self, escape: str = "\\", raw_quotes: bool = False, raw_escapes: bool = False,
                 skip_unset: bool = False) -> None:
        self.escape = escape
        self.raw_quotes = raw_quotes
        self.raw_escapes = raw_escapes
        self.skip_unset = skip_unset
        # Bytes substituted so far by this lexer (one per build): `ENV A=$A$A` forty times
        # asks for 2^40 bytes, and the builder (a daemon's too) would grow until the OOM killer.
        self.expanded = 0

    def process_word(self, word: str, env: Mapping[str, str]) -> str:
        return self._process(word, env)[0]

    def process_words(self, word: str, env: Mapping[str, str]) -> list[str]:
        return self._process(word, env)[1]

    def _process(self, word: str, env: Mapping[str, str]) -> tuple[str, list[str]]:
        sw = _ShellWord(self, env, word)
        try:
            return sw.process_stop_on(_EOF, self.raw_escapes)
        except ShellError as exc:
            raise ShellError(f"failed to process {_go_quote(word)}: {exc}") from None


class _ShellWord:
    def __init__(self, lex: Lex, env: Mapping[str, str], text: str) -> None:
        self.lex = lex
        self.env = env
        self.scanner = _Scanner(text)
        self.raw_escapes = lex.raw_escapes
        self.depth = -1   # the word itself is level 0

    def process_stop_on(self, stop: str, raw_escapes: bool) -> tuple[str, list[str]]:
        result: list[str] = []
        words = _Words()
        saved = self.raw_escapes
        self.raw_escapes = raw_escapes
        self.depth += 1
        try:
            if self.depth > MAX_NESTING:
                raise ShellError(f"substitutions nested more than {MAX_NESTING} deep")
            sc = self.scanner
            esc = self.lex.escape
            while sc.peek() != _EOF:
                ch = sc.peek()
                if stop != _EOF and ch == stop:
                    sc.next()
                    return "".join(result), words.get()
                if ch in ("$", "<", "'", '"'):
                    if ch == "$":
                        tmp = self.process_dollar()
                    elif ch == "<":
                        tmp = self.process_possible_heredoc()
                    elif ch == "'":
                        tmp = self.process_single_quote()
                    else:
                        tmp = self.process_double_quote()
                    result.append(tmp)
                    if ch == "$":
                        words.add_string(tmp)
                    else:
                        words.add_raw_string(tmp)
                    continue
                ch = sc.next()
                if ch == esc:
                    if self.raw_escapes:
                        words.add_raw_char(ch)
                        result.append(ch)
                    ch = sc.next()
                    if ch == _EOF:
                        break
                    words.add_raw_char(ch)
                else:
                    words.add_char(ch)
                result.append(ch)
            if stop != _EOF:
                raise ShellError(f"unexpected end of statement while looking for matching {stop}")
            return "".join(result), words.get()
        finally:
            self.raw_escapes = saved
            self.depth -= 1

    def process_single_quote(self) -> str:
        sc = self.scanner
        out: list[str] = []
        ch = sc.next()
        if self.lex.raw_quotes:
            out.append(ch)
        while True:
            ch = sc.next()
            if ch == _EOF:
                raise ShellError("unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                if self.lex.raw_quotes:
                    out.append(ch)
                return "".join(out)
            out.append(ch)

    def process_double_quote(self) -> str:
        sc = self.scanner
        esc = self.lex.escape
        out: list[str] = []
        ch = sc.next()
        if self.lex.raw_quotes:
            out.append(ch)
        while True:
            p = sc.peek()
            if p == _EOF:
                raise ShellError("unexpected end of statement while looking for matching double-quote")
            if p == '"':
                ch = sc.next()
                if self.lex.raw_quotes:
                    out.append(ch)
                return "".join(out)
            if p == "$":
                out.append(self.process_dollar())
                continue
            ch = sc.next()
            if ch == esc:
                if self.raw_escapes:
                    out.append(ch)
                nxt = sc.peek()
                if nxt == _EOF:
                    continue
                if nxt in ('"', "$", esc):
                    ch = sc.next()
            out.append(ch)

    def _get_env(self, name: str) -> tuple[str, bool]:
        if name in self.env:
            value = self.env[name]
            self.lex.expanded += len(value)
            if self.lex.expanded > EXPANSION_LIMIT:
                raise ShellError(f"variable expansion exceeds {EXPANSION_LIMIT >> 20}MiB in this build")
            return value, True
        return "", False

    def process_dollar(self) -> str:
        sc = self.scanner
        sc.next()
        if sc.peek() != "{":
            name = self.process_name()
            if name == "":
                return "$"
            value, found = self._get_env(name)
            if not found and self.lex.skip_unset:
                return "$" + name
            return value
        sc.next()
        if sc.peek() == _EOF:
            raise ShellError("syntax error: missing '}'")
        if sc.peek() in ("{", "}", ":"):
            raise ShellError("syntax error: bad substitution")
        name = self.process_name()
        ch = sc.next()
        chs = ch
        null_is_unset = False
        if ch == _EOF:
            raise ShellError("syntax error: missing '}'")
        if ch == "}":
            value, found = self._get_env(name)
            if not found and self.lex.skip_unset:
                return "${" + name + "}"
            return value
        if ch in (":", "+", "-", "?", "#", "%"):
            if ch == ":":
                null_is_unset = True
                ch = sc.next()
                chs += ch
            raw = ch in ("#", "%")
            if null_is_unset and raw:
                raise ShellError(f"unsupported modifier ({chs}) in substitution")
            try:
                word, _ = self.process_stop_on("}", raw)
            except ShellError:
                if sc.peek() == _EOF:
                    raise ShellError("syntax error: missing '}'") from None
                raise
            value, found = self._get_env(name)
            if self.lex.skip_unset and not found:
                return "${" + name + chs + word + "}"
            if ch == "-":
                return word if (not found or (null_is_unset and value == "")) else value
            if ch == "+":
                return "" if (not found or (null_is_unset and value == "")) else word
            if ch == "?":
                if not found:
                    raise ShellError(f"{name}: {word or 'is not allowed to be unset'}")
                if null_is_unset and value == "":
                    raise ShellError(f"{name}: {word or 'is not allowed to be empty'}")
                return value
            if ch in ("%", "#"):
                greedy = False
                if word and word[0] == ch:
                    greedy = True
                    word = word[1:]
                if ch == "%":
                    return _trim_suffix(word, value, greedy)
                return _trim_prefix(word, value, greedy)
            raise ShellError(f"unsupported modifier ({chs}) in substitution")
        if ch == "/":
            replace_all = sc.peek() == "/"
            if replace_all:
                sc.next()
            try:
                pattern, _ = self.process_stop_on("/", True)
            except ShellError:
                if sc.peek() == _EOF:
                    raise ShellError("syntax error: missing '/' in ${}") from None
                raise
            try:
                replacement, _ = self.process_stop_on("}", True)
            except ShellError:
                if sc.peek() == _EOF:
                    raise ShellError("syntax error: missing '}'") from None
                raise
            value, found = self._get_env(name)
            if self.lex.skip_unset and not found:
                return "${" + name + "/" + pattern + "/" + replacement + "}"
            rx = _shell_pattern_to_regex(pattern, greedy=True, anchored=False)
            if replace_all:
                return rx.sub(lambda _m: replacement, value)
            return rx.sub(lambda _m: replacement, value, count=1)
        raise ShellError(f"unsupported modifier ({chs}) in substitution")

    def process_name(self) -> str:
        sc = self.scanner
        name: list[str] = []
        while sc.peek() != _EOF:
            ch = sc.peek()
            if not name and ch.isdigit():
                while sc.peek() != _EOF and sc.peek().isdigit():
                    name.append(sc.next())
                return "".join(name)
            if not name and ch in _SPECIAL_PARAMS:
                return sc.next()
            if not (ch.isalnum() or ch == "_"):
                break
            name.append(sc.next())
        return "".join(name)

    def process_possible_heredoc(self) -> str:
        sc = self.scanner
        sc.next()
        if sc.peek() != "<":
            return "<"
        sc.next()
        space: list[str] = []
        while sc.peek() in ("\t", "\r", " ") and sc.peek() != _EOF:
            space.append(sc.next())
        return "<<" + "".join(space)


def _shell_pattern_to_regex(pattern: str, greedy: bool, anchored: bool) -> re.Pattern[str]:
    out = ["^"] if anchored else []
    star = ".*" if greedy else ".*?"
    i = 0
    while i < len(pattern):
        tok = pattern[i]
        i += 1
        if tok == "*":
            out.append(star)
            continue
        if tok == "?":
            out.append(".")
            continue
        if tok == "\\":
            if i < len(pattern) and pattern[i] in "}/":
                continue
            nxt = pattern[i] if i < len(pattern) else ""
            i += 1
            if nxt not in ("*", "?", "\\"):
                raise ShellError(f"invalid pattern ({pattern}) in substitution: invalid escape '\\{nxt}'")
            out.append(re.escape(nxt))
            continue
        out.append(re.escape(tok))
    return re.compile("".join(out), re.DOTALL)


def _trim_prefix(pattern: str, value: str, greedy: bool) -> str:
    m = _shell_pattern_to_regex(pattern, greedy, anchored=True).search(value)
    return value[m.end():] if m else value


def _reverse_pattern(pattern: str) -> str:
    tokens: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern[i] == "\\" and i + 1 < len(pattern):
            tokens.append(pattern[i:i + 2])
            i += 2
        else:
            tokens.append(pattern[i])
            i += 1
    return "".join(reversed(tokens))


def _trim_suffix(pattern: str, value: str, greedy: bool) -> str:
    # Regexes find leftmost matches only: reverse both to find the shortest rightmost one.
    return _trim_prefix(_reverse_pattern(pattern), value[::-1], greedy)[::-1]


def env_map(env: list[str]) -> dict[str, str]:
    """["K=V", ...] -> {"K": "V"}; later entries win."""
    out: dict[str, str] = {}
    for item in env:
        k, _, v = item.partition("=")
        out[k] = v
    return out
