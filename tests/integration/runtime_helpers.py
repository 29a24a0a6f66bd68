"""What a container may leave in the kernel or on disk, to check that nothing was left."""

from __future__ import annotations

import os
import time
from pathlib import Path

CGROUP = Path("/sys/fs/cgroup")


def cgroup_dirs() -> set[str]:
    out = set()
    for ctrl in ("memory", "pids", "cpu", "cpuacct", "devices", "freezer", "blkio", "cpuset",
                 "hugetlb", "systemd", "unified"):
        d = CGROUP / ctrl / "shoal"
        if d.is_dir():
            out |= {f"{ctrl}/{p.name}" for p in d.iterdir() if p.is_dir()}
    v2 = CGROUP / "shoal"
    if (CGROUP / "cgroup.controllers").exists() and v2.is_dir():
        out |= {p.name for p in v2.iterdir() if p.is_dir()}
    return out


def netns(root: Path) -> set[str]:
    out: set[str] = set()
    for d in (Path("/run/netns"), root / "run" / "netns"):
        if d.is_dir():
            out |= {p.name for p in d.iterdir()}
    return out


def processes_mentioning(text: str) -> set[int]:
    out = set()
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            cmdline = (p / "cmdline").read_bytes()
            state = (p / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z" and text.encode() in cmdline and int(p.name) != os.getpid():
            out.add(int(p.name))
    return out


def mounts_under(root: Path) -> list[str]:
    return [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
            if line.split()[4].startswith(str(root))]


def container_ids(root: Path) -> set[str]:
    d = root / "containers"
    return {p.name for p in d.iterdir()} if d.is_dir() else set()


def snapshot(root: Path) -> dict[str, set]:
    """Other sessions run containers on this machine at the same time: only objects named
    after this session's containers (or processes naming its state root) count."""
    return {"ids": container_ids(root), "procs": processes_mentioning(str(root))}


def leftovers(root: Path, before: dict[str, set], ids: set[str]) -> dict[str, object]:
    ours = ids | container_ids(root)
    new_dirs = container_ids(root) - before["ids"] - ids
    found: dict[str, object] = {
        "mounts": mounts_under(root),
        "cgroups": sorted(c for c in cgroup_dirs() if c.rsplit("/", 1)[-1] in ours - before["ids"]),
        "netns": sorted(n for n in netns(root) if n in ours - before["ids"]),
        "procs": sorted(processes_mentioning(str(root)) - before["procs"]),
        "container dirs": sorted(new_dirs),
    }
    return {k: v for k, v in found.items() if v}


def assert_clean(root: Path, before: dict[str, set], ids: set[str], timeout: float = 8.0) -> None:
    """conmon's exit command cleans up asynchronously: allow it a moment. `ids`: every
    container the test made (collected before removing them)."""
    deadline = time.monotonic() + timeout
    while True:
        left = leftovers(root, before, ids)
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not left, f"left behind: {left}"
