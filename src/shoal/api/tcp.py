"""shoald's cluster listener: TCP (Swarm's port 2377) with mutual TLS, on a manager after
`swarm init`. It serves three things, each with its own check of the client's certificate
(the TLS handshake has already verified that one, if presented, chains to the cluster CA):

- the CA service (manager/caserver.py, /swarm/ca/...): open to nodes without a certificate,
  for joining; renewal needs the node's own;
- the dispatcher (manager/dispatcher_http.py, /swarm/dispatcher/...): any node of this cluster,
  speaking for the node its certificate names;
- the image distribution API (image/distserver.py, /v2/...): read-only pulls of the manager's
  image store, for any node of this cluster (worker or manager certificate);
- the control API: the same routes as the unix socket's (api/server.py), for managers'
  certificates only (a worker's certificate is refused on every one: Swarm's "Permission
  denied: remote certificate not part of OUs: [swarm-manager]").
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import TYPE_CHECKING, Any

from aiohttp import web

from shoal.errors import ShoalError
from shoal.image.distserver import DIST_API_PREFIX, make_distribution_app
from shoal.image.store import ImageStore
from shoal.manager.ca import CA_API_PREFIX, MANAGER_ROLE
from shoal.manager.cachild import CAView
from shoal.manager.caserver import make_ca_app, CA_SERVER_KEY
from shoal.manager.dispatcher_http import DISPATCHER_PREFIX, make_dispatcher_app
from shoal.manager.swarmnode import SwarmNode, split_addr
from shoal.tlsconfig import CLUSTER_ID_KEY, REMOVED_NODES_KEY, require_role, server_context

if TYPE_CHECKING:
    from shoal.daemon import Daemon

log = logging.getLogger("shoald.tcp")
RENEW_RETRY = 60.0  # seconds before a failed renewal of the manager's own certificate is retried
RECONCILE_PERIOD = 1.0  # seconds between the root rotation reconciler's looks at the nodes


# The sub-applications that check the client themselves (CA: open for joining; dispatcher: any
# node of the cluster). Decided by the route that matched, never by the path's text, so no
# spelling of a path (dot segments, escapes) reaches a control route without a manager's
# certificate.
_SELF_CHECKING = web.AppKey("shoal_self_checking_apps", tuple)


@web.middleware
async def _authorise(request: web.Request, handler: Any) -> web.StreamResponse:
    """Manager certificates for the control API; the CA and dispatcher sub-apps check their own."""
    apps = request.match_info.apps
    if not apps or apps[-1] not in request.config_dict[_SELF_CHECKING]:
        require_role(request, MANAGER_ROLE)
    return await handler(request)


class ClusterListener:
    """The TCP listener of one manager; started by `swarm init` or at shoald's start on a node
    that ran it, stopped by `swarm leave --force`."""

    def __init__(self, daemon: Daemon, swarm: SwarmNode) -> None:
        self.daemon = daemon
        self.swarm = swarm
        self._runner: web.AppRunner | None = None
        self._ssl: ssl.SSLContext | None = None
        self._renewal: asyncio.Task[None] | None = None
        self._reconciler: asyncio.Task[None] | None = None
        # The context handshakes end on: the site's own context hands each connection over to it
        # (sni_callback), so a finished root rotation trusts only the new root from the next
        # connection on, without restarting the listener.
        self._active: ssl.SSLContext | None = None
        # The nodes `node rm` removed, whose certificates every route refuses: read from the
        # store at start and added to by the removal itself (api/swarmapi.py), so a handshake's
        # check never waits on the store's lock.
        self.removed: set[str] = set()

    def make_app(self, view: CAView | None = None) -> web.Application:
        from shoal.api.server import make_app

        swarm = self.swarm
        assert swarm.local is not None
        cluster_id = swarm.local.cluster_id
        app = make_app(self.daemon)  # the unix socket's routes, behind _authorise
        app.middlewares.insert(0, _authorise)
        app[CLUSTER_ID_KEY] = cluster_id
        app[REMOVED_NODES_KEY] = self.removed.__contains__
        # the root CA as the child parsed it: the child signs, shoald never loads cryptography
        ca_app = make_ca_app(view or swarm.ca_view(), swarm.tokens(), swarm.on_node_joined, cluster_id=cluster_id,
                             role_of=swarm.role_of, on_issued=swarm.record_tls_info, child=swarm.ca_child)
        swarm.ca_server = ca_app[CA_SERVER_KEY]
        dispatcher_app = make_dispatcher_app(lambda: getattr(self.daemon, "dispatcher", None), cluster_id,
                                             tls_digest=lambda: getattr(swarm.ca_server, "desired_digest", None))
        # The manager's image store, read-only, for any node of this cluster (the sub-app
        # checks the node certificate itself: image/distserver.py).
        dist_app = make_distribution_app(ImageStore())
        app[_SELF_CHECKING] = (ca_app, dispatcher_app, dist_app)
        app.add_subapp(CA_API_PREFIX, ca_app)
        app.add_subapp(DISPATCHER_PREFIX, dispatcher_app)
        app.add_subapp(DIST_API_PREFIX, dist_app)
        return app

    async def start(self) -> None:
        swarm = self.swarm
        assert swarm.local is not None
        host, port = split_addr(swarm.local.listen_addr)
        from shoal.manager.swarmnode import removed_node_ids

        self.removed.update(await asyncio.to_thread(removed_node_ids, swarm.store))
        ctx = server_context(swarm.certs.cert_path, swarm.certs.key_path, swarm.certs.root_pem())
        view = await asyncio.to_thread(swarm.ca_view)  # the child's start: off the event loop
        runner = web.AppRunner(self.make_app(view), access_log=None)
        await runner.setup()
        try:
            site = web.TCPSite(runner, host, port, ssl_context=ctx, reuse_address=True)
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ShoalError(f"failed to listen on remote API address {swarm.local.listen_addr}: "
                             f"{exc.strerror or exc}") from None
        self._runner = runner
        self._ssl = ctx
        self._active = ctx
        ctx.sni_callback = self._handover
        self._renewal = asyncio.create_task(self._renew_own_certificate())
        self._reconciler = asyncio.create_task(self._reconcile_rotation())
        log.info("shoald listening on tcp://%s (mutual TLS, cluster %s)", swarm.local.listen_addr,
                 swarm.local.cluster_id)

    async def _renew_own_certificate(self) -> None:
        """The manager's certificate renews itself at swarmkit's random 50-80% of its validity;
        the listener serves the new one to every connection from then on."""
        swarm = self.swarm
        while True:
            delay = (await asyncio.to_thread(swarm.own_facts)).identity.renew_after().total_seconds()
            await asyncio.sleep(delay)
            try:
                await asyncio.to_thread(swarm.renew_own_certificate)
                self._reload_certificate()
                log.info("renewed this manager's certificate")
            except ShoalError as exc:
                log.error("renewing this manager's certificate failed: %s", exc)
                await asyncio.sleep(RENEW_RETRY)

    def _handover(self, conn: ssl.SSLObject, _name: str | None, ctx: ssl.SSLContext) -> None:
        if self._active is not None and self._active is not ctx:
            conn.context = self._active

    def _reload_certificate(self) -> None:
        assert self._active is not None
        self._active.load_cert_chain(str(self.swarm.certs.cert_path), str(self.swarm.certs.key_path))

    async def rotate_ca(self, desired: Any = None) -> None:
        """`swarm ca --rotate`: the rotation begins (to `desired`, a root the user brought, or
        a new one), and this listener serves the manager's new certificate (new key,
        cross-signed chain) from the next handshake."""
        await asyncio.to_thread(self.swarm.begin_ca_rotation, desired)
        self._reload_certificate()
        log.info("root CA rotation started")

    async def _reconcile_rotation(self) -> None:
        """swarmkit's rotation reconciler: once every node that is not down holds a certificate
        from the new signer (manager/carotation.py decides), the rotation finishes and the
        listener trusts only the new root."""
        from shoal.manager import carotation

        swarm = self.swarm
        while True:
            await asyncio.sleep(RECONCILE_PERIOD)
            server = swarm.ca_server
            if server is None or not server.root_ca.rotating:
                continue  # no rotation: nothing read from disk or the store
            try:
                desired = server.desired
                nodes = await asyncio.to_thread(swarm.store.list, "node")
                if not carotation.may_finish(nodes, desired):
                    continue
                new_root = await asyncio.to_thread(swarm.finish_ca_rotation, server.root_ca.signing_cert_pem)
                self._active = server_context(swarm.certs.cert_path, swarm.certs.key_path, new_root.cert_pem)
                log.info("root CA rotation finished")
            except ShoalError as exc:
                log.error("root CA rotation: %s", exc)

    async def stop(self) -> None:
        for task in (self._renewal, self._reconciler):
            if task is not None:
                task.cancel()
        self._renewal = self._reconciler = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.swarm.ca_server = None
        self.swarm.ca_child.stop()  # it would leave by itself LINGER seconds later


def swarm_of(daemon: Daemon) -> SwarmNode:
    """The daemon's SwarmNode, made on first use."""
    found = getattr(daemon, "swarm", None)
    if found is None:
        found = SwarmNode(daemon.root, daemon.store, daemon.node_id)
        daemon.swarm = found  # type: ignore[attr-defined]
    return found


def apply_settings(daemon: Daemon) -> None:
    """The cluster's `swarm update` settings into the running dispatcher."""
    swarm = swarm_of(daemon)
    dispatcher = getattr(daemon, "dispatcher", None)
    if dispatcher is None or not swarm.initialised:
        return
    dispatcher.set_heartbeat_period(swarm.settings()["heartbeat_period"])
    dispatcher.managers = [swarm.manager_addr()]


async def start_listener(daemon: Daemon) -> ClusterListener | None:
    """After `swarm init` (and at shoald's start): serve the cluster if this node is its manager."""
    swarm = swarm_of(daemon)
    if not swarm.initialised:
        return None
    current = getattr(daemon, "cluster_listener", None)
    if current is not None:
        return current
    listener = ClusterListener(daemon, swarm)
    await listener.start()
    daemon.cluster_listener = listener  # type: ignore[attr-defined]
    apply_settings(daemon)
    return listener


async def stop_listener(daemon: Daemon) -> None:
    listener = getattr(daemon, "cluster_listener", None)
    if listener is not None:
        await listener.stop()
        daemon.cluster_listener = None  # type: ignore[attr-defined]


async def start_swarm(daemon: Daemon) -> None:
    """shoald's start: a manager serves the cluster; a worker renews its certificate before it
    expires (agent/join.py, swarmkit's random 50-80% moment) from its managers."""
    swarm = swarm_of(daemon)
    await start_listener(daemon)
    if swarm.is_worker and swarm.local is not None and swarm.local.managers:
        from shoal.agent.join import renewal_loop

        daemon.cert_renewal = asyncio.create_task(  # type: ignore[attr-defined]
            renewal_loop(swarm.local.managers[0], swarm.certs.directory, keys=swarm.certs.keys))


async def stop_swarm(daemon: Daemon) -> None:
    await stop_listener(daemon)
    renewal = getattr(daemon, "cert_renewal", None)
    if renewal is not None:
        renewal.cancel()
