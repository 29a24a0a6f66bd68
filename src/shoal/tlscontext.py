"""The TLS contexts of the cluster's connections, built with the standard library alone.

tlsconfig.py (the listener's side: peer identities from certificates, aiohttp's request types)
re-exports them; a CLI command on a tcp:// context needs only a client context, and importing
tlsconfig's aiohttp and cryptography cost every such command about 0.3 s before it sent a byte
(python -X importtime), more than the rest of `service ps` together."""

from __future__ import annotations

import ssl
from pathlib import Path

# Modern AEAD suites only for TLS 1.2 (TLS 1.3's are all AEAD).
_TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def _base(ctx: ssl.SSLContext) -> ssl.SSLContext:
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(_TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION
    return ctx


def server_context(cert_path: Path, key_path: Path, ca_pem: bytes) -> ssl.SSLContext:
    """The manager's listener: presents the node certificate; a client certificate is optional
    but, when presented, must chain to the cluster CA or the handshake fails."""
    ctx = _base(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.load_cert_chain(str(cert_path), str(key_path))
    ctx.load_verify_locations(cadata=ca_pem.decode())
    ctx.verify_mode = ssl.CERT_OPTIONAL
    return ctx


def client_context(ca_pem: bytes, cert_path: Path | None = None,
                   key_path: Path | None = None) -> ssl.SSLContext:
    """A node's connection to a manager: trusts only the cluster CA, checks the server name
    (connect with server_hostname=MANAGER_ROLE), and presents the node certificate if given."""
    ctx = _base(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.load_verify_locations(cadata=ca_pem.decode())
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    if cert_path is not None:
        ctx.load_cert_chain(str(cert_path), str(key_path) if key_path else None)
    return ctx


def bootstrap_context() -> ssl.SSLContext:
    """Only for fetching the root CA before joining: the server is not verified here because
    the CA that would verify it is what is being fetched; the join token's digest checks the
    answer instead (swarmkit's GetRemoteCA uses InsecureSkipVerify the same way)."""
    ctx = _base(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx
