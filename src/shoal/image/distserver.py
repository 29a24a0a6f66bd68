"""The manager's image store as a read-only OCI distribution API, so that nodes pull what the
manager has (built, loaded, pulled) without a registry.

Only the spec's pull endpoints are served:

    GET       /v2/                                   the API version check
    HEAD|GET  /v2/<name>/manifests/<tag|digest>      Content-Type = the manifest's media type
    HEAD|GET  /v2/<name>/blobs/<digest>              streamed from the content store

with Docker-Content-Digest and Content-Length, and the spec's error bodies
(`{"errors": [{"code": "MANIFEST_UNKNOWN", ...}]}`). Anything else is 405 UNSUPPORTED.

`make_distribution_app(store)` is an aiohttp sub-application; the manager's TCP listener mounts
it at DIST_API_PREFIX. Every request must carry the certificate of a node of this cluster
(tlsconfig.require_node: the listener's handshake checked the chain, this checks role and
cluster). Path parameters are hostile input: the name must match the reference grammar and a
digest the algorithm:hex grammar before the store builds any path from them, and only blobs an
image of the store refers to are served (never an arbitrary file of blobs/ or ingest/).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
from collections.abc import Awaitable, Callable

from aiohttp import web

from shoal.errors import InvalidArgument, ShoalError
from shoal.image import reference as refs
# not registry_client: its httpx would stay in a manager that serves images and never pulls
from shoal.image.distspec import ERROR_CODE_MESSAGES, manifest_media_type
from shoal.image.store import ImageStore
from shoal.tlsconfig import require_node

DIST_API_PREFIX = "/v2"
STORE_KEY = web.AppKey("shoal_dist_store", ImageStore)
# What a client accepts (registry_client.MAX_MANIFEST_BYTES): a bigger "manifest" is not one.
MAX_MANIFEST_BYTES = 4 << 20
CHUNK = 1 << 20
# `<name>/manifests/<reference>` or `<name>/blobs/<digest>`: the name is everything before the
# last two components; its own grammar is checked afterwards.
_ROUTE = re.compile(r"^(?P<name>.+)/(?P<kind>manifests|blobs)/(?P<ref>[^/]+)$", re.ASCII)
_SHA256_HEX = re.compile(r"^[a-f0-9]{64}$", re.ASCII)


def error_response(status: int, code: str, message: str = "", detail: object = None) -> web.Response:
    """The distribution spec's error body."""
    error: dict[str, object] = {"code": code, "message": message or ERROR_CODE_MESSAGES.get(code, code)}
    if detail is not None:
        error["detail"] = detail
    return web.Response(status=status, text=json.dumps({"errors": [error]}),
                        content_type="application/json")


class _Refused(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.status)
        self.response = response


def _parse_name(text: str) -> refs.Reference:
    """A repository name as the reference grammar has it (docker.io/library/web, localhost/x,
    reg:5000/team/app, or the familiar web): no tag, no digest, nothing else."""
    if not refs.ANCHORED_NAME_RE.fullmatch(text) or len(text) > refs.NAME_TOTAL_LENGTH_MAX:
        raise _Refused(error_response(400, "NAME_INVALID", detail={"name": text[:300]}))
    try:
        return refs.parse_name(text)
    except InvalidArgument:
        raise _Refused(error_response(400, "NAME_INVALID", detail={"name": text[:300]})) from None


def _parse_digest(text: str) -> str:
    """`sha256:<64 lower-case hex>` (go-digest's grammar; the store holds sha256 only, so the
    other algorithms it knows are unknown blobs rather than bad requests)."""
    try:
        refs.validate_digest(text)
    except InvalidArgument as exc:
        raise _Refused(error_response(400, "DIGEST_INVALID", str(exc))) from None
    algorithm, _, encoded = text.partition(":")
    if algorithm != "sha256" or not _SHA256_HEX.fullmatch(encoded):
        return ""
    return text


class _Index:
    """What the store can serve, read from its index once per request: tags and repo digests
    by repository, and the blobs images refer to (configs, layers, manifests)."""

    def __init__(self, store: ImageStore) -> None:
        index = store._load_index()  # noqa: SLF001 - the serving side of the same store
        self.images = {i: r for i, r in index["images"].items() if not r.get("removed")}
        self.tags: dict[str, str] = dict(index["tags"])
        self.repositories: set[str] = set()
        for key in list(index["tags"]) + list(index["digests"]):
            try:
                self.repositories.add(refs.parse_normalized(key).name())
            except InvalidArgument:
                continue
        self.blobs: set[str] = set()
        self.manifests: set[str] = set()
        for image_id, record in self.images.items():
            self.blobs.add(image_id)
            self.blobs.update(str(b) for b in record.get("layers") or [])
            if record.get("manifest"):
                self.manifests.add(str(record["manifest"]))


async def _manifest(request: web.Request, store: ImageStore, name: refs.Reference, reference: str) -> web.StreamResponse:
    index = await asyncio.to_thread(_Index, store)
    if ":" in reference:
        digest = _parse_digest(reference)
        # By digest: any image the store holds under it (a pinned service may name an image
        # that has since been re-tagged, as a registry keeps serving old digests).
        found = digest if digest and digest in index.manifests else None
    else:
        if not refs.ANCHORED_TAG_RE.match(reference):
            return error_response(400, "TAG_INVALID", detail={"tag": reference[:300]})
        image_id = index.tags.get(str(name.with_tag(reference)))
        found = index.images.get(image_id, {}).get("manifest") if image_id else None
    if found is None:
        if name.name() not in index.repositories:
            return error_response(404, "NAME_UNKNOWN", detail={"name": name.familiar_name()})
        return error_response(404, "MANIFEST_UNKNOWN", detail={"reference": reference[:300]})
    path = store.blob_path(found)
    try:
        size = os.stat(path).st_size
        if size > MAX_MANIFEST_BYTES:
            raise ShoalError(f"manifest {found} is too big")
        body = await asyncio.to_thread(path.read_bytes)
    except FileNotFoundError:
        return error_response(404, "MANIFEST_UNKNOWN", detail={"reference": reference[:300]})
    headers = {"Docker-Content-Digest": found, "Etag": f'"{found}"'}
    return web.Response(body=body, headers=headers,
                        content_type=_media_type(body))


def _open_blob(store: ImageStore, digest: str) -> tuple[int, int] | None:
    """(fd, size) of a regular blob file, opened without following a symlink; None if absent."""
    try:
        fd = os.open(store.blob_path(digest), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError:
        return None  # a symlink (ELOOP) or anything else that is not a plain blob
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return None
    return fd, info.st_size


async def _blob(request: web.Request, store: ImageStore, name: refs.Reference, reference: str) -> web.StreamResponse:
    digest = _parse_digest(reference)
    index = await asyncio.to_thread(_Index, store)
    opened = _open_blob(store, digest) if digest and digest in index.blobs else None
    if opened is None:
        if name.name() not in index.repositories:
            return error_response(404, "NAME_UNKNOWN", detail={"name": name.familiar_name()})
        return error_response(404, "BLOB_UNKNOWN", detail={"digest": reference[:300]})
    fd, size = opened
    with os.fdopen(fd, "rb", buffering=0) as f:
        resp = web.StreamResponse(headers={"Docker-Content-Digest": digest, "Etag": f'"{digest}"',
                                           "Content-Type": "application/octet-stream"})
        resp.content_length = size
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        left = size
        while left > 0:
            # Read off the event loop: a cold disk would otherwise stall every other request.
            chunk = await asyncio.to_thread(f.read, min(CHUNK, left))
            if not chunk:
                break  # the file shrank under us: the client sees a short body and refuses it
            left -= len(chunk)
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def _version(request: web.Request) -> web.Response:
    return web.json_response({}, headers={"Docker-Distribution-API-Version": "registry/2.0"})


async def _dispatch(request: web.Request) -> web.StreamResponse:
    tail = request.match_info["tail"]
    if tail == "":
        return await _version(request)
    m = _ROUTE.match(tail)
    if m is None:
        return error_response(404, "NAME_UNKNOWN", "repository name not known to registry",
                              detail={"path": tail[:300]})
    store = request.app[STORE_KEY]
    try:
        name = _parse_name(m.group("name"))
        if m.group("kind") == "manifests":
            return await _manifest(request, store, name, m.group("ref"))
        return await _blob(request, store, name, m.group("ref"))
    except _Refused as refused:
        return refused.response


async def _unsupported(request: web.Request) -> web.Response:
    return error_response(405, "UNSUPPORTED", "this image store is read-only: only pulls are served")


@web.middleware
async def _node_only(request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
    """Every route: a node certificate of this cluster, worker or manager, or 403 DENIED."""
    try:
        require_node(request)
    except web.HTTPForbidden as exc:
        try:
            message = json.loads(exc.text or "{}").get("message", "")
        except ValueError:
            message = ""
        return error_response(403, "DENIED", message or "Permission denied")
    return await handler(request)


def _media_type(body: bytes) -> str:
    return manifest_media_type(body, None) or "application/json"


def make_distribution_app(store: ImageStore) -> web.Application:
    """The sub-application to mount at DIST_API_PREFIX under a listener that verifies client
    certificates against the cluster CA (tlsconfig.server_context) and sets CLUSTER_ID_KEY."""
    app = web.Application(middlewares=[_node_only])
    app[STORE_KEY] = store
    app.router.add_get("/{tail:.*}", _dispatch)  # HEAD too (allow_head)
    app.router.add_route("*", "/{tail:.*}", _unsupported)
    return app
