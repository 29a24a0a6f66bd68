"""Shared fixtures: an isolated shoal state root per test session, the `shoal` CLI as a user
runs it (a real subprocess), a tiny offline image made from Debian's busybox-static, and a
final check that nothing was left in the kernel or on disk."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tarfile
import time
import io
from collections.abc import Callable, Iterator
from typing import Any
from pathlib import Path

import pytest

ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def poll(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """check()'s first truthy value, polled until `timeout` (a bound, not a speed target)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def pytest_configure(config: pytest.Config) -> None:  # noqa: ARG001 - pytest's hook signature
    """The CLI's own configuration for the whole run, in a directory of its own: the user's
    ~/.shoal/config.json may make a cluster's context current (`shoal cluster create` does),
    and the tests' commands would then go to that cluster. SHOAL_HOST and SHOAL_CONTEXT of the
    calling shell are ignored for the same reason; tests that want a context set their own."""
    import tempfile

    home = Path(tempfile.mkdtemp(prefix="shoal-test-cli-"))
    os.environ["SHOAL_CONFIG"] = str(home / "config.json")
    for name in ("SHOAL_HOST", "SHOAL_CONTEXT"):
        os.environ.pop(name, None)
    config.add_cleanup(lambda: shutil.rmtree(home, ignore_errors=True))
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def shoal_root(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private SHOAL_ROOT for the whole session, removed at the end."""
    root = tmp_path_factory.mktemp("shoalroot")
    old = {k: os.environ.get(k) for k in ("SHOAL_ROOT", "SHOAL_RUN")}
    os.environ["SHOAL_ROOT"] = str(root)
    os.environ["SHOAL_RUN"] = str(root / "run")
    yield root
    stop_daemon(root / "run")
    teardown_root(root, root / "run")
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    leftovers = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                 if str(root) in line]
    for target in reversed(leftovers):
        subprocess.run(["umount", "-l", target], check=False)
    shutil.rmtree(root, ignore_errors=True)
    assert not leftovers, f"mounts left behind: {leftovers}"


def run_shoal(*args: str, input: bytes | str | None = None, check: bool = False,
              timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run the CLI the way a user does: a separate process, text output."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "shoal", *args],
        input=input.decode() if isinstance(input, bytes) else input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=full_env,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"shoal {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="session")
def shoal(shoal_root: Path):  # noqa: ARG001 - the root must exist first
    return run_shoal


def _add(tar: tarfile.TarFile, name: str, data: bytes = b"", mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = mode
    tar.addfile(info, io.BytesIO(data))


def make_busybox_rootfs_tar(path: Path) -> Path:
    """A root filesystem of Debian's static busybox with its applets, users and groups."""
    busybox = Path("/bin/busybox")
    if not busybox.exists():
        pytest.skip("busybox-static is not installed")
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True).stdout.split()
    with tarfile.open(path, "w") as tar:
        for d in ("bin", "etc", "tmp", "root", "home/app", "proc", "sys", "dev", "var/log"):
            info = tarfile.TarInfo(d)
            info.type = tarfile.DIRTYPE
            info.mode = 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        info = tar.gettarinfo(str(busybox), arcname="bin/busybox")
        with busybox.open("rb") as f:
            tar.addfile(info, f)
        for applet in applets:
            if applet == "busybox":
                continue
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
        _add(tar, "etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"
             b"app:x:1000:1000:app:/home/app:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
        _add(tar, "etc/group", b"root:x:0:\napp:x:1000:\nstaff:x:50:app\nnogroup:x:65534:\n")
    return path


@pytest.fixture(scope="session")
def busybox_tar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_busybox_rootfs_tar(tmp_path_factory.mktemp("busybox") / "busybox-rootfs.tar")


@pytest.fixture(scope="session")
def busybox_image(shoal, busybox_tar: Path) -> str:
    """`localhost/busybox:test` in the session's store, imported as a user would."""
    ref = "localhost/busybox:test"
    shoal("import", str(busybox_tar), ref, check=True)
    return ref


def tar_bytes(files: dict[str, bytes], whiteouts: tuple[str, ...] = ()) -> bytes:
    """An uncompressed layer tar of these files (mode 0644), and empty whiteout entries."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
        for name in whiteouts:
            tar.addfile(tarfile.TarInfo(name))
    return buf.getvalue()


def terminate(proc: subprocess.Popen[Any], timeout: float) -> bool:
    """SIGTERM, then SIGKILL after `timeout` seconds; never leaves the process behind. True when
    it stopped on SIGTERM."""
    proc.terminate()
    try:
        proc.wait(timeout)
        return True
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        return False


def shoald_pid(run: Path) -> int | None:
    """The pid of the shoald whose run root is `run`, if it runs. shoald.lock keeps the pid of
    the last one after it exits, and this machine reuses pids within a test run (pid_max
    32768): a pid is only taken for that shoald's when that process runs shoal with this
    SHOAL_RUN. (A stale one signalled the cluster supervisor another test had just started.)"""
    try:
        pid = int((run / "shoald.lock").read_text().split()[0])
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError, IndexError):
        return None
    if b"shoal" not in cmdline or f"SHOAL_RUN={run}".encode() not in environ:
        return None
    return pid


def stop_daemon(run: Path, timeout: float = 20.0) -> None:
    """Stop a shoald that commands of a test started (it writes its pid in run/shoald.lock)."""
    import signal
    import time

    pid = shoald_pid(run)
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state == "Z":  # exited; only waiting for a parent that does not reap
            return
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)


def teardown_root(root: Path, run: Path | None = None) -> None:
    """Remove what a test's state root made in the kernel: its containers (mounts, cgroups,
    conmon), then its namespaces, links and nftables table. For fixtures' finally blocks."""
    env = dict(os.environ, SHOAL_ROOT=str(root), SHOAL_RUN=str(run or root / "run"))
    env.pop("SHOAL_SOCKET", None)
    script = (
        "from shoal.runtime.manager import ContainerManager\n"
        "from shoal.network.cleanup import remove_everything\n"
        "m = ContainerManager()\n"
        "for c in m.list(all=True):\n"
        "    m.remove(c.id, force=True)\n"
        "remove_everything()\n"
    )
    subprocess.run([sys.executable, "-c", script], env=env, check=False, timeout=120)


@contextlib.contextmanager
def module_root(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path, image: str) -> Iterator[Path]:
    """A state root of a test module's own, with busybox imported as `image`: for modules whose
    prunes remove everything unused, which must never be another module's images, containers or
    volumes. Everything made in it is removed after, and the session's root comes back."""
    root = tmp_path_factory.mktemp("modroot")
    old = {k: os.environ.get(k) for k in ("SHOAL_ROOT", "SHOAL_RUN")}
    os.environ.update(SHOAL_ROOT=str(root), SHOAL_RUN=str(root / "run"))
    try:
        run_shoal("import", str(busybox_tar), image, check=True)
        yield root
    finally:
        stop_daemon(root / "run")
        teardown_root(root, root / "run")
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(root, ignore_errors=True)
