"""A node's side of joining a swarm and renewing its certificate (swarmkit's DownloadRootCA,
GetRemoteSignedCertificate and the renewer), against manager/caserver.py.

Joining is trust on first use anchored in the token:
1. fetch the root CA over TLS without verifying the server (there is nothing to verify it with
   yet), and check its sha256 against the digest the join token carries: a man in the middle
   serving his own CA is caught here;
2. make a key, send a CSR with the token over TLS that now must chain to that CA with the server
   name "swarm-ca" (only managers' certificates carry it): a man in the middle serving the real
   CA's certificate (it is public) but his own server certificate is caught here;
3. check the certificate that comes back (issued by that CA, for our key) and only then write
   anything to disk.

Joining runs in the joining shoald, which exits right after (the supervisor or systemd starts it
again as a worker); renewal runs in a child process (agent/certchild.py), so that a worker's
long-lived shoald never loads cryptography: what it needs of its own certificate (expiry, ID,
TLSInfo digest) it reads from the NodeFacts stored beside it (manager/ca.py)."""

from __future__ import annotations

import asyncio
import hmac
import json
import ssl
from pathlib import Path
from collections.abc import Callable
from typing import Any

import aiohttp

from shoal.errors import ShoalError
from shoal.agent import certchild
from shoal.manager.ca import (CA_API_PREFIX, CA_ROLE, MANAGER_ROLE, MAX_PEM, CertStore, NodeFacts,
                              NodeIdentity, RootCA, generate_csr, parse_join_token, pem_digest)
from shoal.store.secretbox import KeySource
from shoal.tlscontext import bootstrap_context, client_context

DEFAULT_PORT = 2377
MAX_ANSWER = 4 * MAX_PEM  # a certificate and the root CA, JSON-quoted
ALREADY_JOINED = ('This node is already part of a swarm. Use "shoal swarm leave" to leave this swarm '
                  'and join another one.')


def base_url(manager_addr: str) -> str:
    """`HOST[:PORT]`, `[V6]:PORT` -> https://HOST:PORT (Swarm's port 2377 by default)."""
    addr = manager_addr.strip()
    if addr.startswith("tcp://"):
        addr = addr[len("tcp://"):]
    if not addr or "/" in addr or "@" in addr:
        raise ShoalError(f"invalid manager address {manager_addr!r}")
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else str(DEFAULT_PORT)
        host = f"[{host}]"
    elif addr.count(":") == 1:
        host, port = addr.split(":")
    elif ":" in addr:  # a bare IPv6 address
        host, port = f"[{addr}]", str(DEFAULT_PORT)
    else:
        host, port = addr, str(DEFAULT_PORT)
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ShoalError(f"invalid manager address {manager_addr!r}")
    return f"https://{host}:{int(port)}{CA_API_PREFIX}"


async def _call(session: aiohttp.ClientSession, method: str, url: str, manager_addr: str,
                ctx: ssl.SSLContext | None, server_hostname: str | None, body: dict[str, Any] | None = None) -> bytes:
    extra: dict[str, Any] = {"ssl": ctx} if ctx is not None else {}
    try:
        async with session.request(method, url, json=body, server_hostname=server_hostname, **extra) as resp:
            data = b""
            async for chunk in resp.content.iter_chunked(16384):
                data += chunk
                if len(data) > MAX_ANSWER:
                    raise ShoalError(f"the manager at {manager_addr} sent an answer too large to be one")
            if resp.status != 200:
                try:
                    message = str(json.loads(data)["message"])
                except (ValueError, KeyError, TypeError):
                    message = f"the manager at {manager_addr} answered HTTP {resp.status}"
                raise ShoalError(message)
            return data
    except aiohttp.ClientConnectorCertificateError as exc:
        raise ShoalError(f"the manager at {manager_addr} did not present a certificate of this swarm's "
                         f"CA for {server_hostname}: {exc.certificate_error}") from None
    except aiohttp.ClientConnectorError as exc:
        raise ShoalError(f"could not reach the manager at {manager_addr}: {exc.os_error.strerror or exc}") from None
    except aiohttp.ClientError as exc:
        raise ShoalError(f"the connection to the manager at {manager_addr} failed: {exc or type(exc).__name__}") from None
    except asyncio.TimeoutError:
        raise ShoalError(f"timed out talking to the manager at {manager_addr}") from None


def _json(data: bytes, manager_addr: str) -> dict[str, Any]:
    try:
        answer = json.loads(data)
        if isinstance(answer, dict) and isinstance(answer.get("Certificate"), str):
            return answer
    except ValueError:
        pass
    raise ShoalError(f"the manager at {manager_addr} sent an answer that is not a certificate")


async def fetch_root_ca(manager_addr: str, token: str, timeout: float = 20.0) -> RootCA:
    """The manager's root CA, accepted only if its digest is the one in the token."""
    parsed = parse_join_token(token)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        pem = await _call(session, "GET", base_url(manager_addr) + "/rootca", manager_addr,
                          bootstrap_context(), None)
    if not hmac.compare_digest(pem_digest(pem), parsed.root_digest):
        # swarmkit's words (ca/certificates.go GetRemoteCA)
        raise ShoalError(f"remote CA does not match fingerprint. Expected: {parsed.root_digest}")
    return RootCA(pem)


async def join(manager_addr: str, token: str, hostname: str, advertise_addr: str, cert_dir: Path,
               *, keys: KeySource | None = None, timeout: float = 20.0) -> NodeIdentity:
    """Join the swarm the token belongs to; the node's key, certificate and the root CA go to
    `cert_dir` (nothing is written unless every check passed)."""
    store = CertStore(Path(cert_dir), keys)
    if store.has_node_cert():
        raise ShoalError(ALREADY_JOINED)
    root_ca = await fetch_root_ca(manager_addr, token, timeout)
    csr, key = generate_csr()
    body = {"CSR": csr.decode(), "Token": token, "Hostname": hostname, "AdvertiseAddr": advertise_addr}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        data = await _call(session, "POST", base_url(manager_addr) + "/join", manager_addr,
                           client_context(root_ca.cert_pem), CA_ROLE, body)
    answer = _json(data, manager_addr)
    cert = answer["Certificate"].encode()
    try:
        ident = root_ca.verify_node_cert(cert)
    except ShoalError as exc:
        raise ShoalError(f"the manager at {manager_addr} sent a bad certificate: {exc}") from None
    if ident.node_id != answer.get("NodeID") or ident.cluster_id != answer.get("ClusterID"):
        raise ShoalError(f"the manager at {manager_addr} sent a certificate for another node")
    store.save_root_ca(root_ca)  # the certificate only: a joining node never gets the CA key here
    store.save_node(cert, key)  # refuses a certificate that is not for our key
    store.write_facts()  # for the worker this node becomes, which parses no certificate itself
    return ident


async def renew(manager_addr: str, cert_dir: Path, *, keys: KeySource | None = None,
                timeout: float = 20.0) -> NodeIdentity:
    """A new key and certificate over mutual TLS with the current one; ID and role kept. The
    old pair stays in place until the new one is checked."""
    store = CertStore(Path(cert_dir), keys)
    current = store.identity()
    root_ca = store.load_root_ca(with_key=False)
    csr, key = generate_csr()
    ctx = client_context(root_ca.cert_pem, store.cert_path, store.key_path)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        data = await _call(session, "POST", base_url(manager_addr) + "/renew", manager_addr,
                           ctx, MANAGER_ROLE, {"CSR": csr.decode()})
    answer = _json(data, manager_addr)
    cert = answer["Certificate"].encode()
    # After a root rotation the answer names the new root. The answer came over TLS verified
    # against the root we trust and from a manager's certificate (as swarmkit's dispatcher
    # pushes a new root to its agents), so the new root is taken, and the new certificate must
    # lead to it. A node holding the CA key (a manager) has its root changed by its daemon.
    new_root: RootCA | None = None
    if isinstance(answer.get("RootCA"), str) and answer["RootCA"].encode() != root_ca.cert_pem \
            and not store.has_root_key():
        new_root = RootCA(answer["RootCA"].encode())
    try:
        ident = (new_root or root_ca).verify_node_cert(cert)
    except ShoalError as exc:
        raise ShoalError(f"the manager at {manager_addr} sent a bad certificate: {exc}") from None
    if (ident.node_id, ident.cluster_id) != (current.node_id, current.cluster_id):
        raise ShoalError(f"the manager at {manager_addr} renewed the certificate for another node")
    store.save_node(cert, key)
    if new_root is not None:
        store.save_root_ca(new_root)
    return ident


class _TlsNews:
    """What this node's session last heard of the cluster's desired TLSInfo (ca.tls_digest, in
    the dispatcher's heartbeat answers), for its renewal loop; made by the loop, in its loop."""

    def __init__(self) -> None:
        self.digest: str | None = None
        self.changed = asyncio.Event()


_NEWS: dict[Path, _TlsNews] = {}


def tell_tls(cert_dir: Path, digest: str) -> None:
    """The session heard the cluster's desired TLSInfo digest (a heartbeat answer): wake the
    node's renewal loop when it changed. Nothing happens when no loop runs for `cert_dir`."""
    news = _NEWS.get(Path(cert_dir).resolve())
    if news is not None and news.digest != digest:
        news.digest = digest
        news.changed.set()


async def own_facts(cert_dir: Path) -> NodeFacts:
    """This node's certificate facts (identity, expiry, TLSInfo digest: its trusted root and
    its certificate's issuer): as stored beside the certificate, or parsed again in a child
    process when they are missing or describe other files."""
    facts = await asyncio.to_thread(CertStore(Path(cert_dir)).facts)
    if facts is None:
        facts = await certchild.run("facts", str(cert_dir))
    return facts


async def renewal_loop(manager_addr: str, cert_dir: Path, *, keys: KeySource | None = None,
                       retry: float = 30.0, on_renewed: Callable[[NodeIdentity], None] | None = None) -> None:
    """Renew the node certificate at swarmkit's random moment (50-80% of its validity), or at
    once when the session tells of a desired TLSInfo other than this node's (a root rotation
    under way: a certificate from the new key; or finished: the new root), forever; a failed
    attempt is retried after `retry` seconds. Cancel the task to stop it.

    The renewal itself (key, CSR, the manager's answer checked) runs in a child process
    (agent/certchild.py): this loop, in a worker's shoald, never loads cryptography. `keys` is
    not needed there: a renewal never writes a CA key."""
    loop = asyncio.get_running_loop()
    key = Path(cert_dir).resolve()
    news = _NEWS[key] = _TlsNews()
    try:
        while True:
            try:
                due = (await own_facts(cert_dir)).identity.renew_after().total_seconds()
            except ShoalError:
                await asyncio.sleep(retry)  # certificates being replaced under us: look again
                continue
            deadline = loop.time() + due
            while loop.time() < deadline:
                news.changed.clear()  # before the look: news arriving during it wakes the next wait
                if news.digest is not None:
                    try:
                        if news.digest != (await own_facts(cert_dir)).tls_digest:
                            break
                    except ShoalError:
                        pass  # certificates being replaced: the next news or the deadline
                try:
                    await asyncio.wait_for(news.changed.wait(), max(0.0, deadline - loop.time()))
                except asyncio.TimeoutError:
                    pass
            try:
                ident = (await certchild.run("renew", manager_addr, str(cert_dir))).identity
            except ShoalError:
                await asyncio.sleep(retry)  # the manager may be away; the current cert still works
                continue
            if on_renewed is not None:
                on_renewed(ident)
    finally:
        if _NEWS.get(key) is news:
            del _NEWS[key]
