"""The manager's HTTP routes: nodes, services, tasks, networks and stacks (the control API's
reads and writes; manager/controlapi). Added to the app only on a node that runs a manager: a
worker's shoald neither serves nor imports them (Docker's "This node is not a swarm manager")."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from shoal.api import API_VERSION, shape
from shoal.errors import Conflict, InvalidArgument
from shoal.manager import serviceview
from shoal.manager.controlapi import networks as netapi, services as svcapi, stacks as stackapi
from shoal.manager import registryauth
from shoal.manager.stacks import stack_of
from shoal.model.cluster import Task, TaskState

if TYPE_CHECKING:
    from shoal.daemon import Daemon


def active_nodes(nodes: list[dict[str, Any]]) -> set[str]:
    """IDs of the nodes that are there and not Down: where a running task counts."""
    return {n["id"] for n in nodes if (n.get("status") or {}).get("state", n.get("state")) != "down"}


def service_status(service: dict[str, Any], tasks: list[dict[str, Any]], active: set[str]) -> dict[str, int]:
    """ServiceStatus as the API reports it: running = observed RUNNING on a node of `active`
    (moby's and docker/cli's GetServicesStatus: a removed or Down node's tasks, RUNNING as last
    reported, do not count); desired = replicas, or the number of tasks desired RUNNING for a
    global service."""
    own = [Task.from_dict(t) for t in tasks if t["service_id"] == service["id"]]
    running = sum(1 for t in own if t.status.state == TaskState.RUNNING and t.node_id in active)
    spec = service.get("spec", {})
    if serviceview.mode(spec) in ("replicated-job", "global-job"):
        from shoal.manager.orchestrator import job_counts

        desired, completed = job_counts(spec, int(service.get("spec_version") or 0), own)
        return {"RunningTasks": running, "DesiredTasks": desired, "CompletedTasks": completed}
    if serviceview.mode(spec) == "global":
        desired = sum(1 for t in own if t.desired_state == TaskState.RUNNING)
    else:
        desired = serviceview.replicas(spec)
    return {"RunningTasks": running, "DesiredTasks": desired}


def _checked_stack(body: Any, name: str) -> dict[str, Any]:
    """The stack as the model defines it (a StackSpec dict), or a 400 naming what is wrong."""
    from shoal.model.stack import StackSpec

    if not isinstance(body.get("stack"), dict):
        raise InvalidArgument('the request body must be {"stack": <StackSpec>}')
    raw = dict(body["stack"], name=name)
    try:
        shape.check_object(StackSpec, raw, "")
        for field in ("prune",):
            shape.check(bool | None, body.get(field), field)
        shape.check(str | None, body.get("resolve_image"), "resolve_image")
        shape.check(dict[str, dict[str, str]] | None, body.get("files"), "files")
        for kind, files in (body.get("files") or {}).items():
            for file_name, data in files.items():
                try:
                    base64.b64decode(data, validate=True)
                except ValueError:
                    raise InvalidArgument(f"files.{kind}.{file_name}: base64 is expected") from None
        return StackSpec.from_dict(raw).to_dict()
    except InvalidArgument as exc:
        raise InvalidArgument(f"invalid stack {name}: {exc}") from None
    except (TypeError, KeyError, ValueError, AttributeError) as exc:
        raise InvalidArgument(f"invalid stack {name}: {exc}") from None


def _resolve_image(body: dict[str, Any], default: str = "always") -> str:
    shape.check(str | None, body.get("resolve_image"), "resolve_image")
    return body.get("resolve_image") or default


def add_routes(app: web.Application, daemon: Daemon, _body: Callable[[web.Request], Awaitable[dict[str, Any]]],
               _resolve: Callable[[list[dict[str, Any]], str, str], dict[str, Any]]) -> None:
    """`_body` and `_resolve` are server.py's (its 400s and 413s; Docker's lookup order)."""
    routes = web.RouteTableDef()
    store = daemon.store
    prefix = f"/{API_VERSION}"

    @routes.get(f"{prefix}/nodes")
    async def nodes(_: web.Request) -> web.Response:
        return web.json_response(store.list("node"))

    @routes.get(f"{prefix}/services")
    async def services(request: web.Request) -> web.Response:
        stack = request.query.get("stack")
        tasks = store.list("task")
        active = active_nodes(store.list("node"))
        result = []
        for svc in store.list("service"):
            if stack is not None and stack_of(svc) != stack:
                continue
            result.append(dict(svc, status=service_status(svc, tasks, active)))
        return web.json_response(result)

    @routes.post(f"{prefix}/services")
    async def create_service(request: web.Request) -> web.Response:
        """`service create`: 201 {"ID", "Warnings"}, as Docker's POST /services/create."""
        from shoal.model.service import ServiceSpec

        body = await _body(request)
        spec = shape.checked(ServiceSpec, body.get("spec"), "spec")
        resolve_image = _resolve_image(body)
        auth = registryauth.checked(body.get("registry_auth"))  # --with-registry-auth, sealed at rest
        service_id, warnings = await asyncio.to_thread(svcapi.create_service, store, spec, resolve_image, auth)
        daemon.kick()
        return web.json_response({"ID": service_id, "Warnings": warnings}, status=201)

    @routes.get(prefix + "/services/{ref}")
    async def service(request: web.Request) -> web.Response:
        """The record with Swarm's defaults filled in (spec_version is what an update sends
        back as its version; previous_spec, update_status), and the tasks' counts."""
        record = svcapi.inspect_service(store, request.match_info["ref"]).to_dict()
        return web.json_response(dict(record, status=service_status(record, store.list("task"),
                                                                        active_nodes(store.list("node")))))

    @routes.post(prefix + "/services/{ref}/update")
    async def update_service(request: web.Request) -> web.Response:
        """`service update` / `service rollback`: {"version", "spec", "rollback"} -> {"Warnings"}."""
        from shoal.model.service import ServiceSpec

        body = await _body(request)
        shape.check(int, body.get("version"), "version")
        shape.check(str | None, body.get("rollback"), "rollback")
        rollback = body.get("rollback") or None
        spec = None
        if body.get("spec") is not None or not rollback:
            spec = shape.checked(ServiceSpec, body.get("spec"), "spec")
        auth = registryauth.checked(body.get("registry_auth"))  # absent: the service keeps its own
        warnings = await asyncio.to_thread(svcapi.update_service, store, request.match_info["ref"], body["version"],
                                           spec, rollback, _resolve_image(body, "changed"), auth)
        daemon.kick()
        return web.json_response({"Warnings": warnings})

    @routes.delete(prefix + "/services/{ref}")
    async def remove_service(request: web.Request) -> web.Response:
        svc = await asyncio.to_thread(svcapi.remove_service, store, request.match_info["ref"])
        daemon.kick()
        return web.json_response({"id": svc.id, "name": svc.name})

    @routes.post(prefix + "/services/{ref}/scale")
    async def scale(request: web.Request) -> web.Response:
        body = await _body(request)
        if "replicas" not in body:
            raise InvalidArgument("replicas: missing")
        replicas = body["replicas"]
        if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= shape.INT_MAX:
            raise InvalidArgument(f"replicas: invalid value {json.dumps(replicas)[:40]}: a whole number from 0 is expected")
        svc = await asyncio.to_thread(svcapi.scale_service, store, request.match_info["ref"], replicas)
        daemon.kick()
        return web.json_response({"id": svc.id, "name": svc.name})

    @routes.get(f"{prefix}/tasks")
    async def tasks(request: web.Request) -> web.Response:
        service_ids: set[str] | None = None
        if "service" in request.query:
            service_ids = {_resolve(store.list("service"), request.query["service"], "service")["id"]}
        elif "stack" in request.query:
            service_ids = {s["id"] for s in store.list("service") if stack_of(s) == request.query["stack"]}
        result = [t for t in store.list("task") if service_ids is None or t["service_id"] in service_ids]
        if request.query.get("up_to_date") == "1":
            by_id = {s["id"]: s for s in store.list("service")}
            result = [t for t in result if t["service_id"] in by_id and svcapi.up_to_date(t, by_id[t["service_id"]])]
        return web.json_response(result)

    @routes.get(f"{prefix}/networks")
    async def networks(_: web.Request) -> web.Response:
        return web.json_response(netapi.list_networks(store))

    @routes.post(f"{prefix}/networks")
    async def create_network(request: web.Request) -> web.Response:
        """`network create -d overlay`: 201 {"Id", "Warning"}, as Docker's POST /networks/create."""
        from shoal.model.stack import NetworkSpec

        body = await _body(request)
        spec = shape.checked(NetworkSpec, body.get("spec"), "spec")
        network_id = await asyncio.to_thread(netapi.create_network, store, spec)
        daemon.kick()
        return web.json_response({"Id": network_id, "Warning": ""}, status=201)

    @routes.get(prefix + "/networks/{ref}")
    async def network(request: web.Request) -> web.Response:
        found = netapi.inspect_network(store, request.match_info["ref"]).to_dict()
        found.update(await asyncio.to_thread(daemon.dispatcher.network_state, found["name"]))  # VNI, Peers
        return web.json_response(found)

    @routes.delete(prefix + "/networks/{ref}")
    async def remove_network(request: web.Request) -> web.Response:
        net = await asyncio.to_thread(netapi.remove_network, store, request.match_info["ref"])
        daemon.kick()
        return web.json_response({"id": net.id, "name": net.name})

    @routes.get(f"{prefix}/stacks")
    async def stacks(_: web.Request) -> web.Response:
        counts: dict[str, int] = {}
        for svc in store.list("service"):
            name = stack_of(svc)
            if name:
                counts[name] = counts.get(name, 0) + 1
        return web.json_response([{"Name": n, "Services": c} for n, c in sorted(counts.items())])

    @routes.post(prefix + "/stacks/{name}")
    async def deploy(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await _body(request)
        lock = daemon.stack_lock(name)
        if lock.locked():
            raise Conflict(f"stack {name} is being deployed by another client; try again when it has finished")
        async with lock:
            stack = _checked_stack(body, name)
            prune = bool(body.get("prune"))
            resolve_image = body.get("resolve_image") or "always"
            contents = body.get("files") or {}
            shape.check(dict[str, str] | None, body.get("registry_auth"), "registry_auth")
            auths = {svc: registryauth.checked(v) or "" for svc, v in (body.get("registry_auth") or {}).items()}
            lines, warnings = await asyncio.to_thread(stackapi.deploy_stack, store, stack, prune, contents,
                                                      resolve_image, auths)
        daemon.kick()
        return web.json_response({"lines": lines, "warnings": warnings})

    @routes.delete(prefix + "/stacks/{name}")
    async def remove(request: web.Request) -> web.Response:
        lines = await asyncio.to_thread(stackapi.remove_stack, store, request.match_info["name"])
        daemon.kick()
        return web.json_response({"lines": lines})

    app.add_routes(routes)
