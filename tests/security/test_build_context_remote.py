"""A client's build context on a node's daemon (POST /build, over its real unix socket, as any
tcp:// client reaches it): the context's symlinks are followed inside the context only, as
moby's remotecontext opens the Dockerfile and .dockerignore. Before, `?dockerfile=sub/f` with
`sub -> /some/host/dir` in the tar made the daemon parse a file of its own host and send its
lines back in the parse error, and a `.dockerignore` linking to a host file was read as the
context's patterns (a bad one ended the build with an empty answer and a traceback)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT_ONLY, teardown_root, terminate

from shoal.api.client import Client

pytestmark = [ROOT_ONLY, pytest.mark.root]

SECRET = "HOSTONLY"


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Path]:
    env = dict(os.environ, SHOAL_ROOT=str(tmp_path / "root"), SHOAL_RUN=str(tmp_path / "run"),
               SHOAL_DEFAULT_ADDRESS_POOLS="10.219.0.0/16:24")
    env.pop("SHOAL_SOCKET", None)
    sock = tmp_path / "run" / "shoal.sock"
    log = tmp_path / "shoald.log"
    proc = subprocess.Popen([sys.executable, "-m", "shoal", "daemon"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not Client(sock).ping():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield sock
        assert proc.poll() is None, "shoald died:\n" + log.read_text()[-3000:]
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    finally:
        terminate(proc, 10)
        teardown_root(tmp_path / "root", tmp_path / "run")


def _context(entries: list[tuple[str, bytes | None, str]]) -> bytes:
    """(name, data, link target): a file when data is given, else a symlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, target in entries:
            info = tarfile.TarInfo(name)
            if data is None:
                info.type, info.linkname = tarfile.SYMTYPE, target
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _build(sock: Path, context: bytes, query: str = "") -> tuple[int, str]:
    proc = subprocess.run(["curl", "-s", "-w", "\n%{http_code}", "--unix-socket", str(sock), "-X", "POST",
                           "-H", "Content-Type: application/x-tar", "--data-binary", "@-",
                           f"http://shoald/v1/build{query}"], input=context, capture_output=True, timeout=120)
    body, _, status = proc.stdout.decode().rpartition("\n")
    return int(status), body


def test_dockerfile_through_a_symlinked_dir_is_not_read_from_the_host(daemon: Path, tmp_path: Path) -> None:
    host = tmp_path / "hostdir"
    host.mkdir()
    (host / "f").write_text(f"{SECRET} first line of a host file\n")
    for link in (str(host), "../../../../../../../../.." + str(host)):
        status, body = _build(daemon, _context([("sub", None, link)]), "?dockerfile=sub/f")
        assert SECRET not in body, "the daemon read a host file as the Dockerfile: " + body
        assert status == 400 and "must be a regular file in the build context" in body, body


def test_dockerfile_link_inside_the_context_is_followed(daemon: Path) -> None:
    """The link is followed, inside the context: `Dockerfile -> build/Dockerfile.real` builds."""
    ctx = _context([("build/Dockerfile.real", b"FROM scratch\nCOPY build /b/\n", ""),
                    ("Dockerfile", None, "build/Dockerfile.real")])
    status, body = _build(daemon, ctx)
    assert status == 200 and '"aux"' in body, body


def test_dockerignore_linking_to_a_host_file_is_not_read(daemon: Path, tmp_path: Path) -> None:
    (tmp_path / "patterns").write_text(f"{SECRET}[\nkeep\n")
    ctx = _context([("Dockerfile", b"FROM scratch\nCOPY . /c/\n", ""), ("keep", b"k\n", ""),
                    (".dockerignore", None, str(tmp_path / "patterns"))])
    status, body = _build(daemon, ctx)
    assert SECRET not in body, body
    assert status == 200 and '"aux"' in body, body  # the host's patterns are no patterns of the context
