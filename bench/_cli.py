"""Timing one shoal command the way a user runs it (a new process), under a private state root;
shared by the benchmarks that time CLI commands."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path


def timed_shoal(root: Path, *args: str, **env: str) -> float:
    """Seconds `shoal ARGS` takes with SHOAL_ROOT=root (and these extra variables); its output
    is discarded and a failure raises."""
    full_env = {**os.environ, "SHOAL_ROOT": str(root), "SHOAL_RUN": str(root / "run"), **env}
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "shoal", *args], env=full_env, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def private_env(base: Path) -> dict[str, str]:
    """The environment for a benchmark's own state root, run root and CLI config under `base`,
    with nothing of the caller's shoal settings (host, context, certificates, cgroup parent)
    leaking in: a cluster bench must not touch the user's contexts or nodes."""
    env = dict(os.environ, SHOAL_ROOT=str(base / "r"), SHOAL_RUN=str(base / "r" / "run"),
               SHOAL_CONFIG=str(base / "cfg" / "config.json"))
    for k in ("SHOAL_HOST", "SHOAL_CONTEXT", "SHOAL_SOCKET", "SHOAL_CERT_PATH", "SHOAL_CGROUP_PARENT"):
        env.pop(k, None)
    return env
