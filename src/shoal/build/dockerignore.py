""".dockerignore: moby/patternmatcher and its ignorefile reader, rule for rule.

Patterns are cleaned paths relative to the context; `*` and `?` stop at `/`, `**` crosses
directories, `!` re-includes, and the last matching pattern wins. A pattern matching a
directory also matches everything below it."""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path

from shoal.build.globmatch import ANY, CHAR, DIRS, NOT_SLASH, STAR, Glob, Token
from shoal.build.regexnfa import RegexNFA, Unsupported

_ESCAPE = set(".+()|{}$")


def read_ignore_file(text: str) -> list[str]:
    """ignorefile.ReadAll: comments, blank lines, `!`, leading `/` and path cleaning."""
    out: list[str] = []
    for n, line in enumerate(text.splitlines()):
        if n == 0:
            line = line.removeprefix("\ufeff")
        if line.startswith("#"):
            continue
        pattern = line.strip()
        if not pattern:
            continue
        invert = pattern.startswith("!")
        if invert:
            pattern = pattern[1:].strip()
        if pattern:
            pattern = posixpath.normpath(pattern)
            if len(pattern) > 1 and pattern.startswith("/"):
                pattern = pattern[1:]
        out.append("!" + pattern if invert else pattern)
    return out


@dataclass
class Pattern:
    cleaned: str
    exclusion: bool
    dirs: list[str]
    _kind: str = ""                 # exact | prefix | suffix | regexp
    _regex: Glob | _Regex | _Automaton | None = None

    def match(self, path: str) -> bool:
        if not self._kind:
            self._compile()
        if self._kind == "exact":
            return path == self.cleaned
        if self._kind == "prefix":
            return path.startswith(self.cleaned[:-2])
        if self._kind == "suffix":
            suffix = self.cleaned[2:]
            if path.endswith(suffix):
                return True
            return suffix.startswith("/") and path == suffix[1:]
        assert self._regex is not None
        return self._regex.match(path)

    def _compile(self) -> None:
        # The regex is what moby builds (kept for its syntax errors); the same pieces as tokens
        # are what matches (globmatch: no backtracking, unlike Python's re on `*a*a*a...`).
        parts: list[str] = ["^"]
        tokens: list[Token] = []
        klass: list[str] | None = None  # the regex text of an open `[...]`
        broken = False

        def emit(text: str, token: Token | None) -> None:
            parts.append(text)
            if klass is not None:
                klass.append(text)
            elif token is not None:
                tokens.append(token)

        kind = "exact"
        p = self.cleaned
        i = 0
        n = len(p)
        first = True
        while i < n:
            ch = p[i]
            i += 1
            if ch in "*?" and klass is not None:
                broken = True  # a wildcard's regex inside `[...]` (moby's too): no single-character class
            if ch == "*":
                if i < n and p[i] == "*":
                    i += 1
                    if i < n and p[i] == "/":
                        i += 1
                    if i >= n:
                        if kind == "exact":
                            kind = "prefix"
                        else:
                            emit(".*", Token(ANY))
                            kind = "regexp"
                    else:
                        emit("(.*/)?", Token(DIRS))
                        kind = "regexp"
                    if first:
                        kind = "suffix"
                else:
                    emit("[^/]*", Token(STAR))
                    kind = "regexp"
            elif ch == "?":
                emit("[^/]", NOT_SLASH)
                kind = "regexp"
            elif ch in _ESCAPE:
                emit("\\" + ch, Token(CHAR, literal=ch))
            elif ch == "\\":
                if i < n:
                    emit(re.escape(p[i]), Token(CHAR, literal=p[i]))
                    i += 1
                    kind = "regexp"
                else:
                    emit("\\\\", Token(CHAR, literal="\\"))
            elif ch == "[" and klass is None:
                parts.append(ch)
                klass = [ch]
                kind = "regexp"
            elif ch == "]" and klass is not None and klass != ["["]:  # `[]...]`: a `]` first is content
                parts.append(ch)
                klass.append(ch)
                try:
                    tokens.append(Token(CHAR, klass=re.compile("".join(klass), re.DOTALL)))
                except re.error:
                    broken = True  # a wildcard inside `[...]`: only the regex reads it as moby did
                klass = None
            elif ch in "[]":
                emit(ch, Token(CHAR, literal=ch))
                kind = "regexp"
            else:
                emit(re.escape(ch) if ch in "^\\" else ch, Token(CHAR, literal=ch))
            first = False
        if kind == "regexp":
            try:
                regex = re.compile("".join(parts) + "$", re.DOTALL)
            except re.error as exc:
                raise ValueError(f"syntax error in pattern: {self.cleaned}") from exc
            broken = broken or klass is not None  # `[` never closed by a `]` of its own
            stars = sum(1 for t in tokens if t.kind != CHAR)
            # A `[...]` class is matched by the regex itself (Python's bracket rules, as
            # before) while at most two stars bound its backtracking to n^2; beyond, the tokens.
            # A class the tokens cannot hold (a star in it, or never closed) runs as an NFA of
            # the regex (regexnfa.py): Python's re backtracked exponentially on those.
            if broken:
                self._regex = _Automaton(regex.pattern)
            else:
                self._regex = _Regex(regex) if "[" in parts and stars <= 2 else Glob(tokens)
        self._kind = kind


class _Regex:
    def __init__(self, regex: re.Pattern[str]) -> None:
        self.regex = regex

    def match(self, path: str) -> bool:
        return self.regex.match(path) is not None


class _Automaton:
    def __init__(self, regex: str) -> None:
        try:
            self.nfa = RegexNFA(regex, re.DOTALL)
        except Unsupported as exc:
            raise ValueError(f"syntax error in pattern: {regex}: {exc}") from None

    def match(self, path: str) -> bool:
        return self.nfa.match(path)


@dataclass
class PatternMatcher:
    patterns: list[Pattern] = field(default_factory=list)

    @classmethod
    def new(cls, patterns: list[str]) -> PatternMatcher:
        pm = cls()
        for p in patterns:
            p = p.strip()
            if not p:
                continue
            p = posixpath.normpath(p)
            exclusion = False
            if p.startswith("!"):
                if len(p) == 1:
                    raise ValueError('illegal exclusion pattern: "!"')
                exclusion = True
                p = p[1:]
            pat = Pattern(p, exclusion, p.split("/"))
            pat._compile()
            pm.patterns.append(pat)
        return pm

    @property
    def exclusions(self) -> bool:
        return any(p.exclusion for p in self.patterns)

    def matches_or_parent_matches(self, file: str) -> bool:
        """MatchesOrParentMatches: also true when a parent directory matches a pattern."""
        matched = False
        parent = posixpath.dirname(file) or "."
        parent_dirs = parent.split("/")
        for pattern in self.patterns:
            if pattern.exclusion != matched:
                continue
            match = pattern.match(file)
            if not match and parent != ".":
                for i in range(len(parent_dirs)):
                    if pattern.match("/".join(parent_dirs[: i + 1])):
                        match = True
                        break
            if match:
                matched = not pattern.exclusion
        return matched

    def matches_using_parent(self, file: str, parent_matched: list[bool] | None) -> tuple[bool, list[bool]]:
        """MatchesUsingParentResults, as go-archive's walk uses it (one result per pattern)."""
        matched = False
        info = [False] * len(self.patterns)
        for i, pattern in enumerate(self.patterns):
            match = parent_matched[i] if parent_matched else False
            if not match:
                if pattern.exclusion != matched:
                    continue
                match = pattern.match(file)
                if not match and not parent_matched:
                    parent = posixpath.dirname(file)
                    if parent:
                        dirs = parent.split("/")
                        for j in range(len(dirs)):
                            if pattern.match("/".join(dirs[: j + 1])):
                                match = True
                                break
            info[i] = match
            if match:
                matched = not pattern.exclusion
        return matched, info


def load_patterns(context_dir: Path, dockerfile_rel: str | None) -> list[str]:
    """The context's .dockerignore, with the Dockerfile and .dockerignore kept as the CLI does
    (build.TrimBuildFilesFromExcludes): they are still sent even if a pattern excludes them."""
    text = read_context_ignore(context_dir)
    if text is None:
        return []
    patterns = read_ignore_file(text)
    pm = PatternMatcher.new(patterns)
    if pm.matches_or_parent_matches(".dockerignore"):
        patterns.append("!.dockerignore")
    if dockerfile_rel and pm.matches_or_parent_matches(dockerfile_rel):
        patterns.append("!" + dockerfile_rel)
    return patterns


def read_context_ignore(context_dir: Path) -> str | None:
    """The text of the context's .dockerignore, its symlinks followed inside the context only
    (moby's remotecontext opens it scoped to the context root): a daemon unpacking a client's
    context must not read a file of its own host through `.dockerignore -> /etc/...`. None
    when it is missing or not a regular file (a FIFO would hang the reader)."""
    import os
    import stat

    from shoal.build.scope import TooManyLinks, follow_in_scope, fs_lookup

    try:
        rel = follow_in_scope(".dockerignore", fs_lookup(lambda r: str(context_dir / r)), keep_missing=True)
        fd = os.open(context_dir / rel, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, TooManyLinks):
        return None
    with os.fdopen(fd, "rb") as f:
        if not rel or not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return f.read().decode(errors="replace")
