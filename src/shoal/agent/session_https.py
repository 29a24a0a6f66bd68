"""The agent's session over HTTPS with mutual TLS (agent/session.py's interface), for a node
whose manager is another machine: the node's certificate authenticates it (the manager takes
the node ID from it), and the manager must present a certificate from the cluster's CA naming
the manager role (TLS server name "swarm-manager", tlsconfig.client_context), so neither a
worker of the same cluster nor anyone else can pose as the manager.

Several manager addresses may be given: each call tries the one that answered last, then the
others. `connect` registers with backoff (swarmkit's agent: 100 ms doubling to 8 s, with
jitter) until a manager answers. Certificates are read again for every new connection pool, so
a renewed certificate (agent/join.py renewal_loop) is used from the next reconnection. The
manager's heartbeat answers name the cluster's desired TLSInfo; the renewal loop hears of it
(join.tell_tls) and renews at once when a root rotation wants it."""

from __future__ import annotations

import asyncio
import json
import random
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from shoal.agent.session import (AssignmentSet, CertificateUnusable, LogSubscription, NodeDescription, NodeRemoved,
                                 Session, SessionInfo, SessionInvalid, TaskStatusUpdate, Unreachable, from_json, to_json)
from shoal.manager.ca import MANAGER_ROLE, CertStore
from shoal.manager.dispatcher_http import DISPATCHER_PREFIX, KEEPALIVE
from shoal.tlscontext import client_context

CALL_TIMEOUT = 10.0  # seconds for one request (not the assignment stream)
# The goodbye at shutdown is a courtesy (the manager marks the node Down at once instead of after
# three missed heartbeats): a manager that does not answer at once is gone or stopping too, and
# waiting CALL_TIMEOUT for it held a stopping worker 10 s whenever its manager went first.
CLOSE_TIMEOUT = 1.0
BACKOFF_START = 0.1
BACKOFF_MAX = 8.0


def backoff_delays(start: float = BACKOFF_START, cap: float = BACKOFF_MAX) -> Any:
    """100 ms, 200 ms, ... doubling to `cap`, each with up to 10% jitter."""
    delay = start
    while True:
        yield delay * (1 + random.random() * 0.1)
        delay = min(cap, delay * 2)


def _url(addr: str, path: str) -> str:
    host = addr
    if host.startswith("tcp://"):
        host = host[6:]
    return f"https://{host}{DISPATCHER_PREFIX}{path}"


class HTTPSSession(Session):
    def __init__(self, managers: list[str], cert_dir: Path) -> None:
        if not managers:
            raise ValueError("at least one manager address is needed")
        self.managers = list(managers)
        self.certs = CertStore(cert_dir)
        self.info: SessionInfo | None = None
        self._http: aiohttp.ClientSession | None = None
        self._current = 0  # index of the manager that answered last
        # The period the node keeps to: the last answered registration's or heartbeat's (the
        # agent follows every answer), sent with each heartbeat (Session.heartbeat).
        self._following = 0.0

    def _ssl(self) -> ssl.SSLContext:
        # the root as stored: ssl parses it (cryptography is never loaded in a worker's shoald)
        certs = self.certs
        try:
            return client_context(certs.root_pem(), certs.cert_path, certs.key_path)
        except (ssl.SSLError, OSError, ValueError) as exc:
            # Truncated or overwritten files: said as swarmkit's node says it, naming the file,
            # not as a manager that did not answer.
            try:
                client_context(certs.root_pem())
                where = f"{certs.cert_path} (key {certs.key_path.name})"
            except (ssl.SSLError, OSError, ValueError):
                where = str(certs.root_cert_path)
            raise CertificateUnusable(f"error while loading TLS certificate in {where}: {exc}; restore it, or "
                                      "leave the swarm and join it again") from exc

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl(), limit=8)
            self._http = aiohttp.ClientSession(connector=connector)
        return self._http

    async def _reset(self) -> None:
        """Drop the connections (a new pool reads the certificate again)."""
        if self._http is not None:
            await self._http.close()
            self._http = None

    def _order(self) -> list[int]:
        n = len(self.managers)
        return [(self._current + i) % n for i in range(n)]

    @staticmethod
    async def _raise_for(resp: aiohttp.ClientResponse, manager: str) -> None:
        if resp.status < 400:
            return
        try:
            payload = json.loads(await resp.read())
            message, kind = str(payload.get("message", "")), str(payload.get("kind", ""))
        except (ValueError, AttributeError):
            message, kind = f"the manager at {manager} answered HTTP {resp.status}", ""
        if kind == "session_invalid":
            raise SessionInvalid(message)
        if kind == "node_removed":
            raise NodeRemoved(message)
        if kind == "not_found":  # an attachment's network (manager/dispatcher_http.py)
            from shoal.errors import NotFound

            raise NotFound(message)
        if kind == "refused":  # the manager's refusal of a request, in Docker's words
            from shoal.errors import ShoalError

            raise ShoalError(message)
        if resp.status == 403:
            # A certificate the manager does not accept (another cluster's, a removed node's).
            raise NodeRemoved(message or "permission denied", confirmed=False)
        raise Unreachable(message or f"the manager at {manager} answered HTTP {resp.status}")

    async def _post(self, path: str, body: Any, only_current: bool = False,
                    timeout: float = CALL_TIMEOUT) -> Any:
        errors = []
        order = [self._current] if only_current else self._order()
        for index in order:
            manager = self.managers[index]
            try:
                async with self._client().post(_url(manager, path), json=body, server_hostname=MANAGER_ROLE,
                                               timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                    await self._raise_for(resp, manager)
                    self._current = index
                    return await resp.json()
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
                errors.append(f"{manager}: {exc or type(exc).__name__}")
                await self._reset()
        raise Unreachable("no manager answered (" + "; ".join(errors) + ")")

    def _ids(self) -> str:
        if self.info is None:
            raise SessionInvalid("no session: register first")
        return self.info.session_id

    # ---- the interface ----------------------------------------------------------------------
    async def register(self, description: NodeDescription) -> SessionInfo:
        answer = await self._post("/session", to_json(description))
        self.info = from_json(SessionInfo, answer)
        self._following = self.info.heartbeat_period
        if self.info.managers:  # the manager knows the cluster's managers best
            known = list(dict.fromkeys([self.managers[self._current], *self.info.managers, *self.managers]))
            self.managers, self._current = known, 0
        return self.info

    async def connect(self, description: NodeDescription, stop: asyncio.Event | None = None) -> SessionInfo:
        """register, again and again with backoff while no manager answers. NodeRemoved is
        raised at once (the node must stop)."""
        for delay in backoff_delays():
            try:
                return await self.register(description)
            except (Unreachable, SessionInvalid):
                if stop is not None and stop.is_set():
                    raise
                await asyncio.sleep(delay)
        raise AssertionError("unreachable")

    async def assignments(self) -> AsyncIterator[AssignmentSet]:  # type: ignore[override]
        async for data in self._stream("/assignments", "assignment stream"):
            yield from_json(AssignmentSet, data)

    async def log_subscriptions(self) -> AsyncIterator[LogSubscription]:  # type: ignore[override]
        async for data in self._stream("/logs/subscriptions", "log subscription stream"):
            yield from_json(LogSubscription, data)

    async def publish_logs(self, subscription_id: str, records: list[dict[str, Any]], close: bool = False) -> bool:
        answer = await self._post("/logs/publish", {"session_id": self._ids(), "subscription_id": subscription_id,
                                                    "records": records, "close": close}, only_current=True)
        return bool(answer.get("open"))

    async def _stream(self, path: str, what: str) -> AsyncIterator[dict[str, Any]]:
        """A JSON-lines stream of the session from the manager that answered last."""
        session_id = self._ids()
        manager = self.managers[self._current]
        # No total timeout on the stream; a silence longer than three keepalives is a lost manager.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CALL_TIMEOUT, sock_read=KEEPALIVE * 3)
        try:
            async with self._client().get(_url(manager, path), params={"session_id": session_id},
                                          server_hostname=MANAGER_ROLE, timeout=timeout) as resp:
                await self._raise_for(resp, manager)
                while True:
                    line = await resp.content.readline()
                    if not line:
                        raise Unreachable(f"the manager at {manager} ended the {what}")
                    line = line.strip()
                    if not line:
                        continue  # keepalive
                    data = json.loads(line)
                    if "error" in data:
                        kind = data["error"].get("kind")
                        message = data["error"].get("message", "")
                        raise NodeRemoved(message) if kind == "node_removed" else SessionInvalid(message)
                    yield data
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            await self._reset()
            raise Unreachable(f"the {what} from {manager} failed: {exc or type(exc).__name__}") from None

    async def update_status(self, updates: list[TaskStatusUpdate]) -> None:
        await self._post("/status", {"session_id": self._ids(), "updates": to_json(updates)}, only_current=True)

    async def heartbeat(self, applied: int | None = None) -> float:
        body: dict[str, Any] = {"session_id": self._ids()}
        if applied is not None:
            body["applied"] = applied
        if self._following > 0:
            body["period"] = self._following
        answer = await self._post("/heartbeat", body, only_current=True)
        self._following = float(answer["period"])
        if isinstance(answer.get("ca"), str):  # the cluster's desired TLSInfo: a root rotation told
            from shoal.agent.join import tell_tls

            tell_tls(self.certs.directory, answer["ca"])
        return self._following

    async def attach_network(self, network: str, container_id: str, name: str = "",
                             aliases: list[str] | None = None) -> dict[str, Any]:
        answer: dict[str, Any] = await self._post("/attachments", {
            "session_id": self._ids(), "network": network, "container_id": container_id, "name": name,
            "aliases": list(aliases or [])}, only_current=True)
        return answer

    async def detach_network(self, attachment_id: str) -> None:
        await self._post("/attachments/detach", {"session_id": self._ids(), "attachment_id": attachment_id},
                         only_current=True)

    async def close(self) -> None:
        if self.info is not None:
            try:
                await self._post("/close", {"session_id": self.info.session_id}, only_current=True,
                                 timeout=CLOSE_TIMEOUT)
            except (Unreachable, SessionInvalid, NodeRemoved):
                pass
            self.info = None
        await self._reset()


def for_worker(root: Path) -> Any:
    """The session factory shoald uses on a node that joined a swarm as a worker (its state in
    <root>/swarm/state.json, manager/swarmnode.py); None on a manager or a one-node shoald."""
    from shoal.manager.swarmnode import SwarmNode

    state = SwarmNode.read_state(root)
    if state is None or state.role != "worker":
        return None
    managers, cert_dir = list(state.managers), root / "certificates"
    return lambda _daemon: HTTPSSession(managers, cert_dir)
