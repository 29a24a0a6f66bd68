"""Variable substitution: compose files as docker/cli does it (template.py); this module's
own `substitute` is compose-go's, kept for `.env` files (which docker stack never reads).
compose-go's forms: `$VAR`, `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `${VAR?error}`,
`${VAR:+alt}`, `${VAR+alt}` and `$$` for a literal `$`. Defaults, alternatives and error texts
are themselves substituted, so `${A:-${B:-x}}` nests. A `$` not followed by a name or `{` is
kept as written (`$1`, `a $ b`). Only values are substituted, never keys.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from shoal.compose.errors import ComposeError, dotted
from shoal.compose.template import InvalidTemplateError
from shoal.gofmt import quote as go_quote
from shoal.compose.template import substitute as docker_substitute

Lookup = Callable[[str], "str | None"]

_NAME = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")
# Longest operators first so `:-` is not read as `:` + `-`.
_OPERATORS = (":-", ":?", ":+", "-", "?", "+")


class InvalidTemplate(Exception):
    pass


class MissingRequired(Exception):
    def __init__(self, name: str, reason: str) -> None:
        self.name = name
        self.reason = reason
        if reason:
            super().__init__(f"required variable {name} is missing a value: {reason}")
        else:
            super().__init__(f"required variable {name} is missing a value")


def _closing_brace(text: str, start: int) -> int:
    """Index of the `}` closing the `{` at `start`, counting nested braces the way compose-go's
    getFirstBraceClosingIndex does (the character after each `{` is skipped); -1 if none."""
    depth = 0
    i = start
    while i < len(text):
        ch = text[i]
        if ch == "}":
            depth -= 1
            if depth == 0:
                return i
        if ch == "{":
            depth += 1
            i += 1
        i += 1
    return -1


def substitute(
    text: str, lookup: Lookup, on_unset: Callable[[str], None] | None = None
) -> str:
    """Substitute every variable in `text`. Raises InvalidTemplate or MissingRequired."""
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
            continue
        if nxt == "{":
            end = _closing_brace(text, i + 1)
            if end < 0:
                raise InvalidTemplate(text)
            out.append(_braced(text[i + 2 : end], text, lookup, on_unset))
            i = end + 1
            continue
        match = _NAME.match(text, i + 1)
        if match is None:
            out.append(ch)  # `$1`, `$ `: not a variable, kept literally
            i += 1
            continue
        name = match.group(0)
        value = lookup(name)
        if value is None:
            if on_unset is not None:
                on_unset(name)
            value = ""
        out.append(value)
        i = match.end()
    return "".join(out)


def _braced(body: str, whole: str, lookup: Lookup, on_unset: Callable[[str], None] | None) -> str:
    match = _NAME.match(body)
    if match is None:
        raise InvalidTemplate(whole)
    name = match.group(0)
    rest = body[match.end() :]
    if not rest:
        value = lookup(name)
        if value is None:
            if on_unset is not None:
                on_unset(name)
            return ""
        return value
    op = next((o for o in _OPERATORS if rest.startswith(o)), None)
    if op is None or "\n" in rest:
        raise InvalidTemplate(whole)
    arg = rest[len(op) :]
    value = lookup(name)
    colon = op.startswith(":")
    is_set = value is not None and (not colon or value != "")
    kind = op[-1]
    if kind == "-":
        return value if is_set and value is not None else substitute(arg, lookup, on_unset)
    if kind == "+":
        return substitute(arg, lookup, on_unset) if is_set else (value or "")
    # "?": required
    if not is_set:
        raise MissingRequired(name, substitute(arg, lookup, on_unset))
    return value or ""


# Paths whose string values are cast after substitution (compose-go loader/interpolate.go and
# docker/cli's loader/interpolate.go), so `replicas: ${N}` becomes an integer. "*" matches any key or list index.
_INT = "int"
_FLOAT = "float"
_BOOL = "bool"
_CASTS: tuple[tuple[tuple[str, ...], str], ...] = tuple(
    (tuple(p.split(".")), kind)
    for p, kind in (
        ("services.*.cpu_count", _INT),
        ("services.*.cpu_percent", _FLOAT),
        ("services.*.cpu_period", _INT),
        ("services.*.cpu_quota", _INT),
        ("services.*.cpu_rt_period", _INT),
        ("services.*.cpu_rt_runtime", _INT),
        ("services.*.cpus", _FLOAT),
        ("services.*.cpu_shares", _INT),
        ("services.*.init", _BOOL),
        ("services.*.depends_on.*.required", _BOOL),
        ("services.*.depends_on.*.restart", _BOOL),
        ("services.*.deploy.replicas", _INT),
        ("services.*.deploy.update_config.parallelism", _INT),
        ("services.*.deploy.update_config.max_failure_ratio", _FLOAT),
        ("services.*.deploy.rollback_config.parallelism", _INT),
        ("services.*.deploy.rollback_config.max_failure_ratio", _FLOAT),
        ("services.*.deploy.restart_policy.max_attempts", _INT),
        ("services.*.deploy.placement.max_replicas_per_node", _INT),
        ("services.*.deploy.resources.limits.pids", _INT),
        ("services.*.healthcheck.retries", _INT),
        ("services.*.healthcheck.disable", _BOOL),
        ("services.*.oom_kill_disable", _BOOL),
        ("services.*.oom_score_adj", _INT),
        ("services.*.pids_limit", _INT),
        ("services.*.ports.*.target", _INT),
        # docker/cli's interpolateTypeCastMapping also has these three (compose-go does not):
        # `published: "${PORT:-8080}"` is the port 8080 there, and a mode "0440" is 440.
        ("services.*.ports.*.published", _INT),
        ("services.*.configs.*.mode", _INT),
        ("services.*.secrets.*.mode", _INT),
        ("services.*.privileged", _BOOL),
        ("services.*.read_only", _BOOL),
        ("services.*.scale", _INT),
        ("services.*.stdin_open", _BOOL),
        ("services.*.tty", _BOOL),
        ("services.*.ulimits.*", _INT),
        ("services.*.ulimits.*.hard", _INT),
        ("services.*.ulimits.*.soft", _INT),
        ("services.*.volumes.*.read_only", _BOOL),
        ("services.*.volumes.*.volume.nocopy", _BOOL),
        ("networks.*.external", _BOOL),
        ("networks.*.internal", _BOOL),
        ("networks.*.attachable", _BOOL),
        ("networks.*.enable_ipv4", _BOOL),
        ("networks.*.enable_ipv6", _BOOL),
        ("volumes.*.external", _BOOL),
        ("secrets.*.external", _BOOL),
        ("configs.*.external", _BOOL),
    )
)

_TRUE = {"true", "y", "yes", "on"}
_FALSE = {"false", "n", "no", "off"}


_CAST_LAST = {pattern[-1] for pattern, _ in _CASTS}


def _cast_kind(path: tuple[str | int, ...]) -> str | None:
    if len(path) < 3 or (path[-1] not in _CAST_LAST and path[-2] != "ulimits"):
        return None
    for pattern, kind in _CASTS:
        if len(pattern) == len(path) and all(
            p == "*" or p == str(q) for p, q in zip(pattern, path, strict=True)
        ):
            return kind
    return None


def cast(value: str, kind: str) -> int | float | bool:
    """Raises ValueError with compose-go's wording when the text is not of that type."""
    text = value.strip()
    if kind == _INT:
        if not re.fullmatch(r"[-+]?[0-9]+", text):
            raise ValueError(f'strconv.Atoi: parsing "{value}": invalid syntax')
        return int(text)
    if kind == _FLOAT:
        try:
            result = float(text)
        except ValueError:
            raise ValueError(f'strconv.ParseFloat: parsing "{value}": invalid syntax') from None
        if result != result or result in (float("inf"), float("-inf")):
            raise ValueError(f'strconv.ParseFloat: parsing "{value}": invalid syntax')
        return result
    lowered = text.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"invalid boolean: {value}")


def interpolate(
    config: Mapping[str, Any],
    lookup: Lookup,
    *,
    where: Callable[[tuple[str | int, ...]], str] | str = "",
    on_unset: Callable[[str], None] | None = None,
    substitute_values: bool = True,
) -> dict[str, Any]:
    """Substitute every string value of a parsed compose file and cast the typed paths.
    Errors name the file (`where`, or a function of the key path giving `file:line`) and the
    dotted key."""

    def place(path: tuple[str | int, ...]) -> str:
        return where(path) if callable(where) else where

    def walk(value: Any, path: tuple[str | int, ...]) -> Any:
        if isinstance(value, str):
            new = value
            if substitute_values:
                try:
                    new = docker_substitute(value, lookup, on_unset)
                except InvalidTemplateError as exc:
                    # docker/cli's wording (interpolation.newPathError); a missing required
                    # variable is an InvalidTemplateError there too.
                    raise ComposeError(
                        f"invalid interpolation format: {go_quote(exc.template)}; "
                        "you may need to escape any $ with another $",
                        where=place(path),
                        path=dotted(path),
                    ) from None
            # docker/cli's recursiveInterpolate casts only a value the substitution changed
            # (a literal "0440" mode stays a string for the schema to judge).
            kind = _cast_kind(path) if new != value or not substitute_values else None
            if kind is None:
                return new
            try:
                return cast(new, kind)
            except ValueError as exc:
                raise ComposeError(
                    f"failed to cast to expected type: {exc}", where=place(path), path=dotted(path)
                ) from None
        if isinstance(value, dict):
            return {k: walk(v, (*path, str(k))) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, (*path, i)) for i, v in enumerate(value)]
        return value

    return {k: walk(v, (str(k),)) for k, v in config.items()}
