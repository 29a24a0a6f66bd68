"""A task's steps resume from the state a dead shoald left (swarmkit's controller does so from
the task's state): here the one between create and start. The worker's record says STARTING
with its container, the container was created and never started; a new worker (a restarted
shoald) must start it, not leave the service a task short for good. Real crun and conmon.

The test has a root of its own: a shoald that earlier tests started on the session's root scans
its containers for tasks it does not know and would remove this one (it did, in a CI run)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from conftest import ROOT_ONLY, run_shoal, stop_daemon, teardown_root
from shoal.agent.worker import TASK_LABEL, Worker
from shoal.image.store import ImageStore
from shoal.model.cluster import Node, Task, TaskState, TaskStatus
from shoal.runtime.manager import ContainerManager
from shoal.runtime.spec import ContainerSpec
from shoal.store import SQLiteStore

pytestmark = ROOT_ONLY


@pytest.fixture
def private_root(tmp_path: Path, busybox_tar: Path, monkeypatch: pytest.MonkeyPatch):
    root, run = tmp_path / "root", tmp_path / "run"
    monkeypatch.setenv("SHOAL_ROOT", str(root))
    monkeypatch.setenv("SHOAL_RUN", str(run))
    try:
        run_shoal("import", str(busybox_tar), "localhost/busybox:test", check=True)
        stop_daemon(run)  # the import's shoald: only the test's worker drives tasks on this root
        yield "localhost/busybox:test"
    finally:
        stop_daemon(run)
        teardown_root(root, run)


def test_a_task_left_created_by_a_dead_shoald_is_started(private_root: str, tmp_path: Path) -> None:
    busybox_image = private_root
    containers = ContainerManager()
    store = SQLiteStore(tmp_path / "agent.db")
    worker = None
    cid = ""
    try:
        # what the dead shoald had done: the container created, the task told STARTING
        cid = containers.create(ContainerSpec(image=busybox_image, cmd=["sleep", "600"], network="none",
                                              swarm_task=True, labels={TASK_LABEL: "t-resume"})).id
        assert containers.get(cid).refresh().status == "created"
        with store.transaction() as tx:
            tx.create("node", Node(id="n1", hostname="n1").to_dict())
            tx.create("task", Task(id="t-resume", service_id="s1", service_name="svc", slot=1, node_id="n1",
                                   spec={"image": busybox_image},
                                   status=TaskStatus(state=TaskState.STARTING, container_id=cid)).to_dict())
        worker = Worker(store, "n1", containers, images=ImageStore())
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            worker.sync()
            state = Task.from_dict(store.get("task", "t-resume")).status.state
            if state == TaskState.RUNNING:
                break
            time.sleep(0.05)
        task = Task.from_dict(store.get("task", "t-resume"))
        assert task.status.state == TaskState.RUNNING, task.status
        assert task.status.container_id == cid  # the same container, started: none made again
        assert containers.get(cid).refresh().status == "running"
    finally:
        if worker is not None:
            worker.close()
        if cid:
            containers.remove(cid, force=True)
        store.close()
    with pytest.raises(Exception):
        containers.get(cid)


def test_an_unforeseen_error_in_prepare_rejects_the_task_once(private_root: str, tmp_path: Path) -> None:
    """swarmkit's controller makes a Prepare error fatal (REJECTED, the restart policy decides).
    An error that is not a ShoalError (a bug, an OSError) was left to the next pass: the task
    stayed PREPARING and was prepared again at once, for ever, a traceback in the log each time."""
    calls: list[str] = []

    def network_setup(task: Task) -> None:
        calls.append(task.id)
        raise OSError(28, "No space left on device")

    containers = ContainerManager()
    store = SQLiteStore(tmp_path / "agent.db")
    worker = Worker(store, "n1", containers, images=ImageStore(), network_setup=network_setup)
    try:
        with store.transaction() as tx:
            tx.create("node", Node(id="n1", hostname="n1").to_dict())
            tx.create("task", Task(id="t-bad", service_id="s1", service_name="svc", slot=1, node_id="n1",
                                   spec={"image": private_root},
                                   status=TaskStatus(state=TaskState.ASSIGNED)).to_dict())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            worker.sync()
            if Task.from_dict(store.get("task", "t-bad")).status.state.terminal:
                break
            time.sleep(0.05)
        for _ in range(10):  # more passes: a rejected task is not prepared again
            worker.sync()
            time.sleep(0.02)
        task = Task.from_dict(store.get("task", "t-bad"))
        assert task.status.state == TaskState.REJECTED, task.status
        assert "No space left on device" in task.status.err
        assert calls == ["t-bad"]
        assert not [c for c in containers.list(all=True) if c.labels.get(TASK_LABEL) == "t-bad"]
    finally:
        worker.close()
        store.close()
