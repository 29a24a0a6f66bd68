"""`shoal save` / `shoal load`: both archive formats, both directions, with skopeo as the
independent reader and writer (its docker-archive transport is what `docker load` reads and
`docker save` writes), and with a real Docker Engine when one answers `docker info`."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from conftest import ROOT_ONLY, make_busybox_rootfs_tar, tar_bytes

pytestmark = [ROOT_ONLY]

SKOPEO = shutil.which("skopeo")
needs_skopeo = pytest.mark.skipif(SKOPEO is None, reason="skopeo is not installed")


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def make_legacy_docker_archive(path: Path, layers: list[bytes], tags: list[str],
                               diff_ids: list[str] | None = None) -> str:
    """A `docker save` archive as Docker before 25 wrote it: <id>.json, <v1id>/layer.tar,
    repositories; returns the image ID."""
    config = {
        "architecture": "amd64", "os": "linux", "created": "2026-01-02T03:04:05Z",
        "config": {"Env": ["PATH=/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids or [_sha(layer) for layer in layers]},
        "history": [{"created": "2026-01-02T03:04:05Z", "created_by": f"layer {i}"} for i in range(len(layers))],
    }
    config_bytes = json.dumps(config).encode()
    image_id = _sha(config_bytes)
    with tarfile.open(path, "w") as tar:
        layer_paths = []
        for i, layer in enumerate(layers):
            v1 = hashlib.sha256(f"v1-{i}-{image_id}".encode()).hexdigest()
            _add(tar, f"{v1}/VERSION", b"1.0")
            _add(tar, f"{v1}/json", json.dumps({"id": v1}).encode())
            _add(tar, f"{v1}/layer.tar", layer)
            layer_paths.append(f"{v1}/layer.tar")
        _add(tar, f"{image_id[7:]}.json", config_bytes)
        _add(tar, "manifest.json", json.dumps([{"Config": f"{image_id[7:]}.json", "RepoTags": tags,
                                                 "Layers": layer_paths}]).encode())
        _add(tar, "repositories", json.dumps({t.split(":")[0]: {t.split(":")[1]: "x"} for t in tags}).encode())
    return image_id


@pytest.fixture(scope="module")
def two_layer_archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """busybox as the base layer, plus a layer that adds a file and deletes one."""
    work = tmp_path_factory.mktemp("archive")
    base = make_busybox_rootfs_tar(work / "base.tar").read_bytes()
    top = tar_bytes({"etc/motd": b"hello from the top layer\n"}, whiteouts=("etc/.wh.group",))
    path = work / "legacy.tar"
    image_id = make_legacy_docker_archive(path, [base, top], ["localhost/arch:v1"])
    return path, image_id


@pytest.fixture(scope="module")
def loaded(shoal, two_layer_archive) -> str:  # type: ignore[no-untyped-def]
    path, image_id = two_layer_archive
    proc = shoal("load", "-i", str(path), check=True)
    assert proc.stdout == "Loaded image: localhost/arch:v1\n"
    return image_id


def _store(root: Path | None = None):  # type: ignore[no-untyped-def]
    from shoal.image.store import ImageStore

    return ImageStore(root / "image" if root else None)


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: (tar.extractfile(m).read() if m.isfile() else b"") for m in tar}  # type: ignore[union-attr]


def test_load_legacy_docker_save_layout(loaded: str) -> None:
    image = _store().resolve("localhost/arch:v1")
    assert image.id == loaded
    assert len(image.layers) == 2
    top = image.rootfs_dirs()[0]
    assert (top / "etc/motd").read_text() == "hello from the top layer\n"


def test_save_writes_docker_archive_and_oci_layout(shoal, loaded: str, tmp_path: Path) -> None:
    out = tmp_path / "arch.tar"
    shoal("save", "-o", str(out), "localhost/arch:v1", check=True)
    files = _members(out)
    manifest = json.loads(files["manifest.json"])
    assert manifest == [{"Config": f"blobs/sha256/{loaded[7:]}", "RepoTags": ["localhost/arch:v1"],
                         "Layers": manifest[0]["Layers"]}]
    config = json.loads(files[manifest[0]["Config"]])
    # layers are uncompressed tars named by diff ID, as docker save writes them
    for layer_path, diff_id in zip(manifest[0]["Layers"], config["rootfs"]["diff_ids"], strict=True):
        assert layer_path == f"blobs/sha256/{diff_id[7:]}"
        assert _sha(files[layer_path]) == diff_id
    assert json.loads(files["repositories"]) == {"localhost/arch": {"v1": config["rootfs"]["diff_ids"][-1][7:]}}
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    [desc] = index["manifests"]
    assert desc["annotations"] == {"io.containerd.image.name": "localhost/arch:v1",
                                   "org.opencontainers.image.ref.name": "v1"}
    oci_manifest = json.loads(files[f"blobs/sha256/{desc['digest'][7:]}"])
    assert _sha(files[f"blobs/sha256/{desc['digest'][7:]}"]) == desc["digest"]
    assert oci_manifest["config"]["digest"] == loaded
    assert [l["digest"] for l in oci_manifest["layers"]] == config["rootfs"]["diff_ids"]


def test_round_trip_into_a_fresh_store_keeps_the_image_id(shoal, loaded: str, tmp_path: Path) -> None:
    out = tmp_path / "arch.tar"
    shoal("save", "-o", str(out), "localhost/arch:v1", check=True)
    other = tmp_path / "other-root"
    proc = shoal("load", "-i", str(out), check=True, env={"SHOAL_ROOT": str(other), "SHOAL_RUN": str(other / "run")})
    assert proc.stdout == "Loaded image: localhost/arch:v1\n"
    assert _store(other).resolve("localhost/arch:v1").id == loaded


def test_save_to_stdout_and_load_from_stdin(shoal, loaded: str, tmp_path: Path) -> None:
    other = tmp_path / "piped-root"
    env = {"SHOAL_ROOT": str(other), "SHOAL_RUN": str(other / "run")}
    saved = subprocess.run([*_cli(), "save", "localhost/arch:v1"], capture_output=True, check=True)
    proc = subprocess.run([*_cli(), "load"], input=saved.stdout, capture_output=True, check=True,
                          env={**os.environ, **env})
    assert proc.stdout == b"Loaded image: localhost/arch:v1\n"


def _cli() -> list[str]:
    import sys

    return [sys.executable, "-m", "shoal"]


def test_save_by_id_is_untagged_and_loads_as_id(shoal, loaded: str, tmp_path: Path) -> None:
    out = tmp_path / "byid.tar"
    shoal("save", "-o", str(out), loaded[7:19], check=True)
    files = _members(out)
    assert json.loads(files["manifest.json"])[0]["RepoTags"] is None
    assert "repositories" not in files
    other = tmp_path / "id-root"
    proc = shoal("load", "-i", str(out), check=True, env={"SHOAL_ROOT": str(other), "SHOAL_RUN": str(other / "run")})
    assert proc.stdout == f"Loaded image ID: {loaded}\n"


def test_legacy_archive_with_two_images_and_a_symlinked_shared_layer(shoal, tmp_path: Path, empty_root) -> None:  # type: ignore[no-untyped-def]
    """Docker before 25 wrote a layer shared by two saved images once, and a symlink
    ../<v1id>/layer.tar for the second; a link out of the archive is never followed."""
    root, env = empty_root
    base = tar_bytes({"etc/base": b"base\n"})
    top = tar_bytes({"etc/top": b"top\n"})
    cfg_a = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                        "rootfs": {"type": "layers", "diff_ids": [_sha(base)]}}).encode()
    cfg_b = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                        "rootfs": {"type": "layers", "diff_ids": [_sha(base), _sha(top)]}}).encode()
    path = tmp_path / "two.tar"
    with tarfile.open(path, "w") as tar:
        _add(tar, "aaa/layer.tar", base)
        link = tarfile.TarInfo("bbb/layer.tar")
        link.type = tarfile.SYMTYPE
        link.linkname = "../aaa/layer.tar"
        tar.addfile(link)
        _add(tar, "ccc/layer.tar", top)
        escape = tarfile.TarInfo("ddd/layer.tar")
        escape.type = tarfile.SYMTYPE
        escape.linkname = "../../../../etc/passwd"
        tar.addfile(escape)
        _add(tar, f"{_sha(cfg_a)[7:]}.json", cfg_a)
        _add(tar, f"{_sha(cfg_b)[7:]}.json", cfg_b)
        _add(tar, "manifest.json", json.dumps([
            {"Config": f"{_sha(cfg_a)[7:]}.json", "RepoTags": ["one:a"], "Layers": ["aaa/layer.tar"]},
            {"Config": f"{_sha(cfg_b)[7:]}.json", "RepoTags": ["two:b", "two:latest"],
             "Layers": ["bbb/layer.tar", "ccc/layer.tar"]},
        ]).encode())
    proc = shoal("load", "-i", str(path), check=True, env=env)
    assert proc.stdout == "Loaded image: one:a\nLoaded image: two:b\nLoaded image: two:latest\n"
    assert _store(root).resolve("two:b").id == _sha(cfg_b)

    escaping = tmp_path / "escape.tar"
    with tarfile.open(escaping, "w") as tar:
        tar.addfile(escape)
        _add(tar, f"{_sha(cfg_a)[7:]}.json", cfg_a)
        _add(tar, "manifest.json", json.dumps([{"Config": f"{_sha(cfg_a)[7:]}.json", "RepoTags": ["esc:a"],
                                                 "Layers": ["ddd/layer.tar"]}]).encode())
    proc = shoal("load", "-i", str(escaping), env=env)
    assert proc.returncode == 1
    assert proc.stderr == f"Error: invalid image archive {escaping}: layer 'ddd/layer.tar' is missing\n"


def test_compressed_archive_and_compressed_layers(shoal, tmp_path: Path, empty_root) -> None:  # type: ignore[no-untyped-def]
    """docker load takes a gzip-compressed archive, and gzip/xz/zstd layers inside one."""
    root, env = empty_root
    layers = {"gzip": ["gzip", "-nc"], "xz": ["xz", "-c"], "zstd": ["zstd", "-qc"]}
    plain = tar_bytes({"etc/hello": b"hello\n"})
    for kind, argv in layers.items():
        if shutil.which(argv[0]) is None:
            continue
        packed = subprocess.run(argv, input=plain, capture_output=True, check=True).stdout
        path = tmp_path / f"{kind}.tar"
        make_legacy_docker_archive(path, [packed], [f"localhost/packed:{kind}"], diff_ids=[_sha(plain)])
        archive = subprocess.run(["gzip", "-c", str(path)], capture_output=True, check=True).stdout
        proc = subprocess.run([*_cli(), "load"], input=archive, capture_output=True,
                              env={**os.environ, **env})
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == f"Loaded image: localhost/packed:{kind}\n".encode()
        image = _store(root).resolve(f"localhost/packed:{kind}")
        assert (image.rootfs_dirs()[0] / "etc/hello").read_text() == "hello\n"


def test_save_by_bare_name_saves_every_tag_of_the_repository(shoal, loaded: str, tmp_path: Path) -> None:
    shoal("tag", "localhost/arch:v1", "localhost/arch:other", check=True)
    try:
        out = tmp_path / "all.tar"
        shoal("save", "-o", str(out), "localhost/arch", check=True)
        files = _members(out)
        [item] = json.loads(files["manifest.json"])
        assert sorted(item["RepoTags"]) == ["localhost/arch:other", "localhost/arch:v1"]
        assert sorted(json.loads(files["repositories"])["localhost/arch"]) == ["other", "v1"]
        names = sorted(d["annotations"]["io.containerd.image.name"] for d in json.loads(files["index.json"])["manifests"])
        assert names == ["localhost/arch:other", "localhost/arch:v1"]
    finally:
        shoal("rmi", "localhost/arch:other", check=True)


def test_save_missing_image_leaves_no_file(shoal, tmp_path: Path) -> None:
    out = tmp_path / "none.tar"
    proc = shoal("save", "-o", str(out), "localhost/nosuch:v1")
    assert proc.returncode == 1
    assert "No such image" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@needs_skopeo
def test_skopeo_reads_shoal_archives_both_ways(shoal, loaded: str, tmp_path: Path) -> None:
    out = tmp_path / "arch.tar"
    shoal("save", "-o", str(out), "localhost/arch:v1", check=True)
    for transport in ("docker-archive", "oci-archive"):
        dest = tmp_path / f"from-{transport}"
        subprocess.run([SKOPEO, "--insecure-policy", "copy", "-q", f"{transport}:{out}", f"oci:{dest}:x"],
                       check=True, capture_output=True)
        index = json.loads((dest / "index.json").read_text())
        manifest = json.loads((dest / "blobs/sha256" / index["manifests"][0]["digest"][7:]).read_text())
        config_bytes = (dest / "blobs/sha256" / manifest["config"]["digest"][7:]).read_bytes()
        if transport == "oci-archive":
            assert _sha(config_bytes) == loaded  # an OCI copy keeps the config byte for byte
        # skopeo converts a docker-archive's config to OCI by re-serialising it: same content
        assert json.loads(config_bytes) == _store().get(loaded).config, transport
        diff_ids = json.loads(config_bytes)["rootfs"]["diff_ids"]
        assert diff_ids == [layer.diff_id for layer in _store().get(loaded).layers]


@needs_skopeo
@pytest.mark.parametrize("transport", ["docker-archive", "oci-archive"])
def test_shoal_loads_what_skopeo_writes(shoal, loaded: str, tmp_path: Path, transport: str) -> None:
    saved = tmp_path / "arch.tar"
    shoal("save", "-o", str(saved), "localhost/arch:v1", check=True)
    layout = tmp_path / "layout"
    subprocess.run([SKOPEO, "--insecure-policy", "copy", "-q", f"oci-archive:{saved}", f"oci:{layout}:v1"],
                   check=True, capture_output=True)
    written = tmp_path / f"skopeo-{transport}.tar"
    subprocess.run([SKOPEO, "--insecure-policy", "copy", "-q", f"oci:{layout}:v1",
                    f"{transport}:{written}:localhost/skopeo-made:v2"], check=True, capture_output=True)
    other = tmp_path / "skopeo-root"
    proc = shoal("load", "-i", str(written), check=True,
                 env={"SHOAL_ROOT": str(other), "SHOAL_RUN": str(other / "run")})
    assert proc.stdout == "Loaded image: localhost/skopeo-made:v2\n"
    image = _store(other).resolve("localhost/skopeo-made:v2")
    assert image.id == loaded
    assert (image.rootfs_dirs()[0] / "etc/motd").read_text() == "hello from the top layer\n"


# --- bad input: a clear error, nothing tagged, no scratch left ------------------------------

def _assert_store_unchanged(root: Path) -> None:
    store = _store(root)
    assert [img for img in store.list() if img.repo_tags] == []
    scratch = root / "image" / "tmp"
    assert not scratch.exists() or list(scratch.iterdir()) == []


@pytest.fixture
def empty_root(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    root = tmp_path / "bad-root"
    return root, {"SHOAL_ROOT": str(root), "SHOAL_RUN": str(root / "run")}


def test_truncated_archive(shoal, loaded: str, tmp_path: Path, empty_root) -> None:  # type: ignore[no-untyped-def]
    root, env = empty_root
    good = tmp_path / "good.tar"
    shoal("save", "-o", str(good), "localhost/arch:v1", check=True)
    data = good.read_bytes()
    for cut in (len(data) // 2, len(data) // 2 + 100, len(data) - 3000):
        bad = tmp_path / "cut.tar"
        bad.write_bytes(data[:cut])
        proc = shoal("load", "-i", str(bad), env=env)
        assert proc.returncode == 1, proc.stdout
        assert proc.stderr.startswith(f"Error: invalid image archive {bad}: "), proc.stderr
        assert proc.stdout == ""
        _assert_store_unchanged(root)


def test_corrupt_and_empty_input(shoal, tmp_path: Path, empty_root) -> None:  # type: ignore[no-untyped-def]
    root, env = empty_root
    # what a killed `shoal load` left behind (its process is gone) is removed by the next load
    dead_pid = int(Path("/proc/sys/kernel/pid_max").read_text()) + 1
    stale = root / "image" / "tmp" / f"shoal-load-{dead_pid}-x"
    (stale / "blobs").mkdir(parents=True)
    for name, data in (("garbage.tar", os.urandom(4096)), ("empty.tar", b"")):
        bad = tmp_path / name
        bad.write_bytes(data)
        proc = shoal("load", "-i", str(bad), env=env)
        assert proc.returncode == 1
        assert proc.stderr.startswith(f"Error: invalid image archive {bad}: "), proc.stderr
        assert proc.stderr.count("\n") == 1
    assert not stale.exists()
    _assert_store_unchanged(root)


def test_missing_manifest(shoal, tmp_path: Path, empty_root) -> None:  # type: ignore[no-untyped-def]
    root, env = empty_root
    bad = tmp_path / "nomanifest.tar"
    with tarfile.open(bad, "w") as tar:
        _add(tar, "layer.tar", tar_bytes({"a": b"a"}))
    proc = shoal("load", "-i", str(bad), env=env)
    assert proc.returncode == 1
    assert "no manifest.json" in proc.stderr and str(bad) in proc.stderr
    _assert_store_unchanged(root)


def test_layer_digest_mismatch(shoal, tmp_path: Path, empty_root) -> None:  # type: ignore[no-untyped-def]
    root, env = empty_root
    real = tar_bytes({"etc/real": b"real\n"})
    forged = tar_bytes({"etc/real": b"forged\n"})
    bad = tmp_path / "mismatch.tar"
    make_legacy_docker_archive(bad, [forged], ["localhost/forged:v1"], diff_ids=[_sha(real)])
    proc = shoal("load", "-i", str(bad), env=env)
    assert proc.returncode == 1
    assert "invalid diffID for layer 0" in proc.stderr and _sha(real) in proc.stderr
    _assert_store_unchanged(root)


def test_oci_blob_digest_mismatch(shoal, loaded: str, tmp_path: Path, empty_root) -> None:  # type: ignore[no-untyped-def]
    """An OCI layout whose config blob was altered after its manifest was written."""
    root, env = empty_root
    good = tmp_path / "good.tar"
    shoal("save", "-o", str(good), "localhost/arch:v1", check=True)
    files = _members(good)
    bad = tmp_path / "oci-bad.tar"
    with tarfile.open(bad, "w") as tar:
        for name, data in files.items():
            if name in ("manifest.json", "repositories") or not data:
                continue  # an OCI layout only
            if name == f"blobs/sha256/{loaded[7:]}":
                data = data.replace(b'"/bin/sh"', b'"/bin/ash"')
            _add(tar, name, data)
    proc = shoal("load", "-i", str(bad), env=env)
    assert proc.returncode == 1
    assert f"config blob {loaded} does not match its digest" in proc.stderr
    _assert_store_unchanged(root)


def test_load_input_errors(shoal, tmp_path: Path) -> None:
    proc = shoal("load", "-i", str(tmp_path / "nope.tar"))
    assert proc.returncode == 1
    assert proc.stderr == f"Error: open {tmp_path / 'nope.tar'}: no such file or directory\n"


# --- a real Docker Engine, where there is one ------------------------------------------------

def _docker_works() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


@pytest.mark.skipif(not _docker_works(), reason="no Docker Engine answers `docker info` here")
def test_docker_engine_round_trip(shoal, loaded: str, tmp_path: Path) -> None:
    saved = tmp_path / "to-docker.tar"
    shoal("save", "-o", str(saved), "localhost/arch:v1", check=True)
    try:
        out = subprocess.run(["docker", "load", "-i", str(saved)], capture_output=True, text=True, check=True)
        assert "Loaded image: localhost/arch:v1" in out.stdout
        subprocess.run(["docker", "tag", "localhost/arch:v1", "localhost/arch:from-docker"], check=True)
        back = tmp_path / "from-docker.tar"
        subprocess.run(["docker", "save", "-o", str(back), "localhost/arch:from-docker"], check=True)
    finally:
        subprocess.run(["docker", "rmi", "localhost/arch:v1", "localhost/arch:from-docker"], capture_output=True)
    other = tmp_path / "docker-root"
    proc = shoal("load", "-i", str(back), check=True, env={"SHOAL_ROOT": str(other), "SHOAL_RUN": str(other / "run")})
    assert proc.stdout == "Loaded image: localhost/arch:from-docker\n"
    assert _store(other).resolve("localhost/arch:from-docker").id == loaded
