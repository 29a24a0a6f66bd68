"""Docker's pull/push progress display (docker/cli's jsonmessage), without a daemon in between.

On a terminal each layer keeps one line that is rewritten in place (cursor up, clear line), with
the `[=====>      ]  1.2MB/3.4MB` bar. Elsewhere (a pipe, a log file, a test) each status
change is one plain line, `a1b2c3d4e5f6: Pull complete`, and progress bars are left out, as
Docker does when its output is not a terminal.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from shoal.units import human_size

BAR_WIDTH = 50
# Redraw a layer's bar at most this often: a fast local registry would otherwise spend its time
# painting.
_REDRAW_INTERVAL = 0.1


def progress_bar(current: int, total: int, started: float, now: float | None = None) -> str:
    """jsonmessage's JSONProgress.String() for a wide terminal."""
    if current <= 0 and total <= 0:
        return ""
    if total <= 0:
        return f"{human_size(current, 4):>8}"
    filled = min(BAR_WIDTH, int(current / total * 100) // 2)
    box = f"[{'=' * filled}>{' ' * (BAR_WIDTH - filled)}] "
    numbers = f"{human_size(current, 4):>8}/{human_size(total, 4)}"
    if current > total:
        numbers = f"{human_size(current, 4):>8}"
    left = ""
    if 0 < current < total:
        elapsed = (now or time.time()) - started
        remaining = int(elapsed / current * (total - current))
        left = " " + _go_duration(remaining)
    return box + numbers + left


def _go_duration(seconds: int) -> str:
    """Go's time.Duration.String() for whole seconds: 0s, 45s, 1m5s, 2h0m3s."""
    if seconds <= 0:
        return "0s"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


class ProgressDisplay:
    """Thread-safe: layer transfers report from worker threads."""

    def __init__(self, out: TextIO | None = None, tty: bool | None = None, quiet: bool = False):
        self.out = out if out is not None else sys.stdout
        if tty is None:
            isatty = getattr(self.out, "isatty", None)
            tty = bool(isatty and isatty())
        self.tty = tty
        self.quiet = quiet
        self._lock = threading.Lock()
        self._lines: list[str] = []           # ids in the order their lines were drawn (tty)
        self._started: dict[str, float] = {}
        self._last_draw: dict[str, float] = {}

    def message(self, text: str) -> None:
        """A line of its own: `v1: Pulling from web`, `Digest: sha256:...`."""
        if self.quiet:
            return
        with self._lock:
            self.out.write(text + "\n")
            if self.tty:
                # Lines drawn before this one can no longer be reached by cursor movement.
                self._lines.clear()
            self.out.flush()

    def status(self, ident: str, text: str) -> None:
        """`<id>: <text>` for a layer, replacing its previous status on a terminal."""
        if self.quiet:
            return
        with self._lock:
            self._draw(ident, f"{ident}: {text}")

    def progress(self, ident: str, action: str, current: int, total: int) -> None:
        """`<id>: Downloading [===>   ]  1.2MB/3.4MB`, only on a terminal."""
        if self.quiet or not self.tty:
            return
        now = time.time()
        with self._lock:
            started = self._started.setdefault(f"{ident}/{action}", now)
            if current < total and now - self._last_draw.get(ident, 0.0) < _REDRAW_INTERVAL:
                return
            self._last_draw[ident] = now
            self._draw(ident, f"{ident}: {action} {progress_bar(current, total, started, now)}")

    def _draw(self, ident: str, line: str) -> None:
        if not self.tty:
            self.out.write(line + "\n")
            self.out.flush()
            return
        if ident in self._lines:
            up = len(self._lines) - self._lines.index(ident)
            # Up to the layer's line, clear it, write, then back down where we were.
            self.out.write(f"\x1b[{up}A\x1b[2K\r{line}\r\x1b[{up}B")
        else:
            self._lines.append(ident)
            self.out.write(f"\x1b[2K\r{line}\n")
        self.out.flush()
