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
from dataclasses import dataclass
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


def equal_fold(a: str, b: str) -> bool:
    """strings.EqualFold for the strings a constraint can hold: the expression side is ASCII
    plus the two letters that fold to ASCII, so lowering both after mapping those is exact."""
    return a == b or a.translate(_FOLD).lower() == b.translate(_FOLD).lower()


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

    def match(self, *whats: str) -> bool:
        found = any(equal_fold(self.exp, what) for what in whats)
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


def _one(c: Constraint, node: Any) -> bool:
    key = c.key
    if equal_fold(key, "node.id"):
        return c.match(node.id)
    if equal_fold(key, "node.hostname"):
        return c.match(node.hostname)
    if equal_fold(key, "node.ip"):
        return _ip_matches(c, node.status.addr)
    if equal_fold(key, "node.role"):
        return c.match(node.role)
    if equal_fold(key, "node.platform.os"):
        return c.match(node.platform.os)
    if equal_fold(key, "node.platform.arch"):
        return c.match(node.platform.architecture)  # as reported (x86_64), no normalising
    if has_prefix_fold(key, NODE_LABEL_PREFIX):
        return c.match(node.labels.get(key[len(NODE_LABEL_PREFIX):], ""))  # label keys are case-sensitive
    if has_prefix_fold(key, ENGINE_LABEL_PREFIX):
        return c.match(node.engine.labels.get(key[len(ENGINE_LABEL_PREFIX):], ""))
    return False  # a key outside the syntax never matches


def node_matches(constraints: list[Constraint], node: Any) -> bool:
    """swarmkit's constraint.NodeMatches; `node` is a model.cluster.Node."""
    return all(_one(c, node) for c in constraints)


def matches(texts: tuple[str, ...] | list[str], node: Any) -> bool:
    """Parse and match (the global orchestrator's eligibility check)."""
    return node_matches(parse_all(texts), node)
