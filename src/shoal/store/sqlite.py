"""SQLite (WAL) backend of the store: one file, safe for several processes, crash-consistent.

Each object row carries the revision of its last write as `version`; every write also appends an
event row, so watchers and `shoal events` replay changes in commit order after a crash.

Reads are served from decoded objects cached by (kind, id, version): the manager's loops read every
task several times a pass, and decoding them again was most of shoald's CPU during a scale. A
version is a committed revision, never reused, so a cached object is exactly the stored one.
Callers get a fresh top-level dict; nested values are shared and read-only (mutating one raises
TypeError), so no caller can change what another reads."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from shoal.errors import Conflict, ShoalError
from shoal.store.base import Event, Object, VersionConflict

_SCHEMA = """
CREATE TABLE IF NOT EXISTS objects (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    name TEXT,
    version INTEGER NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE UNIQUE INDEX IF NOT EXISTS objects_name ON objects (kind, name) WHERE name IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    revision INTEGER PRIMARY KEY,
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    action TEXT NOT NULL,
    time REAL NOT NULL,
    data TEXT NOT NULL
);
"""

# Events older than this many revisions are trimmed so the log cannot grow without bound.
_EVENT_RETENTION = 50_000
# Fields an event never copies: a secret's data (sealed or, from an older shoal, in the clear)
# stays in its one object row, not in 50,000 revisions of history.
_EVENT_OMIT: dict[str, frozenset[str]] = {"secret": frozenset({"data", "sealed"}),
                                           "registry_auth": frozenset({"current", "previous"})}


def _event_object(kind: str, obj: Object) -> Object:
    omit = _EVENT_OMIT.get(kind)
    return {k: v for k, v in obj.items() if k not in omit} if omit else obj


class _ReadOnlyDict(dict):  # type: ignore[type-arg]
    def _refuse(self, *_args: Any, **_kwargs: Any) -> None:
        raise TypeError("objects read from the store are read-only: copy before changing them")

    __setitem__ = __delitem__ = setdefault = pop = popitem = clear = update = __ior__ = _refuse  # type: ignore[assignment]


class _ReadOnlyList(list):  # type: ignore[type-arg]
    _refuse = _ReadOnlyDict._refuse
    __setitem__ = __delitem__ = append = extend = insert = pop = remove = clear = sort = reverse = _refuse  # type: ignore[assignment]
    __iadd__ = __imul__ = _refuse  # type: ignore[assignment]


def _freeze(value: Any) -> Any:
    if isinstance(value, dict):
        return _ReadOnlyDict((k, _freeze(v)) for k, v in value.items())
    if isinstance(value, list):
        return _ReadOnlyList(_freeze(v) for v in value)
    return value


def _cached(hit: tuple[int, Object] | None, version: int, data: str) -> tuple[int, Object]:
    """The cache entry for a row: `hit` while it is of this version, else the row decoded."""
    if hit is not None and hit[0] == version:
        return hit
    return version, {k: _freeze(v) for k, v in json.loads(data).items()}


class _Decoded:
    """Decoded objects by kind, then id: (version, object with read-only nested values). Used
    under the store's lock only."""

    def __init__(self) -> None:
        self._kinds: dict[str, dict[str, tuple[int, Object]]] = {}

    def one(self, kind: str, obj_id: str, version: int, data: str) -> Object:
        objs = self._kinds.setdefault(kind, {})
        objs[obj_id] = hit = _cached(objs.get(obj_id), version, data)
        return dict(hit[1])

    def all(self, kind: str, rows: list[tuple[str, int, str]], skip: set[str] | frozenset[str] = frozenset()) -> list[Object]:
        """Every row of a kind; the cache keeps only these afterwards. Rows in `skip` (written by
        an open transaction, not committed) are decoded but not cached."""
        old = self._kinds.get(kind, {})
        fresh: dict[str, tuple[int, Object]] = {}
        out = []
        for obj_id, version, data in rows:
            if obj_id in skip:
                out.append(json.loads(data))
                continue
            fresh[obj_id] = hit = _cached(old.get(obj_id), version, data)
            out.append(dict(hit[1]))
        self._kinds[kind] = fresh
        return out


class _Txn:
    def __init__(self, conn: sqlite3.Connection, revision: int, decoded: _Decoded) -> None:
        self._conn = conn
        self._revision = revision
        self._decoded = decoded
        self._written: dict[str, set[str]] = {}  # kind -> ids written here, not committed yet
        self.events: list[Event] = []

    def _next_revision(self) -> int:
        self._revision += 1
        return self._revision

    def get(self, kind: str, obj_id: str) -> Object | None:
        row = self._conn.execute("SELECT version, data FROM objects WHERE kind=? AND id=?", (kind, obj_id)).fetchone()
        if row is None:
            return None
        if obj_id in self._written.get(kind, ()):
            return json.loads(row[1])
        return self._decoded.one(kind, obj_id, row[0], row[1])

    def list(self, kind: str) -> list[Object]:
        rows = self._conn.execute("SELECT id, version, data FROM objects WHERE kind=? ORDER BY id", (kind,)).fetchall()
        return self._decoded.all(kind, rows, self._written.get(kind, set()))

    def _wrote(self, kind: str, obj_id: str) -> None:
        self._written.setdefault(kind, set()).add(obj_id)

    def _record(self, kind: str, obj_id: str, action: str, obj: Object) -> None:
        obj = _event_object(kind, obj)
        revision = self._revision
        now = time.time()
        self._conn.execute(
            "INSERT INTO events (revision, kind, id, action, time, data) VALUES (?,?,?,?,?,?)",
            (revision, kind, obj_id, action, now, json.dumps(obj)),
        )
        self.events.append(Event(revision, kind, obj_id, action, obj, now))

    def create(self, kind: str, obj: Object) -> Object:
        self._wrote(kind, obj["id"])
        obj = dict(obj)
        obj["version"] = self._next_revision()
        try:
            self._conn.execute(
                "INSERT INTO objects (kind, id, name, version, data) VALUES (?,?,?,?,?)",
                (kind, obj["id"], obj.get("name"), obj["version"], json.dumps(obj)),
            )
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"{kind} {obj.get('name') or obj['id']}: name conflicts with an existing object") from exc
        self._record(kind, obj["id"], "create", obj)
        return obj

    def update(self, kind: str, obj: Object, expect_version: int | None = None) -> Object:
        row = self._conn.execute("SELECT version FROM objects WHERE kind=? AND id=?", (kind, obj["id"])).fetchone()
        if row is None:
            raise VersionConflict(f"{kind} {obj['id']} does not exist")
        expected = obj.get("version") if expect_version is None else expect_version
        if expected is not None and expected != row[0]:
            raise VersionConflict(f"update out of sequence: {kind} {obj['id']}")
        self._wrote(kind, obj["id"])
        obj = dict(obj)
        obj["version"] = self._next_revision()
        try:
            self._conn.execute(
                "UPDATE objects SET name=?, version=?, data=? WHERE kind=? AND id=?",
                (obj.get("name"), obj["version"], json.dumps(obj), kind, obj["id"]),
            )
        except sqlite3.IntegrityError as exc:
            raise Conflict(f"{kind} {obj.get('name')}: name conflicts with an existing object") from exc
        self._record(kind, obj["id"], "update", obj)
        return obj

    def delete(self, kind: str, obj_id: str) -> None:
        old = self.get(kind, obj_id)
        if old is None:
            return
        self._wrote(kind, obj_id)
        self._next_revision()
        self._conn.execute("DELETE FROM objects WHERE kind=? AND id=?", (kind, obj_id))
        self._record(kind, obj_id, "delete", old)

    def note(self, kind: str, obj_id: str, action: str, obj: Object) -> None:
        self._next_revision()
        self._record(kind, obj_id, action, obj)


def _private_files(path: Path) -> None:
    """The database and its WAL and shared-memory files are root's alone (0600), an existing one
    made by an older shoal (0644) included. SQLite creates -wal and -shm with the database's mode,
    so creating the database 0600 first covers them."""
    os.close(os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600))
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        try:
            if stat.S_IMODE(os.stat(p).st_mode) != 0o600:
                os.chmod(p, 0o600)
        except FileNotFoundError:
            pass


def _seal_plain_secrets(conn: sqlite3.Connection, key_dir: Path) -> None:
    """A store an older shoal wrote keeps secrets in the clear (base64) in their objects and in
    every event: seal the objects in place, strip the events, then rebuild the file (VACUUM) and
    empty the WAL so no freed page still holds the old bytes."""
    rows = conn.execute("SELECT id, data FROM objects WHERE kind='secret'").fetchall()
    plain = [(obj_id, obj) for obj_id, obj in ((r[0], json.loads(r[1])) for r in rows) if "data" in obj]
    in_events = conn.execute(
        "SELECT 1 FROM events WHERE kind='secret' AND (json_extract(data, '$.data') IS NOT NULL"
        " OR json_extract(data, '$.sealed') IS NOT NULL) LIMIT 1").fetchone()
    if not plain and not in_events:
        return
    import base64

    from shoal.store import secretbox

    keys = secretbox.FileKeys(key_dir)
    conn.execute("BEGIN IMMEDIATE")
    try:
        for obj_id, obj in plain:
            data = base64.b64decode(obj.pop("data"))
            obj["sealed"] = secretbox.seal(data, secretbox.binding("secret", obj["name"]), keys)
            conn.execute("UPDATE objects SET data=? WHERE kind='secret' AND id=?", (json.dumps(obj), obj_id))
        conn.execute("UPDATE events SET data=json_remove(data, '$.data', '$.sealed') WHERE kind='secret'")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    conn.execute("VACUUM")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


class StoreUnreadable(ShoalError):
    """The store's file is not a database SQLite can open (truncated, overwritten)."""


class SQLiteStore:
    """The embedded store. Thread-safe; other processes may open the same file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _private_files(path)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=30)
        try:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
            _seal_plain_secrets(self._conn, path.parent / "keys")
        except sqlite3.DatabaseError as exc:
            # A truncated or overwritten file: one line naming it, not a traceback at each start.
            self._conn.close()
            raise StoreUnreadable(f"{path} cannot be read: {exc}") from exc
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._decoded = _Decoded()

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def get(self, kind: str, obj_id: str) -> Object | None:
        with self._lock:
            row = self._conn.execute("SELECT version, data FROM objects WHERE kind=? AND id=?", (kind, obj_id)).fetchone()
        return self._decoded.one(kind, obj_id, row[0], row[1]) if row else None

    def find_by_name(self, kind: str, name: str) -> Object | None:
        with self._lock:
            row = self._conn.execute("SELECT id, version, data FROM objects WHERE kind=? AND name=?", (kind, name)).fetchone()
        return self._decoded.one(kind, row[0], row[1], row[2]) if row else None

    def list(self, kind: str) -> list[Object]:
        with self._lock:
            rows = self._conn.execute("SELECT id, version, data FROM objects WHERE kind=? ORDER BY id", (kind,)).fetchall()
        return self._decoded.all(kind, rows)

    def revision(self) -> int:
        with self._lock:
            row = self._conn.execute("SELECT MAX(revision) FROM events").fetchone()
        return int(row[0] or 0)

    @contextmanager
    def transaction(self) -> Iterator[_Txn]:
        with self._lock:
            # IMMEDIATE takes the write lock up front so the revision read below cannot race
            # another process's commit.
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                row = self._conn.execute("SELECT MAX(revision) FROM events").fetchone()
                txn = _Txn(self._conn, int(row[0] or 0), self._decoded)
                yield txn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("DELETE FROM events WHERE revision <= ?", (txn._revision - _EVENT_RETENTION,))
            self._conn.execute("COMMIT")
            if txn.events:
                self._changed.notify_all()

    def events_since(self, revision: int, limit: int = 1000) -> list[Event]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT revision, kind, id, action, data, time FROM events WHERE revision > ? ORDER BY revision LIMIT ?",
                (revision, limit),
            ).fetchall()
        return [Event(r[0], r[1], r[2], r[3], json.loads(r[4]), r[5]) for r in rows]

    def wait_for_change(self, revision: int, timeout: float) -> int:
        """Block until the revision passes `revision` (a commit in this process wakes it at once;
        another process's commit is seen at the next poll) or the timeout ends."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                current = self.revision()
                remaining = deadline - time.monotonic()
                if current > revision or remaining <= 0:
                    return current
                self._changed.wait(min(remaining, 0.2))
