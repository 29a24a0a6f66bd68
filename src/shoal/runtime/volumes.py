"""Volumes, as Docker's `local` driver keeps them (moby volume/local): state_root()/volumes/<name>/
_data, filled on first use with the image's content at the mount point (Docker's copy-up).

A volume made by `volume create` has a record beside its data, <name>/opts.json (0600): its labels,
the driver's options (`type`, `device`, `o`) and when it was made. One made by a container's
mount (`run -v name:/path`, a service's or stack's volume) has none until something asks: it is a
local volume with no options; an unnamed one (`-v /path`: 64 hex digits) is anonymous, and only
anonymous volumes go with `volume prune` unless -a.

With `type`/`device`/`o`, the volume's _data is a mount of that device (tmpfs, a bind, nfs ...),
made with moby/sys/mount's option parsing (flags such as `bind`, `ro`, `nosuid` become mount
flags, the rest the file system's data; nfs's `addr=` resolved to an address first), when a
container first uses it; it stays mounted until the volume is removed (Docker unmounts when its
last container stops: shoal has no daemon that sees every container stop)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import re
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from shoal import paths
from shoal.errors import Conflict, InvalidArgument, NotFound, ShoalError
from shoal.paths import remove_tree, state_root
from shoal.runtime import mounts

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]+$")
_ANONYMOUS = re.compile(r"^[0-9a-f]{64}$")
ANONYMOUS_LABEL = "com.docker.volume.anonymous"
RECORD = "opts.json"

# moby volume/local: the options the local driver knows, and which need which.
VALID_OPTS = ("type", "o", "device", "size")
MANDATORY_OPTS = {"device": ("type",), "type": ("device",), "o": ("device", "type")}

# moby/sys/mount flags.go: option -> (clears, flag). Anything else is file-system data.
_MS = {"RDONLY": 1, "NOSUID": 2, "NODEV": 4, "NOEXEC": 8, "SYNCHRONOUS": 16, "REMOUNT": 32, "MANDLOCK": 64,
       "DIRSYNC": 128, "NOATIME": 1024, "NODIRATIME": 2048, "BIND": 4096, "REC": 16384,
       "UNBINDABLE": 1 << 17, "PRIVATE": 1 << 18, "SLAVE": 1 << 19, "SHARED": 1 << 20, "RELATIME": 1 << 21,
       "STRICTATIME": 1 << 24}
_FLAGS: dict[str, tuple[bool, int]] = {
    "defaults": (False, 0), "ro": (False, _MS["RDONLY"]), "rw": (True, _MS["RDONLY"]),
    "suid": (True, _MS["NOSUID"]), "nosuid": (False, _MS["NOSUID"]), "dev": (True, _MS["NODEV"]),
    "nodev": (False, _MS["NODEV"]), "exec": (True, _MS["NOEXEC"]), "noexec": (False, _MS["NOEXEC"]),
    "sync": (False, _MS["SYNCHRONOUS"]), "async": (True, _MS["SYNCHRONOUS"]), "dirsync": (False, _MS["DIRSYNC"]),
    "remount": (False, _MS["REMOUNT"]), "mand": (False, _MS["MANDLOCK"]), "nomand": (True, _MS["MANDLOCK"]),
    "atime": (True, _MS["NOATIME"]), "noatime": (False, _MS["NOATIME"]), "diratime": (True, _MS["NODIRATIME"]),
    "nodiratime": (False, _MS["NODIRATIME"]), "bind": (False, _MS["BIND"]),
    "rbind": (False, _MS["BIND"] | _MS["REC"]), "unbindable": (False, _MS["UNBINDABLE"]),
    "runbindable": (False, _MS["UNBINDABLE"] | _MS["REC"]), "private": (False, _MS["PRIVATE"]),
    "rprivate": (False, _MS["PRIVATE"] | _MS["REC"]), "shared": (False, _MS["SHARED"]),
    "rshared": (False, _MS["SHARED"] | _MS["REC"]), "slave": (False, _MS["SLAVE"]),
    "rslave": (False, _MS["SLAVE"] | _MS["REC"]), "relatime": (False, _MS["RELATIME"]),
    "norelatime": (True, _MS["RELATIME"]), "strictatime": (False, _MS["STRICTATIME"]),
    "nostrictatime": (True, _MS["STRICTATIME"]),
}
_PTYPES = _MS["SHARED"] | _MS["PRIVATE"] | _MS["SLAVE"] | _MS["UNBINDABLE"]
_PFLAGS = _PTYPES | _MS["REC"] | 32768  # MS_SILENT
_BROFLAGS = _MS["BIND"] | _MS["RDONLY"]

_libc = ctypes.CDLL(None, use_errno=True)


def volumes_root() -> Path:
    return state_root() / "volumes"


def data_dir(name: str) -> Path:
    return volumes_root() / name / "_data"


def validate_name(name: str) -> None:
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f'create {name}: "{name}" includes invalid characters for a local volume name, '
            "only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host "
            "directory, use absolute path")


@dataclass
class Volume:
    """What `volume inspect` shows of one local volume."""

    name: str
    created_at: float
    labels: dict[str, str] | None = None
    options: dict[str, str] | None = None
    anonymous: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def mountpoint(self) -> Path:
        return data_dir(self.name)

    def needs_mount(self) -> bool:
        opts = self.options or {}
        return bool(opts.get("device") or opts.get("type"))

    def to_api(self) -> dict[str, Any]:
        """moby's volume.Volume, keys in Go's field order."""
        def go_map(m: dict[str, str] | None) -> dict[str, str] | None:
            return None if m is None else {k: m[k] for k in sorted(m)}  # encoding/json sorts map keys

        return {"CreatedAt": _go_local_time(self.created_at), "Driver": "local", "Labels": go_map(self.labels),
                "Mountpoint": str(self.mountpoint), "Name": self.name, "Options": go_map(self.options),
                "Scope": "local"}


def _go_local_time(ts: float) -> str:
    """time.RFC3339 in the local zone, as dockerd writes a volume's CreatedAt."""
    when = datetime.fromtimestamp(int(ts)).astimezone()
    zone = when.strftime("%z")
    return when.strftime("%Y-%m-%dT%H:%M:%S") + ("Z" if zone == "+0000" else f"{zone[:3]}:{zone[3:]}")


def validate_opts(opts: dict[str, str]) -> None:
    """moby volume/local validateOpts."""
    for opt in opts:
        if opt not in VALID_OPTS:
            raise InvalidArgument(f'invalid option: "{opt}"')
    if "size" in opts:
        raise InvalidArgument("quota size requested but no quota support")
    for opt, required in MANDATORY_OPTS.items():
        if opt in opts:
            for req in required:
                if req not in opts:
                    raise InvalidArgument(f'missing required option: "{req}"')


def _read(name: str) -> Volume | None:
    top = volumes_root() / name
    if not (top / "_data").is_dir():
        return None
    try:
        raw = json.loads((top / RECORD).read_text())
    except FileNotFoundError:
        anonymous = bool(_ANONYMOUS.fullmatch(name))
        return Volume(name=name, created_at=os.stat(top).st_ctime, anonymous=anonymous,
                      labels={ANONYMOUS_LABEL: ""} if anonymous else None)
    except ValueError:
        raise ShoalError(f"volume {name}: {top / RECORD} is not valid JSON") from None
    labels = raw.get("labels")
    return Volume(name=name, created_at=float(raw.get("created_at") or 0), labels=labels,
                  options=raw.get("options"), anonymous=ANONYMOUS_LABEL in (labels or {}))


def get(name: str) -> Volume:
    """dockerd's `get NAME: no such volume`."""
    found = _read(name) if _NAME.fullmatch(name) else None
    if found is None:
        raise NotFound(f"get {name}: no such volume")
    return found


def list_volumes() -> list[Volume]:
    root = volumes_root()
    if not root.is_dir():
        return []
    out = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.is_dir() and _NAME.fullmatch(entry.name):
            found = _read(entry.name)
            if found is not None:
                out.append(found)
    return out


def create(name: str = "", driver: str = "local", opts: dict[str, str] | None = None,
           labels: dict[str, str] | None = None) -> Volume:
    """`volume create`: a new local volume, or the one of that name already there (Docker's
    create is idempotent). Only the `local` driver exists here (no volume plugins)."""
    from shoal.ids import new_id

    name = name or new_id()
    validate_name(name)
    if driver != "local":
        raise NotFound(f'create {name}: error looking up volume plugin {driver}: plugin "{driver}" not found')
    opts = dict(opts or {})
    try:
        validate_opts(opts)
    except InvalidArgument as exc:
        raise InvalidArgument(f"create {name}: {exc}") from None
    existing = _read(name)
    if existing is not None:
        return existing
    top = volumes_root() / name
    paths.ensure_private_dir(volumes_root())
    top.mkdir(mode=0o701, exist_ok=True)
    (top / "_data").mkdir(mode=0o755, exist_ok=True)
    record = {"labels": dict(labels or {}) or None, "options": opts or None, "created_at": time.time()}
    paths.write_file(top / RECORD, json.dumps(record))
    return Volume(name=name, created_at=record["created_at"], labels=record["labels"], options=record["options"])


def mount_driver_options(options: list[str] | tuple[str, ...]) -> tuple[str, dict[str, str]]:
    """The driver and its options a mount carries (`volume-driver=x`, `volume-opt=k=v`, as
    `--mount` writes them and a stack's volume converts to)."""
    driver, opts = "local", {}
    for item in options:
        key, _, value = item.partition("=")
        if key == "volume-driver" and value:
            driver = value
        elif key == "volume-opt":
            opt, _, opt_value = value.partition("=")
            opts[opt] = opt_value
    return driver, opts


def mount_volume_labels(options: list[str] | tuple[str, ...]) -> dict[str, str]:
    """The labels a stack's volume gives the volume made for its mount (`volume-label=k=v`,
    docker/cli's VolumeOptions.Labels: the stack's namespace and the volume's own)."""
    labels: dict[str, str] = {}
    for item in options:
        key, _, value = item.partition("=")
        if key == "volume-label":
            label, _, label_value = value.partition("=")
            labels[label] = label_value
    return labels


def ensure(name: str, mount_options: list[str] | tuple[str, ...] = ()) -> Path:
    """The volume's data dir, made if missing (with the driver options its mount carries, as
    dockerd makes a service's volume) and mounted if its options ask."""
    validate_name(name)
    data = data_dir(name)
    with _locked(name):  # tasks of one service start at once: one of them makes and mounts it
        if not data.is_dir():
            driver, opts = mount_driver_options(mount_options)
            labels = mount_volume_labels(mount_options)
            if driver != "local" or opts or labels:
                create(name, driver, opts, labels)
            else:
                data.mkdir(parents=True, exist_ok=True)
                return data
        found = _read(name)
        if found is not None and found.needs_mount() and not mounts.is_mounted(data):
            mount_volume(found)
    return data


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    import fcntl

    paths.ensure_private_dir(volumes_root())
    fd = os.open(volumes_root() / f".{name}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def parse_options(options: str) -> tuple[int, str]:
    """moby/sys/mount parseOptions: known words become flags, the rest is data."""
    flag, data = 0, []
    for o in options.split(","):
        known = _FLAGS.get(o)
        if known is not None and known[1] != 0:
            flag = flag & ~known[1] if known[0] else flag | known[1]
        else:
            data.append(o)
    return flag, ",".join(data)


def _go_errno(err: int) -> str:
    text = os.strerror(err)
    return text[:1].lower() + text[1:]


def _sys_mount(device: str, target: str, fstype: str, flags: int, data: str, op: str) -> None:
    if _libc.mount(device.encode() or None, target.encode(), fstype.encode() or None, flags,
                   data.encode() or None) != 0:
        err = ctypes.get_errno()
        # moby/sys/mount mountError.Error()
        text = f"{op} " + (f"{device}:{target}" if device else target)
        if flags:
            text += f", flags: {flags:#x}"
        if data:
            text += f", data: {data}"
        raise ShoalError(f"{text}: {_go_errno(err)}")


def mount_call(device: str, target: str, fstype: str, options: str) -> None:
    """moby/sys/mount Mount (mounter_linux.go): the mount, then a propagation change, then a
    read-only remount of a bind."""
    flags, data = parse_options(options)
    if flags & _MS["BIND"] and device and not device.startswith("/"):
        # mount(2) looks a bind's source up from the caller's working directory: dockerd's is
        # /, shoal's is wherever the CLI (or the shell that first started shoald) stood, so
        # `device: data` named a different directory from one command to the next.
        device = "/" + device
    oflags = flags & ~_PTYPES
    if not flags & _MS["REMOUNT"] or data:
        _sys_mount(device, target, fstype, oflags, data, "mount")
    if flags & _PTYPES:
        _sys_mount("", target, "", flags & _PFLAGS, "", "remount")
    if oflags & _BROFLAGS == _BROFLAGS:
        _sys_mount("", target, "", oflags | _MS["REMOUNT"], "", "remount-ro")


def _address(options: str) -> str:
    for opt in options.split(","):
        if opt.startswith("addr="):
            return opt[len("addr="):]
    return ""


def mount_options(opts: dict[str, str]) -> tuple[str, str]:
    """moby volume/local getMountOptions: the device and the `o` options, an nfs/cifs `addr=`
    host name resolved to its address."""
    device = opts.get("device", "")
    if not device:
        raise ShoalError("missing device in volume options")
    options = opts.get("o", "")
    if opts.get("type") in ("nfs", "cifs"):
        addr = _address(options)
        if addr and not _is_ipv4(addr):
            try:
                resolved = socket.getaddrinfo(addr, None)[0][4][0]
            except (socket.gaierror, IndexError) as exc:
                raise ShoalError(f"error resolving passed in network volume address: lookup {addr}: "
                                 f"{getattr(exc, 'strerror', exc)}") from None
            options = options.replace("addr=" + addr, "addr=" + str(resolved), 1)
    return device, options


def _is_ipv4(text: str) -> bool:
    try:
        socket.inet_pton(socket.AF_INET, text)
        return True
    except OSError:
        return False


def mount_volume(vol: Volume) -> None:
    opts = vol.options or {}
    device, options = mount_options(opts)
    try:
        mount_call(device, str(vol.mountpoint), opts.get("type", ""), options)
    except ShoalError as exc:
        text = str(exc)
        password = next((o[len("password="):] for o in opts.get("o", "").split(",") if o.startswith("password=")), "")
        if password:
            text = text.replace("password=" + password, "password=********", 1)
        raise ShoalError(f"error while mounting volume '{vol.mountpoint.parent}': failed to mount local "
                         f"volume: {text}") from None


SUBPATH_ERROR = "subpath must be a relative path within the volume"
_SYS_OPENAT2 = 437
_RESOLVE_NO_MAGICLINKS, _RESOLVE_BENEATH = 0x02, 0x08


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def subpath_option(options: list[str] | tuple[str, ...]) -> str | None:
    """The `subpath=` a volume mount carries (`--mount volume-subpath=`, compose's
    `volume.subpath`), or None."""
    found = None
    for item in options:
        key, sep, value = item.partition("=")
        if key == "subpath" and sep:
            found = value
    return found


def check_subpath(subpath: str) -> None:
    """moby's validateMountConfig: Go's filepath.IsLocal, so no absolute path and no `..` that
    leaves the volume once cleaned."""
    cleaned = os.path.normpath(subpath) if subpath else ""
    if not subpath or subpath.startswith("/") or cleaned == ".." or cleaned.startswith("../"):
        raise InvalidArgument(SUBPATH_ERROR)


def bind_subpath(name: str, subpath: str, at: Path) -> bool:
    """Bind the volume's `subpath` at `at` (made here, a file or a directory as the subpath is),
    as moby's safepath.Join: resolved by the kernel beneath the volume's data (openat2
    RESOLVE_BENEATH: a link to / or a `..` out of it is refused, a link within it followed),
    and bound from the descriptor that resolution opened, so a container that swaps a part of
    the path for a link meanwhile does not redirect the mount. True when it is a directory."""
    check_subpath(subpath)
    data = data_dir(name)
    base = os.open(data, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        how = _OpenHow(os.O_PATH | os.O_CLOEXEC, 0, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)
        fd = _libc.syscall(_SYS_OPENAT2, base, subpath.encode(), ctypes.byref(how), ctypes.sizeof(how))
        err = ctypes.get_errno() if fd < 0 else 0
    finally:
        os.close(base)
    if err == errno.EXDEV:
        raise InvalidArgument(f"path concatenation escapes the base directory, base: {data}, subpath: {subpath}")
    if err:
        raise NotFound(f"cannot access path {os.path.join(data, subpath)}: {_go_errno(err)}")
    try:
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        if mounts.is_mounted(at):
            mounts.unmount(at)
        paths.ensure_private_dir(at.parent)
        if is_dir:
            at.mkdir(mode=0o700, exist_ok=True)
        else:
            os.close(os.open(at, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600))
        _sys_mount(f"/proc/self/fd/{fd}", str(at), "", _MS["BIND"], "", "mount")
    finally:
        os.close(fd)
    return is_dir


def copy_up_into_empty(rootfs: Path, target: str, into: Path) -> None:
    """moby's populateVolume (copyExistingContents), for a container's first start: the image's
    files at the mount point into the volume (`into`: its data, or a subpath's bind from the
    descriptor the resolution beneath the volume opened) when that is empty. Not only at a
    volume's first use: one service that mounted it where its image has nothing must not keep
    another's files out of it. The mount point is resolved inside the container's root
    (mounts.open_dir_in_root): an image's symlink such as /srv -> / must lead to the image's
    files, never the host's."""
    if not into.is_dir():
        return
    with os.scandir(into) as entries:
        if next(entries, None) is not None:
            return
    fd = mounts.open_dir_in_root(rootfs, target)
    if fd is not None:
        try:
            # cp -a keeps owners, modes, links and xattrs, as Docker's copy-up does; it reads
            # the directory through the descriptor found inside the root, not by a host path.
            subprocess.run(["cp", "-a", f"/proc/self/fd/{fd}/.", str(into)], check=True, pass_fds=(fd,))
        finally:
            os.close(fd)


def users(name: str, containers: list[Any]) -> list[str]:
    """The IDs of the containers (any state) whose mounts name the volume: dockerd refuses to
    remove a volume while a container references it, running or not."""
    return [c.id for c in containers
            if any(m.type == "volume" and m.source == name for m in c.spec.mounts)]


def size(name: str) -> int:
    from shoal.image.layers import dir_size

    with contextlib.suppress(OSError):
        return dir_size(data_dir(name))
    return 0


def remove(name: str) -> None:
    """The volume's data and record; its mount first (a device-backed volume)."""
    top = volumes_root() / name
    data = top / "_data"
    if mounts.is_mounted(data):
        mounts.unmount(data)
    remove_tree(top)  # a container may have nested the data past shutil.rmtree's reach
    with contextlib.suppress(FileNotFoundError):
        (volumes_root() / f".{name}.lock").unlink()


def remove_checked(name: str, containers: list[Any], force: bool = False) -> bool:
    """`volume rm`: dockerd's words for a missing volume (ignored with force) and for one in use.
    True when something was removed."""
    try:
        get(name)
    except NotFound:
        if force:
            return False
        raise NotFound(f"get {name}: no such volume") from None
    using = users(name, containers)
    if using:
        raise Conflict(f"remove {name}: volume is in use - [{', '.join(using)}]")
    remove(name)
    return True


def _label_match(labels: dict[str, str], cond: str) -> bool:
    key, sep, value = cond.partition("=")
    return key in labels and (not sep or labels[key] == value)


def prune(containers: list[Any], all: bool = False, labels: list[str] | None = None,
          not_labels: list[str] | None = None) -> tuple[list[str], int]:
    """`volume prune`: the unused volumes (anonymous ones only unless `all`), filtered by
    `label=` / `label!=`; their names and the bytes reclaimed."""
    removed, reclaimed = [], 0
    for vol in list_volumes():
        if not all and not vol.anonymous:
            continue
        have = vol.labels or {}
        if any(not _label_match(have, c) for c in labels or []):
            continue
        if any(_label_match(have, c) for c in not_labels or []):
            continue
        if users(vol.name, containers):
            continue
        reclaimed += size(vol.name)
        remove(vol.name)
        removed.append(vol.name)
    return removed, reclaimed

