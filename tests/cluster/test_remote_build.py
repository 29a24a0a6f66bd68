"""The seed's workflow on a local cluster, all through the cluster's context (which `cluster
create` makes current), as a user on another machine would type it: the base image loaded onto
the manager (`save` here | `load` there), `shoal build -t web:v1 .` sent to the manager and its
output printed here, `shoal images`, then `stack deploy` of a compose file whose service has a
`build:` (built on the manager, not in this machine's store) and 5 replicas: 5 tasks running
on at least 3 nodes, none rejected; `ps` lists the manager's containers. Nothing is written into
the manager's root behind its back, and this machine's own store stays empty of the built
images.

Real processes over real TLS in network namespaces, under the machine-wide heavy lock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.test_local_cluster import LocalCluster

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

NODES = 4
HTTPD = ["sh", "-c", "mkdir -p /www && cp /app/index.html /www/ && exec httpd -f -p 80 -h /www"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("rbuild"))
    c.name = f"shoalrb{os.getpid() % 10000}"
    try:
        c.shoal("cluster", "create", "--nodes", str(NODES), c.name)
        c.record = json.loads((c.dir / "cluster.json").read_text())
        yield c
    finally:
        if (c.dir / "cluster.json").exists():
            c.shoal("cluster", "rm", c.name, check=False)


def on_manager(cluster: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """A command on the manager itself (its own root and socket): only to look, never to set up."""
    node = cluster.node(1)
    return subprocess.run([sys.executable, "-m", "shoal", "-c", "default", *args],
                          env=dict(cluster.env, SHOAL_ROOT=node["root"], SHOAL_RUN=node["run"]),
                          capture_output=True, text=True, timeout=120)


def running_tasks(cluster: LocalCluster, service: str) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    out = cluster.shoal("service", "ps", service, "--no-trunc", "--format",
                        "{{.Node}}\t{{.DesiredState}}\t{{.CurrentState}}\t{{.Error}}").stdout
    rows = []
    for line in out.splitlines():
        node, desired, current, error = (line.split("\t") + [""] * 4)[:4]
        rows.append({"node": node, "desired": desired, "current": current, "error": error})
    return rows, [r for r in rows if r["desired"] == "Running" and r["current"].startswith("Running")]


def test_seed_workflow_through_the_cluster_context(cluster: LocalCluster, busybox_tar: Path) -> None:
    assert cluster.shoal("context", "show").stdout.strip() == cluster.name
    # The base image: imported into this machine's store, saved here and loaded on the manager
    # through the context (the archive streamed to it).
    cluster.shoal("-c", "default", "import", str(busybox_tar), "localhost/busybox:test")
    archive = cluster.base / "busybox.tar"
    cluster.shoal("-c", "default", "save", "-o", str(archive), "localhost/busybox:test")
    loaded = cluster.shoal("load", "-i", str(archive))
    assert loaded.stdout.strip() == "Loaded image: localhost/busybox:test"

    app = cluster.base / "app"
    app.mkdir()
    (app / "Dockerfile").write_text("FROM localhost/busybox:test\nCOPY index.html /app/\n"
                                    "RUN echo built-on-the-node > /app/where\n")
    (app / "index.html").write_text("seed\n")
    build = cluster.shoal("build", "-t", "web:v1", str(app))
    assert "Step 3/3 : RUN echo built-on-the-node > /app/where" in build.stdout
    assert build.stdout.rstrip().endswith("Successfully tagged web:v1"), build.stdout
    listed = cluster.shoal("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert sorted(listed) == ["localhost/busybox:test", "web:v1"]
    assert "web:v1" in on_manager(cluster, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert "web:v1" not in cluster.shoal("-c", "default", "images", "--format",
                                         "{{.Repository}}:{{.Tag}}").stdout.split()

    # stack deploy builds what the manager lacks (web:v2) on the manager, then deploys once.
    compose = cluster.base / "seed.yml"
    compose.write_text(yaml.safe_dump({
        "version": "3",
        "services": {"web": {
            "build": str(app), "image": "web:v2", "command": HTTPD, "stop_grace_period": "1s",
            "deploy": {"replicas": 5, "resources": {"limits": {"cpus": "0.1", "memory": "50M"}},
                       "restart_policy": {"condition": "on-failure"}},
            "ports": ["4000:80"], "networks": ["webnet"]}},
        "networks": {"webnet": {}}}))
    start = time.monotonic()
    deploy = cluster.shoal("stack", "deploy", "--detach", "-c", str(compose), "webapp")
    assert f"Building web (web:v2) on tcp://{cluster.node(1)['address']}:" in deploy.stderr, deploy.stderr
    assert "Successfully tagged web:v2" in deploy.stderr
    try:
        while True:
            rows, running = running_tasks(cluster, "webapp_web")
            if len(running) == 5:
                break
            assert time.monotonic() < start + 60, f"not 5/5 running: {rows}"
            time.sleep(0.2)
        assert not [r for r in rows if "Rejected" in r["current"] or "No such image" in r["error"]], rows
        assert len({r["node"] for r in running}) >= 3, running
        assert "web:v2" not in cluster.shoal("-c", "default", "images", "--format",
                                             "{{.Repository}}:{{.Tag}}").stdout.split()
        # ps through the context: the manager's containers (its tasks), not this machine's.
        on_node1 = sum(1 for r in running if r["node"] == f"{cluster.name}-1")
        names = cluster.shoal("ps", "--format", "{{.Names}}").stdout.split()
        assert len([n for n in names if n.startswith("webapp_web.")]) == on_node1, (names, running)
        assert cluster.shoal("-c", "default", "ps", "-q").stdout == ""
    finally:
        cluster.shoal("stack", "rm", "webapp", check=False)
