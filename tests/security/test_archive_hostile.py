"""Hostile layer tars (issue 10, session 8's archive items): whatever entries an image's layer,
an ADD'ed tar or a `cp -` tar holds, the unpacker writes only inside its own directory. The
cases here are the ones that got through before: a directory entry replaced by a later symlink
to the host had its modification time set through that link when the layer was finished."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import textwrap
import uuid
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
