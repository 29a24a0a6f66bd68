"""Import PyYAML with its own modules' regular expressions compiled when first used, not at import.

PyYAML compiles about twenty patterns as it is imported. One, the pure-Python Reader's
NON_PRINTABLE (a class of every code point up to U+10FFFF), costs ~9 ms of CPU on its own, paid
by every `stack deploy` although the loader never uses it: libyaml's parser (CSafeLoader) reads
the text, and the resolver's default patterns are replaced by load.py's own. A pattern here is
compiled by `re` at its first use, so PyYAML behaves exactly as before (without libyaml, the
pure-Python Reader compiles NON_PRINTABLE at its first document).

Import this module before `import yaml` (compose/load.py does). Only calls made from PyYAML's
own modules get a deferred pattern, so another thread compiling a pattern meanwhile gets a real one."""

from __future__ import annotations

import re
import sys
from typing import Any

_compile = re.compile


class _DeferredPattern:
    """Stands for re.compile(pattern, flags) until one of its attributes is read."""

    __slots__ = ("_pattern", "_flags", "_compiled")

    def __init__(self, pattern: Any, flags: int) -> None:
        self._pattern = pattern
        self._flags = flags
        self._compiled: re.Pattern[Any] | None = None

    def __getattr__(self, name: str) -> Any:
        compiled = self._compiled
        if compiled is None:
            compiled = self._compiled = _compile(self._pattern, self._flags)
        return getattr(compiled, name)


def _deferred_in_yaml(pattern: Any, flags: int = 0) -> Any:
    caller = sys._getframe(1).f_globals.get("__name__", "")
    if caller == "yaml" or caller.startswith("yaml."):
        return _DeferredPattern(pattern, flags)
    return _compile(pattern, flags)


def _import() -> None:
    if "yaml" in sys.modules:
        return
    re.compile = _deferred_in_yaml  # type: ignore[assignment]
    try:
        import yaml  # noqa: F401
    finally:
        re.compile = _compile


_import()
