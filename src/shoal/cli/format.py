"""Docker-style output: tab-aligned tables, human durations and sizes, `--format` templates.

The rules follow docker/cli (cli/command/formatter, go-units): tables are a tabwriter with
min width 10 and padding 3, sizes are decimal with 3 significant digits, durations are rounded
the way `HumanDuration` rounds them.
"""

from __future__ import annotations

import json
import re
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

from shoal.errors import InvalidArgument

_MIN_WIDTH = 10
_PADDING = 3


def table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Render like Go's tabwriter(minwidth=10, padding=3): every column but the last is padded."""
    all_rows = [list(headers)] + [list(r) for r in rows]
    widths = [0] * len(headers)
    for row in all_rows:
        for i, cell in enumerate(row[:-1]):
            widths[i] = max(widths[i], len(cell))
    lines = []
    for row in all_rows:
        parts = []
        for i, cell in enumerate(row):
            if i < len(row) - 1:
                parts.append(cell.ljust(max(_MIN_WIDTH, widths[i] + _PADDING)))
            else:
                parts.append(cell)
        lines.append("".join(parts))  # like tabwriter: padded empty cells keep their spaces
    return "\n".join(lines) + "\n"


def print_table(headers: Sequence[str], rows: Iterable[Sequence[str]], out: TextIO | None = None) -> None:
    (out or sys.stdout).write(table(headers, rows))


def human_duration(seconds: float) -> str:
    """go-units HumanDuration."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = round(seconds / 3600)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def ago(timestamp: float, now: float | None = None) -> str:
    """`13 minutes ago`, as in CREATED columns."""
    return human_duration((now or time.time()) - timestamp) + " ago"


def _format_units(size: float, base: float, units: Sequence[str], precision: int) -> str:
    i = 0
    while size >= base and i < len(units) - 1:
        size /= base
        i += 1
    return f"{size:.{precision}g}{units[i]}"


def human_size(size: float, precision: int = 3) -> str:
    """go-units HumanSizeWithPrecision: decimal units, `159MB`."""
    return _format_units(float(size), 1000.0, ("B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"), precision)


def bytes_size(size: float) -> str:
    """go-units BytesSize: binary units, `49.5MiB` (as in `stats`)."""
    return _format_units(float(size), 1024.0, ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB", "ZiB", "YiB"), 4)


_UNITS = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4, "p": 1024**5}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(i?b)?\s*$", re.IGNORECASE)


def parse_ram_bytes(text: str) -> int:
    """go-units RAMInBytes: binary multiples, case-insensitive, optional `b` (`50M` = 50 MiB)."""
    m = _SIZE_RE.match(text)
    if not m:
        raise ValueError(f"invalid size: '{text}'")
    number = float(m.group(1))
    unit = (m.group(2) or "b").lower()
    return int(number * _UNITS[unit])


# --- --format templates -------------------------------------------------------------------------

_FIELD = re.compile(r"\{\{\s*(json\s+)?\.([A-Za-z0-9_.]*)\s*\}\}")


def _go_text(value: Any) -> str:
    """How Go's text/template prints a value: `[a b]` for a slice, `map[k:v]` for a map,
    `<nil>`... but an absent value as empty, as docker's templates show it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + " ".join(_go_text(v) if v is not None else "<nil>" for v in value) + "]"
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{_go_text(value[k])}" for k in sorted(value)) + "]"
    return str(value)


def render_template(template: str, obj: Mapping[str, Any]) -> str:
    """A subset of Go templates: `{{.Field}}`, `{{.A.B}}`, `{{json .}}`, `{{json .Field}}`, \\t."""
    template = template.replace("\\t", "\t").replace("\\n", "\n")

    def lookup(path: str) -> Any:
        value: Any = obj
        if not path:
            return value
        for part in path.split("."):
            if isinstance(value, Mapping) and part in value:
                value = value[part]
            else:
                raise InvalidArgument(f"template: can't evaluate field {part}")
        return value

    def sub(m: re.Match[str]) -> str:
        value = lookup(m.group(2))
        if m.group(1):
            return json.dumps(value, separators=(",", ":"))
        return _go_text(value)

    return _FIELD.sub(sub, template)


def print_formatted(
    fmt: str | None,
    headers: Sequence[str],
    fields: Sequence[str],
    objects: Sequence[Mapping[str, Any]],
    quiet_field: str | None = None,
    quiet: bool = False,
    out: TextIO | None = None,
    default: Callable[[Sequence[Mapping[str, Any]]], None] | None = None,
) -> None:
    """Print objects as docker does: default table, `-q` IDs, `--format` template or `table ...`.

    `fields` are the keys of each object in header order; the header of a `table` template
    column is the matching header when the field is known, else the field name upper-cased.
    """
    stream = out or sys.stdout
    if quiet and quiet_field:
        for obj in objects:
            stream.write(f"{obj[quiet_field]}\n")
        return
    if not fmt or fmt == "table":
        if default is not None:
            default(objects)
        else:
            print_table(headers, ([str(o.get(f, "")) for f in fields] for o in objects), stream)
        return
    if fmt == "json":
        fmt = "{{json .}}"
    if fmt.startswith("table"):
        body = fmt[len("table") :].strip()
        names = {f: h for f, h in zip(fields, headers)}
        head = _FIELD.sub(lambda m: names.get(m.group(2), m.group(2).upper()), body.replace("\\t", "\t"))
        rows = [render_template(body, o).split("\t") for o in objects]
        print_table(head.split("\t"), rows, stream)
        return
    for obj in objects:
        stream.write(render_template(fmt, obj) + "\n")
