"""The one error type the compose loader raises: a single line naming the file and the key."""

from __future__ import annotations

import re

from shoal.errors import ShoalError


class ComposeError(ShoalError):
    """Bad compose input. `where` is the file (and line when known), `path` the dotted key
    (`services.web.deploy.replicas`); both are folded into the one-line message."""

    def __init__(self, message: str, *, where: str = "", path: str = "") -> None:
        self.where = where
        self.path = path
        self.reason = message
        text = _clip_runs(message)
        if path:
            text = f"{path}: {text}"
        if where:
            text = f"{where}: {text}"
        # Errors print as one line; a newline inside a YAML value must not break that.
        super().__init__(text.replace("\n", " "))


_RUN = re.compile(r"[^\s'\"]{200,}")


def _clip_runs(message: str) -> str:
    """A value quoted in a message is cut to its first 40 characters when it runs to hundreds
    (a port of thousands of digits made a line of kilobytes); the key still names it."""
    return _RUN.sub(lambda m: m.group(0)[:40] + "...", message)


def dotted(path: tuple[str | int, ...] | list[str | int]) -> str:
    """("services", "web", "ports", 0) -> "services.web.ports[0]"."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out
