"""Failures of the manager as a Swarm user meets them, on a three-node local cluster (`shoal
cluster create --nodes 3`, the seed-like stack: busybox httpd, 5 replicas, port 4000 published
through the routing mesh, image on the manager only):

- kill -9 of the manager's shoald in the middle of a rolling update (parallelism 1, delay): the
  cluster's supervisor restarts it, the update carries on to its end with every slot replaced
  once (no task restarted beside the update's), exactly 5 copies run on the machine, and every
  node's published port answers from every task again, the manager's own included. (The
  manager's own node came back from its restart without an address, so no node had a VXLAN
  peer to it any more and its device was removed: a third of the requests timed out.)

- kill -9 of a worker's shoald (the supervisor restarts it): its tasks keep running, the same
  containers (adopted, none started again), and the embedded DNS still answers inside each of
  them. (The local cluster started each shoald in a new mount namespace: the tasks' network
  namespaces, pinned in the old one, could no longer be entered, and their resolver went quiet.)

Copies are counted from /proc (processes in each node's cgroups), requests go to each node's
address from inside its namespace. Real processes over real TLS, as test_node_failure.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

from cluster.conftest import in_netns  # noqa: E402
from cluster.test_node_failure import app_copies, five_running, running, seed_app_cluster, tasks, wait_for  # noqa: E402

NODES = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Any]:
    name = f"shoalfm{os.getpid() % 10000}"
    with seed_app_cluster(tmp_path_factory.mktemp("failmgr"), name, NODES, busybox_tar) as c:
        yield c


def mesh_answers(c: Any, requests: int = 10) -> dict[int, list[str]]:
    """Node -> the answers of `requests` requests to its own address's port 4000 ("" for one
    that failed)."""
    out: dict[int, list[str]] = {}
    for k in range(1, NODES + 1):
        node = c.node(k)
        out[k] = [in_netns(node["hostname"], "curl", "-s", "-m", "3", f"http://{node['address']}:4000/").stdout.strip()
                  for _ in range(requests)]
    return out


def every_answer(c: Any) -> Any:
    got = mesh_answers(c)
    return got if all(all(a) for a in got.values()) else None


def test_manager_kill9_during_rolling_update(cluster: Any) -> None:
    before = {r["id"] for r in tasks(cluster)}
    cluster.shoal("service", "update", "--detach", "--env-add", "E8=1", "--update-parallelism", "1",
                  "--update-delay", "2s", "webapp_web")

    def first_replaced() -> Any:
        rows = tasks(cluster)
        return [r for r in rows if r["id"] not in before and r["current"].startswith("Running")]

    wait_for("the update's first new task running", first_replaced, 30)
    pid = cluster.pid(1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for("a new shoald on the manager", lambda: (p := cluster.pid(1)) is not None and p != pid, 30)

    def completed() -> Any:
        out = cluster.shoal("service", "inspect", "--format", "{{json .UpdateStatus}}", "webapp_web",
                            check=False, timeout=30)
        return out.returncode == 0 and json.loads(out.stdout).get("State") == "completed"

    wait_for("the update completed", completed, 45, every=0.5)
    rows = wait_for("5/5 running", lambda: five_running(cluster), 30)
    # Every slot replaced once, by the update: 5 old tasks shut down, 5 new ones, nothing else.
    new = [r for r in rows if r["id"] not in before]
    assert len(new) == 5 and {r["id"] for r in running(rows)} == {r["id"] for r in new}, rows
    wait_for("exactly 5 copies", lambda: len(app_copies(cluster.name)) == 5, 30)
    # The manager's node keeps the address it advertises: it is every overlay's VXLAN peer.
    status = json.loads(cluster.shoal("node", "inspect", "--format", "{{json .Status}}", f"{cluster.name}-1").stdout)
    assert status.get("Addr") == cluster.node(1)["address"], status
    # Every node's port answers, from the tasks of every node (the manager's included).
    answers = wait_for("every node's port 4000 answers every request", lambda: every_answer(cluster), 20, every=1)
    containers = {cid[:12] for _, cid, _ in app_copies(cluster.name)}
    assert {a for got in answers.values() for a in got} == containers, answers


_QUERY = r"""
import socket, struct, sys
name = sys.argv[1]
q = struct.pack(">HHHHHH", 7, 0x100, 1, 0, 0, 0) + b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
q += b"\x00" + struct.pack(">HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(1.0)
s.sendto(q, ("127.0.0.11", 53))
try:
    print(struct.unpack(">H", s.recv(512)[6:8])[0])
except OSError:
    print(-1)
"""


def dns_answers(pid: int, name: str) -> int:
    """How many A records the embedded resolver gives for `name` inside the network namespace of
    process `pid` (-1: no answer)."""
    out = subprocess.run(["nsenter", "-t", str(pid), "-n", sys.executable, "-c", _QUERY, name],
                         capture_output=True, text=True, timeout=30).stdout.strip()
    return int(out or -1)


def test_worker_kill9_adopts_its_tasks_and_their_dns_answers(cluster: Any) -> None:
    k = next(n for n, _, _ in app_copies(cluster.name) if n != 1)
    on_node = [(cid, pid) for n, cid, pid in app_copies(cluster.name) if n == k]
    assert all(dns_answers(pid, "tasks.webapp_web") == 5 for _, pid in on_node)
    pid = cluster.pid(k)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(f"a new shoald on node {k}", lambda: (p := cluster.pid(k)) is not None and p != pid, 30)
    wait_for(f"node {k} answers", lambda: cluster.answers(k), 30)
    # The same containers, the same processes, nothing started again anywhere.
    assert [(cid, p) for n, cid, p in app_copies(cluster.name) if n == k] == on_node
    wait_for("every task's resolver answers",
             lambda: all(dns_answers(p, "tasks.webapp_web") == 5 for _, p in on_node), 15, every=0.5)
    assert len(running(tasks(cluster))) == 5 and len(app_copies(cluster.name)) == 5
