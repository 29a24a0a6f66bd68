"""`shoal push` / `shoal pull` against a real registry (Debian's docker-registry on 127.0.0.1):
Docker's output lines, a round trip, digest references, an OCI index with the host's platform
chosen, cross-repository mounts, chunked uploads, skopeo interop, and the failures Docker
words (unknown tag or repository, unreachable registry, a registry serving bytes that do not
match their digest)."""

from __future__ import annotations

import gzip
import io
import json
import re
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from conftest import ROOT_ONLY, run_shoal, tar_bytes
from registry_helpers import free_port, run_registry, sha256_digest
from shoal.errors import NotFound, ShoalError
from shoal.image.registry import pull
from shoal.image.registry_client import RegistryUnreachable
from shoal.image.store import ImageStore

pytestmark = [ROOT_ONLY]

SHORT = r"[0-9a-f]{12}"
DIGEST = r"sha256:[0-9a-f]{64}"


class Shoal:
    """The CLI with its own state root and credentials file."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {"SHOAL_ROOT": str(root), "SHOAL_RUN": str(root / "run"),
                    "SHOAL_CONFIG": str(root / "config.json")}

    def __call__(self, *args: str, input: str | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
        return run_shoal(*args, input=input, check=check, env=self.env)


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with run_registry(tmp_path_factory.mktemp("registry")) as address:
        yield address


@pytest.fixture
def clean(tmp_path: Path) -> Shoal:
    """An empty store, so a pull really downloads."""
    return Shoal(tmp_path / "root")


@pytest.fixture(scope="module")
def pushed(registry: str, shoal, busybox_image: str) -> dict[str, str]:
    """localhost/busybox:test pushed as <registry>/web:v1 from the session store."""
    target = f"{registry}/web:v1"
    shoal("tag", busybox_image, target, check=True)
    proc = shoal("push", target, check=True)
    m = re.search(rf"^v1: digest: ({DIGEST}) size: (\d+)$", proc.stdout, re.M)
    assert m, proc.stdout
    image_id = json.loads(shoal("image", "inspect", busybox_image, check=True).stdout)[0]["Id"]
    return {"ref": target, "digest": m.group(1), "size": m.group(2), "id": image_id, "push_out": proc.stdout}


def test_push_prints_docker_lines_and_the_registry_has_the_manifest(registry: str, pushed: dict[str, str]) -> None:
    lines = pushed["push_out"].splitlines()
    assert lines[0] == f"The push refers to repository [{registry}/web]"
    assert any(re.fullmatch(rf"{SHORT}: Pushed", line) for line in lines), lines
    assert lines[-1] == f"v1: digest: {pushed['digest']} size: {pushed['size']}"
    # What the registry serves is byte for byte the manifest whose digest was printed.
    resp = httpx.get(f"http://{registry}/v2/web/manifests/v1",
                     headers={"Accept": "application/vnd.oci.image.manifest.v1+json, "
                                        "application/vnd.docker.distribution.manifest.v2+json"})
    assert resp.status_code == 200
    assert sha256_digest(resp.content) == pushed["digest"]
    assert len(resp.content) == int(pushed["size"])
    manifest = resp.json()
    for blob in [manifest["config"]] + manifest["layers"]:
        head = httpx.head(f"http://{registry}/v2/web/blobs/{blob['digest']}")
        assert head.status_code == 200 and int(head.headers["content-length"]) == blob["size"]


def test_push_again_says_layer_already_exists(shoal, pushed: dict[str, str]) -> None:
    proc = shoal("push", pushed["ref"], check=True)
    assert re.search(rf"^{SHORT}: Layer already exists$", proc.stdout, re.M), proc.stdout
    assert f"v1: digest: {pushed['digest']} size: {pushed['size']}" in proc.stdout


def test_pull_round_trip_into_an_empty_store(clean: Shoal, registry: str, pushed: dict[str, str]) -> None:
    proc = clean("pull", pushed["ref"], check=True)
    lines = proc.stdout.splitlines()
    assert lines[0] == "v1: Pulling from web"
    assert any(re.fullmatch(rf"{SHORT}: Pull complete", line) for line in lines), lines
    assert f"Digest: {pushed['digest']}" in lines
    assert f"Status: Downloaded newer image for {pushed['ref']}" in lines
    assert lines[-1] == pushed["ref"]

    info = json.loads(clean("image", "inspect", pushed["ref"], check=True).stdout)[0]
    assert info["Id"] == pushed["id"]
    assert info["RepoTags"] == [pushed["ref"]]
    assert info["RepoDigests"] == [f"{registry}/web@{pushed['digest']}"]
    # The pulled root filesystem is there: the layer was unpacked.
    listing = clean("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", check=True).stdout
    assert f"{pushed['ref']} {pushed['id'][7:19]}" in listing

    again = clean("pull", pushed["ref"], check=True)
    assert "Pull complete" not in again.stdout
    assert f"Status: Image is up to date for {pushed['ref']}" in again.stdout


def test_pull_by_digest(clean: Shoal, registry: str, pushed: dict[str, str]) -> None:
    ref = f"{registry}/web@{pushed['digest']}"
    proc = clean("pull", ref, check=True)
    assert proc.stdout.splitlines()[0] == f"{pushed['digest']}: Pulling from web"
    assert f"Status: Downloaded newer image for {ref}" in proc.stdout
    info = json.loads(clean("image", "inspect", ref, check=True).stdout)[0]
    assert info["Id"] == pushed["id"] and info["RepoTags"] == []


def test_pull_quiet_prints_only_the_reference(clean: Shoal, pushed: dict[str, str]) -> None:
    proc = clean("pull", "-q", pushed["ref"], check=True)
    assert proc.stdout == pushed["ref"] + "\n"


def test_unknown_tag_and_repository(clean: Shoal, registry: str) -> None:
    proc = clean("pull", f"{registry}/web:nope")
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"Error: manifest for {registry}/web:nope not found: manifest unknown: manifest unknown"
    proc = clean("pull", f"{registry}/no/such/repo")
    assert proc.returncode == 1
    assert proc.stdout.startswith("Using default tag: latest")
    assert f"manifest for {registry}/no/such/repo:latest not found" in proc.stderr
    assert clean("images", "-q").stdout == ""


def test_push_of_an_image_that_is_not_there(clean: Shoal, registry: str) -> None:
    proc = clean("push", f"{registry}/ghost:v1")
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"Error: An image does not exist locally with the tag: {registry}/ghost"


def test_unreachable_registry(clean: Shoal) -> None:
    port = free_port()  # nothing listens there
    proc = clean("pull", f"127.0.0.1:{port}/web:v1")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f'Error: Get "http://127.0.0.1:{port}/v2/": '
                                   f"dial tcp 127.0.0.1:{port}: connect: connection refused")


def test_cross_repository_mount(shoal, registry: str, pushed: dict[str, str]) -> None:
    target = f"{registry}/other/app:v1"
    shoal("tag", pushed["ref"], target, check=True)
    proc = shoal("push", target, check=True)
    assert re.search(rf"^{SHORT}: Mounted from web$", proc.stdout, re.M), proc.stdout
    # Same manifest bytes, same digest, now in the other repository too.
    assert f"v1: digest: {pushed['digest']} size: {pushed['size']}" in proc.stdout
    layer = httpx.get(f"http://{registry}/v2/other/app/manifests/v1",
                      headers={"Accept": "application/vnd.oci.image.manifest.v1+json"}).json()["layers"][0]
    assert httpx.head(f"http://{registry}/v2/other/app/blobs/{layer['digest']}").status_code == 200


def _gzip_layer(files: dict[str, bytes]) -> tuple[bytes, str]:
    """A gzip layer blob and its diff_id."""
    raw = tar_bytes(files)
    return gzip.compress(raw, mtime=0), sha256_digest(raw)


def _upload(registry: str, repo: str, data: bytes) -> str:
    digest = sha256_digest(data)
    start = httpx.post(f"http://{registry}/v2/{repo}/blobs/uploads/")
    assert start.status_code == 202
    location = httpx.URL(f"http://{registry}").join(start.headers["location"])
    put = httpx.put(location.copy_add_param("digest", digest), content=data,
                    headers={"Content-Type": "application/octet-stream"})
    assert put.status_code == 201, put.text
    return digest


OCI_TYPES = {"manifest": "application/vnd.oci.image.manifest.v1+json",
             "config": "application/vnd.oci.image.config.v1+json",
             "layer": "application/vnd.oci.image.layer.v1.tar+gzip",
             "index": "application/vnd.oci.image.index.v1+json"}
DOCKER_TYPES = {"manifest": "application/vnd.docker.distribution.manifest.v2+json",
                "config": "application/vnd.docker.container.image.v1+json",
                "layer": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "index": "application/vnd.docker.distribution.manifest.list.v2+json"}


def _put_image(registry: str, repo: str, arch: str, content: bytes, types: dict[str, str]) -> tuple[bytes, str]:
    """A one-layer image for linux/<arch> (OCI or Docker media types), uploaded with plain HTTP."""
    layer, diff_id = _gzip_layer({"arch.txt": content})
    layer_digest = _upload(registry, repo, layer)
    config = json.dumps({"architecture": arch, "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
    config_digest = _upload(registry, repo, config)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": types["manifest"],
        "config": {"mediaType": types["config"], "digest": config_digest, "size": len(config)},
        "layers": [{"mediaType": types["layer"], "digest": layer_digest, "size": len(layer)}],
    }).encode()
    digest = sha256_digest(manifest)
    resp = httpx.put(f"http://{registry}/v2/{repo}/manifests/{digest}", content=manifest,
                     headers={"Content-Type": types["manifest"]})
    assert resp.status_code == 201, resp.text
    return manifest, config_digest


@pytest.mark.parametrize("types", [OCI_TYPES, DOCKER_TYPES], ids=["oci-index", "docker-manifest-list"])
def test_index_pull_chooses_the_host_platform(clean: Shoal, registry: str, types: dict[str, str]) -> None:
    repo = "multi-oci" if types is OCI_TYPES else "multi-docker"
    arm, arm_config = _put_image(registry, repo, "arm64", b"arm64\n", types)
    amd, amd_config = _put_image(registry, repo, "amd64", b"amd64\n", types)
    index = json.dumps({
        "schemaVersion": 2, "mediaType": types["index"],
        "manifests": [
            {"mediaType": types["manifest"], "digest": sha256_digest(arm),
             "size": len(arm), "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
            {"mediaType": types["manifest"], "digest": sha256_digest(amd),
             "size": len(amd), "platform": {"os": "linux", "architecture": "amd64"}},
        ],
    }).encode()
    resp = httpx.put(f"http://{registry}/v2/{repo}/manifests/v1", content=index,
                     headers={"Content-Type": types["index"]})
    assert resp.status_code == 201, resp.text
    ref = f"{registry}/{repo}:v1"
    proc = clean("pull", ref, check=True)
    # Docker reports (and records) the index's digest.
    assert f"Digest: {sha256_digest(index)}" in proc.stdout
    info = json.loads(clean("image", "inspect", ref, check=True).stdout)[0]
    host_is_amd64 = subprocess.run(["uname", "-m"], capture_output=True, text=True).stdout.strip() == "x86_64"
    assert info["Id"] == (amd_config if host_is_amd64 else arm_config)
    assert info["RepoDigests"] == [f"{registry}/{repo}@{sha256_digest(index)}"]
    # The image manifest is kept as served: same bytes, same digest.
    stored = clean.root / "image" / "blobs" / "sha256" / sha256_digest(amd if host_is_amd64 else arm)[7:]
    assert stored.read_bytes() == (amd if host_is_amd64 else arm)
    # --platform picks the other one.
    other = clean("pull", "--platform", "linux/arm64", ref, check=True)
    assert "Downloaded newer image" in other.stdout
    info = json.loads(clean("image", "inspect", ref, check=True).stdout)[0]
    assert info["Id"] == arm_config
    missing = clean("pull", "--platform", "linux/s390x", ref)
    assert missing.returncode == 1
    assert "no matching manifest for linux/s390x in the manifest list entries" in missing.stderr


def test_chunked_upload_protocol(registry: str, tmp_path: Path) -> None:
    """The PATCH + Content-Range path, forced with a small threshold, ends in the same blob."""
    from shoal.image.registry_client import RegistryClient

    data = bytes(range(256)) * 4000 + b"tail"  # ~1 MB, 4 chunks of 300 kB
    digest = sha256_digest(data)
    with RegistryClient(registry, "chunked", ("pull", "push")) as client:
        assert client.blob_size(digest) is None
        mounted, location = client.start_upload()
        assert not mounted and location
        seen: list[int] = []
        client.upload_blob(location, digest, io.BytesIO(data), len(data), on_progress=seen.append,
                           chunk_threshold=1000, chunk_size=300_000)
        assert client.blob_size(digest) == len(data)
        assert seen[-1] == len(data)
        with client.open_blob(digest) as resp:
            assert resp.read() == data


class _LyingRegistry:
    """A hand-written registry. `evil` serves a manifest whose layer bytes do not hash to the
    layer's digest; `flaky` serves the right bytes but cuts the first layer download short."""

    def __init__(self) -> None:
        self.layer, diff_id = _gzip_layer({"good.txt": b"the real content\n"})
        self.layer_digest = sha256_digest(self.layer)
        self.config = json.dumps({"architecture": "amd64", "os": "linux",
                                  "rootfs": {"type": "layers", "diff_ids": [diff_id]}}).encode()
        self.manifest = json.dumps({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256_digest(self.config), "size": len(self.config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": self.layer_digest, "size": len(self.layer)}],
        }).encode()
        tampered = bytearray(self.layer)
        tampered[len(tampered) // 2] ^= 0xFF  # same size, different bytes
        routes = {
            "/v2/": (b"{}", "application/json"),
            "/v2/evil/manifests/v1": (self.manifest, "application/vnd.oci.image.manifest.v1+json"),
            f"/v2/evil/blobs/{self.layer_digest}": (bytes(tampered), "application/octet-stream"),
            f"/v2/evil/blobs/{sha256_digest(self.config)}": (self.config, "application/octet-stream"),
            # Asked for by a digest that is not the digest of what comes back.
            "/v2/evil/manifests/sha256:" + "0" * 64: (self.manifest, "application/vnd.oci.image.manifest.v1+json"),
            "/v2/flaky/manifests/v1": (self.manifest, "application/vnd.oci.image.manifest.v1+json"),
            f"/v2/flaky/blobs/{self.layer_digest}": (self.layer, "application/octet-stream"),
            f"/v2/flaky/blobs/{sha256_digest(self.config)}": (self.config, "application/octet-stream"),
        }
        self.cut_short = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                body, ctype = routes.get(self.path, (None, None))
                if body is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.path == f"/v2/flaky/blobs/{server.layer_digest}" and server.cut_short == 0:
                    server.cut_short += 1
                    self.wfile.write(body[: len(body) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.address = f"127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "_LyingRegistry":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def test_digest_mismatch_stores_and_tags_nothing(clean: Shoal) -> None:
    with _LyingRegistry() as evil:
        proc = clean("pull", f"{evil.address}/evil:v1")
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"Error: filesystem layer verification failed for digest {evil.layer_digest}"
    blobs = clean.root / "image" / "blobs" / "sha256"
    assert not (blobs / evil.layer_digest.split(":")[1]).exists()
    ingest = clean.root / "image" / "ingest"
    assert not ingest.exists() or list(ingest.iterdir()) == []
    assert clean("images", "-q").stdout == ""


def test_a_download_cut_short_is_retried(clean: Shoal) -> None:
    with _LyingRegistry() as flaky:
        proc = clean("pull", f"{flaky.address}/flaky:v1", check=True)
        assert flaky.cut_short == 1
    short = flaky.layer_digest[7:19]
    assert f"{short}: Retrying in 1 second" in proc.stdout
    assert f"{short}: Pull complete" in proc.stdout
    ingest = clean.root / "image" / "ingest"
    assert not ingest.exists() or list(ingest.iterdir()) == []


def test_manifest_that_is_not_what_its_digest_names(clean: Shoal) -> None:
    with _LyingRegistry() as evil:
        proc = clean("pull", f"{evil.address}/evil@sha256:{'0' * 64}")
    assert proc.returncode == 1
    assert proc.stderr.strip() == f"Error: manifest verification failed for digest sha256:{'0' * 64}"
    assert clean("images", "-q").stdout == ""


@pytest.mark.skipif(not shutil.which("skopeo"), reason="skopeo is not installed")
def test_skopeo_interop(clean: Shoal, registry: str, pushed: dict[str, str], tmp_path: Path) -> None:
    """skopeo reads what shoal pushed, and shoal pulls what skopeo pushed (as Docker schema2)."""
    layout = tmp_path / "layout"
    copy = ["skopeo", "copy", "--quiet", "--src-tls-verify=false", "--dest-tls-verify=false"]
    subprocess.run(copy + ["--preserve-digests", f"docker://{pushed['ref']}", f"oci:{layout}:v1"],
                   check=True, capture_output=True)
    index = json.loads((layout / "index.json").read_text())
    assert index["manifests"][0]["digest"] == pushed["digest"]  # the bytes were kept as pushed
    subprocess.run(copy + ["--format", "v2s2", f"oci:{layout}:v1", f"docker://{registry}/skopeo/web:v2"],
                   check=True, capture_output=True)
    ref = f"{registry}/skopeo/web:v2"
    proc = clean("pull", ref, check=True)
    assert "Status: Downloaded newer image" in proc.stdout
    info = json.loads(clean("image", "inspect", ref, check=True).stdout)[0]
    served = httpx.get(f"http://{registry}/v2/skopeo/web/manifests/v2",
                       headers={"Accept": "application/vnd.docker.distribution.manifest.v2+json"})
    assert served.headers["content-type"].startswith("application/vnd.docker.distribution.manifest.v2+json")
    assert info["RepoDigests"] == [f"{registry}/skopeo/web@{sha256_digest(served.content)}"]
    # And shoal pushes it back; skopeo inspects the result.
    clean("tag", ref, f"{registry}/skopeo/back:v3", check=True)
    clean("push", f"{registry}/skopeo/back:v3", check=True)
    out = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{registry}/skopeo/back:v3"],
                         check=True, capture_output=True, text=True).stdout
    assert json.loads(out)["Digest"] == sha256_digest(served.content)


def test_all_tags(shoal, clean: Shoal, registry: str, pushed: dict[str, str]) -> None:
    for tag in ("a", "b"):
        shoal("tag", pushed["ref"], f"{registry}/alltags:{tag}", check=True)
    pushed_all = shoal("push", "--all-tags", f"{registry}/alltags", check=True)
    assert "a: digest: " in pushed_all.stdout and "b: digest: " in pushed_all.stdout
    assert pushed_all.stdout.count("The push refers to repository") == 1
    proc = clean("pull", "-a", f"{registry}/alltags", check=True)
    assert proc.stdout.splitlines()[-1] == f"{registry}/alltags"
    tags = clean("images", "--format", "{{.Tag}}", f"{registry}/alltags", check=True).stdout.split()
    assert sorted(tags) == ["a", "b"]
    bad = clean("pull", "-a", f"{registry}/alltags:a")
    assert bad.returncode == 125 and "tag can't be used with --all-tags/-a" in bad.stderr


# --- a node daemon's pulls: the same protocol over aiohttp's client (agent/imagefetch.py) -------

def test_pull_over_aiohttp_into_an_empty_store(registry: str, pushed: dict[str, str], tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image")
    image = pull(store, pushed["ref"], quiet=True, aiohttp=True)
    assert image.id == pushed["id"] and image.manifest_digest == pushed["digest"]
    assert pull(store, f"{registry}/web@{pushed['digest']}", quiet=True, aiohttp=True).id == pushed["id"]
    with pytest.raises(NotFound, match=f"^manifest for {registry}/web:nope not found: manifest unknown: "
                                       "manifest unknown$"):
        pull(store, f"{registry}/web:nope", quiet=True, aiohttp=True)


def test_over_aiohttp_a_lying_registry_is_refused_and_a_cut_short_download_retried(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image")
    with _LyingRegistry() as evil:
        with pytest.raises(ShoalError, match=f"^filesystem layer verification failed for digest {evil.layer_digest}$"):
            pull(store, f"{evil.address}/evil:v1", quiet=True, aiohttp=True)
        with pytest.raises(ShoalError, match=f"^manifest verification failed for digest sha256:{'0' * 64}$"):
            pull(store, f"{evil.address}/evil@sha256:{'0' * 64}", quiet=True, aiohttp=True)
        image = pull(store, f"{evil.address}/flaky:v1", quiet=True, aiohttp=True)
        assert evil.cut_short == 1
    assert image.repo_tags == [f"{evil.address}/flaky:v1"]
    ingest = store.root / "ingest"
    assert not ingest.exists() or list(ingest.iterdir()) == []


def test_over_aiohttp_an_unreachable_registry_is_worded_as_docker(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    with pytest.raises(RegistryUnreachable) as caught:
        pull(ImageStore(tmp_path / "image"), f"127.0.0.1:{port}/web:v1", quiet=True, aiohttp=True)
    assert str(caught.value) == (f'Get "http://127.0.0.1:{port}/v2/": '
                                 f"dial tcp 127.0.0.1:{port}: connect: connection refused")
