"""TLS between nodes, as swarmkit configures its gRPC: every node holds a certificate from the
cluster's CA, whose subject says its node ID, role and cluster (manager/ca.py).

- The manager's listener presents its node certificate and verifies a client certificate
  against the cluster CA when one is presented (CERT_OPTIONAL): a joining node has none yet and
  may still reach the join routes, and a certificate from any other CA fails the handshake.
  Routes that need a node call `require_role`.
- A node connects with its certificate and checks that the server's chains to the cluster CA and
  names the role it wants: the TLS server name is "swarm-manager" (or "swarm-ca"), never an IP,
  so only a manager's certificate (which has that SAN) passes, wherever the manager moved.

Nothing here loads cryptography: a peer's identity is read from the certificate the handshake
verified, as the ssl module decodes it."""

from __future__ import annotations

import datetime as dt
import json
import ssl
from typing import Any

from aiohttp import web

from shoal.manager.ca import MANAGER_ROLE, ROLES, NodeIdentity
# The contexts need only the standard library: a CLI command imports tlscontext alone.
from shoal.tlscontext import bootstrap_context, client_context, server_context  # noqa: F401 (re-exported)

# The cluster a listener serves: route handlers refuse certificates of any other (O = cluster ID).
CLUSTER_ID_KEY = web.AppKey("shoal_cluster_id", str)

# The nodes `node rm` removed (a callable: node ID -> removed?), on the listener's application:
# their certificates chain to the CA and are still valid, and are refused all the same, as
# swarmkit's authorizeOrg refuses the cluster's BlacklistedCertificates.
REMOVED_NODES_KEY = web.AppKey("shoal_removed_nodes", object)


def _forbidden(message: str, kind: str = "") -> web.HTTPForbidden:
    body = {"message": message, "kind": kind} if kind else {"message": message}
    return web.HTTPForbidden(text=json.dumps(body), content_type="application/json")


def peer_identity(request: web.Request) -> NodeIdentity | None:
    """The node the request's client certificate names, or None without one. The listener's
    handshake has already verified the chain to the cluster CA and the validity dates."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    # The decoded form exists only for a certificate the handshake verified (else {}).
    return identity_of_peercert(ssl_object.getpeercert())


def identity_of_peercert(cert: dict[str, Any] | None) -> NodeIdentity | None:
    """ca.identity_of for ssl's decoded certificate: exactly one CN (node ID), OU (role, one of
    the node roles) and O (cluster ID) in the subject, else None."""
    if not cert:
        return None
    found: dict[str, list[str]] = {}
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            found.setdefault(name, []).append(value)
    one = {k: v[0] for k, v in found.items() if len(v) == 1}
    try:
        node_id, role, cluster_id = one["commonName"], one["organizationalUnitName"], one["organizationName"]
        not_before = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notBefore"]), dt.timezone.utc)
        not_after = dt.datetime.fromtimestamp(ssl.cert_time_to_seconds(cert["notAfter"]), dt.timezone.utc)
    except (KeyError, ValueError):
        return None
    if role not in ROLES:
        return None
    return NodeIdentity(node_id, role, cluster_id, not_before, not_after)


def require_node(request: web.Request) -> NodeIdentity:
    """Any node of this cluster (swarmkit's AuthorizeOrgAndRole with both roles)."""
    return require_role(request, MANAGER_ROLE, "swarm-worker")


def require_role(request: web.Request, *roles: str) -> NodeIdentity:
    """The client's identity if its certificate has one of `roles` and belongs to this cluster;
    otherwise 403 with swarmkit's wording."""
    ident = peer_identity(request)
    if ident is None:
        raise _forbidden("Permission denied: peer didn't present a valid peer certificate")
    if ident.role not in roles:
        raise _forbidden(f"Permission denied: remote certificate not part of OUs: [{' '.join(roles)}]")
    cluster_id = request.config_dict.get(CLUSTER_ID_KEY)
    if cluster_id is None:
        raise _forbidden("Permission denied: this listener does not know its cluster")
    removed = request.config_dict.get(REMOVED_NODES_KEY)
    if callable(removed) and removed(ident.node_id):
        # kind "node_removed": the agent takes it as the manager's word that it was removed.
        raise _forbidden(f"Permission denied: node {ident.node_id} was removed from swarm", "node_removed")
    if ident.cluster_id != cluster_id:
        raise _forbidden(f"Permission denied: remote certificate not part of organization: {cluster_id}")
    return ident
