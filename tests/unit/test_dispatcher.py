"""The dispatcher on a real store, with the manager's real passes: registration keeps a node's
spec, one session per node, heartbeats -> Down -> tasks replaced, status updates checked and
forward-only, assignments complete then incremental (secrets' data in the set, never the
store's events), and a node back from a partition told to stop the tasks that were replaced.
The clock is the dispatcher's own (a settable function), so no test sleeps for a timeout."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from shoal.agent.agent import Agent
from shoal.agent.inprocess import InProcessSession
from shoal.agent.session import (REGISTER_RETRY, AssignmentSet, AssignmentType, NodeDescription, Resources,
                                 SessionInvalid, TaskStatusUpdate, from_json, to_json)
from shoal.manager import allocator, orchestrator, reaper, scheduler
from shoal.manager.dispatcher import GRACE_MULTIPLIER, UNKNOWN_GRACE_MULTIPLIER, Dispatcher, NotAssigned
from shoal.manager.files import stored_content
from shoal.model.cluster import Node, Task, TaskState
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


def describe(hostname: str, node_id: str = "") -> NodeDescription:
    return NodeDescription(hostname=hostname, resources=Resources(nano_cpus=2_000_000_000, memory_bytes=2 << 30),
                           node_id=node_id)


def manager_pass(store: SQLiteStore, now: float) -> None:
    with store.transaction() as tx:
        orchestrator.reconcile(tx, now)
        allocator.reconcile(tx, now)
        scheduler.reconcile(tx, now)
        reaper.reconcile(tx)


def add_service(store: SQLiteStore, replicas: int = 2, **spec: Any) -> str:
    spec = {"image": "web:v1", "replicas": replicas, "restart_policy": {"condition": "any", "delay": 0}, **spec}
    with store.transaction() as tx:
        tx.create("service", {"id": "svc1", "name": "app_web", "spec": spec, "spec_version": 1})
    return "svc1"


def tasks(store: SQLiteStore) -> list[Task]:
    return sorted((Task.from_dict(t) for t in store.list("task")), key=lambda t: (t.slot, t.created_at))


def node(store: SQLiteStore, node_id: str) -> Node:
    raw = store.get("node", node_id)
    assert raw is not None
    return Node.from_dict(raw)


def running(dispatcher: Dispatcher, node_id: str, session_id: str, store: SQLiteStore) -> None:
    """The node reports each of its tasks running."""
    dispatcher.update_status(node_id, session_id, [
        TaskStatusUpdate(task_id=t.id, state="running", message="started", container_id=f"c-{t.id}", pid=42)
        for t in tasks(store) if t.node_id == node_id and t.desired_state == TaskState.RUNNING])


# ---- registration -------------------------------------------------------------------------------
def test_registration_records_the_description_and_keeps_the_spec(dispatcher: Dispatcher, store: SQLiteStore) -> None:
    info = dispatcher.register(describe("pc1"), role="worker")
    n = node(store, info.node_id)
    assert (n.hostname, n.role, n.availability, n.state, n.nano_cpus) == ("pc1", "worker", "active", "ready", 2_000_000_000)
    assert info.heartbeat_period >= 1.0 and info.session_id
    # `node update` changes the spec...
    with store.transaction() as tx:
        raw = dict(tx.get("node", info.node_id))
        raw.update(labels={"zone": "eu"}, availability="drain", role="manager")
        tx.update("node", raw)
    # ...and a new registration (shoald restarted, a new description) keeps it.
    again = dispatcher.register(describe("pc1-renamed", node_id=info.node_id), role="worker")
    n = node(store, info.node_id)
    assert again.node_id == info.node_id
    assert (n.hostname, n.labels, n.availability, n.role) == ("pc1-renamed", {"zone": "eu"}, "drain", "manager")


def test_a_new_session_ends_the_old_one(dispatcher: Dispatcher) -> None:
    first = dispatcher.register(describe("pc1"))
    second = dispatcher.register(describe("pc1", node_id=first.node_id))
    assert first.session_id != second.session_id
    with pytest.raises(SessionInvalid):
        dispatcher.heartbeat(first.node_id, first.session_id)
    with pytest.raises(SessionInvalid):
        dispatcher.update_status(first.node_id, first.session_id, [])
    assert dispatcher.heartbeat(second.node_id, second.session_id) >= 1.0
    assert dispatcher.session_count() == 1


# ---- heartbeats ---------------------------------------------------------------------------------
def test_missed_heartbeats_mark_the_node_down_and_its_tasks_are_replaced(
        dispatcher: Dispatcher, store: SQLiteStore, clock: Clock) -> None:
    a = dispatcher.register(describe("pc1"))
    add_service(store, replicas=2)
    manager_pass(store, 1.0)
    running(dispatcher, a.node_id, a.session_id, store)
    b = dispatcher.register(describe("pc2"))
    # Heartbeats within the grace keep a node ready.
    for _ in range(5):
        clock.now += a.heartbeat_period * 2
        dispatcher.heartbeat(a.node_id, a.session_id)
        dispatcher.heartbeat(b.node_id, b.session_id)
        assert dispatcher.expire() == []
    # pc1 falls silent: after period * grace (and the jitter) it is down, not before.
    clock.now += 1.0 * 1.1 * GRACE_MULTIPLIER * 0.5
    dispatcher.heartbeat(b.node_id, b.session_id)
    assert dispatcher.expire() == []
    clock.now += 1.0 * 1.1 * GRACE_MULTIPLIER * 0.6
    dispatcher.heartbeat(b.node_id, b.session_id)
    assert dispatcher.expire() == [a.node_id]
    assert node(store, a.node_id).state == "down"
    with pytest.raises(SessionInvalid):
        dispatcher.heartbeat(a.node_id, a.session_id)
    # The orchestrator retires pc1's tasks and the scheduler puts their replacements on pc2,
    # without waiting for pc1 to say they stopped (it cannot).
    manager_pass(store, 2.0)
    manager_pass(store, 2.0)
    old = [t for t in tasks(store) if t.node_id == a.node_id]
    new = [t for t in tasks(store) if t.desired_state == TaskState.RUNNING]
    assert len(old) == 2 and all(t.desired_state == TaskState.SHUTDOWN for t in old)
    assert len(new) == 2 and {t.node_id for t in new} == {b.node_id}
    assert {t.slot for t in new} == {1, 2}


def test_tasks_lost_with_their_node_are_replaced_without_the_restart_delay(
        dispatcher: Dispatcher, store: SQLiteStore, clock: Clock) -> None:
    """The restart delay (5 s by default) slows a crashing task; a node that went down is not
    the task failing, so its tasks start elsewhere at once. A task that failed is still delayed."""
    a = dispatcher.register(describe("pc1"))
    add_service(store, replicas=2, restart_policy={"condition": "any", "delay": 5.0})
    manager_pass(store, 1.0)
    running(dispatcher, a.node_id, a.session_id, store)
    b = dispatcher.register(describe("pc2"))
    clock.now += 1.0 * 1.1 * GRACE_MULTIPLIER * 1.2
    dispatcher.heartbeat(b.node_id, b.session_id)
    assert dispatcher.expire() == [a.node_id]
    manager_pass(store, 2.0)
    manager_pass(store, 2.0)
    new = [t for t in tasks(store) if t.node_id == b.node_id]
    assert len(new) == 2 and all(t.desired_state == TaskState.RUNNING for t in new)
    # One of them fails on pc2: its replacement waits the delay.
    failed = new[0]
    with store.transaction() as tx:
        raw = tx.get("task", failed.id)
        assert raw is not None
        raw["status"] = dict(raw["status"], state=TaskState.FAILED.name.lower(), err="exit 1")
        tx.update("task", raw)
    manager_pass(store, 3.0)
    waiting = [t for t in tasks(store) if t.slot == failed.slot and t.desired_state == TaskState.READY]
    assert len(waiting) == 1 and waiting[0].start_after == pytest.approx(8.0)


def test_a_restarted_manager_gives_known_nodes_time_to_come_back(store: SQLiteStore, clock: Clock) -> None:
    first = Dispatcher(store, heartbeat_period=1.0, clock=clock)
    a = first.register(describe("pc1"))
    b = first.register(describe("pc2"))
    # The manager restarts: a new dispatcher, no sessions. pc1 reconnects, pc2 does not.
    second = Dispatcher(store, heartbeat_period=1.0, clock=clock)
    second.start()
    # Past a session's grace and UNKNOWN_GRACE_MULTIPLIER periods, within REGISTER_RETRY: an
    # agent in its registration backoff may come back that late.
    clock.now += max(1.0 * UNKNOWN_GRACE_MULTIPLIER, REGISTER_RETRY) - 1.0
    assert second.expire() == []
    back = second.register(describe("pc1", node_id=a.node_id))
    for _ in range(2):
        clock.now += 1.0
        second.heartbeat(back.node_id, back.session_id)
    assert second.expire() == [b.node_id]
    assert node(store, a.node_id).state == "ready" and node(store, b.node_id).state == "down"


# ---- status -------------------------------------------------------------------------------------
def test_status_updates_are_checked_forward_only_and_batched(dispatcher: Dispatcher, store: SQLiteStore) -> None:
    a = dispatcher.register(describe("pc1"))
    add_service(store, replicas=2)
    manager_pass(store, 1.0)
    b = dispatcher.register(describe("pc2"))
    t1, t2 = tasks(store)
    assert t1.node_id == t2.node_id == a.node_id
    before = store.revision()
    dispatcher.update_status(a.node_id, a.session_id, [
        TaskStatusUpdate(task_id=t1.id, state="running", container_id="c1", pid=7,
                         networks=[{"network": "n", "addresses": ["10.0.0.3/24"], "aliases": []}]),
        TaskStatusUpdate(task_id=t2.id, state="preparing"),
        TaskStatusUpdate(task_id="gone", state="running")])
    # One transaction: two task writes (the unknown task skipped) and, for t1's container that
    # now runs, its create and start events.
    assert store.revision() == before + 4
    noted = [(e.kind, e.action, e.id) for e in store.events_since(before) if e.kind == "container"]
    assert noted == [("container", "create", "c1"), ("container", "start", "c1")]
    t1, t2 = tasks(store)
    assert (t1.status.state, t1.status.container_id, t1.status.pid) == (TaskState.RUNNING, "c1", 7)
    assert t1.networks[0]["addresses"] == ["10.0.0.3/24"]
    # A late report cannot move a task back; a repeat writes nothing.
    before = store.revision()
    dispatcher.update_status(a.node_id, a.session_id, [TaskStatusUpdate(task_id=t1.id, state="starting"),
                                                       TaskStatusUpdate(task_id=t2.id, state="preparing")])
    assert store.revision() == before and tasks(store)[0].status.state == TaskState.RUNNING
    # Another node may not touch pc1's tasks: the whole batch is refused.
    with pytest.raises(NotAssigned):
        dispatcher.update_status(b.node_id, b.session_id, [TaskStatusUpdate(task_id=t2.id, state="starting"),
                                                           TaskStatusUpdate(task_id=t1.id, state="failed")])
    assert [t.status.state for t in tasks(store)] == [TaskState.RUNNING, TaskState.PREPARING]


# ---- assignments --------------------------------------------------------------------------------
def test_assignments_complete_then_incremental(dispatcher: Dispatcher, store: SQLiteStore) -> None:
    with store.transaction() as tx:
        tx.create("secret", {"id": "s1", "name": "app_pw", **stored_content("secret", "app_pw", b"hunter2")})
        tx.create("network", {"id": "net1", "name": "app_net"})
    a = dispatcher.register(describe("pc1"))
    add_service(store, replicas=2, secrets=[{"source": "app_pw", "target": "/run/secrets/pw"}],
                networks=[{"target": "app_net", "aliases": ["web"]}])
    manager_pass(store, 1.0)
    first = dispatcher.assignments(a.node_id, a.session_id)
    assert first is not None and first.type == AssignmentType.COMPLETE and first.sequence == 1
    assert sorted(t["id"] for t in first.tasks) == sorted(t.id for t in tasks(store))
    assert [(f.kind, f.name, f.data) for f in first.files] == [("secret", "app_pw", b"hunter2")]
    assert first.node is not None and first.node["id"] == a.node_id
    assert first.services is not None and [(r.service_name, r.network, r.aliases) for r in first.services] == \
        [("app_web", "app_net", ["web"])]
    # It crosses as JSON and comes back the same.
    import json
    assert from_json(AssignmentSet, json.loads(json.dumps(to_json(first)))) == first
    # Nothing changed: nothing to send.
    assert dispatcher.assignments(a.node_id, a.session_id) is None
    # The node's own status reports are not echoed back...
    running(dispatcher, a.node_id, a.session_id, store)
    assert dispatcher.assignments(a.node_id, a.session_id) is None
    # ...but a task's address changes the service records the node's resolver needs.
    t1 = tasks(store)[0]
    dispatcher.update_status(a.node_id, a.session_id, [TaskStatusUpdate(
        task_id=t1.id, state="running", message="started",
        networks=[{"network": "app_net", "addresses": ["10.0.9.3/24"], "aliases": ["web"]}])])
    echo = dispatcher.assignments(a.node_id, a.session_id)
    assert echo is not None and echo.tasks == [] and echo.services is not None
    assert echo.services[0].task_ips == ["10.0.9.3"]
    # ...a manager change is: scale to 1 (one task desired REMOVE), then the reaper deletes it.
    with store.transaction() as tx:
        svc = dict(tx.get("service", "svc1"))
        svc["spec"] = {**svc["spec"], "replicas": 1}
        tx.update("service", svc)
    manager_pass(store, 2.0)
    inc = dispatcher.assignments(a.node_id, a.session_id)
    assert inc is not None and inc.type == AssignmentType.INCREMENTAL and inc.applies_to == echo.sequence
    assert [t["desired_state"] for t in inc.tasks] == ["remove"] and inc.files == []
    removed = inc.tasks[0]["id"]
    dispatcher.update_status(a.node_id, a.session_id, [TaskStatusUpdate(task_id=removed, state="shutdown")])
    manager_pass(store, 3.0)
    last = dispatcher.assignments(a.node_id, a.session_id)
    assert last is not None and last.removed_tasks == [removed]
    # The secret's data never reached the store's event log.
    assert all(b"hunter2" not in repr(e.object).encode() for e in store.events_since(0, limit=10_000))


def test_a_returning_node_is_told_to_stop_the_tasks_that_were_replaced(
        dispatcher: Dispatcher, store: SQLiteStore, clock: Clock) -> None:
    a = dispatcher.register(describe("pc1"))
    add_service(store, replicas=1)
    manager_pass(store, 1.0)
    running(dispatcher, a.node_id, a.session_id, store)
    (original,) = tasks(store)
    b = dispatcher.register(describe("pc2"))
    clock.now += 10  # pc1 is cut off
    dispatcher.heartbeat(b.node_id, b.session_id)
    assert dispatcher.expire() == [a.node_id]
    manager_pass(store, 2.0)
    manager_pass(store, 2.0)
    running(dispatcher, b.node_id, b.session_id, store)
    # The partition heals: pc1 registers again; its complete set still lists the old task, now
    # desired SHUTDOWN, so the agent stops it: the slot runs once.
    back = dispatcher.register(describe("pc1", node_id=a.node_id))
    assert node(store, a.node_id).state == "ready"
    full = dispatcher.assignments(back.node_id, back.session_id)
    assert full is not None and full.type == AssignmentType.COMPLETE
    assert [(t["id"], t["desired_state"]) for t in full.tasks] == [(original.id, "shutdown")]
    live = [t for t in tasks(store) if t.desired_state == TaskState.RUNNING]
    assert len(live) == 1 and live[0].node_id == b.node_id and live[0].slot == original.slot


# ---- the agent against an in-process dispatcher -------------------------------------------------
def test_agent_keeps_assignments_locally_and_stops_what_the_complete_set_drops(
        tmp_path: Path, dispatcher: Dispatcher, store: SQLiteStore) -> None:
    """The agent's store holds tasks and statuses, never a secret's data; a task missing from
    a complete set is marked REMOVE for the worker; statuses queue until the manager takes them."""
    with store.transaction() as tx:
        tx.create("secret", {"id": "s1", "name": "app_pw", **stored_content("secret", "app_pw", b"hunter2")})
    add_service(store, replicas=1, secrets=[{"source": "app_pw", "target": "/run/secrets/pw"}])

    async def scenario() -> None:
        session = InProcessSession(dispatcher, role="manager")
        agent = Agent(tmp_path / "node", session, describe("pc1"))
        runner = asyncio.create_task(agent.run())
        try:
            assert await agent.wait_registered(5)
            await asyncio.to_thread(manager_pass, store, 1.0)
            dispatcher.notify()
            for _ in range(200):
                if agent.store.list("task"):
                    break
                await asyncio.sleep(0.01)
            (local,) = [Task.from_dict(t) for t in agent.store.list("task")]
            assert local.status.state == TaskState.ASSIGNED and [f.data for f in agent.files.values()] == [b"hunter2"]
            # The worker records RUNNING locally; the agent hands it on.
            local.advance(TaskState.RUNNING, "started")
            agent.report(local)
            assert await agent.flush(5)
            assert tasks(store)[0].status.state == TaskState.RUNNING
            # A complete set without the task (it was replaced while the node was away).
            agent.apply(AssignmentSet(type=AssignmentType.COMPLETE, sequence=99))
            assert Task.from_dict(agent.store.list("task")[0]).desired_state == TaskState.REMOVE
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            agent.close()

    asyncio.run(scenario())
    db = (tmp_path / "node" / "worker" / "tasks.db")
    assert oct(db.stat().st_mode & 0o777) == "0o600"
    for path in db.parent.iterdir():
        assert b"hunter2" not in path.read_bytes() and b"aHVudGVyMg" not in path.read_bytes()


def test_agent_states_reach_the_manager_after_its_session_was_ended(
        tmp_path: Path, store: SQLiteStore, clock: Clock) -> None:
    """The node was marked down (its session ended) while it ran a task: the state it records
    meanwhile is refused with SessionInvalid, kept, and delivered by the next session."""
    dispatcher = Dispatcher(store, heartbeat_period=0.05, clock=clock)
    add_service(store, replicas=1)

    async def scenario() -> None:
        agent = Agent(tmp_path / "node", InProcessSession(dispatcher), describe("pc1"))
        runner = asyncio.create_task(agent.run())
        try:
            assert await agent.wait_registered(5)
            assert agent.info is not None
            first = agent.info.session_id
            await asyncio.to_thread(manager_pass, store, 1.0)
            dispatcher.notify()
            # Generous deadlines (each loop ends when its condition holds): it failed at 3 s
            # on two cores loaded by other tests.
            deadline = time.monotonic() + 30
            while not agent.store.list("task") and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            (local,) = [Task.from_dict(t) for t in agent.store.list("task")]
            clock.now += 100
            assert dispatcher.expire() == [agent.node_id]
            local.advance(TaskState.RUNNING, "started")
            agent.report(local)
            deadline = time.monotonic() + 30
            while tasks(store)[0].status.state != TaskState.RUNNING and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            assert tasks(store)[0].status.state == TaskState.RUNNING
            assert agent.info.session_id != first and node(store, agent.node_id).state == "ready"
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            agent.close()

    asyncio.run(scenario())


def test_the_agents_store_keeps_a_short_event_log(tmp_path: Path) -> None:
    from shoal.agent.agent import LocalStore

    store = LocalStore(tmp_path / "tasks.db")
    try:
        for n in range(30):
            with store.transaction() as tx:
                tx.create("task", {"id": f"t{n}"})
        revision = store.revision()
        store.trim_events(keep=5)
        assert store.revision() == revision  # the worker's change detection is unaffected
        assert [e.revision for e in store.events_since(0)] == list(range(revision - 4, revision + 1))
    finally:
        store.close()


def test_status_reports_are_container_events_with_dockers_attributes(dispatcher: Dispatcher,
                                                                     store: SQLiteStore) -> None:
    """A node's reports become the container events dockerd would give on that node: create
    when a container appears, start when its process runs, die (with the exit code) when it
    ends; one report standing for several states gives each event once; a repeat gives none."""
    a = dispatcher.register(describe("pc1"))
    add_service(store, replicas=2)
    manager_pass(store, 1.0)
    t1, t2 = tasks(store)
    start = store.revision()
    dispatcher.update_status(a.node_id, a.session_id, [TaskStatusUpdate(task_id=t1.id, state="ready", container_id="c1")])
    dispatcher.update_status(a.node_id, a.session_id, [TaskStatusUpdate(task_id=t1.id, state="running", pid=9)])
    dispatcher.update_status(a.node_id, a.session_id, [TaskStatusUpdate(task_id=t1.id, state="running", pid=9)])
    dispatcher.update_status(a.node_id, a.session_id, [TaskStatusUpdate(task_id=t1.id, state="failed", exit_code=3)])
    # t2's node queue collapsed starting -> running -> complete into one report.
    dispatcher.update_status(a.node_id, a.session_id, [TaskStatusUpdate(task_id=t2.id, state="complete",
                                                                        container_id="c2", pid=5, exit_code=0)])
    events = [e for e in store.events_since(start) if e.kind == "container"]
    assert [(e.id, e.action) for e in events] == [("c1", "create"), ("c1", "start"), ("c1", "die"),
                                                   ("c2", "create"), ("c2", "start"), ("c2", "die")]
    die = events[2].object["attributes"]
    assert die["exitCode"] == "3" and die["com.docker.swarm.task.id"] == t1.id
    assert die["name"] == die["com.docker.swarm.task.name"] == f"{t1.service_name}.{t1.slot}.{t1.id}"
    assert die["com.docker.swarm.node.id"] == a.node_id and die["image"] == t1.spec["image"]
    assert events[5].object["attributes"]["exitCode"] == "0"
