"""Whole-string matching of a regular expression in linear time, for the patterns moby's
patternmatcher turns into Go regexps (RE2: no backtracking) and globmatch.py cannot hold as
tokens: a `[...]` class with a star after it or inside it, or one left open (`[*a*a*...`).
Python's `re` backtracks on those; `[a*a*a*a*a*a*a*a*a*a*a*a*b]x` against 28 letters took 0.7 s
and twice as long per letter more (a hostile .dockerignore, a daemon's thread spinning).

The expression is parsed by Python's own parser (so the same syntax and the same classes as
before), then run as a Thompson NFA: every state advanced at most once per character. Anchors
are ignored: the match is always of the whole string, as `^...$` is in Go (Python's `$` also
took a trailing newline).
"""

from __future__ import annotations

import re
import re._compiler as _compiler  # type: ignore[import-not-found]
import re._constants as _c  # type: ignore[import-not-found]
import re._parser as _parser  # type: ignore[import-not-found]
from collections.abc import Callable
from typing import Any

_CHAR_OPS = {_c.LITERAL, _c.NOT_LITERAL, _c.IN, _c.ANY, _c.CATEGORY}
_REPEATS = {_c.MAX_REPEAT, _c.MIN_REPEAT, getattr(_c, "POSSESSIVE_REPEAT", _c.MAX_REPEAT)}
MAX_STATES = 20_000  # a bounded repeat is unrolled: `a{9999}` and its like are refused


class Unsupported(ValueError):
    """A construct a finite automaton cannot run (a back-reference, a look-around)."""


class RegexNFA:
    def __init__(self, regex: str, flags: int = re.DOTALL) -> None:
        tree = _parser.parse(regex, flags)
        self._state = tree.state
        self._flags = flags
        # state i: ("char", predicate, next) | ("split", a, b) | ("match",)
        self._states: list[list[Any]] = [["match"]]
        self._start = self._seq(list(tree), 0)

    def _new(self, *state: Any) -> int:
        if len(self._states) >= MAX_STATES:
            raise Unsupported("pattern too large")
        self._states.append(list(state))
        return len(self._states) - 1

    def _seq(self, nodes: list[Any], nxt: int) -> int:
        for node in reversed(nodes):
            nxt = self._node(node, nxt)
        return nxt

    def _predicate(self, node: Any) -> Callable[[str], Any]:
        one = _compiler.compile(_parser.SubPattern(self._state, [node]), self._flags)
        return one.fullmatch  # type: ignore[no-any-return]

    def _node(self, node: Any, nxt: int) -> int:
        op, arg = node
        if op in _CHAR_OPS:
            return self._new("char", self._predicate(node), nxt)
        if op == _c.AT:
            return nxt
        if op == _c.SUBPATTERN:
            return self._seq(list(arg[-1]), nxt)
        if op == _c.BRANCH:
            starts = [self._seq(list(alt), nxt) for alt in arg[1]]
            head = starts[-1]
            for s in reversed(starts[:-1]):
                head = self._new("split", s, head)
            return head
        if op in _REPEATS:
            lo, hi, sub = arg
            sub = list(sub)
            if hi == _c.MAXREPEAT:
                loop = self._new("split", -1, nxt)
                self._states[loop][1] = self._seq(sub, loop)
                tail = loop
            else:
                tail = nxt
                for _ in range(hi - lo):  # (x(x(x)?)?)?: one skipped, the rest are too
                    tail = self._new("split", self._seq(sub, tail), nxt)
            for _ in range(lo):
                tail = self._seq(sub, tail)
            return tail
        raise Unsupported(f"regular expression construct {op}")

    def _closure(self, states: set[int], i: int) -> None:
        stack = [i]
        while stack:
            s = stack.pop()
            if s in states:
                continue
            states.add(s)
            st = self._states[s]
            if st[0] == "split":
                stack.extend((st[2], st[1]))

    def match(self, text: str) -> bool:
        current: set[int] = set()
        self._closure(current, self._start)
        for ch in text:
            nxt: set[int] = set()
            for s in current:
                st = self._states[s]
                if st[0] == "char" and st[1](ch) is not None:
                    self._closure(nxt, st[2])
            if not nxt:
                return False
            current = nxt
        return 0 in current
