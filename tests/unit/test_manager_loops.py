"""The manager's reconciliation passes on a real store: orchestrator (replicas, restarts with
delay and max_attempts, scale down, rolling update, global), allocator, scheduler, reaper.
Agent reports are written the way the agent writes them: status updates on the task."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shoal.manager import allocator, orchestrator, reaper, scheduler
from shoal.model.cluster import Node, Task, TaskState
from shoal.store import SQLiteStore


@pytest.fixture
def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "state.db")
    with s.transaction() as tx:
        tx.create("node", Node(id="node1", hostname="testpc").to_dict())
    yield s
    s.close()


def add_service(store: SQLiteStore, name: str = "webapp_web", **spec: Any) -> str:
    spec.setdefault("image", "web:v1")
    with store.transaction() as tx:
        tx.create("service", {"id": f"id-{name}", "name": name, "spec": spec, "spec_version": 1})
    return f"id-{name}"


def update_spec(store: SQLiteStore, service_id: str, **changes: Any) -> None:
    with store.transaction() as tx:
        svc = tx.get("service", service_id)
        svc["spec"] = {**svc["spec"], **changes}
        svc["spec_version"] += 1
        tx.update("service", svc)


def run_manager(store: SQLiteStore, now: float) -> float | None:
    with store.transaction() as tx:
        wake = orchestrator.reconcile(tx, now)
        allocator.reconcile(tx, now)
        scheduler.reconcile(tx, now)
        reaper.reconcile(tx)
    return wake


def tasks(store: SQLiteStore) -> list[Task]:
    return sorted((Task.from_dict(t) for t in store.list("task")), key=lambda t: (t.slot, t.created_at))


def agent_runs_assigned(store: SQLiteStore, now: float) -> None:
    """What the agent does for tasks it is given: run those desired RUNNING (a job's: desired
    COMPLETE), stop the others; and what the dispatcher notes of a task that started."""
    with store.transaction() as tx:
        for raw in tx.list("task"):
            t = Task.from_dict(raw)
            if t.status.state == TaskState.ASSIGNED and t.desired_state.runs:
                t.advance(TaskState.RUNNING, "started", now=now)
                t.started_at = now
            elif t.desired_state >= TaskState.SHUTDOWN and TaskState.ASSIGNED <= t.status.state <= TaskState.RUNNING:
                t.advance(TaskState.SHUTDOWN, "shutdown", now=now)
            else:
                continue
            tx.update("task", t.to_dict())


def fail(store: SQLiteStore, task: Task, now: float, state: TaskState = TaskState.FAILED, code: int = 1) -> None:
    with store.transaction() as tx:
        t = Task.from_dict(tx.get("task", task.id))
        t.advance(state, "finished" if state == TaskState.COMPLETE else "started",
                  err="" if state == TaskState.COMPLETE else f"task: non-zero exit ({code})", now=now)
        tx.update("task", t.to_dict())


def converge(store: SQLiteStore, now: float) -> None:
    for _ in range(4):
        run_manager(store, now)
        agent_runs_assigned(store, now)


def test_replicas_become_running_tasks_in_slots(store: SQLiteStore) -> None:
    add_service(store, replicas=5)
    converge(store, 100.0)
    ts = tasks(store)
    assert [t.slot for t in ts] == [1, 2, 3, 4, 5]
    assert {t.name for t in ts} == {f"webapp_web.{i}" for i in range(1, 6)}
    assert all(t.status.state == TaskState.RUNNING and t.node_id == "node1" for t in ts)
    rev = store.revision()
    converge(store, 101.0)
    assert store.revision() == rev, "a converged pass must change nothing"


def test_failed_task_is_replaced_in_its_slot_after_the_delay(store: SQLiteStore) -> None:
    add_service(store, replicas=2, restart_policy={"condition": "on-failure", "delay": 5})
    converge(store, 100.0)
    victim = tasks(store)[0]
    fail(store, victim, 110.0, code=137)
    wake = run_manager(store, 110.0)
    assert wake == pytest.approx(115.0)
    slot1 = [t for t in tasks(store) if t.slot == 1]
    assert len(slot1) == 2
    old, new = slot1
    assert old.desired_state == TaskState.SHUTDOWN and old.status.err == "task: non-zero exit (137)"
    assert new.desired_state == TaskState.READY and new.replaces == old.id
    agent_runs_assigned(store, 112.0)
    run_manager(store, 112.0)
    assert [t for t in tasks(store) if t.id == new.id][0].status.state < TaskState.RUNNING
    converge(store, 115.5)
    slot1 = [t for t in tasks(store) if t.slot == 1]
    assert slot1[-1].status.state == TaskState.RUNNING and slot1[-1].desired_state == TaskState.RUNNING


def test_a_replacement_rejected_while_it_waits_its_delay_is_restarted_after_the_delay(store: SQLiteStore) -> None:
    """A node prepares a parked replacement and rejects it (no such image) long before its delay
    ends: swarmkit's waitRestart restarts it only once that delay has passed. Restarting it at
    once made a missing image a loop of a new task every pass."""
    add_service(store, replicas=1, restart_policy={"condition": "any", "delay": 5})
    run_manager(store, 100.0)
    first = tasks(store)[0]
    fail(store, first, 100.5, state=TaskState.REJECTED)
    run_manager(store, 100.5)
    parked = [t for t in tasks(store) if t.desired_state == TaskState.READY]
    assert len(parked) == 1 and parked[0].start_after == pytest.approx(105.5)
    fail(store, parked[0], 100.6, state=TaskState.REJECTED)
    for now in (100.6, 101.0, 103.0, 105.0):
        wake = run_manager(store, now)
        assert len(tasks(store)) == 2, f"a new task at {now}"
        assert wake is not None and wake <= 105.5
    run_manager(store, 105.6)
    ts = tasks(store)
    assert len(ts) == 3 and ts[-1].replaces == parked[0].id and ts[-1].start_after == pytest.approx(110.6)


def test_on_failure_does_not_restart_a_completed_task(store: SQLiteStore) -> None:
    add_service(store, replicas=1, restart_policy={"condition": "on-failure", "delay": 0})
    converge(store, 100.0)
    fail(store, tasks(store)[0], 101.0, state=TaskState.COMPLETE)
    converge(store, 102.0)
    ts = tasks(store)
    assert len(ts) == 1 and ts[0].status.state == TaskState.COMPLETE


def test_max_attempts_stops_restarting(store: SQLiteStore) -> None:
    add_service(store, replicas=1, restart_policy={"condition": "any", "delay": 0, "max_attempts": 2})
    now = 100.0
    converge(store, now)
    for _ in range(4):
        now += 1
        live = [t for t in tasks(store) if t.status.state == TaskState.RUNNING]
        if not live:
            break
        fail(store, live[0], now)
        converge(store, now)
    ts = tasks(store)
    assert len(ts) == 3, "the first task and two restarts"
    assert all(t.status.state == TaskState.FAILED for t in ts)


def test_scale_down_removes_highest_slots_and_reaps_them(store: SQLiteStore) -> None:
    sid = add_service(store, replicas=5)
    converge(store, 100.0)
    update_spec(store, sid, replicas=2)
    converge(store, 101.0)
    assert [t.slot for t in tasks(store)] == [1, 2]


def test_history_is_bounded_per_slot(store: SQLiteStore) -> None:
    add_service(store, replicas=1, restart_policy={"condition": "any", "delay": 0})
    now = 100.0
    converge(store, now)
    for _ in range(8):
        now += 1
        live = [t for t in tasks(store) if t.status.state == TaskState.RUNNING][0]
        fail(store, live, now)
        converge(store, now)
    ts = tasks(store)
    assert len(ts) == 5
    assert sum(t.status.state == TaskState.RUNNING for t in ts) == 1


def test_rolling_update_stop_first_one_at_a_time(store: SQLiteStore) -> None:
    sid = add_service(store, replicas=3, update_config={"parallelism": 1, "order": "stop-first"})
    converge(store, 100.0)
    update_spec(store, sid, image="web:v2")
    run_manager(store, 101.0)
    ts = tasks(store)
    shut = [t for t in ts if t.desired_state == TaskState.SHUTDOWN]
    assert len(shut) == 1, "parallelism 1 replaces one slot at a time"
    for step in range(10):
        converge(store, 102.0 + step)
    live = [t for t in tasks(store) if t.desired_state == TaskState.RUNNING]
    assert len(live) == 3 and all(t.spec["image"] == "web:v2" and t.status.state == TaskState.RUNNING for t in live)


def test_unchanged_task_spec_is_not_replaced(store: SQLiteStore) -> None:
    sid = add_service(store, replicas=2)
    converge(store, 100.0)
    before = {t.id for t in tasks(store)}
    update_spec(store, sid, replicas=2)  # new spec version, same task spec
    converge(store, 101.0)
    assert {t.id for t in tasks(store)} == before


def test_global_service_runs_one_task_per_eligible_node(store: SQLiteStore) -> None:
    with store.transaction() as tx:
        tx.create("node", Node(id="node2", hostname="testpc2", availability="drain").to_dict())
        tx.create("node", Node(id="node3", hostname="testpc3").to_dict())
    add_service(store, name="webapp_agent", mode="global")
    converge(store, 100.0)
    ts = tasks(store)
    assert sorted(t.node_id for t in ts) == ["node1", "node3"]
    assert {t.name for t in ts} == {"webapp_agent.node1", "webapp_agent.node3"}


def test_unschedulable_task_stays_pending_with_swarm_explanation(store: SQLiteStore) -> None:
    add_service(store, replicas=1, placement={"constraints": ["node.labels.zone==eu"]})
    converge(store, 100.0)
    (t,) = tasks(store)
    assert t.status.state == TaskState.PENDING
    assert t.status.err == "no suitable node (scheduling constraints not satisfied on 1 node)"


def test_removed_service_tasks_are_shut_down_then_deleted(store: SQLiteStore) -> None:
    sid = add_service(store, replicas=2)
    converge(store, 100.0)
    with store.transaction() as tx:
        tx.delete("service", sid)
    converge(store, 101.0)
    assert tasks(store) == []


def test_depends_on_parks_first_tasks_until_the_dependency_runs(store: SQLiteStore) -> None:
    add_service(store, name="app_redis", stack="app", compose_name="redis", replicas=1)
    add_service(store, name="app_web", stack="app", compose_name="web", replicas=2,
                depends_on={"redis": {"condition": "service_healthy"}})
    run_manager(store, 100.0)
    web = [t for t in tasks(store) if t.service_name == "app_web"]
    assert len(web) == 2
    assert all(t.desired_state == TaskState.READY and t.waits_for == ["app_redis"] for t in web)
    converge(store, 101.0)  # redis runs, then web is released and runs
    web = [t for t in tasks(store) if t.service_name == "app_web"]
    assert all(t.desired_state == TaskState.RUNNING and t.status.state == TaskState.RUNNING for t in web)
    assert all(t.waits_for == [] for t in web)


def test_depends_on_a_missing_required_service_waits(store: SQLiteStore) -> None:
    add_service(store, name="app_web", stack="app", compose_name="web", replicas=1,
                depends_on={"db": {"condition": "service_started", "required": True}})
    converge(store, 100.0)
    (t,) = tasks(store)
    assert t.desired_state == TaskState.READY and t.status.state < TaskState.RUNNING


def _service(store: SQLiteStore, service_id: str) -> dict:
    return store.get("service", service_id)


def _fail_new_tasks(store: SQLiteStore, now: float) -> None:
    for t in tasks(store):
        if t.spec.get("image") == "web:bad" and t.status.state == TaskState.RUNNING:
            fail(store, t, now)


def test_update_completes_and_reports_it(store: SQLiteStore) -> None:
    sid = add_service(store, replicas=2)
    converge(store, 100.0)
    update_spec(store, sid, image="web:v2")
    run_manager(store, 101.0)
    assert _service(store, sid)["update_status"]["state"] == "updating"
    for step in range(8):
        converge(store, 102.0 + step)
    status = _service(store, sid)["update_status"]
    assert (status["state"], status["message"]) == ("completed", "update completed")


def test_failed_update_pauses_by_default(store: SQLiteStore) -> None:
    sid = add_service(store, replicas=3, restart_policy={"condition": "none"})
    converge(store, 100.0)
    update_spec(store, sid, image="web:bad")
    now = 101.0
    for _ in range(12):  # the new tasks fail as soon as they run
        run_manager(store, now)
        agent_runs_assigned(store, now)
        _fail_new_tasks(store, now)
        now += 1
    status = _service(store, sid)["update_status"]
    assert status["state"] == "paused"
    assert status["message"].startswith("update paused due to failure or early termination of task ")
    bad = [t for t in tasks(store) if t.spec.get("image") == "web:bad"]
    assert len(bad) == 1, "parallelism 1: the update stops after its first failed task"


def test_failed_update_rolls_back_when_asked(store: SQLiteStore) -> None:
    sid = add_service(store, replicas=2, restart_policy={"condition": "none"},
                      update_config={"failure_action": "rollback"})
    converge(store, 100.0)
    with store.transaction() as tx:
        svc = tx.get("service", sid)
        svc.update(previous_spec=svc["spec"], spec={**svc["spec"], "image": "web:bad"},
                   spec_version=svc["spec_version"] + 1)
        tx.update("service", svc)
    now = 101.0
    for _ in range(20):
        run_manager(store, now)
        agent_runs_assigned(store, now)
        _fail_new_tasks(store, now)
        now += 1
    svc = _service(store, sid)
    assert svc["spec"]["image"] == "web:v1"
    assert svc["update_status"]["state"] == "rollback_completed"
    live = [t for t in tasks(store) if t.desired_state == TaskState.RUNNING]
    assert len(live) == 2 and all(t.spec["image"] == "web:v1" and t.status.state == TaskState.RUNNING for t in live)
