"""The local store of OCI content: blobs by digest, layer snapshots, images and their names.

Layout under the root (default state_root()/image):
    blobs/sha256/<hex>      content-addressed blobs (layers, configs, manifests)
    ingest/<pid>-<rand>     blobs being written; flock-held by their writer
    snapshots/<n>/          one unpacked layer each (an overlay lowerdir); short names because
                            overlay mount options are limited to one page
    snapshots/.tmp-*        a layer being unpacked (flock-held), renamed to <n> when complete
    claims/<pid>-<rand>     the digests one pull in progress uses (flock-held by the pull)
    layers.json             diff_id -> snapshot, blob digest -> diff_id
    index.json              images and the names (tags, repo digests) that point at them
    lock                    flock taken around every change of layers.json / index.json

Every write is atomic (tmp + fsync + rename), so a crash never leaves a partial blob under a
valid digest nor a half-unpacked snapshot under a valid name; `prune` collects the leftovers.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, BinaryIO, ContextManager, List, cast  # List: ImageStore.list shadows list

from shoal import paths
from shoal.errors import Conflict, InvalidArgument, NotFound, ShoalError
from shoal.image.configcheck import check_image_config, normalize_str_slices
from shoal.ids import short_id
from shoal.image import layers as layerfmt
from shoal.image import reference as refs

from shoal.image.mediatypes import (  # noqa: F401 - re-exported: the store's contract names them
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LAYER_GZIP,
    DOCKER_MANIFEST,
    DOCKER_MANIFEST_LIST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER,
    OCI_LAYER_GZIP,
    OCI_LAYER_ZSTD,
    OCI_MANIFEST,
)

_DOCKER_LAYER_TYPES = {OCI_LAYER: DOCKER_LAYER, OCI_LAYER_GZIP: DOCKER_LAYER_GZIP}
_OCI_LAYER_TYPES = {v: k for k, v in _DOCKER_LAYER_TYPES.items()}
_HEX64 = re.compile(r"^[a-f0-9]{64}$")
_ID_PREFIX = re.compile(r"^(?:sha256:)?([a-f0-9]{1,64})$")
LAYER_GZIP_LEVEL = 3
# Unregistered blobs younger than this may belong to a pull in progress: prune leaves them.
BLOB_GRACE_SECONDS = 3600.0
_ZERO_TIME = "0001-01-01T00:00:00Z"


# --- data -------------------------------------------------------------------------------------


@dataclass
class Layer:
    digest: str  # blob digest (compressed, as in the manifest)
    diff_id: str  # sha256 of the uncompressed tar (config rootfs.diff_ids)
    media_type: str
    size: int  # blob size
    unpacked_size: int


@dataclass
class Image:
    id: str  # "sha256:<hex>" of the config blob (Docker's image ID)
    manifest_digest: str  # digest of the manifest blob stored for it
    config: dict[str, Any]  # the whole OCI/Docker image config JSON
    repo_tags: list[str]  # familiar names: ["web:v1"]
    repo_digests: list[str]  # ["localhost:5000/web@sha256:..."]
    created: float  # unix time, from config["created"]
    size: int  # sum of unpacked layer sizes (what `docker images` shows)
    layers: list[Layer]  # bottom first
    snapshot_dirs: list[Path] = field(default_factory=list, repr=False)  # bottom first
    parent: str = ""  # the image this one was built on (local builds), "" if none
    last_tag_time: str = _ZERO_TIME

    def rootfs_dirs(self) -> list[Path]:
        """overlay lowerdirs, TOP layer FIRST. A layer an image holds twice (`COPY f /f` twice,
        a manifest listing one blob twice: Docker chains them as two) is given once, at its
        topmost place: overlay refuses a lowerdir given twice (ELOOP), and the upper copy
        decides every path the layer names, so the lower one changes nothing in the view."""
        return list(dict.fromkeys(reversed(self.snapshot_dirs)))

    @property
    def short_id(self) -> str:
        return short_id(self.id)


def parse_time(text: str | None) -> float:
    """RFC 3339 (with Go's nanoseconds) to unix time; 0 when absent or unreadable."""
    if not text:
        return 0.0
    m = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)?$", text)
    if not m:
        return 0.0
    base = datetime.fromisoformat(m.group(1) + (m.group(3) or "Z").replace("Z", "+00:00"))
    return base.timestamp() + (float("0." + m.group(2)) if m.group(2) else 0.0)


def format_time(ts: float) -> str:
    """Unix time as Docker writes it in configs: RFC 3339 in UTC with nanoseconds trimmed."""
    dt = datetime.fromtimestamp(ts, tz=timezone.utc)
    text = dt.strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{dt.microsecond:06d}".rstrip("0")
    return f"{text}.{frac}Z" if frac else f"{text}Z"


def chain_id(diff_ids: list[str]) -> str:
    """The layer chain ID (image-spec config.md), printed in `Deleted:` lines as Docker does."""
    current = diff_ids[0]
    for diff_id in diff_ids[1:]:
        current = "sha256:" + hashlib.sha256(f"{current} {diff_id}".encode()).hexdigest()
    return current


def normalize_id(value: str) -> str:
    return value if value.startswith("sha256:") else "sha256:" + value


# --- atomic files and locks -------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, paths.PRIVATE_FILE), "w") as f:
            f.write(json.dumps(data, separators=(",", ":")))  # dumps uses the C encoder, dump does not
            f.flush()
            os.fsync(f.fileno())
        os.rename(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise _store_error(exc, path) from None
    _fsync_dir(path.parent)


def _store_error(exc: OSError, path: Path) -> ShoalError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return ShoalError(f"no space left on device: cannot write {path}")
    return ShoalError(f"cannot write {path}: {exc.strerror or exc}")


def _try_flock(path: Path) -> bool:
    """True when nobody holds a lock on `path` (its writer is gone), i.e. it is stale."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


class _FileLock:
    """An exclusive flock on one file, re-entrant within a process (flock would deadlock on a
    second descriptor of the same file)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._mutex = threading.RLock()
        self._depth = 0
        self._fd: int | None = None

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        with self._mutex:
            if self._depth == 0:
                paths.ensure_private_dir(self.path.parent)
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                fcntl.flock(fd, fcntl.LOCK_EX)
                self._fd = fd
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._fd is not None:
                    os.close(self._fd)  # closing the descriptor releases the flock
                    self._fd = None


# --- blobs ------------------------------------------------------------------------------------


class BlobWriter:
    """Writes one blob: tmp file in ingest/ (flock-held so prune can tell it is alive), hashed
    on the way, fsynced, verified against the expected digest and renamed into place."""

    def __init__(self, store: ImageStore, expected: str | None = None) -> None:
        if expected is not None:
            refs.validate_digest(expected)
        self._store = store
        self.expected = expected
        self.size = 0
        self.digest: str | None = None
        self._sha = hashlib.sha256()
        paths.ensure_private_dir(store.ingest_dir)
        self.path = store.ingest_dir / f"{os.getpid()}-{secrets.token_hex(8)}"
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        fcntl.flock(self._fd, fcntl.LOCK_EX)

    def write(self, data: bytes) -> int:
        if self._fd is None:
            raise ShoalError("blob writer is closed")
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as exc:
            raise _store_error(exc, self.path) from None
        self._sha.update(data)
        self.size += len(data)
        return len(data)

    def commit(self) -> str:
        """fsync, verify and move into blobs/; returns the digest. Idempotent for a blob that
        is already stored."""
        if self._fd is None:
            raise ShoalError("blob writer is closed")
        digest = "sha256:" + self._sha.hexdigest()
        if self.expected is not None and digest != self.expected:
            self.abort()
            raise ShoalError(f"digest mismatch: expected {self.expected}, got {digest}")
        try:
            os.fsync(self._fd)
            target = self._store.blob_path(digest)
            paths.ensure_private_dir(target.parent)
            os.rename(self.path, target)
            _fsync_dir(target.parent)
        except OSError as exc:
            self.abort()
            raise _store_error(exc, self.path) from None
        os.close(self._fd)
        self._fd = None
        self.digest = digest
        return digest

    def abort(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.abort()  # a no-op after commit(); removes the tmp file otherwise


# --- claims -----------------------------------------------------------------------------------


class Claim:
    """The blobs and layers one pull uses, held for as long as it runs: a file under claims/
    naming their digests, flock-held (a killed pull's claim is stale at once). A failed pull
    takes back what it added (`discard`), and leaves alone what an image or another claim
    holds, as moby's layer store counts references: pulls of two images sharing a base layer
    each claim it, whichever downloaded it, and in one daemon as across processes."""

    def __init__(self, store: ImageStore, digests: Iterable[str]) -> None:
        self._store = store
        self.digests = list(dict.fromkeys(digests))
        paths.ensure_private_dir(store.claims_dir)
        self.path = store.claims_dir / f"{os.getpid()}-{secrets.token_hex(8)}"
        # Made under the store's lock, as a discard reads the claims under it: a pull that
        # finds a blob there once its claim is made keeps it (the discard saw the claim).
        with store.lock():
            layers = store._load_layers()["blobs"]
            # What this pull may add: blobs not stored yet, and the layers of those. A layer
            # whose blob was already there (unregistered) is left registered if this pull does it.
            self.new_blobs = [d for d in self.digests if not store.has_blob(d)]  # checks each digest
            self.new_layers = [d for d in self.new_blobs if d not in layers]
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX)
                os.write(self._fd, json.dumps(self.digests).encode())
            except OSError as exc:
                self.release()
                raise _store_error(exc, self.path) from None

    def discard(self) -> None:
        """Remove what this pull added that no image and no other pull's claim holds."""
        self._store.discard(self.new_layers, self.new_blobs, besides=self.path)

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *rest: object) -> None:
        try:
            if exc_type is not None:
                self.discard()
        finally:
            self.release()


# --- the store --------------------------------------------------------------------------------


# Decoded image configs kept by one ImageStore (a config is a few KiB), and their bytes in
# all: a build's step images each carry the whole config so far, and 100 LABELs of 60KB kept
# 256 configs of up to 6MB decoded (670MB RSS; 200 such lines, 2.5GB).
CONFIG_CACHE_MAX = 256
CONFIG_CACHE_BYTES = 32 << 20


class ImageStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else paths.state_root() / "image"
        self.blobs_dir = self.root / "blobs" / "sha256"
        self.ingest_dir = self.root / "ingest"
        self.snapshots_dir = self.root / "snapshots"
        self.claims_dir = self.root / "claims"
        self.index_path = self.root / "index.json"
        self.layers_path = self.root / "layers.json"
        self.containers_dir = self.root.parent / "containers"
        self._lock = _FileLock(self.root / "lock")
        self._config_cache: dict[str, tuple[dict[str, Any], int]] = {}  # each config, its raw bytes
        self._config_bytes = 0  # the raw bytes of all the configs the cache holds
        self._trash: List[Path] = []

    def lock(self) -> ContextManager[None]:
        """An exclusive file lock for multi-process safety around index changes."""
        return self._lock()

    # blobs ------------------------------------------------------------------------------------

    def ingest(self, expected: str | None = None) -> BlobWriter:
        return BlobWriter(self, expected)

    def put_bytes(self, data: bytes, expected: str | None = None) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if expected is not None and digest != expected:
            raise ShoalError(f"digest mismatch: expected {expected}, got {digest}")
        if self.has_blob(digest):
            return digest
        with self.ingest(expected) as writer:
            writer.write(data)
            return writer.commit()

    def claim(self, digests: Iterable[str]) -> Claim:
        """Hold `digests` (the blobs of a pull: its layers, config and manifest) until the
        claim is released; on an exception in its `with`, what the pull added is removed."""
        return Claim(self, digests)

    def claimed(self, besides: Path | None = None) -> set[str]:
        """The digests the pulls in progress hold (their claims but `besides`); a stale claim
        (its pull is gone) is removed. Call with the lock held."""
        held: set[str] = set()
        try:
            entries = list(os.scandir(self.claims_dir))
        except FileNotFoundError:
            return held
        for entry in entries:
            path = Path(entry.path)
            if path == besides:
                continue
            if _try_flock(path):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                continue
            try:
                digests = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # released meanwhile
            held.update(str(d) for d in digests if isinstance(d, str))
        return held

    def blob_path(self, digest: str) -> Path:
        algorithm, _, encoded = digest.partition(":")
        if algorithm != "sha256" or not _HEX64.fullmatch(encoded):
            raise InvalidArgument(f"invalid digest: {digest}")
        return self.blobs_dir / encoded

    def has_blob(self, digest: str) -> bool:
        return self.blob_path(digest).is_file()

    def read_blob(self, digest: str) -> bytes:
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise NotFound(f"blob {digest} not found") from None

    # layers -----------------------------------------------------------------------------------

    def _load_layers(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.layers_path.read_text())
        except FileNotFoundError:
            data = {}
        data.setdefault("next", 1)
        data.setdefault("layers", {})
        data.setdefault("blobs", {})
        return data

    @contextlib.contextmanager
    def _edit_layers(self) -> Iterator[dict[str, Any]]:
        with self.lock():
            data = self._load_layers()
            yield data
            paths.ensure_private_dir(self.root)
            _write_json_atomic(self.layers_path, data)

    def layer_dir(self, diff_id: str) -> Path:
        entry = self._load_layers()["layers"].get(diff_id)
        if entry is None:
            raise NotFound(f"layer {diff_id} not found")
        return self.snapshots_dir / entry["snapshot"]

    def _layer_from_entries(self, data: dict[str, Any], blob_digest: str) -> Layer | None:
        blob = data["blobs"].get(blob_digest)
        if blob is None:
            return None
        entry = data["layers"].get(blob["diff_id"])
        if entry is None:
            return None
        return Layer(blob_digest, blob["diff_id"], blob["media_type"], blob["size"], entry["unpacked_size"])

    def get_layer(self, blob_digest: str) -> Layer:
        layer = self._layer_from_entries(self._load_layers(), blob_digest)
        if layer is None:
            raise NotFound(f"layer {blob_digest} not found")
        return layer

    @contextlib.contextmanager
    def _snapshot_tmp(self) -> Iterator[Path]:
        """A fresh, flock-held temp dir under snapshots/ (removed on failure)."""
        paths.ensure_private_dir(self.snapshots_dir)  # 0700: layers hold set-uid binaries
        tmp = self.snapshots_dir / f".tmp-{os.getpid()}-{secrets.token_hex(6)}"
        tmp.mkdir(0o755)
        os.chmod(tmp, 0o755)
        fd = os.open(tmp, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield tmp
        except BaseException:
            _remove_tree(tmp)
            raise
        finally:
            os.close(fd)

    def _commit_snapshot(self, tmp: Path, blob_digest: str, media_type: str, blob_size: int,
                         diff_id: str, unpacked_size: int) -> Layer:
        """Give the unpacked `tmp` its name (unless another process was first) and record it."""
        with self._edit_layers() as data:
            entry = data["layers"].get(diff_id)
            if entry is not None and (self.snapshots_dir / entry["snapshot"]).is_dir():
                _remove_tree(tmp)
            else:
                number = int(data["next"])
                while (self.snapshots_dir / str(number)).exists():
                    number += 1
                os.rename(tmp, self.snapshots_dir / str(number))
                _fsync_dir(self.snapshots_dir)
                data["next"] = number + 1
                entry = {"snapshot": str(number), "unpacked_size": unpacked_size}
                data["layers"][diff_id] = entry
            # Until an image refers to it, the layer is leased to this process (see prune).
            entry["pid"] = os.getpid()
            entry["registered"] = time.time()
            data["blobs"][blob_digest] = {"diff_id": diff_id, "media_type": media_type, "size": blob_size}
        return Layer(blob_digest, diff_id, media_type, blob_size, unpacked_size)

    def register_layer(self, blob_digest: str, media_type: str, diff_id: str | None = None) -> Layer:
        """Unpack the stored blob once into a snapshot dir (idempotent). `diff_id`, when known
        (from the image config), is verified."""
        data = self._load_layers()
        existing = self._layer_from_entries(data, blob_digest)
        if existing is not None and (self.snapshots_dir / data["layers"][existing.diff_id]["snapshot"]).is_dir():
            if diff_id is not None and existing.diff_id != diff_id:
                raise ShoalError(f"layer {blob_digest}: diff_id mismatch: expected {diff_id}, got {existing.diff_id}")
            return existing
        path = self.blob_path(blob_digest)
        try:
            raw = open(path, "rb")
        except FileNotFoundError:
            raise NotFound(f"blob {blob_digest} not found") from None
        with raw, self._snapshot_tmp() as tmp:
            head = raw.read(8)
            raw.seek(0)
            stream = layerfmt.decompressed(raw, layerfmt.detect_compression(head))  # type: ignore[arg-type]
            result = layerfmt.unpack_layer(stream, tmp, source=f"layer {short_id(blob_digest)}")
            if diff_id is not None and result.diff_id != diff_id:
                raise ShoalError(f"layer {blob_digest}: diff_id mismatch: expected {diff_id}, got {result.diff_id}")
            return self._commit_snapshot(tmp, blob_digest, media_type, os.path.getsize(path),
                                         result.diff_id, result.unpacked_size)

    def import_layer(self, raw: BinaryIO, source: str = "-") -> Layer:
        """Store and unpack a layer tar stream in one pass (`shoal import`, `load`).

        A plain or gzip tar is stored as given; bzip2/xz/zstd are stored decompressed (they are
        not OCI layer media types Docker can pull). A corrupt or truncated tar raises and leaves
        neither blob nor snapshot behind.
        """
        import io

        buffered = raw if hasattr(raw, "peek") else io.BufferedReader(raw, 1 << 20)  # type: ignore[arg-type,type-var]
        head = buffered.peek(8)[:8]  # type: ignore[attr-defined]
        compression = layerfmt.detect_compression(head)
        with self.ingest() as writer, self._snapshot_tmp() as tmp:
            if compression == "none":
                # The blob is the tar itself: the writer's digest is the diff_id, hash once.
                media_type = OCI_LAYER
                tee = layerfmt.HashingReader(buffered, writer.write, hash=False)
                result = layerfmt.unpack_layer(cast(BinaryIO, tee), tmp, source=source, hash=False)
            elif compression == "gzip":
                media_type = OCI_LAYER_GZIP
                tee = layerfmt.HashingReader(buffered, writer.write, hash=False)
                stream = layerfmt.decompressed(tee, compression)  # type: ignore[arg-type]
                result = layerfmt.unpack_layer(stream, tmp, source=source)
                tee.drain()  # trailing bytes after the gzip member belong to the blob too
            else:
                media_type = OCI_LAYER
                plain = layerfmt.decompressed(buffered, compression)  # type: ignore[arg-type]
                result = layerfmt.unpack_layer(cast(BinaryIO, layerfmt.HashingReader(plain, writer.write, hash=False)), tmp,
                                               source=source, hash=False)
            digest = writer.commit()
            diff_id = result.diff_id or digest
            return self._commit_snapshot(tmp, digest, media_type, writer.size, diff_id, result.unpacked_size)

    def layer_from_dir(self, upper: Path) -> Layer:
        """Tar+gzip an overlay upperdir into a layer blob and register `upper` itself as its
        snapshot (moved, not unpacked again).

        `upper` is renamed into the store when it is on the same filesystem and the layer is
        new; otherwise it is left where it was. Either way the caller removes whatever is left
        at `upper` afterwards.
        """
        import gzip

        if not upper.is_dir() or upper.is_symlink():
            raise ShoalError(f"layer_from_dir: {upper} is not a directory")
        layerfmt.check_depth(upper)  # before the walks below, which recurse

        class _DiffTee:
            def __init__(self, sink: gzip.GzipFile) -> None:
                self.sha = hashlib.sha256()
                self.sink = sink

            def write(self, data: bytes) -> int:
                self.sha.update(data)
                return self.sink.write(data)

        with self.ingest() as writer:
            # Level 3 is zlib's best "fast" level: measured on /usr/lib/python3.11 it is 2.6x
            # faster than the default 6 for 7% more bytes; a build waits for this on every RUN.
            with gzip.GzipFile(fileobj=writer, mode="wb", compresslevel=LAYER_GZIP_LEVEL, mtime=0) as gz:  # type: ignore[call-overload]
                tee = _DiffTee(gz)
                layerfmt.write_layer_tar(upper, tee)  # type: ignore[arg-type]
            diff_id = "sha256:" + tee.sha.hexdigest()
            digest = writer.commit()
        unpacked = layerfmt.dir_size(upper)
        data = self._load_layers()
        known = data["layers"].get(diff_id)
        if known is not None and (self.snapshots_dir / known["snapshot"]).is_dir():
            return self._commit_snapshot_existing(digest, diff_id, writer.size, unpacked)
        paths.ensure_private_dir(self.snapshots_dir)  # 0700: layers hold set-uid binaries
        tmp = self.snapshots_dir / f".tmp-{os.getpid()}-{secrets.token_hex(6)}"
        try:
            os.rename(upper, tmp)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise _store_error(exc, upper) from None
            return self.register_layer(digest, OCI_LAYER_GZIP, diff_id)  # another filesystem: unpack
        try:
            layerfmt.strip_overlay_metadata(tmp)
            return self._commit_snapshot(tmp, digest, OCI_LAYER_GZIP, writer.size, diff_id, unpacked)
        except BaseException:
            _remove_tree(tmp)
            raise

    def _commit_snapshot_existing(self, digest: str, diff_id: str, size: int, unpacked: int) -> Layer:
        with self._edit_layers() as data:
            entry = data["layers"][diff_id]
            entry["pid"] = os.getpid()
            entry["registered"] = time.time()
            data["blobs"][digest] = {"diff_id": diff_id, "media_type": OCI_LAYER_GZIP, "size": size}
        return Layer(digest, diff_id, OCI_LAYER_GZIP, size, entry["unpacked_size"])

    # index ------------------------------------------------------------------------------------

    def _load_index(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.index_path.read_text())
        except FileNotFoundError:
            data = {}
        data.setdefault("images", {})
        data.setdefault("tags", {})
        data.setdefault("digests", {})
        return data

    @contextlib.contextmanager
    def _edit_index(self) -> Iterator[dict[str, Any]]:
        with self.lock():
            data = self._load_index()
            yield data
            paths.ensure_private_dir(self.root)
            _write_json_atomic(self.index_path, data)

    def _config(self, image_id: str) -> dict[str, Any]:
        cached = self._config_cache.pop(image_id, None)
        if cached is None:
            raw = self.read_blob(image_id)
            cached = (normalize_str_slices(json.loads(raw)), len(raw))
            self._config_bytes += len(raw)
            # Bounded (least recently used goes): shoald's store lives for days and never hears
            # of an `rmi` made by the CLI, so one entry per image ever resolved would pile up.
            while self._config_cache and (len(self._config_cache) >= CONFIG_CACHE_MAX or
                                          self._config_bytes > CONFIG_CACHE_BYTES):
                self._forget_config(next(iter(self._config_cache)))
        self._config_cache[image_id] = cached
        return cached[0]

    def _forget_config(self, image_id: str) -> None:
        forgotten = self._config_cache.pop(image_id, None)
        if forgotten is not None:
            self._config_bytes -= forgotten[1]

    def _build_image(self, image_id: str, record: dict[str, Any], index: dict[str, Any],
                     layers_data: dict[str, Any], names: dict[str, tuple[List[str], List[str]]]) -> Image:
        config = self._config(image_id)
        layer_list: List[Layer] = []
        dirs: List[Path] = []
        for blob_digest in record["layers"]:
            layer = self._layer_from_entries(layers_data, blob_digest)
            if layer is None:
                raise ShoalError(f"image {short_id(image_id)} is damaged: layer {blob_digest} is missing")
            layer_list.append(layer)
            dirs.append(self.snapshots_dir / layers_data["layers"][layer.diff_id]["snapshot"])
        tags, digests = names.get(image_id, ([], []))
        return Image(
            id=image_id,
            manifest_digest=record["manifest"],
            config=config,
            repo_tags=sorted(tags),
            repo_digests=sorted(digests),
            created=parse_time(config.get("created")),
            size=sum(layer.unpacked_size for layer in layer_list),
            layers=layer_list,
            snapshot_dirs=dirs,
            parent=record.get("parent", ""),
            last_tag_time=record.get("last_tag_time", _ZERO_TIME),
        )

    @staticmethod
    def _names(index: dict[str, Any], only: str | None = None) -> dict[str, tuple[List[str], List[str]]]:
        """image ID -> (familiar tags, familiar repo digests); `only` limits it to one image."""
        names: dict[str, tuple[List[str], List[str]]] = {}
        for full, image_id in index["tags"].items():
            if only is None or image_id == only:
                names.setdefault(image_id, ([], []))[0].append(refs.parse_normalized(full).familiar())
        for full, image_id in index["digests"].items():
            if only is None or image_id == only:
                names.setdefault(image_id, ([], []))[1].append(refs.parse_normalized(full).familiar())
        return names

    def get(self, image_id: str) -> Image:
        image_id = normalize_id(image_id)
        index = self._load_index()
        record = index["images"].get(image_id)
        if record is None:
            raise NotFound(f"No such image: {image_id}")
        return self._build_image(image_id, record, index, self._load_layers(), self._names(index, image_id))

    def list(self) -> List[Image]:
        """Every image (not those removed with -f and kept only for their containers), newest
        first as Docker lists them."""
        index = self._load_index()
        layers_data = self._load_layers()
        names = self._names(index)
        images = []
        for image_id, record in index["images"].items():
            if record.get("removed"):
                continue
            try:
                images.append(self._build_image(image_id, record, index, layers_data, names))
            except ShoalError:
                # A damaged image (a blob or layer lost outside shoal) is still listed, so that
                # it can be seen and removed; using it raises.
                tags, digests = names.get(image_id, ([], []))
                images.append(Image(image_id, record.get("manifest", ""), {}, sorted(tags), sorted(digests),
                                    0.0, 0, [], parent=record.get("parent", "")))
        images.sort(key=lambda im: (-im.created, im.id))
        return images

    def _lookup(self, index: dict[str, Any], text: str) -> str | None:
        """The image ID `text` names: a tag, name@digest, or a full or unique short ID."""
        m = _ID_PREFIX.fullmatch(text)
        if m and len(m.group(1)) == 64:
            image_id = "sha256:" + m.group(1)
            return image_id if image_id in index["images"] else None
        ref: refs.Reference | None = None
        if not text.startswith("sha256:"):
            try:
                ref = refs.parse(text)
            except InvalidArgument:
                if not m:
                    raise
        if ref is not None:
            if ref.digest:
                found = index["digests"].get(str(_without_tag(ref)))
                if found:
                    return found
                for image_id, record in index["images"].items():
                    if record.get("manifest") == ref.digest and not record.get("removed"):
                        return image_id
            else:
                found = index["tags"].get(str(ref))
                if found:
                    return found
        if m:
            prefix = "sha256:" + m.group(1)
            matches = [i for i, r in index["images"].items() if i.startswith(prefix) and not r.get("removed")]
            if len(matches) == 1:
                return matches[0]
        return None

    def resolve(self, ref_or_id: str) -> Image:
        """name[:tag], name@digest, full or unique short image ID; NotFound otherwise."""
        index = self._load_index()
        image_id = self._lookup(index, ref_or_id)
        if image_id is None:
            raise NotFound(f"No such image: {ref_or_id}")
        return self._build_image(image_id, index["images"][image_id], index, self._load_layers(),
                                 self._names(index, image_id))

    # creating images --------------------------------------------------------------------------

    def _index_image(self, image_id: str, manifest_digest: str, layer_list: List[Layer],
                     tags: Iterable[str], repo_digest: str | None, parent: str = "") -> None:
        tag_refs = [self._tag_ref(t) for t in tags]
        digest_ref = self._digest_ref(repo_digest) if repo_digest else None
        now = format_time(time.time())
        with self._edit_index() as index:
            record = index["images"].get(image_id)
            if record is None or record.get("removed"):
                record = {"manifest": manifest_digest, "layers": [layer.digest for layer in layer_list],
                          "added": time.time()}
                if parent:
                    record["parent"] = parent
                index["images"][image_id] = record
            for ref in tag_refs:
                index["tags"][str(ref)] = image_id
                record["last_tag_time"] = now
            if digest_ref is not None:
                index["digests"][str(digest_ref)] = image_id
        self._release_leases(layer_list)

    def _release_leases(self, layer_list: List[Layer]) -> None:
        """Layers an image refers to no longer need the registering process's lease."""
        current = self._load_layers()["layers"]
        if not any("pid" in current.get(layer.diff_id, {}) for layer in layer_list):
            return  # nothing to release: spare a locked rewrite of layers.json
        with self._edit_layers() as data:
            for layer in layer_list:
                entry = data["layers"].get(layer.diff_id)
                if entry is not None:
                    entry.pop("pid", None)

    @staticmethod
    def _tag_ref(text: str) -> refs.Reference:
        ref = refs.parse(text)
        if ref.digest:
            raise InvalidArgument(f"refusing to create a tag with a digest reference: {text}")
        return ref

    @staticmethod
    def _digest_ref(text: str) -> refs.Reference:
        ref = refs.parse_normalized(text)
        if not ref.digest:
            raise InvalidArgument(f"not a digest reference: {text}")
        return _without_tag(ref)

    def create_image(self, config: dict[str, Any], layers: List[Layer], tags: Iterable[str] = (),
                     manifest_media_type: str = OCI_MANIFEST, parent: str = "") -> Image:
        """Write the config and manifest blobs, index the image and tag it. `config` gets its
        rootfs.diff_ids from `layers` (bottom first)."""
        tags = list(tags)
        for t in tags:
            self._tag_ref(t)  # validate every name before anything is written
        config = dict(config)
        config["rootfs"] = {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]}
        config_bytes = json.dumps(config, separators=(",", ":")).encode()
        config_digest = self.put_bytes(config_bytes)
        docker = manifest_media_type == DOCKER_MANIFEST
        manifest = {
            "schemaVersion": 2,
            "mediaType": manifest_media_type,
            "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                       "digest": config_digest, "size": len(config_bytes)},
            "layers": [{"mediaType": _DOCKER_LAYER_TYPES.get(layer.media_type, layer.media_type) if docker
                        else _OCI_LAYER_TYPES.get(layer.media_type, layer.media_type),
                        "digest": layer.digest, "size": layer.size} for layer in layers],
        }
        manifest_digest = self.put_bytes(json.dumps(manifest, separators=(",", ":")).encode())
        self._index_image(config_digest, manifest_digest, layers, tags, None, parent)
        return self.get(config_digest)

    def add_manifest(self, manifest_bytes: bytes, config_bytes: bytes, tags: Iterable[str] = (),
                     repo_digest: str | None = None) -> Image:
        """Index an image whose layer blobs are already stored (pull, load): unpacks any layer
        not yet unpacked and checks the layers against the config's diff_ids."""
        tags = list(tags)
        for t in tags:
            self._tag_ref(t)
        try:
            manifest = json.loads(manifest_bytes)
            config = json.loads(config_bytes)
        except ValueError as exc:
            raise ShoalError(f"invalid image manifest or config: {exc}") from None
        if not isinstance(manifest, dict) or not isinstance(manifest.get("layers"), list):
            raise ShoalError("invalid image manifest: no layers")
        check_image_config(config, "invalid image config")
        diff_ids = (config.get("rootfs") or {}).get("diff_ids") or []
        if len(diff_ids) != len(manifest["layers"]):
            raise ShoalError(f"invalid image: {len(manifest['layers'])} layers in the manifest but "
                             f"{len(diff_ids)} diff_ids in the config")
        config_digest = self.put_bytes(config_bytes)
        declared = (manifest.get("config") or {}).get("digest")
        if declared and declared != config_digest:
            raise ShoalError(f"config digest mismatch: manifest says {declared}, got {config_digest}")
        layer_list = [self.register_layer(d["digest"], d.get("mediaType", OCI_LAYER_GZIP), diff_id)
                      for d, diff_id in zip(manifest["layers"], diff_ids)]
        manifest_digest = self.put_bytes(manifest_bytes)
        if repo_digest is not None and "@" not in repo_digest:
            repo_digest = f"{repo_digest}@{manifest_digest}"
        self._index_image(config_digest, manifest_digest, layer_list, tags, repo_digest)
        return self.get(config_digest)

    # names ------------------------------------------------------------------------------------

    def tag(self, ref_or_id: str, new_ref: str) -> None:
        target = self._tag_ref(new_ref)
        with self._edit_index() as index:
            image_id = self._lookup(index, ref_or_id)
            if image_id is None or index["images"][image_id].get("removed"):
                raise NotFound(f"No such image: {ref_or_id}")
            index["tags"][str(target)] = image_id
            index["images"][image_id]["last_tag_time"] = format_time(time.time())

    def untag(self, ref: str) -> None:
        parsed = refs.parse(ref)
        with self._edit_index() as index:
            key = str(_without_tag(parsed)) if parsed.digest else str(parsed)
            table = index["digests"] if parsed.digest else index["tags"]
            if key not in table:
                raise NotFound(f"No such image: {ref}")
            del table[key]

    # containers -------------------------------------------------------------------------------

    def container_users(self) -> dict[str, List[tuple[str, bool]]]:
        """image ID -> (container id, running) of every container record (read defensively:
        state_root()/containers/<id>/*.json with an "image_id" field, written by the runtime)."""
        users: dict[str, List[tuple[str, bool]]] = {}
        try:
            entries = sorted(os.scandir(self.containers_dir), key=lambda e: e.name)
        except (FileNotFoundError, NotADirectoryError):
            return users
        for entry in entries:
            if not entry.is_dir():
                continue
            for record in _container_records(Path(entry.path)):
                used = record.get("image_id") or record.get("ImageID")
                if isinstance(used, str) and used:
                    users.setdefault(normalize_id(used), []).append(
                        (str(record.get("id") or entry.name), _is_running(record)))
                    break
        return users

    def containers_using(self, image_id: str) -> List[tuple[str, bool]]:
        """(container id, running) for each container that uses `image_id`."""
        return self.container_users().get(normalize_id(image_id), [])

    # removal ----------------------------------------------------------------------------------

    def remove(self, ref_or_id: str, force: bool = False) -> List[str]:
        """`docker rmi` for one argument: returns its `Untagged: x` / `Deleted: sha256:...`
        lines. Conflicts are worded as Docker's (moby daemon/images/image_delete.go)."""
        try:
            return self._remove(ref_or_id, force)
        finally:
            self._empty_trash()

    def discard(self, layer_blobs: Iterable[str], written: Iterable[str] = (),
                besides: Path | None = None) -> None:
        """Undo what a failed load or pull stored for an image that never came to be: the
        layers of `layer_blobs` this process registered that no image uses (blob and snapshot),
        and the blobs of `written` (those it wrote itself) that nothing refers to. Neither
        touches what a pull in progress claims (but the claim `besides`: the failed pull's
        own). Without this the layers stay leased to this process: a daemon's forever, a CLI's
        until a prune."""
        try:
            with self.lock():
                held = self.claimed(besides)
                written = [d for d in written if d not in held]
                index = self._load_index()
                self._collect_layers(index, [d for d in layer_blobs if d not in held])
                referenced = set(self._load_layers()["blobs"]) | set(index["images"])
                referenced |= {r.get("manifest") for r in index["images"].values()}
                for digest in written:
                    if digest not in referenced:
                        _unlink_size(self.blob_path(digest))
        finally:
            self._empty_trash()

    def _empty_trash(self) -> None:
        while self._trash:
            _remove_tree(self._trash.pop())

    def _remove(self, ref_or_id: str, force: bool) -> List[str]:
        with self.lock():
            index = self._load_index()
            image_id = self._lookup(index, ref_or_id)
            # An image removed with -f is only kept for its containers: gone for the user.
            if image_id is None or index["images"][image_id].get("removed"):
                raise NotFound(f"No such image: {ref_or_id}")
            record = index["images"][image_id]
            refs_of = self._refs_of(index, image_id)
            records: List[str] = []
            by_id = _is_id_prefix(index, image_id, ref_or_id)
            users = self.containers_using(image_id)
            if not by_id:
                if not force and _is_single_reference(refs_of) and users:
                    raise Conflict(f'conflict: unable to remove repository reference "{ref_or_id}" (must force) - '
                                   f"container {short_id(users[0][0])} is using its referenced image {short_id(image_id)}")
                parsed = refs.parse(ref_or_id)
                removed_ref = self._remove_ref(index, parsed)
                records.append(f"Untagged: {removed_ref.familiar()}")
                refs_of = self._refs_of(index, image_id)
                if not parsed.digest and not any(not r.digest and r.name() == parsed.name() for r in refs_of):
                    for r in [r for r in refs_of if r.digest and r.name() == parsed.name()]:
                        self._remove_ref(index, r)
                        records.append(f"Untagged: {r.familiar()}")
                    refs_of = self._refs_of(index, image_id)
                if refs_of:
                    _write_json_atomic(self.index_path, index)
                    return records
            else:
                running = [c for c, r in users if r]
                if running:
                    raise Conflict(f"conflict: unable to delete {short_id(image_id)} (cannot be forced) - "
                                   f"image is being used by running container {short_id(running[0])}")
                if not force:
                    if len(refs_of) > 1 and not _is_single_reference(refs_of):
                        raise Conflict(f"conflict: unable to delete {short_id(image_id)} (must be forced) - "
                                       "image is referenced in multiple repositories")
                    if users:
                        raise Conflict(f"conflict: unable to delete {short_id(image_id)} (must be forced) - "
                                       f"image is being used by stopped container {short_id(users[0][0])}")
            children = [i for i, r in index["images"].items() if r.get("parent") == image_id and not r.get("removed")]
            if children:
                if records:
                    _write_json_atomic(self.index_path, index)
                    return records
                raise Conflict(f"conflict: unable to delete {short_id(image_id)} (cannot be forced) - "
                               "image has dependent child images")
            if not by_id and any(running for _, running in users):
                # moby: the name is gone, the image a running container uses stays (dangling).
                _write_json_atomic(self.index_path, index)
                return records
            for r in self._refs_of(index, image_id):
                self._remove_ref(index, r)
                records.append(f"Untagged: {r.familiar()}")
            records.append(f"Deleted: {image_id}")
            if users:
                # The containers still need the layers: keep the record, hidden, until they go.
                record["removed"] = True
                _write_json_atomic(self.index_path, index)
                return records
            del index["images"][image_id]
            _write_json_atomic(self.index_path, index)
            freed, _ = self._collect_layers(index, record["layers"])
            records.extend(f"Deleted: {c}" for c in freed)
            self._remove_image_blobs(index, image_id, record)
            return records

    @staticmethod
    def _refs_of(index: dict[str, Any], image_id: str) -> List[refs.Reference]:
        found = [refs.parse_normalized(t) for t, i in index["tags"].items() if i == image_id]
        found += [refs.parse_normalized(d) for d, i in index["digests"].items() if i == image_id]
        return found

    @staticmethod
    def _remove_ref(index: dict[str, Any], ref: refs.Reference) -> refs.Reference:
        if ref.digest:
            key = str(_without_tag(ref))
            if key not in index["digests"]:
                raise NotFound(f"No such image: {ref.familiar()}")
            del index["digests"][key]
            return _without_tag(ref)
        key = str(ref)
        if key not in index["tags"]:
            raise NotFound(f"No such image: {ref.familiar()}")
        del index["tags"][key]
        return ref

    def _remove_image_blobs(self, index: dict[str, Any], image_id: str, record: dict[str, Any]) -> int:
        """Delete the config and manifest blobs of a removed image unless still in use."""
        in_use = {r.get("manifest") for r in index["images"].values()} | set(index["images"])
        freed = 0
        for digest in (image_id, record.get("manifest")):
            if digest and digest not in in_use:
                freed += _unlink_size(self.blob_path(digest))
        self._forget_config(image_id)
        return freed

    def _collect_layers(self, index: dict[str, Any], candidates: Iterable[str] | None) -> tuple[List[str], int]:
        """Delete layers (blob + snapshot) no image refers to. `candidates` limits it to the
        blobs of one removed image (rmi); None considers every layer (prune), skipping those
        still leased by a live process. Returns the chain IDs freed (top first) and bytes."""
        used_blobs = {b for r in index["images"].values() for b in r["layers"]}
        freed_chain: List[str] = []
        doomed_dirs: List[Path] = []
        doomed_blobs: List[Path] = []
        reclaimed = 0
        with self._edit_layers() as data:
            used_diffs = {data["blobs"][b]["diff_id"] for b in used_blobs if b in data["blobs"]}
            if candidates is not None:
                order = list(candidates)
                diff_chain = [data["blobs"][b]["diff_id"] for b in order if b in data["blobs"]]
                chains = {d: chain_id(diff_chain[: i + 1]) for i, d in enumerate(diff_chain)}
                victims = [data["blobs"][b]["diff_id"] for b in reversed(order) if b in data["blobs"]]
            else:
                chains = {}
                victims = list(data["layers"])
            for diff_id in victims:
                entry = data["layers"].get(diff_id)
                if entry is None or diff_id in used_diffs:
                    continue
                lease = entry.get("pid")
                if lease and (candidates is None or lease != os.getpid()) and _pid_alive(int(lease)):
                    continue  # registered by a live process (a build or pull) for an image to come
                # Forget the layer first (layers.json is written when this block ends), then
                # delete its files: a crash in between leaves only unreferenced files for prune.
                del data["layers"][diff_id]
                doomed_dirs.append(self.snapshots_dir / entry["snapshot"])
                reclaimed += int(entry.get("unpacked_size", 0))
                for blob_digest in [b for b, v in data["blobs"].items() if v["diff_id"] == diff_id]:
                    doomed_blobs.append(self.blob_path(blob_digest))
                    del data["blobs"][blob_digest]
                freed_chain.append(chains.get(diff_id, diff_id))
        for path in doomed_blobs:
            reclaimed += _unlink_size(path)
        for path in doomed_dirs:
            trash = self.snapshots_dir / f".trash-{secrets.token_hex(6)}"
            with contextlib.suppress(FileNotFoundError):
                os.rename(path, trash)
                self._trash.append(trash)  # deleted once the lock is released (can take a while)
        return freed_chain, reclaimed

    # prune ------------------------------------------------------------------------------------

    def prune_records(self, all: bool = False, until: float | None = None,
                      labels: Iterable[str] = ()) -> tuple[List[str], int]:
        """`docker image prune [-a] [--filter until=... --filter label=...]`: returns its
        `untagged: x` / `deleted: sha256:...` lines and the bytes reclaimed, after collecting
        unreferenced layers, blobs and stale temp files. `until` keeps images created at or
        after that unix time; `labels` are `key`, `key=value`, `key!=value` conditions."""
        try:
            return self._prune_records(all, until, list(labels))
        finally:
            self._empty_trash()

    def _prune_records(self, all: bool, until: float | None, labels: List[str]) -> tuple[List[str], int]:
        records: List[str] = []
        with self.lock():
            index = self._load_index()
            parents = {r.get("parent") for r in index["images"].values() if not r.get("removed")}
            all_users = self.container_users()
            victims: List[str] = []
            for image_id, record in index["images"].items():
                users = all_users.get(image_id, [])
                if record.get("removed"):
                    if not users:
                        victims.append(image_id)
                    continue
                if users or image_id in parents:
                    continue
                if until is not None or labels:
                    try:
                        config = self._config(image_id)
                    except ShoalError:
                        config = {}
                    if until is not None and parse_time(config.get("created")) >= until:
                        continue
                    if not _labels_match((config.get("config") or {}).get("Labels") or {}, labels):
                        continue
                if all or not self._refs_of(index, image_id):
                    victims.append(image_id)
            removed_records: dict[str, dict[str, Any]] = {}
            for image_id in victims:
                record = index["images"][image_id]
                for r in self._refs_of(index, image_id):
                    self._remove_ref(index, r)
                    records.append(f"untagged: {r.familiar()}")
                if not record.get("removed"):
                    records.append(f"deleted: {image_id}")
                removed_records[image_id] = index["images"].pop(image_id)
            if victims:
                _write_json_atomic(self.index_path, index)
            reclaimed = 0
            for image_id, record in removed_records.items():
                freed, size = self._collect_layers(index, record["layers"])
                reclaimed += size + self._remove_image_blobs(index, image_id, record)
            _, size = self._collect_layers(index, None)
            reclaimed += size + self._collect_garbage(index)
        return records, reclaimed

    def prune(self, all: bool = False) -> tuple[List[str], int]:
        """Deleted image ids and reclaimed bytes (see prune_records for Docker's lines)."""
        records, reclaimed = self.prune_records(all)
        return [r.split(" ", 1)[1] for r in records if r.startswith("deleted: ")], reclaimed

    def prune_build_cache(self, cache_ids: Iterable[str], all: bool = False,
                          until: float | None = None) -> tuple[List[str], int]:
        """`builder prune [-a]`: the build's step images (`cache_ids`, from the layer cache) that
        no tag names and no container uses; without `all` only those no tagged or used image is
        built on (dangling), with `all` every one, their children then built on their parent.
        Returns the removed image IDs and the bytes reclaimed (layers no image keeps)."""
        try:
            with self.lock():
                index = self._load_index()
                images = index["images"]
                tagged = set(index["tags"].values()) | set(index["digests"].values())
                used = set(self.container_users())
                keep: set[str] = set()
                if not all:  # ancestors of what is tagged or used are not dangling
                    for start in tagged | used:
                        current = start
                        while current in images and current not in keep:
                            keep.add(current)
                            current = images[current].get("parent", "")
                victims = []
                for image_id in dict.fromkeys(normalize_id(i) for i in cache_ids):
                    record = images.get(image_id)
                    if record is None or image_id in tagged or image_id in used or image_id in keep:
                        continue
                    if until is not None:
                        try:
                            created = parse_time(self._config(image_id).get("created"))
                        except ShoalError:
                            created = 0.0
                        if created >= until:
                            continue
                    victims.append(image_id)
                if not victims:
                    return [], 0
                removed_records = {i: images.pop(i) for i in victims}
                for record in images.values():  # a child now built on its nearest kept ancestor
                    parent = record.get("parent", "")
                    while parent in removed_records:
                        parent = removed_records[parent].get("parent", "")
                    if record.get("parent", "") != parent:
                        record["parent"] = parent
                _write_json_atomic(self.index_path, index)
                reclaimed = 0
                for image_id, record in removed_records.items():
                    _, size = self._collect_layers(index, record["layers"])
                    reclaimed += size + self._remove_image_blobs(index, image_id, record)
            return victims, reclaimed
        finally:
            self._empty_trash()

    def _collect_garbage(self, index: dict[str, Any]) -> int:
        """Stale ingest files and temp snapshots (their writer died: no flock), trash, and
        blobs nothing refers to (older than the grace period a pull in progress needs)."""
        reclaimed = 0
        if self.ingest_dir.is_dir():
            for entry in os.scandir(self.ingest_dir):
                path = Path(entry.path)
                if _try_flock(path):
                    reclaimed += _unlink_size(path)
        known = {e["snapshot"] for e in self._load_layers()["layers"].values()}
        if self.snapshots_dir.is_dir():
            for entry in os.scandir(self.snapshots_dir):
                path = Path(entry.path)
                if path in self._trash:
                    continue  # this call's own deletions, already counted
                # Under the lock, a numbered snapshot missing from layers.json is a crash's leftover
                # (names are given and recorded under the same lock).
                orphan = entry.name.isdigit() and entry.name not in known
                if orphan or entry.name.startswith(".trash-") or (entry.name.startswith(".tmp-") and _try_flock(path)):
                    reclaimed += layerfmt.dir_size(path) if path.is_dir() else 0
                    _remove_tree(path)
        for leftover in self.root.glob(".*.json.tmp-*"):
            with contextlib.suppress(OSError):
                leftover.unlink()
        layers_data = self._load_layers()
        referenced = set(layers_data["blobs"]) | set(index["images"]) | self.claimed()
        referenced |= {r.get("manifest") for r in index["images"].values()}
        now = time.time()
        if self.blobs_dir.is_dir():
            for entry in os.scandir(self.blobs_dir):
                digest = "sha256:" + entry.name
                if digest in referenced:
                    continue
                try:
                    age = now - entry.stat().st_mtime
                except FileNotFoundError:
                    continue
                if age > BLOB_GRACE_SECONDS:
                    reclaimed += _unlink_size(Path(entry.path))
        return reclaimed


def _without_tag(ref: refs.Reference) -> refs.Reference:
    """`name@digest` without a tag (Docker keys repo digests that way)."""
    return refs.Reference(ref.domain, ref.path, None, ref.digest)


def _is_id_prefix(index: dict[str, Any], image_id: str, text: str) -> bool:
    """Whether `text` named the image by ID (moby tries a name first, so a short hex string
    that is also a tag is a name)."""
    m = _ID_PREFIX.fullmatch(text)
    if not m or not image_id.startswith("sha256:" + m.group(1)):
        return False
    if text.startswith("sha256:") or len(m.group(1)) == 64:
        return True
    try:
        return str(refs.parse(text)) not in index["tags"]
    except InvalidArgument:
        return True


def _is_single_reference(repo_refs: List[refs.Reference]) -> bool:
    """moby's isSingleReference: one tag (plus digests of that same repository)."""
    if len(repo_refs) <= 1:
        return len(repo_refs) == 1
    single: refs.Reference | None = None
    canonical: set[str] = set()
    for r in repo_refs:
        if r.digest:
            canonical.add(r.name())
        elif single is None:
            single = r
        else:
            return False
    if single is None:
        single = repo_refs[0]
    return len(canonical) == 1 and single.name() in canonical


def _labels_match(labels: dict[str, str], conditions: list[str]) -> bool:
    """Docker's label filters: `key`, `key=value`, `key!=value`, `!key` (label!=key: the key
    absent) (all must hold)."""
    for cond in conditions:
        if cond.startswith("!"):
            if cond[1:] in labels:
                return False
        elif "!=" in cond:
            key, value = cond.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in cond:
            key, value = cond.split("=", 1)
            if labels.get(key) != value:
                return False
        elif cond not in labels:
            return False
    return True


def _container_records(directory: Path) -> Iterator[dict[str, Any]]:
    for path in sorted(directory.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(data, dict) and ("image_id" in data or "ImageID" in data):
            yield data


def _is_running(record: dict[str, Any]) -> bool:
    """Read defensively: the runtime owns this record's format."""
    state = record.get("state", record.get("State", record.get("status", "")))
    pid = record.get("pid")
    if isinstance(state, dict):
        status = str(state.get("Status", state.get("status", ""))).lower()
        running = bool(state.get("Running")) or status in ("running", "paused", "restarting")
        pid = state.get("Pid", state.get("pid", pid))
    else:
        running = str(state).lower() in ("running", "paused", "restarting")
    if running and isinstance(pid, int) and pid > 0:
        return _pid_alive(pid)
    return running


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _unlink_size(path: Path) -> int:
    try:
        size = path.stat().st_size
        path.unlink()
        return size
    except FileNotFoundError:
        return 0


def _remove_tree(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
