"""One `RUN` of `shoal build`: the command runs to completion in a throw-away container whose
root filesystem is the build's layers plus the step's upper dir; only the upper dir is kept."""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import stat
import subprocess
import time
from pathlib import Path
from typing import BinaryIO

from shoal import ids
from shoal.errors import ShoalError
from shoal.paths import run_root, write_file
from shoal.runtime import cgroups, engine, files, mounts, oci
from shoal.runtime.layers import LayeredView
from shoal.runtime.spec import ContainerSpec
from shoal.runtime.state import proc_start_time
from shoal.runtime.users import resolve_user

_MOUNT_POINTS = ("proc", "sys", "dev", "etc/hosts", "etc/resolv.conf", "etc/hostname")


def run_build_step(lowerdirs: list[Path], upperdir: Path, argv: list[str], env: list[str],
                   user: str, workdir: str, stdout: BinaryIO, network: str = "host",
                   script: tuple[str, str] | None = None, netns: str | None = None) -> int:
    """`network`: "host" shares the host's namespace; otherwise the step joins `netns` (a
    pinned namespace the builder made on its build bridge) or, with none given, a fresh one
    holding only loopback. `script` (name, text): a RUN heredoc with a #!, mounted read-only
    at /dev/pipes/NAME from outside the root (BuildKit's place), so it is never in the layer."""
    from shoal.runtime.manager import CommandNotExecutable, CommandNotFound, check_command

    runtime = engine.select()
    step_id = "shoal-build-" + ids.new_id()[:20]
    # The bundle's name says whose step it is, so the next build can tell a killed build's
    # leftovers from a concurrent build's live step (collect_leftovers).
    base = run_root() / "build" / f"{step_id}{_OWNER_SEP}{owner_tag()}"
    rootfs = base / "rootfs"
    work = upperdir.parent / f".{upperdir.name}.work-{step_id[-8:]}"  # same filesystem as upper
    empty = base / "empty"
    for d in (rootfs, empty, work):
        d.mkdir(parents=True, exist_ok=True)
    created_points: list[str] = []
    try:
        mounts.mount_overlay([Path(p) for p in lowerdirs] or [empty], upperdir, work, rootfs)
        created_points = [p for p in _MOUNT_POINTS if not os.path.lexists(rootfs / p)]
        view = LayeredView([rootfs])
        exec_user = resolve_user(user, view.read_text("/etc/passwd"), view.read_text("/etc/group"))
        plan = oci.ProcessPlan(entrypoint=[], cmd=list(argv), env=list(env), user=user,
                               workdir=workdir or "/", hostname=step_id[-12:], stop_signal="SIGTERM")
        _mkdirs_in_root(rootfs, plan.workdir)
        try:
            if script is None:   # a script is mounted at start, not looked up in the layers
                check_command(view, argv[0], plan.env, plan.workdir)
        except (CommandNotFound, CommandNotExecutable) as exc:
            stdout.write(f"{exc}\n".encode())
            stdout.flush()
            return exc.exit_code
        host_net = network == "host"
        # Read by the step's own user inside: world-readable, as a container's are.
        write_file(base / "hosts", files.hosts(plan.hostname, [], [], [], host_net), 0o644)
        write_file(base / "resolv.conf", files.resolv_conf([], [], host_net), 0o644)
        write_file(base / "hostname", plan.hostname + "\n", 0o644)
        spec = ContainerSpec(image="", network=network)
        extra = [{"destination": f"/etc/{n}", "type": "bind", "source": str(base / n),
                  "options": ["rbind", "rprivate"]} for n in ("hosts", "resolv.conf", "hostname")]
        if script is not None:
            pipes = base / "pipes"
            pipes.mkdir(mode=0o755)
            fd = os.open(pipes / script[0], os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o755)
            with os.fdopen(fd, "w") as f:
                f.write(script[1])
            os.chmod(pipes / script[0], 0o755)
            extra.append({"destination": "/dev/pipes", "type": "bind", "source": str(pipes),
                          "options": ["rbind", "ro", "rprivate"]})
        config = oci.build_config(spec=spec, plan=plan, user=exec_user, rootfs=str(rootfs),
                                  extra_mounts=extra, netns=None if host_net else (netns or ""),
                                  cgroups_path=cgroups.cgroups_path(step_id))
        write_file(base / "config.json", json.dumps(config))  # the step's environment: root only
        proc = subprocess.Popen(runtime.argv("run", "--bundle", str(base), step_id),
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        assert proc.stdout is not None
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):  # type: ignore[union-attr]
            stdout.write(chunk)
            stdout.flush()
        return proc.wait()
    finally:
        with contextlib.suppress(Exception):
            runtime.run("delete", "--force", step_id, check=False)
        with contextlib.suppress(ShoalError, OSError):
            cgroups.remove(step_id)
        for target in reversed(mounts.mounts_under(rootfs)):
            mounts.unmount(Path(target))
        mounts.unmount(rootfs)
        _drop_mount_points(upperdir, created_points)
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


_OWNER_SEP = "@"


def owner_tag(pid: int | None = None) -> str:
    """`PID-STARTTIME` of a process: names a build's scratch so a later build can tell whether
    its owner still runs (a pid alone may have been reused)."""
    pid = os.getpid() if pid is None else pid
    return f"{pid}-{proc_start_time(pid)}"


def owner_alive(tag: str) -> bool:
    pid, _, start = tag.partition("-")
    if not pid.isdigit() or not start.lstrip("-").isdigit():
        return False
    return proc_start_time(int(pid)) == int(start) != -1


def collect_leftovers() -> list[str]:
    """Remove what build steps of killed builds left: the step's container (still running,
    perhaps), its cgroup, its root's overlay mount and its bundle. Steps whose build still
    runs are left alone. Returns the step ids collected."""
    root = run_root() / "build"
    collected = []
    try:
        entries = list(root.iterdir())
    except FileNotFoundError:
        return []
    runtime = engine.select()
    for base in entries:
        step_id, sep, tag = base.name.partition(_OWNER_SEP)
        if not step_id.startswith("shoal-build-") or (sep and owner_alive(tag)):
            continue
        if not sep and time.time() - base.lstat().st_mtime < 3600:
            continue   # an older shoal's step, perhaps live: only once it is clearly stale
        with contextlib.suppress(Exception):
            runtime.run("delete", "--force", step_id, check=False)
        with contextlib.suppress(ShoalError, OSError):
            cgroups.remove(step_id)
        for target in reversed(mounts.mounts_under(base)):
            mounts.unmount(Path(target))
        shutil.rmtree(base, ignore_errors=True)
        collected.append(step_id)
    return collected


def _drop_mount_points(upper: Path, created: list[str]) -> None:
    """Mount points the runtime had to create (/proc, /etc/hosts...) are not part of the layer.
    The step may have replaced a parent with a symlink: only real directories are walked."""
    for rel in sorted(created, key=len, reverse=True):
        parts = rel.split("/")
        if any(not stat.S_ISDIR(_lmode(upper.joinpath(*parts[:i]))) for i in range(1, len(parts))):
            continue
        path = upper / rel
        mode = _lmode(path)
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(mode):
                path.rmdir()  # only when empty
            elif stat.S_ISREG(mode) and os.lstat(path).st_size == 0:
                path.unlink()


def _lmode(path: Path) -> int:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return 0


# openat2(2): resolve a path as if the directory fd were `/`: neither `..` nor a symlink
# (absolute or relative) can leave it. Python has no wrapper; glibc neither: the raw syscall.
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_IN_ROOT = 0x10
_libc = ctypes.CDLL(None, use_errno=True)


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def _open_in_root(root_fd: int, path: str, flags: int = os.O_PATH | os.O_DIRECTORY) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, 0, _RESOLVE_IN_ROOT | _RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(_SYS_OPENAT2, root_fd, path.encode(), ctypes.byref(how), ctypes.sizeof(how))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return int(fd)


def _mkdirs_in_root(rootfs: Path, path: str) -> None:
    """mkdir -p of the step's working directory inside the step's root (the image may hold
    `/srv -> /` or the config a `..`): every component resolved in the root by the kernel."""
    root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        done = ""
        for name in [p for p in path.split("/") if p and p != "."]:
            candidate = f"{done}/{name}"
            try:
                os.close(_open_in_root(root_fd, candidate))
            except FileNotFoundError:
                parent = _open_in_root(root_fd, done or "/")
                try:
                    os.mkdir(name, 0o755, dir_fd=parent)
                except FileExistsError:
                    pass   # a dangling symlink: the runtime reports the missing directory
                finally:
                    os.close(parent)
            except NotADirectoryError:
                raise ShoalError(f"working directory {path}: not a directory") from None
            done = candidate
    finally:
        os.close(root_fd)
