"""The session of a node whose manager runs in the same process (one node, or a manager that
also runs tasks): calls go straight to the Dispatcher object, with the same messages and the
same errors as over HTTPS (agent/session_https.py). Blocking calls run in the control threads
(agent/pool.py), never behind API requests in the default executor: a manager whose API held
every default thread sent none of its own tasks' states."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from shoal.agent.pool import off_loop
from shoal.agent.session import (AssignmentSet, LogSubscription, NodeDescription, Session, SessionInfo,
                                 SessionInvalid, TaskStatusUpdate)
from shoal.manager.dispatcher import Dispatcher


class InProcessSession(Session):
    def __init__(self, dispatcher: Dispatcher, role: str = "manager") -> None:
        self.dispatcher = dispatcher
        self.role = role  # taken by the node's first registration only
        self.info: SessionInfo | None = None

    def _ids(self) -> tuple[str, str]:
        if self.info is None:
            raise SessionInvalid("no session: register first")
        return self.info.node_id, self.info.session_id

    async def register(self, description: NodeDescription) -> SessionInfo:
        self.info = await off_loop(self.dispatcher.register, description, "", self.role)
        return self.info

    async def assignments(self) -> AsyncIterator[AssignmentSet]:  # type: ignore[override]
        node_id, session_id = self._ids()
        async for found in self.dispatcher.stream(node_id, session_id):
            yield found

    async def update_status(self, updates: list[TaskStatusUpdate]) -> None:
        node_id, session_id = self._ids()
        await off_loop(self.dispatcher.update_status, node_id, session_id, updates)

    async def heartbeat(self, applied: int | None = None) -> float:
        node_id, session_id = self._ids()
        return self.dispatcher.heartbeat(node_id, session_id, applied)  # a dict update under a lock: no I/O

    async def log_subscriptions(self) -> AsyncIterator[LogSubscription]:  # type: ignore[override]
        node_id, session_id = self._ids()
        async for message in self.dispatcher.log_subscriptions(node_id, session_id):
            yield message

    async def publish_logs(self, subscription_id: str, records: list[dict[str, Any]], close: bool = False) -> bool:
        node_id, session_id = self._ids()
        return self.dispatcher.publish_logs(node_id, session_id, subscription_id, records, close)

    async def attach_network(self, network: str, container_id: str, name: str = "",
                             aliases: list[str] | None = None) -> dict[str, Any]:
        node_id, session_id = self._ids()
        return await off_loop(self.dispatcher.attach_network, node_id, session_id, network, container_id,
                                       name, aliases)

    async def detach_network(self, attachment_id: str) -> None:
        node_id, session_id = self._ids()
        await off_loop(self.dispatcher.detach_network, node_id, session_id, attachment_id)

    async def close(self) -> None:
        if self.info is not None:
            self.dispatcher.close(self.info.node_id, self.info.session_id)
            self.info = None
