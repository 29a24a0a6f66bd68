"""`swarm leave --force` on a worker that runs tasks, then `swarm join` again, as a Swarm user
meets it, on a three-node local cluster (`shoal cluster create --nodes 3`, the seed-like stack:
busybox httpd, 5 replicas, port 4000 through the routing mesh, image on the manager only):

the node that left runs none of its task containers any more (moby's Cluster.Leave removes the
containers labelled with the node's ID; they kept running, owned by nobody), its tasks run on the
other nodes, and once it has joined again (a new node, Ready) exactly 5 copies run on the machine,
`service ls` says 5/5 and every node's published port answers. Copies are counted from /proc.
Real processes over real TLS, as test_node_failure.py."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

from cluster.conftest import in_netns  # noqa: E402
from cluster.test_node_failure import app_copies, running, seed_app_cluster, tasks, wait_for  # noqa: E402

NODES = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Any]:
    name = f"shoalfl{os.getpid() % 10000}"
    with seed_app_cluster(tmp_path_factory.mktemp("failleave"), name, NODES, busybox_tar) as c:
        yield c


def node_rows(c: Any) -> list[tuple[str, str]]:
    out = c.shoal("node", "ls", "--format", "{{.Hostname}}\t{{.Status}}", timeout=60).stdout
    return [tuple(ln.split("\t")) for ln in out.splitlines() if ln.count("\t") == 1]  # type: ignore[misc]


def test_worker_leaves_and_joins_again(cluster: Any) -> None:
    host = next((r["node"] for r in running(tasks(cluster)) if r["node"] != f"{cluster.name}-1"), None)
    assert host is not None, tasks(cluster)
    k = int(host.rsplit("-", 1)[1])
    assert [x for x in app_copies(cluster.name) if x[0] == k]
    assert cluster.on_node(k, "swarm", "leave", "--force").stdout.strip() == "Node left the swarm."
    wait_for(f"no task container left on {host}", lambda: not [x for x in app_copies(cluster.name) if x[0] == k], 20)

    def elsewhere() -> Any:
        run = running(tasks(cluster))
        return len(run) == 5 and not [r for r in run if r["node"] == host]

    wait_for("5 running on the other nodes", elsewhere, 30)
    # Nor its networks: no bridge, veth or VXLAN device of shoal's is left on it.
    wait_for(f"no shoal link left on {host}", lambda: not [
        ln for ln in in_netns(host, "ip", "-br", "link").stdout.splitlines() if ln.startswith(("vx-", "shoal"))], 10)
    token = cluster.shoal("swarm", "join-token", "-q", "worker").stdout.strip()
    cluster.on_node(k, "swarm", "join", "--token", token, f"{cluster.node(1)['address']}:2377")
    wait_for(f"{host} Ready again", lambda: (host, "Ready") in node_rows(cluster), 30)
    assert (host, "Down") in node_rows(cluster)  # its old identity, as Docker keeps it
    wait_for("exactly 5 copies", lambda: len(app_copies(cluster.name)) == 5, 20)
    assert cluster.shoal("service", "ls", "--format", "{{.Replicas}}").stdout.strip() == "5/5"
    for n in range(1, NODES + 1):
        node = cluster.node(n)

        def answer(node: dict[str, Any] = node) -> bool:
            got = in_netns(node["hostname"], "curl", "-s", "-m", "3", f"http://{node['address']}:4000/")
            return got.returncode == 0 and bool(got.stdout.strip())

        # The node that joined again publishes the port once its first set has reached it.
        wait_for(f"node {n}'s port 4000 answers", answer, 15, every=0.5)
        assert all(answer() for _ in range(5)), n
    assert len(app_copies(cluster.name)) == 5
