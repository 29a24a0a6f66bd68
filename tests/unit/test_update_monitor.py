"""UpdateConfig.Monitor as swarmkit's updater keeps it (manager/orchestrator/update/updater.go):
an update stays `updating` until `monitor` has passed since the last task it made started, and
a task it made that fails within `monitor` of starting is a failure (failure_action,
max_failure_ratio) even after every slot was replaced. The manager's passes on a real store, as
tests/unit/test_manager_loops.py."""

from __future__ import annotations

from typing import Any

from shoal.model.cluster import Task, TaskState
from shoal.store import SQLiteStore
from test_manager_loops import add_service, converge, fail, run_manager, store, tasks, update_spec  # noqa: F401


def _status(s: SQLiteStore, sid: str) -> dict[str, Any]:
    return s.get("service", sid)["update_status"] or {}  # type: ignore[index]


def _replace_all(s: SQLiteStore, sid: str, now: float, **update_config: Any) -> list[Task]:
    """A 2-replica service updated at `now`; every slot replaced (and running) at that time."""
    add_service(s, "web", replicas=2, restart_policy={"condition": "none"}, update_config=update_config)
    converge(s, now - 1)
    update_spec(s, sid, image="web:v2")
    for _ in range(4):
        converge(s, now)
    fresh = [t for t in tasks(s) if t.spec_version == 2 and t.desired_state == TaskState.RUNNING]
    assert len(fresh) == 2 and all(t.status.state == TaskState.RUNNING and t.started_at == now for t in fresh)
    return fresh


def test_update_stays_updating_until_monitor_has_passed(store: SQLiteStore) -> None:
    _replace_all(store, "id-web", 101.0, monitor=2.0)
    assert _status(store, "id-web")["state"] == "updating"
    assert run_manager(store, 102.9) == 103.0  # the pass is woken when the monitor ends
    assert _status(store, "id-web")["state"] == "updating"
    run_manager(store, 103.0)
    status = _status(store, "id-web")
    assert (status["state"], status["message"], status["completed_at"]) == ("completed", "update completed", 103.0)


def test_default_monitor_is_five_seconds(store: SQLiteStore) -> None:
    _replace_all(store, "id-web", 101.0)
    run_manager(store, 105.9)
    assert _status(store, "id-web")["state"] == "updating"
    run_manager(store, 106.0)
    assert _status(store, "id-web")["state"] == "completed"


def test_monitor_zero_completes_once_the_last_task_runs(store: SQLiteStore) -> None:
    _replace_all(store, "id-web", 101.0, monitor=0.0)
    assert _status(store, "id-web")["state"] == "completed"


def test_a_failure_within_monitor_pauses_after_every_slot_was_replaced(store: SQLiteStore) -> None:
    fresh = _replace_all(store, "id-web", 101.0, monitor=2.0)
    fail(store, fresh[1], 102.0)  # exits non-zero 1 s after it started
    run_manager(store, 102.0)
    status = _status(store, "id-web")
    assert status["state"] == "paused"
    assert status["message"] == f"update paused due to failure or early termination of task {fresh[1].id}"
    run_manager(store, 110.0)
    assert _status(store, "id-web")["state"] == "paused"  # a paused update stays so


def test_a_failure_after_monitor_is_not_the_updates(store: SQLiteStore) -> None:
    fresh = _replace_all(store, "id-web", 101.0, monitor=2.0)
    fail(store, fresh[0], 103.5)
    run_manager(store, 103.5)
    assert _status(store, "id-web")["state"] == "completed"


def test_max_failure_ratio_tolerates_a_failure_within_monitor(store: SQLiteStore) -> None:
    fresh = _replace_all(store, "id-web", 101.0, monitor=2.0, max_failure_ratio=0.5)
    fail(store, fresh[0], 102.0)
    run_manager(store, 102.0)
    assert _status(store, "id-web")["state"] == "updating"  # 1 of 2 slots is not more than half
    run_manager(store, 103.0)
    assert _status(store, "id-web")["state"] == "completed"


def test_continue_ignores_failures_but_still_monitors(store: SQLiteStore) -> None:
    fresh = _replace_all(store, "id-web", 101.0, monitor=2.0, failure_action="continue")
    fail(store, fresh[0], 102.0)
    run_manager(store, 102.0)
    assert _status(store, "id-web")["state"] == "updating"
    run_manager(store, 103.0)
    assert _status(store, "id-web")["state"] == "completed"


def test_a_failure_within_monitor_rolls_back_and_the_rollback_is_monitored(store: SQLiteStore) -> None:
    sid = add_service(store, replicas=2, restart_policy={"condition": "none"},
                      update_config={"monitor": 2.0, "failure_action": "rollback"},
                      rollback_config={"monitor": 3.0})
    converge(store, 100.0)
    with store.transaction() as tx:  # what `service update` stores: the spec it replaces
        svc = tx.get("service", sid)
        svc.update(previous_spec=svc["spec"], spec={**svc["spec"], "image": "web:v2"},
                   spec_version=svc["spec_version"] + 1, update_status=None)
        tx.update("service", svc)
    for _ in range(4):
        converge(store, 101.0)
    fresh = [t for t in tasks(store) if t.spec_version == 2 and t.status.state == TaskState.RUNNING]
    assert len(fresh) == 2 and _status(store, sid)["state"] == "updating"
    fail(store, fresh[0], 102.5)
    run_manager(store, 102.5)
    svc = store.get("service", sid)
    assert svc["spec"]["image"] == "web:v1" and svc["rolling_back"]
    status = _status(store, sid)
    assert status["state"] == "rollback_started"
    assert status["message"] == f"update rolled back due to failure or early termination of task {fresh[0].id}"
    for _ in range(4):
        converge(store, 104.0)
    back = [t for t in tasks(store) if t.desired_state == TaskState.RUNNING]
    assert len(back) == 2 and all(t.spec["image"] == "web:v1" and t.status.state == TaskState.RUNNING for t in back)
    assert run_manager(store, 106.9) == 107.0  # the rollback's own monitor: rollback_config's 3 s
    assert _status(store, sid)["state"] == "rollback_started"
    run_manager(store, 107.0)
    status = _status(store, sid)
    assert (status["state"], status["message"]) == ("rollback_completed", "rollback completed")
