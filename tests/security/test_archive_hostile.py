"""Hostile layer tars (issue 10, session 8's archive items): whatever entries an image's layer,
an ADD'ed tar or a `cp -` tar holds, the unpacker writes only inside its own directory. The
cases here are the ones that got through before: a directory entry replaced by a later symlink
to the host had its modification time set through that link when the layer was finished."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import tarfile
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT_ONLY

pytestmark = [pytest.mark.root, ROOT_ONLY]

OLD = 1_600_000_000   # the host directory's own mtime, which nothing may change
EVIL = 12345          # what the hostile directory entry asks for


def _host_dir(tmp_path: Path) -> Path:
    d = tmp_path / f"host-{uuid.uuid4().hex[:8]}"
    (d / "b").mkdir(parents=True)
    for p in (d, d / "b"):
        os.utime(p, (OLD, OLD))
    return d


def _entry(name: str, kind: bytes = tarfile.DIRTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mtime, info.mode = kind, linkname, EVIL, 0o755
    return info


def _replaced_dirs_tar(host: Path) -> bytes:
    """`a/` and `c/b/` as directories (mtimes to set at the end), then `a` and `c` replaced
    by symlinks to the host directory: a later `a` or `c/b` path leads through the link."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(_entry("a"))
        tar.addfile(_entry("c"))
        tar.addfile(_entry("c/b"))
        tar.addfile(_entry("a", tarfile.SYMTYPE, str(host)))
        tar.addfile(_entry("c", tarfile.SYMTYPE, str(host)))
        info = tarfile.TarInfo("f")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"ok\n"))
    return buf.getvalue()


def _untouched(host: Path) -> None:
    assert os.stat(host).st_mtime == OLD, "a layer set a host directory's mtime through a symlink"
    assert os.stat(host / "b").st_mtime == OLD, "a layer set a host directory's mtime through a symlink"


def test_import_does_not_set_times_through_a_replacing_symlink(shoal, tmp_path: Path) -> None:
    host = _host_dir(tmp_path)
    tar = tmp_path / "evil.tar"
    tar.write_bytes(_replaced_dirs_tar(host))
    ref = f"localhost/shoal-hostile-times-{uuid.uuid4().hex[:8]}:test"
    proc = shoal("import", str(tar), ref)
    _untouched(host)
    # Docker's unpacker takes it too (a later entry replaces an earlier one): the links are
    # in the image, pointing where the tar said, and inspected inside it they are links
    assert proc.returncode == 0, proc.stderr
    shoal("rmi", ref, check=True)


def test_add_tar_does_not_set_times_through_a_replacing_symlink(shoal, busybox_image: str, tmp_path: Path) -> None:
    host = _host_dir(tmp_path)
    ctx = tmp_path / f"ctx-{uuid.uuid4().hex[:8]}"
    ctx.mkdir()
    (ctx / "evil.tar").write_bytes(_replaced_dirs_tar(host))
    (ctx / "Dockerfile").write_text(textwrap.dedent(f"""\
        FROM {busybox_image}
        ADD evil.tar /x/
        RUN test "$(readlink /x/a)" = {host} && test "$(cat /x/f)" = ok
        """))
    proc = shoal("build", str(ctx))
    _untouched(host)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_cp_from_stdin_does_not_set_times_through_a_replacing_symlink(shoal, busybox_image: str,
                                                                      tmp_path: Path) -> None:
    host = _host_dir(tmp_path)
    name = f"shoal-hostile-cp-{uuid.uuid4().hex[:8]}"
    shoal("run", "-d", "--name", name, "--network", "none", busybox_image, "sleep", "600", check=True)
    try:
        proc = subprocess.run([sys.executable, "-m", "shoal", "cp", "-", f"{name}:/tmp"],
                              input=_replaced_dirs_tar(host), capture_output=True, timeout=60)
        _untouched(host)
        assert proc.returncode == 0, proc.stderr
    finally:
        shoal("rm", "-f", name)


def _docker_archive(layers: list[bytes], tag: str, container_config: dict | None = None) -> bytes:
    """A `docker save` archive of one image with these layer tars (and this `config`)."""
    import hashlib
    import json

    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": container_config or {},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    files = {f"blobs/sha256/{hashlib.sha256(config).hexdigest()}": config}
    files |= {f"blobs/sha256/{d[7:]}": layer for d, layer in zip(diff_ids, layers)}
    names = list(files)[:1] + [f"blobs/sha256/{d[7:]}" for d in diff_ids]   # a layer given twice stays twice
    files["manifest.json"] = json.dumps([{"Config": names[0], "RepoTags": [tag], "Layers": names[1:]}]).encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _layer(*entries: tuple[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in entries:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _store_files(root: Path) -> tuple[set[str], set[str], set[str]]:
    """Blobs, snapshot directories and recorded layers (not the next snapshot's number)."""
    import json

    image = root / "image"
    path = image / "layers.json"
    layers = json.loads(path.read_text()) if path.exists() else {"layers": {}, "blobs": {}}
    listing = lambda d: {p.name for p in d.iterdir()} if d.is_dir() else set()  # noqa: E731
    return (listing(image / "blobs" / "sha256"), listing(image / "snapshots"),
            set(layers["layers"]) | set(layers["blobs"]))


def test_failed_load_leaves_nothing_and_stops_nothing(shoal, busybox_image: str, shoal_root: Path,
                                                      tmp_path: Path) -> None:
    """A load whose second layer has an absolute path: refused naming that layer, and the
    first layer (stored and unpacked before the second was read) is taken back, as Docker
    releases a failed load's layers; a running container is not disturbed."""
    name = f"shoal-hostile-load-{uuid.uuid4().hex[:8]}"
    shoal("run", "-d", "--name", name, "--network", "none", busybox_image, "sleep", "600", check=True)
    try:
        before = _store_files(shoal_root)
        unique = uuid.uuid4().hex.encode()
        bad = _layer(("ok", unique), (str(tmp_path / "abs"), b"pwned\n"))
        tag = f"localhost/shoal-hostile-load:{uuid.uuid4().hex[:8]}"
        proc = subprocess.run([sys.executable, "-m", "shoal", "load"], input=_docker_archive([_layer(("f", unique)), bad], tag),
                              capture_output=True, timeout=120)
        err = proc.stderr.decode()
        assert proc.returncode == 1 and err.count("\n") == 1, err
        assert err.startswith("Error: layer ") and "unsafe path" in err and str(tmp_path / "abs") in err, err
        assert not (tmp_path / "abs").exists()
        assert _store_files(shoal_root) == before, "a failed load left blobs, snapshots or layer records"
        assert shoal("image", "inspect", tag).returncode == 1
        assert shoal("inspect", "-f", "{{.State.Running}}", name, check=True).stdout == "true\n"
    finally:
        shoal("rm", "-f", name)


def test_an_image_deeper_than_dockers_limit_is_refused_before_hashing(shoal, shoal_root: Path) -> None:
    """moby refuses a layer chain deeper than 125 ("max depth exceeded"); a hostile config may
    repeat one large layer thousands of times, each to be hashed and stacked. Refused from the
    config alone, the store untouched."""
    import hashlib
    import json

    layer = _layer(("f", uuid.uuid4().hex.encode()))
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({"os": "linux", "rootfs": {"type": "layers", "diff_ids": [digest] * 126}}).encode()
    config_name = f"blobs/sha256/{hashlib.sha256(config).hexdigest()}"
    tag = f"localhost/shoal-hostile-deep:{uuid.uuid4().hex[:8]}"
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": [f"blobs/sha256/{digest[7:]}"] * 126}]
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in ((config_name, config), (f"blobs/sha256/{digest[7:]}", layer),
                           ("manifest.json", json.dumps(manifest).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    before = _store_files(shoal_root)
    proc = subprocess.run([sys.executable, "-m", "shoal", "load"], input=buf.getvalue(), capture_output=True,
                          timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.decode() == (f"Error: invalid image archive from stdin: {config_name}: max depth exceeded "
                                    "(126 layers, at most 125)\n")
    assert _store_files(shoal_root) == before


def test_a_pull_deeper_than_dockers_limit_fetches_no_blob(shoal, shoal_root: Path) -> None:
    """The same limit on a pull, from the manifest, before any blob is asked for."""
    import hashlib
    import json

    layer = _layer(("f", b"x"))
    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({"os": "linux", "architecture": "amd64",
                         "rootfs": {"type": "layers", "diff_ids": [digest] * 126}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": "sha256:" + hashlib.sha256(config).hexdigest(), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest,
                    "size": len(layer)}] * 126}).encode()
    blobs = {digest: layer, "sha256:" + hashlib.sha256(config).hexdigest(): config}
    with _registry(manifest, blobs) as (address, blob_requests):
        before = _store_files(shoal_root)
        proc = shoal("pull", f"{address}/deep:v1")
    assert proc.returncode == 1
    assert proc.stderr.endswith("Error: max depth exceeded (126 layers, at most 125)\n"), proc.stderr
    assert blob_requests == []
    assert _store_files(shoal_root) == before


def _oci_archive(layer: bytes, declared_size: int | None = None) -> bytes:
    """An OCI image layout of one image with this layer; its descriptor may lie about the size."""
    import hashlib
    import json

    digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = json.dumps({"os": "linux", "architecture": "amd64",
                         "rootfs": {"type": "layers", "diff_ids": [digest]}}).encode()
    config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": digest,
                    "size": len(layer) if declared_size is None else declared_size}]}).encode()
    manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
    index = json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
        "size": len(manifest), "annotations": {"io.containerd.image.name": "localhost/shoal-hostile-oci:t"}}]})
    files = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": index.encode(),
             f"blobs/sha256/{manifest_digest[7:]}": manifest, f"blobs/sha256/{config_digest[7:]}": config,
             f"blobs/sha256/{digest[7:]}": layer}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _load(data: bytes) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "shoal", "load"], input=data, capture_output=True, timeout=120)


def test_a_descriptor_whose_size_lies_is_refused(shoal, shoal_root: Path) -> None:
    """containerd checks each blob's size against its descriptor; the manifest is kept byte for
    byte, so a size of 2^62 would otherwise be what a later push and save declare."""
    layer = _layer(("f", uuid.uuid4().hex.encode()))
    before = _store_files(shoal_root)
    proc = _load(_oci_archive(layer, declared_size=1 << 62))
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.count("\n") == 1, err
    assert err.startswith("Error: invalid image archive from stdin: layer sha256:") \
        and err.endswith(f"is {len(layer)} bytes, its descriptor says {1 << 62}\n"), err
    assert _store_files(shoal_root) == before
    assert _load(_oci_archive(layer)).returncode == 0  # the same archive, honest, loads
    shoal("rmi", "localhost/shoal-hostile-oci:t", check=True)


def test_an_enormous_manifest_is_refused_unread(shoal, tmp_path: Path) -> None:
    """manifest.json is read whole: past 16MiB it is an error, not the loader's memory."""
    big = tmp_path / "big.tar"
    with tarfile.open(big, "w") as tar:
        info = tarfile.TarInfo("manifest.json")
        info.size = (16 << 20) + 3
        tar.addfile(info, io.BytesIO(b"[" + b" " * (16 << 20) + b"]\n"))
    proc = shoal("load", "-i", str(big))
    assert proc.returncode == 1
    assert proc.stderr == (f"Error: invalid image archive {big}: manifest 'manifest.json' is {(16 << 20) + 3} bytes, "
                           "more than 16MiB\n"), proc.stderr


@pytest.mark.parametrize("case", ["deep-layer-path", "repotags-a-string", "repotags-numbers", "nested-json"])
def test_malformed_archives_are_one_line_errors(shoal, shoal_root: Path, case: str) -> None:
    """Each was a Python traceback (RecursionError, TypeError) or, for a string as RepoTags, an
    image tagged with each of its letters."""
    config = b'{"os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'

    def archive(manifest: bytes, extra: dict[str, bytes] | None = None) -> bytes:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in {"c.json": config, "manifest.json": manifest, **(extra or {})}.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        return buf.getvalue()

    expected = {
        "deep-layer-path": "is 3001 levels deep (at most 512)",
        "repotags-a-string": '"RepoTags" must be a list of strings',
        "repotags-numbers": '"RepoTags" must be a list of strings',
        "nested-json": "manifest.json is nested too deeply",
    }[case]
    if case == "deep-layer-path":
        data = _docker_archive([_layer(("/".join(["d"] * 3000) + "/f", b"x"))], "localhost/shoal-hostile-deep:t")
    elif case == "repotags-a-string":
        data = archive(b'[{"Config": "c.json", "Layers": [], "RepoTags": "abc"}]')
    elif case == "repotags-numbers":
        data = archive(b'[{"Config": "c.json", "Layers": [], "RepoTags": [1]}]')
    else:
        data = archive(b"[" * 100_000 + b"]" * 100_000)
    before = _store_files(shoal_root)
    proc = _load(data)
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.count("\n") == 1 and err.startswith("Error: "), err[-2000:]
    assert expected in err, err
    assert _store_files(shoal_root) == before
    assert "a:latest" not in shoal("images", "--format", "{{.Repository}}:{{.Tag}}").stdout


def _sparse_tar(name: str, regions: list[tuple[int, bytes]], size: int) -> bytes:
    """A tar whose one member is a sparse file (PAX sparse format 0.1, which GNU tar and Go's
    archive/tar read): only `regions` are stored, the rest of its `size` bytes are holes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        _add_sparse(tar, name, regions, size)
    return buf.getvalue()


def _add_sparse(tar: tarfile.TarFile, name: str, regions: list[tuple[int, bytes]], size: int) -> None:
    data = b"".join(d for _, d in regions)
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    info.pax_headers = {"GNU.sparse.map": ",".join(f"{o},{len(d)}" for o, d in regions),
                        "GNU.sparse.size": str(size), "GNU.sparse.name": name}
    tar.addfile(info, io.BytesIO(data))


def test_a_sparse_member_stays_sparse(shoal, shoal_root: Path, tmp_path: Path) -> None:
    """A 2GiB file with 6 bytes of data is a 10KiB tar: tarfile's reader gave every zero of
    its holes and the unpacker wrote them all (a few hundred bytes may declare terabytes, and
    the disk filled from a tiny import, load or pull). The holes now stay holes."""
    name = f"sparse-{uuid.uuid4().hex[:8]}"
    size = 2 << 30
    tar = tmp_path / f"{name}.tar"
    tar.write_bytes(_sparse_tar(name, [(0, b"abc"), (size - 3, b"xyz")], size))
    ref = f"localhost/shoal-hostile-sparse:{uuid.uuid4().hex[:8]}"
    proc = shoal("import", str(tar), ref)
    assert proc.returncode == 0, proc.stderr
    try:
        [path] = list((shoal_root / "image" / "snapshots").glob(f"*/{name}"))
        st = path.stat()
        assert st.st_size == size
        assert st.st_blocks * 512 < 1 << 20, f"{st.st_blocks * 512} bytes on disk for 6 bytes of data"
        with path.open("rb") as f:
            assert f.read(4) == b"abc\0"
            f.seek(size - 4)
            assert f.read() == b"\0xyz"
    finally:
        shoal("rmi", ref)


@pytest.mark.parametrize("sparse_map,size", [("0,3,999999999999,3", 100), ("0,3,10,4000", 8000)])
def test_a_sparse_map_outside_its_file_is_refused(shoal, shoal_root: Path, tmp_path: Path, sparse_map: str,
                                                  size: int) -> None:
    """A region past the declared size, or more data than the member stores (which would read
    the next header as file content): one line naming the entry, nothing stored."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("f")
        info.size = 6
        info.pax_headers = {"GNU.sparse.map": sparse_map, "GNU.sparse.size": str(size), "GNU.sparse.name": "f"}
        tar.addfile(info, io.BytesIO(b"abcdef"))
    path = tmp_path / "badmap.tar"
    path.write_bytes(buf.getvalue())
    before = _store_files(shoal_root)
    proc = shoal("import", str(path))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "invalid sparse map for 'f'" in proc.stderr, proc.stderr
    assert _store_files(shoal_root) == before


def test_a_sparse_file_in_an_image_archive_is_refused(shoal, shoal_root: Path, tmp_path: Path) -> None:
    """The outer archive of `load` is unpacked to a scratch directory and its blobs hashed:
    a sparse member declaring 3GiB was written as 3GiB of zeros first. `docker save` never
    writes one, so it is refused, unwritten."""
    path = tmp_path / "sparse-archive.tar"
    path.write_bytes(_sparse_tar("junk", [(0, b"abc")], 3 << 30))
    before = _store_files(shoal_root)
    proc = shoal("load", "-i", str(path))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "'junk' is a sparse file" in proc.stderr, proc.stderr
    assert _store_files(shoal_root) == before
    assert not any((shoal_root / "image" / "tmp").glob("*")), "the scratch directory was left behind"


def _limited() -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))  # far below the file, far above a run


def test_an_enormous_passwd_is_an_error_not_the_runners_memory(shoal, busybox_tar: Path, tmp_path: Path) -> None:
    """/etc/passwd and /etc/group are read before a container or a RUN step starts (the user's
    ids): a sparse 6GiB passwd costs a 10KiB layer, and it was read whole into the memory of
    the CLI (or the shoald running a task). Run here under an address-space limit, it was a
    MemoryError traceback; it is a one-line error naming the file."""
    tar_path = tmp_path / "big-passwd.tar"
    with tarfile.open(busybox_tar) as src, tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for member in src:
            if member.name != "etc/passwd":
                tar.addfile(member, src.extractfile(member) if member.isreg() else None)
        _add_sparse(tar, "etc/passwd", [(0, b"root:x:0:0:root:/root:/bin/sh\n")], 6 << 30)
    ref = f"localhost/shoal-hostile-passwd:{uuid.uuid4().hex[:8]}"
    shoal("import", str(tar_path), ref, check=True)
    try:
        proc = subprocess.run([sys.executable, "-m", "shoal", "run", "--rm", "--network", "none", ref, "true"],
                              capture_output=True, text=True, timeout=120, preexec_fn=_limited)
        assert proc.returncode == 125, proc.stderr
        assert "Traceback" not in proc.stderr and "/etc/passwd of the image is larger than 16MiB" in proc.stderr, \
            proc.stderr
    finally:
        shoal("rmi", ref)


@pytest.mark.parametrize("user,code,out", [("evil", 0, "0:0"), ("0:ev", 0, "0:0"), ("huge", 125, "uids and gids"),
                                           ("2147483648", 125, "uids and gids"),
                                           ("0:99999999999999999999", 125, "uids and gids")])
def test_malformed_ids_in_the_images_passwd_are_no_traceback(shoal, busybox_tar: Path, tmp_path: Path,
                                                             user: str, code: int, out: str) -> None:
    """moby/sys/user reads a passwd or group id that is not a number as 0, and refuses ids
    outside 0-2147483647: int() of 'abc' was a ValueError traceback, and -u 2147483648 ran."""
    tar_path = tmp_path / "ids.tar"
    files = {"etc/passwd": b"root:x:0:0:root:/root:/bin/sh\nevil:x:abc:def::/:/bin/sh\n"
                           b"huge:x:99999999999999999999:0::/:/bin/sh\n",
             "etc/group": b"root:x:0:\nev:x:zz:\n"}
    with tarfile.open(busybox_tar) as src, tarfile.open(tar_path, "w", format=tarfile.PAX_FORMAT) as tar:
        for member in src:
            if member.name not in files:
                tar.addfile(member, src.extractfile(member) if member.isreg() else None)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    ref = f"localhost/shoal-hostile-ids:{uuid.uuid4().hex[:8]}"
    shoal("import", str(tar_path), ref, check=True)
    try:
        proc = shoal("run", "--rm", "--network", "none", "-u", user, ref, "sh", "-c", 'echo "$(id -u):$(id -g)"')
        assert proc.returncode == code and "Traceback" not in proc.stderr, proc.stderr
        assert out in (proc.stdout if code == 0 else proc.stderr), proc.stdout + proc.stderr
    finally:
        shoal("rmi", ref)


@pytest.mark.parametrize("field,value,kind,want", [
    ("Env", "PATH=/bin", "string", "[]string"), ("Env", [1], "number", "string"),
    ("Cmd", [["sh"]], "array", "string"), ("Labels", ["a=b"], "array", "map[string]string"),
    ("ExposedPorts", ["80/tcp"], "array", "map[string]struct {}"), ("WorkingDir", 5, "number", "string"),
    ("User", 0, "number", "string"), ("Entrypoint", {"a": 1}, "object", "[]string"),
    ("Healthcheck", {"Interval": "5s"}, "string", "time.Duration"),
])
def test_a_config_field_of_the_wrong_type_is_refused_at_load(shoal, shoal_root: Path, busybox_tar: Path,
                                                             field: str, value: object, kind: str, want: str) -> None:
    """moby decodes a config into typed structs, so `docker load` refuses `"Env": "PATH=/bin"` or
    `"Labels": ["a=b"]` (json's "cannot unmarshal"). shoal loaded them, and `shoal run` of the
    image was a Python traceback (AttributeError, TypeError, ValueError). Refused at load now,
    before any layer is stored, naming the field."""
    tag = f"localhost/shoal-hostile-config:{uuid.uuid4().hex[:8]}"
    before = _store_files(shoal_root)
    proc = subprocess.run([sys.executable, "-m", "shoal", "load"], capture_output=True, timeout=120,
                          input=_docker_archive([busybox_tar.read_bytes()], tag, {field: value}))
    err = proc.stderr.decode()
    assert proc.returncode == 1 and err.count("\n") == 1, err
    assert f"json: cannot unmarshal {kind} into Go struct field Image.config.{field}" in err, err
    assert err.rstrip().endswith(f"of type {want}"), err
    assert _store_files(shoal_root) == before
    assert shoal("image", "inspect", tag).returncode == 1


def test_cp_of_a_sparse_member_into_a_container_stays_sparse(shoal, busybox_image: str, shoal_root: Path,
                                                             tmp_path: Path) -> None:
    """`cp -` unpacks the tar (sparse kept) and copies it into the container with the builder's
    Copier, which wrote every zero of the holes: a 10KiB tar put 2GiB in the container's upper
    directory. Copied by data regions (SEEK_DATA/SEEK_HOLE) now; the content is the same."""
    size = 2 << 30
    name = f"shoal-sparse-{uuid.uuid4().hex[:8]}"
    shoal("run", "-d", "--name", name, "--network", "none", busybox_image, "sleep", "600", check=True)
    try:
        proc = subprocess.run([sys.executable, "-m", "shoal", "cp", "-", f"{name}:/tmp"], capture_output=True,
                              timeout=120, input=_sparse_tar("big", [(0, b"abc"), (size - 3, b"xyz")], size))
        assert proc.returncode == 0, proc.stderr
        cid = shoal("inspect", "-f", "{{.Id}}", name, check=True).stdout.strip()
        st = (shoal_root / "containers" / cid / "upper" / "tmp" / "big").stat()
        assert st.st_size == size
        assert st.st_blocks * 512 < 1 << 20, f"{st.st_blocks * 512} bytes on disk for 6 bytes of data"
        seen = shoal("exec", name, "sh", "-c", "head -c 3 /tmp/big; tail -c 3 /tmp/big", check=True).stdout
        assert seen == "abcxyz"
    finally:
        shoal("rm", "-f", name)


@contextlib.contextmanager
def _registry(manifest: bytes, blobs: dict[str, bytes]) -> Iterator[tuple[str, list[str]]]:
    """A registry on loopback serving one manifest (any reference) and these blobs by digest;
    yields its address and the blob paths asked for."""
    import hashlib
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _answer(self, body: bytes | None, ctype: str = "application/octet-stream") -> None:
            self.send_response(404 if body is None else 200)
            self.send_header("Content-Type", ctype)
            self.send_header("Docker-Content-Digest", "sha256:" + hashlib.sha256(manifest).hexdigest())
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            if body and self.command == "GET":
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            if self.path == "/v2/":
                self._answer(b"{}", "application/json")
            elif "/manifests/" in self.path:
                self._answer(manifest, "application/vnd.oci.image.manifest.v1+json")
            else:
                asked.append(self.path)
                self._answer(blobs.get(self.path.rpartition("/")[2]))

        do_HEAD = do_GET

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}", asked
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _pullable(config: dict, config_size: int | None | str = "true") -> tuple[bytes, dict[str, bytes]]:
    """A manifest of one small layer and this config (its descriptor's size true, another, or
    none), and the blobs by digest."""
    import hashlib
    import json

    layer = _layer(("f", b"x"))
    layer_digest = "sha256:" + hashlib.sha256(layer).hexdigest()
    config = dict(config, rootfs={"type": "layers", "diff_ids": [layer_digest]})
    config_bytes = json.dumps(config).encode()
    config_desc: dict = {"mediaType": "application/vnd.oci.image.config.v1+json",
                         "digest": "sha256:" + hashlib.sha256(config_bytes).hexdigest()}
    if config_size == "true":
        config_desc["size"] = len(config_bytes)
    elif config_size is not None:
        config_desc["size"] = config_size
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": config_desc,
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                                       "digest": layer_digest, "size": len(layer)}]}).encode()
    return manifest, {config_desc["digest"]: config_bytes, layer_digest: layer}


BIG_CONFIG = {"os": "linux", "architecture": "amd64", "config": {"Labels": {"pad": "x" * (17 << 20)}}}


@pytest.mark.parametrize("declared", ["true", None])
def test_a_pulled_config_past_16mib_is_refused(shoal, shoal_root: Path, declared: str | None) -> None:
    """A config is read whole (and parsed) once pulled; load already refuses one past 16MiB.
    A pull took any size the registry declared, or sent when it declared none: a 17MiB config
    pulled. Refused now before any blob when the manifest declares it, else once 16MiB came."""
    manifest, blobs = _pullable(BIG_CONFIG, declared)
    before = _store_files(shoal_root)
    with _registry(manifest, blobs) as (address, asked):
        proc = shoal("pull", f"{address}/bigconfig:v1")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "image config sha256:" in proc.stderr and "16MiB" in proc.stderr, proc.stderr
    if declared == "true":
        assert asked == [], "a blob was asked for"
        assert _store_files(shoal_root) == before
    assert shoal("image", "inspect", f"{address}/bigconfig:v1").returncode == 1


def test_a_pulled_config_of_the_wrong_types_is_refused(shoal, shoal_root: Path) -> None:
    manifest, blobs = _pullable({"os": "linux", "architecture": "amd64", "config": {"Env": "PATH=/bin"}})
    with _registry(manifest, blobs) as (address, _asked):
        proc = shoal("pull", f"{address}/badtypes:v1")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "json: cannot unmarshal string into Go struct field Image.config.Env of type []string" in proc.stderr
    assert shoal("image", "inspect", f"{address}/badtypes:v1").returncode == 1


def test_the_unpacker_keeps_no_member_it_has_applied(tmp_path: Path) -> None:
    """tarfile keeps every member it reads in TarFile.members, streaming too: a layer of a
    million empty files (a 10MB gzip) held 500MB while unpacking (shoal import: 520MB RSS).
    100,000 entries of one directory (nothing made on disk but it) cost 44MiB; now a few."""
    import tracemalloc

    from shoal.image.layers import unpack_layer

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for _ in range(100_000):
            tar.addfile(_entry("d"))
    buf.seek(0)
    out = tmp_path / "out"
    out.mkdir()
    tracemalloc.start()
    try:
        unpack_layer(buf, out, hash=False)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak >> 20}MiB at the peak for 100,000 entries"


def test_a_cmd_given_as_one_string_is_one_word(shoal, busybox_tar: Path) -> None:
    """moby's StrSlice takes `"Cmd": "echo hi"` as ["echo hi"] (inspect shows the list, and the
    run looks for a program named "echo hi"); shoal cut the string into letters and ran "e"."""
    tag = f"localhost/shoal-hostile-strslice:{uuid.uuid4().hex[:8]}"
    proc = subprocess.run([sys.executable, "-m", "shoal", "load"], capture_output=True, timeout=120,
                          input=_docker_archive([busybox_tar.read_bytes()], tag, {"Cmd": "echo hi"}))
    assert proc.returncode == 0, proc.stderr
    try:
        assert shoal("image", "inspect", "-f", "{{json .Config.Cmd}}", tag, check=True).stdout == '["echo hi"]\n'
        run = shoal("run", "--rm", "--network", "none", tag)
        assert run.returncode != 0 and 'exec: "echo hi": executable file not found' in run.stderr, run.stderr
    finally:
        shoal("rmi", tag)


def test_an_image_holding_a_layer_twice_runs(shoal, busybox_tar: Path) -> None:
    """A manifest may list one layer twice (Docker chains the two as different layers); overlay
    refused the same lowerdir twice (ELOOP), so the loaded image could not run. The upper copy
    decides: /f is the top layer's."""
    a, b = _layer(("f", b"a\n")), _layer(("f", b"b\n"))
    tag = f"localhost/shoal-twice:{uuid.uuid4().hex[:8]}"
    proc = subprocess.run([sys.executable, "-m", "shoal", "load"], capture_output=True, timeout=120,
                          input=_docker_archive([busybox_tar.read_bytes(), a, b, a], tag))
    assert proc.returncode == 0, proc.stderr
    try:
        run = shoal("run", "--rm", "--network", "none", tag, "cat", "/f")
        assert (run.returncode, run.stdout) == (0, "a\n"), run.stderr
    finally:
        shoal("rmi", tag)
