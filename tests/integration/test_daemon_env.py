"""The shoald a command starts on demand (api/client.py connect) runs with daemonenv.py's
settings, as contrib/shoald.service's and a local cluster's nodes: one malloc arena and code
without column tables. glibc and CPython read them only when the process starts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT_ONLY, shoald_pid, stop_daemon, teardown_root
from shoal.daemonenv import DAEMON_ENV, daemon_env, optimized_bytecode

pytestmark = ROOT_ONLY


def test_an_on_demand_shoald_gets_the_daemon_environment(tmp_path: Path) -> None:
    root = tmp_path / "root"
    run = root / "run"
    env = dict(os.environ, SHOAL_ROOT=str(root), SHOAL_RUN=str(run))
    for name in (*DAEMON_ENV, "SHOAL_SOCKET", "SHOAL_HOST", "SHOAL_CONTEXT"):
        env.pop(name, None)
    env["MALLOC_ARENA_MAX"] = "3"  # an operator's own value is kept
    try:
        proc = subprocess.run([sys.executable, "-m", "shoal", "stack", "ls"], env=env, capture_output=True,
                              text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stderr.startswith("Starting shoald")
        pid = shoald_pid(run)
        assert pid is not None
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        assert b"MALLOC_ARENA_MAX=3" in environ
        assert b"PYTHONNODEBUGRANGES=1" in environ
        assert b"PYTHONOPTIMIZE=2" in environ  # scripts/install-deps.sh compiled its bytecode
    finally:
        stop_daemon(run)
        teardown_root(root, run)
        shutil.rmtree(root, ignore_errors=True)


def test_no_optimize_where_its_bytecode_is_neither_found_nor_written(tmp_path: Path) -> None:
    """-OO without its .opt-2.pyc makes every start compile each module in memory: shoald grew
    by 2.7 MiB instead of shrinking. So it is asked for only where that bytecode is there, or
    where Python writes it."""
    module = tmp_path / "m.py"
    module.write_text("X = 1\n")
    quiet = {"PYTHONDONTWRITEBYTECODE": "1"}
    assert optimized_bytecode({}, module)  # written at the first start
    assert not optimized_bytecode(quiet, module)
    subprocess.run([sys.executable, "-OO", "-m", "py_compile", str(module)], check=True)
    assert optimized_bytecode(quiet, module)
    assert "PYTHONOPTIMIZE" in daemon_env({})
    assert daemon_env({"PYTHONOPTIMIZE": "1"})["PYTHONOPTIMIZE"] == "1"  # an operator's own value
