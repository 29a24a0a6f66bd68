"""`service logs` and `events` across the nodes of a three-node local cluster (issue 11 item 7):
real shoalds in network namespaces over mutual TLS, the CLI pointed at the manager.

- `service logs` shows the lines of the tasks of every node, each prefixed as Docker's
  `name.slot.taskid@hostname    | `, `--tail N` per task; `service ps` names the same hostnames;
- `service logs TASK` shows that task's lines only, `--details` as Docker's;
- `service logs -f` follows tasks on every node, including tasks that start later (a scale);
- `events` shows the containers of every node (create, start) in Docker's format;
- a node cut off: the other nodes' lines and Docker's `incomplete log stream` warning naming it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

from cluster.test_node_failure import wait_for  # noqa: E402
from cluster.test_seed_cluster import LocalCluster

NODES = 3
SERVICE = "logs_ticker"
# Every line names its container (the task's hostname is its container ID's first 12 digits).
TICKER = ["sh", "-c", "echo hello from $$(hostname); i=0; while true; do i=$$((i+1)); echo tick $$i; sleep 0.5; done"]
PREFIX = re.compile(r"^(?P<service>[\w.-]+)\.(?P<slot>\d+)\.(?P<task>[0-9a-z]{12})@(?P<host>\S+?)\s+\| (?P<line>.*)$")


def running_nodes(cluster: Any) -> dict[str, str]:
    """task ID (12) -> node column of `service ps`, for running tasks."""
    out = cluster.shoal("service", "ps", SERVICE, "--format", "{{.ID}}\t{{.Node}}\t{{.CurrentState}}",
                        timeout=60).stdout
    rows = [ln.split("\t") for ln in out.splitlines() if ln.count("\t") == 2]
    return {tid: node for tid, node, current in rows if current.startswith("Running")}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Any]:
    c = LocalCluster(tmp_path_factory.mktemp("logscluster"))
    c.name = f"shoallog{os.getpid() % 10000}"
    try:
        c.shoal("cluster", "create", "--nodes", str(NODES), c.name)
        c.record = json.loads((c.dir / "cluster.json").read_text())
        c.on_node(1, "import", str(busybox_tar), "tick:v1")
        compose = c.base / "ticker.yml"
        compose.write_text(yaml.safe_dump({"services": {"ticker": {
            "image": "tick:v1", "command": TICKER, "stop_grace_period": "1s",
            "deploy": {"replicas": NODES, "placement": {"max_replicas_per_node": 1}}}}}))
        c.shoal("stack", "deploy", "--detach", "-c", str(compose), "logs")
        wait_for("a task running on every node", lambda: len(set(running_nodes(c).values())) == NODES, 90)
        yield c
    finally:
        if (c.dir / "cluster.json").exists():
            c.shoal("cluster", "rm", c.name, check=False)


def hostnames(cluster: Any) -> set[str]:
    return {f"{cluster.name}-{k}" for k in range(1, NODES + 1)}


def test_logs_show_the_tasks_of_every_node_with_dockers_prefix(cluster: Any) -> None:
    tasks = running_nodes(cluster)
    assert set(tasks.values()) == hostnames(cluster)  # service ps: NODE is the hostname

    def every_task_ticked() -> Any:
        out = cluster.shoal("service", "logs", SERVICE, timeout=60).stdout
        seen = [m for ln in out.splitlines() if (m := PREFIX.match(ln))]
        ticked = {m["task"] for m in seen if m["line"].startswith("tick ")}
        return seen if set(tasks) <= ticked else None

    seen = wait_for("lines of every node's task", every_task_ticked, 30)
    assert {(m["task"], m["host"]) for m in seen} >= set(tasks.items())  # each line names its node
    assert {m["service"] for m in seen} == {SERVICE}
    hello = {m["task"]: m["line"] for m in seen if m["line"].startswith("hello from ")}
    assert set(hello) == set(tasks)
    # --tail 1: one line per task; -t puts Docker's RFC 3339 time first; --no-task-ids drops the ID.
    out = cluster.shoal("service", "logs", "--tail", "1", "-t", "--no-task-ids", SERVICE, timeout=60).stdout
    lines = out.splitlines()
    assert len(lines) == NODES, out
    for ln in lines:
        assert re.match(rf"^\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z {SERVICE}\.\d@{cluster.name}-\d\s+\| tick \d+$", ln), ln


def test_logs_of_one_task_by_its_id_or_name_and_details(cluster: Any) -> None:
    """`service logs TASK` (docker/cli's logs.go: a service's name or ID, else a task's): only
    that task's lines, padded by its slot; `--details` adds the log driver's attributes (none
    here) and a space; with --raw, the daemon's stream: swarmkit's three context attributes."""
    tasks = running_nodes(cluster)
    short = next(t for t, host in tasks.items() if host == f"{cluster.name}-2")
    found = cluster.shoal("inspect", "--type", "task", "-f", "{{.ID}} {{.NodeID}} {{.ServiceID}} {{.Slot}}", short,
                          timeout=60).stdout.split()
    assert len(found) == 4 and found[0].startswith(short), found
    task_id, node_id, service_id, slot = found

    def only_that_task(ref: str, *flags: str) -> list[str]:
        out = cluster.shoal("service", "logs", *flags, ref, timeout=60).stdout
        lines = out.splitlines()
        assert lines and all(ln.startswith(f"{SERVICE}.{slot}.{short}@{cluster.name}-2    | ") for ln in lines), out
        return lines

    assert len(only_that_task(short, "--tail", "2")) == 2
    assert len(only_that_task(f"{SERVICE}.{slot}.{task_id}", "--tail", "1")) == 1  # its name
    detailed = only_that_task(task_id, "--tail", "1", "--details")
    assert re.match(rf"^{SERVICE}\.{slot}\.{short}@{cluster.name}-2    \|  tick \d+$", detailed[0]), detailed
    raw = cluster.shoal("service", "logs", "--tail", "1", "--raw", "--details", short, timeout=60).stdout
    assert re.match(rf"^com\.docker\.swarm\.node\.id={node_id},com\.docker\.swarm\.service\.id={service_id},"
                    rf"com\.docker\.swarm\.task\.id={task_id} tick \d+\n$", raw), raw
    nosuch = cluster.shoal("service", "logs", "nosuch", check=False, timeout=60)
    assert (nosuch.returncode, nosuch.stderr) == (1, "no such task or service: nosuch\n")
    # The task's container on its node: `logs --details` puts the (empty) attributes' space first.
    container = cluster.on_node(2, "ps", "-q", "--filter", f"label=com.docker.swarm.task.id={task_id}").stdout.split()
    assert re.match(r"^tick \d+\n$", cluster.on_node(2, "logs", "--tail", "1", container[0]).stdout)
    assert re.match(r"^ tick \d+\n$", cluster.on_node(2, "logs", "--tail", "1", "--details", container[0]).stdout)


def test_follow_covers_every_node_and_tasks_that_start_later(cluster: Any) -> None:
    cluster.shoal("service", "scale", f"{SERVICE}=1")
    wait_for("scaled to 1", lambda: len(running_nodes(cluster)) == 1, 30)
    proc = subprocess.Popen([sys.executable, "-m", "shoal", "service", "logs", "-f", "--tail", "0", SERVICE],
                            env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")), daemon=True)  # type: ignore[union-attr]
    reader.start()
    try:
        first = next(iter(running_nodes(cluster)))
        wait_for("the running task's new lines", lambda: any(f".{first}@" in ln for ln in lines), 20)
        cluster.shoal("service", "scale", f"{SERVICE}={NODES}")
        tasks = wait_for("a task on every node again",
                         lambda: t if len(set((t := running_nodes(cluster)).values())) == NODES else None, 60)

        def followed() -> bool:
            got = {(m["task"], m["host"]) for ln in list(lines) if (m := PREFIX.match(ln))}
            return set(tasks.items()) <= got

        wait_for("lines of the tasks started after -f, on their nodes", followed, 30)
        # The new tasks' first line (written before -f saw them) is there too, not only new ones.
        assert {t for t in tasks if t != first} <= {m["task"] for ln in list(lines) if (m := PREFIX.match(ln))
                                                   and m["line"].startswith("hello from ")}
    finally:
        proc.terminate()
        proc.wait(10)


def test_events_show_containers_of_every_node(cluster: Any) -> None:
    out = cluster.shoal("events", "--since", "0", "--no-follow", timeout=60).stdout
    starts = [ln for ln in out.splitlines() if " container start " in ln]
    pattern = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}(Z|[+-]\d\d:\d\d) container start [0-9a-f]{64} "
                         r"\((?P<attrs>.*)\)$")
    nodes = set()
    for ln in starts:
        m = pattern.match(ln)
        assert m, ln
        attrs = dict(kv.split("=", 1) for kv in m["attrs"].split(", "))
        assert list(attrs) == sorted(attrs)  # Docker sorts the attributes by key
        assert attrs["image"].startswith("tick:v1") and attrs["com.docker.swarm.service.name"] == SERVICE
        assert attrs["name"] == attrs["com.docker.swarm.task.name"]
        nodes.add(attrs["com.docker.swarm.node.id"])
    ids = cluster.shoal("node", "ls", "-q", timeout=60).stdout.split()
    assert nodes == set(ids), out
    assert " container create " in out


def test_a_node_without_session_is_named_in_dockers_warning(cluster: Any) -> None:
    """Logs of a node the manager cannot reach: the others' lines, then Docker's
    `incomplete log stream` warning naming it, exit 0 (docker/cli prints the daemon's warning)."""
    cut = f"{cluster.name}-3"
    tasks = running_nodes(cluster)
    assert cut in tasks.values()
    listed = cluster.shoal("node", "ls", "--format", "{{.Hostname}} {{.ID}}", timeout=60).stdout
    node_id = dict(ln.split()[:2] for ln in listed.splitlines())[cut]
    subprocess.run(["ip", "-n", cut, "link", "set", "eth0", "down"], check=True)
    try:
        wait_for(f"{cut} Down", lambda: f"{cut} Down" in cluster.shoal("node", "ls", "--format", "{{.Hostname}} {{.Status}}",
                                                                       timeout=60).stdout, 20)
        proc = cluster.shoal("service", "logs", SERVICE, timeout=60)
        assert proc.returncode == 0
        hosts = {m["host"] for ln in proc.stdout.splitlines() if (m := PREFIX.match(ln))}
        assert hosts == hostnames(cluster) - {cut}, proc.stdout[-2000:]
        assert proc.stderr.strip().splitlines()[-1] == (
            "warning: incomplete log stream. some logs could not be retrieved for the following reasons: "
            f"node {node_id} is not available"), proc.stderr
    finally:
        subprocess.run(["ip", "-n", cut, "link", "set", "eth0", "up"], check=True)
    wait_for(f"{cut} Ready", lambda: f"{cut} Ready" in cluster.shoal("node", "ls", "--format", "{{.Hostname}} {{.Status}}",
                                                                        timeout=60).stdout, 30)
