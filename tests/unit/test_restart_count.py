"""Restarts a worker made in place while its manager was away (agent/localrestart.py) count
against the service's max_attempts once the manager hears of them (issue 11 item 5): the node
reports them with the task's status, the dispatcher keeps them on the task, the orchestrator's
restart supervisor counts them with the tasks it made. The real dispatcher, orchestrator,
scheduler and store; a fake clock for the heartbeats."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shoal.agent.session import NodeDescription, Resources, TaskStatusUpdate
from shoal.manager import allocator, orchestrator, reaper, scheduler
from shoal.manager.dispatcher import Dispatcher
from shoal.model.cluster import Task, TaskState
from shoal.store import SQLiteStore

T0 = 1_000_000.0  # wall clock of the reports


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = SQLiteStore(tmp_path / "state.db")
    yield s
    s.close()


def manager_pass(store: SQLiteStore, now: float) -> None:
    with store.transaction() as tx:
        orchestrator.reconcile(tx, now)
        allocator.reconcile(tx, now)
        scheduler.reconcile(tx, now)
        reaper.reconcile(tx)


def tasks(store: SQLiteStore) -> list[Task]:
    return sorted((Task.from_dict(t) for t in store.list("task")), key=lambda t: t.created_at)


def setup(store: SQLiteStore, **policy: Any) -> tuple[Dispatcher, Any]:
    d = Dispatcher(store, heartbeat_period=1.0, clock=lambda: 0.0)
    info = d.register(NodeDescription(hostname="pc1", resources=Resources(nano_cpus=2_000_000_000,
                                                                        memory_bytes=2 << 30)))
    rp = {"condition": "any", "delay": 0, **policy}
    with store.transaction() as tx:
        tx.create("service", {"id": "svc1", "name": "app_web", "spec_version": 1,
                              "spec": {"image": "web:v1", "replicas": 1, "restart_policy": rp}})
    manager_pass(store, T0)
    return d, info


def report(d: Dispatcher, info: Any, task: Task, state: str, at: float, **fields: Any) -> None:
    d.update_status(info.node_id, info.session_id, [TaskStatusUpdate(task_id=task.id, state=state, timestamp=at,
                                                                     container_id=f"c-{task.id}", **fields)])


def live(store: SQLiteStore) -> list[Task]:
    return [t for t in tasks(store) if t.desired_state <= TaskState.RUNNING]


def test_restarts_in_place_count_against_max_attempts(store: SQLiteStore) -> None:
    d, info = setup(store, max_attempts=3)
    (first,) = tasks(store)
    report(d, info, first, "running", T0 + 1, pid=10)
    # Healed: the node restarted it twice while the manager was away; still RUNNING, a new pid.
    report(d, info, first, "running", T0 + 20, pid=12, exit_code=137, restarts=[T0 + 5, T0 + 10],
           message="restarted by its node while the manager was away (2 restarts, last exit code 137)")
    manager_pass(store, T0 + 21)
    assert [t.id for t in tasks(store)] == [first.id]  # nothing to replace
    assert tasks(store)[0].local_restarts == [T0 + 5, T0 + 10]
    # It exits with the manager there: the third attempt is the orchestrator's ...
    report(d, info, first, "failed", T0 + 30, exit_code=1)
    manager_pass(store, T0 + 31)
    (second,) = live(store)
    assert second.restarted and second.id != first.id
    manager_pass(store, T0 + 32)  # released and scheduled
    report(d, info, tasks(store)[-1], "running", T0 + 33, pid=20)
    report(d, info, tasks(store)[-1], "failed", T0 + 40, exit_code=1)
    manager_pass(store, T0 + 41)
    # ... and there is no fourth: 2 in place + 1 replacement = max_attempts 3 in total.
    assert live(store) == []
    assert len(tasks(store)) == 2


def test_restarts_in_place_before_the_window_do_not_count(store: SQLiteStore) -> None:
    d, info = setup(store, max_attempts=2, window=60)
    (first,) = tasks(store)
    report(d, info, first, "running", T0 + 1, pid=10)
    report(d, info, first, "running", T0 + 200, pid=12, restarts=[T0 + 5, T0 + 190])
    report(d, info, first, "failed", T0 + 210, exit_code=1)
    manager_pass(store, T0 + 211)
    assert len(live(store)) == 1  # one in the window (T0 + 190): the second attempt is allowed
    report(d, info, tasks(store)[-1], "failed", T0 + 215, exit_code=1)
    manager_pass(store, T0 + 216)
    assert live(store) == []  # T0 + 190 and the replacement: two within 60 s


def test_a_report_keeps_only_times(store: SQLiteStore) -> None:
    d, info = setup(store)
    (first,) = tasks(store)
    report(d, info, first, "running", T0 + 1, pid=10, restarts=[T0 + 3, "x", True, None, T0 + 2])
    assert tasks(store)[0].local_restarts == [T0 + 2, T0 + 3]
    # A report without restarts leaves them as they were; the same report again is a repeat.
    report(d, info, first, "running", T0 + 1, pid=10, restarts=None)
    assert tasks(store)[0].local_restarts == [T0 + 2, T0 + 3]
