"""Changes made while a worker is Down (its link cut), as a Swarm user meets them, on a
three-node local cluster (`shoal cluster create --nodes 3`, the seed-like stack: busybox httpd,
5 replicas, port 4000 through the routing mesh, image on the manager only): when the link comes
back, the node runs what the manager wants of it now, nothing it was told before.

- `service scale` down while a worker is Down: its tasks were replaced elsewhere and then some
  removed; back, it stops its copies: exactly 3 run on the machine, 3/3.
- `stack rm` while a worker is Down: back, it stops its copies and removes the stack's
  network (no VXLAN device of it left there): none runs on the machine.

Copies are counted from /proc. Real processes over real TLS, as test_node_failure.py."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

from cluster.conftest import in_netns  # noqa: E402
from cluster.test_node_failure import app_copies, node_status, running, seed_app_cluster, tasks, wait_for  # noqa: E402

NODES = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Any]:
    name = f"shoaldn{os.getpid() % 10000}"
    with seed_app_cluster(tmp_path_factory.mktemp("faildown"), name, NODES, busybox_tar) as c:
        yield c


def copies_on(c: Any, k: int) -> list[tuple[int, str, int]]:
    return [x for x in app_copies(c.name) if x[0] == k]


def a_worker_with_copies(c: Any) -> int:
    counts = {k: len(copies_on(c, k)) for k in range(2, NODES + 1)}
    k = max(counts, key=lambda n: counts[n])
    assert counts[k], counts
    return k


def cut(c: Any, k: int) -> None:
    host = f"{c.name}-{k}"
    subprocess.run(["ip", "-n", host, "link", "set", "eth0", "down"], check=True)
    wait_for(f"{host} Down", lambda: node_status(c).get(host, ("",))[0] == "Down", 20)


def heal(c: Any, k: int) -> None:
    host = f"{c.name}-{k}"
    subprocess.run(["ip", "-n", host, "link", "set", "eth0", "up"], check=True)
    wait_for(f"{host} Ready again", lambda: node_status(c).get(host, ("",))[0] == "Ready", 30)


def replicas(c: Any) -> str:
    return c.shoal("service", "ls", "--format", "{{.Replicas}}", timeout=60).stdout.strip()


def test_scale_down_while_a_worker_is_down(cluster: Any) -> None:
    k = a_worker_with_copies(cluster)
    cut(cluster, k)
    try:
        assert cluster.shoal("service", "scale", "--detach", "webapp_web=3").stdout == "webapp_web scaled to 3\n"
        wait_for("3 running", lambda: len(running(tasks(cluster))) == 3, 30)
        assert copies_on(cluster, k)  # nobody could tell it
    finally:
        heal(cluster, k)
    wait_for(f"no copy left on node {k}", lambda: not copies_on(cluster, k), 30)
    wait_for("exactly 3 copies", lambda: len(app_copies(cluster.name)) == 3, 30)
    assert replicas(cluster) == "3/3"


def test_stack_rm_while_a_worker_is_down(cluster: Any) -> None:
    cluster.shoal("service", "scale", "--detach", "webapp_web=5")
    wait_for("5 copies again", lambda: len(app_copies(cluster.name)) == 5, 60)
    k = a_worker_with_copies(cluster)
    host = f"{cluster.name}-{k}"
    assert [ln for ln in in_netns(host, "ip", "-br", "link").stdout.splitlines() if ln.startswith("vx-")]
    cut(cluster, k)
    try:
        cluster.shoal("stack", "rm", "webapp")
        wait_for("the other nodes' copies gone", lambda: not [x for x in app_copies(cluster.name) if x[0] != k], 30)
        assert copies_on(cluster, k)
    finally:
        heal(cluster, k)
    wait_for(f"no copy left on {host}", lambda: not copies_on(cluster, k), 30)
    wait_for(f"no VXLAN device left on {host}", lambda: not [
        ln for ln in in_netns(host, "ip", "-br", "link").stdout.splitlines() if ln.startswith("vx-")], 30)
    assert cluster.shoal("service", "ls", "-q").stdout == "" and app_copies(cluster.name) == []
