"""A node's own state damaged, and the manager drained, on a three-node local cluster (`shoal
cluster create --nodes 3`, web:v1 on the manager only), as a Swarm user meets them:

- the manager drained with a `node.role==manager` service: every task leaves it and waits
  Pending with the scheduler's reason, as swarmkit's drain restarts them all; the second task
  ran on the drained node for good (the first replacement, unplaceable, held the drain);
- a worker's task store (worker/tasks.db) overwritten, then its shoald killed -9: it starts, is
  Ready again and keeps its task containers (same processes), the file moved aside with one line
  in its log; it ended in a traceback at every start and stayed Down;
- a worker's certificate truncated: one line naming the file, said once, and the node is Down
  until it leaves and joins again; it logged 'no manager answered ([SSL] PEM lib)' every few
  seconds, as if the manager were away;
- `swarm leave --force` and `swarm join` at once: the same machine joins again; it was refused
  until the node it was went Down;
- a worker's shoald.db or swarm/state.json overwritten: shoald stops at its start with one line
  naming the file, not a traceback.

Copies are counted from /proc. Real processes over real TLS, as test_node_failure.py."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

from cluster.test_local_cluster import cluster_with_web_image  # noqa: E402
from cluster.test_node_failure import app_copies, node_status, wait_for  # noqa: E402

NODES = 3
REASON = "no suitable node (scheduling constraints not satisfied on 2 nodes; 1 node not available for new tasks)"
HTTPD = ["httpd", "-f", "-p", "8080"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Any]:
    with cluster_with_web_image(tmp_path_factory.mktemp("failstate"), f"shoalfs{os.getpid() % 10000}", NODES,
                                busybox_tar) as c:
        yield c


def rows(c: Any, service: str) -> list[tuple[str, str, str, str]]:
    out = c.shoal("service", "ps", service, "--no-trunc", "--format",
                  "{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}", timeout=60).stdout
    return [tuple((ln.split("\t") + [""] * 4)[:4]) for ln in out.splitlines()]  # type: ignore[misc]


def host(c: Any, k: int) -> str:
    return f"{c.name}-{k}"


def log_of(c: Any, k: int) -> str:
    return (Path(c.node(k)["root"]) / "shoald.log").read_text(errors="replace")


def statuses(c: Any, hostname: str) -> list[str]:
    """The statuses of every node of that hostname (one that joined again is a new node)."""
    out = c.shoal("node", "ls", "--format", "{{.Hostname}}\t{{.Status}}", timeout=60).stdout
    return [ln.split("\t")[1] for ln in out.splitlines() if ln.startswith(hostname + "\t")]


def kill9(c: Any, k: int) -> int:
    pid = c.pid(k)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    return pid


def restarted(c: Any, k: int, old: int) -> bool:
    pid = c.pid(k)
    return pid is not None and pid != old and os.path.exists(f"/proc/{pid}")


def test_manager_drained_under_a_manager_only_service(cluster: Any) -> None:
    cluster.shoal("service", "create", "--detach", "--name", "mgr", "--constraint", "node.role==manager",
                  "--replicas", "2", "--stop-grace-period", "1s", "web:v1", *HTTPD)
    wait_for("2 running on the manager", lambda: [r[:2] for r in rows(cluster, "mgr")
                                                   if r[2].startswith("Running")] == [(host(cluster, 1), "Running")] * 2, 30)
    cluster.shoal("node", "update", "--availability", "drain", host(cluster, 1))
    try:
        def both_pending() -> bool:
            got = rows(cluster, "mgr")
            pending = [r for r in got if r[1] == "Running" and r[2].startswith("Pending")]
            return len(pending) == 2 and not [r for r in got if r[2].startswith("Running")]

        wait_for("both tasks off the drained manager, Pending", both_pending, 30)
        assert {r[3] for r in rows(cluster, "mgr") if r[2].startswith("Pending")} == {f'"{REASON}"'}
        assert cluster.shoal("service", "ls", "--format", "{{.Replicas}}").stdout.strip() == "0/2"
        cluster.shoal("node", "update", "--availability", "active", host(cluster, 1))
        wait_for("2 running again",
                 lambda: len([r for r in rows(cluster, "mgr") if r[2].startswith("Running")]) == 2, 30)
    finally:  # the next tests count every httpd on the machine
        cluster.shoal("node", "update", "--availability", "active", host(cluster, 1))
        cluster.shoal("service", "rm", "mgr")
        wait_for("no copy left", lambda: app_copies(cluster.name) == [], 30)


def test_worker_task_store_overwritten(cluster: Any) -> None:
    cluster.shoal("service", "create", "--detach", "--name", "web", "--replicas", "6", "--stop-grace-period", "1s",
                  "web:v1", *HTTPD)
    wait_for("6 copies", lambda: len(app_copies(cluster.name)) == 6, 60)
    before = app_copies(cluster.name)
    assert [x for x in before if x[0] == 3]
    store = Path(cluster.node(3)["root"]) / "worker" / "tasks.db"
    store.write_bytes(os.urandom(4096))
    old = kill9(cluster, 3)
    wait_for("node 3's shoald started again", lambda: restarted(cluster, 3, old), 30)
    wait_for("node 3 moved its store aside", lambda: "tasks.db is unreadable" in log_of(cluster, 3), 30)
    wait_for(f"{host(cluster, 3)} Ready", lambda: node_status(cluster)[host(cluster, 3)][0] == "Ready", 30)
    assert [p.name for p in store.parent.iterdir() if p.name.startswith("tasks.db.corrupt-")]
    assert "Traceback" not in log_of(cluster, 3)
    # Its containers are its own again: the same processes, none started twice, none stopped.
    wait_for("6/6", lambda: cluster.shoal("service", "ls", "--format", "{{.Replicas}}").stdout.strip() == "6/6", 30)
    assert app_copies(cluster.name) == before
    cluster.shoal("service", "scale", "--detach", "web=3")
    wait_for("3 copies", lambda: len(app_copies(cluster.name)) == 3, 30)


def test_worker_certificate_truncated(cluster: Any) -> None:
    cert = Path(cluster.node(2)["root"]) / "certificates" / "swarm-node.crt"
    cert.write_bytes(cert.read_bytes()[:200])
    old = kill9(cluster, 2)
    wait_for("node 2's shoald started again", lambda: restarted(cluster, 2, old), 30)
    line = f"ERROR error while loading TLS certificate in {cert} (key swarm-node.key): "
    wait_for("the certificate's error in node 2's log", lambda: line in log_of(cluster, 2), 30)
    wait_for(f"{host(cluster, 2)} Down", lambda: node_status(cluster)[host(cluster, 2)][0] == "Down", 30)
    # Said as the certificate's error, once per start (the killed shoald may have met it too),
    # not as a manager that did not answer, again at each retry.
    said = [ln for ln in log_of(cluster, 2).splitlines() if "PEM lib" in ln]
    assert said and all(line in ln for ln in said) and len(said) <= 2, said
    assert cluster.on_node(2, "swarm", "leave", "--force").stdout.strip() == "Node left the swarm."
    token = cluster.shoal("swarm", "join-token", "-q", "worker").stdout.strip()
    cluster.on_node(2, "swarm", "join", "--token", token, f"{cluster.node(1)['address']}:2377")
    wait_for(f"{host(cluster, 2)} Ready again", lambda: "Ready" in statuses(cluster, host(cluster, 2)), 30)


def test_worker_leaves_and_joins_at_once(cluster: Any) -> None:
    """`swarm leave --force && swarm join ...`: the node it was is still Ready (its heartbeats have
    not run out); the same machine (hostname and address) is let join, the old node Down. It was
    refused for three heartbeats ('a node with hostname ... is already part of this swarm')."""
    assert statuses(cluster, host(cluster, 2)).count("Ready") == 1
    down = statuses(cluster, host(cluster, 2)).count("Down")
    token = cluster.shoal("swarm", "join-token", "-q", "worker").stdout.strip()
    cluster.on_node(2, "swarm", "leave", "--force")
    cluster.on_node(2, "swarm", "join", "--token", token, f"{cluster.node(1)['address']}:2377")
    wait_for(f"the new {host(cluster, 2)} Ready", lambda: statuses(cluster, host(cluster, 2)).count("Ready") == 1
             and statuses(cluster, host(cluster, 2)).count("Down") == down + 1, 30)


def test_worker_store_overwritten(cluster: Any) -> None:
    db = Path(cluster.node(3)["root"]) / "shoald.db"
    for suffix in ("-wal", "-shm"):
        db.with_name(db.name + suffix).unlink(missing_ok=True)
    db.write_bytes(os.urandom(4096))
    kill9(cluster, 3)
    wait_for("the store's error in node 3's log",
             lambda: f"shoald: {db} cannot be read: file is not a database" in log_of(cluster, 3), 30)
    assert "Traceback" not in log_of(cluster, 3)


def test_worker_swarm_state_truncated(cluster: Any) -> None:
    state = Path(cluster.node(2)["root"]) / "swarm" / "state.json"
    state.write_text(state.read_text()[:12])
    kill9(cluster, 2)
    wait_for("the state file's error in node 2's log",
             lambda: f"shoald: {state}: not a swarm state file (" in log_of(cluster, 2), 30)
    assert "Traceback" not in log_of(cluster, 2)
