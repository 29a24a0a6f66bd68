"""Issue 10 item 7: an image's symlinks are followed inside the container's root, never on the
host. shoal itself makes the working directory and copies a volume's first contents before the
container runs, on the host side of the root filesystem: a hostile image (`/srv -> /`, or a
link to an absolute host path) must not make those land on, or read from, the host.

Images are made here with `shoal import` of a tar crafted for the case; the "host" is a temp
directory of the test's own holding a marker file, so nothing relies on the machine's /etc."""

from __future__ import annotations

import io
import shutil
import tarfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT_ONLY

pytestmark = [pytest.mark.root, ROOT_ONLY]

MARKER = "host-only marker: must never be seen by a container\n"


@pytest.fixture
def host_dir(tmp_path: Path) -> Path:
    """A host directory with a marker file, standing for the host's files."""
    d = tmp_path / "hostonly"
    d.mkdir()
    (d / "marker").write_text(MARKER)
    (d / "etc").mkdir()
    (d / "etc" / "host-file").write_text(MARKER)
    return d


def _image(shoal, busybox_tar: Path, tmp_path: Path, links: dict[str, str], changes: tuple[str, ...] = ()) -> str:
    """The busybox files plus these symlinks (path in the image -> link target)."""
    path = tmp_path / f"img-{uuid.uuid4().hex[:8]}.tar"
    shutil.copy(busybox_tar, path)
    with tarfile.open(path, "a") as tar:
        for name, target in links.items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = target
            tar.addfile(info)
    ref = f"localhost/shoal-symlinks-{path.stem}:test"
    args = ["import"]
    for change in changes:
        args += ["-c", change]
    shoal(*args, str(path), ref, check=True)
    return ref


@pytest.fixture
def volume() -> Iterator[str]:
    name = f"shoal-symlink-vol-{uuid.uuid4().hex[:8]}"
    yield name
    from shoal.runtime import volumes

    volumes.remove(name)


def _run(shoal, *args: str):
    return shoal("run", "--rm", "--network", "none", *args)


def test_volume_copy_up_does_not_follow_an_image_link_to_the_host(shoal, busybox_tar: Path, tmp_path: Path,
                                                                  host_dir: Path, volume: str) -> None:
    """/srv points at an absolute host path: the volume at /srv/etc starts with what the image
    has there (nothing), not with the host directory's files."""
    image = _image(shoal, busybox_tar, tmp_path, {"srv": str(host_dir)})
    proc = _run(shoal, "-v", f"{volume}:/srv/etc", image, "ls", "-A", "/srv/etc")
    from shoal.runtime import volumes

    assert list(volumes.data_dir(volume).iterdir()) == []  # the host file was not copied in
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == ""
    assert (host_dir / "etc" / "host-file").read_text() == MARKER


def test_volume_copy_up_through_a_link_to_root_copies_the_images_files(shoal, busybox_tar: Path, tmp_path: Path,
                                                                       volume: str) -> None:
    """`/srv -> /` with a volume at /srv/etc: the image's /etc (its passwd), not the host's."""
    image = _image(shoal, busybox_tar, tmp_path, {"srv": "/"})
    proc = _run(shoal, "-v", f"{volume}:/srv/etc", image, "ls", "-A", "/srv/etc")
    assert proc.returncode == 0, proc.stderr
    from shoal.runtime import volumes

    data = volumes.data_dir(volume)
    assert sorted(p.name for p in data.iterdir()) == ["group", "passwd"]
    assert (data / "passwd").read_text().startswith("root:x:0:0:root:/root:/bin/sh\napp:x:1000")
    assert sorted(proc.stdout.split()) == ["group", "passwd"]


def test_bind_mounts_through_a_link_land_inside_the_root(shoal, busybox_tar: Path, tmp_path: Path,
                                                          host_dir: Path) -> None:
    """A file (as a swarm secret is) and a directory bind-mounted under `/srv -> <host dir>`:
    their mount points are made inside the container's root, nothing in the host directory."""
    secret = tmp_path / "secret.txt"
    secret.write_text("s3cret\n")
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "f").write_text("shared\n")
    image = _image(shoal, busybox_tar, tmp_path, {"srv": str(host_dir)})
    proc = _run(shoal, "-v", f"{secret}:/srv/run/secrets/token:ro", "-v", f"{shared}:/srv/data",
                "--tmpfs", "/srv/scratch", image, "cat", "/srv/run/secrets/token", "/srv/data/f")
    assert sorted(p.name for p in host_dir.iterdir()) == ["etc", "marker"]
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "s3cret\nshared\n"


def test_workdir_through_a_link_stays_in_the_root(shoal, busybox_tar: Path, tmp_path: Path, host_dir: Path) -> None:
    """-w and the image's WORKDIR through `/srv -> <host dir>` and `/up -> /`: made inside the
    container's root, nothing appears in the host directory."""
    name = f"wd-{uuid.uuid4().hex[:8]}"
    image = _image(shoal, busybox_tar, tmp_path, {"srv": str(host_dir), "up": "/"},
                   changes=(f"WORKDIR /srv/{name}-image",))
    proc = _run(shoal, image, "pwd")
    assert sorted(p.name for p in host_dir.iterdir()) == ["etc", "marker"]  # nothing made on the host
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{host_dir}/{name}-image"  # the path as the container sees it
    proc = _run(shoal, "-w", f"/srv/{name}-flag", image, "pwd")
    assert sorted(p.name for p in host_dir.iterdir()) == ["etc", "marker"]
    assert proc.returncode == 0, proc.stderr


def test_workdir_with_dot_dots_stays_in_the_root(shoal, busybox_image: str, busybox_tar: Path, tmp_path: Path) -> None:
    """`..` past the root stays at the root, as the kernel's own lookup inside a chroot."""
    escape = tmp_path / f"escape-{uuid.uuid4().hex[:8]}"
    ups = "/.." * 40
    proc = _run(shoal, "-w", f"{ups}{escape}", busybox_image, "pwd")
    try:
        assert not escape.exists()
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == str(escape)
        image = _image(shoal, busybox_tar, tmp_path, {"up": "/"})
        proc = _run(shoal, "-w", f"/up/../../../up/up{escape}-2", image, "pwd")
        assert proc.returncode == 0, proc.stderr
        assert not Path(f"{escape}-2").exists()
    finally:
        for p in (escape, Path(f"{escape}-2")):
            if p.is_dir():
                p.rmdir()


def test_workdir_that_is_a_file_is_refused(shoal, busybox_image: str) -> None:
    proc = _run(shoal, "-w", "/etc/passwd", busybox_image, "pwd")
    assert proc.returncode != 0
    assert "Cannot mkdir: /etc/passwd is not a directory" in proc.stderr


def test_etc_hosts_link_to_the_host_is_not_written(shoal, busybox_tar: Path, tmp_path: Path, host_dir: Path) -> None:
    """The runtime bind-mounts /etc/hosts, /etc/resolv.conf and /etc/hostname; an image whose
    /etc/hosts points at a host file gets its mount inside its own root (crun resolves mount
    destinations there), and the host file is neither changed nor shown."""
    image = _image(shoal, busybox_tar, tmp_path, {"etc/hosts": f"{host_dir}/marker"})
    proc = _run(shoal, image, "cat", "/etc/hosts", f"{host_dir}/marker")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("127.0.0.1\tlocalhost\n") and "host-only" not in proc.stdout
    assert (host_dir / "marker").read_text() == MARKER


def test_resolve_in_root_unit(tmp_path: Path) -> None:
    from shoal.errors import ShoalError
    from shoal.runtime.mounts import mkdirs_in_root, resolve_in_root

    root = tmp_path / "root"
    (root / "real").mkdir(parents=True)
    (root / "abs").symlink_to("/")
    (root / "rel").symlink_to("../../..")
    (root / "chain").symlink_to("abs/real")
    (root / "loop").symlink_to("loop")
    (root / "file").write_text("x")
    assert resolve_in_root(root, "/abs/etc") == root / "etc"
    assert resolve_in_root(root, "/rel/real/x") == root / "real" / "x"
    assert resolve_in_root(root, "/chain/../real") == root / "real"
    assert resolve_in_root(root, "../../x/./y/..") == root / "x"
    with pytest.raises(ShoalError, match="too many levels"):
        resolve_in_root(root, "/loop/x")
    assert mkdirs_in_root(root, "/abs/new/dir") == root / "new" / "dir"
    assert (root / "new" / "dir").is_dir()
    with pytest.raises(ShoalError, match="Cannot mkdir: /file/x is not a directory"):
        mkdirs_in_root(root, "/file/x")
