"""Docker-style output: tab-aligned tables, human durations and sizes, `--format` templates.

The rules follow docker/cli (cli/command/formatter, go-units): tables are a tabwriter with
min width 10 and padding 3, sizes are decimal with 3 significant digits, durations are rounded
the way `HumanDuration` rounds them.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TextIO

from shoal.errors import InvalidArgument
from shoal.units import ago, bytes_size, human_duration, human_size, parse_ram_bytes  # noqa: F401 - the CLI's API

# docker/cli cli/flags (flagsHelper.FormatHelp, InspectFormatHelp), line for line: the help
# formatter (cli/helptext.py) indents each line under the flag's column, as pflag does.
FORMAT_HELP = """Format output using a custom template:
'table':            Print output in table format with column headers (default)
'table TEMPLATE':   Print output in table format using the given Go template
'json':             Print in JSON format
'TEMPLATE':         Print output using the given Go template.
Refer to https://docs.docker.com/go/formatting/ for more information about formatting output with templates"""
INSPECT_FORMAT_HELP = """Format output using a custom template:
'json':             Print in JSON format
'TEMPLATE':         Print output using the given Go template.
Refer to https://docs.docker.com/go/formatting/ for more information about formatting output with templates"""

_MIN_WIDTH = 10
_PADDING = 3


def container_image(image: str, image_id: str, trunc: bool) -> str:
    """The IMAGE column of ps and system df -v (formatter.ContainerContext.Image): unless
    --no-trunc, a reference loses its digest (`web:1@sha256:...` -> `web:1`, `web@sha256:...`
    -> `web`), and an image run by its ID shows the short ID."""
    if not image:
        return "<no image>"
    if not trunc:
        return image
    short_id = image_id.removeprefix("sha256:")[:12]
    if short_id and short_id == image.removeprefix("sha256:")[:12]:
        return short_id
    from shoal.image.reference import parse_normalized

    try:
        ref = parse_normalized(image)
    except InvalidArgument:
        return image
    return ref.familiar_name() + (f":{ref.tag}" if ref.tag else "")


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


# --- --format templates -------------------------------------------------------------------------

# A template action and the first field it names (a `table` header is that field's column name).
_ACTION = re.compile(r"\{\{.*?\}\}", re.S)
_FIRST_FIELD = re.compile(r"(?<![\w$])\.([A-Za-z0-9_]+)")


def render_template(template: str, obj: Mapping[str, Any], context: bool = False) -> str:
    """Go's text/template with docker's functions (shoal/gotemplate.py); `\\t` and `\\n` typed
    in a shell's single quotes are a tab and a newline, as docker/cli reads them."""
    from shoal.gotemplate import render

    return render(template.replace("\\t", "\t").replace("\\n", "\n"), obj, context=context)


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
    if fmt == "json":  # one object per line, keys sorted as docker's marshalJSON of a context
        fmt = "{{json .}}"
    if fmt.startswith("table"):
        body = fmt[len("table") :].strip()
        names = {f: h for f, h in zip(fields, headers)}
        def header(m: re.Match[str]) -> str:
            found = _FIRST_FIELD.search(m.group(0))
            return names.get(found.group(1), found.group(1).upper()) if found else ""

        head = _ACTION.sub(header, body.replace("\\t", "\t"))
        rows = [render_template(body, o, context=True).split("\t") for o in objects]
        print_table(head.split("\t"), rows, stream)
        return
    for obj in objects:
        stream.write(render_template(fmt, obj, context=True) + "\n")
