"""Typed readers for compose values: each returns the Python value or raises Invalid with the
key path, which the loader turns into `file:line: dotted.key: message`."""

from __future__ import annotations

import re
import shlex
from typing import Any

from shoal.compose.syntax import parse_duration, parse_size

P = tuple[str | int, ...]


class Invalid(Exception):
    """A bad value at `path` of the merged config; the loader adds the file and line."""

    def __init__(self, path: P, message: str) -> None:
        super().__init__(message)
        self.path = path
        self.message = message


# --- readers ------------------------------------------------------------------


def text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def string(value: Any, path: P, default: str = "") -> str:
    if value is None:
        return default
    if isinstance(value, (dict, list)):
        raise Invalid(path, "must be a string")
    return text(value)


def boolean(value: Any, path: P, default: bool = False) -> bool:
    if value is None:
        return default
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise Invalid(path, f"invalid boolean: {value!r}")


def integer(value: Any, path: P, default: int = 0, minimum: int | None = 0) -> int:
    if value is None:
        return default
    if isinstance(value, bool):
        raise Invalid(path, f"must be an integer, not {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?\d+\s*", value):
        if len(value.strip().lstrip("+-")) > 19:  # beyond int64, and int() of thousands fails
            raise Invalid(path, f"value out of range: {value.strip()[:40]}...")
        value = int(value)
    if not isinstance(value, int):
        raise Invalid(path, f"must be an integer, not {value!r}")
    if minimum is not None and value < minimum:
        raise Invalid(path, f"must be {minimum} or more, not {value}")
    return value


def number(value: Any, path: P, default: float = 0.0) -> float:
    if value is None:
        return default
    if isinstance(value, bool):
        raise Invalid(path, f"must be a number, not {value!r}")
    try:
        result = float(value)
    except (TypeError, ValueError):
        raise Invalid(path, f"must be a number, not {value!r}") from None
    if result != result or result in (float("inf"), float("-inf")):
        raise Invalid(path, f"must be a number, not {value!r}")
    return result


def duration(value: Any, path: P, default: float = 0.0) -> float:
    if value is None:
        return default
    try:
        seconds = parse_duration(value)
    except ValueError as exc:
        raise Invalid(path, str(exc)) from None
    if seconds < 0:
        raise Invalid(path, f"duration {value!r} must not be negative")
    return seconds


def size(value: Any, path: P) -> int:
    if value is None:
        return 0
    try:
        return parse_size(value)
    except ValueError as exc:
        raise Invalid(path, str(exc)) from None


def strings(value: Any, path: P) -> list[str]:
    """A string or a list of strings."""
    if value is None:
        return []
    if isinstance(value, list):
        return [string(v, (*path, i)) for i, v in enumerate(value)]
    return [string(value, path)]


def mapping(value: Any, path: P) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(path, "must be a mapping")
    return value


def sprint(value: Any) -> str:
    """A mapping's value as docker/cli's loader makes it a string (fmt.Sprint): 1e6 is
    `1e+06`, 1.0 is `1`."""
    if isinstance(value, float):
        from shoal.compose.goyaml import go_float  # only files with float values pay for it

        return go_float(value)
    return text(value)


def list_or_dict(value: Any, path: P, allow_bare: bool = False) -> dict[str, str | None]:
    """`[K=V, K]` or `{K: V}` -> {K: V}; a bare K (or null value) is None when allowed, else
    the empty string (labels)."""
    out: dict[str, str | None] = {}
    if value is None:
        return out
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, (dict, list)):
                raise Invalid((*path, key), "must be a string, number, boolean or null")
            out[str(key)] = None if item is None and allow_bare else sprint(item)
        return out
    if isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, (dict, list)):
                raise Invalid((*path, index), "must be a string")
            key, sep, val = text(item).partition("=")
            if not key:
                raise Invalid((*path, index), f"invalid entry {item!r}: empty name")
            out[key] = val if sep else (None if allow_bare else "")
        return out
    raise Invalid(path, "must be a list or a mapping")


def labels(value: Any, path: P) -> dict[str, str]:
    return {k: v or "" for k, v in list_or_dict(value, path).items()}


def shell_words(value: Any, path: P) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, list):
        return [string(v, (*path, i)) for i, v in enumerate(value)]
    try:
        return shlex.split(string(value, path))
    except ValueError as exc:
        raise Invalid(path, f"cannot split into words: {exc}") from None
