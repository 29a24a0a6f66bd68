"""Placement constraints exactly as swarmkit parses and matches them (manager/constraint/
constraint.go): `key==value` / `key!=value`, `==` tried first, whitespace trimmed; the value
compared whole and case-insensitively (no glob, no regex); a missing label or attribute compares
as "", so `!=` matches and `==` fails; an unknown key never matches.

Go's semantics are kept where Python's differ: `\\s` is ASCII whitespace only, `(?i)[a-z]` also
takes the Kelvin sign and the long s (their case-fold orbits), TrimSpace trims Unicode spaces but
not the ASCII separators \\x1c-\\x1f, and `$` does not match before a final newline."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from shoal.errors import InvalidArgument

OPERATORS = ("==", "!=")
NODE_LABEL_PREFIX = "node.labels."
ENGINE_LABEL_PREFIX = "engine.labels."

# Go's `^(?i)[a-z_][a-z0-9\-_.]+$` and the value pattern, written out for Python (see above).
_FOLDS_TO_ASCII = "\u017f\u212a"  # long s -> s, Kelvin sign -> k
_KEY = re.compile(rf"[A-Za-z_{_FOLDS_TO_ASCII}][A-Za-z0-9\-_.{_FOLDS_TO_ASCII}]+")
_VALUE = re.compile(rf"[A-Za-z{_FOLDS_TO_ASCII}0-9:\-_\t\n\f\r \.\*\(\)\?\+\[\]\\\^\$\|\/]+")
# unicode.IsSpace: what strings.TrimSpace removes.
_GO_SPACE = "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
_FOLD = str.maketrans({"\u017f": "s", "\u212a": "k"})


def _fold(text: str) -> str:
    return text.lower() if text.isascii() else text.translate(_FOLD).lower()


def equal_fold(a: str, b: str) -> bool:
    """strings.EqualFold for the strings a constraint can hold: the expression side is ASCII
    plus the two letters that fold to ASCII, so lowering both after mapping those is exact."""
    return a == b or _fold(a) == _fold(b)


def has_prefix_fold(key: str, prefix: str) -> bool:
    """`len(key) > len(prefix) && EqualFold(key[:len(prefix)], prefix)` on Go's bytes: the
    prefixes are ASCII, so a multi-byte letter inside the cut can never fold equal."""
    head = key[: len(prefix)]
    return len(key.encode()) > len(prefix) and head.isascii() and head.lower() == prefix


@dataclass(frozen=True)
class Constraint:
    key: str
    equal: bool  # == (True) or != (False)
    exp: str
    folded: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "folded", _fold(self.exp))

    def match(self, *whats: str) -> bool:
        found = any(what == self.exp or _fold(what) == self.folded for what in whats)
        return found if self.equal else not found


def parse(text: str) -> Constraint:
    """One expression; errors word for word as swarmkit's."""
    for op in OPERATORS:
        if op not in text:
            continue
        left, _, right = text.partition(op)
        key = left.strip(_GO_SPACE)
        if not _KEY.fullmatch(key):
            raise InvalidArgument(f"key '{key}' is invalid")
        value = right.strip(_GO_SPACE)
        if not _VALUE.fullmatch(value):
            raise InvalidArgument(f"value '{value}' is invalid")
        return Constraint(key, op == "==", value)
    raise InvalidArgument(f"constraint expected one operator from {', '.join(OPERATORS)}")


def parse_all(texts: tuple[str, ...] | list[str]) -> list[Constraint]:
    """swarmkit's constraint.Parse: every expression, the first error stops."""
    return [parse(t) for t in texts]


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """net.ParseIP: no zone; an IPv4-mapped IPv6 address is the IPv4 address."""
    if "%" in text:
        return None
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _ip_matches(c: Constraint, addr: str) -> bool:
    node_ip = _ip(addr)
    want = _ip(c.exp)
    if want is not None:
        return (want == node_ip) == c.equal
    if "/" in c.exp and "%" not in c.exp:
        try:
            subnet = ipaddress.ip_network(c.exp, strict=False)
        except ValueError:
            return False  # a malformed address or network never matches
        within = node_ip is not None and node_ip.version == subnet.version and node_ip in subnet
        return within == c.equal
    return False


def _field(key: str) -> Callable[[Any], str] | None:
    """What a key reads of a node (a model.cluster.Node); None for a key outside the syntax."""
    if equal_fold(key, "node.id"):
        return lambda n: n.id
    if equal_fold(key, "node.hostname"):
        return lambda n: n.hostname
    if equal_fold(key, "node.role"):
        return lambda n: n.role
    if equal_fold(key, "node.platform.os"):
        return lambda n: n.platform.os
    if equal_fold(key, "node.platform.arch"):
        return lambda n: n.platform.architecture  # as reported (x86_64), no normalising
    if has_prefix_fold(key, NODE_LABEL_PREFIX):
        label = key[len(NODE_LABEL_PREFIX):]  # label keys are case-sensitive
        return lambda n: n.labels.get(label, "")
    if has_prefix_fold(key, ENGINE_LABEL_PREFIX):
        label = key[len(ENGINE_LABEL_PREFIX):]
        return lambda n: n.engine.labels.get(label, "")
    return None


def compile_one(c: Constraint) -> Callable[[Any], bool]:
    """One constraint as a test of a node, its key looked up once rather than per node."""
    if equal_fold(c.key, "node.ip"):
        return lambda n: _ip_matches(c, n.status.addr)
    read = _field(c.key)
    if read is None:
        return lambda n: False  # a key outside the syntax never matches
    exp, folded, equal = c.exp, c.folded, c.equal
    if equal:
        return lambda n: (v := read(n)) == exp or _fold(v) == folded
    return lambda n: not ((v := read(n)) == exp or _fold(v) == folded)


def compile_all(constraints: list[Constraint] | tuple[Constraint, ...]) -> Callable[[Any], bool]:
    """swarmkit's NodeMatches for a fixed list of constraints."""
    tests = [compile_one(c) for c in constraints]
    if len(tests) == 1:
        return tests[0]
    return lambda n: all(test(n) for test in tests)


def node_matches(constraints: list[Constraint], node: Any) -> bool:
    """swarmkit's constraint.NodeMatches; `node` is a model.cluster.Node."""
    return compile_all(constraints)(node)


def matches(texts: tuple[str, ...] | list[str], node: Any) -> bool:
    """Parse and match (the global orchestrator's eligibility check). Constraints that do not
    parse were refused when the service was made; if one is stored anyway, it constrains
    nothing, as in swarmkit's orchestrators (`constraints, _ = constraint.Parse(...)` is nil)."""
    try:
        constraints = parse_all(texts)
    except InvalidArgument:
        return True
    return node_matches(constraints, node)
