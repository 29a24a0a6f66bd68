"""TLS between nodes, as swarmkit configures its gRPC: every node holds a certificate from the
cluster's CA, whose subject says its node ID, role and cluster (manager/ca.py).

- The manager's listener presents its node certificate and verifies a client certificate
  against the cluster CA when one is presented (CERT_OPTIONAL): a joining node has none yet and
  may still reach the join routes, and a certificate from any other CA fails the handshake.
  Routes that need a node call `require_role`.
- A node connects with its certificate and checks that the server's chains to the cluster CA and
  names the role it wants: the TLS server name is "swarm-manager" (or "swarm-ca"), never an IP,
  so only a manager's certificate (which has that SAN) passes, wherever the manager moved."""

from __future__ import annotations

import json

from aiohttp import web
from cryptography import x509

from shoal.errors import ShoalError
from shoal.manager.ca import MANAGER_ROLE, NodeIdentity, identity_of
# The contexts need only the standard library: a CLI command imports tlscontext alone.
from shoal.tlscontext import bootstrap_context, client_context, server_context  # noqa: F401 (re-exported)

# The cluster a listener serves: route handlers refuse certificates of any other (O = cluster ID).
CLUSTER_ID_KEY = web.AppKey("shoal_cluster_id", str)

def _forbidden(message: str) -> web.HTTPForbidden:
    return web.HTTPForbidden(text=json.dumps({"message": message}), content_type="application/json")


def peer_identity(request: web.Request) -> NodeIdentity | None:
    """The node the request's client certificate names, or None without one. The listener's
    handshake has already verified the chain to the cluster CA and the validity dates."""
    transport = request.transport
    ssl_object = transport.get_extra_info("ssl_object") if transport is not None else None
    if ssl_object is None:
        return None
    der = ssl_object.getpeercert(binary_form=True)
    if not der:
        return None
    try:
        return identity_of(x509.load_der_x509_certificate(der))
    except (ShoalError, ValueError):
        return None


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
    if ident.cluster_id != cluster_id:
        raise _forbidden(f"Permission denied: remote certificate not part of organization: {cluster_id}")
    return ident
