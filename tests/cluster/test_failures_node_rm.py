"""`node rm --force` of a live worker, as a Swarm user meets it, on a three-node local cluster
(`shoal cluster create --nodes 3`, the seed-like stack: busybox httpd, 5 replicas, port 4000
published through the routing mesh, image on the manager only):

the node is gone from `node ls`, its tasks are replaced on the other nodes (5 running in
`service ps`, none on it), `service ls` counts 5/5 as docker/cli's GetServicesStatus does (a task
counts as running only on a node that is there and not Down: the removed node's old tasks, still
Running in the store, made it 7/5), and each remaining node's published port answers every
request. Real processes over real TLS, as test_node_failure.py."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

from cluster.conftest import in_netns  # noqa: E402
from cluster.test_local_cluster import cluster_with_web_image  # noqa: E402
from cluster.test_node_failure import app_copies, five_running, node_status, running, tasks, wait_for  # noqa: E402
from cluster.test_seed_cluster import seed_compose  # noqa: E402

NODES = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Any]:
    name = f"shoalfr{os.getpid() % 10000}"
    with cluster_with_web_image(tmp_path_factory.mktemp("failrm"), name, NODES, busybox_tar) as c:
        c.shoal("stack", "deploy", "--detach", "-c", str(seed_compose(c.base)), "webapp")
        wait_for("5/5 running after deploy", lambda: five_running(c), 60)
        wait_for("5 copies after deploy", lambda: len(app_copies(c.name)) == 5, 30)
        yield c


def replicas(c: Any) -> str:
    return c.shoal("service", "ls", "--format", "{{.Replicas}}", timeout=60).stdout.strip()


def test_node_rm_force_of_a_live_worker(cluster: Any) -> None:
    gone = next((r["node"] for r in running(tasks(cluster)) if r["node"] != f"{cluster.name}-1"), None)
    assert gone is not None, tasks(cluster)
    out = cluster.shoal("node", "rm", "--force", gone)
    assert out.stdout.strip() == gone
    assert gone not in node_status(cluster)

    def replaced() -> Any:
        rows = tasks(cluster)
        run = running(rows)
        return rows if len(run) == 5 and not [r for r in run if r["node"] == gone] else None

    wait_for("5 running on the other nodes", replaced, 30)
    assert replicas(cluster) == "5/5"
    for k in range(1, NODES + 1):
        node = cluster.node(k)
        if node["hostname"] == gone:
            continue
        for _ in range(6):
            got = in_netns(node["hostname"], "curl", "-s", "-m", "3", f"http://{node['address']}:4000/")
            assert got.returncode == 0 and got.stdout.strip(), (k, got)
    time.sleep(2)
    assert replicas(cluster) == "5/5"
