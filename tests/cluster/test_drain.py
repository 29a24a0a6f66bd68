"""`node update --availability drain` on a two-node local cluster (issue 11 item 5): the worker's
tasks move to the manager by each service's update_config, watched through the manager's event
stream (each node's container start and die, in the order the manager recorded them):

- start-first, parallelism 1: a replacement starts before each old copy dies, one at a time, so
  the service never runs fewer than its 4 copies nor more than 5;
- stop-first, parallelism 1: one old copy dies, then its replacement starts: never fewer than 3.

Real shoalds in network namespaces over mutual TLS, as tests/cluster/test_node_failure.py."""

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

from cluster.test_node_failure import wait_for  # noqa: E402
from cluster.test_seed_cluster import LocalCluster

REPLICAS = 4
SLEEPER = ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 0.2; done"]


def placement(cluster: Any, service: str) -> list[str]:
    out = cluster.shoal("service", "ps", service, "--format", "{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}",
                        timeout=60).stdout
    rows = [ln.split("\t") for ln in out.splitlines() if ln.count("\t") == 2]
    return sorted(node for node, desired, current in rows if desired == "Running" and current.startswith("Running"))


def events(cluster: Any, since: str) -> list[dict[str, Any]]:
    """Docker's events.Message objects (`--format json`) since a unix time with a fraction."""
    out = cluster.shoal("events", "--since", since, "--no-follow", "--format", "json", timeout=60).stdout
    return [json.loads(ln) for ln in out.splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Any]:
    c = LocalCluster(tmp_path_factory.mktemp("draincluster"))
    c.name = f"shoaldrn{os.getpid() % 10000}"
    try:
        c.shoal("cluster", "create", "--nodes", "2", c.name)
        c.record = json.loads((c.dir / "cluster.json").read_text())
        c.on_node(1, "import", str(busybox_tar), "sleeper:v1")
        services = {order: {"image": "sleeper:v1", "command": SLEEPER, "stop_grace_period": "2s",
                            "deploy": {"replicas": REPLICAS,
                                       "update_config": {"parallelism": 1, "order": order}}}
                    for order in ("start-first", "stop-first")}
        compose = c.base / "drain.yml"
        compose.write_text(yaml.safe_dump({"services": services}))
        c.shoal("stack", "deploy", "--detach", "-c", str(compose), "drn")
        both = [f"{c.name}-1"] * 2 + [f"{c.name}-2"] * 2
        for order in services:
            wait_for(f"{order}: two copies on each node", lambda o=order: placement(c, f"drn_{o}") == both, 90)
        yield c
    finally:
        if (c.dir / "cluster.json").exists():
            c.shoal("cluster", "rm", c.name, check=False)


def copies_over_time(evs: list[dict[str, Any]], service: str, start: int) -> list[int]:
    """The service's running copies after each of its container starts and dies, in the
    manager's order, from `start` copies."""
    running, seen = start, []
    for e in evs:
        attrs = e["Actor"]["Attributes"]
        if e["Type"] != "container" or attrs.get("com.docker.swarm.service.name") != service:
            continue
        if e["Action"] in ("start", "die"):
            running += 1 if e["Action"] == "start" else -1
            seen.append(running)
    return seen


def test_drain_moves_tasks_by_update_order_and_parallelism(cluster: Any) -> None:
    worker = f"{cluster.name}-2"
    since = f"{time.time():.6f}"  # the nodes share this machine's clock
    cluster.shoal("node", "update", "--availability", "drain", worker)
    try:
        on_manager = [f"{cluster.name}-1"] * REPLICAS
        for order in ("start-first", "stop-first"):
            wait_for(f"{order}: every copy on the manager", lambda o=order: placement(cluster, f"drn_{o}") == on_manager,
                     60)
        # The old copies' die events come from the drained worker's status reports: wait for them.
        def settled() -> Any:
            evs = events(cluster, since)
            dies = [e for e in evs if e["Type"] == "container" and e["Action"] == "die"]
            return evs if len(dies) == 4 else None

        evs = wait_for("the drained copies' die events", settled, 30)
        start_first = copies_over_time(evs, "drn_start-first", REPLICAS)
        stop_first = copies_over_time(evs, "drn_stop-first", REPLICAS)
        assert len(start_first) == len(stop_first) == 4, evs  # two starts and two dies each
        assert min(start_first) >= REPLICAS and max(start_first) <= REPLICAS + 1, start_first
        assert start_first == [5, 4, 5, 4]
        assert min(stop_first) >= REPLICAS - 1 and max(stop_first) <= REPLICAS, stop_first
        assert stop_first == [3, 4, 3, 4]
        # Every die is of a container on the drained node, every start on the manager.
        # {{.ID}} is "ID *" for the node the CLI talks to, as docker/cli prints it.
        ids = dict(ln.split()[:2] for ln in cluster.shoal("node", "ls", "--format", "{{.Hostname}} {{.ID}}").stdout.splitlines())
        for e in evs:
            if e["Type"] == "container" and e["Action"] in ("start", "die"):
                expected = ids[worker] if e["Action"] == "die" else ids[f"{cluster.name}-1"]
                assert e["Actor"]["Attributes"]["com.docker.swarm.node.id"] == expected, e
    finally:
        cluster.shoal("node", "update", "--availability", "active", worker)
