"""Whole-path matching of Dockerfile and .dockerignore patterns in linear time.

Go matches these with RE2 (moby/patternmatcher) or filepath.Match, both without backtracking.
Python's `re` backtracks: `*a*a*a...y` or `**/**/**/...` against a long name took minutes
(a .dockerignore or COPY source of a client, and a daemon's thread spinning on it). The
patterns only use a few constructs, so they are kept as tokens and run as an NFA over the
path: every state advanced once per character.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# Token kinds: one character (a literal or a class), `[^/]*` (STAR), `.*` (ANY), `(.*/)?` (DIRS).
CHAR, STAR, ANY, DIRS = "char", "star", "any", "dirs"


@dataclass(frozen=True)
class Token:
    kind: str
    literal: str | None = None              # CHAR: this exact character, or
    klass: re.Pattern[str] | None = None    # CHAR: one character of this class ("[a-z]", "[^/]")

    def accepts(self, ch: str) -> bool:
        if self.literal is not None:
            return ch == self.literal
        assert self.klass is not None
        return self.klass.fullmatch(ch) is not None


NOT_SLASH = Token(CHAR, klass=re.compile(r"[^/]", re.DOTALL))


class Glob:
    """A compiled pattern; `match(path)` is true when the whole path matches."""

    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self._closures = [self._closure(i) for i in range(len(tokens) + 1)]

    def _closure(self, i: int) -> frozenset[int]:
        """State i and those reached from it without a character (a star matching nothing)."""
        out = {i}
        while i < len(self.tokens) and self.tokens[i].kind in (STAR, ANY, DIRS):
            i += 1
            out.add(i)
        return frozenset(out)

    def match(self, path: str) -> bool:
        end = len(self.tokens)
        states = set(self._closures[0])
        for ch in path:
            nxt: set[int] = set()
            for i in states:
                if i == end:
                    continue
                tok = self.tokens[i]
                if tok.kind == CHAR:
                    if tok.accepts(ch):
                        nxt |= self._closures[i + 1]
                elif tok.kind == STAR:
                    if ch != "/":
                        nxt |= self._closures[i]
                elif tok.kind == ANY:
                    nxt |= self._closures[i]
                else:  # DIRS: anything, left only just after a `/` (not by its closure)
                    nxt.add(i)
                    if ch == "/":
                        nxt |= self._closures[i + 1]
            if not nxt:
                return False
            states = nxt
        return end in states
