"""Checking a request body against the model's type hints before anything is built from it.

The model's from_dict trusts its input (it is fed by shoal's own loader), so a string where an
int belongs would only fail later, in the manager loop. Requests are checked here first, and the
first wrong value is reported by its path (`services.webapp_web.replicas: ...`), as a 400."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, TypeVar

from shoal.errors import InvalidArgument

T = TypeVar("T")

# Go's int64, what Swarm's API carries for every count and size.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
# Durations are seconds here, nanoseconds in an int64 in Swarm: about 292 years.
FLOAT_MAX = INT_MAX / 1e9


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "a list", dict: "an object"}.get(type(value), type(value).__name__)


def _fail(where: str, wanted: str, value: Any) -> InvalidArgument:
    return InvalidArgument(f"{where}: {wanted} is expected, not {_kind(value)}")


def check(hint: Any, value: Any, where: str) -> None:
    """Raise InvalidArgument naming `where` unless `value` has the shape `hint` describes."""
    if hint is Any:
        return
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        options = [a for a in args if a is not type(None)]
        first: InvalidArgument | None = None
        for option in options:
            try:
                check(option, value, where)
                return
            except InvalidArgument as exc:
                first = first or exc
        assert first is not None
        raise first
    if origin is list:
        if not isinstance(value, list):
            raise _fail(where, "a list", value)
        for i, item in enumerate(value):
            check(args[0] if args else Any, item, f"{where}[{i}]")
        return
    if origin is dict:
        if not isinstance(value, dict):
            raise _fail(where, "an object", value)
        for key, item in value.items():
            check(args[1] if args else Any, item, f"{where}.{key}")
        return
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        check_object(hint, value, where)
        return
    if hint is bool:
        if not isinstance(value, bool):
            raise _fail(where, "a boolean", value)
    elif hint is int:
        if not isinstance(value, int) or isinstance(value, bool):
            raise _fail(where, "an integer", value)
        if not INT_MIN <= value <= INT_MAX:
            raise InvalidArgument(f"{where}: {str(value)[:20]}{'...' if len(str(value)) > 20 else ''} is out of range")
    elif hint is float:
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _fail(where, "a number", value)
        if isinstance(value, float) and not math.isfinite(value) or abs(value) > FLOAT_MAX:
            raise InvalidArgument(f"{where}: {value!r:.20} is out of range")
    elif hint is str:
        if not isinstance(value, str):
            raise _fail(where, "a string", value)
        if "\0" in value:  # no path, name or argument may hold one (execve refuses it)
            raise InvalidArgument(f"{where}: a NUL character is not allowed")


def check_object(cls: type, value: Any, where: str) -> None:
    """`value` must be an object holding every field of `cls` that has no default."""
    from shoal.model._serde import _hints

    if not isinstance(value, dict):
        raise _fail(where, "an object", value)
    hints = _hints(typing.cast(Any, cls))
    for f in dataclasses.fields(cls):
        if f.name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise InvalidArgument(f"{where + '.' if where else ''}{f.name}: missing")
            continue
        check(hints[f.name], value[f.name], f"{where + '.' if where else ''}{f.name}")


def checked(cls: type[T], value: Any, where: str) -> T:
    """`value` checked against `cls` (a model dataclass with from_dict), then built: a 400
    naming the first wrong field, never a half-built object."""
    from shoal.model._serde import from_dict

    check_object(cls, value, where)
    try:
        return from_dict(cls, value)
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise InvalidArgument(f"{where}: {exc}") from None
