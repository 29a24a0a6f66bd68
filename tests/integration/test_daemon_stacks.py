"""`kill -USR2 <shoald>` writes every thread's Python stack to shoald's stderr (its log) and
shoald goes on: how to see where a node that stopped driving its tasks is stuck (issue 11)
without py-spy. A real shoald, started as its own process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT_ONLY, teardown_root, terminate

pytestmark = ROOT_ONLY


def test_sigusr2_dumps_every_threads_stack_and_shoald_goes_on(tmp_path: Path) -> None:
    env = dict(os.environ, SHOAL_ROOT=str(tmp_path / "root"), SHOAL_RUN=str(tmp_path / "run"))
    for k in ("SHOAL_SOCKET", "SHOAL_HOST", "SHOAL_CONTEXT"):
        env.pop(k, None)
    log = tmp_path / "shoald.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "shoal", "daemon"], env=env, stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL)
    try:
        sock = tmp_path / "run" / "shoal.sock"
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 10
        # faulthandler writes the signalled (main) thread last, as "Current thread": the dump is
        # whole once it is there. Which helper threads show what depends on the moment.
        while "Current thread" not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        time.sleep(0.2)
        text = log.read_text()
        assert "Thread 0x" in text  # the other threads' stacks too
        main = text[text.index("Current thread"):]
        assert "shoal/daemon.py" in main and "run_forever" in main  # shoald's event loop, waiting
        assert proc.poll() is None  # still running, and answering
        answer = subprocess.run([sys.executable, "-m", "shoal", "-H", f"unix://{sock}", "version"], env=env,
                                capture_output=True, text=True, timeout=30)
        assert answer.returncode == 0, answer.stderr
    finally:
        terminate(proc, 20)
        teardown_root(tmp_path / "root", tmp_path / "run")
