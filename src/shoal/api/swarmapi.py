"""The swarm and node routes of shoald's API (docker's /swarm/* and /nodes/*): thin handlers
over manager/swarmnode.py, added to the app api/server.py makes (so both the unix socket and
the cluster listener serve them).

    POST   /swarm/init                  {ListenAddr, AdvertiseAddr, CertExpiry, HeartbeatPeriod,
                                         TaskHistoryRetentionLimit} -> {NodeID, WorkerToken, ManagerAddr}
    POST   /swarm/join                  {RemoteAddrs, JoinToken, AdvertiseAddr, ListenAddr} -> {Role}
    GET    /swarm/join-token/{role}     ?rotate=1 -> {Token, ManagerAddr}
    POST   /swarm/update                {CertExpiry, HeartbeatPeriod, TaskHistoryRetentionLimit}
    POST   /swarm/leave                 ?force=1
    GET    /swarm                       the cluster (swarm inspect)
    GET    /swarm/info                  the Swarm section of `info`
    GET    /swarm/ca                    the root CA certificate (PEM, in JSON); on a manager also
                                         RootRotationInProgress and Progress {Nodes, TLSRotated, CARotated}
    POST   /swarm/ca/rotate             begin a root CA rotation (`swarm ca --rotate`)
    GET    /nodes/{ref}                 one node
    POST   /nodes/{ref}/update          {Availability, Role, LabelAdd, LabelRm}
    DELETE /nodes/{ref}                 ?force=1
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import TYPE_CHECKING, Any

from aiohttp import web

from shoal.api import API_VERSION
from shoal.errors import InvalidArgument, ShoalError, Unavailable
from shoal.model.cluster import Node

if TYPE_CHECKING:
    from shoal.daemon import Daemon
    from shoal.manager import swarmnode

# manager/swarmnode.py and api/tcp.py (the CA, TLS: cryptography, about 20 MiB) are imported by
# the routes that need them, so a one-node shoald that never joins a swarm does not load them.

log = logging.getLogger("shoald.api")

# After `swarm join` or a worker's `swarm leave`, shoald starts again in its new role (only the
# agent, with the HTTPS session; or the one-node manager): daemon.run() reads this flag once
# its loop has stopped and execs itself. Containers keep running across it (conmon).
RESTART_REQUESTED = False
# A worker that left its swarm: the node ID it had. Its task containers and its agent's store go
# once shoald has stopped (no agent left to restart them), before it starts again as a one-node
# manager with a new identity, as moby's Cluster.Leave removes the containers labelled with the
# node's ID and clears the swarm state (the worker's tasks.db with it). They kept running, owned
# by nobody: after a join again the machine ran them beside their replacements.
LEFT_NODE = ""


def restart_if_requested() -> None:
    """Called by daemon.run() once shoald has stopped: exec it again, same arguments."""
    if RESTART_REQUESTED:
        import sys

        os.execv(sys.executable, [sys.executable, *sys.orig_argv[1:]])


def finish_leave() -> None:
    """Called by daemon.run() once shoald has stopped (before any restart, the cluster
    supervisor's fork included): a worker that left removes what its tasks left running."""
    if LEFT_NODE:
        remove_node_tasks(LEFT_NODE)


def remove_node_tasks(node_id: str) -> None:
    """Every container of the swarm tasks of node `node_id`, force-removed (their network
    endpoints with them), and the agent's store of that node's assignments."""
    from shoal import paths
    from shoal.agent.agent import local_store_path
    from shoal.runtime.manager import ContainerManager

    containers = ContainerManager()
    for cid, owner in containers.label_values("com.docker.swarm.node.id").items():
        if owner != node_id:
            continue
        try:
            containers.remove(cid, force=True)
        except ShoalError as exc:
            log.error("error removing %s: %s", cid[:12], exc)
    store = local_store_path(paths.state_root())
    for path in (store, store.with_name(store.name + "-wal"), store.with_name(store.name + "-shm")):
        path.unlink(missing_ok=True)


def request_restart(delay: float = 0.2) -> None:
    """`delay`: time for the answer to go out; 0 when the handler has sent it already."""
    global RESTART_REQUESTED
    RESTART_REQUESTED = True
    loop = asyncio.get_running_loop()
    loop.call_later(delay, os.kill, os.getpid(), signal.SIGTERM)


def _opt_str(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, str) or "\0" in value or len(value) > 300:
        raise InvalidArgument(f"{key}: a string is expected")
    return value


def _opt_number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InvalidArgument(f"{key}: a non-negative number is expected")
    return float(value)


def _opt_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{key}: an integer is expected")
    return value


def _node_api(node: dict[str, Any]) -> dict[str, Any]:
    return Node.from_dict(node).to_dict()


# What a worker's own API still answers: the rest is the manager's (Docker's "This node is not a
# swarm manager" on a worker, whose shoald runs no manager and serves none of its routes:
# daemon.py, api/managerapi.py). This node's own images, builds, containers and networks
# (api/nodeapi.py) are its own, as a worker's dockerd answers `docker -H` for them.
_WORKER_ROUTES = ("/version", "/info", "/events", "/swarm/info", "/swarm/leave", "/swarm/ca", "/containers",
                  "/images", "/build", "/node/")


def _in_swarm(daemon: Daemon) -> bool:
    return getattr(daemon, "swarm", None) is not None or (daemon.root / "swarm" / "state.json").exists()


def _worker_guard(daemon: Daemon) -> Any:
    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        path = request.path.removeprefix(f"/{API_VERSION}")
        if _in_swarm(daemon) and not path.startswith(_WORKER_ROUTES):
            from shoal.api.tcp import swarm_of
            from shoal.manager import swarmnode

            if swarm_of(daemon).is_worker:
                raise Unavailable(swarmnode.NOT_A_MANAGER)
        return await handler(request)

    return guard


def _swarmnode() -> Any:
    from shoal.manager import swarmnode

    return swarmnode


def add_routes(app: web.Application, daemon: Daemon, body: Any) -> None:
    """`body` is api/server.py's JSON body reader (its 400s and 413s)."""
    app.middlewares.append(_worker_guard(daemon))

    routes = web.RouteTableDef()
    prefix = f"/{API_VERSION}"
    store = daemon.store

    def swarm() -> swarmnode.SwarmNode:
        from shoal.api.tcp import swarm_of

        return swarm_of(daemon)

    @routes.post(prefix + "/swarm/init")
    async def init(request: web.Request) -> web.Response:
        b = await body(request)
        node_id, token, addr = await asyncio.to_thread(
            swarm().init, _opt_str(b, "ListenAddr"), _opt_str(b, "AdvertiseAddr"), _opt_number(b, "CertExpiry"),
            _opt_number(b, "HeartbeatPeriod"), _opt_int(b, "TaskHistoryRetentionLimit"))
        from shoal.api.tcp import start_listener

        try:
            await start_listener(daemon)
        except ShoalError:
            await asyncio.to_thread(swarm().leave, True)  # nothing half-made: back to one node
            raise
        return web.json_response({"NodeID": node_id, "WorkerToken": token, "ManagerAddr": addr})

    @routes.post(prefix + "/swarm/join")
    async def join(request: web.Request) -> web.Response:
        b = await body(request)
        remotes = b.get("RemoteAddrs")
        if not isinstance(remotes, list) or len(remotes) != 1 or not isinstance(remotes[0], str):
            raise InvalidArgument("RemoteAddrs: one manager address is expected")
        token = _opt_str(b, "JoinToken")
        role = await swarm().join(remotes[0], token, _opt_str(b, "AdvertiseAddr"), _opt_str(b, "ListenAddr"))
        # The answer sent in full first, then the restart at once: a fixed wait for it to go out
        # was on every join's path (`cluster create`'s nodes Ready).
        response = web.json_response({"Role": role})
        await response.prepare(request)
        await response.write_eof()
        request_restart(0.0)
        return response

    @routes.get(prefix + "/swarm/join-token/{role}")
    async def join_token(request: web.Request) -> web.Response:
        rotate = request.query.get("rotate") == "1"
        token = await asyncio.to_thread(swarm().join_token, request.match_info["role"], rotate)
        return web.json_response({"Token": token, "ManagerAddr": swarm().manager_addr()})

    @routes.post(prefix + "/swarm/update")
    async def update(request: web.Request) -> web.Response:
        b = await body(request)
        await asyncio.to_thread(swarm().update, _opt_number(b, "CertExpiry"), _opt_number(b, "HeartbeatPeriod"),
                                _opt_int(b, "TaskHistoryRetentionLimit"))
        from shoal.api.tcp import apply_settings

        apply_settings(daemon)
        return web.json_response({})

    @routes.post(prefix + "/swarm/leave")
    async def leave(request: web.Request) -> web.Response:
        global LEFT_NODE
        node = swarm()
        was_worker = node.is_worker
        node_id = node.local.node_id if node.local is not None else ""
        await asyncio.to_thread(node.leave, request.query.get("force") == "1")
        if was_worker:
            LEFT_NODE = node_id
            request_restart()
        else:
            from shoal.api.tcp import stop_listener

            await stop_listener(daemon)
        return web.json_response({})

    @routes.get(prefix + "/swarm")
    async def inspect(_: web.Request) -> web.Response:
        node = swarm()
        node.require_initialised()
        record = node.cluster() or {}
        return web.json_response({"ID": record.get("id"), "CreatedAt": record.get("created_at"),
                                  "UpdatedAt": record.get("updated_at"), "Spec": record.get("spec"),
                                  "TLSInfo": record.get("tls_info"), "JoinTokens": record.get("join_tokens")})

    @routes.get(prefix + "/swarm/ca")
    async def root_ca(_: web.Request) -> web.Response:
        node = swarm()
        if node.local is None:
            from shoal.manager import swarmnode

            raise Unavailable(swarmnode.NO_INIT)
        pem = await asyncio.to_thread(lambda: node.certs.root_pem().decode())  # as stored; nothing to parse
        answer: dict[str, Any] = {"Certificate": pem}
        if node.initialised:
            rotating, _, progress = await asyncio.to_thread(node.rotation_status)
            answer.update(RootRotationInProgress=rotating, Progress=progress.to_api())
        return web.json_response(answer)

    @routes.post(prefix + "/swarm/ca/rotate")
    async def rotate_ca(request: web.Request) -> web.Response:
        # {} (a new root), or {"CACert", "CAKey", "ExternalCAs"}: the PEMs of a root the user
        # brings, with its key or the CFSSL URLs that sign for it ([{"Protocol", "URL"}])
        options = await body(request)
        unknown = set(options) - {"CACert", "CAKey", "ExternalCAs"}
        if unknown:
            raise InvalidArgument(f"unknown option {sorted(unknown)[0]!r}")
        cert, key = options.get("CACert", ""), options.get("CAKey", "")
        if not isinstance(cert, str) or not isinstance(key, str):
            raise InvalidArgument("CACert and CAKey must be PEM strings")
        externals = options.get("ExternalCAs") or []
        if not isinstance(externals, list) or not all(isinstance(e, dict) for e in externals):
            raise InvalidArgument("ExternalCAs: a list of {Protocol, URL} is expected")
        node = swarm()
        node.require_initialised()
        listener = getattr(daemon, "cluster_listener", None)
        if listener is None:
            raise Unavailable("the cluster listener is not running")
        desired = None
        if cert or key:
            from shoal.manager import ca, externalca

            external = None
            if externals and not key:  # with its key the root signs here, as swarmkit's
                specs = [externalca.spec_of(str(e.get("Protocol", "")), str(e.get("URL", ""))) for e in externals]
                external = externalca.ExternalCA([e.url for e in specs], node.certs.cert_path, node.certs.key_path)
            desired = await asyncio.to_thread(ca.desired_root, cert.encode(), key.encode(), external=external)
        await listener.rotate_ca(desired)
        return web.json_response({})

    @routes.get(prefix + "/swarm/info")
    async def info(_: web.Request) -> web.Response:
        if not _in_swarm(daemon):  # one node: what SwarmNode would say, without loading it
            nodes = store.list("node")
            return web.json_response({
                "NodeID": daemon.node_id, "LocalNodeState": "active", "ControlAvailable": True, "ClusterID": "",
                "RemoteManagers": [{"NodeID": daemon.node_id, "Addr": ""}], "Nodes": len(nodes),
                "Managers": sum(1 for n in nodes if n.get("role") == "manager"), "Initialised": False})
        node = swarm()
        local = node.local
        # dockerd's LocalNodeState: a worker is "pending" until its agent's first session opens
        # (a removed node restarted never gets one), "active" from then on.
        agent = getattr(daemon, "agent", None)
        pending = node.is_worker and agent is not None and not agent.ever_registered
        result: dict[str, Any] = {"NodeID": node.node_id, "LocalNodeState": "pending" if pending else "active",
                                  "ControlAvailable": not node.is_worker, "ClusterID": "",
                                  "RemoteManagers": [], "Nodes": 0, "Managers": 0, "Initialised": False}
        if local is not None:
            result["ClusterID"] = local.cluster_id
            result["Initialised"] = True
            result["NodeAddr"] = _swarmnode().split_addr(local.advertise_addr)[0] if local.advertise_addr else ""
            result["RemoteManagers"] = ([{"NodeID": local.node_id, "Addr": local.advertise_addr}]
                                        if local.role == "manager" else [{"NodeID": "", "Addr": a} for a in local.managers])
        if not node.is_worker:
            nodes = store.list("node")
            result["Nodes"] = len(nodes)
            result["Managers"] = sum(1 for n in nodes if n.get("role") == "manager")
            if local is None:
                result["RemoteManagers"] = [{"NodeID": node.node_id, "Addr": ""}]
        if node.initialised:
            # read as stored: `info` never loads cryptography into shoald
            result["Cluster"] = {"Spec": node.settings(), "RootCADigest": node.root_pem().digest,
                                 "RootRotationInProgress": node.certs.rotating(),
                                 "ExternalCAs": [{"Protocol": "cfssl", "URL": u} for u in node.certs.external_urls()]}
        return web.json_response(result)

    @routes.get(prefix + "/nodes/{ref}")
    async def node_inspect(request: web.Request) -> web.Response:
        swarm().require_manager()
        found = _swarmnode().resolve_node(store.list("node"), request.match_info["ref"], daemon.node_id)
        return web.json_response(_node_api(found))

    @routes.post(prefix + "/nodes/{ref}/update")
    async def node_update(request: web.Request) -> web.Response:
        swarm().require_manager()
        b = await body(request)
        labels = b.get("LabelAdd") or {}
        removed = b.get("LabelRm") or []
        if not isinstance(labels, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in labels.items()):
            raise InvalidArgument("LabelAdd: a mapping of strings is expected")
        if not isinstance(removed, list) or not all(isinstance(k, str) for k in removed):
            raise InvalidArgument("LabelRm: a list of strings is expected")
        availability = _opt_str(b, "Availability") or None
        role = _opt_str(b, "Role") or None
        node_id = await asyncio.to_thread(_swarmnode().update_node, store, request.match_info["ref"], daemon.node_id,
                                          availability=availability, role=role, label_add=labels, label_rm=removed)
        daemon.kick()
        return web.json_response({"ID": node_id})

    @routes.delete(prefix + "/nodes/{ref}")
    async def node_remove(request: web.Request) -> web.Response:
        swarm().require_manager()
        node_id = await asyncio.to_thread(_swarmnode().remove_node, store, request.match_info["ref"], daemon.node_id,
                                          request.query.get("force") == "1")
        listener = getattr(daemon, "cluster_listener", None)
        if listener is not None:
            listener.removed.add(node_id)  # its certificate refused from this request on
        daemon.kick()
        return web.json_response({"ID": node_id})

    app.add_routes(routes)
