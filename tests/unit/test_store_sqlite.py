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


def test_reads_are_cached_but_read_only_and_never_shared(store: SQLiteStore) -> None:
    with store.transaction() as tx:
        tx.create("task", {"id": "t", "status": {"state": "new"}, "networks": [{"network": "n"}]})
    first = store.list("task")[0]
    first["extra"] = 1  # the top level is the caller's own copy
    assert "extra" not in store.get("task", "t")
    with pytest.raises(TypeError, match="read-only"):
        first["status"]["state"] = "running"
    with pytest.raises(TypeError, match="read-only"):
        first["networks"].append({"network": "other"})
    assert store.get("task", "t")["status"] == {"state": "new"}
    assert dict(first["status"], state="running") == {"state": "running"}  # copies are ordinary


def test_a_rolled_back_write_is_not_served_from_the_cache(store: SQLiteStore) -> None:
    with store.transaction() as tx:
        tx.create("task", {"id": "t", "state": "new"})
    with pytest.raises(RuntimeError):
        with store.transaction() as tx:
            tx.update("task", dict(tx.get("task", "t"), state="doomed"))
            assert tx.get("task", "t")["state"] == "doomed"  # the transaction sees its write
            assert [t["state"] for t in tx.list("task")] == ["doomed"]
            raise RuntimeError("abort")
    # The aborted write's revision is used again by the next commit, for other content.
    with store.transaction() as tx:
        tx.update("task", {"id": "t", "state": "pending"})
    assert store.get("task", "t")["state"] == "pending"
    assert [t["state"] for t in store.list("task")] == ["pending"]


def test_writes_of_another_connection_are_seen(store: SQLiteStore, tmp_path: Path) -> None:
    with store.transaction() as tx:
        tx.create("task", {"id": "a", "state": "new"})
        tx.create("task", {"id": "b", "state": "new"})
    assert [t["state"] for t in store.list("task")] == ["new", "new"]
    other = SQLiteStore(tmp_path / "state.db")  # as another process would open it
    try:
        with other.transaction() as tx:
            tx.update("task", dict(tx.get("task", "a"), state="running"))
            tx.delete("task", "b")
    finally:
        other.close()
    assert [(t["id"], t["state"]) for t in store.list("task")] == [("a", "running")]
    assert store.get("task", "b") is None


def test_the_database_and_its_wal_and_shm_files_are_root_only(tmp_path: Path) -> None:
    """Issue 10 item 4: whatever the umask, shoald.db, -wal and -shm are 0600, and a database an
    older shoal made 0644 is tightened when it is opened."""
    import os
    import stat

    old = tmp_path / "old.db"
    old.touch(mode=0o644)
    os.chmod(old, 0o644)
    mask = os.umask(0o022)
    try:
        for path in (tmp_path / "new.db", old):
            s = SQLiteStore(path)
            with s.transaction() as tx:
                tx.create("service", {"id": "a", "name": "web"})
            files = [path, Path(f"{path}-wal"), Path(f"{path}-shm")]
            assert all(p.exists() for p in files)
            assert {p.name: stat.S_IMODE(p.stat().st_mode) for p in files} == {p.name: 0o600 for p in files}
            s.close()
    finally:
        os.umask(mask)
