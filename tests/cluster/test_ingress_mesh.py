"""The ingress network across nodes: on a two-node local cluster, `service create -p` without
--network, its one task on the worker, answers on the manager's address too (a node with no task
of the service: the ingress network and the mesh reach the worker's task), and in swarm mode
`network ls` shows `ingress  overlay  swarm` as Docker does. Real shoalds over TLS and VXLAN in
network namespaces, as test_seed_mesh.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

from cluster.conftest import in_netns  # noqa: E402
from cluster.test_local_cluster import cluster_with_web_image  # noqa: E402

PORT = "4100"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Any]:
    name = f"shoaling{os.getpid() % 10000}"
    with cluster_with_web_image(tmp_path_factory.mktemp("ingress"), name, 2, busybox_tar) as c:
        yield c


def on_node(c: Any, k: int, *args: str, answer: str = "") -> subprocess.CompletedProcess[str]:
    """A command run on node k itself (the network commands do not reach a remote node)."""
    node = c.node(k)
    return subprocess.run([sys.executable, "-m", "shoal", "-c", "default", *args], input=answer,
                          env=dict(c.env, SHOAL_ROOT=node["root"], SHOAL_RUN=node["run"]),
                          capture_output=True, text=True, timeout=60)


def _get(c: Any, client: int, entry: int) -> str:
    got = in_netns(c.node(client)["hostname"], "curl", "-s", "-m", "3",
                   f"http://{c.node(entry)['address']}:{PORT}/hostname")
    return got.stdout.strip() if got.returncode == 0 else ""


def test_ingress_port_answers_on_a_node_without_the_task(cluster: Any) -> None:
    assert "ingress" not in on_node(cluster, 1, "network", "ls").stdout
    cluster.shoal("service", "create", "--detach", "--name", "ing", "-p", f"{PORT}:80", "--stop-grace-period", "1s",
                  "--constraint", "node.role == worker", "web:v1", "httpd", "-f", "-p", "80", "-h", "/etc")
    rows = [line.split()[1:] for line in on_node(cluster, 1, "network", "ls").stdout.splitlines()[1:]]
    assert ["ingress", "overlay", "swarm"] in rows, rows

    deadline = time.monotonic() + 60
    answers: dict[tuple[int, int], str] = {}
    while time.monotonic() < deadline and len(answers) < 4:
        for client in (1, 2):
            for entry in (1, 2):
                if (client, entry) not in answers and (got := _get(cluster, client, entry)):
                    answers[(client, entry)] = got
        time.sleep(0.3)
    assert len(answers) == 4, (answers, cluster.shoal("service", "ps", "ing").stdout)
    # One task, on the worker: the manager's port (node 1, no task of the service) reaches it.
    assert len(set(answers.values())) == 1, answers

    refused = on_node(cluster, 1, "network", "rm", "ingress", answer="y\n")
    assert refused.returncode == 1 and "ingress network cannot be removed because service" in refused.stderr
    cluster.shoal("service", "rm", "ing")
