"""The CLI reaching a node over TCP and mutual TLS through a context (api/client.py): a real TLS
listener built as shoald's is (tlsconfig.server_context with a manager's certificate from the
cluster's CA, manager/ca.py), the real `shoal` CLI in a subprocess, real sockets on 127.0.0.1.

The listener answers /v1/version and /v1/events with what the handshake saw (the client
certificate's node ID and role), so each test checks what the server really received."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from shoal.manager.ca import MANAGER_ROLE, WORKER_ROLE, CertStore, RootCA, init_cluster, new_node_id
from shoal.tlsconfig import peer_identity, server_context


@dataclass
class Node:
    dir: Path
    cert: Path
    key: Path


@dataclass
class ClusterPKI:
    ca: Path
    root_ca: RootCA
    cluster_id: str
    manager: Node
    worker: Node


def _issue(root: RootCA, cluster_id: str, role: str, directory: Path) -> Node:
    cert, key = root.issue(new_node_id(), role, cluster_id)
    directory.mkdir(parents=True)
    (directory / "cert.pem").write_bytes(cert)
    (directory / "key.pem").write_bytes(key)
    os.chmod(directory / "key.pem", 0o600)
    return Node(directory, directory / "cert.pem", directory / "key.pem")


def make_pki(directory: Path) -> ClusterPKI:
    store = CertStore(directory / "certificates")
    root_ca, _tokens, manager = init_cluster(store)
    worker = _issue(root_ca, manager.cluster_id, WORKER_ROLE, directory / "worker")
    mgr = Node(store.directory, store.cert_path, store.key_path)
    return ClusterPKI(store.root_cert_path, root_ca, manager.cluster_id, mgr, worker)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ClusterPKI:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def other_pki(tmp_path_factory: pytest.TempPathFactory) -> ClusterPKI:
    return make_pki(tmp_path_factory.mktemp("pki-other"))


class TLSServer:
    """An aiohttp listener on 127.0.0.1 in a thread of its own, as shoald's TCP listener is
    configured; it records each request's peer identity."""

    def __init__(self, cert: Path, key: Path, ca: Path) -> None:
        self.ctx = server_context(cert, key, ca.read_bytes())
        self.seen: list[tuple[str, str | None]] = []  # (path, role) or, for other routes, (path, body)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _peer(self, request: web.Request) -> dict[str, str | None]:
        ident = peer_identity(request)
        self.seen.append((request.path, ident.role if ident else None))
        return {"node": ident.node_id if ident else None, "role": ident.role if ident else None}

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"Version": "test", **self._peer(request)})

    async def _events(self, request: web.Request) -> web.StreamResponse:
        peer = self._peer(request)
        resp = web.StreamResponse()
        await resp.prepare(request)
        for action in ("hello", "bye"):
            event = {"time": 1700000000, "type": "node", "action": action, "id": peer["node"], "name": peer["role"]}
            await resp.write(json.dumps(event).encode() + b"\n")
        await resp.write_eof()
        return resp

    async def _die(self, request: web.Request) -> web.Response:
        """A node that dies under the request: its connection goes, no answer, no TLS alert."""
        self._peer(request)
        assert request.transport is not None
        request.transport.abort()
        return web.Response()

    async def _other(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append((request.path, body.decode(errors="replace")))
        return web.json_response({"message": "not served by this test server"}, status=404)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        app = web.Application()
        app.router.add_get("/v1/version", self._version)
        app.router.add_get("/v1/events", self._events)
        app.router.add_delete("/v1/services/dying", self._die)
        app.router.add_route("*", "/{tail:.*}", self._other)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        site = web.SockSite(runner, sock, ssl_context=self.ctx)
        await site.start()
        self._stop = asyncio.Event()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> TLSServer:
        self._thread.start()
        assert self._ready.wait(10), "TLS server did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._stop is not None
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A CLI of its own: config dir and (empty) state root in tmp_path."""
    e = dict(os.environ, SHOAL_CONFIG=str(tmp_path / "cfg" / "config.json"), SHOAL_ROOT=str(tmp_path / "root"),
             SHOAL_RUN=str(tmp_path / "root" / "run"))
    for k in ("SHOAL_HOST", "SHOAL_CONTEXT", "SHOAL_CERT_PATH", "SHOAL_SOCKET"):
        e.pop(k, None)
    return e


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True, text=True, env=env, timeout=60)


def create(env: dict[str, str], name: str, port: int, ca: Path, node: Node | None) -> None:
    args = ["context", "create", name, "--host", f"tcp://127.0.0.1:{port}", "--tls-ca", str(ca)]
    if node is not None:
        args += ["--tls-cert", str(node.cert), "--tls-key", str(node.key)]
    proc = cli(env, *args)
    assert proc.returncode == 0, proc.stderr


def test_events_over_mutual_tls_with_the_context_certificate(pki: ClusterPKI, env: dict[str, str]) -> None:
    with TLSServer(pki.manager.cert, pki.manager.key, pki.ca) as srv:
        create(env, "remote", srv.port, pki.ca, pki.worker)
        proc = cli(env, "--context", "remote", "events", "--no-follow", "--format", "json")
        assert proc.returncode == 0, proc.stderr
        events = [json.loads(line) for line in proc.stdout.splitlines()]
        assert [e["Action"] for e in events] == ["hello", "bye"]
        # The server saw the worker's certificate: the client presented the context's key pair.
        assert events[0]["Actor"]["Attributes"]["name"] == WORKER_ROLE
        assert ("/v1/events", WORKER_ROLE) in srv.seen
        # `context use` makes it the default for later commands.
        assert cli(env, "context", "use", "remote").returncode == 0
        again = cli(env, "events", "--no-follow", "--format", "json")
        assert again.returncode == 0 and json.loads(again.stdout.splitlines()[0])["Actor"]["Attributes"]["name"] == WORKER_ROLE


def test_shoal_host_tcp_uses_cert_path(pki: ClusterPKI, env: dict[str, str], tmp_path: Path) -> None:
    certs = tmp_path / "certs"
    certs.mkdir()
    (certs / "ca.pem").write_bytes(pki.ca.read_bytes())
    (certs / "cert.pem").write_bytes(pki.worker.cert.read_bytes())
    (certs / "key.pem").write_bytes(pki.worker.key.read_bytes())
    with TLSServer(pki.manager.cert, pki.manager.key, pki.ca) as srv:
        e = dict(env, SHOAL_HOST=f"tcp://127.0.0.1:{srv.port}", SHOAL_CERT_PATH=str(certs))
        proc = cli(e, "events", "--no-follow", "--format", "json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout.splitlines()[0])["Actor"]["Attributes"]["name"] == WORKER_ROLE
        # -H on the command line does the same without the environment variable.
        e2 = dict(env, SHOAL_CERT_PATH=str(certs))
        proc = cli(e2, "-H", f"tcp://127.0.0.1:{srv.port}", "events", "--no-follow", "--format", "json")
        assert proc.returncode == 0, proc.stderr


def test_node_certificates_are_the_default_material(pki: ClusterPKI, env: dict[str, str]) -> None:
    """`context create --host tcp://...` with no --tls flags uses this node's own certificates
    (<state root>/certificates from swarm init/join) where they are, no copy in the context
    store: when the node's certificate is replaced (renewal, rotation), the context presents
    the new one."""
    certs = Path(env["SHOAL_ROOT"]) / "certificates"
    certs.mkdir(parents=True)
    (certs / "swarm-root-ca.crt").write_bytes(pki.ca.read_bytes())
    (certs / "swarm-node.crt").write_bytes(pki.worker.cert.read_bytes())
    (certs / "swarm-node.key").write_bytes(pki.worker.key.read_bytes())
    os.chmod(certs / "swarm-node.key", 0o600)
    with TLSServer(pki.manager.cert, pki.manager.key, pki.ca) as srv:
        assert cli(env, "context", "create", "mine", "--host", f"tcp://127.0.0.1:{srv.port}").returncode == 0
        proc = cli(env, "-c", "mine", "events", "--no-follow", "--format", "json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout.splitlines()[0])["Actor"]["Attributes"]["name"] == WORKER_ROLE
        # The node's certificate replaced in place (a manager's now): the context follows.
        (certs / "swarm-node.crt").write_bytes(pki.manager.cert.read_bytes())
        (certs / "swarm-node.key").write_bytes(pki.manager.key.read_bytes())
        proc = cli(env, "-c", "mine", "events", "--no-follow", "--format", "json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout.splitlines()[0])["Actor"]["Attributes"]["name"] == MANAGER_ROLE
    inspect = json.loads(cli(env, "context", "inspect", "mine").stdout)[0]
    assert inspect["Metadata"] == {"NodeCertificates": str(certs.absolute())}
    assert inspect["TLSMaterial"] == {}
    assert not Path(inspect["Storage"]["TLSPath"]).exists()  # the node's key is not copied


def test_server_with_a_worker_certificate_is_refused(pki: ClusterPKI, env: dict[str, str]) -> None:
    """Same CA, but not a manager: its certificate does not name swarm-manager, so the CLI
    refuses it (it could be any node of the cluster posing as the manager)."""
    with TLSServer(pki.worker.cert, pki.worker.key, pki.ca) as srv:
        create(env, "posing", srv.port, pki.ca, pki.worker)
        proc = cli(env, "-c", "posing", "events", "--no-follow")
        assert proc.returncode != 0
        assert "not a manager" in proc.stderr, proc.stderr
        assert srv.seen == []  # no request got through


def test_server_of_another_cluster_is_refused(pki: ClusterPKI, other_pki: ClusterPKI, env: dict[str, str]) -> None:
    with TLSServer(other_pki.manager.cert, other_pki.manager.key, other_pki.ca) as srv:
        create(env, "other", srv.port, pki.ca, pki.worker)
        proc = cli(env, "-c", "other", "events", "--no-follow")
        assert proc.returncode != 0
        assert "not a manager of the cluster" in proc.stderr, proc.stderr
        assert srv.seen == []


def test_client_certificate_of_another_cluster_fails_the_handshake(pki: ClusterPKI, other_pki: ClusterPKI,
                                                                   env: dict[str, str]) -> None:
    with TLSServer(pki.manager.cert, pki.manager.key, pki.ca) as srv:
        create(env, "foreign", srv.port, pki.ca, other_pki.worker)
        proc = cli(env, "-c", "foreign", "events", "--no-follow")
        assert proc.returncode != 0 and "TLS" in proc.stderr, proc.stderr
        assert srv.seen == []


def test_a_node_that_dies_under_a_request(pki: ClusterPKI, env: dict[str, str]) -> None:
    """The connection closed without an answer (shoald killed or stopped under the request),
    which TLS 1.3 cannot tell from a refused client certificate: both are named."""
    with TLSServer(pki.manager.cert, pki.manager.key, pki.ca) as srv:
        create(env, "dying", srv.port, pki.ca, pki.worker)
        proc = cli(env, "-c", "dying", "service", "rm", "dying")
        assert ("/v1/services/dying", "swarm-worker") in srv.seen
    assert proc.returncode == 1 and proc.stderr.splitlines()[-1] + "\n" == (
        f"TLS to tcp://127.0.0.1:{srv.port}: the node closed the connection without answering DELETE "
        "/services/dying (it stopped, or it refuses context 'dying''s client certificate): shoald sent no HTTP "
        "response\n"), proc.stderr


def test_unreachable_node_and_missing_ca(pki: ClusterPKI, env: dict[str, str]) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    create(env, "gone", port, pki.ca, pki.worker)
    proc = cli(env, "-c", "gone", "events", "--no-follow")
    assert proc.returncode != 0
    assert f"Cannot connect to shoald at tcp://127.0.0.1:{port}" in proc.stderr
    # A tcp:// context must carry the cluster's CA: without one nothing is trusted.
    proc = cli(env, "context", "create", "noca", "--host", f"tcp://127.0.0.1:{port}",
               "--tls-cert", str(pki.worker.cert), "--tls-key", str(pki.worker.key))
    assert proc.returncode != 0 and "--tls-ca" in proc.stderr
    assert "noca" not in cli(env, "context", "ls", "-q").stdout.split()


def test_local_only_commands_refuse_a_remote_context(pki: ClusterPKI, env: dict[str, str]) -> None:
    create(env, "far", _free_port(), pki.ca, pki.worker)
    assert cli(env, "context", "use", "far").returncode == 0
    # Only shoal's own repair commands, which act on this machine's state, are refused.
    for args in (["network", "reconcile"], ["container", "cleanup", "c"]):
        proc = cli(env, *args)
        assert proc.returncode != 0, args
        assert f"shoal {args[0]} against a remote node is not supported yet" in proc.stderr, proc.stderr
        assert "shoal context use default" in proc.stderr
    # The node commands go to the node (nobody listens there), never to this machine's store.
    for args in (["ps"], ["images"], ["image", "ls"], ["logs", "c"], ["save", "x"], ["history", "x"],
                 ["run", "busybox"], ["rm", "c"], ["exec", "c", "ls"], ["network", "ls"], ["network", "inspect", "n"],
                 ["network", "create", "-d", "overlay", "n"], ["network", "rm", "n"], ["network", "prune", "-f"],
                 ["image", "prune", "-f"], ["stats", "--no-stream"], ["pull", "x"], ["volume", "ls"], ["cp", "c:/a", "b"],
                 ["system", "df"], ["restart", "c"]):
        proc = cli(env, *args)
        assert proc.returncode != 0 and "Cannot connect to shoald at tcp://127.0.0.1:" in proc.stderr, (args, proc.stderr)
    # And back: the local socket again (no shoald here: ps lists nothing, runs locally).
    assert cli(env, "context", "use", "default").returncode == 0
    proc = cli(env, "context", "show")
    assert proc.stdout.strip() == "default"


# ---- a real shoald's cluster listener ----------------------------------------------------------

def _free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


@pytest.fixture(scope="module")
def real_manager(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[dict[str, str], int]]:
    """A shoald of its own (state root in tmp) that ran `swarm init` on 127.0.0.1:PORT."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    # tests/conftest.py by path: `from conftest import` may find tests/cluster/conftest.py in a
    # run that collects both directories.
    import importlib.util

    spec = importlib.util.spec_from_file_location("shoal_tests_root_conftest",
                                                  Path(__file__).resolve().parents[1] / "conftest.py")
    assert spec is not None and spec.loader is not None
    root_conftest = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(root_conftest)
    stop_daemon, teardown_root = root_conftest.stop_daemon, root_conftest.teardown_root

    base = tmp_path_factory.mktemp("mgr")
    root, run = base / "root", base / "root" / "run"
    env = dict(os.environ, SHOAL_ROOT=str(root), SHOAL_RUN=str(run), SHOAL_CONFIG=str(base / "cfg" / "config.json"))
    for k in ("SHOAL_HOST", "SHOAL_CONTEXT", "SHOAL_CERT_PATH", "SHOAL_SOCKET"):
        env.pop(k, None)
    root.mkdir()
    log = open(base / "shoald.log", "ab")
    daemon = subprocess.Popen([sys.executable, "-m", "shoal", "daemon"], env=env, stdout=log, stderr=log,
                              stdin=subprocess.DEVNULL)
    try:
        import time

        deadline = time.monotonic() + 60
        while cli(env, "info").returncode != 0:
            assert daemon.poll() is None and time.monotonic() < deadline, (base / "shoald.log").read_text()[-2000:]
            time.sleep(0.1)
        port = _free_port()
        init = cli(env, "swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", f"127.0.0.1:{port}")
        assert init.returncode == 0, init.stderr
        yield env, port
    finally:
        stop_daemon(run)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        teardown_root(root, run)


def test_real_shoald_over_tls_with_the_nodes_certificates(real_manager: tuple[dict[str, str], int]) -> None:
    """`context create --host tcp://...` on the manager itself takes its node certificate; the
    commands that reach a node then go over TCP and mutual TLS to shoald's cluster listener."""
    env, port = real_manager
    create = cli(env, "context", "create", "mgr", "--host", f"tcp://127.0.0.1:{port}")
    assert create.returncode == 0, create.stderr
    nodes = cli(env, "--context", "mgr", "node", "ls", "--format", "{{.Hostname}} {{.ManagerStatus}}")
    assert nodes.returncode == 0, nodes.stderr
    assert nodes.stdout.split() == [socket.gethostname(), "Leader"]
    services = cli(env, "-c", "mgr", "service", "ls")
    assert services.returncode == 0 and services.stdout.startswith("ID"), services.stderr
    # The unix socket answers the same (the default context), so both paths reach one daemon.
    assert cli(env, "node", "ls", "-q").stdout == cli(env, "-c", "mgr", "node", "ls", "-q").stdout


def test_real_shoald_refuses_another_clusters_certificate(real_manager: tuple[dict[str, str], int],
                                                          other_pki: ClusterPKI) -> None:
    env, port = real_manager
    # Trusting another cluster's CA: the real manager's certificate does not verify.
    create(env, "wrongca", port, other_pki.ca, other_pki.manager)
    proc = cli(env, "-c", "wrongca", "node", "ls")
    assert proc.returncode != 0 and "not a manager of the cluster" in proc.stderr, proc.stderr
    # The right CA but a client certificate of another cluster: the listener refuses it.
    certs = Path(env["SHOAL_ROOT"]) / "certificates"
    create(env, "foreignclient", port, certs / "swarm-root-ca.crt", other_pki.manager)
    proc = cli(env, "-c", "foreignclient", "node", "ls")
    assert proc.returncode != 0 and "TLS" in proc.stderr, proc.stderr


def test_stack_deploy_sends_no_local_paths_or_environment(pki: ClusterPKI, env: dict[str, str],
                                                          tmp_path: Path) -> None:
    """The manager may be another machine: a deploy to a tcp:// context loads the compose files
    here and never sends the client's file paths or environment (a secret in it stays here)."""
    compose = tmp_path / "compose.yml"
    compose.write_text("services:\n  web:\n    image: busybox\n    environment:\n      - A=${SECRET_X:-none}\n")
    with TLSServer(pki.manager.cert, pki.manager.key, pki.ca) as srv:
        create(env, "far", srv.port, pki.ca, pki.worker)
        proc = cli(dict(env, SHOAL_TOP_SECRET="s3cr3t-value"), "-c", "far", "stack", "deploy", "-c", str(compose), "st")
        assert proc.returncode != 0  # this server deploys nothing
        requests = [(path, str(body)) for path, body in srv.seen]
        assert requests, "the deploy never reached the node"
        assert not [p for p, _ in requests if p.endswith("/load")], requests
        assert not [b for _, b in requests if "s3cr3t-value" in b or str(compose) in b], requests
