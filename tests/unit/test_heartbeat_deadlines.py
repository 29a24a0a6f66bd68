"""The dispatcher's heartbeat deadlines when answers are lost (issue 11 item 5): a node is held
to the period it says it follows (its last answered heartbeat's), never to a shorter one it
may not have heard of; a session the node never called with (a lost registration answer)
waits REGISTER_RETRY; the HTTPS session tells the manager the period it follows. A fake clock,
the real dispatcher and store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from shoal.agent.session import REGISTER_RETRY, NodeDescription, Resources, TaskStatusUpdate
from shoal.manager.dispatcher import EPSILON_RATIO, GRACE_MULTIPLIER, Dispatcher
from shoal.store import SQLiteStore

SLACK = 1 + EPSILON_RATIO  # a period as answered: the configured one plus its jitter at most


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Any:
    s = SQLiteStore(tmp_path / "state.db")
    yield s
    s.close()


def describe(hostname: str, node_id: str = "") -> NodeDescription:
    return NodeDescription(hostname=hostname, node_id=node_id,
                           resources=Resources(nano_cpus=1_000_000_000, memory_bytes=1 << 30))


def test_a_node_is_held_to_the_period_it_follows_until_it_has_the_shorter_one(store: SQLiteStore) -> None:
    clock = Clock()
    d = Dispatcher(store, heartbeat_period=20.0, clock=clock)
    a = d.register(describe("pc1"))
    told = d.heartbeat(a.node_id, a.session_id, following=a.heartbeat_period)
    d.set_heartbeat_period(1.0)  # while the node is cut off
    # Its heartbeat arrives (a probe it gave up on, delivered once the link is back) and is
    # answered with ~1 s; the node never sees the answer and keeps to `told` (~20 s).
    clock.now += 10
    assert d.heartbeat(a.node_id, a.session_id, following=told) <= 1.0 * SLACK
    clock.now += told * GRACE_MULTIPLIER * 0.9  # past three short periods, not three long ones
    assert d.expire() == []
    # Its loop's heartbeat, still saying ~20 s, then one that says it has the short period: from
    # then on three short periods without one make it Down.
    short = d.heartbeat(a.node_id, a.session_id, following=told)
    d.heartbeat(a.node_id, a.session_id, following=short)
    clock.now += 1.0 * SLACK * GRACE_MULTIPLIER + 0.1
    assert d.expire() == [a.node_id]


def test_a_node_cannot_claim_a_period_it_was_never_given(store: SQLiteStore) -> None:
    clock = Clock()
    d = Dispatcher(store, heartbeat_period=1.0, clock=clock)
    a = d.register(describe("pc1"))
    d.heartbeat(a.node_id, a.session_id, following=3600.0)
    clock.now += 1.0 * SLACK * GRACE_MULTIPLIER + 0.1
    assert d.expire() == [a.node_id]


def test_a_raised_period_holds_from_the_answer(store: SQLiteStore) -> None:
    clock = Clock()
    d = Dispatcher(store, heartbeat_period=1.0, clock=clock)
    a = d.register(describe("pc1"))
    d.heartbeat(a.node_id, a.session_id, following=a.heartbeat_period)
    d.set_heartbeat_period(20.0)
    long = d.heartbeat(a.node_id, a.session_id, following=a.heartbeat_period)
    assert long >= 20.0
    clock.now += long * 2  # the node keeps to the long period it was told: not Down
    assert d.expire() == []
    clock.now += long * (GRACE_MULTIPLIER - 2) + 0.1
    assert d.expire() == [a.node_id]


def test_a_registration_nobody_called_with_waits_for_the_retry(store: SQLiteStore) -> None:
    clock = Clock()
    d = Dispatcher(store, heartbeat_period=1.0, clock=clock)
    lost = d.register(describe("pc1"))  # its answer never reached the node
    used = d.register(describe("pc2"))
    d.update_status(used.node_id, used.session_id, [])  # the node has its answer
    clock.now += 1.0 * SLACK * GRACE_MULTIPLIER + 0.1
    assert d.expire() == [used.node_id]
    clock.now = 1000.0 + REGISTER_RETRY - 0.5
    assert d.expire() == []
    again = d.register(describe("pc1", lost.node_id))
    d.heartbeat(again.node_id, again.session_id)  # registered again in time: the lost one ended
    clock.now += 1.0
    assert d.expire() == []


def test_status_of_an_unused_session_counts_as_its_use(store: SQLiteStore) -> None:
    clock = Clock()
    d = Dispatcher(store, heartbeat_period=1.0, clock=clock)
    a = d.register(describe("pc1"))
    clock.now += 5.0
    d.update_status(a.node_id, a.session_id, [TaskStatusUpdate(task_id="gone", state="running")])
    clock.now += a.heartbeat_period * GRACE_MULTIPLIER - 0.1
    assert d.expire() == []
    clock.now += 0.2
    assert d.expire() == [a.node_id]
