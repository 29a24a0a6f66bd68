"""shoald's HTTP routes (aiohttp). Handlers only translate HTTP to store reads and manager calls;
the work happens in the manager loops, woken through `Daemon.kick()`."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import platform
from typing import TYPE_CHECKING, Any

from aiohttp import web

from shoal import __version__
from shoal import httpstreams
from shoal.api import API_VERSION, shape
from shoal.errors import Conflict, InvalidArgument, NotFound, ShoalError, Unavailable
from shoal.manager import serviceview
from shoal.manager.controlapi import networks as netapi, services as svcapi, stacks as stackapi
from shoal.manager import registryauth
from shoal.manager.stacks import stack_of
from shoal.model.cluster import Task, TaskState

if TYPE_CHECKING:
    from shoal.daemon import Daemon

_STATUS = {InvalidArgument: 400, NotFound: 404, Conflict: 409, Unavailable: 503}
log = logging.getLogger("shoald.api")

# The largest request body shoald reads. A deploy carries its secrets and configs (Swarm allows
# 500 KB each, sent base64: a third more), so aiohttp's 1 MiB default refused ordinary stacks;
# 64 MiB leaves room for a hundred of them and still bounds what one client makes shoald hold.
MAX_BODY = 64 * 1024 * 1024


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ShoalError as exc:
        status = next((code for cls, code in _STATUS.items() if isinstance(exc, cls)), 500)
        return web.json_response({"message": str(exc)}, status=status)
    except web.HTTPRequestEntityTooLarge:
        return _too_large(request.content_length)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise  # a redirect, or a handler's own {"message"} (the cluster CA's refusals)
        # aiohttp's own refusals (no such route, wrong method) in the same shape as ours.
        return web.json_response({"message": f"{exc.reason}: {request.method} {request.path}"},
                                 status=exc.status, headers={k: v for k, v in exc.headers.items()
                                                             if k.lower() == "allow"})
    except ConnectionResetError:
        # The client went away mid-answer (a node killed while its assignment stream was being
        # written): not a bug of ours, and logged as one with its traceback. aiohttp finds the
        # connection closed when it sends this and drops it quietly.
        log.debug("API %s %s: the client went away", request.method, request.path)
        return web.Response(status=499)
    except Exception as exc:  # a bug: say so in one line, keep the daemon serving
        log.exception("API %s %s failed", request.method, request.path)
        return web.json_response({"message": f"internal error in shoald: {exc!r}"}, status=500)


def _too_large(size: int | None) -> web.Response:
    actual = f" ({size} bytes)" if size is not None else ""
    return web.json_response(
        {"message": f"request body too large{actual}: shoald accepts at most {MAX_BODY // 2**20} MiB"}, status=413)


def _no_constant(name: str) -> Any:
    # Python's json takes NaN and Infinity; JSON (and Go's decoder, Docker's) does not.
    raise ValueError(f"{name} is not a JSON value")


async def _body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 saying what is wrong with it (413 above MAX_BODY,
    refused on its Content-Length before a byte of it is read)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(MAX_BODY, request.content_length)
    raw = await request.read()
    try:
        body = json.loads(raw, parse_constant=_no_constant) if raw.strip() else None
    except UnicodeDecodeError as exc:
        raise InvalidArgument(f"invalid JSON in the request body: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        raise InvalidArgument(f"invalid JSON in the request body: {exc.msg} (line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise InvalidArgument("invalid JSON in the request body: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4300 digits
        raise InvalidArgument(f"invalid JSON in the request body: {exc}") from None
    if not isinstance(body, dict):
        raise InvalidArgument(f"the request body must be a JSON object, not {shape._kind(body)}")
    return body


def _int_query(request: web.Request, name: str, default: int, low: int = 0) -> int:
    value = request.query.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise InvalidArgument(f"{name}: an integer is expected, not {value[:40]!r}") from None
    if not low <= number <= shape.INT_MAX:
        raise InvalidArgument(f"{name}: {value[:40]} is out of range")
    return number


def _resolve(objects: list[dict[str, Any]], ref: str, kind: str) -> dict[str, Any]:
    """Docker's lookup order and moby's words (the control API's, one rule for every route)."""
    from shoal.manager.controlapi import resolve

    return resolve(objects, ref, kind)


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


def make_app(daemon: Daemon) -> web.Application:
    routes = web.RouteTableDef()
    store = daemon.store
    prefix = f"/{API_VERSION}"

    @routes.get(f"{prefix}/version")
    async def version(_: web.Request) -> web.Response:
        return web.json_response({"Version": __version__, "ApiVersion": API_VERSION,
                                  "Os": "linux", "Arch": platform.machine()})

    @routes.get(f"{prefix}/info")
    async def info(_: web.Request) -> web.Response:
        from shoal.api.sysinfo import engine_info

        engine = await asyncio.to_thread(engine_info, daemon.node_id)  # reads the state root
        return web.json_response({
            **engine,
            "NodeID": daemon.node_id,
            "Services": len(store.list("service")),
            "Tasks": len(store.list("task")),
            "Revision": store.revision(),
        })

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

    @routes.post(prefix + "/containers/{id}/dns")
    async def container_dns(request: web.Request) -> web.Response:
        """`shoal run` on a user-defined network: open the embedded resolver in the container's
        namespace (before its process starts) and publish its names."""
        from shoal.agent.netglue import container_networks

        container_id = request.match_info["id"]
        body = await _body(request)
        netns = body.get("netns")
        if not netns or not isinstance(netns, str) or not netns.startswith("/") or "\0" in netns:
            raise InvalidArgument("netns: the absolute path of the container's network namespace is required")
        networks = await asyncio.to_thread(container_networks, container_id)
        if daemon.dns is not None:
            await daemon.dns.serve(container_id, netns, networks)
        await daemon.refresh_dns()
        return web.json_response({"id": container_id, "networks": networks})

    @routes.post(prefix + "/containers/{id}/attach")
    async def container_attach(request: web.Request) -> web.Response:
        """`shoal run --network X` on this node (the CLI's own start), before the container's
        veth is made: the address the manager gives it on the attachable swarm network X, with
        this node's copy of X made (agent/attachments.py); null when X is no swarm network (a
        network of this node's own). Under /containers/: a worker's API answers it."""
        body = await _body(request)
        network, name, aliases = body.get("network"), body.get("name", ""), body.get("aliases") or []
        if not isinstance(network, str) or not network or not isinstance(name, str) \
                or not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
            raise InvalidArgument("network and name (strings) and aliases (a list of strings) are required")
        attachments = getattr(daemon, "attachments", None)
        if attachments is None:
            raise Unavailable("this node's agent is not running yet")
        address = await attachments.attach(network, request.match_info["id"], name, aliases)
        return web.json_response({"address": address})

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

    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY)
    httpstreams.end_streams_on_shutdown(app)
    app.add_routes(routes)
    from shoal.api import swarmapi  # swarm init/join/leave/..., node inspect/update/rm

    swarmapi.add_routes(app, daemon, _body)
    from shoal.api import nodeapi  # this node's images, builds and containers, for a remote CLI

    nodeapi.add_routes(app, daemon, _body)
    from shoal.api import logsapi  # service logs and events, from every node

    logsapi.add_routes(app, daemon, prefix, _resolve, _int_query)
    from shoal.api import objectsapi  # secret and config create/ls/inspect/rm
    objectsapi.add_routes(app, daemon, _body)
    return app


async def wait_forever() -> None:
    await asyncio.Event().wait()
