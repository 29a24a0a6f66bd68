"""Issue 10 item 3: shoal's state is root's alone. A local user must not run a set-uid-root binary
out of an unpacked layer, nor read a container's config.json (its environment) or its log, and a
root left 0755 by an older shoal is tightened by the next command. Containers running as another
uid still work: they never reach their files through these host paths.

Each case runs against a state root in a world-traversable place (pytest's own temporary
directories are 0700, which would hide what shoal does), and the unprivileged side is a real
process as `nobody` (uid/gid 65534, no supplementary groups)."""

from __future__ import annotations

import errno
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT_ONLY, stop_daemon, teardown_root

pytestmark = ROOT_ONLY
NOBODY = 65534
SECRET_ENV = "PASSWORD=shoal-h2-modes-8f3c1a"


class Root:
    """One private state root and the CLI against it."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "root"
        self.run = base / "run"
        self.env = dict(os.environ, SHOAL_ROOT=str(self.root), SHOAL_RUN=str(self.run))
        self.env.pop("SHOAL_SOCKET", None)

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "shoal", *args], env=self.env, capture_output=True,
                              text=True, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(f"shoal {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc


def as_nobody(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run argv as uid/gid 65534 with no supplementary groups. An exec refused by the kernel
    raises PermissionError here (the child reports its errno before exec)."""
    return subprocess.run(list(argv), user=NOBODY, group=NOBODY, extra_groups=[], capture_output=True,
                          text=True, timeout=30, cwd="/")


@pytest.fixture(scope="module")
def state(busybox_tar: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Root]:
    base = Path(tempfile.mkdtemp(prefix="shoal-modes-", dir="/tmp"))
    os.chmod(base, 0o755)  # anyone may traverse to the roots: only their own modes protect them
    r = Root(base)
    r.root.mkdir()
    os.chmod(r.root, 0o755)  # as an older shoal made it
    # The image: busybox plus a set-uid-root copy of the host's `id` (prints the effective uid).
    layer = tmp_path_factory.mktemp("suid") / "suid.tar"
    shutil.copy(busybox_tar, layer)
    with tarfile.open(layer, "a") as tar:
        host_id = shutil.which("id") or "/usr/bin/id"
        info = tar.gettarinfo(host_id, arcname="bin/suid-id")
        info.mode, info.uid, info.gid, info.uname, info.gname = 0o4755, 0, 0, "root", "root"
        with open(host_id, "rb") as f:
            tar.addfile(info, f)
    try:
        r("import", str(layer), "localhost/suid:test")
        yield r
    finally:
        for cid in r("ps", "-aq", check=False).stdout.split():
            r("rm", "-f", cid, check=False)
        stop_daemon(r.run)
        teardown_root(r.root, r.run)
        for line in reversed(Path("/proc/mounts").read_text().splitlines()):
            if str(base) in line:
                subprocess.run(["umount", "-l", line.split()[1]], check=False)
        shutil.rmtree(base, ignore_errors=True)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_roots_are_root_only_and_an_old_0755_root_is_tightened(state: Root) -> None:
    assert _mode(state.root) == 0o700
    assert state.root.stat().st_uid == 0


def test_nobody_cannot_run_a_setuid_binary_from_an_unpacked_layer(state: Root) -> None:
    # Sanity: the host's copy runs for nobody, so a refusal below is the state root's doing.
    assert as_nobody(shutil.which("id") or "/usr/bin/id", "-u").stdout.strip() == str(NOBODY)
    found = [p for p in state.root.rglob("suid-id") if p.is_file()]
    assert found, "the layer's set-uid binary was not unpacked"
    for path in found:
        assert path.stat().st_mode & stat.S_ISUID, f"{path} lost its set-uid bit (test would prove nothing)"
        try:
            proc = as_nobody(str(path), "-u")
        except PermissionError as exc:
            assert exc.errno == errno.EACCES
            continue
        pytest.fail(f"nobody ran {path}: euid={proc.stdout.strip()}")


def test_nobody_cannot_read_a_running_containers_config_or_log(state: Root) -> None:
    cid = state("run", "-d", "-e", SECRET_ENV, "localhost/suid:test", "sh", "-c",
                "echo shoal-h2-log-line; exec sleep 300").stdout.strip()
    try:
        deadline = time.monotonic() + 10
        while "shoal-h2-log-line" not in state("logs", cid).stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        configs = [p for p in (state.root, state.run) for p in p.rglob("config.json") if cid in str(p)]
        logs = [p for p in state.root.rglob("ctr.log") if cid in str(p)]
        assert configs and logs
        assert _mode(state.run) == 0o700
        assert any(SECRET_ENV in p.read_text() for p in configs), "root reads the environment there"
        for path in configs + logs:
            proc = as_nobody("/bin/cat", str(path))
            assert proc.returncode != 0 and "Permission denied" in proc.stderr, f"nobody read {path}"
        # The merged rootfs of the running container holds the set-uid binary too.
        merged = [p for p in state.root.rglob("suid-id") if cid in str(p)]
        assert merged
        for path in merged:
            with pytest.raises(PermissionError):
                as_nobody(str(path), "-u")
        # Files shoal writes itself carry deliberate modes, not the umask's.
        for path in configs:
            if state.root in path.parents:  # crun keeps its own copy 0700 under run/crun/<id>/
                assert _mode(path) == 0o600, path
        assert _mode(next(p for p in state.root.rglob("container.json") if cid in str(p))) == 0o600
    finally:
        state("rm", "-f", cid, check=False)


def test_a_container_running_as_another_uid_still_reads_and_writes_its_files(state: Root) -> None:
    proc = state("run", "--rm", "--user", "1000:1000", "localhost/suid:test", "sh", "-c",
                 "id -u; cat /etc/hostname >/dev/null && head -1 /etc/passwd && grep -c . /etc/hosts >/dev/null"
                 " && echo mine > /tmp/own && cat /tmp/own && ls /bin/suid-id")
    assert proc.stdout.split() == ["1000", "root:x:0:0:root:/root:/bin/sh", "mine", "/bin/suid-id"], proc.stdout


def test_the_api_socket_log_and_store_are_root_only(state: Root) -> None:
    state("stack", "ls")  # starts shoald
    sock = state.run / "shoal.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode) and _mode(sock) == 0o600 and sock.stat().st_uid == 0
    proc = as_nobody("/usr/bin/curl", "-s", "--max-time", "2", "--unix-socket", str(sock), "http://shoal/v1/version")
    assert proc.returncode != 0 and not proc.stdout, "nobody reached the API"
    for path in [state.root / "shoald.log", *state.root.glob("shoald.db*")]:
        assert _mode(path) == 0o600, path


def test_the_node_id_and_network_records_are_root_only(state: Root) -> None:
    """Files shoald writes beside its store get 0600 as the store does, not the umask's 0644."""
    state("stack", "ls")  # starts shoald, which records its node ID and the predefined networks
    records = [state.root / "node_id", *(state.root / "networks").glob("*.json")]
    assert len(records) > 1, records
    for path in records:
        assert _mode(path) == 0o600, path


def test_image_store_and_build_files_have_their_own_modes(state: Root, tmp_path: Path) -> None:
    """The image store's indexes, its blob directory, a build's scratch directory and its step
    cache get 0600/0700 as the rest of the root does, not the umask's 0644/0755."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text("FROM localhost/suid:test\nRUN echo built > /built\n")
    state("build", "-q", "-t", "localhost/modes:test", str(ctx))
    image = state.root / "image"
    files = [image / "index.json", image / "layers.json", image / "build-cache.json", image / "build-cache.lock"]
    dirs = [image / "blobs" / "sha256", image / "build-tmp"]
    for path in files:
        assert _mode(path) == 0o600, path
    for path in dirs:
        assert _mode(path) == 0o700, path
