"""Image archives, both ways: `docker save` tars and OCI image-layout tars.

One `save` writes what Docker 25+ writes: a docker-archive (manifest.json, repositories, the
config blob, uncompressed layer tars) whose files sit in an OCI image layout (oci-layout,
index.json, blobs/sha256/...), so the same tar loads with `docker load` (any version since
1.10), `skopeo copy docker-archive:`/`oci-archive:` and `shoal load`.

`load` reads either layout, also the older docker-archive shape (<id>.json, <v1id>/layer.tar,
symlinks between duplicate layers) and compressed tars (gzip, bzip2, xz), as `docker load` does.
Everything is unpacked into a private temporary directory and verified (every digest, every
diff ID) before the store sees any of it, so bad input leaves the store as it was.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import lzma
import os
import posixpath
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, BinaryIO

from shoal.errors import InvalidArgument, NotFound, ShoalError
from shoal.image.configcheck import check_image_config
from shoal.image import layers as layerfmt
from shoal.image import reference
from shoal.image.mediatypes import (
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
)

if TYPE_CHECKING:
    from shoal.image.store import Image, ImageStore

OCI_LAYOUT_VERSION = "1.0.0"
OCI_LAYER_TAR = OCI_LAYER
INDEX_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)
MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ANNOTATION_IMAGE_NAME = "io.containerd.image.name"
ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"

_CHUNK = 1 << 20
# moby's layer store refuses a chain deeper than this (layer/layer_store.go maxLayerDepth,
# "max depth exceeded"); overlayfs could not mount many more lower directories anyway.
MAX_LAYER_DEPTH = 125
# A manifest, index or config read whole: the distribution spec bounds manifests at 4MiB
MAX_JSON_SIZE = 16 << 20


# ---------------------------------------------------------------------------------------------
# digests and compression

def _sha256_stream(f: IO[bytes]) -> tuple[str, int]:
    h = hashlib.sha256()
    n = 0
    while chunk := f.read(_CHUNK):
        h.update(chunk)
        n += len(chunk)
    return "sha256:" + h.hexdigest(), n


def _sha256_file(path: Path) -> tuple[str, int]:
    with path.open("rb") as f:
        return _sha256_stream(f)


def _compression(path: Path) -> str:
    with path.open("rb") as f:
        return layerfmt.detect_compression(f.read(8))


@contextmanager
def _uncompressed(path: Path, kind: str) -> Iterator[IO[bytes]]:
    with path.open("rb") as raw:
        stream = layerfmt.decompressed(raw, kind)  # type: ignore[arg-type]
        try:
            yield stream
        finally:
            if stream is not raw:
                stream.close()


@dataclass
class _LayerFile:
    """A verified layer tar from an archive, ready to go into the store."""

    path: Path
    digest: str        # of the bytes as stored (compressed or not)
    diff_id: str       # of the uncompressed tar
    media_type: str
    size: int


def _verify_layer(arch: _Unpacked, path: Path, label: str, expected_diff_id: str, index: int,
                  expected_digest: str | None = None) -> _LayerFile:
    """Hash a layer file and its uncompressed content. gzip and plain tars are kept as they are;
    bzip2/xz/zstd are re-stored uncompressed (not layer media types a registry or Docker pulls)."""
    digest, size = _sha256_file(path)
    if expected_digest is not None and digest != expected_digest:
        raise ShoalError(f"invalid image archive {arch.source}: layer {label} does not match its digest: "
                         f"expected {expected_digest}, got {digest}")
    kind = _compression(path)
    try:
        if kind == "none":
            diff_id = digest
        elif kind == "gzip":
            with _uncompressed(path, kind) as stream:
                diff_id, _ = _sha256_stream(stream)
        else:
            plain = path.with_name(path.name + ".tar")
            h = hashlib.sha256()
            with _uncompressed(path, kind) as stream, plain.open("wb") as out:
                while chunk := stream.read(_CHUNK):
                    h.update(chunk)
                    out.write(chunk)
            diff_id = digest = "sha256:" + h.hexdigest()
            path, kind, size = plain, "none", plain.stat().st_size
    except (EOFError, OSError, zlib.error, lzma.LZMAError, layerfmt.LayerError) as exc:
        raise ShoalError(f"invalid image archive {arch.source}: layer {label} is truncated or corrupt: {exc}") from None
    if diff_id != expected_diff_id:
        raise ShoalError(f"invalid image archive {arch.source}: invalid diffID for layer {index} ({label}): "
                         f'expected "{expected_diff_id}", got "{diff_id}"')
    media_type = OCI_LAYER_GZIP if kind == "gzip" else OCI_LAYER_TAR
    return _LayerFile(path=path, digest=digest, diff_id=diff_id, media_type=media_type, size=size)


# ---------------------------------------------------------------------------------------------
# load

@dataclass
class LoadedImage:
    """One image of an archive, as it went into the store."""

    id: str
    tags: list[str]
    replaced: list[tuple[str, str]] = field(default_factory=list)  # (tag, old image id) moved here


@dataclass
class _Plan:
    config_bytes: bytes
    layers: list[_LayerFile]
    tags: list[str]
    manifest_bytes: bytes | None = None   # an OCI layout's own manifest, kept byte for byte

    @property
    def image_id(self) -> str:
        return "sha256:" + hashlib.sha256(self.config_bytes).hexdigest()


class _Unpacked:
    """An archive unpacked in a private directory; every path read from its JSON is confined."""

    def __init__(self, root: Path, source: str) -> None:
        self.root = root.resolve()
        self.source = source

    def path(self, name: str, what: str) -> Path:
        candidate = (self.root / name.lstrip("/")).resolve()
        if candidate != self.root and self.root not in candidate.parents:
            raise ShoalError(f"invalid image archive {self.source}: {what} {name!r} points outside the archive")
        if not candidate.is_file():
            raise ShoalError(f"invalid image archive {self.source}: {what} {name!r} is missing")
        return candidate

    def read(self, name: str, what: str) -> bytes:
        """A JSON document of the archive (manifest, index, config), read whole: bounded, so a
        multi-gigabyte "manifest.json" is an error and not the loader's memory."""
        path = self.path(name, what)
        size = path.stat().st_size
        if size > MAX_JSON_SIZE:
            raise ShoalError(f"invalid image archive {self.source}: {what} {name!r} is {size} bytes, "
                             f"more than {MAX_JSON_SIZE >> 20}MiB")
        return path.read_bytes()

    def json(self, name: str, what: str) -> Any:
        return _json(self.read(name, what), f"{self.source}: {name}")

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file()


def _json(data: bytes, label: str) -> Any:
    try:
        return json.loads(data)
    except ValueError as exc:
        raise ShoalError(f"invalid image archive {label} is not valid JSON: {exc}") from None
    except RecursionError:  # [[[[...: Python's parser gives up where Go's nests on
        raise ShoalError(f"invalid image archive {label} is nested too deeply") from None


def _safe_member_name(name: str) -> str | None:
    parts = [p for p in PurePosixPath(name).parts if p not in ("", ".", "/")]
    if not parts or ".." in parts or name.startswith("/"):
        return None
    return "/".join(parts)


def _unpack(src: BinaryIO, dest: Path, source: str) -> None:
    """Unpack regular files, directories and in-archive links; refuse anything that escapes."""
    bad = f"invalid image archive {source}"
    links: list[tuple[str, str, bool]] = []
    members = 0
    current = ""
    try:
        with tarfile.open(fileobj=src, mode="r|*") as tar:
            for member in tar:
                tar.members.clear()  # tarfile keeps every member read; nothing here looks one up
                members += 1
                current = member.name
                name = _safe_member_name(member.name)
                if name is None:
                    if member.isdir() and member.name.strip("./") == "":
                        continue
                    raise ShoalError(f"{bad}: unsafe path {member.name!r} in the archive")
                target = dest / name
                if member.isdir():
                    target.mkdir(parents=True, exist_ok=True)
                elif member.isreg():
                    if member.sparse is not None:
                        # `docker save` never writes one; its holes would come back as zeros
                        # (a few hundred bytes declaring terabytes, all written, then hashed)
                        raise ShoalError(f"{bad}: {member.name!r} is a sparse file, "
                                         "which an image archive never holds")
                    target.parent.mkdir(parents=True, exist_ok=True)
                    fileobj = tar.extractfile(member)
                    assert fileobj is not None
                    written = 0
                    with target.open("wb") as out:
                        while chunk := fileobj.read(_CHUNK):
                            out.write(chunk)
                            written += len(chunk)
                    if written != member.size:
                        raise ShoalError(f"{bad}: {name} is truncated ({written} of {member.size} bytes)")
                elif member.issym() or member.islnk():
                    links.append((name, member.linkname, member.issym()))
                # devices, fifos: never part of an image archive; ignored like docker does
    except ShoalError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise ShoalError(f"cannot load {source}: no space left on device in {dest.parent}") from None
        if exc.filename is not None and current:
            # the file system refused an entry (a name too long, a file where a directory must
            # go): name the entry, not the scratch path
            raise ShoalError(f"{bad}: cannot unpack {current!r}: {exc.strerror}") from None
        raise ShoalError(f"{bad}: truncated or corrupt tar ({exc})") from None
    except (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        reason = "empty, or not a tar archive" if members == 0 else (str(exc) or "unexpected end of data")
        raise ShoalError(f"{bad}: truncated or corrupt tar ({reason})") from None
    if members == 0:
        raise ShoalError(f"{bad}: the archive is empty")
    # Links last, and only to files inside the archive (older `docker save` links a repeated
    # layer as ../<v1id>/layer.tar); they become plain copies, so nothing read later can lead
    # outside the scratch directory.
    root = dest.resolve()
    for name, linkname, symbolic in links:
        target = dest / name
        base = posixpath.dirname(name) if symbolic else ""
        if linkname.startswith("/"):
            continue
        source_path = (root / posixpath.normpath(posixpath.join(base, linkname))).resolve()
        if root not in source_path.parents or not source_path.is_file():
            continue  # dangling or escaping links are ignored; a missing layer is reported later
        if target.exists() or target.is_symlink():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source_path, target)
        except OSError:
            shutil.copyfile(source_path, target)


def _ref_text(tag: str, source: str) -> str:
    try:
        return reference.parse(tag).familiar()
    except InvalidArgument:
        raise ShoalError(f"invalid image archive {source}: invalid tag {tag!r}") from None


def _plan_docker(arch: _Unpacked) -> list[_Plan]:
    items = arch.json("manifest.json", "manifest")
    if not isinstance(items, list) or not items:
        raise ShoalError(f"invalid image archive {arch.source}: manifest.json lists no images")
    plans = []
    for n, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("Config"), str) \
                or not isinstance(item.get("Layers"), list):
            raise ShoalError(f"invalid image archive {arch.source}: manifest.json entry {n} "
                             "needs \"Config\" and \"Layers\"")
        config_bytes = arch.read(item["Config"], "config")
        diff_ids = _diff_ids(config_bytes, item["Config"], arch.source)
        if len(diff_ids) != len(item["Layers"]):
            raise ShoalError(f"invalid image archive {arch.source}: invalid manifest, layers length mismatch: "
                             f"expected {len(item['Layers'])}, got {len(diff_ids)} ({item['Config']})")
        layers = [_verify_layer(arch, arch.path(p, "layer"), p, diff_ids[i], i) for i, p in enumerate(item["Layers"])]
        repo_tags = item.get("RepoTags") or []
        if not isinstance(repo_tags, list) or not all(isinstance(t, str) for t in repo_tags):
            raise ShoalError(f"invalid image archive {arch.source}: manifest.json entry {n}: "
                             "\"RepoTags\" must be a list of strings")
        tags = [_ref_text(t, arch.source) for t in repo_tags]
        plans.append(_Plan(config_bytes=config_bytes, layers=layers, tags=tags))
    return plans


def _diff_ids(config_bytes: bytes, label: str, source: str) -> list[str]:
    try:
        config = json.loads(config_bytes)
        diff_ids = config["rootfs"]["diff_ids"]
        if not isinstance(diff_ids, list) or not all(isinstance(d, str) for d in diff_ids):
            raise TypeError
    except (ValueError, KeyError, TypeError, RecursionError):
        raise ShoalError(f"invalid image archive {source}: {label} is not an image config "
                         "(no rootfs.diff_ids)") from None
    check_image_config(config, f"invalid image archive {source}: {label}")  # before any layer
    os_name = config.get("os") or "linux"
    if os_name != "linux":
        raise ShoalError(f"cannot load {os_name} image on linux ({source})")
    if len(diff_ids) > MAX_LAYER_DEPTH:
        # before any layer is hashed: a config may repeat one large layer thousands of times
        raise ShoalError(f"invalid image archive {source}: {label}: max depth exceeded "
                         f"({len(diff_ids)} layers, at most {MAX_LAYER_DEPTH})")
    return diff_ids


def _blob(arch: _Unpacked, desc: Any, what: str) -> tuple[Path, str]:
    if not isinstance(desc, dict) or not isinstance(desc.get("digest"), str) or ":" not in desc["digest"]:
        raise ShoalError(f"invalid image archive {arch.source}: a {what} descriptor has no digest")
    algo, _, hexpart = desc["digest"].partition(":")
    if algo != "sha256" or not hexpart.isalnum():
        raise ShoalError(f"invalid image archive {arch.source}: unsupported digest {desc['digest']}")
    return arch.path(f"blobs/{algo}/{hexpart}", what), desc["digest"]


def _check_size(arch: _Unpacked, desc: dict, what: str, actual: int) -> None:
    """After the digest matched: containerd's size check on import (the manifest is kept byte
    for byte, and a wrong size in it is what a later push or save would declare)."""
    declared = desc.get("size")
    if declared is not None and (not isinstance(declared, int) or isinstance(declared, bool) or declared != actual):
        raise ShoalError(f"invalid image archive {arch.source}: {what} {desc['digest']} is {actual} bytes, "
                         f"its descriptor says {declared!r}")


def _verified_bytes(arch: _Unpacked, desc: Any, what: str) -> bytes:
    path, digest = _blob(arch, desc, what)
    data = arch.read(path.relative_to(arch.root).as_posix(), what)
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    if got != digest:
        raise ShoalError(f"invalid image archive {arch.source}: {what} blob {digest} does not match its digest "
                         f"(got {got})")
    _check_size(arch, desc, what, len(data))
    return data


def _host_platform() -> tuple[str, str]:
    machine = os.uname().machine
    return "linux", {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def _index_manifests(arch: _Unpacked, index: Any, depth: int = 0) -> Iterator[tuple[dict, bytes, list[str]]]:
    """Image manifests an index points to, with the names its annotations give them; a nested
    index (multi-platform) contributes the manifest for this host's platform."""
    manifests = index.get("manifests") if isinstance(index, dict) else None
    if not isinstance(manifests, list):
        raise ShoalError(f"invalid image archive {arch.source}: index.json has no manifests list")
    host_os, host_arch = _host_platform()
    for desc in manifests:
        media_type = desc.get("mediaType") if isinstance(desc, dict) else None
        if media_type in INDEX_TYPES and depth < 2:
            nested = _json(_verified_bytes(arch, desc, "index"), f"{arch.source}: index {desc.get('digest')}")
            candidates = list(_index_manifests(arch, nested, depth + 1))
            chosen = [c for c in candidates if _platform_matches(c[0], host_os, host_arch)] or candidates[:1]
            for manifest_desc, data, _ in chosen:
                yield manifest_desc, data, _names(desc)
            continue
        if media_type not in MANIFEST_TYPES and media_type is not None:
            continue  # attestations, artifacts: nothing to load
        yield desc, _verified_bytes(arch, desc, "manifest"), _names(desc)


def _platform_matches(desc: dict, os_name: str, arch: str) -> bool:
    platform = desc.get("platform") or {}
    return platform.get("os") == os_name and platform.get("architecture") == arch


def _names(desc: Any) -> list[str]:
    annotations = (desc.get("annotations") if isinstance(desc, dict) else None) or {}
    if not isinstance(annotations, dict):
        return []
    full = annotations.get(ANNOTATION_IMAGE_NAME)
    if full and isinstance(full, str):
        return [full]
    ref_name = annotations.get(ANNOTATION_REF_NAME)
    # a bare "v1" is only a tag (the OCI meaning); "web:v1" or "localhost/x:y" is a whole name
    if ref_name and isinstance(ref_name, str) and any(c in ref_name for c in ":/@"):
        return [ref_name]
    return []


def _plan_oci(arch: _Unpacked) -> list[_Plan]:
    layout = arch.json("oci-layout", "oci-layout")
    if not isinstance(layout, dict) or "imageLayoutVersion" not in layout:
        raise ShoalError(f"invalid image archive {arch.source}: oci-layout has no imageLayoutVersion")
    index = arch.json("index.json", "index")
    by_manifest: dict[str, _Plan] = {}
    for _, manifest_bytes, names in _index_manifests(arch, index):
        key = hashlib.sha256(manifest_bytes).hexdigest()
        tags = [_ref_text(n, arch.source) for n in names]
        if key in by_manifest:
            by_manifest[key].tags.extend(t for t in tags if t not in by_manifest[key].tags)
            continue
        try:
            manifest = json.loads(manifest_bytes)
            config_desc = manifest["config"]
            layer_descs = manifest["layers"]
            if not isinstance(layer_descs, list):
                raise TypeError
        except (ValueError, KeyError, TypeError, RecursionError):
            raise ShoalError(f"invalid image archive {arch.source}: a manifest is not an image manifest") from None
        config_bytes = _verified_bytes(arch, config_desc, "config")
        diff_ids = _diff_ids(config_bytes, config_desc["digest"], arch.source)
        if len(diff_ids) != len(layer_descs):
            raise ShoalError(f"invalid image archive {arch.source}: config has {len(diff_ids)} diff_ids, "
                             f"manifest has {len(layer_descs)} layers")
        layers = []
        for i, desc in enumerate(layer_descs):
            path, digest = _blob(arch, desc, "layer")
            stored_size = path.stat().st_size  # as in the archive (bzip2/xz are re-stored plain)
            layers.append(_verify_layer(arch, path, digest, diff_ids[i], i, expected_digest=digest))
            _check_size(arch, desc, "layer", stored_size)
        by_manifest[key] = _Plan(config_bytes=config_bytes, layers=layers, tags=tags,
                                 manifest_bytes=manifest_bytes)
    if not by_manifest:
        raise ShoalError(f"invalid image archive {arch.source}: index.json lists no image manifests")
    return list(by_manifest.values())


def _manifest_for(plan: _Plan) -> bytes:
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": plan.image_id, "size": len(plan.config_bytes)},
        "layers": [{"mediaType": l.media_type, "digest": l.digest, "size": l.size} for l in plan.layers],
    }
    return json.dumps(manifest, separators=(",", ":")).encode()


def _store_blob_file(store: ImageStore, path: Path, digest: str) -> bool:
    """Store the file as blob `digest`; False when the store had it already."""
    if store.has_blob(digest):
        return False
    with store.ingest(expected=digest) as writer, path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            writer.write(chunk)
        writer.commit()
    return True


def _has_layer(store: ImageStore, digest: str) -> bool:
    try:
        store.get_layer(digest)
    except NotFound:
        return False
    return True


def _existing_id(store: ImageStore, tag: str) -> str | None:
    try:
        return store.resolve(tag).id
    except NotFound:
        return None


def load(store: ImageStore, src: BinaryIO, source: str = "-",
         progress: Callable[[str, int], None] | None = None) -> list[LoadedImage]:
    """Load every image of a docker-archive or OCI-layout tar (possibly compressed) into the store;
    `progress(diff_id, size)` is told about each layer as it goes in.

    Nothing reaches the store until the whole archive has been verified."""
    workdir = _scratch(store, "load")
    try:
        _unpack(src, workdir, source)
        arch = _Unpacked(workdir, source)
        if arch.exists("manifest.json"):
            plans = _plan_docker(arch)
        elif arch.exists("index.json"):
            plans = _plan_oci(arch)
        else:
            raise ShoalError(f"invalid image archive {source}: no manifest.json (docker save) "
                             "or index.json (OCI image layout) in it")
        loaded = []
        for plan in plans:
            # A layer's entries are only checked as it is unpacked, in add_manifest: an unsafe
            # one fails the image there, and what this image stored so far is taken back.
            written: list[str] = []
            # only layers new to the store are taken back: one registered before (by a build or
            # pull still running in this daemon, say) is not this load's to remove
            new_layers = [layer.digest for layer in plan.layers if not _has_layer(store, layer.digest)]
            try:
                for layer in plan.layers:
                    if progress:
                        progress(layer.diff_id, layer.size)
                    if _store_blob_file(store, layer.path, layer.digest):
                        written.append(layer.digest)
                if not store.has_blob(plan.image_id):
                    written.append(store.put_bytes(plan.config_bytes, expected=plan.image_id))
                replaced = [(t, old) for t in plan.tags
                            if (old := _existing_id(store, t)) is not None and old != plan.image_id]
                manifest_bytes = plan.manifest_bytes or _manifest_for(plan)
                store.add_manifest(manifest_bytes, plan.config_bytes, tags=plan.tags)
            except BaseException:
                store.discard(new_layers, written)
                raise
            loaded.append(LoadedImage(id=plan.image_id, tags=plan.tags, replaced=replaced))
        return loaded
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _tmp_dir(store: ImageStore) -> Path:
    """Scratch space next to the store (same filesystem). Directories are named with their
    process ID, so what a killed `shoal load` left behind is removed by the next one."""
    scratch = Path(store.root) / "tmp"
    scratch.mkdir(parents=True, exist_ok=True)
    for leftover in scratch.glob("shoal-*-*-*"):
        pid = leftover.name.split("-")[2]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(leftover, ignore_errors=True)
    return scratch


def _scratch(store: ImageStore, kind: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=f"shoal-{kind}-{os.getpid()}-", dir=_tmp_dir(store)))


# ---------------------------------------------------------------------------------------------
# save

@dataclass
class _SaveItem:
    image: Image
    tags: list[reference.Reference] = field(default_factory=list)


def _is_name_only(text: str) -> bool:
    last = text.rsplit("/", 1)[-1]
    return ":" not in last and "@" not in last


def select(store: ImageStore, names: list[str]) -> list[_SaveItem]:
    """Docker's rules: name:tag saves that tag, a bare name saves all its tags, an ID or a
    digest reference saves the image untagged."""
    items: dict[str, _SaveItem] = {}

    def add(image: Image, ref: reference.Reference | None) -> None:
        item = items.setdefault(image.id, _SaveItem(image=image))
        if ref is not None and all(str(ref) != str(t) for t in item.tags):
            item.tags.append(ref)

    for name in names:
        if name.startswith("sha256:"):
            add(store.resolve(name), None)
            continue
        ref = reference.parse(name)
        if ref.digest:
            add(store.resolve(name), None)
        elif _is_name_only(name):
            found = False
            for image in store.list():
                for tag in image.repo_tags:
                    tag_ref = reference.parse(tag)
                    if tag_ref.name() == ref.name():
                        add(image, tag_ref)
                        found = True
            if not found:
                add(store.resolve(name), None)   # an image ID prefix, or "No such image"
        else:
            add(store.resolve(name), ref)
    return list(items.values())


def _tarinfo(name: str, size: int = 0, mtime: float = 0, directory: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mtime = int(mtime)
    info.mode = 0o755 if directory else 0o644
    if directory:
        info.type = tarfile.DIRTYPE
    return info


def _plain_layer(store: ImageStore, layer: Any, scratch: Path) -> Path:
    """The layer as an uncompressed tar (what docker save writes), checked against its diff ID."""
    blob = store.blob_path(layer.digest)
    if layer.digest == layer.diff_id:
        return blob
    plain = scratch / layer.diff_id[7:]
    h = hashlib.sha256()
    try:
        with _uncompressed(blob, _compression(blob)) as f, plain.open("wb") as out:
            while chunk := f.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
    except (EOFError, OSError, zlib.error, lzma.LZMAError, layerfmt.LayerError) as exc:
        raise ShoalError(f"layer {layer.digest} in the image store is unreadable: {exc}") from None
    if "sha256:" + h.hexdigest() != layer.diff_id:
        raise ShoalError(f"layer {layer.digest} in the image store is corrupt: its content does not "
                         f"match diff ID {layer.diff_id}")
    return plain


def save(store: ImageStore, names: list[str], out: BinaryIO) -> None:
    """Write a docker-archive that is also an OCI image layout (as Docker 25+ does)."""
    items = select(store, names)
    os_name, arch = _host_platform()
    manifest_items: list[dict[str, Any]] = []
    index_descs: list[dict[str, Any]] = []
    repositories: dict[str, dict[str, str]] = {}
    written: dict[str, int] = {}   # archive path -> size
    scratch = _scratch(store, "save")
    try:
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
            tar.addfile(_tarinfo("blobs", directory=True))
            tar.addfile(_tarinfo("blobs/sha256", directory=True))

            def add_bytes(name: str, data: bytes, mtime: float = 0) -> None:
                tar.addfile(_tarinfo(name, len(data), mtime), io.BytesIO(data))

            for item in items:
                image = item.image
                layer_paths = []
                layer_descs = []
                for layer in image.layers:
                    name = f"blobs/sha256/{layer.diff_id[7:]}"
                    layer_paths.append(name)
                    if name not in written:
                        plain = _plain_layer(store, layer, scratch)
                        size = plain.stat().st_size
                        with plain.open("rb") as f:
                            tar.addfile(_tarinfo(name, size, image.created), f)
                        if plain.parent == scratch:
                            plain.unlink()
                        written[name] = size
                    layer_descs.append({"mediaType": OCI_LAYER_TAR, "digest": layer.diff_id,
                                        "size": written[name]})
                config_bytes = store.read_blob(image.id)
                config_name = f"blobs/sha256/{image.id[7:]}"
                if config_name not in written:
                    add_bytes(config_name, config_bytes, image.created)
                    written[config_name] = len(config_bytes)
                manifest = json.dumps({
                    "schemaVersion": 2,
                    "mediaType": OCI_MANIFEST,
                    "config": {"mediaType": OCI_CONFIG, "digest": image.id, "size": len(config_bytes)},
                    "layers": layer_descs,
                }, separators=(",", ":")).encode()
                manifest_digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
                manifest_name = f"blobs/sha256/{manifest_digest[7:]}"
                if manifest_name not in written:
                    add_bytes(manifest_name, manifest)
                    written[manifest_name] = len(manifest)
                platform = {"architecture": image.config.get("architecture", arch),
                            "os": image.config.get("os", os_name)}
                base_desc = {"mediaType": OCI_MANIFEST, "digest": manifest_digest, "size": len(manifest),
                             "platform": platform}
                for ref in item.tags:
                    index_descs.append({**base_desc, "annotations": {
                        ANNOTATION_IMAGE_NAME: str(ref), ANNOTATION_REF_NAME: ref.tag or "latest"}})
                    repositories.setdefault(ref.familiar_name(), {})[ref.tag or "latest"] = \
                        image.layers[-1].diff_id[7:] if image.layers else image.id[7:]
                if not item.tags:
                    index_descs.append(base_desc)
                manifest_items.append({"Config": config_name,
                                       "RepoTags": [t.familiar() for t in item.tags] or None,
                                       "Layers": layer_paths})
            add_bytes("index.json", json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX,
                                                "manifests": index_descs}, separators=(",", ":")).encode())
            add_bytes("manifest.json", (json.dumps(manifest_items, separators=(",", ":")) + "\n").encode())
            add_bytes("oci-layout", json.dumps({"imageLayoutVersion": OCI_LAYOUT_VERSION},
                                               separators=(",", ":")).encode())
            if repositories:
                add_bytes("repositories", (json.dumps(repositories, separators=(",", ":")) + "\n").encode())
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

