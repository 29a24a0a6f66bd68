"""The log broker: `service logs` across nodes, as swarmkit's manager/logbroker.

A client's request becomes a subscription. The broker hands it to the nodes concerned over the
session each node already holds with the dispatcher (a stream of subscriptions the node's agent
listens to, agent/agent.py); each node reads its tasks' logs and publishes them back on the same
mutual-TLS channel, and the broker puts them on the subscription's queue for the API handler,
which merges them for the client. No connection is ever opened from the manager to a node: a
worker listens on no port, as in Swarm, so a node behind a NAT or a firewall that lets it reach
its manager shows its logs too.

- Without follow, the subscription goes to the nodes the store says ran a container of the
  service; it is done when each has sent its last batch (`close`) or lost its session (then the
  client is told which node's logs are missing, in Docker's words).
- With follow it goes to every node with a session, and to nodes whose session opens later, so
  tasks that start later anywhere are followed too; it ends when the client leaves.

Everything here runs on the daemon's event loop (the HTTPS routes and the in-process session are
both coroutines on it)."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from shoal.agent.session import LogSubscription

_ids = itertools.count(1)
RESYNC = 5.0  # seconds: a listening stream checks its session at least this often


@dataclass
class Subscription:
    message: LogSubscription
    nodes: set[str] | None  # None: every node (follow)
    queue: asyncio.Queue[tuple[str, list[dict[str, Any]]]] = field(default_factory=asyncio.Queue)
    pending: set[str] = field(default_factory=set)  # nodes that have not sent their last batch
    missing: dict[str, str] = field(default_factory=dict)  # node -> why its logs are not there
    done: asyncio.Event = field(default_factory=asyncio.Event)

    def _finish_node(self, node_id: str, why: str = "") -> None:
        if node_id in self.pending:
            self.pending.discard(node_id)
            if why:
                self.missing[node_id] = why
            if not self.pending and not self.message.follow:
                self.done.set()


class LogBroker:
    def __init__(self) -> None:
        self._subs: dict[str, Subscription] = {}
        # node ID -> its streams (one per session; a new session's opens as the old one's ends)
        self._listeners: dict[str, list[asyncio.Queue[LogSubscription | None]]] = {}
        self._tokens: dict[int, tuple[str, asyncio.AbstractEventLoop]] = {}  # id(queue) -> session, loop

    def subscribe(self, service_id: str, nodes: set[str] | None, tail: int | None, follow: bool) -> Subscription:
        """A subscription for the service's logs on `nodes` (None: every node, now and later)."""
        message = LogSubscription(id=f"logs-{next(_ids)}", service_id=service_id, tail=tail, follow=follow)
        sub = Subscription(message, None if follow else set(nodes or ()))
        self._subs[message.id] = sub
        targets = set(self._listeners) if follow else set(nodes or ())
        for node_id in sorted(targets):
            streams = self._listeners.get(node_id)
            if not streams:
                sub.missing[node_id] = f"node {node_id} is not available"
                continue
            sub.pending.add(node_id)
            for q in streams:
                q.put_nowait(message)
        if not follow and not sub.pending:
            sub.done.set()
        return sub

    def cancel(self, sub: Subscription) -> None:
        """The client left: the nodes stop sending."""
        if self._subs.pop(sub.message.id, None) is None:
            return
        closing = LogSubscription(id=sub.message.id, service_id=sub.message.service_id, close=True)
        for node_id in sub.pending if sub.nodes is not None else list(self._listeners):
            for q in self._listeners.get(node_id, []):
                q.put_nowait(closing)

    def publish(self, node_id: str, subscription_id: str, records: list[dict[str, Any]], close: bool) -> bool:
        """A node's batch. False when the subscription is gone (the node stops)."""
        sub = self._subs.get(subscription_id)
        if sub is None or (sub.nodes is not None and node_id not in sub.nodes):
            return False
        if records:
            sub.queue.put_nowait((node_id, records))
        if close:
            sub._finish_node(node_id)
        return True

    def end(self, node_id: str, session_id: str) -> None:
        """The session ended (from any thread): its stream stops now, not at its next look."""
        for q in list(self._listeners.get(node_id, [])):
            token = self._tokens.get(id(q))
            if token is not None and token[0] == session_id and not token[1].is_closed():
                try:
                    token[1].call_soon_threadsafe(q.put_nowait, None)
                except RuntimeError:
                    pass  # its loop is closing

    async def listen(self, node_id: str, alive: Callable[[], bool],
                     session_id: str = "") -> AsyncIterator[LogSubscription]:
        """The subscriptions for one node's session, until `alive()` says it ended: the open
        follow ones first (a node whose session opens while a client follows: from its tasks'
        next lines, so a reconnecting node repeats nothing), then each new one and each end."""
        q: asyncio.Queue[LogSubscription | None] = asyncio.Queue()
        self._tokens[id(q)] = (session_id, asyncio.get_running_loop())
        self._listeners.setdefault(node_id, []).append(q)
        for sub in list(self._subs.values()):
            if sub.message.follow and node_id not in sub.pending:
                sub.pending.add(node_id)
                q.put_nowait(dataclasses.replace(sub.message, tail=0))
        try:
            while alive():
                try:
                    # end() wakes it when the session ends; the timeout is only a safety net (a
                    # 1 s poll cost a timer per node per second: 1,000 a second at 1,000 nodes).
                    message = await asyncio.wait_for(q.get(), timeout=RESYNC)
                except TimeoutError:
                    continue
                if message is None:
                    break
                yield message
        finally:
            self._tokens.pop(id(q), None)
            streams = self._listeners.get(node_id, [])
            if q in streams:
                streams.remove(q)
            if not streams:
                self._listeners.pop(node_id, None)
                for sub in list(self._subs.values()):
                    sub._finish_node(node_id, f"node {node_id} is not available")

    def listening(self) -> set[str]:
        return {n for n, streams in self._listeners.items() if streams}
