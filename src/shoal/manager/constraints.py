"""Placement constraints as swarmkit parses and matches them (manager/constraint/constraint.go):
`key==value` / `key!=value`, exact and case-insensitive, a missing attribute compares as ""."""

from __future__ import annotations

import re
from dataclasses import dataclass

from shoal.errors import InvalidArgument
from shoal.model.cluster import Node

_KEY = re.compile(r"^[a-z_][a-z0-9\-_.]+$", re.IGNORECASE)
_VALUE = re.compile(r"^[a-z0-9:\-_\s\.\*\(\)\?\+\[\]\\\^\$\|\/]+$", re.IGNORECASE)


@dataclass(frozen=True)
class Constraint:
    key: str
    equal: bool
    value: str


def parse(text: str) -> Constraint:
    for op, equal in (("==", True), ("!=", False)):
        if op in text:
            key, _, value = text.partition(op)
            key, value = key.strip(), value.strip()
            if not _KEY.match(key):
                raise InvalidArgument(f"key '{key}' is invalid")
            if not _VALUE.match(value):
                raise InvalidArgument(f"value '{value}' is invalid")
            return Constraint(key, equal, value)
    raise InvalidArgument("constraint expected one operator from ==, !=")


def _attribute(node: Node, key: str) -> str | None:
    lowered = key.lower()
    if lowered == "node.id":
        return node.id
    if lowered == "node.hostname":
        return node.hostname
    if lowered == "node.role":
        return node.role
    if lowered == "node.ip":
        return node.addr
    if lowered == "node.platform.os":
        return "linux"
    if lowered == "node.platform.arch":
        import platform

        return platform.machine()
    if lowered.startswith("node.labels."):
        return node.labels.get(key[len("node.labels."):], "")
    return None  # unknown keys never match


def matches(constraints: tuple[str, ...] | list[str], node: Node) -> bool:
    for text in constraints:
        c = parse(text)
        actual = _attribute(node, c.key)
        if actual is None:
            return False
        same = actual.lower() == c.value.lower()
        if same != c.equal:
            return False
    return True
