"""shoald under tracemalloc, for bench_soak.py --trace DIR (not a benchmark itself).

    SOAK_TRACE_DIR=DIR python bench/_traced_shoald.py

Runs `shoal daemon` in this process with tracemalloc started first, and installs a SIGUSR2
handler that collects garbage, then writes into DIR: snap-N.pickle (a tracemalloc snapshot),
and types-N.txt (live objects per type, as objgraph.most_common_types counts them, and glibc's
mallinfo2: what malloc holds in use and free, so fragmentation shows apart from live objects).
The handler runs in the main thread between two steps of the event loop; nothing here changes
what shoald does."""

from __future__ import annotations

import collections
import ctypes
import gc
import os
import signal
import sys
import tracemalloc
from pathlib import Path

FRAMES = int(os.environ.get("SOAK_TRACE_FRAMES", "8"))


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo() -> str:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _Mallinfo2
        mi = libc.mallinfo2()
    except (OSError, AttributeError):
        return "mallinfo2: unavailable\n"
    mib = 1024 * 1024
    return (f"malloc arena (sbrk) {mi.arena / mib:.1f} MiB, mmapped {mi.hblkhd / mib:.1f} MiB, "
            f"in use {mi.uordblks / mib:.1f} MiB, free in arenas {mi.fordblks / mib:.1f} MiB\n")


def _obmalloc() -> str:
    """pymalloc's arenas (1 MiB each, given back only when wholly empty) against the bytes in
    use in them: the gap is Python-level fragmentation, which neither tracemalloc's total nor
    malloc_trim shows. sys._debugmallocstats writes to fd 2, so it is caught there."""
    import tempfile

    with tempfile.TemporaryFile() as tmp:
        saved = os.dup(2)
        try:
            os.dup2(tmp.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        tmp.seek(0)
        text = tmp.read().decode(errors="replace")
    keep = [line.strip() for line in text.splitlines()
            if line.startswith(("# arenas allocated current", "# bytes in allocated blocks",
                                "# bytes in available blocks", "Total "))]
    return "pymalloc: " + "; ".join(keep) + "\n"


def main() -> int:
    out = Path(os.environ["SOAK_TRACE_DIR"])
    out.mkdir(parents=True, exist_ok=True)
    tracemalloc.start(FRAMES)
    count = 0

    def dump(_signum: int, _frame: object) -> None:
        nonlocal count
        gc.collect()
        types = collections.Counter(type(o).__name__ for o in gc.get_objects())
        snap = tracemalloc.take_snapshot().filter_traces((
            tracemalloc.Filter(False, tracemalloc.__file__),
            tracemalloc.Filter(False, "<frozen importlib._bootstrap>"),
        ))
        snap.dump(str(out / f"snap-{count}.pickle"))
        lines = [f"{n:8d} {name}\n" for name, n in types.most_common(40)]
        (out / f"types-{count}.txt").write_text(_mallinfo() + _obmalloc() + "".join(lines))
        count += 1

    signal.signal(signal.SIGUSR2, dump)
    from shoal.daemon import run

    return run()


if __name__ == "__main__":
    sys.exit(main())
