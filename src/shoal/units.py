"""Human units as Docker prints and parses them (go-units): durations, sizes, RAM sizes. Used
by the CLI's tables and by the builder's, the registry client's and `inspect`'s output, so it
lives below the CLI."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence


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
