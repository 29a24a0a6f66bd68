"""The manager's CA service, as swarmkit's ca/server.go, over HTTPS: an aiohttp sub-application
that shoald mounts under its TCP listener at ca.CA_API_PREFIX (the listener's TLS context comes
from tlsconfig.server_context, client certificates optional).

    GET  /rootca  the root CA certificate (PEM). No authentication: the joining node checks it
                  against the digest in its join token.
    POST /join    {"CSR", "Token", "Hostname", "AdvertiseAddr"} -> a new node ID and certificate;
                  the role is the one whose token matched (constant-time comparison).
    POST /renew   {"CSR"} over mutual TLS with the node's current certificate -> a new
                  certificate with the same node ID and role (the role the manager records for
                  the node, when `role_of` is given: a worker cannot ask for a manager's).

A root rotation reaches the nodes through their sessions, as swarmkit's: `desired_digest` (the
cluster's desired TLSInfo, ca.tls_digest) rides on every heartbeat answer
(manager/dispatcher_http.py); a node whose own differs renews at once (agent/join.py).

shoald's CA signs in a child process (manager/cachild.py): its `root_ca` is then a CAView and
every CSR is checked and signed there; a RootCA (a test's process) signs here.
"""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from shoal.errors import ShoalError
from shoal.manager.ca import (BAD_TOKEN, MANAGER_ROLE, WORKER_ROLE, JoinTokens, RootCA,
                              desired_tls_info, new_node_id, parse_csr, tls_digest)
from shoal.manager.cachild import CAChild, CAView
from shoal.tlsconfig import CLUSTER_ID_KEY, require_node

MAX_BODY = 128 * 1024
MAX_HOSTNAME = 253  # a DNS name's limit; Docker takes the hostname from the OS


@dataclass(frozen=True)
class NodeJoin:
    """What the manager learns about a node as it joins; the daemon records it (its Node
    object) in on_node_joined, and may refuse the join by raising ShoalError."""

    node_id: str
    role: str
    hostname: str
    advertise_addr: str
    remote_addr: str | None


OnNodeJoined = Callable[[NodeJoin], Awaitable[None] | None]
RoleOf = Callable[[str], str | None]
# (node ID, certificate, root it trusts, its TLSInfo when the signer computed it): a thread
OnIssued = Callable[[str, bytes, bytes, "dict[str, str] | None"], None]


class CAServer:
    """The state the routes read. The daemon may replace `root_ca` (`swarm update
    --cert-expiry`) or rotate `tokens` while the routes serve."""

    def __init__(self, root_ca: RootCA | CAView, tokens: JoinTokens, on_node_joined: OnNodeJoined | None,
                 cluster_id: str, role_of: RoleOf | None = None, on_issued: OnIssued | None = None,
                 child: CAChild | None = None) -> None:
        if not root_ca.can_sign:
            raise ShoalError("the CA service needs the root CA key: this node is not a manager")
        self.child = child  # signs for a CAView
        self.root_ca = root_ca
        self.tokens = tokens
        self.on_node_joined = on_node_joined
        self.cluster_id = cluster_id
        self.role_of = role_of
        self.on_issued = on_issued

    @property
    def root_ca(self) -> RootCA | CAView:
        return self._root_ca

    @root_ca.setter
    def root_ca(self, value: RootCA | CAView) -> None:
        """A RootCA (a rotation that ran in the daemon) becomes a CAView when a child signs: the
        child reads the rotated root from disk, where it was saved first."""
        if isinstance(value, RootCA) and self.child is not None:
            value = CAView(value.cert_pem, value.signing_cert_pem, value.cert_expiry, desired_tls_info(value))
        self._root_ca = value
        # computed once per change, not per heartbeat: the heartbeats of every node carry it
        self.desired = value.desired if isinstance(value, CAView) else desired_tls_info(value)
        self.desired_digest = tls_digest(self.desired)

    async def check_csr(self, csr: bytes) -> None:
        if isinstance(self.root_ca, CAView):
            assert self.child is not None
            await asyncio.to_thread(self.child.call, "check_csr", csr=csr.decode())
        else:
            parse_csr(csr)

    async def sign(self, csr: bytes, node_id: str, role: str) -> tuple[bytes, dict[str, str] | None]:
        """The root signs (in the child, or here), or an external CA does (a request to CFSSL:
        its failure is the manager's, a 503, as swarmkit's "certificate signing failed").
        Returns the certificate, and its TLSInfo when the child computed it."""
        root_ca = self.root_ca
        if isinstance(root_ca, RootCA) and root_ca.external is None:
            return root_ca.sign_csr(csr, node_id, role, self.cluster_id), None
        try:
            if isinstance(root_ca, CAView):
                assert self.child is not None
                answer = await asyncio.to_thread(
                    self.child.call, "sign", csr=csr.decode(), node_id=node_id, role=role,
                    cluster_id=self.cluster_id, expiry=root_ca.cert_expiry.total_seconds())
                return str(answer["cert"]).encode(), dict(answer["tls_info"])
            return await asyncio.to_thread(root_ca.sign_csr, csr, node_id, role, self.cluster_id), None
        except ShoalError as exc:
            raise _error(web.HTTPServiceUnavailable, str(exc)) from None

    async def issued(self, node_id: str, cert: bytes, tls_info: dict[str, str] | None = None) -> None:
        if self.on_issued is not None:
            await asyncio.to_thread(self.on_issued, node_id, cert, self.root_ca.cert_pem, tls_info)


CA_SERVER_KEY = web.AppKey("shoal_ca_server", CAServer)


def _error(cls: type[web.HTTPException], message: str) -> web.HTTPException:
    return cls(text=json.dumps({"message": message}), content_type="application/json")


async def _body(request: web.Request) -> dict[str, Any]:
    size = request.content_length
    if size is None or size <= MAX_BODY:
        raw = await request.read()
        size = len(raw)
    if size > MAX_BODY:
        raise web.HTTPRequestEntityTooLarge(max_size=MAX_BODY, actual_size=size, content_type="application/json",
                                            text=json.dumps({"message": "request body too large"}))
    try:
        body = json.loads(raw)
    except ValueError:
        raise _error(web.HTTPBadRequest, "the request body is not JSON") from None
    if not isinstance(body, dict):
        raise _error(web.HTTPBadRequest, "the request body must be a JSON object")
    return body


def _text(body: dict[str, Any], key: str, limit: int, required: bool = True, lines: bool = False) -> str:
    value = body.get(key, "")
    if not isinstance(value, str) or len(value) > limit or (required and not value):
        raise _error(web.HTTPBadRequest, f"{key}: a string of at most {limit} characters is required")
    if any((ord(c) < 32 and not (lines and c in "\r\n")) or ord(c) == 127 for c in value):
        raise _error(web.HTTPBadRequest, f"{key}: control characters are not allowed")
    return value


async def _csr(server: CAServer, body: dict[str, Any]) -> bytes:
    csr = _text(body, "CSR", MAX_BODY, lines=True).encode()
    try:
        await server.check_csr(csr)
    except ShoalError as exc:
        raise _error(web.HTTPBadRequest, str(exc)) from None
    return csr


def _server(request: web.Request) -> CAServer:
    return request.config_dict[CA_SERVER_KEY]


async def get_root_ca(request: web.Request) -> web.Response:
    return web.Response(body=_server(request).root_ca.cert_pem, content_type="application/x-pem-file")


async def post_join(request: web.Request) -> web.Response:
    server = _server(request)
    body = await _body(request)
    token = body.get("Token")
    role = server.tokens.role_for(token) if isinstance(token, str) else None
    if role is None:
        raise _error(web.HTTPBadRequest, BAD_TOKEN)
    csr = await _csr(server, body)
    hostname = _text(body, "Hostname", MAX_HOSTNAME)
    advertise = _text(body, "AdvertiseAddr", 300, required=False)
    node_id = new_node_id()
    join = NodeJoin(node_id, role, hostname, advertise, request.remote)
    if server.on_node_joined is not None:
        try:
            result = server.on_node_joined(join)
            if inspect.isawaitable(result):
                await result
        except ShoalError as exc:
            raise _error(web.HTTPConflict, str(exc)) from None
    cert, tls_info = await server.sign(csr, node_id, role)
    await server.issued(node_id, cert, tls_info)
    return web.json_response({"NodeID": node_id, "Role": role, "ClusterID": server.cluster_id,
                              "Certificate": cert.decode(), "RootCA": server.root_ca.cert_pem.decode()})


async def post_renew(request: web.Request) -> web.Response:
    """The node's ID comes from its verified certificate, never from the request; its role from
    the manager's record of it when there is one, else from that certificate."""
    server = _server(request)
    ident = require_node(request)
    body = await _body(request)
    csr = await _csr(server, body)
    role: str | None = ident.role
    if server.role_of is not None:
        role = server.role_of(ident.node_id)
        if role is None:
            raise _error(web.HTTPForbidden, f"Permission denied: node {ident.node_id} was removed from swarm")
    if role not in (MANAGER_ROLE, WORKER_ROLE):
        raise _error(web.HTTPForbidden, f"Permission denied: unknown role {role!r}")
    cert, tls_info = await server.sign(csr, ident.node_id, role)
    await server.issued(ident.node_id, cert, tls_info)
    return web.json_response({"NodeID": ident.node_id, "Role": role, "ClusterID": server.cluster_id,
                              "Certificate": cert.decode(), "RootCA": server.root_ca.cert_pem.decode()})


def make_ca_app(ca: RootCA | CAView, tokens: JoinTokens, on_node_joined: OnNodeJoined | None, *,
                cluster_id: str, role_of: RoleOf | None = None, on_issued: OnIssued | None = None,
                child: CAChild | None = None) -> web.Application:
    """The CA routes, to mount with `app.add_subapp(CA_API_PREFIX, make_ca_app(...))`. The
    parent app should carry CLUSTER_ID_KEY too, for its own require_role checks."""
    app = web.Application(client_max_size=MAX_BODY)
    app[CA_SERVER_KEY] = CAServer(ca, tokens, on_node_joined, cluster_id, role_of, on_issued, child)
    app[CLUSTER_ID_KEY] = cluster_id
    app.router.add_get("/rootca", get_root_ca)
    app.router.add_post("/join", post_join)
    app.router.add_post("/renew", post_renew)
    return app
