"""`service logs` and `events` for the whole cluster.

GET /services/{ref}/logs asks every node that runs (or, with follow, may run) the service's tasks
for their lines through the log broker (manager/logbroker.py, over each node's session) and
merges what they send (GET /tasks/{ref}/logs: one task's lines only): without follow, every node's lines sorted by time once all have
answered; with follow, each batch as it comes. A node whose logs could not be had is named in
one last {"warning"} record, in Docker's words.

GET /events is the manager's event log: the store's changes (services, nodes, tasks, networks,
...) and the container events of every node (create, start, die, told by each node's status
reports: manager/dispatcher.py), with the actor's attributes as Docker prints them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from shoal.daemon import Daemon

# Without follow, how long the client waits for nodes that hold a session but do not answer.
GATHER_TIMEOUT = 30.0
EVENTS_BATCH = 1000


# Store kinds that are no Docker event type: a service's sealed registry credentials change with
# the service, whose own event says so; a network attachment (controlapi/attachments.py) is
# swarmkit's internal task of a container the node reports itself, with its allocator's place;
# a removed node's refused certificate (swarmnode.REMOVED_NODE_KIND) goes with its node's remove.
_UNSHOWN_KINDS = frozenset({"registry_auth", "attachment", "address_cursor", "removed_node"})

# moby's clusterEventAction (daemon/events.go): a swarm object's removal is `remove`, not the
# store's delete.
_SWARM_OBJECT_KINDS = frozenset({"service", "node", "network", "secret", "config"})


def _event_line(event: Any) -> dict[str, Any]:
    obj = event.object
    if event.kind == "container":
        attributes = dict(obj.get("attributes") or {})
    elif event.kind == "task" and "service_name" in obj:
        attributes = {"name": f"{obj['service_name']}.{obj['slot'] or obj['node_id']}"}
    else:
        attributes = {"name": str(obj.get("name") or obj.get("hostname") or "")}
    action = "remove" if event.action == "delete" and event.kind in _SWARM_OBJECT_KINDS else event.action
    return {"revision": event.revision, "type": event.kind, "action": action, "id": event.id,
            "name": attributes.get("name", ""), "attributes": attributes, "time": event.time,
            "scope": "local" if event.kind == "container" else "swarm"}


def add_routes(app: web.Application, daemon: Daemon, prefix: str,
               resolve: Callable[[list[dict[str, Any]], str, str], dict[str, Any]],
               int_query: Callable[[web.Request, str, int], int]) -> None:
    """`resolve` and `int_query` are server.py's (Docker's lookup order; integer checks), so
    these routes answer as the others do."""
    store = daemon.store

    async def service_logs(request: web.Request) -> web.StreamResponse:
        """Newline-delimited JSON, one object per line of the service's tasks on every node;
        with follow=1, new lines (of tasks that start later too) until the client leaves."""
        return await _logs(request, resolve(store.list("service"), request.match_info["ref"], "service"), None)

    async def task_logs(request: web.Request) -> web.StreamResponse:
        """One task's lines only (moby's TaskLogs: `service logs TASK`): its service's
        subscription, the other tasks' lines left out here (each node's tail is per task)."""
        from shoal.manager.controlapi import resolve_task

        task = resolve_task(store.list("task"), request.match_info["ref"])
        svc = store.get("service", task["service_id"])
        if svc is None:
            from shoal.errors import NotFound

            raise NotFound(f"task {request.match_info['ref']} not found")
        return await _logs(request, svc, task)

    async def _logs(request: web.Request, svc: dict[str, Any], only: dict[str, Any] | None) -> web.StreamResponse:
        tail = None if request.query.get("tail", "all") == "all" else int_query(request, "tail", 0)
        follow = request.query.get("follow") == "1"
        tasks = [t for t in store.list("task") if t["service_id"] == svc["id"] and t.get("node_id")
                 and (only is None or t["id"] == only["id"])]
        nodes = {t["node_id"] for t in tasks if (t.get("status") or {}).get("container_id")}
        hostnames = {n["id"]: n.get("hostname") or n["id"] for n in store.list("node")}
        broker = daemon.dispatcher.logs
        sub = broker.subscribe(svc["id"], None if follow else nodes, tail, follow)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)

        def named(node_id: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
            # The manager names the node (from its certificate), not the records it sent.
            host = hostnames.get(node_id) or (store.get("node", node_id) or {}).get("hostname") or node_id
            hostnames[node_id] = host
            return [dict(r, node=host, node_id=node_id) for r in records
                    if only is None or r.get("task_id") == only["id"]]

        async def write(records: list[dict[str, Any]]) -> None:
            records.sort(key=lambda r: str(r.get("time", "")))
            await response.write("".join(json.dumps(r) + "\n" for r in records).encode())

        try:
            if not follow:
                gathered: list[dict[str, Any]] = []
                deadline = time.monotonic() + GATHER_TIMEOUT
                while not (sub.done.is_set() and sub.queue.empty()) and time.monotonic() < deadline:
                    try:
                        node_id, records = await asyncio.wait_for(sub.queue.get(), timeout=0.2)
                    except TimeoutError:
                        continue
                    gathered += named(node_id, records)
                for node_id in sub.pending:
                    sub.missing[node_id] = f"node {node_id} did not answer in {GATHER_TIMEOUT:.0f} s"
                await write(gathered)
            else:
                while request.transport is not None and not request.transport.is_closing():
                    try:
                        node_id, records = await asyncio.wait_for(sub.queue.get(), timeout=1.0)
                    except TimeoutError:
                        continue
                    batch = named(node_id, records)
                    while not sub.queue.empty():
                        more_node, more = sub.queue.get_nowait()
                        batch += named(more_node, more)
                    await write(batch)
            if sub.missing:
                reasons = ", ".join(sub.missing[n] for n in sorted(sub.missing))
                warning = ("warning: incomplete log stream. some logs could not be retrieved for the "
                           f"following reasons: {reasons}")
                await response.write((json.dumps({"warning": warning}) + "\n").encode())
        except (ConnectionResetError, ConnectionError):
            pass
        finally:
            broker.cancel(sub)
        await response.write_eof()
        return response

    async def events(request: web.Request) -> web.StreamResponse:
        """Newline-delimited JSON events from `since`, following new ones while the client stays."""
        since = int_query(request, "since", store.revision())
        follow = request.query.get("follow", "1") != "0"
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        while True:
            batch = store.events_since(since, limit=EVENTS_BATCH)
            if batch:
                since = batch[-1].revision
                shown = [e for e in batch if e.kind not in _UNSHOWN_KINDS]
                if shown:
                    await response.write("".join(json.dumps(_event_line(e)) + "\n" for e in shown).encode())
            if len(batch) == EVENTS_BATCH:
                continue  # more are there already
            if not follow:
                break
            await daemon.changed(since, timeout=1.0)
        await response.write_eof()
        return response

    app.router.add_get(prefix + "/services/{ref}/logs", service_logs)
    app.router.add_get(prefix + "/tasks/{ref}/logs", task_logs)
    app.router.add_get(prefix + "/events", events)
