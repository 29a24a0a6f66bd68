"""Images reach a node without a registry: the manager's image store served over the OCI
distribution API (image/distserver.py) in a process of its own (distserver_proc.py) behind real
TLS with the cluster's certificates (manager/ca.py), and a node's store pulling from it through
agent/imagefetch.py. Nothing is mocked: real stores, real certificates, real sockets."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import select
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from shoal.agent.imagefetch import ImageUnavailable, ensure_image, manager_source
from shoal.image import registry
from shoal.image.importer import import_tarball
from shoal.image.store import Image, ImageStore
from shoal.manager.ca import MANAGER_ROLE, WORKER_ROLE, CertStore, RootCA, init_cluster, new_node_id
from shoal.errors import InvalidArgument
from shoal.manager.imagepin import Pinned, deploy_image, digest_warning, display_image, pin_image
from shoal.tlsconfig import client_context

from conftest import make_busybox_rootfs_tar, tar_bytes  # tests/conftest.py (tests/cluster's is cluster.conftest)

PROC = Path(__file__).with_name("distserver_proc.py")
ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


REF = "localhost/busybox:test"

pytestmark = ROOT_ONLY  # unpacking layers keeps their owners


@dataclass
class Pki:
    root_ca: RootCA
    manager: CertStore  # serves
    worker: CertStore  # pulls
    stranger: CertStore  # a manager of another cluster
    other_org: CertStore  # this CA, another cluster ID

    def context(self, certs: CertStore | None) -> ssl.SSLContext:
        return client_context(self.root_ca.cert_pem, certs.cert_path if certs else None,
                              certs.key_path if certs else None)


@dataclass
class Server:
    url: str
    port: int
    store: ImageStore


def _node_certs(directory: Path, root_ca: RootCA, role: str, cluster_id: str) -> CertStore:
    certs = CertStore(directory)
    certs.save_root_ca(RootCA(root_ca.cert_pem))  # the public root only, as on a joined node
    cert, key = root_ca.issue(new_node_id(), role, cluster_id)
    certs.save_node(cert, key)
    return certs


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    manager = CertStore(base / "manager")
    root_ca, _, ident = init_cluster(manager)
    worker = _node_certs(base / "worker", root_ca, WORKER_ROLE, ident.cluster_id)
    stranger = CertStore(base / "stranger")
    init_cluster(stranger)
    other_org = _node_certs(base / "other-org", root_ca, WORKER_ROLE, new_node_id())
    return Pki(root_ca, manager, worker, stranger, other_org)


@contextmanager
def serve(pki: Pki, store: ImageStore) -> Iterator[Server]:
    proc = subprocess.Popen([sys.executable, str(PROC), "--certs", str(pki.manager.directory),
                             "--store", str(store.root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
        if not line.startswith("PORT "):
            proc.kill()
            raise AssertionError(f"distribution server did not start: {line!r} {proc.stderr.read()}")  # type: ignore[union-attr]
        port = int(line.split()[1])
        yield Server(f"https://127.0.0.1:{port}", port, store)
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def busybox_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_busybox_rootfs_tar(tmp_path_factory.mktemp("busybox") / "rootfs.tar")


def _served_store(root: Path, rootfs: Path) -> tuple[ImageStore, Image]:
    store = ImageStore(root)
    image = import_tarball(store, str(rootfs), REF)
    store.tag(image.id, "web:v1")
    return store, image


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, busybox_rootfs: Path) -> Iterator[tuple[ImageStore, Image]]:
    root = tmp_path_factory.mktemp("manager-store")
    yield _served_store(root / "image", busybox_rootfs)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def server(pki: Pki, served: tuple[ImageStore, Image]) -> Iterator[Server]:
    with serve(pki, served[0]) as srv:
        yield srv


@pytest.fixture
def node_store(tmp_path: Path) -> Iterator[ImageStore]:
    store = ImageStore(tmp_path / "node" / "image")
    yield store
    shutil.rmtree(tmp_path / "node", ignore_errors=True)


def http(pki: Pki, certs: CertStore | None) -> httpx.Client:
    return httpx.Client(verify=pki.context(certs), timeout=10)


def get(client: httpx.Client, server: Server, path: str, method: str = "GET") -> httpx.Response:
    return client.request(method, server.url + path, extensions={"sni_hostname": MANAGER_ROLE})


def raw_get(pki: Pki, server: Server, path: str, certs: CertStore | None) -> tuple[int, bytes]:
    """A request with its path sent byte for byte (httpx would normalise `..`)."""
    ctx = pki.context(certs)
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        with ctx.wrap_socket(sock, server_hostname=MANAGER_ROLE) as tls:
            tls.sendall(f"GET {path} HTTP/1.1\r\nHost: swarm-manager\r\nConnection: close\r\n\r\n".encode())
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def error_code(body: bytes) -> str:
    return str(json.loads(body)["errors"][0]["code"])


# --- pulling -------------------------------------------------------------------------------


def test_node_pulls_the_managers_image(pki: Pki, server: Server, served: tuple[ImageStore, Image],
                                       node_store: ImageStore) -> None:
    _, original = served
    image = ensure_image(node_store, REF, None, server.url, pki.context(pki.worker), registry_fallback=False)
    assert image.id == original.id
    assert image.manifest_digest == original.manifest_digest
    assert [(la.digest, la.diff_id, la.size) for la in image.layers] == \
        [(la.digest, la.diff_id, la.size) for la in original.layers]
    listed = node_store.list()
    assert [im.id for im in listed] == [original.id]
    assert REF in listed[0].repo_tags
    # The layer was unpacked from verified bytes: the busybox binary is there, whole.
    busybox = image.snapshot_dirs[0] / "bin" / "busybox"
    assert hashlib.sha256(busybox.read_bytes()).digest() == hashlib.sha256(Path("/bin/busybox").read_bytes()).digest()
    # A second call finds it locally.
    assert ensure_image(node_store, REF, None, None, None, registry_fallback=False).id == original.id
    # `shoal images` on that node shows it, as a user there types it.
    root = node_store.root.parent
    shown = subprocess.run([sys.executable, "-m", "shoal", "images"], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "SHOAL_ROOT": str(root), "SHOAL_RUN": str(root / "run")})
    assert shown.returncode == 0, shown.stderr
    assert re.search(rf"^localhost/busybox\s+test\s+{original.short_id}\s", shown.stdout, re.M), shown.stdout


def test_a_node_pulls_without_loading_httpx(pki: Pki, server: Server, served: tuple[ImageStore, Image],
                                           tmp_path: Path) -> None:
    """A node's shoald pulls over the aiohttp it has loaded (registry_client's aiohttp transport):
    httpx would stay in its memory, about 4 MiB. In a fresh process, as the worker's first pull."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from shoal.agent.imagefetch import ensure_image, manager_source\n"
        "from shoal.image.store import ImageStore\n"
        "url, ctx = manager_source([sys.argv[1]], Path(sys.argv[2]))\n"
        "image = ensure_image(ImageStore(Path(sys.argv[3])), sys.argv[4], None, url, ctx, registry_fallback=False)\n"
        "print(image.id, sorted(m for m in sys.modules if m.split('.')[0] in ('httpx', 'httpcore', 'h11')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code, f"127.0.0.1:{server.port}", str(pki.worker.directory),
                           str(tmp_path / "image"), REF], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split(" ", 1) == [served[1].id, "[]\n"]


def test_pinned_image_is_pulled_by_digest_and_tagged(pki: Pki, server: Server, served: tuple[ImageStore, Image],
                                                     node_store: ImageStore) -> None:
    store, original = served
    pinned = pin_image(store, "web:v1", query_registry=False)
    assert pinned.warning is None
    assert pinned.image == f"web:v1@{original.manifest_digest}"
    # As a joined node calls it: the manager address its session has, its certificates directory.
    url, ctx = manager_source([f"tcp://127.0.0.1:{server.port}"], pki.worker.directory)
    assert url == server.url
    image = ensure_image(node_store, pinned.image, None, url, ctx, registry_fallback=False)
    assert image.id == original.id
    assert "web:v1" in image.repo_tags
    assert f"web@{original.manifest_digest}" in image.repo_digests


def test_two_tasks_pull_once(pki: Pki, server: Server, served: tuple[ImageStore, Image],
                             node_store: ImageStore, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real_pull = registry.pull

    def counting_pull(*args: object, **kw: object) -> Image:
        calls.append(str(args[1]))
        return real_pull(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(registry, "pull", counting_pull)
    results: list[str] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def task() -> None:
        try:
            start.wait()
            results.append(ensure_image(node_store, REF, None, server.url, pki.context(pki.worker),
                                        registry_fallback=False).id)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=task) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    assert results == [served[1].id] * 4
    assert calls == [REF]


# --- refusals ------------------------------------------------------------------------------


def test_request_without_client_cert_refused(pki: Pki, server: Server) -> None:
    with http(pki, None) as client:
        for path in ("/v2/", f"/v2/localhost/busybox/manifests/test"):
            resp = get(client, server, path)
            assert resp.status_code == 403
            assert resp.json()["errors"][0]["code"] == "DENIED"
            assert "didn't present a valid peer certificate" in resp.json()["errors"][0]["message"]


def test_cert_of_another_cluster_refused(pki: Pki, server: Server, node_store: ImageStore) -> None:
    with http(pki, pki.stranger) as client:
        with pytest.raises((httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError)):
            get(client, server, "/v2/").raise_for_status()
    with pytest.raises(ImageUnavailable) as info:
        ensure_image(node_store, REF, None, server.url, pki.context(pki.stranger), registry_fallback=False)
    assert str(info.value).startswith(f"No such image: {REF} (pull failed from the manager: ")
    assert node_store.list() == []


def test_cert_of_another_organization_refused(pki: Pki, server: Server) -> None:
    with http(pki, pki.other_org) as client:
        resp = get(client, server, "/v2/")
    assert resp.status_code == 403
    assert "not part of organization" in resp.json()["errors"][0]["message"]


def test_client_checks_the_server_is_a_manager(pki: Pki, served: tuple[ImageStore, Image],
                                               node_store: ImageStore) -> None:
    """A worker's certificate, though from the cluster's CA, cannot serve images to nodes."""
    impostor = Pki(pki.root_ca, pki.worker, pki.worker, pki.stranger, pki.other_org)
    with serve(impostor, served[0]) as srv:
        with pytest.raises(ImageUnavailable) as info:
            ensure_image(node_store, REF, None, srv.url, pki.context(pki.worker), registry_fallback=False)
    assert "certificate" in str(info.value).lower() or "ssl" in str(info.value).lower()
    assert node_store.list() == []


@pytest.mark.parametrize("path, status, code", [
    # A digest with slashes is no route at all; encoded, it is no digest.
    ("/v2/localhost/busybox/blobs/sha256:../../../../etc/passwd", 404, "NAME_UNKNOWN"),
    ("/v2/localhost/busybox/blobs/sha256%3A..%2F..%2F..%2Findex.json", 404, None),
    ("/v2/localhost/busybox/blobs/..%2F..%2Findex.json", 404, "NAME_UNKNOWN"),
    ("/v2/localhost/busybox/blobs/..", 400, "DIGEST_INVALID"),
    ("/v2/localhost/busybox/blobs/sha256:..%00index.json", 400, "DIGEST_INVALID"),
    ("/v2/localhost/busybox/blobs/sha256:ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789", 400, "DIGEST_INVALID"),
    ("/v2/localhost/busybox/blobs/sha256:abc", 400, "DIGEST_INVALID"),
    ("/v2/localhost/busybox/manifests/sha256:zz", 400, "DIGEST_INVALID"),
    ("/v2/..%2F..%2Fetc/manifests/test", 400, "NAME_INVALID"),
    ("/v2/localhost/../../busybox/manifests/test", 400, "NAME_INVALID"),
    ("/v2/localhost/Busybox/manifests/test", 400, "NAME_INVALID"),
    ("/v2/localhost/busybox/manifests/.bad", 400, "TAG_INVALID"),
    ("/v2/localhost/busybox/manifests/" + "t" * 200, 400, "TAG_INVALID"),
    ("/v2/localhost/nothing/manifests/test", 404, "NAME_UNKNOWN"),
    ("/v2/localhost/busybox/manifests/nope", 404, "MANIFEST_UNKNOWN"),
    ("/v2/localhost/busybox/blobs/sha256:" + "0" * 64, 404, "BLOB_UNKNOWN"),
    ("/v2/localhost/busybox/blobs/sha512:" + "0" * 128, 404, "BLOB_UNKNOWN"),
    ("/v2/localhost/busybox/tags/list", 404, "NAME_UNKNOWN"),
])
def test_hostile_paths_refused(pki: Pki, server: Server, path: str, status: int, code: str | None) -> None:
    got, body = raw_get(pki, server, path, pki.worker)
    assert got == status, body
    if code is not None:
        assert error_code(body) == code
    assert b"root:" not in body and b"images" not in body


def test_only_blobs_of_images_are_served(pki: Pki, server: Server, served: tuple[ImageStore, Image]) -> None:
    """A file in the content store no image refers to (an ingest leftover, a planted file) is
    not served, even under its own digest; the index files are not reachable at all."""
    store = served[0]
    planted = b"not part of any image"
    digest = store.put_bytes(planted)
    try:
        status, body = raw_get(pki, server, f"/v2/localhost/busybox/blobs/{digest}", pki.worker)
        assert status == 404 and error_code(body) == "BLOB_UNKNOWN"
        index_digest = "sha256:" + hashlib.sha256(store.index_path.read_bytes()).hexdigest()
        status, body = raw_get(pki, server, f"/v2/localhost/busybox/blobs/{index_digest}", pki.worker)
        assert status == 404 and error_code(body) == "BLOB_UNKNOWN"
    finally:
        store.blob_path(digest).unlink()


def test_read_only(pki: Pki, server: Server) -> None:
    with http(pki, pki.worker) as client:
        for method, path in (("POST", "/v2/localhost/busybox/blobs/uploads/"),
                             ("PUT", "/v2/localhost/busybox/manifests/test"),
                             ("DELETE", "/v2/localhost/busybox/manifests/test"),
                             ("PATCH", "/v2/localhost/busybox/blobs/uploads/x")):
            resp = get(client, server, path, method)
            assert resp.status_code == 405, (method, path)
            assert resp.json()["errors"][0]["code"] == "UNSUPPORTED"


def test_spec_headers(pki: Pki, server: Server, served: tuple[ImageStore, Image]) -> None:
    store, image = served
    manifest = store.read_blob(image.manifest_digest)
    media_type = json.loads(manifest)["mediaType"]
    layer = image.layers[0]
    with http(pki, pki.worker) as client:
        version = get(client, server, "/v2/")
        assert version.status_code == 200
        assert version.headers["docker-distribution-api-version"] == "registry/2.0"
        for ref in ("test", image.manifest_digest):
            for method in ("HEAD", "GET"):
                resp = get(client, server, f"/v2/localhost/busybox/manifests/{ref}", method)
                assert resp.status_code == 200
                assert resp.headers["docker-content-digest"] == image.manifest_digest
                assert resp.headers["content-type"] == media_type
                assert int(resp.headers["content-length"]) == len(manifest)
                assert resp.content == (manifest if method == "GET" else b"")
        # The full name works as well as the familiar one.
        assert get(client, server, "/v2/docker.io/library/web/manifests/v1").content == manifest
        for method in ("HEAD", "GET"):
            resp = get(client, server, f"/v2/localhost/busybox/blobs/{layer.digest}", method)
            assert resp.status_code == 200
            assert resp.headers["docker-content-digest"] == layer.digest
            assert resp.headers["content-type"] == "application/octet-stream"
            assert int(resp.headers["content-length"]) == layer.size
            if method == "GET":
                assert "sha256:" + hashlib.sha256(resp.content).hexdigest() == layer.digest


def test_tampered_blob_refused_and_nothing_registered(pki: Pki, busybox_rootfs: Path, tmp_path: Path,
                                                      node_store: ImageStore) -> None:
    store, image = _served_store(tmp_path / "tampered" / "image", busybox_rootfs)
    blob = store.blob_path(image.layers[0].digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    blob.write_bytes(bytes(data))
    with serve(pki, store) as srv:
        with pytest.raises(ImageUnavailable) as info:
            ensure_image(node_store, REF, None, srv.url, pki.context(pki.worker), registry_fallback=False)
    message = str(info.value)
    assert message.startswith(f"No such image: {REF} (pull failed from the manager: ")
    assert f"filesystem layer verification failed for digest {image.layers[0].digest}" in message
    assert node_store.list() == []
    assert not node_store.has_blob(image.layers[0].digest)
    assert node_store._load_layers()["layers"] == {}  # noqa: SLF001 - nothing unpacked either


def test_a_failed_pull_takes_back_its_layers_and_keeps_a_shared_one(
        pki: Pki, server: Server, busybox_rootfs: Path, tmp_path: Path, node_store: ImageStore) -> None:
    """A node's pull from the manager that fails at its top layer removes the layer (and the
    config) it had stored, and keeps the base layer the node's other image uses."""
    ensure_image(node_store, REF, None, server.url, pki.context(pki.worker), registry_fallback=False)
    store, image = _served_store(tmp_path / "two" / "image", busybox_rootfs)
    mid = store.import_layer(io.BytesIO(tar_bytes({"etc/issue": b"mid\n" * 1000})))
    top = store.import_layer(io.BytesIO(tar_bytes({"etc/motd": b"hello\n" * 1000})))
    two = store.create_image(dict(image.config), [image.layers[0], mid, top], tags=["localhost/busybox:two"])
    blob = store.blob_path(top.digest)
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes
    blob.write_bytes(bytes(data))

    def contents() -> dict[str, list[str]]:
        return {d: sorted(os.listdir(node_store.root / d)) for d in ("blobs/sha256", "snapshots")}

    before = contents()
    with serve(pki, store) as srv:
        with pytest.raises(ImageUnavailable, match=f"filesystem layer verification failed for digest {top.digest}"):
            ensure_image(node_store, "localhost/busybox:two", two.manifest_digest, srv.url,
                         pki.context(pki.worker), registry_fallback=False)
    assert contents() == before
    assert all(d.is_dir() for d in node_store.resolve(REF).snapshot_dirs)


def test_tampered_manifest_refused(pki: Pki, busybox_rootfs: Path, tmp_path: Path,
                                   node_store: ImageStore) -> None:
    """A pinned digest is checked against the manifest's bytes, whoever serves them."""
    store, image = _served_store(tmp_path / "tampered" / "image", busybox_rootfs)
    path = store.blob_path(image.manifest_digest)
    manifest = json.loads(path.read_bytes())
    manifest["annotations"] = {"evil": "yes"}
    path.write_bytes(json.dumps(manifest).encode())
    with serve(pki, store) as srv:
        with pytest.raises(ImageUnavailable) as info:
            ensure_image(node_store, f"web:v1@{image.manifest_digest}", None, srv.url, pki.context(pki.worker),
                         registry_fallback=False)
    assert f"manifest verification failed for digest {image.manifest_digest}" in str(info.value)
    assert node_store.list() == []


def test_image_nobody_has(pki: Pki, server: Server, node_store: ImageStore) -> None:
    """Docker's task error, and why: neither the manager nor the registry had it (the registry
    here is a closed port on loopback, so the test never leaves the machine)."""
    ref = "127.0.0.1:9/nothing:v1"
    with pytest.raises(ImageUnavailable) as info:
        ensure_image(node_store, ref, None, server.url, pki.context(pki.worker))
    message = str(info.value)
    assert message.startswith(f"No such image: {ref} (pull failed from the manager: ")
    assert "repository 127.0.0.1:9/nothing not found" in message
    assert "; from 127.0.0.1:9: " in message and "connection refused" in message
    with pytest.raises(ImageUnavailable) as info:
        ensure_image(node_store, "localhost/busybox:other", None, server.url, pki.context(pki.worker),
                     registry_fallback=False)
    assert str(info.value) == ("No such image: localhost/busybox:other (pull failed from the manager: "
                               "manifest for localhost/busybox:other not found: manifest unknown: manifest unknown)")
    assert info.value.docker_message == "No such image: localhost/busybox:other"
    # No source to ask (a node outside a swarm, no registry): Docker's words alone, as today.
    with pytest.raises(ImageUnavailable) as info:
        ensure_image(node_store, "web:v9", None, None, None, registry_fallback=False)
    assert str(info.value) == "No such image: web:v9"
    with pytest.raises(ImageUnavailable) as info:
        ensure_image(node_store, "web:v9", "sha256:" + "0" * 63, None, None, registry_fallback=False)
    assert str(info.value).startswith("No such image: web:v9 (invalid checksum digest length")


# --- pinning -------------------------------------------------------------------------------


def test_pin_from_the_managers_store(served: tuple[ImageStore, Image]) -> None:
    store, image = served
    digest = image.manifest_digest
    assert pin_image(store, REF, query_registry=False).image == f"{REF}@{digest}"
    assert pin_image(store, "docker.io/library/web:v1", query_registry=False).image == f"web:v1@{digest}"
    # Already pinned: kept (familiar form), nothing asked.
    assert pin_image(store, f"docker.io/library/web:v2@{digest}").image == f"web:v2@{digest}"
    assert pin_image(store, f"web@{digest}").image == f"web@{digest}"


def test_unpinnable_image_warns_as_docker(served: tuple[ImageStore, Image]) -> None:
    pinned = pin_image(served[0], "127.0.0.1:9/nothing:v1")
    assert pinned.image == "127.0.0.1:9/nothing:v1"
    assert pinned.warning == (
        "image 127.0.0.1:9/nothing:v1 could not be accessed on a registry to record\n"
        "its digest. Each node will access 127.0.0.1:9/nothing:v1 independently,\n"
        "possibly leading to different nodes running different\n"
        "versions of the image.\n")
    assert pin_image(served[0], "web:v9", query_registry=False).warning == digest_warning("web:v9")


def test_display_strips_the_digest_as_docker_cli() -> None:
    digest = "sha256:" + "a" * 64
    assert display_image(f"web:v1@{digest}") == "web:v1"
    assert display_image(f"docker.io/library/web:v1@{digest}") == "web:v1"
    assert display_image(f"reg:5000/a/b:c@{digest}") == "reg:5000/a/b:c"
    assert display_image(f"web@{digest}") == f"web@{digest}"  # no tag: shown whole
    assert display_image("web") == "web"



def test_image_id_is_only_local(pki: Pki, server: Server, served: tuple[ImageStore, Image],
                                node_store: ImageStore) -> None:
    store, image = served
    tags = sorted(store.resolve(image.id).repo_tags)
    for form in (image.id, image.id.split(":", 1)[1]):
        assert ensure_image(store, form, None, None, None, registry_fallback=False).id == image.id
        with pytest.raises(ImageUnavailable) as info:
            ensure_image(node_store, form, None, server.url, pki.context(pki.worker), registry_fallback=False)
        assert str(info.value) == f"No such image: {form}"
    assert sorted(store.resolve(image.id).repo_tags) == tags  # never tagged with its own ID


# --- a registry as the other source --------------------------------------------------------


@pytest.fixture(scope="module")
def docker_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Debian's docker-registry on 127.0.0.1 (plain http: loopback registries are insecure by
    default, as in Docker), anonymous."""
    binary = Path("/usr/bin/docker-registry")
    if not binary.exists():
        pytest.skip("docker-registry is not installed")
    work = tmp_path_factory.mktemp("registry")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (work / "config.yml").write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {work / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([str(binary), "serve", str(work / "config.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        for _ in range(300):
            try:
                httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def test_pin_and_pull_from_a_registry_the_manager_lacks(pki: Pki, server: Server, docker_registry: str,
                                                        busybox_rootfs: Path, tmp_path: Path,
                                                        node_store: ImageStore) -> None:
    """An image only a registry has: the manager pins it to the registry's digest, the node asks
    the manager (which does not have it) and then the registry, and gets the same image."""
    pusher = ImageStore(tmp_path / "pusher" / "image")
    image = import_tarball(pusher, str(busybox_rootfs))
    ref = f"{docker_registry}/team/web:v1"
    pusher.tag(image.id, ref)
    digest = registry.push(pusher, ref, io.StringIO())
    empty_manager = ImageStore(tmp_path / "manager" / "image")
    pinned = pin_image(empty_manager, ref)
    assert pinned == Pinned(f"{ref}@{digest}")
    pulled = ensure_image(node_store, pinned.image, None, server.url, pki.context(pki.worker))
    assert pulled.id == image.id
    assert ref in pulled.repo_tags
    assert f"{docker_registry}/team/web@{digest}" in pulled.repo_digests


def test_a_pinned_service_never_moves_a_users_tag(pki: Pki, server: Server, served: tuple[ImageStore, Image],
                                                  busybox_rootfs: Path, tmp_path: Path) -> None:
    """The node's own web:v1 (a newer build, say) keeps its name; the service's image, pulled by
    digest, is there under its digest."""
    _, original = served
    node = ImageStore(tmp_path / "node2" / "image")
    own = import_tarball(node, str(busybox_rootfs), "web:v1", changes=["ENV BUILD=2"])
    assert own.id != original.id
    pinned = f"web:v1@{original.manifest_digest}"
    for _ in range(2):  # pulled, then found locally: neither moves the tag
        image = ensure_image(node, pinned, None, server.url, pki.context(pki.worker), registry_fallback=False)
        assert image.id == original.id
        assert node.resolve("web:v1").id == own.id
    assert f"web@{original.manifest_digest}" in node.resolve(pinned).repo_digests


def test_stack_deploy_resolve_image_modes(served: tuple[ImageStore, Image]) -> None:
    """docker/cli's deployServices: when a deploy pins, keeps the recorded pin, or leaves the
    image alone, and when it prints the warning (updates only)."""
    store, image = served
    pin = f"web:v1@{image.manifest_digest}"
    old_pin = "web:v1@sha256:" + "1" * 64
    # A new service: pinned unless never; no warning printed for a create, even unpinnable.
    assert deploy_image(store, "web:v1", query_registry=False) == Pinned(pin)
    assert deploy_image(store, "web:v1", resolve_image="changed", query_registry=False) == Pinned(pin)
    assert deploy_image(store, "web:v1", resolve_image="never") == Pinned("web:v1")
    assert deploy_image(store, "web:v9", query_registry=False) == Pinned("web:v9")
    # An existing service whose Compose image is unchanged (web:v1 rebuilt since its pin).
    kept = {"existing_image": old_pin, "existing_label": "web:v1", "query_registry": False}
    assert deploy_image(store, "web:v1", **kept) == Pinned(pin)  # type: ignore[arg-type]
    assert deploy_image(store, "web:v1", resolve_image="changed", **kept) == Pinned(old_pin)  # type: ignore[arg-type]
    assert deploy_image(store, "web:v1", resolve_image="never", **kept) == Pinned(old_pin)  # type: ignore[arg-type]
    # An existing service whose Compose image changed.
    moved = {"existing_image": old_pin, "existing_label": "web:v0", "query_registry": False}
    assert deploy_image(store, "web:v1", resolve_image="changed", **moved) == Pinned(pin)  # type: ignore[arg-type]
    assert deploy_image(store, "web:v1", resolve_image="never", **moved) == Pinned("web:v1")  # type: ignore[arg-type]
    assert deploy_image(store, "web:v9", **moved) == Pinned("web:v9", digest_warning("web:v9"))  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="^Invalid option sometimes for flag --resolve-image$"):
        deploy_image(store, "web:v1", resolve_image="sometimes")
