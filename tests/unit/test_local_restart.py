"""The restart policy a worker applies in place while its manager is away (agent/localrestart.py):
Swarm's rule as the orchestrator applies it (condition, max_attempts within window, a job's
`any` acting as `on-failure`), the manager asked only when the policy would restart, and the
node's record of its restarts kept in its own store across a restart of shoald."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from shoal.agent.localrestart import KIND, LocalRestarts, policy, should_restart
from shoal.model.cluster import Task, TaskState, TaskStatus
from shoal.store import SQLiteStore


def spec(condition: str | None = None, **extra: object) -> dict[str, object]:
    rp: dict[str, object] = {} if condition is None else {"condition": condition}
    rp.update({k: v for k, v in extra.items() if k in ("delay", "max_attempts", "window")})
    out: dict[str, object] = {"image": "busybox", "restart_policy": rp}
    if "mode" in extra:
        out["mode"] = extra["mode"]
    return out


def test_defaults_are_swarms() -> None:
    p = policy({"image": "busybox"})
    assert (p.condition, p.delay, p.max_attempts, p.window) == ("any", 5.0, 0, 0.0)
    assert policy(spec("on-failure", delay=0.0)).delay == 0.0  # zero is a delay, not unset


@pytest.mark.parametrize("condition,exit_code,mode,expected", [
    ("none", 1, None, False),
    ("none", 0, None, False),
    ("on-failure", 137, None, True),
    ("on-failure", 0, None, False),
    ("any", 0, None, True),
    ("any", 137, None, True),
    (None, 0, None, True),  # the default is any
    ("any", 0, "replicated-job", False),  # a completed job task is done
    ("any", 2, "global-job", True),
])
def test_condition(condition: str | None, exit_code: int, mode: str | None, expected: bool) -> None:
    s = spec(condition) if mode is None else spec(condition, mode=mode)
    assert should_restart(s, exit_code, [], time.time()) is expected


def test_max_attempts_within_window() -> None:
    now = 1000.0
    s = spec("any", max_attempts=2, window=60.0)
    assert should_restart(s, 1, [now - 10], now)
    assert not should_restart(s, 1, [now - 10, now - 5], now)
    assert should_restart(s, 1, [now - 100, now - 5], now)  # one of them before the window
    assert not should_restart(spec("any", max_attempts=2), 1, [now - 1000, now - 5], now)  # no window


def task(task_id: str = "t1", slot: int = 1, restarted: bool = False, created_at: float = 0.0,
         rp: dict[str, object] | None = None) -> Task:
    return Task(id=task_id, service_id="s1", service_name="web", slot=slot, node_id="n1", spec_version=3,
                desired_state=TaskState.RUNNING, restarted=restarted, created_at=created_at or time.time(),
                status=TaskStatus(state=TaskState.RUNNING, container_id="c" * 64, pid=42),
                spec=rp if rp is not None else spec("on-failure", delay=1.5))


def test_decide_asks_the_manager_only_when_the_policy_restarts(tmp_path: Path) -> None:
    asked = []

    def away() -> bool:
        asked.append(1)
        return True

    restarts = LocalRestarts(SQLiteStore(tmp_path / "tasks.db"), away)
    assert restarts.decide(task(), 0, []) is None  # on-failure, exit 0: reported as it is
    assert asked == []
    record = restarts.decide(task(), 137, [])
    assert record is not None and asked == [1]
    assert record.last_exit == 137 and record.container_id == "c" * 64
    assert 1.0 < record.due - time.time() <= 1.5  # the policy's delay
    assert restarts.pending("t1") is record


def test_manager_there_means_no_local_restart(tmp_path: Path) -> None:
    restarts = LocalRestarts(SQLiteStore(tmp_path / "tasks.db"), lambda: False)
    assert restarts.decide(task(), 137, []) is None
    assert restarts.pending("t1") is None


def test_record_survives_and_counts(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "tasks.db")
    rp = spec("any", max_attempts=2, delay=0.0)
    restarts = LocalRestarts(store, lambda: True)
    assert restarts.decide(task(rp=rp), 1, []) is not None
    assert restarts.restarted("t1").restarts and restarts.pending("t1") is None
    # A shoald restarted during the partition reads the record back.
    again = LocalRestarts(store, lambda: True)
    assert len(again.decide(task(rp=rp), 1, []).restarts) == 1  # type: ignore[union-attr]
    record = again.restarted("t1")
    assert "2 restarts" in record.message() and "last exit code 1" in record.message()
    assert again.decide(task(rp=rp), 1, []) is None  # max_attempts reached
    # The orchestrator's replacements of the slot this node holds count too.
    fresh = LocalRestarts(SQLiteStore(tmp_path / "other.db"), lambda: True)
    history = [task("t0", restarted=True), task("t1", restarted=True)]
    assert fresh.decide(task(rp=rp), 1, history) is None
    assert fresh.decide(task(rp=rp), 1, history[:1]) is not None


def test_cancel_and_prune(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "tasks.db")
    restarts = LocalRestarts(store, lambda: True)
    restarts.decide(task(), 1, [])
    restarts.cancel("t1")
    assert restarts.pending("t1") is None
    assert store.get(KIND, "t1")["due"] == 0.0  # type: ignore[index]
    restarts.prune({"other"})
    assert store.list(KIND) == []
    assert LocalRestarts(store, lambda: True).pending("t1") is None


# ---- the manager's side: what a restart in place looks like when the node reports it ------------
from unit.test_dispatcher import Clock, add_service, describe, manager_pass, tasks  # noqa: E402

from shoal.agent.session import TaskStatusUpdate  # noqa: E402
from shoal.manager.dispatcher import GRACE_MULTIPLIER, Dispatcher  # noqa: E402


def test_restarted_in_place_is_running_with_die_and_start_and_nothing_replaced(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    dispatcher = Dispatcher(store, heartbeat_period=1.0, clock=Clock())
    a = dispatcher.register(describe("pc1"))
    add_service(store, replicas=1)
    manager_pass(store, 1.0)
    (t,) = tasks(store)
    dispatcher.update_status(a.node_id, a.session_id, [TaskStatusUpdate(task_id=t.id, state="running",
                                                                        container_id="c1", pid=9)])
    start = store.revision()
    # What the node sends when its session opens again after restarting the task in place.
    dispatcher.update_status(a.node_id, a.session_id, [TaskStatusUpdate(
        task_id=t.id, state="running", pid=11, exit_code=137,
        message="restarted by its node while the manager was away (1 restart, last exit code 137)")])
    events = [e for e in store.events_since(start) if e.kind == "container"]
    assert [(e.id, e.action) for e in events] == [("c1", "die"), ("c1", "start")]
    assert events[0].object["attributes"]["exitCode"] == "137"
    for now in (2.0, 10.0):
        manager_pass(store, now)
    (after,) = tasks(store)  # the same task, running the new process: nothing to replace
    assert (after.id, after.status.state, after.status.pid, after.status.exit_code) == (t.id, TaskState.RUNNING, 11, 137)
    store.close()


def test_replaced_while_down_the_restarted_copy_is_told_to_stop(tmp_path: Path) -> None:
    """Node Down (its task replaced on another node), its task restarted in place meanwhile: when
    it comes back, its report (RUNNING, a new pid) makes no second replacement, and its new
    session's complete set wants its copy shut down."""
    store = SQLiteStore(tmp_path / "state.db")
    clock = Clock()
    dispatcher = Dispatcher(store, heartbeat_period=1.0, clock=clock)
    a = dispatcher.register(describe("pc1"))
    add_service(store, replicas=1)
    manager_pass(store, 1.0)
    b = dispatcher.register(describe("pc2"))
    (t,) = tasks(store)
    assert t.node_id == a.node_id
    dispatcher.update_status(a.node_id, a.session_id, [TaskStatusUpdate(task_id=t.id, state="running",
                                                                        container_id="c1", pid=9)])
    clock.now += GRACE_MULTIPLIER * 1.2
    dispatcher.heartbeat(b.node_id, b.session_id)
    assert dispatcher.expire() == [a.node_id]
    manager_pass(store, 2.0)
    manager_pass(store, 3.0)
    old, new = tasks(store)
    assert old.id == t.id and old.desired_state == TaskState.SHUTDOWN and new.node_id == b.node_id
    back = dispatcher.register(describe("pc1", node_id=a.node_id))
    dispatcher.update_status(a.node_id, back.session_id, [TaskStatusUpdate(task_id=t.id, state="running", pid=11,
                                                                           exit_code=137)])
    manager_pass(store, 4.0)
    assert [x.id for x in tasks(store)] == [old.id, new.id]  # no second replacement
    aset = dispatcher.assignments(a.node_id, back.session_id)
    assert aset is not None
    sent = {raw["id"]: raw["desired_state"] for raw in aset.tasks}
    assert sent == {t.id: "shutdown"}
    store.close()


# ---- the agent: its look at the manager, and heartbeats that follow every answer ---------------
import asyncio  # noqa: E402

from shoal.agent.agent import Agent  # noqa: E402
from shoal.agent.inprocess import InProcessSession  # noqa: E402
from shoal.agent.session import Unreachable  # noqa: E402


class CuttableSession(InProcessSession):
    """The real in-process session, cut at will: every heartbeat raises Unreachable, as a manager
    behind a cut link."""

    cut = False

    async def heartbeat(self, applied: int | None = None) -> float:
        if self.cut:
            raise Unreachable("cut")
        return await super().heartbeat(applied)


def test_manager_away_and_a_shorter_period_from_any_answer(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "state.db")
    dispatcher = Dispatcher(store, heartbeat_period=5.0)
    session = CuttableSession(dispatcher, role="worker")

    async def scenario() -> None:
        agent = Agent(tmp_path / "node", session, describe("pc1"))
        runner = asyncio.create_task(agent.run())
        try:
            assert await agent.wait_registered(5)
            # Registered is not yet serving: the session counts as connected once its heartbeat
            # loop and streams run (a probe asked before that answers "away").
            async with asyncio.timeout(5):
                while not agent.connected:
                    await asyncio.sleep(0.01)
            assert await asyncio.to_thread(agent.manager_away) is False
            # The period shortened (`swarm update --dispatcher-heartbeat`): the probe's answer
            # carries it, and the agent's loop, which began a 5 s sleep, follows it at once;
            # else the manager's deadline (3 short periods from the probe) passes first.
            dispatcher.set_heartbeat_period(0.1)
            assert await asyncio.to_thread(agent.manager_away) is False
            await asyncio.sleep(1.0)
            assert dispatcher.expire() == []
            session.cut = True
            assert await asyncio.to_thread(agent.manager_away, 0.5) is True
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
            agent.close()

    asyncio.run(scenario())
    store.close()
