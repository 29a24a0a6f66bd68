"""The store interface: plain JSON objects keyed by (kind, id), versioned by a global revision."""

from __future__ import annotations

from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

from shoal.errors import Conflict

Object = dict[str, Any]


class VersionConflict(Conflict):
    """An update was based on an object version that is no longer current (swarmkit's
    `update out of sequence`): the caller re-reads and retries."""


@dataclass(frozen=True)
class Event:
    """One change, in commit order. `action` is create, update or delete; `object` is the new
    value (the last value for delete)."""

    revision: int
    kind: str
    id: str
    action: str
    object: Object
    time: float


class Transaction(Protocol):
    """Writes that commit together or not at all; reads inside see the writes before them."""

    def get(self, kind: str, obj_id: str) -> Object | None: ...
    def list(self, kind: str) -> list[Object]: ...
    def create(self, kind: str, obj: Object) -> Object: ...
    def update(self, kind: str, obj: Object, expect_version: int | None = None) -> Object: ...
    def delete(self, kind: str, obj_id: str) -> None: ...
    # An event with no stored object (a container started on a node, told by its status
    # report), in the same log and order as the writes, for `shoal events`.
    def note(self, kind: str, obj_id: str, action: str, obj: Object) -> None: ...


class Store(Protocol):
    def get(self, kind: str, obj_id: str) -> Object | None: ...
    def list(self, kind: str) -> list[Object]: ...
    def find_by_name(self, kind: str, name: str) -> Object | None: ...
    def transaction(self) -> AbstractContextManager[Transaction]: ...
    def revision(self) -> int: ...
    def events_since(self, revision: int, limit: int = 1000) -> list[Event]: ...
    def wait_for_change(self, revision: int, timeout: float) -> int: ...
    def close(self) -> None: ...
