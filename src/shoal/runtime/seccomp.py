"""The seccomp filter of a container, in the OCI `linux.seccomp` form crun and runc take.

Profiles are written in Docker's profile format (`defaultAction`, `archMap`, `syscalls[]` with
`names`, `action`, `args`, `errnoRet`, and `includes`/`excludes` by `caps`, `arches` and
`minKernel`); a profile is turned into the OCI form for one container the way moby's
profiles/seccomp does: rules whose conditions do not hold for this host's architecture and
kernel, or for the container's final capability set, are left out.

The default profile is Debian's /usr/share/containers/seccomp.json (golang-github-containers-
common): the profile Podman, CRI-O and Buildah use, derived from Docker's. It is looser than
Docker's own in a few places Docker chose to close, and which the issue this code answers names:
it lets every container call unshare(2), mount(2), setns(2), keyctl(2) and clone(2) with
namespace flags. shoal applies Docker's rules for those on top (`_docker_rules` below), so a
default container can make no namespace and mount nothing unless it was given CAP_SYS_ADMIN,
and never reaches the kernel keyring, as in Docker.

The file is read and parsed once per process, and the translated filter is cached per
capability set, as is its compiled BPF program (see "compiled BPF" below): starting a container
costs a dictionary lookup (shoald starts many)."""

from __future__ import annotations

import base64
import ctypes
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from shoal.errors import InvalidArgument, ShoalError

DEFAULT_PROFILE = Path(os.environ.get("SHOAL_SECCOMP_PROFILE", "/usr/share/containers/seccomp.json"))
DEBIAN_PACKAGE = "golang-github-containers-common"

EPERM = 1
ENOSYS = 38

_ACTIONS = {
    "SCMP_ACT_KILL", "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO", "SCMP_ACT_TRACE", "SCMP_ACT_ALLOW", "SCMP_ACT_LOG", "SCMP_ACT_NOTIFY",
}
_OPS = {"SCMP_CMP_NE", "SCMP_CMP_LT", "SCMP_CMP_LE", "SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT",
        "SCMP_CMP_MASKED_EQ"}

# uname's machine -> libseccomp's name for the native architecture (what `arches` hold) and
# the SCMP_ARCH_ constant `archMap` is keyed by.
_NATIVE = {
    "x86_64": ("amd64", "SCMP_ARCH_X86_64"), "amd64": ("amd64", "SCMP_ARCH_X86_64"),
    "i386": ("x86", "SCMP_ARCH_X86"), "i686": ("x86", "SCMP_ARCH_X86"),
    "aarch64": ("arm64", "SCMP_ARCH_AARCH64"), "arm64": ("arm64", "SCMP_ARCH_AARCH64"),
    "armv7l": ("arm", "SCMP_ARCH_ARM"), "armv6l": ("arm", "SCMP_ARCH_ARM"),
    "ppc64le": ("ppc64le", "SCMP_ARCH_PPC64LE"), "ppc64": ("ppc64", "SCMP_ARCH_PPC64"),
    "s390x": ("s390x", "SCMP_ARCH_S390X"), "s390": ("s390", "SCMP_ARCH_S390"),
    "mips64": ("mips64", "SCMP_ARCH_MIPS64"), "riscv64": ("riscv64", "SCMP_ARCH_RISCV64"),
}

# The namespace flags of clone(2): CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID |
# NEWNET. Without CAP_SYS_ADMIN, Docker allows clone only when none of them is set.
_CLONE_NS_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000

# Syscalls the Debian profile allows every container but Docker's allows only with a capability.
_NEEDS_CAP: dict[str, tuple[str, ...]] = {
    "CAP_SYS_ADMIN": ("bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen",
                      "fspick", "lookup_dcookie", "mount", "mount_setattr", "move_mount",
                      "open_tree", "perf_event_open", "quotactl", "quotactl_fd", "setdomainname",
                      "sethostname", "setns", "syslog", "umount", "umount2", "unshare"),
    "CAP_SYSLOG": ("syslog",),
    "CAP_SYS_BOOT": ("reboot",),
    "CAP_SYS_PTRACE": ("kcmp", "pidfd_getfd", "process_madvise"),
    "CAP_SYS_NICE": ("get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"),
    "CAP_BPF": ("bpf",),
    "CAP_PERFMON": ("perf_event_open",),
}
# ... and those Docker's allows no container at all (the kernel keyring is not namespaced).
_NEVER = ("add_key", "keyctl", "pivot_root", "request_key")
_WITHDRAWN = frozenset(n for names in _NEEDS_CAP.values() for n in names) | frozenset(_NEVER)


def _docker_rules() -> list[dict[str, Any]]:
    """Docker's rules for the syscalls in _WITHDRAWN, in the profile format."""
    rules: list[dict[str, Any]] = [
        {"names": list(names), "action": "SCMP_ACT_ALLOW", "includes": {"caps": [cap]}}
        for cap, names in _NEEDS_CAP.items()
    ]
    mask = {"value": _CLONE_NS_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}
    rules += [
        # clone without namespace flags (what fork and threads use); s390 swaps the arguments.
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 0, **mask}],
         "excludes": {"caps": ["CAP_SYS_ADMIN"], "arches": ["s390", "s390x"]}},
        {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [{"index": 1, **mask}],
         "includes": {"arches": ["s390", "s390x"]}, "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
        # clone3 passes its flags in memory a filter cannot read: ENOSYS makes libc use clone.
        {"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": ENOSYS,
         "excludes": {"caps": ["CAP_SYS_ADMIN"]}},
    ]
    return rules


# ---- loading ---------------------------------------------------------------------------------

_lock = threading.Lock()
_default: dict[str, Any] | None = None
_translated: dict[tuple[Any, ...], dict[str, Any]] = {}


def parse_profile(text: str, origin: str = "seccomp profile") -> dict[str, Any]:
    """A profile from its JSON text, checked so a bad one fails at create, not at start."""
    try:
        profile = json.loads(text)
    except ValueError as exc:
        raise InvalidArgument(f"Decoding seccomp profile failed: {origin}: {exc}") from None
    if not isinstance(profile, dict):
        raise InvalidArgument(f"Decoding seccomp profile failed: {origin}: not a JSON object")
    if profile.get("architectures") and profile.get("archMap"):
        raise InvalidArgument("'architectures' and 'archMap' were specified in the seccomp profile, "
                              "use either 'architectures' or 'archMap'")
    default = profile.get("defaultAction", "")
    if default and default not in _ACTIONS:
        raise InvalidArgument(f"{origin}: unknown defaultAction {default!r}")
    for i, call in enumerate(profile.get("syscalls") or []):
        if not isinstance(call, dict):
            raise InvalidArgument(f"{origin}: syscalls[{i}] is not an object")
        if call.get("name") and call.get("names"):
            raise InvalidArgument("'name' and 'names' were specified in the seccomp profile, use "
                                  "either 'name' or 'names'")
        if call.get("action") not in _ACTIONS:
            raise InvalidArgument(f"{origin}: syscalls[{i}]: unknown action {call.get('action')!r}")
        for arg in call.get("args") or []:
            if not isinstance(arg, dict) or arg.get("op") not in _OPS:
                raise InvalidArgument(f"{origin}: syscalls[{i}]: bad argument condition {arg!r}")
    return profile


def inline_profile_files(security_opt: list[str]) -> list[str]:
    """`seccomp=FILE` replaced by `seccomp=<the file's JSON, compacted>`, as docker's CLI sends
    it: the container keeps its profile, whatever later happens to the file."""
    out = []
    for opt in security_opt:
        key, sep, value = opt.partition("=")
        if not sep and key != "no-new-privileges":
            key, sep, value = opt.partition(":")
        if (not sep or not value) and key != "no-new-privileges":
            raise InvalidArgument(f'invalid --security-opt: "{opt}"')
        if key == "seccomp" and value not in ("unconfined", "builtin", "default") \
                and not value.lstrip().startswith("{"):
            try:
                text = Path(value).read_text()
            except OSError as exc:
                raise InvalidArgument(f"opening seccomp profile ({value}) failed: open {value}: "
                                      f"{(exc.strerror or str(exc)).lower()}") from None
            try:
                compact = json.dumps(json.loads(text), separators=(",", ":"))
            except ValueError as exc:
                raise InvalidArgument(f"compacting json for seccomp profile ({value}) failed: {exc}") from None
            parse_profile(compact, value)
            opt = f"seccomp={compact}"
        out.append(opt)
    return out


def default_profile() -> dict[str, Any]:
    """Debian's profile with Docker's rules on top; read once per process."""
    global _default
    if _default is None:
        with _lock:
            if _default is None:
                try:
                    text = DEFAULT_PROFILE.read_text()
                except OSError as exc:
                    raise ShoalError(
                        f"the default seccomp profile {DEFAULT_PROFILE} cannot be read ({exc.strerror}): "
                        f"install Debian's {DEBIAN_PACKAGE} package, or run the container with "
                        "--security-opt seccomp=unconfined") from None
                profile = parse_profile(text, str(DEFAULT_PROFILE))
                calls = []
                for call in profile.get("syscalls") or []:
                    unconditional = not (call.get("args") or call.get("includes") or call.get("excludes"))
                    if unconditional and call.get("action") == "SCMP_ACT_ALLOW":
                        names = [n for n in _names(call) if n not in _WITHDRAWN]
                        if not names:
                            continue
                        call = {**call, "names": names}
                        call.pop("name", None)
                    calls.append(call)
                profile["syscalls"] = calls + _docker_rules()
                profile["_withdrawn"] = sorted(_WITHDRAWN)
                _default = profile
    return _default


# ---- translation -----------------------------------------------------------------------------

def _names(call: dict[str, Any]) -> list[str]:
    return list(call.get("names") or ([call["name"]] if call.get("name") else []))


def _kernel() -> tuple[int, int]:
    parts = os.uname().release.split("-", 1)[0].split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return 0, 0


def _at_least(version: str) -> bool:
    try:
        want = tuple(int(x) for x in version.split("-", 1)[0].split(".")[:2])
    except ValueError:
        raise InvalidArgument(f"seccomp profile: bad minKernel {version!r}") from None
    return _kernel() >= (want + (0,))[:2]


def _applies(call: dict[str, Any], arch: str, caps: frozenset[str]) -> bool:
    """moby's conditions: any excluded cap present, or a required one missing, drops the rule."""
    inc = call.get("includes") or {}
    exc = call.get("excludes") or {}
    if arch in (exc.get("arches") or []):
        return False
    if any(c in caps for c in exc.get("caps") or []):
        return False
    if exc.get("minKernel") and _at_least(exc["minKernel"]):
        return False
    if inc.get("arches") and arch not in inc["arches"]:
        return False
    if any(c not in caps for c in inc.get("caps") or []):
        return False
    if inc.get("minKernel") and not _at_least(inc["minKernel"]):
        return False
    return True


def translate(profile: dict[str, Any], capabilities: list[str], machine: str | None = None) -> dict[str, Any]:
    """The OCI linux.seccomp for a container whose bounding set is `capabilities`."""
    arch, scmp_arch = _NATIVE.get(machine or os.uname().machine, ("", ""))
    caps = frozenset(capabilities)
    out: dict[str, Any] = {"defaultAction": profile.get("defaultAction") or "SCMP_ACT_ERRNO"}
    errno = profile.get("defaultErrnoRet")
    if errno is not None:
        out["defaultErrnoRet"] = int(errno)
    arches: list[str] = list(profile.get("architectures") or [])
    for entry in profile.get("archMap") or []:
        if entry.get("architecture") == scmp_arch:
            arches = [scmp_arch, *(entry.get("subArchitectures") or [])]
            break
    if arches:
        out["architectures"] = arches
    if profile.get("flags"):
        out["flags"] = list(profile["flags"])
    syscalls: list[dict[str, Any]] = []
    for call in profile.get("syscalls") or []:
        if not _applies(call, arch, caps):
            continue
        rule: dict[str, Any] = {"names": _names(call), "action": call["action"]}
        if call.get("errnoRet") is not None and call["action"] in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
            rule["errnoRet"] = int(call["errnoRet"])
        if call.get("args"):
            rule["args"] = [{"index": a["index"], "value": a.get("value", 0),
                             "valueTwo": a.get("valueTwo", 0), "op": a["op"]} for a in call["args"]]
        syscalls.append(rule)
    syscalls = _without_conflicts(syscalls)
    withdrawn = profile.get("_withdrawn")
    if withdrawn:
        # What Docker refuses is refused with EPERM, as Docker's default action does (the file's
        # default is ENOSYS, which reads "not implemented" to a program that tries unshare).
        decided = {n for r in syscalls if not r.get("args") for n in r["names"]}
        refused = [n for n in withdrawn if n not in decided and n != "clone"]
        if refused:
            syscalls.append({"names": refused, "action": "SCMP_ACT_ERRNO", "errnoRet": EPERM})
    out["syscalls"] = syscalls
    return out


def _without_conflicts(rules: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A syscall both allowed and refused without argument conditions (CAP_BPF adds bpf, while
    the rule for containers without CAP_SYS_ADMIN refuses it): allowed wins, as in Docker,
    whose refusals are its default action. libseccomp refuses the pair otherwise."""
    allowed = {n for r in rules if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args") for n in r["names"]}
    out = []
    for r in rules:
        if r["action"] != "SCMP_ACT_ALLOW" and not r.get("args"):
            names = [n for n in r["names"] if n not in allowed]
            if not names:
                continue
            r = {**r, "names": names}
        out.append(r)
    return out




# ---- compiled BPF ----------------------------------------------------------------------------
# crun compiles linux.seccomp with libseccomp on every start (crun 1.8.1 keeps no cache):
# measured as the CPU time of `crun run` of /bin/true, 25 ms with the section against 9-10 ms
# without a filter and 11-12 ms with the program given ready made; 30-40 ms of wall time on
# this shared machine. crun also takes the program ready made, base64 in the annotation
# run.oci.seccomp_bpf_data. shoal compiles the default filter once per capability set, with the
# same libseccomp and the same steps as crun (the program is byte for byte crun's: tested), and
# keeps it in memory and under the run root (a tmpfs; the key holds the libseccomp version and
# the kernel too). runc ignores the annotation and compiles the section.

BPF_ANNOTATION = "run.oci.seccomp_bpf_data"
_SCMP_ACT = {"SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000,
             "SCMP_ACT_KILL_PROCESS": 0x80000000, "SCMP_ACT_TRAP": 0x00030000,
             "SCMP_ACT_LOG": 0x7FFC0000, "SCMP_ACT_ALLOW": 0x7FFF0000, "SCMP_ACT_NOTIFY": 0x7FC00000}
_SCMP_CMP = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
             "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
_libseccomp: Any = None
_bpf: dict[tuple[str, ...], str] = {}


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class _Version(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint), ("micro", ctypes.c_uint)]


def _lib() -> Any:
    """libseccomp (Debian's libseccomp2, which crun links): False when it cannot be loaded."""
    global _libseccomp
    if _libseccomp is None:
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError:
            _libseccomp = False
            return False
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(_ArgCmp)]
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        lib.seccomp_version.restype = ctypes.POINTER(_Version)
        _libseccomp = lib
    return _libseccomp


def _action(name: str, errno_ret: int) -> int:
    if name == "SCMP_ACT_ERRNO":
        return 0x00050000 | (errno_ret & 0xFFFF)
    if name == "SCMP_ACT_TRACE":
        return 0x7FF00000 | (errno_ret & 0xFFFF)
    return _SCMP_ACT[name]


def compile_bpf(section: dict[str, Any]) -> bytes | None:
    """The BPF program crun would make of this linux.seccomp section; None without libseccomp."""
    lib = _lib()
    if not lib:
        return None
    default = _action(section["defaultAction"], section.get("defaultErrnoRet", EPERM))
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise ShoalError("seccomp: seccomp_init failed")
    try:
        for arch in section.get("architectures") or []:
            name = arch[len("SCMP_ARCH_"):] if arch.startswith("SCMP_ARCH_") else arch
            token = lib.seccomp_arch_resolve_name(name.lower().encode())
            if token == 0:
                raise ShoalError(f"seccomp unknown architecture `{arch}`")
            ret = lib.seccomp_arch_add(ctx, token)
            if ret < 0 and ret != -17:  # EEXIST: the native one is there from seccomp_init
                raise ShoalError(f"seccomp adding architecture {arch}: {os.strerror(-ret)}")
        for rule in section.get("syscalls") or []:
            action = _action(rule["action"], rule.get("errnoRet", EPERM))
            if action == default:
                continue
            args = rule.get("args") or []
            cmps = [_ArgCmp(a["index"], _SCMP_CMP[a["op"]], a.get("value", 0), a.get("valueTwo", 0))
                    for a in args[:6]]
            indexes = [a["index"] for a in args[:6]]
            # libseccomp takes one comparison per argument: crun adds a rule per comparison then.
            groups = [cmps] if len(set(indexes)) == len(indexes) else [[c] for c in cmps]
            for name in rule["names"]:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr == -1:  # __NR_SCMP_ERROR: a name this libseccomp does not know; crun skips it
                    continue
                for group in groups:
                    array = (_ArgCmp * max(1, len(group)))(*group)
                    ret = lib.seccomp_rule_add_array(ctx, action, nr, len(group), array)
                    if ret < 0:
                        raise ShoalError(f"seccomp_rule_add `{name}`: {os.strerror(-ret)}")
        fd = os.memfd_create("shoal-seccomp", os.MFD_CLOEXEC)
        try:
            ret = lib.seccomp_export_bpf(ctx, fd)
            if ret < 0:
                raise ShoalError(f"seccomp_export_bpf: {os.strerror(-ret)}")
            size = os.lseek(fd, 0, os.SEEK_END)
            return os.pread(fd, size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)


def _cache_key(section: dict[str, Any]) -> str:
    v = _lib().seccomp_version().contents
    u = os.uname()
    text = json.dumps([section, [v.major, v.minor, v.micro], u.release, u.version, u.machine],
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def default_bpf(capabilities: list[str], persist: bool = True) -> str | None:
    """The default filter for this capability set, compiled, base64 (crun's annotation), or
    None when libseccomp is not there (crun then compiles the section itself). `persist`: read
    and write the run root's cache (False: memory only, for a process with no run root of its
    own: the cluster's zygote)."""
    key = tuple(sorted(capabilities))
    cached = _bpf.get(key)
    if cached is not None:
        return cached
    section = for_container(capabilities)
    if not _lib():
        return None
    from shoal.paths import ensure_private_dir, run_root

    cache_dir = run_root() / "seccomp"
    path = cache_dir / f"{_cache_key(section)}.bpf"
    try:
        data = path.read_bytes() if persist else b""
    except OSError:
        data = b""
    if not data or len(data) % 8:
        program = compile_bpf(section)
        if program is None:
            return None
        data = program
        try:
            if persist:
                ensure_private_dir(cache_dir)
                tmp = cache_dir / f".{path.name}.{os.getpid()}"
                tmp.write_bytes(data)
                tmp.chmod(0o600)
                os.replace(tmp, path)
        except OSError:
            pass  # a read-only or full run root: the program is still used from memory
    encoded = base64.b64encode(data).decode()
    _bpf[key] = encoded
    return encoded


def for_container(capabilities: list[str], custom: str | None = None) -> dict[str, Any]:
    """The filter for a container: the default profile (cached per capability set) or the
    profile text the user gave (`--security-opt seccomp=FILE`, read by the CLI as Docker's
    does). The returned dict is shared: callers serialise it, never change it."""
    if custom is not None:
        return translate(parse_profile(custom), capabilities)
    key = tuple(sorted(capabilities))
    cached = _translated.get(key)
    if cached is None:
        cached = translate(default_profile(), capabilities)
        _translated[key] = cached
    return cached
