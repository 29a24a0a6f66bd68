"""Desired and observed cluster state: objects by kind, one revision counter, an event log.

`Store` is the interface the manager codes against; `SQLiteStore` is the embedded default
(one node). A replicated backend (etcd) can implement the same interface later.
"""

from shoal.store.base import Event, Store, Transaction, VersionConflict
from shoal.store.sqlite import SQLiteStore

__all__ = ["Event", "SQLiteStore", "Store", "Transaction", "VersionConflict"]
