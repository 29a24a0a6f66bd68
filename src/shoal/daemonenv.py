"""The environment shoald starts with: settings glibc and CPython read once, when a process
starts, so shoald cannot set them for itself. Given by the local clusters' supervisor (the
nodes' zygote, cluster/lifecycle.py) and the CLI's on-demand start (api/client.py);
contrib/shoald.service sets the same. An operator's own value is kept.

Measured with bench/bench_cluster.py (4 nodes, the seed's stack running, idle; 2x3 runs
alternated): MALLOC_ARENA_MAX 2 -> 1, the manager 46.1, 45.8 -> 44.9, 44.8 MiB RSS (PSS 25.0,
24.2 -> 23.8, 23.2), a worker 43.9, 44.0 -> 43.7, 43.7; PYTHONNODEBUGRANGES on top, the manager
-> 44.4, 44.4 (PSS 23.0), a worker -> 43.2, 43.2 (PSS 21.6, 21.5). PYTHONOPTIMIZE=2 (the 4 nodes
right after `cluster create`): a worker 39.6 -> 38.3 MiB, the manager 40.3 -> 39.1."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from pathlib import Path

DAEMON_ENV = {
    # One malloc arena for every thread. glibc gives each thread that allocates an arena of its
    # own (up to 8 per core), and each keeps the pages its frees leave behind: 2 arenas instead
    # saved about 3.5 MiB of an idle shoald, 1 another MiB of the manager's. shoald's threads
    # mostly run Python under the GIL, so they hardly contend for malloc's lock (a deploy's CPU
    # and time unchanged, bench/bench_cluster_deploy.py).
    "MALLOC_ARENA_MAX": "1",
    # Code objects without their column tables (-X no_debug_ranges): about 0.5 MiB of the ~460
    # modules' code in every shoald. A traceback in shoald's log then marks no columns (^^^^).
    "PYTHONNODEBUGRANGES": "1",
    # -OO: no docstrings (nor asserts) in the ~460 modules' code, about 1.3 MiB of every shoald.
    # Only where its bytecode (.opt-2.pyc) is compiled or can be written: without it, each start
    # compiles every module again in memory, and shoald ends 2.7 MiB larger, not smaller
    # (scripts/install-deps.sh compiles it).
    "PYTHONOPTIMIZE": "2",
}


def optimized_bytecode(base: Mapping[str, str], module: Path = Path(__file__)) -> bool:
    """Whether shoald started with `base` finds or writes shoal's -OO bytecode (`module`'s
    stands for all of it: scripts/install-deps.sh compiles them together)."""
    if not base.get("PYTHONDONTWRITEBYTECODE"):
        return True
    return Path(importlib.util.cache_from_source(str(module), optimization=2)).exists()


def daemon_env(base: Mapping[str, str]) -> dict[str, str]:
    env = dict(base)
    for name, value in DAEMON_ENV.items():
        if name == "PYTHONOPTIMIZE" and not optimized_bytecode(base):
            continue
        env.setdefault(name, value)
    return env
