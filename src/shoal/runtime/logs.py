"""conmon's k8s-file log (`TIME STREAM P|F MSG` per line) read back the way `docker logs`
prints it: partial (P) chunks joined into one line, stdout and stderr on their own streams,
`-t` timestamps as RFC 3339 with nanoseconds in UTC."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

_TIME = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$")


@dataclass
class LogLine:
    time: str  # as conmon wrote it (RFC 3339 nano with offset)
    stream: str  # stdout | stderr
    data: bytes  # one line including its "\n" (none when the output ended without one)

    def docker_time(self) -> str:
        """2026-11-26T23:50:00.123456789Z, as docker logs -t prints it."""
        m = _TIME.match(self.time)
        if not m:
            return self.time
        main, frac, zone = m.group(1), (m.group(2) or "0")[:9], m.group(3)
        try:
            dt = datetime.fromisoformat(main + ("+00:00" if zone in ("Z", "") else zone))
        except ValueError:
            return self.time
        utc = dt.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
        return f"{utc}.{frac.ljust(9, '0')}Z"


def parse_record(raw: bytes) -> tuple[str, str, bool, bytes] | None:
    parts = raw.rstrip(b"\n").split(b" ", 3)
    if len(parts) < 3:
        return None
    msg = parts[3] if len(parts) == 4 else b""
    return parts[0].decode(), parts[1].decode(), parts[2] == b"F", msg


class LogReader:
    """Turns k8s-file records into whole lines; keeps partial chunks per stream."""

    def __init__(self) -> None:
        self._pending: dict[str, tuple[str, bytes]] = {}

    def feed(self, raw: bytes) -> LogLine | None:
        rec = parse_record(raw)
        if rec is None:
            return None
        ts, stream, full, msg = rec
        first_ts, previous = self._pending.pop(stream, (ts, b""))
        if not full:
            self._pending[stream] = (first_ts, previous + msg)
            return None
        return LogLine(first_ts, stream, previous + msg + b"\n")

    def flush(self) -> list[LogLine]:
        """Partial output left when the container ended without a newline."""
        out = [LogLine(ts, s, data) for s, (ts, data) in self._pending.items() if data]
        self._pending.clear()
        return out


def read_lines(path: Path) -> list[LogLine]:
    reader = LogReader()
    out: list[LogLine] = []
    try:
        with path.open("rb") as f:
            for raw in f:
                line = reader.feed(raw)
                if line is not None:
                    out.append(line)
    except FileNotFoundError:
        return []
    return out + reader.flush()


def follow(path: Path, done: Callable[[], bool], poll: float = 0.05,
           skip_existing: bool = False) -> Iterator[LogLine]:
    """Yield lines as conmon appends them until done() is true and the file is drained.
    Survives conmon's truncation at the size cap (re-reads from the start)."""
    reader = LogReader()
    while not path.exists():
        if done():
            return
        time.sleep(poll)
    f = path.open("rb")
    try:
        if skip_existing:
            f.seek(0, os.SEEK_END)
        buf = b""
        finishing = False
        while True:
            chunk = f.read(65536)
            if chunk:
                buf += chunk
                *complete, buf = buf.split(b"\n")
                for raw in complete:
                    line = reader.feed(raw + b"\n")
                    if line is not None:
                        yield line
                continue
            if finishing:
                break
            try:
                now = os.stat(path)
                if now.st_ino != os.fstat(f.fileno()).st_ino:
                    f.close()  # conmon re-created the file at the size cap
                    f = path.open("rb")
                    buf = b""
                    continue
                if now.st_size < f.tell():
                    f.seek(0)  # truncated in place at the size cap
                    buf = b""
                    continue
            except FileNotFoundError:
                pass
            if done():
                finishing = True  # one more read: conmon may have written the last lines
                continue
            time.sleep(poll)
        yield from reader.flush()
    finally:
        f.close()
