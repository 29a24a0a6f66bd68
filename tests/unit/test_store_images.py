"""Images, names and removal in the store: resolution as Docker resolves, rmi/prune semantics
of moby's image_delete.go, layers unpacked once, bad tars leaving nothing behind."""

from __future__ import annotations

import gzip
import io
import json
import lzma
import os
import tarfile
from pathlib import Path

import pytest

from shoal.errors import Conflict, InvalidArgument, NotFound, ShoalError
from shoal.image.store import ImageStore, Layer, chain_id


@pytest.fixture()
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "image")


def make_tar(files: dict[str, bytes | None], mtime: int = 1700000000) -> bytes:
    """A tar of regular files (bytes) and directories (None)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.mtime = mtime
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def import_image(store: ImageStore, files: dict[str, bytes | None], tags: list[str] = (),  # type: ignore[assignment]
                 label: str = "", parent: str = "", created: str = "2024-01-02T03:04:05Z") -> str:
    layer = store.import_layer(io.BytesIO(make_tar(files)))
    config = {"architecture": "amd64", "os": "linux", "created": created,
              "config": {"Labels": {"n": label}} if label else {}}
    return store.create_image(config, [layer], tags=tags, parent=parent).id


def write_container(store: ImageStore, container_id: str, image_id: str, status: str = "exited") -> None:
    """A record shaped as shoal.runtime.state.Container saves it (the fields the store reads)."""
    directory = store.containers_dir / container_id
    directory.mkdir(parents=True)
    state = {"status": status, "pid": os.getpid() if status == "running" else 0}
    (directory / "container.json").write_text(json.dumps({"id": container_id, "name": "c", "image": "x",
                                                          "image_id": image_id, "state": state}))


# --- layers ----------------------------------------------------------------------------------


def test_import_unpacks_and_records_diff_id(store: ImageStore) -> None:
    data = make_tar({"etc": None, "etc/hostname": b"shoal\n"})
    layer = store.import_layer(io.BytesIO(data))
    assert layer.diff_id == layer.digest  # stored uncompressed: blob == tar
    assert layer.unpacked_size == 6
    snap = store.layer_dir(layer.diff_id)
    assert (snap / "etc" / "hostname").read_bytes() == b"shoal\n"
    assert len(snap.name) <= 4  # short names keep overlay mount options under a page


@pytest.mark.parametrize("compress,kind", [(gzip.compress, "gzip"), (lzma.compress, "xz")])
def test_compressed_import_has_diff_id_of_plain_tar(store: ImageStore, compress, kind: str) -> None:  # type: ignore[no-untyped-def]
    data = make_tar({"a.txt": b"A" * 1000})
    plain = store.import_layer(io.BytesIO(data))
    packed = store.import_layer(io.BytesIO(compress(data)))
    assert packed.diff_id == plain.diff_id
    assert store.layer_dir(packed.diff_id) == store.layer_dir(plain.diff_id)  # unpacked once, shared
    if kind == "gzip":
        assert packed.media_type.endswith("tar+gzip") and packed.digest != plain.digest
    assert len([p for p in store.snapshots_dir.iterdir() if not p.name.startswith(".")]) == 1


def test_register_layer_is_idempotent_and_verifies_diff_id(store: ImageStore) -> None:
    blob = gzip.compress(make_tar({"x": b"1"}))
    digest = store.put_bytes(blob)
    layer = store.register_layer(digest, "application/vnd.oci.image.layer.v1.tar+gzip")
    again = store.register_layer(digest, "application/vnd.oci.image.layer.v1.tar+gzip", layer.diff_id)
    assert again == layer
    other = store.put_bytes(gzip.compress(make_tar({"y": b"2"})))
    with pytest.raises(ShoalError, match="diff_id mismatch"):
        store.register_layer(other, "application/vnd.oci.image.layer.v1.tar+gzip", layer.diff_id)
    assert not any(p.name.startswith(".tmp-") for p in store.snapshots_dir.iterdir())


@pytest.mark.parametrize("name,problem", [
    ("../escape", "leaves the layer"),
    ("a/../../escape", "leaves the layer"),
    ("/etc/passwd", "absolute"),
])
def test_unsafe_paths_are_refused(store: ImageStore, tmp_path: Path, name: str, problem: str) -> None:
    with pytest.raises(ShoalError, match=problem):
        store.import_layer(io.BytesIO(make_tar({"ok": b"1", name: b"evil"})))
    assert not (tmp_path / "escape").exists()
    assert_store_empty(store)


def test_symlink_parent_is_refused(store: ImageStore, tmp_path: Path) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("out")
        link.type, link.linkname = tarfile.SYMTYPE, str(tmp_path)
        tar.addfile(link)
        info = tarfile.TarInfo("out/planted")
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(ShoalError, match="below a non-directory"):
        store.import_layer(io.BytesIO(buf.getvalue()))
    assert not (tmp_path / "planted").exists()


def test_hard_link_outside_the_layer_is_refused(store: ImageStore) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        link = tarfile.TarInfo("passwd")
        link.type, link.linkname = tarfile.LNKTYPE, "../../etc/passwd"
        tar.addfile(link)
    with pytest.raises(ShoalError, match="leaves the layer"):
        store.import_layer(io.BytesIO(buf.getvalue()))


def assert_store_empty(store: ImageStore) -> None:
    """Nothing committed and nothing half-made: no blob, no snapshot, no tmp, no image."""
    blobs = list(store.blobs_dir.iterdir()) if store.blobs_dir.exists() else []
    snaps = list(store.snapshots_dir.iterdir()) if store.snapshots_dir.exists() else []
    ingest = list(store.ingest_dir.iterdir()) if store.ingest_dir.exists() else []
    assert (blobs, snaps, ingest, store.list()) == ([], [], [], [])


@pytest.mark.parametrize("mangle", [
    lambda data: data[: len(data) // 2],  # truncated inside a member
    lambda data: gzip.compress(data)[:-30],  # truncated gzip stream
    lambda data: b"\x00garbage" * 200,  # not a tar at all
    lambda data: data[:100] + b"\xff" * 412 + data[512:],  # corrupt header checksum
    lambda data: b"",  # empty file
])
def test_corrupt_or_truncated_tar_leaves_nothing(store: ImageStore, mangle) -> None:  # type: ignore[no-untyped-def]
    data = make_tar({"big": os.urandom(50000), "small": b"s"})
    with pytest.raises(ShoalError):
        store.import_layer(io.BytesIO(mangle(data)))
    assert_store_empty(store)


def test_layer_from_dir_is_deterministic_and_moves_upper(store: ImageStore, tmp_path: Path) -> None:
    def build(where: Path) -> Path:
        (where / "app").mkdir(parents=True)
        (where / "app" / "main.py").write_text("print('hi')\n")
        (where / "app" / "link").symlink_to("main.py")
        os.link(where / "app" / "main.py", where / "app" / "hard.py")
        for p in (where / "app" / "main.py", where / "app", where):
            os.utime(p, (1700000000, 1700000000), follow_symlinks=False)
        return where

    first = store.layer_from_dir(build(tmp_path / "up1"))
    second = store.layer_from_dir(build(tmp_path / "up2"))
    assert first.diff_id == second.diff_id and first.digest == second.digest
    snap = store.layer_dir(first.diff_id)
    assert not (tmp_path / "up1").exists()  # moved into the store, not unpacked again
    assert (tmp_path / "up2").exists()  # already known: left for the caller to remove
    assert (snap / "app" / "main.py").read_text() == "print('hi')\n"
    assert os.readlink(snap / "app" / "link") == "main.py"
    assert os.stat(snap / "app" / "hard.py").st_ino == os.stat(snap / "app" / "main.py").st_ino
    with gzip.open(store.blob_path(first.digest)) as f:
        names = [m.name for m in tarfile.open(fileobj=f, mode="r|")]
    assert names == ["app", "app/hard.py", "app/link", "app/main.py"]


# --- images and names --------------------------------------------------------------------------


def test_create_resolve_by_every_name(store: ImageStore) -> None:
    image_id = import_image(store, {"f": b"1"}, ["web:v1", "localhost:5000/web:v1"])
    hex_id = image_id.split(":")[1]
    for name in ("web:v1", "docker.io/library/web:v1", "localhost:5000/web:v1", image_id, hex_id,
                 hex_id[:12], hex_id[:3], "sha256:" + hex_id[:5]):
        assert store.resolve(name).id == image_id, name
    image = store.resolve("web:v1")
    assert image.repo_tags == ["localhost:5000/web:v1", "web:v1"]
    assert image.size == 1 and image.created == 1704164645.0
    assert image.rootfs_dirs() == [store.layer_dir(image.layers[0].diff_id)]
    manifest = json.loads(store.read_blob(image.manifest_digest))
    assert manifest["config"]["digest"] == image_id
    assert manifest["layers"][0]["digest"] == image.layers[0].digest
    for missing in ("web:v2", "nothing", "f" * 12, "sha256:" + "0" * 64):
        with pytest.raises(NotFound, match=f"No such image: {missing}"):
            store.resolve(missing)
    with pytest.raises(InvalidArgument):
        store.resolve("Bad:Name")


def test_ambiguous_short_id_is_not_found(store: ImageStore) -> None:
    ids = [import_image(store, {"f": str(i).encode()}) for i in range(40)]
    prefixes = [i.split(":")[1][:1] for i in ids]
    shared = next(p for p in prefixes if prefixes.count(p) > 1)
    with pytest.raises(NotFound):
        store.resolve(shared)


def test_add_manifest_and_repo_digest(store: ImageStore) -> None:
    image = store.resolve(import_image(store, {"f": b"1"}))
    manifest = store.read_blob(image.manifest_digest)
    pulled = store.add_manifest(manifest, store.read_blob(image.id), tags=["localhost:5000/app:1"],
                                repo_digest="localhost:5000/app")
    assert pulled.id == image.id
    assert pulled.repo_digests == [f"localhost:5000/app@{image.manifest_digest}"]
    assert store.resolve(f"localhost:5000/app@{image.manifest_digest}").id == image.id


def test_add_manifest_refuses_mismatched_config(store: ImageStore) -> None:
    image = store.resolve(import_image(store, {"f": b"1"}))
    config = json.loads(store.read_blob(image.id))
    config["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    with pytest.raises(ShoalError, match="diff_id mismatch|config digest mismatch"):
        store.add_manifest(store.read_blob(image.manifest_digest), json.dumps(config).encode(), tags=["x:1"])
    with pytest.raises(NotFound):
        store.resolve("x:1")


def test_tag_moves_and_untag(store: ImageStore) -> None:
    a = import_image(store, {"a": b"1"}, ["app:latest"])
    b = import_image(store, {"b": b"2"})
    store.tag(b, "app")
    assert store.resolve("app").id == b
    assert store.get(a).repo_tags == []  # a is dangling now
    store.untag("app:latest")
    with pytest.raises(NotFound):
        store.resolve("app")
    with pytest.raises(InvalidArgument):
        store.tag(b, "app@sha256:" + "f" * 64)


# --- removal -----------------------------------------------------------------------------------


def test_rmi_untags_then_deletes_with_docker_lines(store: ImageStore) -> None:
    image_id = import_image(store, {"f": b"1"}, ["web:v1", "web:v2"])
    diff_id = store.get(image_id).layers[0].diff_id
    assert store.remove("web:v1") == ["Untagged: web:v1"]
    assert store.remove("web:v2") == ["Untagged: web:v2", f"Deleted: {image_id}", f"Deleted: {diff_id}"]
    assert store.list() == []
    assert list(p for p in store.snapshots_dir.iterdir()) == []
    assert list(store.blobs_dir.iterdir()) == []


def test_rmi_by_id_with_several_repositories_must_force(store: ImageStore) -> None:
    image_id = import_image(store, {"f": b"1"}, ["web:v1", "api:v1"])
    short = image_id.split(":")[1][:12]
    with pytest.raises(Conflict, match=f"conflict: unable to delete {short} \\(must be forced\\) - "
                       "image is referenced in multiple repositories"):
        store.remove(short)
    lines = store.remove(short, force=True)
    assert sorted(lines[:2]) == ["Untagged: api:v1", "Untagged: web:v1"]
    assert lines[2] == f"Deleted: {image_id}"


def test_rmi_keeps_shared_layers(store: ImageStore) -> None:
    base = store.import_layer(io.BytesIO(make_tar({"base": b"b"})))
    top1 = store.import_layer(io.BytesIO(make_tar({"one": b"1"})))
    top2 = store.import_layer(io.BytesIO(make_tar({"two": b"2"})))
    cfg = {"architecture": "amd64", "os": "linux"}
    store.create_image(cfg, [base, top1], tags=["one:1"])
    store.create_image({**cfg, "x": 1}, [base, top2], tags=["two:1"])
    lines = store.remove("one:1")
    assert lines[-1] == f"Deleted: {chain_id([base.diff_id, top1.diff_id])}"
    assert len(lines) == 3  # untagged, image, the top layer only
    assert store.layer_dir(base.diff_id).is_dir()
    assert store.resolve("two:1").rootfs_dirs()[1] == store.layer_dir(base.diff_id)


def test_rmi_refused_for_an_image_a_container_uses(store: ImageStore) -> None:
    image_id = import_image(store, {"f": b"1"}, ["web:v1"])
    cid = "c0ffee" + "0" * 58
    write_container(store, cid, image_id)
    with pytest.raises(Conflict) as info:
        store.remove("web:v1")
    assert str(info.value) == (f'conflict: unable to remove repository reference "web:v1" (must force) - '
                               f"container c0ffee000000 is using its referenced image {image_id[7:19]}")
    with pytest.raises(Conflict, match="must be forced\\) - image is being used by stopped container c0ffee000000"):
        store.remove(image_id[7:19])
    assert store.resolve("web:v1").id == image_id
    lines = store.remove("web:v1", force=True)
    assert lines == ["Untagged: web:v1", f"Deleted: {image_id}"]
    assert store.list() == []
    kept = store.get(image_id)  # the container still has its layers
    assert kept.rootfs_dirs()[0].is_dir()
    for gone in (store.remove, lambda i: store.tag(i, "again:1")):
        with pytest.raises(NotFound):
            gone(image_id)
    store.prune()
    assert store.get(image_id).rootfs_dirs()[0].is_dir()  # still used: prune keeps it
    (store.containers_dir / cid / "container.json").unlink()
    store.prune()
    with pytest.raises(NotFound):
        store.get(image_id)
    assert [p for p in store.snapshots_dir.iterdir()] == []


def test_running_container_cannot_be_forced(store: ImageStore) -> None:
    image_id = import_image(store, {"f": b"1"}, ["web:v1"])
    write_container(store, "beef" + "0" * 60, image_id, status="running")
    with pytest.raises(Conflict, match="cannot be forced\\) - image is being used by running container beef00000000"):
        store.remove(image_id, force=True)


def test_child_image_blocks_removal_of_parent(store: ImageStore) -> None:
    parent = import_image(store, {"p": b"1"}, ["base:1"])
    import_image(store, {"c": b"2"}, ["child:1"], parent=parent)
    assert store.remove("base:1") == ["Untagged: base:1"]  # untagged, kept for its child
    assert store.get(parent).repo_tags == []
    with pytest.raises(Conflict, match="image has dependent child images"):
        store.remove(parent, force=True)


def test_prune_dangling_then_all(store: ImageStore) -> None:
    dangling = import_image(store, {"d": b"1"})
    tagged = import_image(store, {"t": b"2"}, ["keep:1"])
    used = import_image(store, {"u": b"3"}, ["used:1"])
    write_container(store, "ab" * 32, used)
    records, reclaimed = store.prune_records()
    assert records == [f"deleted: {dangling}"]
    assert reclaimed > 0
    assert {i.id for i in store.list()} == {tagged, used}
    records, _ = store.prune_records(all=True)
    assert records == ["untagged: keep:1", f"deleted: {tagged}"]
    assert [i.id for i in store.list()] == [used]


def test_prune_collects_layers_of_dead_processes_only(store: ImageStore, tmp_path: Path) -> None:
    layer = store.import_layer(io.BytesIO(make_tar({"orphan": b"1"})))
    store.prune()  # leased by this (live) process: an image may still be coming
    assert store.layer_dir(layer.diff_id).is_dir()
    data = json.loads(store.layers_path.read_text())
    data["layers"][layer.diff_id]["pid"] = 2 ** 22 + 1  # a pid that cannot be alive
    store.layers_path.write_text(json.dumps(data))
    store.prune()
    with pytest.raises(NotFound):
        store.layer_dir(layer.diff_id)
    assert not store.has_blob(layer.digest)


def test_stale_tmp_snapshot_is_collected(store: ImageStore) -> None:
    store.snapshots_dir.mkdir(parents=True)
    stale = store.snapshots_dir / ".tmp-1-abc"
    (stale / "usr").mkdir(parents=True)
    (stale / "usr" / "f").write_bytes(b"z" * 10)
    _, reclaimed = store.prune()
    assert not stale.exists() and reclaimed >= 10


def test_layer_dataclass_fields() -> None:
    layer = Layer("sha256:a", "sha256:b", "t", 1, 2)
    assert (layer.digest, layer.diff_id, layer.media_type, layer.size, layer.unpacked_size) == \
        ("sha256:a", "sha256:b", "t", 1, 2)


def test_crash_leftovers_are_collected_and_images_kept(store: ImageStore) -> None:
    """What a crash can leave: a numbered snapshot renamed but never recorded, a trash dir from
    an interrupted delete, an index tmp file. prune removes them and nothing in use."""
    image_id = import_image(store, {"keep": b"k"}, ["keep:1"])
    orphan = store.snapshots_dir / "999"
    (orphan / "etc").mkdir(parents=True)
    trash = store.snapshots_dir / ".trash-abc"
    trash.mkdir()
    tmp_index = store.root / ".index.json.tmp-1-ab"
    tmp_index.write_text("{")
    store.prune()
    assert not orphan.exists() and not trash.exists() and not tmp_index.exists()
    assert store.resolve("keep:1").rootfs_dirs()[0].is_dir()
    assert store.resolve("keep:1").id == image_id


def test_a_damaged_image_is_listed_and_removable(store: ImageStore) -> None:
    image_id = import_image(store, {"f": b"1"}, ["damaged:1"])
    store.blob_path(image_id).unlink()  # its config lost behind shoal's back
    fresh = ImageStore(store.root)
    (listed,) = fresh.list()
    assert listed.id == image_id and listed.repo_tags == ["damaged:1"]
    with pytest.raises(NotFound):
        fresh.resolve("damaged:1")
    assert fresh.remove("damaged:1")[:2] == ["Untagged: damaged:1", f"Deleted: {image_id}"]
    assert fresh.list() == []


def test_prune_filters_until_and_label(store: ImageStore) -> None:
    from shoal.cli.image import parse_until

    old = import_image(store, {"o": b"1"}, ["old:1"], label="a", created="2020-01-01T00:00:00Z")
    new = import_image(store, {"n": b"2"}, ["new:1"], label="b", created="2030-01-01T00:00:00Z")
    records, _ = store.prune_records(all=True, labels=["n=b"])
    assert records == ["untagged: new:1", f"deleted: {new}"]
    records, _ = store.prune_records(all=True, until=parse_until("2025-01-01T00:00:00Z"), labels=["n!=b"])
    assert records == ["untagged: old:1", f"deleted: {old}"]
    assert parse_until("1h30m", now=10000.0) == 10000.0 - 5400
    assert parse_until("1700000000") == 1700000000.0
    with pytest.raises(InvalidArgument):
        parse_until("yesterday")


def test_concurrent_imports_of_one_layer_share_one_snapshot(store: ImageStore, tmp_path: Path) -> None:
    import subprocess
    import sys
    import textwrap

    tar = tmp_path / "layer.tar"
    tar.write_bytes(make_tar({f"f{i}": os.urandom(20000) for i in range(50)}))
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from shoal.image.store import ImageStore
        store = ImageStore(Path({str(store.root)!r}))
        with open({str(tar)!r}, "rb") as f:
            layer = store.import_layer(f)
        store.create_image({{"os": "linux", "n": sys.argv[1]}}, [layer], tags=[f"par:{{sys.argv[1]}}"])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(n)]) for n in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 4
    assert [p.name for p in store.snapshots_dir.iterdir()] == ["1"]
    assert len(json.loads(store.layers_path.read_text())["layers"]) == 1
    assert len(store.list()) == 4
    assert len({tuple(i.rootfs_dirs()) for i in store.list()}) == 1
