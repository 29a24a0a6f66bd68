"""The dispatcher over HTTPS: aiohttp routes that carry agent/session.py's messages to the
manager's Dispatcher (manager/dispatcher.py), for agents on other nodes (agent/session_https.py).
api/tcp.py mounts them at DISPATCHER_PREFIX under its mutual-TLS listener.

Who speaks is the client certificate's: the node ID is its CN (a node can only speak for itself,
whatever a body says) and its O must be this cluster (tlsconfig.require_node).

    POST /session      NodeDescription              -> SessionInfo
    GET  /assignments  ?session_id=S                -> AssignmentSet per line (JSON lines), a
                                                       blank line every KEEPALIVE s, until the
                                                       session ends (then one {"error": ...} line)
    POST /status       {"session_id", "updates": [TaskStatusUpdate]}
    POST /heartbeat    {"session_id", "applied", "period"} -> {"period": seconds, "ca": digest}:
                                                       the request's "period" is the one the node
                                                       keeps to until this answer reaches it; "ca"
                                                       names the cluster's desired TLSInfo
                                                       (ca.tls_digest): a root rotation told
    POST /close        {"session_id"}
    GET  /logs/subscriptions ?session_id=S      -> LogSubscription per line (JSON lines), blank
                                                   lines as keepalive, as /assignments
    POST /logs/publish {"session_id", "subscription_id", "records": [...], "close"}
                                                -> {"open": false once the client left}

Errors are JSON {"message", "kind"}: kind "session_invalid" (409: register again),
"node_removed" (403: stop), "unavailable" (503: try again)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from shoal.agent.session import (AssignmentSet, NodeDescription, NodeRemoved, SessionInfo,
                                 SessionInvalid, TaskStatusUpdate, Unreachable, from_json, to_json)
from shoal import httpstreams
from shoal.errors import ShoalError
from shoal.tlsconfig import require_node

if TYPE_CHECKING:
    from shoal.manager.dispatcher import Dispatcher

DISPATCHER_PREFIX = "/swarm/dispatcher"
KEEPALIVE = 5.0  # seconds between blank lines on an idle assignment stream
MAX_BODY = 16 * 1024 * 1024  # a status batch of thousands of tasks fits


DispatcherGetter = Callable[[], "Dispatcher | None"]
DISPATCHER_KEY = web.AppKey("shoal_dispatcher", object)


def _error(status: type[web.HTTPException], kind: str, message: str) -> web.HTTPException:
    return status(text=json.dumps({"message": message, "kind": kind}), content_type="application/json")


def _translate(exc: Exception) -> web.HTTPException:
    if isinstance(exc, SessionInvalid):
        return _error(web.HTTPConflict, "session_invalid", str(exc) or "session invalid")
    if isinstance(exc, NodeRemoved):
        return _error(web.HTTPForbidden, "node_removed", str(exc) or "node removed from the swarm")
    if isinstance(exc, Unreachable):
        return _error(web.HTTPServiceUnavailable, "unavailable", str(exc) or "the dispatcher is not available")
    return _error(web.HTTPBadRequest, "invalid", str(exc))


def _dispatcher(request: web.Request) -> Dispatcher:
    getter: DispatcherGetter = request.config_dict[DISPATCHER_KEY]  # type: ignore[assignment]
    found = getter()
    if found is None:
        raise _error(web.HTTPServiceUnavailable, "unavailable", "this manager's dispatcher is not running")
    return found


async def _body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise _error(web.HTTPRequestEntityTooLarge, "invalid", "request body too large")
    try:
        body = json.loads(await request.read())
    except ValueError:
        raise _error(web.HTTPBadRequest, "invalid", "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise _error(web.HTTPBadRequest, "invalid", "the request body must be a JSON object")
    return body


def _session_id(value: Any) -> str:
    if not isinstance(value, str) or not value or len(value) > 200:
        raise _error(web.HTTPBadRequest, "invalid", "session_id: a session ID is required")
    return value


async def post_session(request: web.Request) -> web.Response:
    ident = require_node(request)
    body = await _body(request)
    try:
        description = from_json(NodeDescription, body)
    except (TypeError, ValueError, KeyError) as exc:
        raise _error(web.HTTPBadRequest, "invalid", f"not a node description: {exc}") from None
    if not isinstance(description.hostname, str) or not description.hostname:
        raise _error(web.HTTPBadRequest, "invalid", "hostname: required")
    description.node_id = ident.node_id  # the certificate says who this is, not the body
    dispatcher = _dispatcher(request)
    role = "manager" if ident.is_manager else "worker"
    try:
        # A certificate outlives `node rm`: a node the store no longer has is not registered
        # again (swarmkit's ErrNodeNotRegistered), it is told it was removed.
        if await asyncio.to_thread(dispatcher.store.get, "node", ident.node_id) is None:
            raise NodeRemoved(f"node {ident.node_id} is not part of the cluster")
        info = await asyncio.to_thread(dispatcher.register, description, request.remote or "", role)
    except (ShoalError, ValueError) as exc:
        raise _translate(exc) from None
    return web.json_response(to_json(info))


async def _write_error(response: web.StreamResponse, exc: Exception) -> None:
    """The stream's last line names why it ended; a session usually ends because its node went
    away, and then there is nobody to tell (aiohttp raises on the closing transport)."""
    err = _translate(exc)
    with contextlib.suppress(ConnectionResetError):
        await response.write((json.dumps({"error": json.loads(err.text or "{}")}) + "\n").encode())


async def get_assignments(request: web.Request) -> web.StreamResponse:
    ident = require_node(request)
    session_id = _session_id(request.query.get("session_id"))
    dispatcher = _dispatcher(request)
    stream = dispatcher.stream(ident.node_id, session_id).__aiter__()
    try:
        first = await stream.__anext__()  # a bad session is an HTTP error, before the stream starts
    except StopAsyncIteration:
        raise _translate(SessionInvalid("the session ended")) from None
    except (ShoalError, ValueError) as exc:
        raise _translate(exc) from None
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    await response.write((json.dumps(to_json(first)) + "\n").encode())
    pending: asyncio.Task[AssignmentSet] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(stream.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE)
            if not done:
                await response.write(b"\n")
                continue
            try:
                message = pending.result()
            except StopAsyncIteration:
                raise SessionInvalid("the session ended") from None
            finally:
                pending = None
            await response.write((json.dumps(to_json(message)) + "\n").encode())
    except (ShoalError, ValueError) as exc:
        await _write_error(response, exc)
    except (ConnectionResetError, asyncio.CancelledError):
        raise
    finally:
        if pending is not None:
            pending.cancel()
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            try:
                await aclose()
            except Exception:  # noqa: BLE001 - the stream is going away either way
                pass
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


async def get_log_subscriptions(request: web.Request) -> web.StreamResponse:
    """The node's log subscriptions (manager/logbroker.py): the manager never connects to a
    node, the node holds this stream open and answers on /logs/publish."""
    ident = require_node(request)
    session_id = _session_id(request.query.get("session_id"))
    dispatcher = _dispatcher(request)
    try:
        dispatcher._session(ident.node_id, session_id)  # a bad session is an HTTP error
    except (ShoalError, ValueError) as exc:
        raise _translate(exc) from None
    stream = dispatcher.log_subscriptions(ident.node_id, session_id).__aiter__()
    response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
    await response.prepare(request)
    pending: asyncio.Task[Any] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(stream.__anext__())
            done, _ = await asyncio.wait({pending}, timeout=KEEPALIVE)
            if not done:
                await response.write(b"\n")
                continue
            try:
                message = pending.result()
            finally:
                pending = None
            await response.write((json.dumps(to_json(message)) + "\n").encode())
    except (ShoalError, ValueError, StopAsyncIteration) as exc:
        await _write_error(response, exc if not isinstance(exc, StopAsyncIteration) else SessionInvalid("the session ended"))
    finally:
        if pending is not None:
            pending.cancel()
            await asyncio.gather(pending, return_exceptions=True)  # aclose() of a running one raises
        await stream.aclose()  # type: ignore[attr-defined]
    with contextlib.suppress(ConnectionResetError):
        await response.write_eof()
    return response


async def post_log_publish(request: web.Request) -> web.Response:
    ident = require_node(request)
    body = await _body(request)
    session_id = _session_id(body.get("session_id"))
    sub_id, records = body.get("subscription_id"), body.get("records")
    if not isinstance(sub_id, str) or not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise _error(web.HTTPBadRequest, "invalid", "subscription_id and records (a list of log records) are required")
    try:
        alive = _dispatcher(request).publish_logs(ident.node_id, session_id, sub_id, records, bool(body.get("close")))
    except (ShoalError, ValueError) as exc:
        raise _translate(exc) from None
    return web.json_response({"open": alive})


async def post_status(request: web.Request) -> web.Response:
    ident = require_node(request)
    body = await _body(request)
    session_id = _session_id(body.get("session_id"))
    raw = body.get("updates")
    if not isinstance(raw, list) or not all(isinstance(u, dict) for u in raw):
        raise _error(web.HTTPBadRequest, "invalid", "updates: a list of task status updates is required")
    try:
        updates = [from_json(TaskStatusUpdate, u) for u in raw]
        await asyncio.to_thread(_dispatcher(request).update_status, ident.node_id, session_id, updates)
    except (ShoalError, ValueError, TypeError, KeyError) as exc:
        raise _translate(exc if isinstance(exc, ShoalError) else ValueError(f"updates: {exc}")) from None
    return web.json_response({})


async def post_heartbeat(request: web.Request) -> web.Response:
    ident = require_node(request)
    body = await _body(request)
    applied = body.get("applied")
    if applied is not None and (not isinstance(applied, int) or isinstance(applied, bool) or applied < 0):
        raise _error(web.HTTPBadRequest, "invalid", "applied: a non-negative assignment sequence is required")
    following = body.get("period")  # the period the node keeps to until this answer reaches it
    if following is not None and (not isinstance(following, (int, float)) or isinstance(following, bool)
                                  or not 0 < following < float("inf")):
        raise _error(web.HTTPBadRequest, "invalid", "period: a positive number of seconds is required")
    try:
        period = _dispatcher(request).heartbeat(ident.node_id, _session_id(body.get("session_id")), applied,
                                                None if following is None else float(following))
    except (ShoalError, ValueError) as exc:
        raise _translate(exc) from None
    answer: dict[str, Any] = {"period": period}
    tls = request.config_dict.get(TLS_DIGEST_KEY)
    digest = tls() if tls is not None else None
    if digest:
        answer["ca"] = digest  # the node renews at once when its own differs (agent/join.py)
    return web.json_response(answer)


async def post_close(request: web.Request) -> web.Response:
    """A node's agent stopping (shoald stopped, restarted, or the node left the swarm). The
    session is left to its heartbeat deadline rather than ended here: Dispatcher.close forgets
    the session and with it the node's deadline, so a node that stopped for good would stay
    Ready forever. As in swarmkit, it is Down once its heartbeats are overdue, unless it
    registers again first (which ends this session)."""
    require_node(request)
    body = await _body(request)
    _session_id(body.get("session_id"))
    return web.json_response({})


async def post_attachment(request: web.Request) -> web.Response:
    """A container of the node attaching to an attachable network (swarmkit's
    ResourceAllocator.AttachNetwork): the node is the certificate's, never the body's."""
    from shoal.errors import NotFound

    ident = require_node(request)
    body = await _body(request)
    session_id = _session_id(body.get("session_id"))
    network, container_id, name = body.get("network"), body.get("container_id"), body.get("name", "")
    aliases = body.get("aliases") or []
    if not all(isinstance(v, str) and len(v) <= 256 for v in (network, container_id, name)) or not network \
            or not container_id or not isinstance(aliases, list) or not all(isinstance(a, str) for a in aliases):
        raise _error(web.HTTPBadRequest, "invalid", "network, container_id (strings) and aliases (a list) are required")
    try:
        answer = await asyncio.to_thread(_dispatcher(request).attach_network, ident.node_id, session_id,
                                         network, container_id, name, aliases)
    except (SessionInvalid, NodeRemoved, Unreachable) as exc:
        raise _translate(exc) from None
    except NotFound as exc:
        raise _error(web.HTTPNotFound, "not_found", str(exc)) from None
    except ShoalError as exc:
        raise _error(web.HTTPBadRequest, "refused", str(exc)) from None
    return web.json_response(answer)


async def post_detach(request: web.Request) -> web.Response:
    ident = require_node(request)
    body = await _body(request)
    session_id = _session_id(body.get("session_id"))
    attachment_id = body.get("attachment_id")
    if not isinstance(attachment_id, str) or not attachment_id or len(attachment_id) > 200:
        raise _error(web.HTTPBadRequest, "invalid", "attachment_id: required")
    try:
        await asyncio.to_thread(_dispatcher(request).detach_network, ident.node_id, session_id, attachment_id)
    except (SessionInvalid, NodeRemoved, Unreachable) as exc:
        raise _translate(exc) from None
    except ShoalError as exc:
        raise _error(web.HTTPBadRequest, "refused", str(exc)) from None
    return web.json_response({})


TlsDigest = Callable[[], "str | None"]
TLS_DIGEST_KEY = web.AppKey("shoal_tls_digest", object)


def make_dispatcher_app(get_dispatcher: DispatcherGetter, cluster_id: str,
                        tls_digest: TlsDigest | None = None) -> web.Application:
    """The routes, to mount with `app.add_subapp(DISPATCHER_PREFIX, ...)`. `get_dispatcher`
    gives the daemon's dispatcher at each request (None: 503, e.g. while it starts);
    `tls_digest` the cluster's desired TLSInfo digest, told in every heartbeat answer."""
    from shoal.tlsconfig import CLUSTER_ID_KEY

    app = web.Application(client_max_size=MAX_BODY)
    app[DISPATCHER_KEY] = get_dispatcher
    if tls_digest is not None:
        app[TLS_DIGEST_KEY] = tls_digest
    app[CLUSTER_ID_KEY] = cluster_id
    # The open streams (assignments, log subscriptions) are cancelled when the listener stops:
    # an idle one otherwise ends only when its next keepalive write fails on the closing
    # transport, and a manager with workers took up to KEEPALIVE (5 s) to stop.
    httpstreams.end_streams_on_shutdown(app)
    app.router.add_post("/session", post_session)
    app.router.add_get("/assignments", get_assignments)
    app.router.add_post("/status", post_status)
    app.router.add_post("/heartbeat", post_heartbeat)
    app.router.add_post("/close", post_close)
    app.router.add_get("/logs/subscriptions", get_log_subscriptions)
    app.router.add_post("/logs/publish", post_log_publish)
    app.router.add_post("/attachments", post_attachment)
    app.router.add_post("/attachments/detach", post_detach)
    return app
