"""`node update --availability drain` moves a replicated service's tasks off the node by its
update_config (issue 11 item 5): `parallelism` slots at a time, start-first (the replacement runs
before the old task stops, so the service never runs fewer copies) or stop-first. The manager's
passes on a real store, as tests/unit/test_manager_loops.py."""

from __future__ import annotations

from shoal.model.cluster import Node, TaskState
from shoal.store import SQLiteStore
from test_manager_loops import add_service, agent_runs_assigned, converge, run_manager, store, tasks  # noqa: F401


def _two_nodes_then_drain(s: SQLiteStore, **update_config: object) -> set[str]:
    with s.transaction() as tx:
        tx.create("node", Node(id="node2", hostname="testpc2").to_dict())
    add_service(s, replicas=4, update_config=update_config)
    converge(s, 100.0)
    on2 = {t.id for t in tasks(s) if t.node_id == "node2"}
    assert len(on2) == 2, "spread: two tasks on each node"
    with s.transaction() as tx:
        node = tx.get("node", "node2")
        tx.update("node", dict(node, availability="drain"))
    return on2


def _running(s: SQLiteStore) -> list[str]:
    return [t.node_id for t in tasks(s) if t.status.state == TaskState.RUNNING]


def test_start_first_drain_never_runs_fewer_copies_and_moves_one_at_a_time(store: SQLiteStore) -> None:
    old = _two_nodes_then_drain(store, parallelism=1, order="start-first")
    now = 101.0
    stops_seen = []
    for _ in range(12):
        run_manager(store, now)
        stopping = {t.id for t in tasks(store) if t.id in old and t.desired_state > TaskState.RUNNING
                    and t.status.state == TaskState.RUNNING}
        stops_seen.append(len(stopping))
        starting = [t for t in tasks(store) if t.replaces in old and t.status.state < TaskState.RUNNING]
        assert len(starting) <= 1, "parallelism 1: one replacement at a time"
        agent_runs_assigned(store, now)
        assert 4 <= len(_running(store)) <= 5, "start-first: a copy stops only once its replacement runs"
        now += 1
    assert max(stops_seen) == 1
    assert sorted(_running(store)) == ["node1"] * 4
    moved = [t for t in tasks(store) if t.replaces in old]
    assert len(moved) == 2 and all(t.status.state == TaskState.RUNNING for t in moved)


def test_stop_first_drain_stops_parallelism_tasks_at_a_time(store: SQLiteStore) -> None:
    old = _two_nodes_then_drain(store, parallelism=1, order="stop-first")
    run_manager(store, 101.0)
    shut = [t for t in tasks(store) if t.id in old and t.desired_state > TaskState.RUNNING]
    assert len(shut) == 1, "parallelism 1: one of the node's tasks stops first"
    parked = [t for t in tasks(store) if t.replaces == shut[0].id]
    assert len(parked) == 1 and parked[0].desired_state == TaskState.READY  # starts once the old one stopped
    run_manager(store, 101.5)
    assert len([t for t in tasks(store) if t.id in old and t.desired_state > TaskState.RUNNING]) == 1
    now = 102.0
    for _ in range(10):
        converge(store, now)
        now += 1
    assert sorted(_running(store)) == ["node1"] * 4


def test_drain_with_parallelism_zero_moves_everything_at_once(store: SQLiteStore) -> None:
    old = _two_nodes_then_drain(store, parallelism=0, order="stop-first")
    run_manager(store, 101.0)
    assert {t.id for t in tasks(store) if t.desired_state > TaskState.RUNNING} == old
    converge(store, 102.0)
    assert sorted(_running(store)) == ["node1"] * 4
