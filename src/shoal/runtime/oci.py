"""The OCI runtime config (config.json) of a container, built as moby builds it: the image
config merged with the user's request, Docker's default capabilities, seccomp filter, mounts,
masked and read-only paths, namespaces and device rules. Pure functions of the spec and of the
host's facts (hostsec.HostFacts, passed in or read once per process), so the rules are
unit-tested."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from shoal.errors import InvalidArgument
from shoal.runtime import hostsec, seccomp
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
# moby oci/defaults.go (Docker 25 and later: /proc/interrupts and powercap added)
MASKED_PATHS = [
    "/proc/asound", "/proc/acpi", "/proc/interrupts", "/proc/kcore", "/proc/keys",
    "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug",
    "/proc/scsi", "/sys/firmware", "/sys/devices/virtual/powercap",
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
        if spec.memory_swap:
            res["memory"]["swap"] = spec.memory_swap  # `update --memory-swap` kept for the next start
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


@dataclass
class SecurityOptions:
    """`--security-opt`, as moby's parseSecurityOpt reads HostConfig.SecurityOpt."""

    seccomp: str = "default"  # "default", "unconfined", or a profile's JSON text
    no_new_privileges: bool = False
    apparmor: str = ""  # "" = the host's default, "unconfined", or a profile name
    systempaths_unconfined: bool = False  # no masked or read-only /proc and /sys paths


def _q(text: str) -> str:
    """Go's %q, as Docker's messages quote."""
    return json.dumps(text, ensure_ascii=False)


def parse_security_opts(opts: list[str]) -> SecurityOptions:
    """Docker's keys and errors. `seccomp=FILE` must have been inlined as JSON already (the
    CLI reads the file, as docker's does: seccomp.inline_profile_files)."""
    out = SecurityOptions()
    for opt in opts:
        if opt == "no-new-privileges":
            out.no_new_privileges = True
            continue
        if opt == "disable":  # label=disable's short form: no SELinux labels here anyway
            continue
        sep = "=" if "=" in opt else ":"
        key, found, value = opt.partition(sep)
        if not found:
            raise InvalidArgument(f"invalid --security-opt 1: {_q(opt)}")
        if key == "seccomp":
            if value in ("unconfined", "builtin", "default"):
                out.seccomp = "unconfined" if value == "unconfined" else "default"
            elif value.lstrip().startswith("{"):
                out.seccomp = value
            else:
                raise InvalidArgument(f"opening seccomp profile ({value}) failed: not read by the client")
        elif key == "no-new-privileges":
            if value.lower() not in ("1", "t", "true", "0", "f", "false"):
                raise InvalidArgument(f"invalid --security-opt 2: {_q(opt)}")
            out.no_new_privileges = value.lower() in ("1", "t", "true")
        elif key == "apparmor":
            out.apparmor = value
        elif key == "systempaths" and value == "unconfined":
            out.systempaths_unconfined = True
        elif key == "label":
            continue  # SELinux labels: shoal's hosts have no SELinux; Docker ignores them there too
        else:
            raise InvalidArgument(f"invalid --security-opt 2: {_q(opt)}")
    return out


def normalize_capabilities(names: list[str], known: tuple[str, ...]) -> list[str]:
    """moby NormalizeLegacyCapabilities: upper case, CAP_ prefix, ALL kept, unknown refused."""
    out = []
    for name in names:
        c = name.upper()
        if c != "ALL" and not c.startswith("CAP_"):
            c = "CAP_" + c
        if c != "ALL" and c not in known:
            raise InvalidArgument(f"unknown capability: {_q(c)}")
        out.append(c)
    return out


def capabilities(spec: ContainerSpec, host: hostsec.HostFacts) -> list[str]:
    """moby TweakCapabilities: --privileged = every capability; `ALL` in cap_add = every one
    but those dropped; `ALL` in cap_drop = only those added; else the defaults minus drops
    plus adds."""
    everything = host.grantable or host.capabilities
    if spec.privileged:
        return list(everything)
    if not spec.cap_add and not spec.cap_drop:
        return list(DEFAULT_CAPABILITIES)
    drop = normalize_capabilities(spec.cap_drop, host.capabilities)
    add = normalize_capabilities(spec.cap_add, host.capabilities)
    if "ALL" in add:
        return [c for c in everything if c not in drop]
    if "ALL" in drop:
        return [c for c in dict.fromkeys(add) if c != "ALL"]
    caps = [c for c in DEFAULT_CAPABILITIES if c not in drop]
    return caps + [c for c in dict.fromkeys(add) if c not in caps]


def warm(persist: bool = True) -> None:
    """What every container's config.json needs and the first one would otherwise pay for, done
    ahead: the host's facts and the default seccomp filter translated and compiled for Docker's
    default capabilities (19 ms of CPU idle, 45-100 ms under this machine's load; once per
    process: shoald's first task waited for it at every node of a fresh cluster). `persist`:
    see seccomp.default_bpf."""
    host = hostsec.facts()
    if host.seccomp:
        seccomp.default_bpf(capabilities(ContainerSpec(image=""), host), persist=persist)


def validate_security(spec: ContainerSpec, host: hostsec.HostFacts | None = None) -> None:
    """Everything build_config would refuse about the security profile, checked at create."""
    host = host or hostsec.facts()
    opts = parse_security_opts(spec.security_opt)
    capabilities(spec, host)
    if opts.seccomp not in ("default", "unconfined"):
        seccomp.parse_profile(opts.seccomp)
    if spec.cgroupns not in ("", "host", "private"):
        raise InvalidArgument(f"invalid cgroup namespace mode: {spec.cgroupns}")


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
    host: hostsec.HostFacts | None = None,
) -> dict[str, Any]:
    """config.json. netns: None = share the host's, "" = a fresh one, a path = join it."""
    host = host or hostsec.facts()
    opts = parse_security_opts(spec.security_opt)
    args = plan.argv
    mounts = default_mounts(spec.shm_size) + extra_mounts
    if spec.privileged:
        # moby WithMounts: a privileged container's /sys and cgroup mounts are writable.
        mounts = [dict(m, options=[o for o in m["options"] if o != "ro"])
                  if m["type"] in ("sysfs", "cgroup") else m for m in mounts]
    if spec.init and init_binary:
        args = [INIT_PATH, "--"] + args
        mounts.append({"destination": INIT_PATH, "type": "bind", "source": init_binary,
                       "options": ["rbind", "ro"]})
    caps = capabilities(spec, host)
    namespaces: list[dict[str, str]] = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    if netns is not None:
        namespaces.append({"type": "network", "path": netns} if netns else {"type": "network"})
    # Docker's default: a private cgroup namespace on a cgroup v2 host, the host's on v1.
    if spec.cgroupns == "private" or (not spec.cgroupns and host.cgroup_v2):
        namespaces.append({"type": "cgroup"})
    if spec.network != "host":
        for key in spec.sysctls:
            if not key.startswith(("net.", "kernel.msg", "kernel.sem", "kernel.shm", "fs.mqueue.")):
                raise InvalidArgument(f"sysctl '{key}' is not allowed")
    elif any(k.startswith("net.") for k in spec.sysctls):
        raise InvalidArgument("sysctl net.* are not allowed with --network host")
    process: dict[str, Any] = {
        "terminal": spec.tty,
        **({"consoleSize": {"height": spec.console_size[0], "width": spec.console_size[1]}}
           if spec.tty and len(spec.console_size) == 2 and min(spec.console_size) > 0 else {}),
        "user": {"uid": user.uid, "gid": user.gid, **({"additionalGids": user.additional_gids}
                                                      if user.additional_gids else {})},
        "args": args,
        "env": process_env(plan, user, spec.tty),
        "cwd": plan.workdir,
        # moby SetCapabilities: a non-root process gets only the bounding set, as execve would
        # leave it (file capabilities and setuid binaries can still raise within it).
        "capabilities": ({k: caps for k in ("bounding", "effective", "permitted")} if user.uid == 0
                         else {"bounding": caps}),
        "rlimits": _rlimits(spec),
        "noNewPrivileges": opts.no_new_privileges,
        "oomScoreAdj": 0,
    }
    confined = not spec.privileged
    apparmor = opts.apparmor or host.apparmor_profile
    if confined and host.apparmor_profile and apparmor != "unconfined":
        process["apparmorProfile"] = apparmor
    resources = _resources(spec)
    linux: dict[str, Any] = {
        "resources": resources,
        "cgroupsPath": cgroups_path,
        "sysctl": dict(spec.sysctls),
        "namespaces": namespaces,
        "maskedPaths": MASKED_PATHS if confined and not opts.systempaths_unconfined else [],
        "readonlyPaths": READONLY_PATHS if confined and not opts.systempaths_unconfined else [],
    }
    if spec.privileged:
        # moby WithDevices: every host device, and the device cgroup allows them all.
        resources["devices"] = [{"allow": True, "access": "rwm"}]
        linux["devices"] = hostsec.host_devices()
    annotations: dict[str, str] = {}
    if confined and host.seccomp and opts.seccomp != "unconfined":
        custom = None if opts.seccomp == "default" else opts.seccomp
        linux["seccomp"] = seccomp.for_container(caps, custom)
        # The default filter ready compiled (crun takes it instead of compiling the section,
        # its slowest step; runc ignores the annotation and compiles the section).
        program = seccomp.default_bpf(caps) if custom is None else None
        if program:
            annotations[seccomp.BPF_ANNOTATION] = program
    config: dict[str, Any] = {
        "ociVersion": "1.0.2",
        "process": process,
        "root": {"path": rootfs, "readonly": spec.read_only},
        "hostname": plan.hostname,
        "mounts": mounts,
        "linux": linux,
    }
    if annotations:
        config["annotations"] = annotations
    return config
