"""The join handshake and node authentication over real TLS: the manager's CA service runs in a
process of its own (caserver_proc.py) on 127.0.0.1, nodes join and renew with agent/join.py,
and route checks run against the certificates they got. No TLS is mocked."""

from __future__ import annotations

import asyncio
import json
import os
import select
import socket
import ssl
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from cryptography import x509

from shoal.agent.join import base_url, join, renew
from shoal.errors import ShoalError
from shoal.manager.ca import (BAD_TOKEN, CA_API_PREFIX, MANAGER_ROLE, WORKER_ROLE, CertStore,
                              JoinTokens, NodeIdentity, RootCA, generate_csr, init_cluster,
                              load_certificates)
from shoal.tlsconfig import client_context, server_context

PROC = Path(__file__).with_name("caserver_proc.py")


@dataclass
class Cluster:
    store: CertStore
    root_ca: RootCA
    tokens: JoinTokens
    manager: NodeIdentity
    tokens_file: Path


@dataclass
class Server:
    addr: str
    port: int


def make_cluster(directory: Path) -> Cluster:
    store = CertStore(directory / "certificates")
    root_ca, tokens, manager = init_cluster(store)
    tokens_file = directory / "tokens.json"
    tokens_file.write_text(json.dumps(tokens.to_dict()))
    return Cluster(store, root_ca, tokens, manager, tokens_file)


@contextmanager
def serve(cluster: Cluster, serve_ca: Path | None = None) -> Iterator[Server]:
    cmd = [sys.executable, str(PROC), "--certs", str(cluster.store.directory),
           "--tokens", str(cluster.tokens_file)]
    if serve_ca is not None:
        cmd += ["--serve-ca", str(serve_ca)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
        if not line.startswith("PORT "):
            proc.kill()
            raise AssertionError(f"CA server did not start: {line!r} {proc.stderr.read()}")  # type: ignore[union-attr]
        port = int(line.split()[1])
        yield Server(f"127.0.0.1:{port}", port)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Cluster:
    return make_cluster(tmp_path_factory.mktemp("cluster-a"))


@pytest.fixture(scope="module")
def server(cluster: Cluster) -> Iterator[Server]:
    with serve(cluster) as srv:
        yield srv


def do_join(server: Server, token: str, directory: Path, hostname: str) -> NodeIdentity:
    return asyncio.run(join(server.addr, token, hostname, "127.0.0.1", directory))


async def _request(server: Server, method: str, path: str, store: CertStore | None,
                   root_ca: RootCA, hostname: str = MANAGER_ROLE,
                   body: dict[str, Any] | None = None) -> tuple[int, Any]:
    ctx = client_context(root_ca.cert_pem, store.cert_path if store else None,
                         store.key_path if store else None)
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"https://{server.addr}{path}", json=body, ssl=ctx,
                                   server_hostname=hostname) as resp:
            return resp.status, await resp.json()


def request(server: Server, method: str, path: str, store: CertStore | None, root_ca: RootCA,
            **kw: Any) -> tuple[int, Any]:
    return asyncio.run(_request(server, method, path, store, root_ca, **kw))


def assert_nothing_written(directory: Path) -> None:
    assert not directory.exists() or list(directory.iterdir()) == []


def test_join_as_worker(cluster: Cluster, server: Server, tmp_path: Path) -> None:
    certs = tmp_path / "certificates"
    ident = do_join(server, cluster.tokens.worker, certs, "worker-1")
    assert ident.role == WORKER_ROLE
    assert ident.cluster_id == cluster.manager.cluster_id
    assert len(ident.node_id) == 25 and ident.node_id != cluster.manager.node_id
    store = CertStore(certs)
    assert store.identity() == ident
    assert store.load_root_ca(with_key=False).cert_pem == cluster.root_ca.cert_pem
    assert not store.root_key_path.exists()  # a worker never holds the CA key
    # file modes: keys 0600 in a 0700 directory, nothing world-readable but public certs
    assert stat.S_IMODE(os.stat(certs).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(store.key_path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(store.cert_path).st_mode) == 0o644
    assert sorted(p.name for p in certs.iterdir()) == ["swarm-node-facts.json", "swarm-node.crt", "swarm-node.key",
                                                       "swarm-root-ca.crt"]
    # what the worker's shoald reads of its certificate instead of parsing it (public, as the cert)
    assert stat.S_IMODE(os.stat(store.facts_path).st_mode) == 0o644
    facts = store.facts()
    assert facts is not None and facts.identity == ident
    # the certificate authenticates the node on the manager's routes
    status, body = request(server, "GET", "/test/whoami", store, cluster.root_ca)
    assert status == 200
    assert body == {"NodeID": ident.node_id, "Role": WORKER_ROLE, "ClusterID": cluster.manager.cluster_id}
    san = load_certificates(store.cert_path.read_bytes())[0].extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
    assert san == [WORKER_ROLE, ident.node_id]


def test_join_as_manager(cluster: Cluster, server: Server, tmp_path: Path) -> None:
    certs = tmp_path / "certificates"
    ident = do_join(server, cluster.tokens.manager, certs, "manager-2")
    assert ident.role == MANAGER_ROLE
    status, body = request(server, "GET", "/test/manager-only", CertStore(certs), cluster.root_ca)
    assert (status, body) == (200, {"ok": True})


def test_worker_cert_refused_on_manager_route(cluster: Cluster, server: Server, tmp_path: Path) -> None:
    certs = tmp_path / "certificates"
    do_join(server, cluster.tokens.worker, certs, "worker-mo")
    status, body = request(server, "GET", "/test/manager-only", CertStore(certs), cluster.root_ca)
    assert status == 403
    assert body["message"] == "Permission denied: remote certificate not part of OUs: [swarm-manager]"
    # nor may a worker rotate the tokens
    status, _ = request(server, "POST", "/test/rotate/manager", CertStore(certs), cluster.root_ca)
    assert status == 403
    # without any certificate: refused as well
    status, body = request(server, "GET", "/test/whoami", None, cluster.root_ca)
    assert status == 403 and "didn't present a valid peer certificate" in body["message"]


def test_wrong_token(cluster: Cluster, server: Server, tmp_path: Path) -> None:
    certs = tmp_path / "certificates"
    # the right CA digest, a secret nobody issued
    digest = cluster.tokens.worker.split("-")[2]
    with pytest.raises(ShoalError, match=f"^{BAD_TOKEN}$"):
        do_join(server, f"SWMTKN-1-{digest}-{'0' * 24}1", certs, "intruder")
    assert_nothing_written(certs)
    with pytest.raises(ShoalError, match="^invalid join token$"):
        do_join(server, "SWMTKN-1-abc-def", certs, "intruder")
    assert_nothing_written(certs)


def test_duplicate_hostname_refused_by_the_manager(cluster: Cluster, server: Server, tmp_path: Path) -> None:
    do_join(server, cluster.tokens.worker, tmp_path / "one", "same-host")
    with pytest.raises(ShoalError, match='a node with hostname "same-host" is already in the swarm'):
        do_join(server, cluster.tokens.worker, tmp_path / "two", "same-host")
    assert_nothing_written(tmp_path / "two")


def test_already_joined(cluster: Cluster, server: Server, tmp_path: Path) -> None:
    do_join(server, cluster.tokens.worker, tmp_path / "c", "twice")
    with pytest.raises(ShoalError, match="already part of a swarm"):
        do_join(server, cluster.tokens.worker, tmp_path / "c", "twice-again")


def test_unreachable_manager(cluster: Cluster, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again when the block ends: nobody listens there
    with pytest.raises(ShoalError, match=f"could not reach the manager at 127.0.0.1:{port}"):
        asyncio.run(join(f"127.0.0.1:{port}", cluster.tokens.worker, "w", "127.0.0.1", tmp_path / "c", timeout=5))
    assert_nothing_written(tmp_path / "c")


def test_rotated_token(tmp_path: Path) -> None:
    cluster = make_cluster(tmp_path / "rot")
    with serve(cluster) as srv:
        old = cluster.tokens.worker
        joined = tmp_path / "joined"
        do_join(srv, old, joined, "before-rotation")
        status, body = request(srv, "POST", "/test/rotate/worker", cluster.store, cluster.root_ca)
        assert status == 200
        new = body["Token"]
        assert new != old and new.split("-")[2] == old.split("-")[2]  # same CA, new secret
        with pytest.raises(ShoalError, match=BAD_TOKEN):
            do_join(srv, old, tmp_path / "late", "after-rotation")
        assert_nothing_written(tmp_path / "late")
        assert do_join(srv, new, tmp_path / "late", "after-rotation").role == WORKER_ROLE
        # the node that joined with the old token keeps working: authenticated and renewing
        store = CertStore(joined)
        assert request(srv, "GET", "/test/whoami", store, cluster.root_ca)[0] == 200
        assert asyncio.run(renew(srv.addr, joined)).node_id == store.identity().node_id
        # the manager token was not touched
        assert do_join(srv, cluster.tokens.manager, tmp_path / "m", "mgr").role == MANAGER_ROLE


def test_mitm_with_another_ca_is_caught_by_the_token_digest(cluster: Cluster, tmp_path: Path) -> None:
    """A server that is not the cluster's manager, with a CA of its own: the token's digest
    does not match its CA, so the node refuses it before sending anything."""
    evil = make_cluster(tmp_path / "evil")
    with serve(evil) as srv:
        certs = tmp_path / "certificates"
        with pytest.raises(ShoalError, match=f"^remote CA does not match fingerprint. Expected: {cluster.root_ca.digest}$"):
            do_join(srv, cluster.tokens.worker, certs, "victim")
        assert_nothing_written(certs)


def test_mitm_serving_the_real_ca_cert_fails_tls(cluster: Cluster, tmp_path: Path) -> None:
    """The real CA certificate is public, so a man in the middle can serve it and pass the digest
    check; he does not have a manager certificate from that CA, so the TLS of the join fails and
    neither the token nor a CSR reaches him."""
    evil = make_cluster(tmp_path / "evil")
    real_ca = tmp_path / "real-ca.pem"
    real_ca.write_bytes(cluster.root_ca.cert_pem)
    with serve(evil, serve_ca=real_ca) as srv:
        certs = tmp_path / "certificates"
        with pytest.raises(ShoalError, match="did not present a certificate of this swarm's CA"):
            do_join(srv, cluster.tokens.worker, certs, "victim")
        assert_nothing_written(certs)


def test_cert_of_another_cluster_refused(cluster: Cluster, server: Server, tmp_path: Path) -> None:
    """A node of cluster B presents its certificate to cluster A's manager: the handshake fails
    (the certificate does not chain to A's CA), on every authenticated route."""
    other = make_cluster(tmp_path / "b")
    with serve(other) as b_srv:
        b_certs = tmp_path / "b-node"
        do_join(b_srv, other.tokens.manager, b_certs, "b-manager")
    b_store = CertStore(b_certs)
    for method, path in (("GET", "/test/whoami"), ("GET", "/test/manager-only"),
                         ("POST", CA_API_PREFIX + "/renew")):
        with pytest.raises(aiohttp.ClientError):
            request(server, method, path, b_store, cluster.root_ca, body={"CSR": generate_csr()[0].decode()})
    # renew() with B's certificate and A's CA at A's manager: refused, B's pair left as it was
    mixed = tmp_path / "mixed"
    mixed.mkdir(mode=0o700)
    for name in ("swarm-node.crt", "swarm-node.key"):
        (mixed / name).write_bytes((b_certs / name).read_bytes())
        os.chmod(mixed / name, 0o600)
    (mixed / "swarm-root-ca.crt").write_bytes(cluster.root_ca.cert_pem)
    before = (mixed / "swarm-node.crt").read_bytes()
    with pytest.raises(ShoalError, match="connection to the manager|could not reach"):
        asyncio.run(renew(server.addr, mixed))
    assert (mixed / "swarm-node.crt").read_bytes() == before


def test_cert_of_this_ca_for_another_organization_refused(cluster: Cluster, server: Server, tmp_path: Path) -> None:
    """Defence in depth: a certificate from the right CA whose O is another cluster ID is
    refused by the route check."""
    csr, key = generate_csr()
    cert = cluster.root_ca.sign_csr(csr, "x" * 25, MANAGER_ROLE, "othercluster0000000000000")
    store = CertStore(tmp_path / "forged")
    store.save_node(cert, key)
    status, body = request(server, "GET", "/test/whoami", store, cluster.root_ca)
    assert status == 403
    assert body["message"] == f"Permission denied: remote certificate not part of organization: {cluster.manager.cluster_id}"


def test_renewal_keeps_id_and_role(cluster: Cluster, server: Server, tmp_path: Path) -> None:
    certs = tmp_path / "certificates"
    ident = do_join(server, cluster.tokens.worker, certs, "renewer")
    store = CertStore(certs)
    old_cert = load_certificates(store.cert_path.read_bytes())[0]
    old_key = store.key_path.read_bytes()
    renewed = asyncio.run(renew(server.addr, certs))
    assert (renewed.node_id, renewed.role, renewed.cluster_id) == (ident.node_id, WORKER_ROLE, ident.cluster_id)
    new_cert = load_certificates(store.cert_path.read_bytes())[0]
    assert new_cert.serial_number != old_cert.serial_number
    assert store.key_path.read_bytes() != old_key  # a new key each renewal
    assert stat.S_IMODE(os.stat(store.key_path).st_mode) == 0o600
    assert [p.name for p in certs.iterdir() if p.name.startswith(".")] == []  # no temp files left
    # a worker asking for a manager certificate (or another ID) gets its own again
    status, body = request(server, "POST", CA_API_PREFIX + "/renew", store, cluster.root_ca,
                           body={"CSR": generate_csr()[0].decode(), "Role": MANAGER_ROLE,
                                 "NodeID": cluster.manager.node_id})
    assert status == 200 and (body["Role"], body["NodeID"]) == (WORKER_ROLE, ident.node_id)
    got = cluster.root_ca.verify_node_cert(body["Certificate"].encode())
    assert (got.role, got.node_id) == (WORKER_ROLE, ident.node_id)
    # a manager keeps its role too
    mgr = tmp_path / "mgr"
    m = do_join(server, cluster.tokens.manager, mgr, "renewing-manager")
    assert asyncio.run(renew(server.addr, mgr)).role == MANAGER_ROLE == m.role
    # renewal without a certificate is refused
    status, _ = request(server, "POST", CA_API_PREFIX + "/renew", None, cluster.root_ca,
                        body={"CSR": generate_csr()[0].decode()})
    assert status == 403


def test_removed_node_cannot_renew(cluster: Cluster, server: Server, tmp_path: Path) -> None:
    certs = tmp_path / "certificates"
    ident = do_join(server, cluster.tokens.worker, certs, "to-remove")
    assert request(server, "POST", f"/test/remove/{ident.node_id}", cluster.store, cluster.root_ca)[0] == 200
    with pytest.raises(ShoalError, match=f"node {ident.node_id} was removed from swarm"):
        asyncio.run(renew(server.addr, certs))


def test_worker_cannot_pose_as_manager(cluster: Cluster, server: Server, tmp_path: Path) -> None:
    """A client asks for server name "swarm-manager": a worker's certificate, though from the
    cluster's CA, does not carry it, so a worker cannot stand in for a manager."""
    certs = tmp_path / "certificates"
    do_join(server, cluster.tokens.worker, certs, "poser")
    store = CertStore(certs)

    async def attempt() -> None:
        srv = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", 0,
                                         ssl=server_context(store.cert_path, store.key_path, cluster.root_ca.cert_pem))
        port = srv.sockets[0].getsockname()[1]
        try:
            with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
                await asyncio.open_connection("127.0.0.1", port, ssl=client_context(cluster.root_ca.cert_pem),
                                              server_hostname=MANAGER_ROLE)
            # the same server passes for what it is: a worker of this cluster
            _, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_context(cluster.root_ca.cert_pem),
                                                      server_hostname=WORKER_ROLE)
            writer.close()
        finally:
            srv.close()
            await srv.wait_closed()

    asyncio.run(attempt())


def test_manager_address_forms() -> None:
    assert base_url("10.0.0.1") == f"https://10.0.0.1:2377{CA_API_PREFIX}"
    assert base_url("10.0.0.1:4000") == f"https://10.0.0.1:4000{CA_API_PREFIX}"
    assert base_url("[::1]:2377") == f"https://[::1]:2377{CA_API_PREFIX}"
    assert base_url("tcp://node-1") == f"https://node-1:2377{CA_API_PREFIX}"
    for bad in ("", "a:b", "host:0", "host:70000", "user@host", "h/x"):
        with pytest.raises(ShoalError, match="invalid manager address"):
            base_url(bad)


def _backdated(cluster: Cluster, store: CertStore, ident: NodeIdentity, days: int) -> None:
    """Replace the node's certificate by one the CA issued `days` ago (same ID and role)."""
    import datetime as dt

    csr, key = generate_csr()
    when = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)
    store.save_node(cluster.root_ca.sign_csr(csr, ident.node_id, ident.role, ident.cluster_id, now=when), key)


def test_expired_cert_refused(cluster: Cluster, server: Server, tmp_path: Path) -> None:
    certs = tmp_path / "certificates"
    ident = do_join(server, cluster.tokens.worker, certs, "expired")
    store = CertStore(certs)
    _backdated(cluster, store, ident, 91)
    with pytest.raises(aiohttp.ClientError):
        request(server, "GET", "/test/whoami", store, cluster.root_ca)
    with pytest.raises(ShoalError):
        asyncio.run(renew(server.addr, certs))


def test_renewal_loop_renews_when_due(cluster: Cluster, server: Server, tmp_path: Path) -> None:
    """A certificate past 80% of its life is renewed at once by the loop, ID and role kept."""
    from shoal.agent.join import renewal_loop

    certs = tmp_path / "certificates"
    ident = do_join(server, cluster.tokens.worker, certs, "due")
    store = CertStore(certs)
    _backdated(cluster, store, ident, 80)
    assert store.identity().renew_after().total_seconds() == 0

    async def run() -> NodeIdentity:
        done: asyncio.Future[NodeIdentity] = asyncio.get_running_loop().create_future()
        task = asyncio.create_task(renewal_loop(server.addr, certs, on_renewed=done.set_result))
        try:
            return await asyncio.wait_for(done, 30)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    renewed = asyncio.run(run())
    assert (renewed.node_id, renewed.role) == (ident.node_id, WORKER_ROLE)
    assert store.identity() == renewed
    assert store.identity().renew_after().total_seconds() > 40 * 24 * 3600  # next one in 45-72 days


def test_oversized_and_malformed_join_requests(cluster: Cluster, server: Server) -> None:
    status, _ = request(server, "POST", CA_API_PREFIX + "/join", None, cluster.root_ca, hostname="swarm-ca",
                        body={"CSR": "x" * 300_000, "Token": cluster.tokens.worker, "Hostname": "big"})
    assert status == 413
    status, body = request(server, "POST", CA_API_PREFIX + "/join", None, cluster.root_ca, hostname="swarm-ca",
                           body={"CSR": "not a csr", "Token": cluster.tokens.worker, "Hostname": "h"})
    assert status == 400 and "invalid CSR" in body["message"]
    status, body = request(server, "POST", CA_API_PREFIX + "/join", None, cluster.root_ca, hostname="swarm-ca",
                           body={"CSR": generate_csr()[0].decode(), "Token": cluster.tokens.worker,
                                 "Hostname": "evil\nhost"})
    assert status == 400 and body["message"] == "Hostname: control characters are not allowed"


def test_demoted_manager_renews_as_worker(cluster: Cluster, server: Server, tmp_path: Path) -> None:
    """The role of a renewed certificate is the one the manager records, not the one the old
    certificate says (swarmkit's issueRenewCertificate reads the node object)."""
    certs = tmp_path / "certificates"
    ident = do_join(server, cluster.tokens.manager, certs, "demoted")
    assert request(server, "POST", f"/test/demote/{ident.node_id}", cluster.store, cluster.root_ca)[0] == 200
    renewed = asyncio.run(renew(server.addr, certs))
    assert (renewed.node_id, renewed.role) == (ident.node_id, WORKER_ROLE)
    status, _ = request(server, "GET", "/test/manager-only", CertStore(certs), cluster.root_ca)
    assert status == 403


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion:DeprecationWarning")
def test_tls_versions(cluster: Cluster, server: Server) -> None:
    """TLS 1.2 and 1.3 are spoken; anything older is refused at the handshake."""
    ctx = client_context(cluster.root_ca.cert_pem, cluster.store.cert_path, cluster.store.key_path)
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2

    async def whoami() -> int:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"https://{server.addr}/test/whoami", ssl=ctx,
                                   server_hostname=MANAGER_ROLE) as resp:
                return resp.status

    assert asyncio.run(whoami()) == 200
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(cadata=cluster.root_ca.cert_pem.decode())
    old.set_ciphers("ALL:@SECLEVEL=0")
    old.minimum_version = ssl.TLSVersion.TLSv1
    old.maximum_version = ssl.TLSVersion.TLSv1_1
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw:
        with pytest.raises(ssl.SSLError):
            old.wrap_socket(raw, server_hostname=MANAGER_ROLE)


def test_root_ca_rotation(tmp_path: Path) -> None:
    """`swarm ca --rotate` as swarmkit does it: while rotating, certificates come from the new
    root's key with the new root cross-signed by the old, so nodes that trust only the old root
    keep working; when it finishes, the join tokens carry the new root's digest (the old tokens
    fail the fingerprint check) and nodes learn the new root at their next renewal."""
    cluster = make_cluster(tmp_path / "rot")
    old_root = cluster.root_ca
    with serve(cluster) as srv:
        w = tmp_path / "w"
        do_join(srv, cluster.tokens.worker, w, "before")
        assert request(srv, "POST", "/test/ca/rotate-begin", cluster.store, old_root)[0] == 200
        # joining during the rotation: same token, a certificate chained through the cross-signed root
        during = tmp_path / "during"
        do_join(srv, cluster.tokens.worker, during, "during")
        chain = load_certificates((during / "swarm-node.crt").read_bytes())
        assert len(chain) == 2 and chain[1].public_key() != old_root.cert.public_key()
        assert CertStore(during).load_root_ca(with_key=False).cert_pem == old_root.cert_pem
        assert request(srv, "GET", "/test/whoami", CertStore(during), old_root)[0] == 200
        # a node of before renews from the new key and still trusts only the old root
        asyncio.run(renew(srv.addr, w))
        assert len(load_certificates((w / "swarm-node.crt").read_bytes())) == 2
        assert CertStore(w).load_root_ca(with_key=False).cert_pem == old_root.cert_pem
        assert request(srv, "GET", "/test/whoami", CertStore(w), old_root)[0] == 200

        status, tokens = request(srv, "POST", "/test/ca/rotate-finish", cluster.store, old_root)
        assert status == 200 and tokens["Worker"] != cluster.tokens.worker
        with pytest.raises(ShoalError, match="remote CA does not match fingerprint"):
            do_join(srv, cluster.tokens.worker, tmp_path / "late", "late")
        assert_nothing_written(tmp_path / "late")
        assert do_join(srv, tokens["Worker"], tmp_path / "late", "late").role == WORKER_ROLE
        new_root = CertStore(tmp_path / "late").load_root_ca(with_key=False)
        assert new_root.cert_pem != old_root.cert_pem
        # the node of before learns the new root at its next renewal, and works with it alone
        asyncio.run(renew(srv.addr, w))
        assert CertStore(w).load_root_ca(with_key=False).cert_pem == new_root.cert_pem
        assert request(srv, "GET", "/test/whoami", CertStore(w), new_root)[0] == 200
        # the manager's store holds the new root and its key, and no rotation state
        assert cluster.store.load_root_ca().digest == new_root.digest
        assert not cluster.store.rotation_path.exists()
