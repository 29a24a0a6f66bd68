"""shoald's HTTP routes (aiohttp). Handlers only translate HTTP to store reads and manager calls;
the work happens in the manager loops, woken through `Daemon.kick()`."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import platform
import time
from typing import TYPE_CHECKING, Any

from aiohttp import web

from shoal import __version__
from shoal.api import API_VERSION, shape
from shoal.errors import Conflict, InvalidArgument, NotFound, ShoalError, Unavailable
from shoal.manager import allocator, endpoints
from shoal.manager.stacks import apply_stack, pruned_services, remove_stack, service_ids, stack_of
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
    except Exception as exc:  # a bug: say so in one line, keep the daemon serving
        log.exception("API %s %s failed", request.method, request.path)
        return web.json_response({"message": f"internal error in shoald: {exc!r}"}, status=500)


def _too_large(size: int | None) -> web.Response:
    actual = f" ({size} bytes)" if size is not None else ""
    return web.json_response(
        {"message": f"request body too large{actual}: shoald accepts at most {MAX_BODY // 2**20} MiB"}, status=413)


async def _body(request: web.Request) -> dict[str, Any]:
    """The request's JSON object, or a 400 saying what is wrong with it (413 above MAX_BODY,
    refused on its Content-Length before a byte of it is read)."""
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(MAX_BODY, request.content_length)
    raw = await request.read()
    try:
        body = json.loads(raw) if raw.strip() else None
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
    """Docker's lookup order: full ID, then full name, then a unique ID prefix."""
    for key in ("id", "name"):
        for obj in objects:
            if obj[key] == ref:
                return obj
    prefixed = [o for o in objects if o["id"].startswith(ref)]
    if len(prefixed) == 1:
        return prefixed[0]
    if prefixed:
        raise InvalidArgument(f"multiple {kind}s found with provided prefix: {ref}")
    raise NotFound(f"no such {kind}: {ref}")


def service_status(service: dict[str, Any], tasks: list[dict[str, Any]]) -> dict[str, int]:
    """ServiceStatus as the API reports it: running = observed RUNNING; desired = replicas, or the
    number of tasks desired RUNNING for a global service."""
    own = [Task.from_dict(t) for t in tasks if t["service_id"] == service["id"]]
    running = sum(1 for t in own if t.status.state == TaskState.RUNNING)
    spec = service.get("spec", {})
    if spec.get("mode", "replicated") == "global":
        desired = sum(1 for t in own if t.desired_state == TaskState.RUNNING)
    else:
        desired = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
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


def _deploy(store: Any, stack: dict[str, Any], prune: bool, contents: dict[str, dict[str, str]],
            resolve_image: str = "always") -> tuple[list[str], list[str]]:
    """Networks and endpoints first (a clash fails here, before anything is stored), then the
    secrets, configs and services in one transaction; on failure, what this deploy created is
    taken down again."""
    with store.transaction() as tx:
        ids = service_ids(tx, stack)
        fresh = {n for n, i in ids.items() if tx.get("service", i) is None}
        gone = [s["id"] for s in pruned_services(tx, stack)] if prune else []
        current = {n: tx.get("service", i) for n, i in ids.items()}
        held = allocator.held_addresses(tx)
    warnings = _pin_images(stack, current, resolve_image)
    created_networks = endpoints.ensure_networks(stack)
    made: dict[str, dict[str, Any]] = {}
    try:
        for spec in stack.get("services", {}).values():
            made[spec["name"]] = endpoints.ensure_service(ids[spec["name"]], spec, held)
        with store.transaction() as tx:
            lines = apply_stack(tx, stack, prune=prune, ids=ids, endpoints=made, contents=contents)
    except BaseException:
        for svc_name in fresh:  # the one that failed may hold VIPs already
            endpoints.remove_service(ids[svc_name])
        endpoints.undo_networks(created_networks)
        raise
    for service_id in gone:
        endpoints.remove_service(service_id)
    return lines, warnings


def _pin_images(stack: dict[str, Any], current: dict[str, dict[str, Any] | None],
                resolve_image: str = "always") -> list[str]:
    """Each service's image pinned to its digest from this manager's image store (Docker's
    `--resolve-image always`, or the mode the CLI gives), so every node runs the bytes the manager has, whatever the tag
    points at later; a node lacking the image pulls exactly that digest from the manager.
    The registry is not asked here (a deploy must not wait on one; see docs/architecture.md).
    Returns Docker's warnings, for updates only, as `stack deploy` prints them."""
    from shoal.image.store import ImageStore
    from shoal.manager.imagepin import deploy_image
    from shoal.model.stack import LABEL_IMAGE

    images = ImageStore()
    warnings: list[str] = []
    for spec in stack.get("services", {}).values():
        image = spec.get("image") or ""
        if not image:
            continue
        old = (current.get(spec["name"]) or {}).get("spec")
        pinned = deploy_image(images, image, resolve_image=resolve_image,
                              existing_image=old.get("image") if old else None,
                              existing_label=(old.get("labels") or {}).get(LABEL_IMAGE) if old else None,
                              query_registry=False)
        spec["image"] = pinned.image
        if pinned.warning:
            warnings.append(pinned.warning)
    return warnings


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
        return web.json_response({
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
        result = []
        for svc in store.list("service"):
            if stack is not None and stack_of(svc) != stack:
                continue
            result.append(dict(svc, status=service_status(svc, tasks)))
        return web.json_response(result)

    @routes.get(prefix + "/services/{ref}")
    async def service(request: web.Request) -> web.Response:
        svc = _resolve(store.list("service"), request.match_info["ref"], "service")
        return web.json_response(dict(svc, status=service_status(svc, store.list("task"))))

    @routes.delete(prefix + "/services/{ref}")
    async def remove_service(request: web.Request) -> web.Response:
        with store.transaction() as tx:
            svc = _resolve(tx.list("service"), request.match_info["ref"], "service")
            tx.delete("service", svc["id"])
        await asyncio.to_thread(endpoints.remove_service, svc["id"])
        daemon.kick()
        return web.json_response({"id": svc["id"], "name": svc["name"]})

    @routes.post(prefix + "/services/{ref}/scale")
    async def scale(request: web.Request) -> web.Response:
        body = await _body(request)
        if "replicas" not in body:
            raise InvalidArgument("replicas: missing")
        replicas = body["replicas"]
        if not isinstance(replicas, int) or isinstance(replicas, bool) or not 0 <= replicas <= shape.INT_MAX:
            raise InvalidArgument(f"replicas: invalid value {json.dumps(replicas)[:40]}: a whole number from 0 is expected")
        with store.transaction() as tx:
            svc = _resolve(tx.list("service"), request.match_info["ref"], "service")
            if svc["spec"].get("mode", "replicated") != "replicated":
                raise InvalidArgument(f"{request.match_info['ref']}: scale can only be used with replicated or replicated-job mode")
            svc["spec"] = dict(svc["spec"], replicas=replicas)
            svc["spec_version"] += 1
            svc["updated_at"] = time.time()
            tx.update("service", svc)
        daemon.kick()
        return web.json_response({"id": svc["id"], "name": svc["name"]})

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

    @routes.get(f"{prefix}/tasks")
    async def tasks(request: web.Request) -> web.Response:
        service_ids: set[str] | None = None
        if "service" in request.query:
            service_ids = {_resolve(store.list("service"), request.query["service"], "service")["id"]}
        elif "stack" in request.query:
            service_ids = {s["id"] for s in store.list("service") if stack_of(s) == request.query["stack"]}
        result = [t for t in store.list("task") if service_ids is None or t["service_id"] in service_ids]
        return web.json_response(result)

    @routes.get(f"{prefix}/networks")
    async def networks(_: web.Request) -> web.Response:
        return web.json_response(store.list("network"))

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
            lines, warnings = await asyncio.to_thread(_deploy, store, stack, prune, contents, resolve_image)
        daemon.kick()
        return web.json_response({"lines": lines, "warnings": warnings})

    @routes.delete(prefix + "/stacks/{name}")
    async def remove(request: web.Request) -> web.Response:
        with store.transaction() as tx:
            gone = [s["id"] for s in tx.list("service") if stack_of(s) == request.match_info["name"]]
            lines = remove_stack(tx, request.match_info["name"])
        for service_id in gone:
            await asyncio.to_thread(endpoints.remove_service, service_id)
        daemon.kick()
        return web.json_response({"lines": lines})

    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY)
    app.add_routes(routes)
    from shoal.api import swarmapi  # swarm init/join/leave/..., node inspect/update/rm

    swarmapi.add_routes(app, daemon, _body)
    from shoal.api import nodeapi  # this node's images, builds and containers, for a remote CLI

    nodeapi.add_routes(app, daemon)
    from shoal.api import logsapi  # service logs and events, from every node

    logsapi.add_routes(app, daemon, prefix, _resolve, _int_query)
    from shoal.api import objectsapi  # secret and config create/ls/inspect/rm
    objectsapi.add_routes(app, daemon, _body)
    return app


async def wait_forever() -> None:
    await asyncio.Event().wait()
