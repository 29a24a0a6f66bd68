"""One `RUN` of `shoal build`: the command runs to completion in a throw-away container whose
root filesystem is the build's layers plus the step's upper dir; only the upper dir is kept."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import BinaryIO

from shoal import ids
from shoal.errors import ShoalError
from shoal.paths import run_root
from shoal.runtime import cgroups, engine, files, mounts, oci
from shoal.runtime.layers import LayeredView
from shoal.runtime.spec import ContainerSpec
from shoal.runtime.users import resolve_user

_MOUNT_POINTS = ("proc", "sys", "dev", "etc/hosts", "etc/resolv.conf", "etc/hostname")


def run_build_step(lowerdirs: list[Path], upperdir: Path, argv: list[str], env: list[str],
                   user: str, workdir: str, stdout: BinaryIO, network: str = "host") -> int:
    from shoal.runtime.manager import CommandNotExecutable, CommandNotFound, check_command

    runtime = engine.select()
    step_id = "shoal-build-" + ids.new_id()[:20]
    base = run_root() / "build" / step_id
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
        (rootfs / plan.workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
        try:
            check_command(view, argv[0], plan.env, plan.workdir)
        except (CommandNotFound, CommandNotExecutable) as exc:
            stdout.write(f"{exc}\n".encode())
            stdout.flush()
            return exc.exit_code
        host_net = network == "host"
        (base / "hosts").write_text(files.hosts(plan.hostname, [], [], [], host_net))
        (base / "resolv.conf").write_text(files.resolv_conf([], [], host_net))
        (base / "hostname").write_text(plan.hostname + "\n")
        spec = ContainerSpec(image="", network=network)
        extra = [{"destination": f"/etc/{n}", "type": "bind", "source": str(base / n),
                  "options": ["rbind", "rprivate"]} for n in ("hosts", "resolv.conf", "hostname")]
        config = oci.build_config(spec=spec, plan=plan, user=exec_user, rootfs=str(rootfs),
                                  extra_mounts=extra, netns=None if host_net else "",
                                  cgroups_path=cgroups.cgroups_path(step_id))
        (base / "config.json").write_text(json.dumps(config))
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


def _drop_mount_points(upper: Path, created: list[str]) -> None:
    """Mount points the runtime had to create (/proc, /etc/hosts...) are not part of the layer."""
    for rel in sorted(created, key=len, reverse=True):
        path = upper / rel
        with contextlib.suppress(OSError):
            if path.is_dir() and not path.is_symlink():
                path.rmdir()  # only when empty
            elif path.is_file() and path.stat().st_size == 0:
                path.unlink()
