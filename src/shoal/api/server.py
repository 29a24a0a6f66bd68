"""shoald's HTTP application (aiohttp): its error handling and body checks, this node's own
routes, and the other route modules' (api/managerapi.py only on a node that runs a manager).
Handlers only translate HTTP to store reads and manager calls; the work happens in the manager
loops, woken through `Daemon.kick()`."""

from __future__ import annotations

import asyncio
import json
import logging
import platform
from typing import TYPE_CHECKING, Any

from aiohttp import web

from shoal import __version__
from shoal import httpstreams
from shoal.api import API_VERSION, shape
from shoal.errors import Conflict, InvalidArgument, NotFound, ShoalError, Unavailable

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

    @routes.post(prefix + "/containers/{id}/dns")
    async def container_dns(request: web.Request) -> web.Response:
        """`shoal run` on a user-defined network: open the embedded resolver in the container's
        namespace (before its process starts) and publish its names."""
        from shoal.agent.netglue import container_networks, container_upstreams

        container_id = request.match_info["id"]
        body = await _body(request)
        netns = body.get("netns")
        if not netns or not isinstance(netns, str) or not netns.startswith("/") or "\0" in netns:
            raise InvalidArgument("netns: the absolute path of the container's network namespace is required")
        networks = await asyncio.to_thread(container_networks, container_id)
        if daemon.dns is not None:
            await daemon.dns.serve(container_id, netns, networks,
                                   await asyncio.to_thread(container_upstreams, container_id))
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

    app = web.Application(middlewares=[_errors], client_max_size=MAX_BODY)
    httpstreams.end_streams_on_shutdown(app)
    app.add_routes(routes)
    from shoal.api import swarmapi  # swarm init/join/leave/..., node inspect/update/rm

    swarmapi.add_routes(app, daemon, _body)
    from shoal.api import nodeapi  # this node's images, builds and containers, for a remote CLI

    nodeapi.add_routes(app, daemon, _body)
    from shoal.api import logsapi  # service logs and events, from every node

    logsapi.add_routes(app, daemon, prefix, _resolve, _int_query)
    if not daemon.is_worker:  # a worker answers these with swarmapi's "not a swarm manager"
        from shoal.api import managerapi  # nodes, services, tasks, networks, stacks

        managerapi.add_routes(app, daemon, _body, _resolve)
        from shoal.api import objectsapi  # secret and config create/ls/inspect/rm

        objectsapi.add_routes(app, daemon, _body)
    return app


async def wait_forever() -> None:
    await asyncio.Event().wait()
