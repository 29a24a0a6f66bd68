"""`node rm` as a Swarm user meets it, on a three-node local cluster (`shoal cluster create
--nodes 3`, the seed-like stack: busybox httpd, 5 replicas, port 4000 published through the
routing mesh, image on the manager only):

- `node rm --force` of a live worker: the node is gone from `node ls`, its tasks are ORPHANED
  ("Task belonged to a node that has been deleted", swarmkit's orphanNodeTasks) and replaced on
  the other nodes (5 running in `service ps`, none on it), `service ls` counts 5/5 as docker/cli's
  GetServicesStatus does, and the removed node stops its copies: exactly 5 run on the machine (it
  kept its 2 running beside their replacements: 7). Its certificate is refused from then on, on
  every route (swarmkit's BlacklistedCertificates: "Permission denied: node X was removed from
  swarm"), also after its shoald is killed and restarted (moby's TestAPISwarmNodeRemove: it
  does not come back). Its own `info` still says `Swarm: active` and a worker, as dockerd's,
  and `pending` once restarted (its agent never gets a session).
- `node rm` without --force: a Ready worker and the manager are refused with swarmkit's
  texts, as the docker client words them; a worker cut off and Down is removed, and when its
  link comes back it stops its copies (the manager refuses it; it had replaced them already).

Copies are counted from /proc. Real processes over real TLS, as test_node_failure.py."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

from cluster.conftest import in_netns  # noqa: E402
from cluster.test_node_failure import app_copies, node_status, running, seed_app_cluster, tasks, wait_for  # noqa: E402

NODES = 3
NOT_A_MANAGER = ("This node is not a swarm manager. Worker nodes can't be used to view or modify cluster state. "
                 "Please run this command on a manager node or promote the current node to a manager.")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Any]:
    name = f"shoalfr{os.getpid() % 10000}"
    with seed_app_cluster(tmp_path_factory.mktemp("failrm"), name, NODES, busybox_tar) as c:
        yield c


def replicas(c: Any) -> str:
    return c.shoal("service", "ls", "--format", "{{.Replicas}}", timeout=60).stdout.strip()


def index_of(c: Any, hostname: str) -> int:
    return next(k for k in range(1, NODES + 1) if c.node(k)["hostname"] == hostname)


def node_id(c: Any, ref: str) -> str:
    return c.shoal("node", "inspect", "--format", "{{.ID}}", ref).stdout.strip()


def copies_on(c: Any, k: int) -> list[tuple[int, str, int]]:
    return [x for x in app_copies(c.name) if x[0] == k]


def with_node_certificate(c: Any, k: int, method: str, path: str, body: Any = None) -> tuple[int, str]:
    """A request to the manager's cluster port with node K's own certificate, as its shoald
    makes them (the TLS server name is the role, never the address)."""
    certs = Path(c.node(k)["root"]) / "certificates"
    ctx = ssl.create_default_context(cafile=str(certs / "swarm-root-ca.crt"))
    ctx.load_cert_chain(str(certs / "swarm-node.crt"), str(certs / "swarm-node.key"))
    conn = http.client.HTTPSConnection(c.node(1)["address"], 2377, context=ctx, timeout=10)
    conn.sock = ctx.wrap_socket(socket.create_connection((c.node(1)["address"], 2377), 10),
                                server_hostname="swarm-manager")
    try:
        conn.request(method, path, body=json.dumps(body) if body is not None else None,
                     headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def test_node_rm_force_of_a_live_worker(cluster: Any) -> None:
    gone = next((r["node"] for r in running(tasks(cluster)) if r["node"] != f"{cluster.name}-1"), None)
    assert gone is not None, tasks(cluster)
    k, gone_id = index_of(cluster, gone), node_id(cluster, gone)
    had = len(copies_on(cluster, k))
    assert had and with_node_certificate(cluster, k, "GET", "/v2/")[0] == 200
    out = cluster.shoal("node", "rm", "--force", gone)
    assert out.stdout.strip() == gone
    assert gone not in node_status(cluster)
    # Its events are the node's own (Docker's types); its refused certificate's record is none.
    seen = cluster.shoal("events", "--since", "5m", "--until", "0s", "--format", "{{.Type}} {{.Actor.ID}}").stdout
    assert f"node {gone_id}" in seen.splitlines() and "removed_node" not in seen, seen

    def replaced() -> Any:
        rows = tasks(cluster)
        run = running(rows)
        return rows if len(run) == 5 and not [r for r in run if r["node"] == gone] else None

    rows = wait_for("5 running on the other nodes", replaced, 30)
    # The removed node's tasks, under its ID (docker/cli names a node that is gone by its ID).
    orphaned = [r for r in rows if r["node"] == gone_id]
    assert len(orphaned) == had and all(r["desired"] == "Shutdown" and r["current"].startswith("Orphaned")
                                        for r in orphaned), rows
    # It stops its own copies: exactly 5 on the machine, none on it.
    wait_for(f"no copy left on {gone}", lambda: not copies_on(cluster, k), 20)
    assert len(app_copies(cluster.name)) == 5
    assert replicas(cluster) == "5/5"
    for n in range(1, NODES + 1):
        node = cluster.node(n)
        if n == k:
            continue
        for _ in range(6):
            got = in_netns(node["hostname"], "curl", "-s", "-m", "3", f"http://{node['address']}:4000/")
            assert got.returncode == 0 and got.stdout.strip(), (n, got)

    # Its certificate is refused on every route: the dispatcher, the image store, the CA.
    refusal = f"Permission denied: node {gone_id} was removed from swarm"
    for method, path, body in (("POST", "/swarm/dispatcher/heartbeat", {"session_id": "x"}), ("GET", "/v2/", None),
                               ("POST", "/swarm/dispatcher/session", {"hostname": gone})):
        status, text = with_node_certificate(cluster, k, method, path, body)
        assert status == 403 and refusal in text, (path, status, text)
    # What it says of itself is what dockerd says on a removed worker: still a swarm worker.
    info = cluster.on_node(k, "info").stdout
    assert " Swarm: active\n" in info and f"  NodeID: {gone_id}\n" in info and "  Is Manager: false\n" in info
    assert f"  Node Address: {cluster.node(k)['address']}\n  Manager Addresses:\n" in info, info
    assert cluster.on_node(k, "node", "ls", check=False).stderr.strip() == f"Error response from daemon: {NOT_A_MANAGER}"

    # Killed and restarted (by the cluster's supervisor), it does not come back, nor its copies.
    pid = cluster.pid(k)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for(f"{gone}'s shoald restarted", lambda: cluster.pid(k) not in (None, pid) and cluster.answers(k), 30)
    time.sleep(3)  # its registration refused, again and again
    assert gone not in node_status(cluster) and len(node_status(cluster)) == NODES - 1
    # Refused again and again, said once per start of its shoald (it was said every few seconds).
    log = (Path(cluster.node(k)["root"]) / "shoald.log").read_text().splitlines()
    assert len([ln for ln in log if " ERROR " in ln and "removed from swarm" in ln]) <= 2, log[-20:]
    # dockerd's node stays "pending" when its agent never gets a session.
    assert " Swarm: pending\n" in cluster.on_node(k, "info").stdout
    assert not copies_on(cluster, k) and len(app_copies(cluster.name)) == 5
    assert replicas(cluster) == "5/5"


def test_node_rm_without_force(cluster: Any) -> None:
    """Runs after the test above: the manager and one worker left."""
    statuses = node_status(cluster)
    worker = next(h for h in statuses if h != f"{cluster.name}-1")
    manager = f"{cluster.name}-1"
    worker_id, manager_id = node_id(cluster, worker), node_id(cluster, manager)
    # Refused, one line each (docker/cli's errors.Join), and nothing removed.
    out = cluster.shoal("node", "rm", worker, manager, check=False)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.splitlines() == [
        "Error response from daemon: rpc error: code = FailedPrecondition desc = node "
        f"{worker_id} is not down and can't be removed",
        "Error response from daemon: rpc error: code = FailedPrecondition desc = node "
        f"{manager_id} is a cluster manager and is a member of the raft cluster. It must be demoted to worker "
        "before removal"]
    assert node_status(cluster) == statuses

    k = index_of(cluster, worker)
    assert copies_on(cluster, k)
    subprocess.run(["ip", "-n", worker, "link", "set", "eth0", "down"], check=True)
    try:
        wait_for(f"{worker} Down", lambda: node_status(cluster).get(worker, ("",))[0] == "Down", 20)
        assert cluster.shoal("node", "rm", worker).stdout == f"{worker}\n"
        wait_for("5 running on the manager", lambda: len([r for r in running(tasks(cluster))
                                                          if r["node"] == manager]) == 5, 30)
        assert copies_on(cluster, k)  # cut off, it still runs them: nobody could tell it
    finally:
        subprocess.run(["ip", "-n", worker, "link", "set", "eth0", "up"], check=True)
    # Back: the manager refuses it, and it stops what it ran (their replacements run).
    wait_for(f"no copy left on {worker}", lambda: not copies_on(cluster, k), 30)
    assert len(app_copies(cluster.name)) == 5 and replicas(cluster) == "5/5"
    assert list(node_status(cluster)) == [manager]
