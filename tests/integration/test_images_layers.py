"""Layer snapshots used for real: whiteouts and opaque dirs unpacked, mounted with overlayfs and
read back; file metadata kept; an overlay upperdir turned into a layer and back."""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT_ONLY
from shoal.image.layers import OPAQUE_XATTR
from shoal.image.store import ImageStore

pytestmark = [ROOT_ONLY]


@pytest.fixture()
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "image")


class TarBuilder:
    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.tar = tarfile.open(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def add(self, name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644,
            **attrs: object) -> TarBuilder:
        info = tarfile.TarInfo(name)
        info.type, info.mode, info.mtime = kind, mode, attrs.pop("mtime", 1600000000)  # type: ignore[assignment]
        for key, value in attrs.items():
            setattr(info, key, value)
        if kind == tarfile.REGTYPE:
            info.size = len(data)
            self.tar.addfile(info, io.BytesIO(data))
        else:
            self.tar.addfile(info)
        return self

    def dir(self, name: str, mode: int = 0o755, **attrs: object) -> TarBuilder:
        return self.add(name, tarfile.DIRTYPE, mode=mode, **attrs)

    def bytes(self) -> bytes:
        self.tar.close()
        return self.buf.getvalue()


@contextlib.contextmanager
def overlay(tmp_path: Path, lowers: list[Path], upper: Path | None = None) -> Iterator[Path]:
    """A real overlayfs mount (lowerdirs top first), always unmounted."""
    merged = tmp_path / f"merged-{len(list(tmp_path.glob('merged-*')))}"
    merged.mkdir()
    options = "lowerdir=" + ":".join(str(p) for p in lowers)
    if upper is not None:
        work = upper.parent / (upper.name + ".work")
        work.mkdir(exist_ok=True)
        options += f",upperdir={upper},workdir={work}"
    subprocess.run(["mount", "-t", "overlay", "shoal-test", "-o", options, str(merged)], check=True)
    try:
        yield merged
    finally:
        subprocess.run(["umount", str(merged)], check=True)


def test_whiteouts_and_opaque_dirs_through_overlayfs(store: ImageStore, tmp_path: Path) -> None:
    base = (TarBuilder().dir("etc").add("etc/a", data=b"a").add("etc/b", data=b"b")
            .dir("opq").add("opq/old", data=b"old").dir("opq/sub").add("opq/sub/deep", data=b"d")
            .dir("keep").add("keep/x", data=b"x").bytes())
    top = (TarBuilder().dir("etc").add("etc/.wh.a").dir("opq").add("opq/.wh..wh..opq")
           .add("opq/new", data=b"new").add(".wh.keep").bytes())
    lower = store.import_layer(io.BytesIO(gzip.compress(base)))
    upper = store.import_layer(io.BytesIO(top))
    snap = store.layer_dir(upper.diff_id)
    st = os.lstat(snap / "etc" / "a")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == 0
    assert os.getxattr(snap / "opq", OPAQUE_XATTR) == b"y"
    assert not (snap / "opq" / ".wh..wh..opq").exists() and not (snap / "etc" / ".wh.a").exists()
    image = store.create_image({"architecture": "amd64", "os": "linux"}, [lower, upper], tags=["wh:1"])
    with overlay(tmp_path, image.rootfs_dirs()) as merged:
        assert sorted(os.listdir(merged)) == ["etc", "opq"]
        assert sorted(os.listdir(merged / "etc")) == ["b"]
        assert sorted(os.listdir(merged / "opq")) == ["new"]
        assert (merged / "opq" / "new").read_bytes() == b"new"
        assert (merged / "etc" / "b").read_bytes() == b"b"


def test_metadata_is_kept(store: ImageStore) -> None:
    data = (TarBuilder()
            .dir("bin", mode=0o755)
            .add("bin/su", data=b"#!", mode=0o4755, uid=0, gid=0)
            .add("bin/ping", data=b"p", mode=0o755, pax_headers={
                "SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00",
                "SCHILY.xattr.user.note": "hello"})
            .dir("home").dir("home/app", mode=0o700, uid=1000, gid=1000)
            .add("home/app/file", data=b"mine", mode=0o600, uid=1000, gid=1000, mtime=1234567890)
            .add("home/app/link", tarfile.SYMTYPE, linkname="/etc/passwd", uid=1000, gid=1000)
            .add("home/app/hard", tarfile.LNKTYPE, linkname="home/app/file")
            .dir("dev").add("dev/null", tarfile.CHRTYPE, mode=0o666, devmajor=1, devminor=3)
            .add("dev/fifo", tarfile.FIFOTYPE, mode=0o600)
            .bytes())
    layer = store.import_layer(io.BytesIO(data))
    snap = store.layer_dir(layer.diff_id)
    assert stat.S_IMODE(os.stat(snap / "bin" / "su").st_mode) == 0o4755
    assert os.getxattr(snap / "bin" / "ping", "user.note") == b"hello"
    assert os.getxattr(snap / "bin" / "ping", "security.capability")[:4] == b"\x01\x00\x00\x02"
    app = os.stat(snap / "home" / "app")
    assert (app.st_uid, app.st_gid, stat.S_IMODE(app.st_mode), int(app.st_mtime)) == (1000, 1000, 0o700, 1600000000)
    f = os.stat(snap / "home" / "app" / "file")
    assert (f.st_uid, stat.S_IMODE(f.st_mode), int(f.st_mtime), f.st_nlink) == (1000, 0o600, 1234567890, 2)
    assert os.stat(snap / "home" / "app" / "hard").st_ino == f.st_ino
    link = os.lstat(snap / "home" / "app" / "link")
    assert os.readlink(snap / "home" / "app" / "link") == "/etc/passwd" and link.st_uid == 1000
    null = os.lstat(snap / "dev" / "null")
    assert stat.S_ISCHR(null.st_mode) and (os.major(null.st_rdev), os.minor(null.st_rdev)) == (1, 3)
    assert stat.S_ISFIFO(os.lstat(snap / "dev" / "fifo").st_mode)
    assert layer.unpacked_size == 2 + 1 + 4


def test_upperdir_becomes_a_layer_and_mounts_the_same(store: ImageStore, tmp_path: Path) -> None:
    base = store.import_layer(io.BytesIO(
        TarBuilder().dir("etc").add("etc/a", data=b"a").add("etc/b", data=b"b")
        .dir("data").add("data/old1", data=b"1").add("data/old2", data=b"2").bytes()))
    base_dir = store.layer_dir(base.diff_id)
    upper = tmp_path / "upper"
    upper.mkdir()
    with overlay(tmp_path, [base_dir], upper) as merged:
        (merged / "etc" / "a").unlink()
        (merged / "etc" / "c").write_text("c")
        subprocess.run(["rm", "-rf", str(merged / "data")], check=True)
        (merged / "data").mkdir()
        (merged / "data" / "fresh").write_text("fresh")
        expected = {p.relative_to(merged).as_posix(): (p.read_bytes() if p.is_file() else None)
                    for p in sorted(merged.rglob("*"))}
    layer = store.layer_from_dir(upper)
    with gzip.open(store.blob_path(layer.digest)) as f:
        names = sorted(m.name for m in tarfile.open(fileobj=f, mode="r|"))
    assert "etc/.wh.a" in names and "data/.wh..wh..opq" in names and "etc/c" in names
    assert not any("trusted.overlay" in n for n in names)
    image = store.create_image({"architecture": "amd64", "os": "linux"}, [base, layer], tags=["built:1"])
    with overlay(tmp_path, image.rootfs_dirs()) as merged:
        again = {p.relative_to(merged).as_posix(): (p.read_bytes() if p.is_file() else None)
                 for p in sorted(merged.rglob("*"))}
    assert again == expected
    assert "data/old1" not in again and "etc/a" not in again and again["data/fresh"] == b"fresh"
    # The same layer through a tar round trip gives the same diff_id (pull/load of a build).
    other = ImageStore(tmp_path / "other")
    with open(store.blob_path(layer.digest), "rb") as f:
        assert other.import_layer(f).diff_id == layer.diff_id
