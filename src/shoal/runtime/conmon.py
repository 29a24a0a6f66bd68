"""One conmon per container: it creates the container through the OCI runtime, keeps reading
its output into the k8s-file log, records the exit code (and an OOM kill) and runs our exit
command for cleanup, all without any shoal process alive. conmon double-forks, so `launch`
returns once the container exists in the runtime's `created` state."""

from __future__ import annotations

import json
import os
import select
import time
import subprocess
import sys
from pathlib import Path

from shoal.errors import ShoalError
from shoal.paths import ensure_private_dir, run_root, state_root
from shoal.runtime.engine import Runtime

CONMON = "/usr/bin/conmon"
LOG_SIZE_MAX = int(os.environ.get("SHOAL_LOG_SIZE_MAX", 10 * 1024 * 1024))  # per container log
CREATE_TIMEOUT = 60.0


def exit_command(container_id: str) -> list[str]:
    """What conmon runs after the container exits. SHOAL_ROOT/SHOAL_RUN are passed as arguments
    because conmon starts it with a scrubbed environment."""
    return [sys.executable, "-m", "shoal.runtime.reaper", str(state_root()), str(run_root()), container_id]


def launch(runtime: Runtime, container_id: str, bundle: Path, *, log_path: Path, exit_dir: Path,
           persist_dir: Path, pidfile: Path, conmon_pidfile: Path, tty: bool = False,
           stdin: bool = False, stdin_once: bool = False, with_exit_command: bool = True,
           log_size_max: int = 0) -> int:
    """Returns the container's host pid once the runtime has created it. With `stdin` (run -i)
    conmon holds a pipe (or, with `tty`, the terminal's master) to the container's stdin and
    writes what its attach socket receives into it. conmon closes that stdin when an attached
    client leaves unless --leave-stdin-open: that is docker's StdinOnce, which docker honours
    only without a terminal (a detach from `run -it` leaves the shell its stdin)."""
    sockets = run_root() / "sockets"
    for d in (sockets, runtime.root, exit_dir, persist_dir):
        ensure_private_dir(d)
    cmd = [
        CONMON, "--api-version", "1",
        "-c", container_id, "-u", container_id, "-n", container_id,
        "-r", runtime.binary, "-b", str(bundle),
        "-p", str(pidfile), "-P", str(conmon_pidfile),
        "-l", f"k8s-file:{log_path}", "--log-size-max", str(log_size_max or LOG_SIZE_MAX),
        "--exit-dir", str(exit_dir), "--persist-dir", str(persist_dir),
        "--socket-dir-path", str(sockets),
        "--runtime-arg", f"--root={runtime.root}",
        "--no-sync-log",
    ]
    if tty:
        cmd.append("-t")
    if stdin:
        cmd.append("-i")
        if tty or not stdin_once:
            cmd.append("--leave-stdin-open")
    if with_exit_command:
        argv = exit_command(container_id)
        cmd += ["--exit-command", argv[0]]
        for arg in argv[1:]:
            cmd += ["--exit-command-arg", arg]
    # conmon reports {"data": pid} (or a negative pid and "message") on this pipe once the
    # runtime's create is done; the daemonised conmon keeps the pipe open, so read one message.
    sync_r, sync_w = os.pipe()
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"), "_OCI_SYNCPIPE": str(sync_w)}
    err_path = persist_dir / "conmon.err"
    try:
        with err_path.open("w+b") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=err, env=env, cwd=str(bundle), pass_fds=(sync_w,),
                                    # its own session: a terminal the CLI ran on, closing, hangs
                                    # up its foreground group, which must not take conmon along
                                    start_new_session=True)
            os.close(sync_w)
            sync_w = -1
            data = b""
            deadline = time.monotonic() + CREATE_TIMEOUT
            while not data.rstrip().endswith(b"}"):
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([sync_r], [], [], left)[0]:
                    break
                chunk = os.read(sync_r, 4096)
                if not chunk:
                    break
                data += chunk
            proc.wait()
            err.seek(0)
            stderr = err.read().decode(errors="replace")
        err_path.unlink()
    finally:
        os.close(sync_r)
        if sync_w >= 0:
            os.close(sync_w)
    try:
        message = json.loads(data or b"{}")
    except ValueError:
        message = {}
    pid = int(message.get("data", -1))
    if pid <= 0:
        raise ShoalError(_conmon_error(str(message.get("message", "")) + "\n" + stderr, persist_dir))
    return pid


def _conmon_error(text: str, persist_dir: Path) -> str:
    """The runtime's own message (it is what Docker prints after `OCI runtime create failed`)."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    lines = [line for line in lines if "oom_score_adj" not in line]
    for line in reversed(lines):
        if "msg=" in line:
            return "OCI runtime create failed: " + line.split("msg=", 1)[1].strip().strip('"')
    return "OCI runtime create failed: " + (lines[-1] if lines else "conmon failed")
