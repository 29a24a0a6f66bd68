"""A node that joins after a deploy gets the routing mesh (issue 12 item 4): on a two-node swarm
of real shoalds in network namespaces (tests/cluster/conftest.py), a service publishing a port
in ingress mode runs one task on each node; a third node then joins with `swarm join` and, with
no task of the service, its address answers on the published port and reaches the tasks of both
other nodes (its own clients, 127.0.0.1 included, and another node's), while the older nodes'
ports still reach every task."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

from cluster.conftest import NetnsCluster, NetnsNode, in_netns  # noqa: E402
from cluster.test_swarm_join import init, wait_ready  # noqa: E402

PORT = "4300"


def hostnames(client: NetnsNode, address: str, want: int, timeout: float = 45.0) -> set[str]:
    """The tasks' hostnames answering on address:PORT from client's namespace, a new connection
    each request, until `want` different ones answered (or the time is up)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < want and time.monotonic() < deadline:
        got = in_netns(client.name, "curl", "-s", "-m", "2", f"http://{address}:{PORT}/hostname")
        if got.returncode == 0 and got.stdout.strip():
            seen.add(got.stdout.strip())
        else:
            time.sleep(0.2)
    return seen


def test_node_joining_after_deploy_gets_the_mesh(netns_cluster: NetnsCluster, busybox_tar: Path) -> None:
    manager = netns_cluster.add()
    token = init(manager)
    worker = netns_cluster.add()
    worker.shoal("swarm", "join", "--token", token, f"{manager.addr}:2377")
    wait_ready(manager, 2)
    for node in (manager, worker):
        node.wait_api()
        node.shoal("import", str(busybox_tar), "web:v1")
    late_name = f"{netns_cluster.tag}-3"  # the name the next node will take
    manager.shoal("service", "create", "--detach", "--name", "web", "-p", f"{PORT}:80", "--replicas", "2",
                  "--replicas-max-per-node", "1", "--stop-grace-period", "1s",
                  "--constraint", f"node.hostname != {late_name}",
                  "web:v1", "httpd", "-f", "-p", "80", "-h", "/etc")
    tasks = hostnames(manager, manager.addr, 2, timeout=90)
    assert len(tasks) == 2, (tasks, manager.shoal("service", "ps", "web").stdout)

    late = netns_cluster.add()
    assert late.name == late_name
    late.shoal("swarm", "join", "--token", token, f"{manager.addr}:2377")
    wait_ready(manager, 3)
    # No task of the service runs there, and none is moved there.
    assert late_name not in manager.shoal("service", "ps", "web", "--format", "{{.Node}}").stdout

    # Its own clients, by its address and by 127.0.0.1, reach the tasks of both other nodes.
    assert hostnames(late, late.addr, 2) == tasks
    assert hostnames(late, "127.0.0.1", 2, timeout=15) == tasks
    # Another node's client through the new node's port (a client that is itself a node,
    # sent back to a task on its own node: SNATed by the entry node, network/mesh.py).
    assert hostnames(manager, late.addr, 2, timeout=15) == tasks
    assert hostnames(worker, late.addr, 2, timeout=15) == tasks
    # The new node as client of the older nodes' ports (their replies come back to it).
    assert hostnames(late, manager.addr, 2, timeout=15) == tasks
    assert hostnames(late, worker.addr, 2, timeout=15) == tasks
    manager.shoal("service", "rm", "web")
