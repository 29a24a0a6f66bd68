"""Variable substitution in compose values exactly as `docker stack` does it (docker/cli
cli/compose/template/template.go, v28).

One regular expression finds `$$`, `$NAME...` and `${NAME...}`; each match is replaced once and
never scanned again, so a default is used as written: `${PASS:-$2y$05$oZcj4}` gives
`$2y$05$oZcj4` (a bcrypt hash survives). Forms: `${V:-default}` (unset or empty), `${V-default}`
(unset), `${V:?err}` (unset or empty is an error), `${V?err}` (unset is an error), `$$` for a
literal `$`. Anything else after a `$` (`$1`, `${V:+x}`, `${`) is an invalid template.

Two of Go's quirks are kept on purpose, so a file means what it means on Swarm:
- the name part of an unbraced `$V-x` takes the default form too (`$HOME-dir` is $HOME);
- the error variable is shared by all matches, so only the last variable of a value decides
  whether the value is an error (`${A:?x} $B` is not an error when B's lookup succeeds).
"""

from __future__ import annotations

import re
from collections.abc import Callable

Lookup = Callable[[str], "str | None"]

_SUBST = r"[_a-z][_a-z0-9]*(?::?[-?][^}]*)?"
PATTERN = re.compile(
    r"\$(?i:(?P<escaped>\$)|(?P<named>" + _SUBST + r")|\{(?P<braced>" + _SUBST + r")\}|(?P<invalid>))"
)


class InvalidTemplateError(Exception):
    """docker/cli's InvalidTemplateError: `template` is what its message quotes."""

    def __init__(self, template: str) -> None:
        super().__init__(template)
        self.template = template


def _apply(substitution: str, lookup: Lookup) -> tuple[str, InvalidTemplateError | None] | None:
    """docker/cli's DefaultSubstituteFuncs in order; None when none applies."""
    if ":-" in substitution:  # softDefault
        name, _, default = substitution.partition(":-")
        value = lookup(name)
        return (default if not value else value), None
    if "-" in substitution:  # hardDefault
        name, _, default = substitution.partition("-")
        value = lookup(name)
        return (default if value is None else value), None
    for sep, empty_fails in ((":?", True), ("?", False)):  # requiredNonEmpty, required
        if sep in substitution:
            name, _, message = substitution.partition(sep)
            value = lookup(name)
            if value is None or (empty_fails and value == ""):
                return "", InvalidTemplateError(
                    f"required variable {name} is missing a value: {message}")
            return value, None
    return None


def substitute(template: str, lookup: Lookup,
               on_unset: Callable[[str], None] | None = None) -> str:
    """Raises InvalidTemplateError as docker/cli's Substitute returns it."""
    error: InvalidTemplateError | None = None

    def replace(match: re.Match[str]) -> str:
        nonlocal error
        if match.group("escaped"):
            return "$"
        substitution = match.group("named") or match.group("braced")
        if not substitution:
            error = InvalidTemplateError(template)
            return ""
        applied = _apply(substitution, lookup)
        if applied is not None:
            value, error = applied
            return value
        error = None  # Go: the last substitute func tried left err nil
        value = lookup(substitution)
        if value is None:
            if on_unset is not None:
                on_unset(substitution)
            return ""
        return value

    result = PATTERN.sub(replace, template)
    if error is not None:
        raise error
    return result
