"""An offline base image made from the Debian archive with debootstrap.

No container registry is reachable from the machines shoal runs on, but Debian's archive is.
`shoal image bootstrap` runs `debootstrap --variant=minbase`, adds the CA certificates the host
trusts (its network re-signs TLS, so HTTPS to PyPI would not verify otherwise), trims apt's
caches, and packs the root filesystem as one gzip layer. The layer is cached under
cache_root() keyed by everything that shapes its content (suite, packages, host CAs, recipe
version), so the next run - and every test session - only imports it: seconds, not minutes.

Locally made images get local names (localhost/...): a home-made "python:3.12-slim" would be
mistaken for Docker's official image.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from shoal.errors import InvalidArgument, ShoalError
from shoal.image import reference
from shoal.image.mediatypes import OCI_LAYER_GZIP
from shoal.paths import cache_root

if TYPE_CHECKING:
    from shoal.image.store import Image, ImageStore

RECIPE_VERSION = 1   # bump when the post-processing below changes the image's content
PYTHON_PACKAGES = ("python3", "python3-pip", "python3-venv", "ca-certificates", "python-is-python3")
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
DEFAULT_MIRROR = "http://deb.debian.org/debian"
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# What Debian's own slim images leave out (debuerreotype's slimify list), also for later apt runs.
SLIM_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/groff/*", "/usr/share/info/*",
                 "/usr/share/lintian/*", "/usr/share/linda/*", "/usr/share/locale/*")
SLIM_INCLUDES = ("/usr/share/doc/*/copyright",)
# debootstrap's own stages, the lines worth showing a user (the rest goes to the log file)
_STAGE_RE = re.compile(r"^I: (Retrieving Release|Checking component|Found additional|Installing core|"
                       r"Unpacking the base|Configuring the base|Base system installed|Resolving)")

Log = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    """What goes into a bootstrapped root filesystem."""

    suite: str = "bookworm"
    python: bool = False
    include: tuple[str, ...] = ()
    mirror: str | None = None

    def packages(self) -> list[str]:
        return sorted(set(self.include) | (set(PYTHON_PACKAGES) if self.python else set()))

    def cache_key(self) -> str:
        """Everything that shapes the content; the mirror is not part of it (same archive)."""
        doc = {"recipe": RECIPE_VERSION, "suite": self.suite, "variant": "minbase",
               "packages": self.packages(), "arch": os.uname().machine, "cas": _host_ca_digest()}
        return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class CachedRootfs:
    """A packed root filesystem in the cache: one gzip layer blob plus what the config needs."""

    path: Path
    digest: str           # sha256 of the .tar.gz (the layer blob digest)
    diff_id: str          # sha256 of the uncompressed tar
    size: int
    created: str          # RFC 3339, when it was built: keeps the image ID stable across imports
    suite: str
    packages: list[str]
    python_version: str | None = None
    mirror: str = ""
    meta: dict = field(default_factory=dict)


def default_tags(recipe: Recipe, python_version: str | None) -> list[str]:
    if recipe.python:
        return [f"localhost/shoal-python:{python_version or '3'}"]
    return [f"localhost/shoal-debian:{recipe.suite}"]


def check_local_tag(tag: str) -> str:
    """Refuse Docker Hub names for a home-made image (python:3.12-slim, someone/app)."""
    ref = reference.parse(tag)
    if ref.domain == reference.DEFAULT_DOMAIN:
        raise InvalidArgument(
            f"refusing to tag a locally made image as {ref.familiar()}: that is a Docker Hub name "
            f"and would pass for the published image; use a local name such as localhost/{ref.familiar()}")
    return ref.familiar()


# ---------------------------------------------------------------------------------------------
# the host's apt configuration and certificates

def _host_ca_files() -> list[Path]:
    return sorted(HOST_CA_DIR.glob("**/*.crt")) if HOST_CA_DIR.is_dir() else []


def _host_ca_digest() -> str:
    h = hashlib.sha256()
    for path in _host_ca_files():
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


@dataclass
class AptSource:
    uri: str
    suites: list[str]
    components: list[str]


def host_apt_sources(root: Path = Path("/etc/apt")) -> list[AptSource]:
    """The host's `deb` sources, from sources.list, *.list and deb822 *.sources files."""
    sources: list[AptSource] = []
    files = [root / "sources.list"] + sorted((root / "sources.list.d").glob("*.list"))
    for path in files:
        if not path.is_file():
            continue
        for line in path.read_text(errors="replace").splitlines():
            line = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()  # type: ignore[assignment]
            if len(line) >= 3 and line[0] == "deb":
                sources.append(AptSource(uri=line[1], suites=[line[2]], components=list(line[3:])))
    for path in sorted((root / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text(errors="replace")):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.startswith("#") or ":" not in line or line[:1].isspace():
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes") == "no":
                continue
            for uri in fields.get("uris", "").split():
                sources.append(AptSource(uri=uri, suites=fields.get("suites", "").split(),
                                         components=fields.get("components", "").split()))
    return sources


def host_mirror(suite: str, sources: list[AptSource] | None = None) -> str:
    """The archive the host itself installs `suite` from (it is reachable from here), else Debian's."""
    for source in sources if sources is not None else host_apt_sources():
        if suite in source.suites and "security" not in source.uri:
            return source.uri
    return DEFAULT_MIRROR


def image_apt_sources(recipe: Recipe, mirror: str) -> str:
    """sources.list for the image: the host's entries for this suite (updates, security), which
    are known to work from here; just the mirror when the user chose one."""
    lines = []
    if recipe.mirror is None:
        for source in host_apt_sources():
            for suite in source.suites:
                if suite == recipe.suite or suite.startswith(recipe.suite + "-") \
                        or suite.startswith(recipe.suite + "/"):
                    lines.append(f"deb {source.uri} {suite} {' '.join(source.components) or 'main'}")
    if not any(f" {recipe.suite} " in line for line in lines):
        lines.insert(0, f"deb {mirror} {recipe.suite} main")
    return "\n".join(dict.fromkeys(lines)) + "\n"


# ---------------------------------------------------------------------------------------------
# the cache

def cache_dir() -> Path:
    return cache_root() / "bootstrap"


def _cache_paths(recipe: Recipe) -> tuple[Path, Path]:
    stem = f"{recipe.suite}-{recipe.cache_key()}"
    return cache_dir() / f"{stem}.tar.gz", cache_dir() / f"{stem}.json"


def cached(recipe: Recipe) -> CachedRootfs | None:
    """The cached root filesystem for this recipe, if a complete one is there."""
    blob, meta_path = _cache_paths(recipe)
    if not blob.is_file() or not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if blob.stat().st_size != meta["size"]:
            return None
        return CachedRootfs(path=blob, digest=meta["digest"], diff_id=meta["diff_id"], size=meta["size"],
                            created=meta["created"], suite=meta["suite"], packages=meta["packages"],
                            python_version=meta.get("python_version"), mirror=meta.get("mirror", ""),
                            meta=meta)
    except (ValueError, KeyError, OSError):
        return None


@contextmanager
def _cache_lock() -> Iterator[None]:
    """One bootstrap at a time per cache: a second caller waits, then finds the cached result."""
    cache_dir().mkdir(parents=True, exist_ok=True)
    with (cache_dir() / ".lock").open("w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------------------------------------
# building

def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()) + "/"
    mounts = []
    for line in Path("/proc/mounts").read_text().splitlines():
        target = line.split()[1].replace("\\040", " ")
        if target.startswith(prefix) or target == prefix[:-1]:
            mounts.append(target)
    return mounts


def _remove_tree(path: Path) -> None:
    """Remove a build directory, never through a mount debootstrap may have left behind."""
    for target in reversed(_mounts_under(path)):
        subprocess.run(["umount", "-l", target], check=False, capture_output=True)
    if _mounts_under(path):
        raise ShoalError(f"cannot clean up {path}: mounts are still active under it")
    shutil.rmtree(path, ignore_errors=True)


def _run_debootstrap(recipe: Recipe, mirror: str, rootfs: Path, logfile: Path, log: Log) -> None:
    debs = cache_root() / "debootstrap" / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    argv = ["debootstrap", "--variant=minbase", f"--cache-dir={debs}"]
    if recipe.packages():
        argv.append("--include=" + ",".join(recipe.packages()))
    argv += [recipe.suite, str(rootfs), mirror]
    if shutil.which("debootstrap") is None:
        raise ShoalError("debootstrap is not installed (apt-get install debootstrap)")
    last_error = ""
    with logfile.open("w") as logf, subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                    text=True, errors="replace") as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            logf.write(line)
            line = line.rstrip()
            if line.startswith("E: ") or line.startswith("W: Failure"):
                last_error = line[3:]
            if _STAGE_RE.match(line):
                log(f"debootstrap: {line[3:]}")
    if proc.returncode != 0:
        raise ShoalError(f"debootstrap {recipe.suite} from {mirror} failed (exit {proc.returncode})"
                         f"{': ' + last_error if last_error else ''}; see {logfile}")


def _chroot(rootfs: Path, *argv: str) -> None:
    proc = subprocess.run(["chroot", str(rootfs), *argv], capture_output=True, text=True,
                          env={"PATH": PATH_ENV[5:], "LANG": "C.UTF-8"})
    if proc.returncode != 0:
        raise ShoalError(f"`{' '.join(argv)}` in the new root filesystem failed: "
                         f"{(proc.stderr or proc.stdout).strip().splitlines()[-1:]}")


def _finish_rootfs(recipe: Recipe, rootfs: Path, mirror: str, log: Log) -> str | None:
    """Everything after debootstrap: CAs, pip as in python:*-slim, apt sources, slimming."""
    cas = _host_ca_files()
    if cas:
        target = rootfs / "usr/local/share/ca-certificates"
        target.mkdir(parents=True, exist_ok=True)
        for ca in cas:
            shutil.copyfile(ca, target / ca.name)
        if (rootfs / "usr/sbin/update-ca-certificates").exists():
            log(f"Adding the host's {len(cas)} extra CA certificate(s) and running update-ca-certificates")
            _chroot(rootfs, "update-ca-certificates")
        else:
            log(f"Copied the host's {len(cas)} extra CA certificate(s) (trusted once ca-certificates is installed)")
    python_version = None
    managed = list(rootfs.glob("usr/lib/python3*/EXTERNALLY-MANAGED"))
    for marker in managed:
        # python:*-slim images let `pip install` write to the system: the seed's Dockerfile needs it
        marker.unlink()
        python_version = marker.parent.name.removeprefix("python")
    (rootfs / "etc/apt/sources.list").write_text(image_apt_sources(recipe, mirror))
    dpkg_cfg = rootfs / "etc/dpkg/dpkg.cfg.d"
    dpkg_cfg.mkdir(parents=True, exist_ok=True)
    (dpkg_cfg / "shoal-slim").write_text(
        "".join(f"path-exclude {p}\n" for p in SLIM_EXCLUDES) + "".join(f"path-include {p}\n" for p in SLIM_INCLUDES))
    apt_conf = rootfs / "etc/apt/apt.conf.d"
    apt_conf.mkdir(parents=True, exist_ok=True)
    (apt_conf / "shoal-clean").write_text(
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };\n'
        'Acquire::Languages "none";\nAPT::Install-Recommends "false";\n')
    log("Removing apt caches and lists, documentation and translations")
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*_*",
                    "var/log/bootstrap.log", "var/cache/debconf/*-old", "var/lib/dpkg/*-old", "dev/*"):
        for path in rootfs.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
    for pattern in SLIM_EXCLUDES:
        for path in rootfs.glob(pattern.lstrip("/")):
            if path.is_dir() and not path.is_symlink():
                for inner in path.rglob("*"):
                    if inner.name == "copyright" and "doc" in path.parts[-2:]:
                        continue
                    if inner.is_file() or inner.is_symlink():
                        inner.unlink()
            elif path.name != "copyright":
                path.unlink()
    # the container runtime provides these; the host's values must not leak into the image
    for name in ("etc/resolv.conf", "etc/hostname", "etc/machine-id"):
        path = rootfs / name
        if path.exists() or path.is_symlink():
            path.unlink()
        path.write_text("")
    return python_version


class _HashingWriter:
    """Hashes the uncompressed tar (the diff ID) on its way into gzip."""

    def __init__(self, target: gzip.GzipFile) -> None:
        self.target = target
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.target.write(data)


def _pack(rootfs: Path, out: Path) -> tuple[str, int]:
    """Pack the tree as a layer tar (relative names, numeric owners), gzip it; return the diff ID."""

    def numeric(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uname = info.gname = ""
        return info

    with out.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
        writer = _HashingWriter(gz)
        with tarfile.open(fileobj=writer, mode="w|", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
            for dirpath, dirnames, filenames in os.walk(rootfs):
                dirnames.sort()
                rel_dir = os.path.relpath(dirpath, rootfs)
                for name in sorted(dirnames) + sorted(filenames):
                    rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                    tar.add(os.path.join(dirpath, name), arcname=rel, recursive=False, filter=numeric)
    return "sha256:" + writer.sha.hexdigest(), writer.size


def build(recipe: Recipe, log: Log) -> CachedRootfs:
    """Run debootstrap and pack the result into the cache (atomically: a complete entry or none)."""
    mirror = recipe.mirror or host_mirror(recipe.suite)
    blob_path, meta_path = _cache_paths(recipe)
    cache_dir().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="build-", dir=cache_dir()))
    rootfs = work / "rootfs"
    logfile = cache_dir() / f"{recipe.suite}-{recipe.cache_key()}.debootstrap.log"
    try:
        packages = recipe.packages()
        log(f"Running debootstrap --variant=minbase {recipe.suite} from {mirror}"
            + (f" with {', '.join(packages)}" if packages else "") + " (a few minutes, once)")
        started = time.monotonic()
        _run_debootstrap(recipe, mirror, rootfs, logfile, log)
        log(f"debootstrap finished in {time.monotonic() - started:.0f}s")
        python_version = _finish_rootfs(recipe, rootfs, mirror, log)
        log("Packing the root filesystem into a layer")
        tmp_blob = work / "rootfs.tar.gz"
        diff_id, tar_size = _pack(rootfs, tmp_blob)
        digest = "sha256:" + hashlib.sha256(tmp_blob.read_bytes()).hexdigest()
        size = tmp_blob.stat().st_size
        meta = {"digest": digest, "diff_id": diff_id, "size": size, "tar_size": tar_size,
                "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "suite": recipe.suite,
                "packages": packages, "python_version": python_version, "mirror": mirror,
                "recipe": RECIPE_VERSION}
        os.replace(tmp_blob, blob_path)
        tmp_meta = work / "meta.json"
        tmp_meta.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp_meta, meta_path)  # written last: its presence marks a complete entry
        logfile.unlink(missing_ok=True)
    finally:
        _remove_tree(work)
    result = cached(recipe)
    assert result is not None
    return result


# ---------------------------------------------------------------------------------------------
# importing

def image_config(recipe: Recipe, rootfs: CachedRootfs, command: str) -> dict:
    env = [PATH_ENV, "LANG=C.UTF-8"]
    return {
        "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
        "os": "linux",
        "created": rootfs.created,
        "config": {"Env": env, "Cmd": ["python3"] if recipe.python else ["bash"]},
        "rootfs": {"type": "layers", "diff_ids": [rootfs.diff_id]},
        "history": [{"created": rootfs.created, "created_by": command,
                     "comment": f"debootstrap --variant=minbase {rootfs.suite} from {rootfs.mirror}"
                                + (f" with {','.join(rootfs.packages)}" if rootfs.packages else "")}],
    }


def import_rootfs(store: ImageStore, rootfs: CachedRootfs, config: dict, tags: list[str]) -> Image:
    if store.has_blob(rootfs.digest):
        layer = store.register_layer(rootfs.digest, OCI_LAYER_GZIP, diff_id=rootfs.diff_id)
    else:
        with rootfs.path.open("rb") as f:
            layer = store.import_layer(f, source=str(rootfs.path))  # stored and unpacked in one pass
    if (layer.digest, layer.diff_id) != (rootfs.digest, rootfs.diff_id):
        raise ShoalError(f"the cached root filesystem {rootfs.path} is damaged (its digest changed); "
                         "run `shoal image bootstrap` again with --rebuild")
    return store.create_image(config, [layer], tags=tags)


def bootstrap(store: ImageStore, recipe: Recipe, tags: list[str] | None = None, *,
              rebuild: bool = False, log: Log = print) -> Image:
    """Make (or take from the cache) the root filesystem for `recipe` and import it as an image."""
    for tag in tags or []:
        check_local_tag(tag)
    with _cache_lock():
        # under the lock no other build runs: a build-* directory is what a killed run left
        # (possibly with debootstrap's /proc and /sys mounts still inside)
        for stale in cache_dir().glob("build-*"):
            _remove_tree(stale)
        rootfs = None if rebuild else cached(recipe)
        if rootfs is None:
            rootfs = build(recipe, log)
            log(f"Cached the root filesystem as {rootfs.path} ({rootfs.size / 1e6:.0f}MB)")
        else:
            log(f"Using the cached root filesystem {rootfs.path} (built {rootfs.created})")
    final_tags = [check_local_tag(t) for t in (tags or default_tags(recipe, rootfs.python_version))]
    command = "shoal image bootstrap --suite " + recipe.suite + (" --python" if recipe.python else "") + \
        (" --include " + ",".join(recipe.include) if recipe.include else "")
    log("Importing it into the image store")
    image = import_rootfs(store, rootfs, image_config(recipe, rootfs, command), final_tags)
    return image
