"""The OCI runtime config (config.json) of a container, built as moby builds it: the image
config merged with the user's request, Docker's default capabilities, mounts, masked and
read-only paths and device rules. Pure functions: no I/O, so the rules are unit-tested."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from shoal.errors import InvalidArgument
from shoal.runtime.spec import ContainerSpec
from shoal.runtime.users import ExecUser

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INIT_PATH = "/sbin/docker-init"

# moby oci/caps/defaults.go
DEFAULT_CAPABILITIES = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
]
# moby oci/defaults.go
MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
]
READONLY_PATHS = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]
_DEVICE_RULES = [
    {"allow": False, "access": "rwm"},
    {"allow": True, "type": "c", "access": "m"},
    {"allow": True, "type": "b", "access": "m"},
    {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 8, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 7, "access": "rwm"},
    {"allow": True, "type": "c", "major": 5, "minor": 0, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 5, "access": "rwm"},
    {"allow": True, "type": "c", "major": 1, "minor": 9, "access": "rwm"},
    {"allow": True, "type": "c", "major": 5, "minor": 1, "access": "rwm"},
    {"allow": True, "type": "c", "major": 136, "access": "rwm"},
    {"allow": True, "type": "c", "major": 5, "minor": 2, "access": "rwm"},
    {"allow": True, "type": "c", "major": 10, "minor": 200, "access": "rwm"},
]
_RLIMITS = {
    "core", "cpu", "data", "fsize", "locks", "memlock", "msgqueue", "nice", "nofile", "nproc",
    "rss", "rtprio", "rttime", "sigpending", "stack", "as",
}
CFS_PERIOD = 100_000


@dataclass
class ProcessPlan:
    """What the container will run, after merging the image config with the request: the
    fields `inspect` shows as Path/Args and Config.*."""

    entrypoint: list[str]
    cmd: list[str]
    env: list[str]  # Config.Env: image env overridden by the user's
    user: str
    workdir: str
    hostname: str
    stop_signal: str
    labels: dict[str, str] = field(default_factory=dict)

    @property
    def argv(self) -> list[str]:
        return self.entrypoint + self.cmd


def _env_key(item: str) -> str:
    return item.split("=", 1)[0]


def merge_env(base: list[str], override: list[str]) -> list[str]:
    """moby ReplaceOrAppendEnvValues: same key replaced in place, new keys appended."""
    out = list(base)
    index = {_env_key(e): i for i, e in enumerate(out)}
    for item in override:
        key = _env_key(item)
        if "=" not in item:
            continue  # `-e NAME` with NAME unset on the client: dropped, as docker does
        if key in index:
            out[index[key]] = item
        else:
            index[key] = len(out)
            out.append(item)
    return out


def plan_process(spec: ContainerSpec, image_config: dict[str, Any], container_id: str,
                 host_hostname: str = "") -> ProcessPlan:
    """Docker's merge of ENTRYPOINT/CMD (moby daemon/create.go merge) and the rest."""
    cfg = image_config.get("config") or {}
    image_entry = list(cfg.get("Entrypoint") or [])
    image_cmd = list(cfg.get("Cmd") or [])
    if spec.entrypoint is not None and spec.entrypoint != []:
        entrypoint = list(spec.entrypoint)
        cmd = list(spec.cmd or [])
    else:
        entrypoint = [] if spec.entrypoint == [] else image_entry
        cmd = list(spec.cmd) if spec.cmd else image_cmd
    if not entrypoint and not cmd:
        raise InvalidArgument("No command specified")
    hostname = spec.hostname or (host_hostname if spec.network == "host" and host_hostname
                                 else container_id[:12])
    labels = dict(cfg.get("Labels") or {})
    labels.update(spec.labels)
    return ProcessPlan(
        entrypoint=entrypoint,
        cmd=cmd,
        env=merge_env(list(cfg.get("Env") or []), spec.env),
        user=spec.user or cfg.get("User") or "",
        workdir=spec.workdir or cfg.get("WorkingDir") or "/",
        hostname=hostname,
        stop_signal=spec.stop_signal or cfg.get("StopSignal") or "SIGTERM",
        labels=labels,
    )


def process_env(plan: ProcessPlan, user: ExecUser, tty: bool) -> list[str]:
    """The environment the process gets: moby CreateDaemonEnvironment + HOME as runc sets it."""
    base = []
    if not any(_env_key(e) == "PATH" for e in plan.env):
        base.append(f"PATH={DEFAULT_PATH}")
    base.append(f"HOSTNAME={plan.hostname}")
    if tty:
        base.append("TERM=xterm")
    env = merge_env(base, plan.env)
    if not any(_env_key(e) == "HOME" for e in env):
        env.append(f"HOME={user.home}")
    return env


def env_path(env: list[str]) -> str:
    for item in env:
        if item.startswith("PATH="):
            return item[5:]
    return DEFAULT_PATH


def _rlimits(spec: ContainerSpec) -> list[dict[str, Any]]:
    out = []
    for u in spec.ulimits:
        if u.name not in _RLIMITS:
            raise InvalidArgument(f"invalid ulimit type: {u.name}")
        out.append({"type": f"RLIMIT_{u.name.upper()}", "soft": u.soft, "hard": u.hard})
    return out


def _resources(spec: ContainerSpec) -> dict[str, Any]:
    res: dict[str, Any] = {"devices": _DEVICE_RULES}
    if spec.memory:
        res["memory"] = {"limit": spec.memory}
        if spec.memory_reservation:
            res["memory"]["reservation"] = spec.memory_reservation
    cpu: dict[str, Any] = {}
    if spec.nano_cpus:
        cpu["period"] = CFS_PERIOD
        cpu["quota"] = spec.nano_cpus * CFS_PERIOD // 1_000_000_000
    if spec.cpu_shares:
        cpu["shares"] = spec.cpu_shares
    if cpu:
        res["cpu"] = cpu
    if spec.pids_limit:
        res["pids"] = {"limit": spec.pids_limit}
    return res


def default_mounts(shm_size: int) -> list[dict[str, Any]]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["ro", "nosuid", "noexec", "nodev"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", f"size={shm_size}"]},
    ]


def build_config(
    *,
    spec: ContainerSpec,
    plan: ProcessPlan,
    user: ExecUser,
    rootfs: str,
    extra_mounts: list[dict[str, Any]],
    netns: str | None,
    cgroups_path: str,
    init_binary: str | None = None,
) -> dict[str, Any]:
    """config.json. netns: None = share the host's, "" = a fresh one, a path = join it."""
    args = plan.argv
    mounts = default_mounts(spec.shm_size) + extra_mounts
    if spec.init and init_binary:
        args = [INIT_PATH, "--"] + args
        mounts.append({"destination": INIT_PATH, "type": "bind", "source": init_binary,
                       "options": ["rbind", "ro"]})
    caps = [c for c in DEFAULT_CAPABILITIES if c not in {_cap(x) for x in spec.cap_drop}]
    caps += [_cap(c) for c in spec.cap_add if _cap(c) not in caps]
    namespaces: list[dict[str, str]] = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if netns is not None:
        namespaces.append({"type": "network", "path": netns} if netns else {"type": "network"})
    if spec.network != "host":
        for key in spec.sysctls:
            if not key.startswith(("net.", "kernel.msg", "kernel.sem", "kernel.shm", "fs.mqueue.")):
                raise InvalidArgument(f"sysctl '{key}' is not allowed")
    elif any(k.startswith("net.") for k in spec.sysctls):
        raise InvalidArgument("sysctl net.* are not allowed with --network host")
    process: dict[str, Any] = {
        "terminal": spec.tty,
        "user": {"uid": user.uid, "gid": user.gid, **({"additionalGids": user.additional_gids}
                                                      if user.additional_gids else {})},
        "args": args,
        "env": process_env(plan, user, spec.tty),
        "cwd": plan.workdir,
        "capabilities": {k: caps for k in ("bounding", "effective", "permitted")},
        "rlimits": _rlimits(spec),
        "noNewPrivileges": False,
        "oomScoreAdj": 0,
    }
    return {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": rootfs, "readonly": spec.read_only},
        "hostname": plan.hostname,
        "mounts": mounts,
        "linux": {
            "resources": _resources(spec),
            "cgroupsPath": cgroups_path,
            "sysctl": dict(spec.sysctls),
            "namespaces": namespaces,
            "maskedPaths": [] if spec.privileged else MASKED_PATHS,
            "readonlyPaths": [] if spec.privileged else READONLY_PATHS,
        },
    }


def _cap(name: str) -> str:
    name = name.upper()
    return name if name.startswith("CAP_") else f"CAP_{name}"
