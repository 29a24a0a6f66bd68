"""The embedded store: transactions, optimistic versions, names, events and cross-process use."""

from __future__ import annotations

import multiprocessing
import threading
from pathlib import Path

import pytest

from shoal.errors import Conflict
from shoal.store import SQLiteStore, VersionConflict


@pytest.fixture
def store(tmp_path: Path):
    s = SQLiteStore(tmp_path / "state.db")
    yield s
    s.close()


def test_create_get_list_and_versions(store: SQLiteStore) -> None:
    with store.transaction() as tx:
        a = tx.create("service", {"id": "a", "name": "web"})
        b = tx.create("service", {"id": "b", "name": "redis"})
    assert a["version"] < b["version"] == store.revision()
    assert store.get("service", "a")["name"] == "web"
    assert [o["id"] for o in store.list("service")] == ["a", "b"]
    assert store.find_by_name("service", "redis")["id"] == "b"
    assert store.list("task") == []


def test_update_out_of_sequence_is_refused(store: SQLiteStore) -> None:
    with store.transaction() as tx:
        obj = tx.create("service", {"id": "a", "name": "web", "replicas": 1})
    stale = dict(obj)
    with store.transaction() as tx:
        tx.update("service", dict(obj, replicas=2))
    with pytest.raises(VersionConflict, match="out of sequence"):
        with store.transaction() as tx:
            tx.update("service", dict(stale, replicas=3))
    assert store.get("service", "a")["replicas"] == 2


def test_failed_transaction_writes_nothing(store: SQLiteStore) -> None:
    before = store.revision()
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            tx.create("network", {"id": "n1", "name": "webnet"})
            raise RuntimeError("boom")
    assert store.get("network", "n1") is None
    assert store.revision() == before
    assert store.events_since(before) == []


def test_name_conflict(store: SQLiteStore) -> None:
    with store.transaction() as tx:
        tx.create("service", {"id": "a", "name": "web"})
    with pytest.raises(Conflict, match="name conflicts"):
        with store.transaction() as tx:
            tx.create("service", {"id": "b", "name": "web"})
    # same name in another kind is fine
    with store.transaction() as tx:
        tx.create("network", {"id": "c", "name": "web"})


def test_events_replay_in_commit_order(store: SQLiteStore) -> None:
    with store.transaction() as tx:
        tx.create("task", {"id": "t1", "state": "new"})
    with store.transaction() as tx:
        tx.update("task", dict(store.get("task", "t1"), state="running"))
        tx.delete("task", "t1")
    events = store.events_since(0)
    assert [(e.action, e.object.get("state")) for e in events] == [
        ("create", "new"), ("update", "running"), ("delete", "running")]
    assert [e.revision for e in events] == sorted(e.revision for e in events)
    assert store.events_since(events[-1].revision) == []


def test_wait_for_change_wakes_on_commit(store: SQLiteStore) -> None:
    start = store.revision()

    def writer() -> None:
        with store.transaction() as tx:
            tx.create("node", {"id": "n", "name": "node1"})

    timer = threading.Timer(0.05, writer)
    timer.start()
    assert store.wait_for_change(start, timeout=5) > start
    timer.join()
    assert store.wait_for_change(store.revision(), timeout=0.05) == store.revision()


def _create_many(path: str, prefix: str) -> None:
    s = SQLiteStore(Path(path))
    for i in range(50):
        with s.transaction() as tx:
            tx.create("task", {"id": f"{prefix}{i}"})
    s.close()


def test_two_processes_share_one_revision_sequence(tmp_path: Path) -> None:
    path = str(tmp_path / "state.db")
    SQLiteStore(Path(path)).close()
    procs = [multiprocessing.Process(target=_create_many, args=(path, p)) for p in "ab"]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    s = SQLiteStore(Path(path))
    revisions = [e.revision for e in s.events_since(0, limit=1000)]
    assert len(s.list("task")) == 100
    assert revisions == list(range(1, 101))
    s.close()
