"""Jobs (replicated-job, global-job) through the manager's real passes on a real store, as
swarmkit's jobs orchestrator runs them: tasks run to completion, MaxConcurrent bounds what runs
at once, TotalCompletions (= replicas) what is ever run, failures restart, an update is a new
iteration."""

from __future__ import annotations

from shoal.manager.orchestrator import job_counts
from shoal.model.cluster import Node, Task, TaskState
from shoal.store import SQLiteStore
from test_manager_loops import add_service, converge, fail, run_manager, store, tasks, update_spec  # noqa: F401


def complete_running(s: SQLiteStore, now: float) -> None:
    for t in tasks(s):
        if t.status.state == TaskState.RUNNING and t.desired_state == TaskState.COMPLETE:
            fail(s, t, now, TaskState.COMPLETE, 0)


def counts(s: SQLiteStore, sid: str) -> tuple[int, int]:
    svc = s.get("service", sid)
    return job_counts(svc["spec"], svc["spec_version"], [t for t in tasks(s) if t.service_id == sid])


def test_replicated_job_runs_max_concurrent_at_a_time_until_total(store: SQLiteStore) -> None:
    sid = add_service(store, "job", mode="replicated-job", replicas=5, max_concurrent=2)
    converge(store, 1.0)
    running = [t for t in tasks(store) if t.status.state == TaskState.RUNNING]
    assert [t.slot for t in running] == [0, 1]  # swarmkit numbers a job's slots from 0
    assert counts(store, sid) == (2, 0)
    for step in range(2, 6):
        complete_running(store, float(step))
        converge(store, float(step))
    done = [t for t in tasks(store) if t.status.state == TaskState.COMPLETE]
    assert sorted(t.slot for t in done) == [0, 1, 2, 3, 4]
    assert all(t.desired_state == TaskState.COMPLETE for t in done)
    assert len(tasks(store)) == 5  # nothing more is ever started
    assert counts(store, sid) == (0, 5)


def test_job_failure_restarts_but_completion_does_not(store: SQLiteStore) -> None:
    add_service(store, "job", mode="replicated-job", replicas=1,
                restart_policy={"condition": "any", "delay": 1.0})
    converge(store, 1.0)
    first = tasks(store)[0]
    fail(store, first, 2.0)
    converge(store, 2.0)
    assert len(tasks(store)) == 2  # parked for the restart delay
    converge(store, 3.5)
    second = [t for t in tasks(store) if t.id != first.id][0]
    assert second.slot == first.slot and second.status.state == TaskState.RUNNING
    fail(store, second, 4.0, TaskState.COMPLETE, 0)
    for now in (5.0, 10.0, 20.0):
        converge(store, now)
    assert len(tasks(store)) == 2  # `any` is on-failure for a job: complete is done


def test_job_exhausting_max_attempts_keeps_its_slot(store: SQLiteStore) -> None:
    add_service(store, "job", mode="replicated-job", replicas=1,
                restart_policy={"condition": "on-failure", "delay": 0.0, "max_attempts": 1})
    converge(store, 1.0)
    for now in (2.0, 3.0):
        for t in tasks(store):
            if t.status.state == TaskState.RUNNING:
                fail(store, t, now)
        converge(store, now)
    assert len(tasks(store)) == 2  # the first and one restart; then it stays failed
    assert all(t.status.state == TaskState.FAILED for t in tasks(store))


def test_job_update_is_a_new_iteration(store: SQLiteStore) -> None:
    sid = add_service(store, "job", mode="replicated-job", replicas=2)
    converge(store, 1.0)
    complete_running(store, 2.0)
    converge(store, 2.0)
    assert counts(store, sid) == (0, 2)
    update_spec(store, sid, image="web:v2")
    converge(store, 3.0)
    fresh = [t for t in tasks(store) if t.spec_version == 2]
    assert len(fresh) == 2 and all(t.status.state == TaskState.RUNNING for t in fresh)
    old = [t for t in tasks(store) if t.spec_version == 1]
    assert all(t.desired_state == TaskState.SHUTDOWN for t in old)  # history, bounded by the reaper
    assert counts(store, sid) == (2, 0)


def test_global_job_runs_once_per_eligible_node(store: SQLiteStore) -> None:
    with store.transaction() as tx:
        tx.create("node", Node(id="node2", hostname="other").to_dict())
    sid = add_service(store, "gjob", mode="global-job", replicas=0)
    converge(store, 1.0)
    assert sorted(t.node_id for t in tasks(store)) == ["node1", "node2"]
    complete_running(store, 2.0)
    for now in (2.0, 3.0):
        converge(store, now)
    assert len(tasks(store)) == 2
    assert counts(store, sid) == (0, 2)


def test_job_status_while_running(store: SQLiteStore) -> None:
    sid = add_service(store, "job", mode="replicated-job", replicas=3, max_concurrent=1)
    converge(store, 1.0)
    assert counts(store, sid) == (1, 0)
    run_manager(store, 1.5)
    complete_running(store, 2.0)
    converge(store, 2.0)
    assert counts(store, sid) == (1, 1)
    assert isinstance(tasks(store)[0], Task)


def test_job_tasks_are_desired_complete_from_the_start(store: SQLiteStore) -> None:
    """swarmkit's jobs reconcilers create a job's tasks desired COMPLETE, and its restart
    supervisor's StartNow moves a restarted one from desired READY to COMPLETE: `service ps` of
    a running job shows DESIRED STATE Complete beside CURRENT STATE Running."""
    with store.transaction() as tx:
        tx.create("node", Node(id="node2", hostname="other").to_dict())
    add_service(store, "job", mode="replicated-job", replicas=2, restart_policy={"condition": "any", "delay": 1.0})
    add_service(store, "gjob", mode="global-job", replicas=0)
    converge(store, 1.0)
    assert len(tasks(store)) == 4
    assert all((t.desired_state, t.status.state) == (TaskState.COMPLETE, TaskState.RUNNING) for t in tasks(store))
    first = next(t for t in tasks(store) if t.service_name == "job")
    fail(store, first, 2.0)
    converge(store, 2.0)
    replacement = next(t for t in tasks(store) if t.replaces == first.id)
    assert replacement.desired_state == TaskState.READY  # parked for the restart delay
    assert Task.from_dict(store.get("task", first.id)).desired_state == TaskState.SHUTDOWN
    converge(store, 3.5)
    replacement = Task.from_dict(store.get("task", replacement.id))
    assert (replacement.desired_state, replacement.status.state) == (TaskState.COMPLETE, TaskState.RUNNING)
    complete_running(store, 4.0)
    for now in (4.0, 10.0):
        converge(store, now)
    assert len(tasks(store)) == 5  # completed tasks are left alone: not restarted, not shut down
    assert sorted((t.desired_state.text, t.status.state.text) for t in tasks(store)) == \
        [("complete", "complete")] * 4 + [("shutdown", "failed")]


def test_a_replicated_jobs_slot_0_task_is_named_by_its_node(store: SQLiteStore) -> None:
    """swarmkit's slots run 0..TotalCompletions-1, and docker/cli names a task of slot 0
    `service.NODEID` (task/print.go), as moby names its container (naming.Task)."""
    add_service(store, "job", mode="replicated-job", replicas=2)
    converge(store, 1.0)
    first = next(t for t in tasks(store) if t.slot == 0)
    assert first.node_id and first.name == f"job.{first.node_id}"
    assert next(t for t in tasks(store) if t.slot == 1).name == "job.1"
