"""One process per local cluster that keeps each node's shoald running, as systemd keeps a real
machine's (contrib/shoald.service: Restart=on-failure, RestartSec=2, and systemd's default start
limit of 5 starts in 10 s). Started detached by `shoal cluster create`, so it outlives the CLI;
`shoal cluster rm` stops it with SIGTERM, and it stops every shoald (SIGTERM, SIGKILL after
the daemon's own shutdown grace) before it exits.

    python -m shoal.cluster.supervisor <cluster dir>

It waits for signals (SIGCHLD, SIGTERM, SIGINT) with sigtimedwait: no polling while nothing
happens. Each node's current pid is in <run>/clusters/NAME/K.pid."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from shoal.cluster import state

RESTART_SEC = 2.0  # contrib/shoald.service
START_LIMIT_BURST, START_LIMIT_INTERVAL = 5, 10.0  # systemd's defaults
STOP_TIMEOUT = 20.0  # shoald waits up to 15 s for task steps under way (daemon.SHUTDOWN_GRACE)

log = logging.getLogger("shoal-cluster")


def node_command(node: state.NodeRecord) -> list[str]:
    return ["nsenter", f"--net=/run/netns/{node.netns}", "unshare", "--mount", "--uts", "--propagation",
            "private", "--", sys.executable, "-m", "shoal.cluster.nodeinit", node.hostname]


def node_env(node: state.NodeRecord) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SHOAL_SOCKET", "SHOAL_HOST", "SHOAL_CONTEXT", "SHOAL_CERT_PATH", "SHOAL_CGROUP_PARENT",
                     "SHOAL_CLUSTER_NODE_READY")}
    env.update(SHOAL_ROOT=node.root, SHOAL_RUN=node.run, SHOAL_CGROUP_PARENT=node.cgroup_parent)
    return env


_WAITED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT}


def _unblock() -> None:
    """In the child: the supervisor blocks the signals it waits for, and a blocked mask is
    inherited across exec; shoald must get its SIGTERM. (The supervisor has one thread.)"""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _WAITED)


class Node:
    def __init__(self, record: state.NodeRecord) -> None:
        self.record = record
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts: list[float] = []
        self.restart_at: float | None = None
        self.failed = False

    def start(self) -> None:
        now = time.monotonic()
        self.starts = [t for t in self.starts if now - t < START_LIMIT_INTERVAL] + [now]
        if len(self.starts) > START_LIMIT_BURST:
            log.error("%s: start request repeated too quickly, not restarting (see %s)",
                      self.record.hostname, self.record.log)
            self.failed = True
            self.record.pid_file.unlink(missing_ok=True)
            return
        with open(os.open(self.record.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as out:
            self.proc = subprocess.Popen(node_command(self.record), env=node_env(self.record), stdin=subprocess.DEVNULL,
                                         stdout=out, stderr=out, close_fds=True, preexec_fn=_unblock)
        self.record.pid_file.write_text(f"{self.proc.pid}\n")
        log.info("%s: shoald started, pid %d", self.record.hostname, self.proc.pid)


def _reap(nodes: list[Node], stopping: bool) -> None:
    for node in nodes:
        if node.proc is None or node.proc.poll() is None:
            continue
        code = node.proc.returncode
        node.proc = None
        if stopping:
            continue
        if code == 0:
            log.info("%s: shoald exited cleanly; not restarted (Restart=on-failure)", node.record.hostname)
            node.record.pid_file.unlink(missing_ok=True)
            continue
        why = f"signal {-code}" if code < 0 else f"status {code}"
        log.warning("%s: shoald died (%s); restarting in %.0f s", node.record.hostname, why, RESTART_SEC)
        node.restart_at = time.monotonic() + RESTART_SEC


def _stop(nodes: list[Node]) -> None:
    running = [n for n in nodes if n.proc is not None and n.proc.poll() is None]
    for node in running:
        assert node.proc is not None
        node.proc.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT
    for node in running:
        assert node.proc is not None
        try:
            node.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s: shoald did not stop in %.0f s; killing it", node.record.hostname, STOP_TIMEOUT)
            node.proc.kill()
            node.proc.wait()
    for node in nodes:
        node.record.pid_file.unlink(missing_ok=True)


def run(cluster_dir: Path) -> int:
    record = state.ClusterRecord.from_dict(__import__("json").loads((cluster_dir / "cluster.json").read_text()))
    wanted = _WAITED
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    nodes = [Node(n) for n in record.nodes]
    for node in nodes:
        node.start()
    stopping = False
    while not stopping:
        now = time.monotonic()
        due = [n.restart_at for n in nodes if n.restart_at is not None]
        timeout = max(0.0, min(due) - now) if due else 3600.0
        info = signal.sigtimedwait(wanted, timeout)
        if info is not None and info.si_signo in (signal.SIGTERM, signal.SIGINT):
            log.info("stopping every node's shoald")
            stopping = True
        _reap(nodes, stopping)
        now = time.monotonic()
        for node in nodes:
            if not stopping and node.restart_at is not None and node.restart_at <= now:
                node.restart_at = None
                node.start()
    _stop(nodes)
    log.info("stopped")
    return 0


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s shoal-cluster %(levelname)s %(message)s")
    if len(argv) != 1:
        print("usage: python -m shoal.cluster.supervisor CLUSTER_DIR", file=sys.stderr)
        return 2
    return run(Path(argv[0]))


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
