"""A node whose API is busy with long requests still drives its tasks (issue 11: a worker
stayed Ready while `stack rm` left its task containers running and a new task stayed Assigned).

shoald's API handlers run their blocking work in the event loop's default executor, which has
min(32, CPUs + 4) threads, and some hold a thread for as long as the request lasts (an exec,
whose output is relayed until its process ends; a `wait`). The node's agent pass and the
application of its assignment sets ran in that executor too: with its threads all taken, they
waited behind the execs for good, while the heartbeats (no thread) kept the node Ready. Here, on
a two-node local cluster, more execs (`shoal exec TASK sleep 600` through the node's socket, from
the host, as de81bb6 made it) than that executor has threads hold the worker's API, and the
worker must still start the tasks a scale gives it and stop them at `service rm`. On a manager,
its own agent's status calls (the in-process session) must not wait there either. Copies are
counted from /proc (what really runs), as test_node_failure.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

from cluster.test_local_cluster import cluster_with_web_image  # noqa: E402
from cluster.test_node_failure import process_copies, wait_for  # noqa: E402


def _on_worker(c: Any) -> list[tuple[int, str, int]]:
    return [p for p in process_copies(c.name, "httpd") if p[0] == 2]


def test_a_worker_with_its_api_threads_taken_still_drives_its_tasks(tmp_path_factory: pytest.TempPathFactory,
                                                                     busybox_tar: Path) -> None:
    name = f"shoalwb{os.getpid() % 10000}"
    with cluster_with_web_image(tmp_path_factory.mktemp("busyapi"), name, 2, busybox_tar) as c:
        c.shoal("service", "create", "--detach", "--name", "busy", "--constraint", f"node.hostname=={name}-2",
                "web:v1", "httpd", "-f", "-p", "80")
        first = wait_for("the task running on the worker", lambda: _on_worker(c), 60)
        node = c.node(2)
        env = dict(c.env, SHOAL_ROOT=node["root"], SHOAL_RUN=node["run"])
        # More execs than the default executor has threads (asyncio: min(32, CPUs + 4)).
        count = min(32, (os.cpu_count() or 1) + 4) + 2
        argv = [sys.executable, "-m", "shoal", "-c", "default", "exec", first[0][1], "sleep", "600"]
        execs = [subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for _ in range(count)]
        try:
            # Each exec holds a thread once its request is in: give them time to connect (one
            # that failed would have exited). The container's end (service rm) ends them.
            time.sleep(5)
            assert all(e.poll() is None for e in execs)
            c.shoal("service", "scale", "--detach", "busy=3")
            wait_for("3 copies on the worker after the scale", lambda: len(_on_worker(c)) == 3, 45)
            c.shoal("service", "rm", "busy")
            wait_for("no copy left on the worker after service rm", lambda: not _on_worker(c), 45)
        finally:
            for e in execs:
                e.kill()
                e.wait()



def test_a_manager_with_its_api_threads_taken_still_reports_its_own_tasks(
        tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> None:
    """The manager's own agent sends its tasks' states through the in-process session: those
    calls waited in the default executor too, so with every thread held by execs a task that
    died on the manager was never reported, and never replaced. One node, a manager, reached
    from the host (its API's exec, as de81bb6 made it); the execs run in another container
    for 40 s, the task's process is killed meanwhile and must be replaced meanwhile."""
    name = f"shoalmb{os.getpid() % 10000}"
    with cluster_with_web_image(tmp_path_factory.mktemp("busymgr"), name, 1, busybox_tar) as c:
        c.shoal("service", "create", "--detach", "--name", "busy", "web:v1", "httpd", "-f", "-p", "80")
        (first,) = wait_for("the task running", lambda: process_copies(c.name, "httpd"), 60)
        c.shoal("run", "-d", "--name", "holder", "web:v1", "sleep", "600")
        node = c.node(1)
        env = dict(c.env, SHOAL_ROOT=node["root"], SHOAL_RUN=node["run"])
        count = min(32, (os.cpu_count() or 1) + 4) + 2
        argv = [sys.executable, "-m", "shoal", "-c", "default", "exec", "holder", "sleep", "40"]
        execs = [subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for _ in range(count)]
        try:
            time.sleep(5)
            assert all(e.poll() is None for e in execs)
            os.kill(first[2], signal.SIGKILL)
            wait_for("the task replaced while the execs run",
                     lambda: [p for p in process_copies(c.name, "httpd") if p[1] != first[1]], 30)
            assert all(e.poll() is None for e in execs)  # still holding the threads
        finally:
            for e in execs:
                e.kill()
                e.wait()
