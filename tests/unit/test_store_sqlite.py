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


def test_secret_events_never_copy_the_secrets_data(store: SQLiteStore) -> None:
    """Issue 10 item 4: the event log keeps 50,000 revisions; a secret's data (sealed or not)
    stays in its one object row."""
    with store.transaction() as tx:
        tx.create("secret", {"id": "s", "name": "db", "sealed": {"ct": "x"}, "digest": "d"})
        tx.create("config", {"id": "c", "name": "conf", "data": "Y29uZg==", "digest": "d"})
    with store.transaction() as tx:
        tx.update("secret", dict(store.get("secret", "s"), sealed={"ct": "y"}))
    with store.transaction() as tx:
        tx.delete("secret", "s")
    events = {(e.kind, e.action): e.object for e in store.events_since(0)}
    for action in ("create", "update", "delete"):
        assert "sealed" not in events[("secret", action)] and events[("secret", action)]["name"] == "db"
    assert events[("config", "create")]["data"] == "Y29uZg=="


def test_a_store_with_plain_secrets_from_an_older_shoal_is_sealed_when_opened(tmp_path: Path) -> None:
    import base64
    import json
    import sqlite3
    import stat

    from shoal.store import secretbox

    value = b"shoal-h2-legacy-5b1e77c0d2"
    encoded = base64.b64encode(value).decode()
    path = tmp_path / "shoald.db"
    SQLiteStore(path).close()
    obj = {"id": "s1", "name": "app_db", "data": encoded, "digest": "sha256:x", "version": 1}
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO objects (kind, id, name, version, data) VALUES ('secret','s1','app_db',1,?)",
                 (json.dumps(obj),))
    conn.execute("INSERT INTO events (revision, kind, id, action, time, data) VALUES (1,'secret','s1','create',0,?)",
                 (json.dumps(obj),))
    conn.commit()
    conn.close()
    assert encoded.encode() in path.read_bytes()

    s = SQLiteStore(path)
    stored = s.get("secret", "s1")
    assert "data" not in stored and stored["sealed"]["alg"] == "AES-256-GCM"
    assert secretbox.content("secret", stored, secretbox.FileKeys(tmp_path / "keys")) == value
    assert "data" not in s.events_since(0)[0].object
    s.close()
    for f in tmp_path.glob("shoald.db*"):
        assert encoded[:-4].encode() not in f.read_bytes() and value not in f.read_bytes(), f
    key = tmp_path / "keys" / "secrets.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700


def test_secretbox_seals_with_a_named_key_bound_to_its_object(tmp_path: Path) -> None:
    import os

    from shoal.errors import ShoalError
    from shoal.store import secretbox

    keys = secretbox.FileKeys(tmp_path / "keys")
    aad = secretbox.binding("secret", "app_db")
    record = secretbox.seal(b"hunter2", aad, keys)
    assert set(record) == {"alg", "kid", "nonce", "ct"} and record["kid"] == keys.current()[0]
    assert b"hunter2" not in json_bytes(record)
    assert secretbox.unseal(record, aad, keys) == b"hunter2"
    assert secretbox.seal(b"hunter2", aad, keys) != record  # a fresh nonce each time
    with pytest.raises(ShoalError, match="altered or moved"):
        secretbox.unseal(record, secretbox.binding("secret", "other"), keys)
    with pytest.raises(ShoalError, match="not in"):
        secretbox.unseal(dict(record, kid="0000"), aad, keys)
    # The change digest is stable under one key and is not a plain hash of the value.
    assert secretbox.fingerprint(b"hunter2", aad, keys) == secretbox.fingerprint(b"hunter2", aad, keys)
    assert "f52fbd32b2b3b86ff88ef6c490628285f482af15ddcb29541f94bcf526a3f6c7" not in secretbox.fingerprint(b"hunter2", aad, keys)
    # A key file others can read is refused rather than used.
    os.chmod(keys.path, 0o644)
    with pytest.raises(ShoalError, match="must be 0600"):
        secretbox.FileKeys(tmp_path / "keys").current()


def json_bytes(value: object) -> bytes:
    import json

    return json.dumps(value).encode()


def test_sealed_values_stay_out_of_the_event_log(store: SQLiteStore) -> None:
    """The event log keeps a copy of every object written; a secret's and a service's registry
    credentials are kept out of it (sealed or not, they have no business in `events`)."""
    with store.transaction() as tx:
        tx.create("secret", {"id": "s1", "name": "db", "sealed": "SEALED-SECRET"})
        tx.create("registry_auth", {"id": "svc1", "current": "SEALED-AUTH", "previous": "OLD-AUTH"})
    logged = [{k: v for k, v in e.object.items() if k != "version"} for e in store.events_since(0)]
    assert {"id": "s1", "name": "db"} in logged and {"id": "svc1"} in logged
    assert not any(v in repr(logged) for v in ("SEALED-SECRET", "SEALED-AUTH", "OLD-AUTH"))
