"""`pull` and `push` against a registry (HTTP API v2 / OCI distribution), as `docker pull/push`.

Pull: resolve the reference to a manifest (choosing the host's platform from an index or
manifest list), download the missing layer blobs in parallel into the store (verified against
their digests while streaming, so nothing partial lands under a valid digest), unpack them bottom
first as they arrive, fetch the config, and only then index and tag the image with the manifest
exactly as the registry served it.

Push: upload the missing blobs in parallel (HEAD first; a cross-repository mount when the store
knows the blob is in another repository of the same registry), then the config, then PUT the
stored manifest byte for byte, so the digest is the one the image already has.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from shoal.errors import InvalidArgument, NotFound, ShoalError
from shoal.image import reference as refs
from shoal.image.archive import MAX_JSON_SIZE, MAX_LAYER_DEPTH
from shoal.image.auth import load_credentials
from shoal.image.registry_client import (
    DOCKER_CONFIG,
    DOCKER_MANIFEST,
    DOCKER_SCHEMA1,
    DOCKER_SCHEMA1_SIGNED,
    IMAGE_MANIFEST_TYPES,
    INDEX_TYPES,
    OCI_MANIFEST,
    READ_CHUNK,
    FetchedManifest,
    RegistryClient,
    RegistryError,
    RegistryUnreachable,
)
from shoal.image.registry_progress import ProgressDisplay
from shoal.image.store import Image, ImageStore

IMAGE_CONFIG_TYPES = (DOCKER_CONFIG, "application/vnd.oci.image.config.v1+json")
# Docker's defaults: max-concurrent-downloads 3, max-concurrent-uploads 5.
MAX_CONCURRENT_DOWNLOADS = 3
MAX_CONCURRENT_UPLOADS = 5
DOWNLOAD_ATTEMPTS = 3
UPLOAD_ATTEMPTS = 3
SOURCES_FILE = "registry-sources.json"
SOURCES_PRUNE_AT = 512

# uname -m -> (GOARCH, variant), as containerd's platforms package normalises them.
_ARCHES = {
    "x86_64": ("amd64", None), "amd64": ("amd64", None),
    "aarch64": ("arm64", "v8"), "arm64": ("arm64", "v8"),
    "armv7l": ("arm", "v7"), "armv7": ("arm", "v7"), "armv6l": ("arm", "v6"),
    "i386": ("386", None), "i686": ("386", None),
    "ppc64le": ("ppc64le", None), "s390x": ("s390x", None), "riscv64": ("riscv64", None),
}


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


def host_platform() -> Platform:
    arch, variant = _ARCHES.get(os.uname().machine, (os.uname().machine, None))
    return Platform("linux", arch, variant)


def parse_platform(text: str) -> Platform:
    parts = text.strip().lower().split("/")
    if len(parts) < 2 or len(parts) > 3 or not all(parts):
        raise InvalidArgument(f'"{text}": unknown operating system or architecture: invalid argument')
    arch, variant = _ARCHES.get(parts[1], (parts[1], None))
    return Platform(parts[0], arch, parts[2] if len(parts) == 3 else (variant if arch == "arm64" else None))


def choose_platform(index: dict[str, Any], want: Platform) -> dict[str, Any]:
    """The index entry for `want` (containerd's platform matcher, simplified): os and
    architecture must match; a variant must match when both sides name one, and an entry
    without a variant stands for arm64/v8."""
    best: dict[str, Any] | None = None
    for entry in index.get("manifests") or []:
        if not isinstance(entry, dict):
            continue
        plat = entry.get("platform") or {}
        if plat.get("os") != want.os or plat.get("architecture") != want.architecture:
            continue
        if entry.get("mediaType") and entry["mediaType"] not in IMAGE_MANIFEST_TYPES:
            continue
        variant = plat.get("variant")
        if want.variant and variant and variant != want.variant:
            continue
        if variant == want.variant:
            return entry  # exact
        if best is None:
            best = entry
    if best is None:
        raise NotFound(f"no matching manifest for {want} in the manifest list entries")
    return best


# --- blob sources (for cross-repository mounts) ------------------------------------------------


def _sources_path(store: ImageStore) -> Path:
    return store.root / SOURCES_FILE


def blob_sources(store: ImageStore, digest: str) -> list[str]:
    """Repositories (`domain/path`) this blob is known to be in."""
    try:
        data = json.loads(_sources_path(store).read_text())
    except (FileNotFoundError, ValueError):
        return []
    return list(data.get(digest, []))


def record_blob_sources(store: ImageStore, repository: str, digests: Iterable[str]) -> None:
    digests = list(digests)
    if not digests:
        return
    path = _sources_path(store)
    with store.lock():
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            data = {}
        if len(data) > SOURCES_PRUNE_AT:
            # Forget blobs the store no longer has (pruned images), so the file stays small.
            data = {d: r for d, r in data.items() if store.has_blob(d)}
        for digest in digests:
            repos = data.setdefault(digest, [])
            if repository in repos:
                repos.remove(repository)
            repos.insert(0, repository)   # most recent first
            del repos[8:]
        store.root.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{SOURCES_FILE}.tmp-{os.getpid()}")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)


# --- helpers -----------------------------------------------------------------------------------


# `credentials` left as this: the ones stored for the registry (`login`); a node pulling or
# pushing for a remote CLI is given the CLI's (or None) instead, as dockerd is by X-Registry-Auth.
STORED: Any = object()


def client_for(ref: refs.Reference, actions: tuple[str, ...], *, aiohttp: bool = False,
               credentials: Any = STORED) -> RegistryClient:
    """A client for the reference's repository, with the stored credentials of its registry
    (`aiohttp`: over aiohttp's client, as a node daemon pulls: registry_client.RegistryClient)."""
    creds = load_credentials(ref.domain) if credentials is STORED else credentials
    return RegistryClient(ref.domain, ref.path, actions, creds, aiohttp=aiohttp)


def _short(digest: str) -> str:
    return digest.split(":", 1)[-1][:12]


def _pull_error(exc: RegistryError, ref: refs.Reference) -> ShoalError:
    """moby's translatePullError: the registry's error code decides the wording."""
    if exc.code == "DENIED":
        return ShoalError(f"pull access denied for {ref.familiar_name()}, repository does not exist or may "
                          f"require 'docker login': {exc}")
    if exc.code == "MANIFEST_UNKNOWN":
        return NotFound(f"manifest for {ref.familiar()} not found: {exc}")
    if exc.code == "NAME_UNKNOWN":
        return NotFound(f"repository {ref.familiar_name()} not found: {exc}")
    return exc


def _existing(store: ImageStore, text: str) -> Image | None:
    try:
        return store.resolve(text)
    except NotFound:
        return None


# --- pull --------------------------------------------------------------------------------------


def resolve_manifest(client: RegistryClient, ref: refs.Reference, platform: Platform) -> tuple[FetchedManifest, str]:
    """The image manifest to pull and the digest Docker reports and records (the index's digest
    when the reference points at an index)."""
    top = client.get_manifest(ref.digest or ref.tag or "latest")
    if top.media_type in INDEX_TYPES:
        entry = choose_platform(top.json(), platform)
        chosen = client.get_manifest(str(entry["digest"]))
        if chosen.media_type not in IMAGE_MANIFEST_TYPES:
            raise ShoalError(f"unsupported manifest media type {chosen.media_type} in {entry['digest']}")
        return chosen, top.digest
    if top.media_type in (DOCKER_SCHEMA1, DOCKER_SCHEMA1_SIGNED):
        raise ShoalError("[DEPRECATION NOTICE] Docker Image Format v1 and Docker Image manifest version 2, "
                         "schema 1 support has been removed. Suggest the author of "
                         f"{ref.familiar()} to upgrade the image to the OCI Format or Docker Image manifest v2, schema 2.")
    if top.media_type not in IMAGE_MANIFEST_TYPES:
        raise ShoalError(f"unsupported manifest media type {top.media_type or '(none)'} for {ref.familiar()}")
    return top, top.digest


def download_blob(client: RegistryClient, store: ImageStore, descriptor: dict[str, Any],
                  progress: ProgressDisplay | None = None, ident: str | None = None,
                  cancelled: threading.Event | None = None, limit: int = 0) -> None:
    """Stream a blob into the store, verified against the descriptor's digest and size.
    A transport failure is retried; a wrong digest or size is not (and leaves nothing).
    `limit`: more bytes than this are refused, whatever the descriptor says (a config)."""
    digest = str(descriptor["digest"])
    size = int(descriptor.get("size") or 0)
    for attempt in range(1, DOWNLOAD_ATTEMPTS + 1):
        try:
            _download_once(client, store, digest, size, progress, ident, cancelled, limit)
            return
        except _Retryable as exc:
            if attempt == DOWNLOAD_ATTEMPTS:
                raise ShoalError(str(exc)) from exc
            if progress and ident:
                progress.status(ident, f"Retrying in {attempt * 2 - 1} second{'s' if attempt > 1 else ''}")
            time.sleep(attempt * 2 - 1)


class _Retryable(Exception):
    pass


def _download_once(client: RegistryClient, store: ImageStore, digest: str, size: int,
                   progress: ProgressDisplay | None, ident: str | None,
                   cancelled: threading.Event | None, limit: int = 0) -> None:
    received = 0
    with store.ingest(expected=digest) as writer:
        try:
            with client.open_blob(digest) as resp:
                for chunk in resp.iter_raw(READ_CHUNK):
                    if cancelled is not None and cancelled.is_set():
                        raise ShoalError("download cancelled")  # another layer failed, or Ctrl-C
                    received += len(chunk)
                    if size and received > size:
                        raise ShoalError(f"filesystem layer verification failed for digest {digest}: "
                                         f"more than the {size} bytes the manifest declares")
                    if limit and received > limit:
                        raise ShoalError(f"image config {digest} is more than {limit >> 20}MiB")
                    writer.write(chunk)
                    if progress and ident:
                        progress.progress(ident, "Downloading", received, size)
        except RegistryUnreachable as exc:
            raise _Retryable(str(exc)) from exc
        except Exception as exc:
            if not client.is_transport_error(exc):  # its transport's (httpx or aiohttp) only
                raise
            raise _Retryable(str(exc)) from exc
        if progress and ident:
            progress.status(ident, "Verifying Checksum")
        if size and received != size:
            raise ShoalError(f"filesystem layer verification failed for digest {digest}: "
                             f"got {received} of {size} bytes")
        try:
            writer.commit()
        except ShoalError as exc:
            if str(exc).startswith("digest mismatch"):
                raise ShoalError(f"filesystem layer verification failed for digest {digest}") from exc
            raise


def pull(store: ImageStore, reference: str, out: TextIO | None = None, *,
         platform: Platform | str | None = None, quiet: bool = False,
         client: RegistryClient | None = None, aiohttp: bool = False, credentials: Any = STORED) -> Image:
    """`docker pull`: fetch `reference` into the store and tag it; returns the image.

    `client` is the source to pull from instead of the reference's registry (a node pulling
    from its manager's image store over mutual TLS: agent/imagefetch.py); the caller closes it,
    and the blobs are not recorded as being in the reference's registry. `aiohttp`: the
    registry's client over aiohttp (a node daemon: client_for)."""
    ref = refs.parse(reference)
    if isinstance(platform, str):
        platform = parse_platform(platform)
    want = platform or host_platform()
    display = ProgressDisplay(out, quiet=quiet)
    if not quiet and ref.digest is None and refs.parse_normalized(reference).tag is None:
        display.message(f"Using default tag: {ref.tag}")
    from_registry = client is None
    source: contextlib.AbstractContextManager[RegistryClient] = (
        client_for(ref, ("pull",), aiohttp=aiohttp, credentials=credentials) if client is None
        else contextlib.nullcontext(client))
    with source as client:
        try:
            manifest, repo_digest = resolve_manifest(client, ref, want)
        except RegistryError as exc:
            raise _pull_error(exc, ref) from exc
        data = manifest.json()
        config_desc = data.get("config") or {}
        layers = [d for d in data.get("layers") or [] if isinstance(d, dict)]
        if not config_desc.get("digest"):
            raise ShoalError(f"invalid manifest {manifest.digest}: no config")
        if len(layers) > MAX_LAYER_DEPTH:
            # moby's layer store limit, checked before a blob is fetched: a hostile manifest may
            # list one large layer thousands of times
            raise ShoalError(f"max depth exceeded ({len(layers)} layers, at most {MAX_LAYER_DEPTH})")
        declared = config_desc.get("size")
        if isinstance(declared, int) and declared > MAX_JSON_SIZE:
            # before any blob is asked for: the config is read whole once it is here
            raise ShoalError(f"image config {config_desc['digest']} is {declared} bytes, "
                             f"more than {MAX_JSON_SIZE >> 20}MiB")
        config_type = config_desc.get("mediaType")
        if config_type and config_type not in IMAGE_CONFIG_TYPES:
            # An artifact (a Helm chart, a signature...), not a container image: moby's words.
            raise ShoalError(f'Encountered remote "{config_type}"(unknown) when fetching')
        display.message(f"{ref.digest or ref.tag}: Pulling from {ref.path}")

        name_ref = ref.familiar()
        before = _existing(store, name_ref)
        image_id = str(config_desc["digest"])
        try:
            already = store.get(image_id)
        except (NotFound, ShoalError):
            already = None
        # Claimed before the store is looked at: a pull failing beside this one takes back
        # what it added, but never a blob this one found there and counts on.
        with store.claim([image_id, manifest.digest, *(str(d["digest"]) for d in layers)]):
            if already is None:
                _pull_blobs(client, store, config_desc, layers, display)
            config_bytes = store.read_blob(image_id)
            tags = [] if ref.digest else [name_ref]
            image = store.add_manifest(manifest.body, config_bytes, tags=tags,
                                       repo_digest=f"{ref.familiar_name()}@{repo_digest}")
        if from_registry:
            record_blob_sources(store, f"{ref.domain}/{ref.path}",
                                [image_id] + [str(d["digest"]) for d in layers])
    display.message(f"Digest: {repo_digest}")
    if before is not None and before.id == image.id:
        display.message(f"Status: Image is up to date for {name_ref}")
    else:
        display.message(f"Status: Downloaded newer image for {name_ref}")
    return image


def _pull_blobs(client: RegistryClient, store: ImageStore, config_desc: dict[str, Any],
                layers: list[dict[str, Any]], display: ProgressDisplay) -> None:
    """Download the missing layers (3 at a time) and the config; unpack the layers bottom first
    as they arrive, the way Docker's download manager hands them to the layer store."""
    pending: dict[int, Future[None]] = {}
    seen: set[str] = set()
    with ThreadPoolExecutor(max_workers=MAX_CONCURRENT_DOWNLOADS, thread_name_prefix="pull") as pool:
        cancelled = threading.Event()

        def fetch(desc: dict[str, Any], ident: str) -> None:
            if cancelled.is_set():
                raise ShoalError("cancelled")
            download_blob(client, store, desc, display, ident, cancelled)
            display.status(ident, "Download complete")

        missing: list[tuple[int, dict[str, Any], str]] = []
        for i, desc in enumerate(layers):
            digest = str(desc["digest"])
            ident = _short(digest)
            if store.has_blob(digest) or digest in seen:
                display.status(ident, "Already exists")
                continue
            seen.add(digest)
            display.status(ident, "Pulling fs layer")
            missing.append((i, desc, ident))
        for n, (i, desc, ident) in enumerate(missing):
            if n >= MAX_CONCURRENT_DOWNLOADS:
                display.status(ident, "Waiting")
            pending[i] = pool.submit(fetch, desc, ident)
        config_future = None
        if not store.has_blob(str(config_desc["digest"])):
            # read whole afterwards (as load reads its configs, within MAX_JSON_SIZE): a registry
            # that declares no size, or a false one, must not decide how much that is
            config_future = pool.submit(download_blob, client, store, config_desc, None, None, cancelled,
                                        MAX_JSON_SIZE)
        try:
            for i, desc in enumerate(layers):
                future = pending.get(i)
                if future is None:
                    continue
                future.result()
                ident = _short(str(desc["digest"]))
                display.status(ident, "Extracting")
                store.register_layer(str(desc["digest"]), str(desc.get("mediaType") or ""))
                display.status(ident, "Pull complete")
            if config_future is not None:
                config_future.result()
        except BaseException:
            cancelled.set()
            for future in pending.values():
                future.cancel()
            raise


# --- push --------------------------------------------------------------------------------------


def _manifest_media_type(manifest: dict[str, Any]) -> str:
    if manifest.get("mediaType"):
        return str(manifest["mediaType"])
    config_type = (manifest.get("config") or {}).get("mediaType")
    return DOCKER_MANIFEST if config_type == DOCKER_CONFIG else OCI_MANIFEST


def push(store: ImageStore, reference: str, out: TextIO | None = None, *, quiet: bool = False,
         announce: bool = True, aiohttp: bool = False, credentials: Any = STORED) -> str:
    """`docker push`: upload the image tagged `reference`; returns the manifest digest."""
    ref = refs.parse(reference)
    if ref.digest:
        raise InvalidArgument("cannot push a digest reference")
    display = ProgressDisplay(out, quiet=quiet)
    if not quiet and refs.parse_normalized(reference).tag is None:
        display.message(f"Using default tag: {ref.tag}")
    image = _existing(store, ref.familiar())
    if image is None:
        raise NotFound(f"An image does not exist locally with the tag: {ref.familiar_name()}")
    manifest_bytes = store.read_blob(image.manifest_digest)
    manifest = json.loads(manifest_bytes)
    media_type = _manifest_media_type(manifest)
    config_desc = manifest["config"]
    layer_descs = list(manifest.get("layers") or [])
    diff_ids = {layer.digest: layer.diff_id for layer in image.layers}
    here = f"{ref.domain}/{ref.path}"

    if announce:  # once per repository: `push --all-tags` says it before the first tag only
        display.message(f"The push refers to repository [{ref.name()}]")
    with client_for(ref, ("pull", "push"), aiohttp=aiohttp, credentials=credentials) as client:
        # Docker lists the top layer first.
        ordered = list(reversed(layer_descs))
        for desc in ordered:
            display.status(_short(diff_ids.get(desc["digest"], desc["digest"])), "Preparing")
        done: set[str] = set()
        lock = threading.Lock()

        def upload(desc: dict[str, Any]) -> None:
            digest = str(desc["digest"])
            ident = _short(diff_ids.get(digest, digest))
            with lock:
                if digest in done:
                    display.status(ident, "Layer already exists")
                    return
                done.add(digest)
            outcome = push_blob(client, store, desc, here, display, ident)
            display.status(ident, outcome)

        with ThreadPoolExecutor(max_workers=MAX_CONCURRENT_UPLOADS, thread_name_prefix="push") as pool:
            futures = [pool.submit(upload, desc) for desc in ordered]
            errors = []
            for future in futures:
                try:
                    future.result()
                except BaseException as exc:  # wait for every upload, then report the first error
                    errors.append(exc)
            if errors:
                raise errors[0]
        push_blob(client, store, config_desc, here, None, None)
        digest = client.put_manifest(ref.tag or "latest", manifest_bytes, media_type)
    record_blob_sources(store, here, [str(config_desc["digest"])] + [str(d["digest"]) for d in layer_descs])
    config_bytes = store.read_blob(image.id)
    store.add_manifest(manifest_bytes, config_bytes, repo_digest=f"{ref.familiar_name()}@{digest}")
    display.message(f"{ref.tag}: digest: {digest} size: {len(manifest_bytes)}")
    return digest


def push_blob(client: RegistryClient, store: ImageStore, desc: dict[str, Any], here: str,
              display: ProgressDisplay | None, ident: str | None) -> str:
    """Make the blob exist in the target repository; returns Docker's word for how."""
    digest = str(desc["digest"])
    if client.blob_size(digest) is not None:
        return "Layer already exists"
    domain = here.split("/", 1)[0]
    location = None
    for source in blob_sources(store, digest):
        src_domain, _, src_path = source.partition("/")
        if src_domain != domain or source == here:
            continue
        try:
            mounted, location = client.start_upload(mount=digest, source=src_path)
        except RegistryError:
            continue
        if mounted:
            return f"Mounted from {src_path}"
        break  # the registry gave an ordinary upload session instead: use it
    if location is None:
        _, location = client.start_upload()
    assert location is not None
    path = store.blob_path(digest)
    if not path.is_file():
        client.cancel_upload(location)
        raise ShoalError(f"blob {digest} is not in the image store: cannot push it")
    size = path.stat().st_size

    def report(sent: int) -> None:
        if display and ident:
            display.progress(ident, "Pushing", sent, size)

    for attempt in range(1, UPLOAD_ATTEMPTS + 1):
        try:
            with open(path, "rb") as f:
                client.upload_blob(location, digest, f, size, on_progress=report)
            return "Pushed"
        except RegistryUnreachable:
            # The connection broke mid-upload: a new session, from the start (Docker retries too).
            client.cancel_upload(location)
            if attempt == UPLOAD_ATTEMPTS:
                raise
            if display and ident:
                display.status(ident, f"Retrying in {attempt} second{'s' if attempt > 1 else ''}")
            time.sleep(attempt)
            _, location = client.start_upload()
            assert location is not None
        except BaseException:
            client.cancel_upload(location)
            raise
    raise AssertionError("unreachable")
