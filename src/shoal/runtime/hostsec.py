"""What this host's kernel offers a container's security profile, read once per process: the
capabilities it knows, whether it filters syscalls, cgroup v2, AppArmor and (for --privileged
only) its devices."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

# Capability names by number (linux/capability.h); the kernel knows 0..cap_last_cap of them.
CAPABILITY_NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
    "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
# The profile Docker loads into AppArmor and names its containers after; shoal uses it when it
# is loaded (by Docker or by hand) and AppArmor is on.
APPARMOR_PROFILE = "docker-default"


@dataclass(frozen=True)
class HostFacts:
    capabilities: tuple[str, ...]  # every capability this kernel knows, in number order
    seccomp: bool  # the kernel filters syscalls (CONFIG_SECCOMP_FILTER)
    cgroup_v2: bool  # a cgroup v2-only host: Docker's default there is a private cgroup namespace
    apparmor_profile: str = ""  # the profile to confine containers with; "" = none available
    # What "every capability" (--privileged, --cap-add ALL) grants: those known that this
    # process may still pass on (a host that runs shoal inside a reduced bounding set, as some
    # CI sandboxes do, cannot give more; the runtime's capset would fail).
    grantable: tuple[str, ...] = ()


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def apparmor_profile() -> str:
    """docker-default when AppArmor is enabled and that profile is loaded; else ""."""
    if _read("/sys/module/apparmor/parameters/enabled").strip() != "Y":
        return ""
    loaded = _read("/sys/kernel/security/apparmor/profiles")
    return APPARMOR_PROFILE if any(line.split(" ", 1)[0] == APPARMOR_PROFILE
                                   for line in loaded.splitlines()) else ""


@lru_cache(maxsize=1)
def facts() -> HostFacts:
    from shoal.runtime import cgroups

    try:
        last = int(_read("/proc/sys/kernel/cap_last_cap").strip())
    except ValueError:
        last = len(CAPABILITY_NAMES) - 1
    known = CAPABILITY_NAMES[: last + 1]
    bounding = -1
    for line in _read("/proc/self/status").splitlines():
        if line.startswith("CapBnd:"):
            bounding = int(line.split()[1], 16)
    return HostFacts(
        capabilities=known,
        grantable=tuple(c for i, c in enumerate(known) if bounding & (1 << i)),
        seccomp="Seccomp:" in _read("/proc/self/status"),
        cgroup_v2=cgroups.is_v2(),
        apparmor_profile=apparmor_profile(),
    )


_SKIP_DIRS = {"pts", "shm", "fd", "mqueue", ".lxc", ".lxd-mounts", ".udev"}


def host_devices(root: str = "/dev") -> list[dict[str, Any]]:
    """Every character and block device under /dev, as OCI linux.devices entries: what a
    --privileged container gets, as Docker's does (not /dev/pts, /dev/shm... nor /dev/console)."""
    out: list[dict[str, Any]] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return out
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                if entry.name not in _SKIP_DIRS:
                    out += host_devices(entry.path)
                continue
            if entry.name == "console":
                continue
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            out.append({"path": entry.path, "type": "c" if stat.S_ISCHR(st.st_mode) else "b",
                        "major": os.major(st.st_rdev), "minor": os.minor(st.st_rdev),
                        "fileMode": stat.S_IMODE(st.st_mode), "uid": st.st_uid, "gid": st.st_gid})
    return out
