"""A container's cgroup on cgroup v1 (one dir per controller) or v2 (one unified dir): read
limits and usage the way `docker stats` does, find OOM kills, and remove every dir on cleanup."""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path(os.environ.get("SHOAL_CGROUP_ROOT", "/sys/fs/cgroup"))
# The cgroup every container of this shoald goes under; SHOAL_CGROUP_PARENT gives each node of
# a local cluster (cluster/) its own, as dockerd's --cgroup-parent does. One path component.
PARENT = os.environ.get("SHOAL_CGROUP_PARENT", "shoal").strip("/") or "shoal"


def is_v2() -> bool:
    return (CGROUP_ROOT / "cgroup.controllers").exists()


def cgroups_path(container_id: str) -> str:
    """Absolute, so runc does not nest it under its own cgroup."""
    return f"/{PARENT}/{container_id}"


def _v1_hierarchies() -> list[Path]:
    """Every mounted hierarchy (controllers, name=systemd and the hybrid unified one)."""
    out = []
    for line in Path("/proc/self/mounts").read_text().splitlines():
        parts = line.split()
        if len(parts) > 2 and parts[2] in ("cgroup", "cgroup2") and parts[1].startswith(str(CGROUP_ROOT)):
            out.append(Path(parts[1]))
    return out


def dirs(container_id: str) -> list[Path]:
    rel = cgroups_path(container_id).lstrip("/")
    if is_v2():
        return [CGROUP_ROOT / rel]
    return [h / rel for h in _v1_hierarchies()]


def stray_dirs(rel: str) -> list[Path]:
    """v1: `rel` under a controller directory left on /sys/fs/cgroup's tmpfs with no hierarchy
    mounted on it (one mounted by engine._mount_v1_controllers in another mount namespace, say):
    the runtime still makes its directories there, with plain cgroup.procs files."""
    if is_v2():
        return []
    rel = rel.strip("/")
    mounted = set(_v1_hierarchies())
    return [d for d in CGROUP_ROOT.glob(f"*/{rel}") if d.parents[len(Path(rel).parts) - 1] not in mounted
            and d.is_dir()]


def remove_stray(tree: Path) -> None:
    """A stray directory tree (plain files on a tmpfs, not a cgroup) removed, deepest first."""
    for sub in sorted((p for p in tree.rglob("*") if p.is_dir() and not p.is_symlink()),
                      key=lambda p: -len(p.parts)) + [tree]:
        for f in sub.iterdir():
            if f.is_file() and not f.is_symlink():
                f.unlink()
        try:
            sub.rmdir()
        except OSError:
            pass


def existing_dirs(container_id: str) -> list[Path]:
    return [d for d in dirs(container_id) if d.is_dir()]


def controller_dir(container_id: str, controller: str) -> Path:
    rel = cgroups_path(container_id).lstrip("/")
    return CGROUP_ROOT / rel if is_v2() else CGROUP_ROOT / controller / rel


def remove(container_id: str, timeout: float = 2.0) -> None:
    """rmdir every dir of the container (a v1 dir can stay busy for a moment after the last
    task exits, hence the short retry)."""
    for stray in stray_dirs(cgroups_path(container_id)):
        remove_stray(stray)
        with contextlib.suppress(OSError):
            stray.parent.rmdir()  # the shared parent, as below: busy means another container
    deadline = time.monotonic() + timeout
    for d in dirs(container_id):
        while d.is_dir():
            try:
                # Nested dirs made by the workload itself go first.
                for sub in sorted((p for p in d.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    sub.rmdir()
                d.rmdir()
            except FileNotFoundError:
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
        # The shared parent goes with the last container, so nothing named for shoal stays in
        # the cgroup tree (the runtimes never remove parents); busy means another container.
        try:
            d.parent.rmdir()
        except OSError:
            pass


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except OSError:
        return None


def _int(path: Path) -> int | None:
    text = _read(path)
    if text is None:
        return None
    text = text.strip()
    return None if text in ("", "max") else int(text.split()[0])


def _kv(path: Path) -> dict[str, int]:
    out = {}
    for line in (_read(path) or "").splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            out[parts[0]] = int(parts[1])
    return out


@dataclass
class Limits:
    cpu_quota: int | None  # microseconds per period; None = unlimited
    cpu_period: int | None
    memory: int | None  # bytes; None = unlimited
    pids: int | None


def read_limits(container_id: str) -> Limits:
    if is_v2():
        d = controller_dir(container_id, "")
        quota, period = ((_read(d / "cpu.max") or "max 100000").split() + ["100000"])[:2]
        return Limits(None if quota == "max" else int(quota), int(period),
                      _int(d / "memory.max"), _int(d / "pids.max"))
    quota = _int(controller_dir(container_id, "cpu") / "cpu.cfs_quota_us")
    memory = _int(controller_dir(container_id, "memory") / "memory.limit_in_bytes")
    return Limits(
        cpu_quota=None if quota is None or quota < 0 else quota,
        cpu_period=_int(controller_dir(container_id, "cpu") / "cpu.cfs_period_us"),
        memory=None if memory is None or memory >= 1 << 62 else memory,
        pids=_int(controller_dir(container_id, "pids") / "pids.max"),
    )


def oom_killed(container_id: str) -> bool:
    if is_v2():
        return _kv(controller_dir(container_id, "") / "memory.events").get("oom_kill", 0) > 0
    return _kv(controller_dir(container_id, "memory") / "memory.oom_control").get("oom_kill", 0) > 0


@dataclass
class Usage:
    cpu_ns: int
    memory: int  # as docker stats computes it: usage minus inactive file pages
    memory_limit: int | None
    pids: int
    blk_read: int
    blk_write: int


def read_usage(container_id: str) -> Usage:
    if is_v2():
        d = controller_dir(container_id, "")
        stat = _kv(d / "memory.stat")
        usage = _int(d / "memory.current") or 0
        io_r = io_w = 0
        for line in (_read(d / "io.stat") or "").splitlines():
            for item in line.split()[1:]:
                k, _, v = item.partition("=")
                io_r += int(v) if k == "rbytes" else 0
                io_w += int(v) if k == "wbytes" else 0
        return Usage(_kv(d / "cpu.stat").get("usage_usec", 0) * 1000,
                     max(0, usage - stat.get("inactive_file", 0)), _int(d / "memory.max"),
                     _int(d / "pids.current") or 0, io_r, io_w)
    mem = controller_dir(container_id, "memory")
    stat = _kv(mem / "memory.stat")
    usage = _int(mem / "memory.usage_in_bytes") or 0
    limit = _int(mem / "memory.limit_in_bytes")
    io_r = io_w = 0
    for line in (_read(controller_dir(container_id, "blkio") / "blkio.throttle.io_service_bytes_recursive") or "").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "Read":
            io_r += int(parts[2])
        elif len(parts) == 3 and parts[1] == "Write":
            io_w += int(parts[2])
    return Usage(
        cpu_ns=_int(controller_dir(container_id, "cpuacct") / "cpuacct.usage") or 0,
        memory=max(0, usage - stat.get("total_inactive_file", 0)),
        memory_limit=None if limit is None or limit >= 1 << 62 else limit,
        pids=_int(controller_dir(container_id, "pids") / "pids.current") or 0,
        blk_read=io_r,
        blk_write=io_w,
    )


def frozen(container_id: str) -> bool:
    """Whether the container's cgroup is frozen (`pause`): v2's cgroup.freeze, v1's freezer."""
    if is_v2():
        return (_read(controller_dir(container_id, "") / "cgroup.freeze") or "0").strip() == "1"
    return (_read(controller_dir(container_id, "freezer") / "freezer.state") or "").strip() == "FROZEN"


def pids(container_id: str) -> list[int]:
    """Every process of the container (nested cgroups included), as `docker top` lists them."""
    base = controller_dir(container_id, "" if is_v2() else "pids")
    out: list[int] = []
    for procs in [base / "cgroup.procs", *base.rglob("*/cgroup.procs")] if base.is_dir() else []:
        out += [int(p) for p in (_read(procs) or "").split() if p.isdigit()]
    return sorted(set(out))
