"""A worker cut off from its manager (issue 11 item 5), on a two-node local cluster (`shoal
cluster create --nodes 2`: the manager and one worker, a service's two replicas one per node,
restart_policy any, max_attempts 1):

- the period is 20 s; the worker's link is cut and its task killed (the worker restarts it in
  place, after one heartbeat that gets no answer in 2 s: its look at the manager); meanwhile
  `swarm update --dispatcher-heartbeat 1s`; link up. The worker keeps to its own schedule until
  an answer tells it the new period, so the manager must not hold it to the new one before:
  it stays Ready and no task is replaced. (Before the fix, the heartbeat the worker had given
  up on reached the manager once the link was up, was answered with 1 s and gave the node 3.3 s,
  while the worker slept out its 20 s: Down, its task replaced.)
- then, the manager there, the worker's copy is killed again: its one attempt was the restart
  in place, reported at the heal, so the orchestrator does not restart it (max_attempts counts
  the node's restarts too); before, the manager knew of none and replaced it.

Real processes over real TLS in network namespaces, as tests/cluster/test_partition_restart.py."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

from cluster.test_local_cluster import cluster_with_web_image  # noqa: E402
from cluster.test_node_failure import process_copies, wait_for  # noqa: E402
from cluster.test_partition_restart import node_state, running, tasks  # noqa: E402

WORKER = 2
STACK = "pr"  # test_partition_restart's tasks() names services STACK_name
NAME = "hb"


def compose(base: Path) -> Path:
    data = {"version": "3.8",
            "services": {NAME: {"image": "web:v1", "command": ["sleep", "1000000"], "stop_grace_period": "1s",
                                "deploy": {"replicas": 2,
                                           "restart_policy": {"condition": "any", "delay": "1s",
                                                              "max_attempts": 1}}}}}
    path = base / "heartbeat.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def on_worker(cluster: Any) -> list[tuple[int, str, int]]:
    return [c for c in process_copies(cluster.name, "sleep") if c[0] == WORKER]


def link(cluster: Any, state: str) -> None:
    subprocess.run(["ip", "-n", f"{cluster.name}-{WORKER}", "link", "set", "eth0", state], check=True)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Any]:
    base = tmp_path_factory.mktemp("heartbeat")
    with cluster_with_web_image(base, f"shoalhb{os.getpid() % 10000}", 2, busybox_tar) as c:
        try:
            c.shoal("stack", "deploy", "--detach", "-c", str(compose(base)), STACK)
            wait_for("one copy on each node", lambda: len(process_copies(c.name, "sleep")) == 2
                     and len(on_worker(c)) == 1, 60)
            yield c
        finally:
            # The link first: a failure in the middle of a test must not leave it down for rm.
            subprocess.run(["ip", "-n", f"{c.name}-{WORKER}", "link", "set", "eth0", "up"], capture_output=True)


def test_period_lowered_while_cut_off_keeps_the_returning_worker_ready(cluster: Any) -> None:
    worker = f"{cluster.name}-{WORKER}"
    cluster.shoal("swarm", "update", "--dispatcher-heartbeat", "20s")
    time.sleep(2.5)  # every node takes the new period at its next heartbeat (1 s until now)
    before = {r["id"] for r in tasks(cluster, NAME)}
    link(cluster, "down")
    try:
        _, cid, pid = on_worker(cluster)[0]
        os.kill(pid, signal.SIGKILL)  # its restart asks the manager first: a heartbeat into the cut
        wait_for("restarted in place on the cut worker",
                 lambda: [c for c in on_worker(cluster) if c[1] == cid and c[2] != pid], 15)
        cluster.shoal("swarm", "update", "--dispatcher-heartbeat", "1s")
        assert node_state(cluster, worker) == "Ready"
    finally:
        link(cluster, "up")
    # The worker is on its 20 s schedule until an answer tells it 1 s: at most one 20 s period
    # plus the grace of the new one; Down at any look meanwhile is the fault.
    end = time.monotonic() + 25
    while time.monotonic() < end:
        assert node_state(cluster, worker) == "Ready", "the returning worker was taken for Down"
        time.sleep(0.5)
    rows = tasks(cluster, NAME)
    assert {r["id"] for r in rows} == before, f"tasks replaced: {rows}"
    assert len(running(rows)) == 2
    assert len(process_copies(cluster.name, "sleep")) == 2


def test_restarts_in_place_count_against_max_attempts(cluster: Any) -> None:
    worker = f"{cluster.name}-{WORKER}"
    rows = tasks(cluster, NAME)
    (mine,) = [r for r in running(rows) if r["node"] == worker]
    _, _cid, pid = on_worker(cluster)[0]
    os.kill(pid, signal.SIGKILL)  # the manager is there: the exit is reported

    def failed() -> bool:
        return any(r["id"] == mine["id"] and r["current"].startswith("Failed") for r in tasks(cluster, NAME))

    wait_for("the exit reported", failed, 30)
    time.sleep(4)  # the 1 s restart delay and the orchestrator's passes: nothing is to be restarted
    after = tasks(cluster, NAME)
    assert {r["id"] for r in after} == {r["id"] for r in rows}, f"restarted past max_attempts: {after}"
    assert len(running(after)) == 1
    assert len(process_copies(cluster.name, "sleep")) == 1
