"""A swarm network has one ID on every node, as Docker shows it (issues 11 and 12): the
manager's record ID (moby creates a node's copy with the cluster's network ID,
daemon.CreateManagedNetwork), on a two-node local cluster with a stack's network whose tasks
run on both nodes:

- `network ls` on the worker (its own CLI) and on the manager (its own CLI, and through the
  cluster's tcp:// context) print the same ID; `--filter id=` with it finds the network on both;
- `network inspect <that ID's prefix>` works on the worker, its Id that ID;
- a task container's NetworkSettings.Networks.<name>.NetworkID is that ID on each node, and
  the task's NetworksAttachments carry it;
- the network removed and made again (`stack rm` and deploy at once): the worker shows the new
  record's ID (its copy may be the same one, allocator.copy_id, while old tasks hold it).

Real processes in network namespaces, as tests/cluster/test_attachable.py."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

from cluster.test_local_cluster import LocalCluster, cluster_with_web_image  # noqa: E402

STACK = "nid"
NETWORK = f"{STACK}_net"
SUBNET = "10.213.93.0/24"
HTTPD = ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[LocalCluster]:
    with cluster_with_web_image(tmp_path_factory.mktemp("netids"), f"h9a{os.getpid() % 10000}", 2,
                                busybox_tar) as c:
        yield c


def wait_for(what: str, check: Any, timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def deploy(c: LocalCluster) -> None:
    data = {"version": "3.8",
            "services": {"web": {"image": "web:v1", "command": HTTPD, "stop_grace_period": "1s",
                                 "deploy": {"replicas": 2, "placement": {"max_replicas_per_node": 1}},
                                 "networks": ["net"]}},
            "networks": {"net": {"ipam": {"config": [{"subnet": SUBNET}]}}}}
    path = c.base / "nid.yml"
    path.write_text(yaml.safe_dump(data))
    c.shoal("stack", "deploy", "--detach", "-c", str(path), STACK)


def listed(proc_out: str) -> dict[str, str]:
    """name -> ID from `network ls --no-trunc --format '{{.Name}} {{.ID}}'`."""
    return dict(line.split() for line in proc_out.splitlines() if line.strip())


def ls(c: LocalCluster, k: int | None, *extra: str) -> dict[str, str]:
    args = ("network", "ls", "--no-trunc", "--format", "{{.Name}} {{.ID}}", *extra)
    return listed((c.shoal(*args) if k is None else c.on_node(k, *args)).stdout)


def record_id(c: LocalCluster) -> str:
    (doc,) = json.loads(c.shoal("network", "inspect", NETWORK).stdout)
    rid: str = doc["Id"]
    return rid


def task_containers(c: LocalCluster, k: int) -> list[str]:
    out = c.on_node(k, "ps", "-q", "--no-trunc", "--filter", f"label=com.docker.stack.namespace={STACK}").stdout
    return out.split()


def test_one_id_on_every_node(cluster: LocalCluster) -> None:
    c = cluster
    deploy(c)
    wait_for("a task on each node", lambda: all(task_containers(c, k) for k in (1, 2)))
    rid = record_id(c)  # the manager's record, through the cluster's tcp:// context
    assert len(rid) == 25 and rid.isalnum(), rid  # a swarmkit ID, not a node copy's 64 hex

    # `network ls`: the worker's own CLI, the manager's own, the cluster's context.
    assert ls(c, 2)[NETWORK] == rid
    assert ls(c, 1)[NETWORK] == rid
    assert ls(c, None)[NETWORK] == rid
    short = c.on_node(2, "network", "ls", "--filter", f"name={NETWORK}", "--format", "{{.ID}}").stdout.strip()
    assert short == rid[:12]
    assert list(ls(c, 2, "--filter", f"id={rid[:12]}")) == [NETWORK]
    assert list(ls(c, None, "--filter", f"id={rid[:12]}")) == [NETWORK]

    # Inspect by the manager's ID (a prefix, and whole) on the worker: its copy, that ID.
    for ref in (rid[:12], rid):
        (doc,) = json.loads(c.on_node(2, "network", "inspect", ref).stdout)
        assert (doc["Name"], doc["Id"]) == (NETWORK, rid), doc
        assert doc["Containers"], doc  # the worker's own task on it

    # A task container's NetworkID, on each node; the task's attachment (the manager's).
    for k in (1, 2):
        (cid,) = task_containers(c, k)
        (doc,) = json.loads(c.on_node(k, "inspect", cid).stdout)
        ep = doc["NetworkSettings"]["Networks"][NETWORK]
        assert ep["NetworkID"] == rid, doc["NetworkSettings"]
        assert ep["IPAddress"].startswith("10.213.93.") and ep["IPPrefixLen"] == 24, ep
    (cid,) = task_containers(c, 1)  # through the cluster's context: node 1's node API
    (doc,) = json.loads(c.shoal("inspect", cid).stdout)
    assert doc["NetworkSettings"]["Networks"][NETWORK]["NetworkID"] == rid, doc["NetworkSettings"]
    tasks = c.shoal("service", "ps", "-q", "--no-trunc", f"{STACK}_web").stdout.split()
    for doc in json.loads(c.on_node(1, "inspect", "--type", "task", *tasks).stdout):
        assert [a["Network"]["ID"] for a in doc["NetworksAttachments"]] == [rid], doc
    (cid,) = task_containers(c, 2)
    assert c.on_node(2, "ps", "-q", "--no-trunc", "--filter", f"network={rid}").stdout.split() == [cid]

    # Removed and made again at once: a new record, a new ID, shown on the worker too.
    c.shoal("stack", "rm", STACK)
    deploy(c)
    new = wait_for("the new record", lambda: (r := record_id_or_none(c)) != rid and r)
    assert new != rid
    wait_for("the worker's copy under the new ID", lambda: ls(c, 2).get(NETWORK) == new)
    (doc,) = json.loads(c.on_node(2, "network", "inspect", new[:12]).stdout)
    assert doc["Id"] == new, doc
    c.shoal("stack", "rm", STACK)


def record_id_or_none(c: LocalCluster) -> str | None:
    proc = c.shoal("network", "inspect", NETWORK, check=False)
    if proc.returncode != 0:
        return None
    rid: str = json.loads(proc.stdout)[0]["Id"]
    return rid
