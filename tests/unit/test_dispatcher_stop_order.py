"""The dispatcher's ordering of a stop (issue 12 item 4): a running task the manager wants stopped
is sent to its node only after every other node has applied service records without it (the
`applied` of their heartbeats), or after STOP_HOLD_MAX; a one-node stop waits for nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.agent.session import AssignmentSet, NodeDescription, Resources, SessionInfo, TaskStatusUpdate
from shoal.manager import allocator, orchestrator, reaper, scheduler
from shoal.manager.dispatcher import STOP_HOLD_MAX, Dispatcher
from shoal.model.cluster import Task
from shoal.store import SQLiteStore


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "state.db")
    yield s
    s.close()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def dispatcher(store: SQLiteStore, clock: Clock) -> Dispatcher:
    return Dispatcher(store, heartbeat_period=1.0, clock=clock)


def manager_pass(store: SQLiteStore, now: float) -> None:
    with store.transaction() as tx:
        orchestrator.reconcile(tx, now)
        allocator.reconcile(tx, now)
        scheduler.reconcile(tx, now)
        reaper.reconcile(tx)


def register(dispatcher: Dispatcher, hostname: str) -> SessionInfo:
    return dispatcher.register(NodeDescription(hostname=hostname, resources=Resources(
        nano_cpus=2_000_000_000, memory_bytes=2 << 30)))


def deploy(store: SQLiteStore, dispatcher: Dispatcher, nodes: list[SessionInfo], replicas: int) -> list[Task]:
    """A service on an overlay network, its tasks running with an address each, every node sent
    its complete set and acknowledging it."""
    with store.transaction() as tx:
        tx.create("network", {"id": "net1", "name": "app_net"})
        tx.create("service", {"id": "svc1", "name": "app_web", "spec_version": 1, "spec": {
            "image": "web:v1", "replicas": replicas, "restart_policy": {"condition": "any", "delay": 0},
            "networks": [{"target": "app_net"}]}})
    manager_pass(store, 1.0)
    tasks = [Task.from_dict(t) for t in store.list("task")]
    for n, t in enumerate(tasks):
        session = next(s for s in nodes if s.node_id == t.node_id)
        dispatcher.update_status(t.node_id, session.session_id, [TaskStatusUpdate(
            task_id=t.id, state="running", container_id=f"c{n}", pid=42,
            networks=[{"network": "app_net", "addresses": [f"10.0.9.{n + 3}/24"]}])])
    for s in nodes:
        aset = dispatcher.assignments(s.node_id, s.session_id)
        assert aset is not None and aset.services is not None
        assert len(aset.services[0].task_ips) == replicas
        dispatcher.heartbeat(s.node_id, s.session_id, applied=aset.sequence)
    return tasks


def scale(store: SQLiteStore, replicas: int) -> Task:
    with store.transaction() as tx:
        svc = dict(tx.get("service", "svc1"))
        svc["spec"] = {**svc["spec"], "replicas": replicas}
        tx.update("service", svc)
    manager_pass(store, 2.0)
    (stopping,) = [Task.from_dict(t) for t in store.list("task") if t["desired_state"] != "running"]
    return stopping


def stops(aset: AssignmentSet | None) -> list[str]:
    return [] if aset is None else [t["id"] for t in aset.tasks if t["desired_state"] != "running"]


def test_the_stop_waits_until_the_other_node_applied_records_without_the_task(
        dispatcher: Dispatcher, store: SQLiteStore) -> None:
    a, b = register(dispatcher, "pc1"), register(dispatcher, "pc2")
    deploy(store, dispatcher, [a, b], replicas=2)
    stopping = scale(store, 1)
    own, other = (a, b) if stopping.node_id == a.node_id else (b, a)
    # Its node is not told yet: the other node's rotation still lists the task.
    assert stops(dispatcher.assignments(own.node_id, own.session_id)) == []
    # The other node is sent records without it...
    sent = dispatcher.assignments(other.node_id, other.session_id)
    assert sent is not None and sent.services is not None and len(sent.services[0].task_ips) == 1
    assert stops(dispatcher.assignments(own.node_id, own.session_id)) == []  # ...not applied yet
    # An acknowledgement of an older set does not release it either.
    dispatcher.heartbeat(other.node_id, other.session_id, applied=sent.sequence - 1)
    assert stops(dispatcher.assignments(own.node_id, own.session_id)) == []
    dispatcher.heartbeat(other.node_id, other.session_id, applied=sent.sequence)
    assert stops(dispatcher.assignments(own.node_id, own.session_id)) == [stopping.id]
    assert dispatcher.assignments(own.node_id, own.session_id) is None  # sent once


def test_a_node_that_never_acknowledges_holds_the_stop_for_a_bounded_time(
        dispatcher: Dispatcher, store: SQLiteStore, clock: Clock) -> None:
    a, b = register(dispatcher, "pc1"), register(dispatcher, "pc2")
    deploy(store, dispatcher, [a, b], replicas=2)
    stopping = scale(store, 1)
    own, other = (a, b) if stopping.node_id == a.node_id else (b, a)
    dispatcher.assignments(other.node_id, other.session_id)  # sent, never applied
    assert stops(dispatcher.assignments(own.node_id, own.session_id)) == []
    clock.now += STOP_HOLD_MAX / 2
    dispatcher.heartbeat(own.node_id, own.session_id)
    assert stops(dispatcher.assignments(own.node_id, own.session_id)) == []
    clock.now += STOP_HOLD_MAX / 2
    dispatcher.heartbeat(own.node_id, own.session_id)
    assert stops(dispatcher.assignments(own.node_id, own.session_id)) == [stopping.id]


def test_a_one_node_stop_waits_for_nothing(dispatcher: Dispatcher, store: SQLiteStore) -> None:
    a = register(dispatcher, "pc1")
    deploy(store, dispatcher, [a], replicas=2)
    stopping = scale(store, 1)
    assert stops(dispatcher.assignments(a.node_id, a.session_id)) == [stopping.id]
