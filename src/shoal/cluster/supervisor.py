"""One process per local cluster that keeps each node's shoald running, as systemd keeps a real
machine's (contrib/shoald.service: Restart=on-failure, RestartSec=2, and systemd's default start
limit of 5 starts in 10 s). Started detached by `shoal cluster create`, so it outlives the CLI;
`shoal cluster rm` stops it with SIGTERM, and it stops every shoald (SIGTERM, SIGKILL after
the daemon's own shutdown grace) before it exits.

    python -m shoal.cluster.supervisor <cluster dir>

Each node's shoald is a fork of this process (see run()) that enters the node's namespaces
itself (nodeinit.serve_forked: setns to NAME-K, new mount and UTS namespaces, private mounts)
and runs shoald; after `swarm join` it exits with nodeinit.RESTART_EXIT and is forked again at
once, in its new role.

It waits for signals (SIGCHLD, SIGTERM, SIGINT, SIGUSR1) with sigtimedwait: no polling while
nothing happens. SIGUSR1 (`shoal cluster start`) starts every node's shoald that is not running,
as `systemctl start shoald` on each machine: one stopped cleanly (SIGTERM) is not restarted by
Restart=on-failure, and one that hit the start limit is not either. Each node's current pid is
in <run>/clusters/NAME/K.pid."""

from __future__ import annotations

import gc
import importlib
import logging
import os
import signal
import sys
import time
from pathlib import Path

from shoal.cluster import nodeinit, state

RESTART_SEC = 2.0  # contrib/shoald.service
START_LIMIT_BURST, START_LIMIT_INTERVAL = 5, 10.0  # systemd's defaults
STOP_TIMEOUT = 20.0  # shoald waits up to 15 s for task steps under way (daemon.SHUTDOWN_GRACE)

log = logging.getLogger("shoal-cluster")

# What each node's shoald still imported after the fork, at its start (a one-node manager's
# runtime, networks, resolver and node API) and again at its start as a worker, found with
# `python -X importtime` in the forks: 0.12 s of CPU per start, four or seven starts at once on
# two cores, all on the way to the nodes' Ready. None reads the environment or starts anything
# at import (cgroups.PARENT, which does, nodeinit sets again in the fork). Never cryptography:
# what the zygote maps every node maps (and counts in its RSS), and only a manager signs; a
# worker's shoald never loads it (agent/certchild.py), a manager loads it for itself. Nor the
# manager's own modules (dispatcher, orchestrator, allocator, scheduler, control API: about
# 1 MiB), for the same reason: a worker runs none of them (daemon.py), and a node that runs a
# manager imports them after the fork in about 20 ms of CPU.
PRELOAD = ("shoal.runtime.manager", "shoal.runtime.cgroups", "shoal.network.store", "shoal.network.dns",
           "shoal.network.attach", "shoal.network.overlay", "shoal.network.wireguard", "shoal.network.lb",
           "shoal.network.mesh", "shoal.network.cleanup", "shoal.agent.netglue", "shoal.api.nodeapi",
           "shoal.api.logsapi", "concurrent.futures.thread", "encodings.idna")

# Modules only a node that runs a manager imports (tests/unit/test_idle_imports.py: not in the
# zygote, so not in any worker).
MANAGER_ONLY = ("shoal.manager.dispatcher", "shoal.manager.orchestrator", "shoal.manager.allocator",
                "shoal.manager.scheduler", "shoal.manager.reaper", "shoal.manager.endpoints",
                "shoal.manager.controlapi", "shoal.manager.carotation", "shoal.manager.tunnels",
                "shoal.manager.logbroker", "shoal.api.managerapi", "shoal.api.objectsapi", "shoal.agent.inprocess")


def node_env(node: state.NodeRecord) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("SHOAL_SOCKET", "SHOAL_HOST", "SHOAL_CONTEXT", "SHOAL_CERT_PATH", "SHOAL_CGROUP_PARENT",
                     "SHOAL_CLUSTER_NODE_READY")}
    env.update(SHOAL_ROOT=node.root, SHOAL_RUN=node.run, SHOAL_CGROUP_PARENT=node.cgroup_parent)
    return env


_WAITED = {signal.SIGCHLD, signal.SIGTERM, signal.SIGINT, signal.SIGUSR1}


def _unblock() -> None:
    """In the child: the supervisor blocks the signals it waits for, and a blocked mask is
    inherited across exec; shoald must get its SIGTERM. (The supervisor has one thread.)"""
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _WAITED)


_NS_FDS: set[int] = set()  # every node's namespace descriptors this supervisor holds
READY_TIMEOUT = 10.0  # seconds a first start may take to make its namespaces


class Node:
    def __init__(self, record: state.NodeRecord) -> None:
        self.record = record
        self.pid: int | None = None
        self.starts: list[float] = []
        self.restart_at: float | None = None
        self.failed = False
        # The node's mount and UTS namespaces, made by its first shoald and held open here so
        # that every later start enters them: they outlive a shoald that dies, as a machine's
        # mounts outlive its daemon (systemd restarts it in the same mount namespace).
        self.namespaces: tuple[int, int] | None = None

    def _take_namespaces(self, pid: int, ready: int) -> None:
        """Once the first child says its namespaces are made, hold them (by /proc/PID/ns)."""
        import select

        try:
            readable, _, _ = select.select([ready], [], [], READY_TIMEOUT)
            if not readable or os.read(ready, 1) != b"1":
                return  # it died (or hung) first: its next start makes them again
            fds = [os.open(f"/proc/{pid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC) for kind in ("mnt", "uts")]
        except OSError as exc:
            log.warning("%s: its namespaces are not kept: %s", self.record.hostname, exc)
            return
        finally:
            os.close(ready)
        self.namespaces = (fds[0], fds[1])
        _NS_FDS.update(fds)

    def start(self) -> None:
        now = time.monotonic()
        self.starts = [t for t in self.starts if now - t < START_LIMIT_INTERVAL] + [now]
        if len(self.starts) > START_LIMIT_BURST:
            log.error("%s: start request repeated too quickly, not restarting (see %s)",
                      self.record.hostname, self.record.log)
            self.failed = True
            self.record.pid_file.unlink(missing_ok=True)
            return
        sys.stderr.flush()
        ready_r, ready_w = os.pipe() if self.namespaces is None else (None, None)
        pid = os.fork()
        if pid == 0:  # the node's shoald; never returns into the supervisor's loop
            code = 1
            try:
                _unblock()
                for fd in _NS_FDS - set(self.namespaces or ()):
                    os.close(fd)  # other nodes' namespaces: not this one's to keep alive
                if ready_r is not None:
                    os.close(ready_r)
                out = os.open(self.record.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                null = os.open(os.devnull, os.O_RDONLY)
                os.dup2(null, 0)
                os.dup2(out, 1)
                os.dup2(out, 2)
                os.close(out)
                os.close(null)
                code = nodeinit.serve_forked(self.record.hostname, self.record.netns, node_env(self.record),
                                             namespaces=self.namespaces, ready=ready_w)
            except BaseException:  # noqa: BLE001 - reported in the node's log, then the exit status
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        self.pid = pid
        if ready_r is not None and ready_w is not None:
            os.close(ready_w)
            self._take_namespaces(pid, ready_r)
        self.record.pid_file.write_text(f"{pid}\n")
        log.info("%s: shoald started, pid %d", self.record.hostname, pid)

    def poll(self) -> int | None:
        """The exit status (as subprocess gives it: -N for a signal) once the process ended."""
        if self.pid is None:
            return None
        try:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            return 1
        if pid == 0:
            return None
        return -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)


def _reap(nodes: list[Node], stopping: bool) -> None:
    for node in nodes:
        code = node.poll()
        if code is None:
            continue
        node.pid = None
        if stopping:
            continue
        if code == nodeinit.RESTART_EXIT:
            log.info("%s: shoald asked to start again (its new role after swarm join)", node.record.hostname)
            node.restart_at = time.monotonic()
            continue
        if code == 0:
            log.info("%s: shoald exited cleanly; not restarted (Restart=on-failure)", node.record.hostname)
            node.record.pid_file.unlink(missing_ok=True)
            continue
        why = f"signal {-code}" if code < 0 else f"status {code}"
        log.warning("%s: shoald died (%s); restarting in %.0f s", node.record.hostname, why, RESTART_SEC)
        node.restart_at = time.monotonic() + RESTART_SEC


def _stop(nodes: list[Node]) -> None:
    running = [n for n in nodes if n.pid is not None]
    for node in running:
        assert node.pid is not None
        try:
            os.kill(node.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_TIMEOUT
    for node in running:
        while node.poll() is None:
            if time.monotonic() > deadline:
                log.warning("%s: shoald did not stop in %.0f s; killing it", node.record.hostname, STOP_TIMEOUT)
                assert node.pid is not None
                os.kill(node.pid, signal.SIGKILL)
                os.waitpid(node.pid, 0)
                break
            time.sleep(0.05)
    for node in nodes:
        node.record.pid_file.unlink(missing_ok=True)


def preload() -> None:
    """Everything the zygote imports for its nodes. Each node maps all of it, so all of it counts
    in every node's RSS: a module only a request needs (dnslib, the resolver's first question)
    stays out (tests/unit/test_idle_imports.py)."""
    # A zygote: shoald's modules imported once here, so each node's shoald (and each start
    # again, after a crash or a swarm join) is a fork that starts at once, not a fresh Python
    # importing everything (0.4-0.9 s of CPU each, four at once on two cores).
    import shoal.daemon  # noqa: F401
    from shoal.api import swarmapi  # noqa: F401
    # A cluster's nodes are in a swarm: their cluster layer (the listener, the HTTPS session; not
    # the CA's cryptography, see PRELOAD) is imported here too, so its start-up pages are the
    # zygote's, not each node's; then everything imported so far is frozen out of the garbage
    # collector, whose passes in each node would otherwise write to every inherited object and
    # unshare its page. Measured (forks of this zygote, each with a CA, a certificate and a
    # collection): per node 45.9 -> 42.9 MiB RSS, 27.1 -> 15.2 MiB PSS.
    from shoal.agent import join, session_https  # noqa: F401
    from shoal.api import tcp  # noqa: F401

    for module in PRELOAD:
        importlib.import_module(module)


def run(cluster_dir: Path) -> int:
    record = state.ClusterRecord.from_dict(__import__("json").loads((cluster_dir / "cluster.json").read_text()))
    wanted = _WAITED
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    preload()
    # The runtime's once-per-process work too (host facts, the default seccomp filter compiled:
    # 19 ms of CPU idle, more under load), in memory: no node's first task pays it, each its own.
    from shoal.runtime import oci

    oci.warm(persist=False)
    gc.collect()
    gc.freeze()

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
        if info is not None and info.si_signo == signal.SIGUSR1 and not stopping:
            for node in nodes:
                if node.pid is None and node.restart_at is None:
                    log.info("%s: start requested", node.record.hostname)
                    node.failed, node.starts = False, []  # systemctl reset-failed, then start
                    node.start()
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
