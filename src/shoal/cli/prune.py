"""What every `prune` shares, as docker/cli's: the `[y/N]` question (internal/prompt Confirm: only
y or Y is yes) and the `Total reclaimed space: X` line (go-units HumanSize, 4 significant digits)."""

from __future__ import annotations

import sys
from collections.abc import Callable

from shoal.units import human_size


def confirm(message: str, read: Callable[[], str] | None = None) -> bool:
    sys.stdout.write(f"{message} [y/N] ")
    sys.stdout.flush()
    answer = (read or sys.stdin.readline)()
    return answer.strip().lower() == "y"


def total_line(reclaimed: int) -> str:
    return f"Total reclaimed space: {human_size(reclaimed, precision=4)}"


def print_total(reclaimed: int) -> None:
    print(total_line(reclaimed))
