"""shoald's node-local routes: this node's images (list, inspect, history, tag, rm, load, save,
import), builds, networks and volumes (to look at), and containers (list, inspect, logs, create, start with attach, exec, kill,
stop, wait, rm), for a CLI whose context names this node from another machine (as `docker`
reaches dockerd with DOCKER_HOST=tcp://...).

A local context never comes here: the CLI does that work in its own process. On the cluster
listener these routes are behind the manager door (api/tcp.py: a manager's or the CLI's
certificate, never a worker's).

Uploads (a build context, an image archive or tarball) are spooled into a private directory of the state
root, size-capped, and a build context is unpacked through the hardened layer unpacker
(image/layers.py: no absolute or `..` names, nothing written through a symlink), so a hostile
tar cannot write outside its own temporary directory."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import shutil
import stat
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from aiohttp import web

from shoal import paths
from shoal.errors import Conflict, InvalidArgument, NotFound, ShoalError, Unavailable

if TYPE_CHECKING:
    from shoal.daemon import Daemon

# A build context or image archive larger than this is refused (413) before it fills the disk;
# SHOAL_UPLOAD_MAX (bytes) changes it.
DEFAULT_UPLOAD_MAX = 8 * 2**30
log = logging.getLogger("shoald.nodeapi")
_CHUNK = 1 << 20

T = TypeVar("T")


def _as_bad_upload(work: Callable[[], T], upload: Path, label: str) -> T:
    """The client's archive refused (corrupt, unsafe, not an image) is the client's error, a 400
    naming what was sent (not the node's spool path), not shoald failing; running out of space
    stays the node's (500)."""
    try:
        return work()
    except (NotFound, Conflict, InvalidArgument, Unavailable):
        raise
    except ShoalError as exc:
        if "no space left" in str(exc):
            raise
        raise InvalidArgument(str(exc).replace(str(upload), label)) from None


def upload_max() -> int:
    try:
        return int(os.environ.get("SHOAL_UPLOAD_MAX", DEFAULT_UPLOAD_MAX))
    except ValueError:
        return DEFAULT_UPLOAD_MAX


def _upload_dir() -> Path:
    return paths.ensure_private_dir(paths.state_root() / "uploads")


def _flag(request: web.Request, name: str) -> bool:
    return request.query.get(name, "").lower() in ("1", "true")


def _json_query(request: web.Request, name: str, kind: type, default: Any) -> Any:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = json.loads(raw)
    except ValueError:
        raise InvalidArgument(f"{name}: invalid JSON: {raw[:40]!r}") from None
    if not isinstance(value, kind):
        raise InvalidArgument(f"{name}: a JSON {kind.__name__} is expected")
    return value


class _RequestTooLarge(web.HTTPClientError):
    status_code = 413


async def _spool(request: web.Request, directory: Path, what: str) -> Path:
    """The request body into `directory`/upload, refused (413) past upload_max()."""
    limit = upload_max()
    message = json.dumps({"message": f"{what} too large: shoald accepts at most {limit} bytes (SHOAL_UPLOAD_MAX)"})
    if request.content_length is not None and request.content_length > limit:
        raise _RequestTooLarge(text=message, content_type="application/json")
    target = directory / "upload"
    size = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out:
        async for chunk in request.content.iter_chunked(_CHUNK):
            size += len(chunk)
            if size > limit:
                raise _RequestTooLarge(text=message, content_type="application/json")
            await asyncio.to_thread(out.write, chunk)
    if size == 0:
        raise InvalidArgument(f"{what}: the request body is empty")
    return target


class _Pipe:
    """A binary stream a worker thread writes (the builder's output, an archive being saved),
    read by the event loop as it comes. Bounded: the writer waits while the client is slower
    (a saved archive is never held in memory whole); once the client has gone (abort), the
    writer's next write fails, which ends its work."""

    def __init__(self, loop: asyncio.AbstractEventLoop, depth: int = 16) -> None:
        self.loop = loop
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue(maxsize=depth)
        self.aborted = False

    def write(self, data: bytes) -> int:
        if self.aborted:
            raise BrokenPipeError("the client went away")
        if data:
            asyncio.run_coroutine_threadsafe(self.queue.put(bytes(data)), self.loop).result()
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.queue.put(None), self.loop).result()

    async def relay(self, job: asyncio.Future[Any], response: web.StreamResponse,
                    frame: Callable[[bytes], bytes] = bytes) -> bool:
        """Send what the worker writes to the client as it comes (`frame` wraps each chunk),
        then let the worker end; False when the client went away (the worker is stopped by its
        next write)."""
        try:
            while (chunk := await self.queue.get()) is not None:
                await response.write(frame(chunk))
        except ConnectionResetError:
            return False
        finally:
            await self.finish(job)
        return True

    async def finish(self, job: asyncio.Future[Any]) -> None:
        """After the reader stopped (done or the client gone): let the writer end, never stuck
        on a full queue, and collect its result."""
        self.aborted = True
        while not job.done():
            while not self.queue.empty():
                self.queue.get_nowait()
            await asyncio.sleep(0.01)
        await asyncio.gather(job, return_exceptions=True)


async def _ndjson(response: web.StreamResponse, obj: dict[str, Any]) -> None:
    await response.write((json.dumps(obj) + "\n").encode())


def _safe_rel(name: str, what: str) -> str:
    """A relative path inside the context, as the client names it (Dockerfile)."""
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if not parts or name.startswith("/") or ".." in parts or "\0" in name:
        raise InvalidArgument(f"{what}: {name[:80]!r} must be a path inside the build context")
    return "/".join(parts)


def _scoped_dockerfile(context: Path, dockerfile: str) -> Path:
    from shoal.build.fs import CopyError, scoped_path

    try:
        return scoped_path(context, dockerfile)
    except CopyError:
        raise InvalidArgument(f"dockerfile: {dockerfile[:80]!r}: too many levels of symbolic links") from None


def _unpack_context(upload: Path, dest: Path) -> None:
    from shoal.image import layers

    dest.mkdir(mode=0o700)
    with upload.open("rb") as raw:
        head = raw.read(8)
        raw.seek(0)
        stream = layers.decompressed(raw, layers.detect_compression(head))
        try:
            layers.unpack_layer(stream, dest, source="build context", hash=False)
        except layers.LayerError as exc:
            raise InvalidArgument(f"build context refused: {exc}") from None


def add_routes(app: web.Application, daemon: Daemon,  # noqa: ARG001 - the daemon for later routes
               read_body: Callable[[web.Request], Awaitable[dict[str, Any]]]) -> None:
    from shoal.api import API_VERSION

    routes = web.RouteTableDef()
    prefix = f"/{API_VERSION}"

    def images() -> Any:
        from shoal.image.store import ImageStore

        return ImageStore()

    # ---- images ----------------------------------------------------------------------------

    @routes.get(prefix + "/images")
    async def image_list(request: web.Request) -> web.Response:
        from shoal.image.views import image_records, parse_filters

        raw = _json_query(request, "filters", dict, {})
        items = []
        for key, values in raw.items():
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise InvalidArgument(f"filters.{key}: a list of strings is expected")
            items.extend(f"{key}={v}" for v in values)
        filters = parse_filters(items)
        records = await asyncio.to_thread(image_records, images(), _flag(request, "all"), filters,
                                          _flag(request, "digests"))
        return web.json_response(records)

    @routes.get(prefix + "/images/get")
    async def image_save(request: web.Request) -> web.StreamResponse:
        """`save`: the archive streamed out as it is written (names checked before a byte)."""
        from shoal.image import archive

        names = request.query.getall("names", [])
        if not names:
            raise InvalidArgument("names: at least one image is required")
        store = images()
        await asyncio.to_thread(archive.select, store, names)  # 404 before the stream starts
        sink = _Pipe(asyncio.get_running_loop())
        response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
        await response.prepare(request)

        def run() -> None:
            try:
                archive.save(store, names, sink)  # type: ignore[arg-type]
            finally:
                if not sink.aborted:
                    sink.close()

        job = asyncio.ensure_future(asyncio.to_thread(run))
        if not await sink.relay(job, response):
            return response  # the client went away
        if job.exception() is not None:
            # Mid-stream: no end-of-stream mark, so the client sees a cut archive and says so.
            log.error("save %s failed after the stream started: %s", names, job.exception())
            return response
        await response.write_eof()
        return response

    @routes.post(prefix + "/images/load")
    async def image_load(request: web.Request) -> web.Response:
        from shoal.image import archive

        work = Path(tempfile.mkdtemp(prefix="load-", dir=_upload_dir()))
        try:
            upload = await _spool(request, work, "image archive")

            def run() -> list[Any]:
                with upload.open("rb") as src:
                    return archive.load(images(), src, source=request.query.get("source") or "from stdin")

            loaded = await asyncio.to_thread(_as_bad_upload, run, upload, "the image archive")
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        return web.json_response([{"id": i.id, "tags": i.tags, "replaced": [list(r) for r in i.replaced]}
                                  for i in loaded])

    @routes.post(prefix + "/images/import")
    async def image_import(request: web.Request) -> web.Response:
        """`import`: a root filesystem tar streamed in, one layer; the reference and changes are
        checked before the body is read."""
        from shoal.image import reference
        from shoal.image.importer import apply_change, import_tarball

        repo = request.query.get("repo") or None
        changes = request.query.getall("changes", [])
        if repo:
            reference.parse(repo)
        for change in changes:
            apply_change({}, change)
        work = Path(tempfile.mkdtemp(prefix="import-", dir=_upload_dir()))
        try:
            upload = await _spool(request, work, "image tarball")
            image = await asyncio.to_thread(_as_bad_upload, lambda: import_tarball(
                images(), str(upload), repo, changes, request.query.get("message", ""), None,
                request.query.get("platform") or None), upload, "the image tarball")
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        return web.json_response({"id": image.id})

    @routes.get(prefix + "/images/{ref:.+}/history")
    async def image_history(request: web.Request) -> web.Response:
        from shoal.image.views import history_rows

        image = await asyncio.to_thread(images().resolve, request.match_info["ref"])
        return web.json_response(history_rows(image))

    @routes.post(prefix + "/images/{ref:.+}/tag")
    async def image_tag(request: web.Request) -> web.Response:
        target = request.query.get("repo", "")
        if not target:
            raise InvalidArgument("repo: the new reference is required")
        await asyncio.to_thread(images().tag, request.match_info["ref"], target)
        return web.json_response({}, status=201)

    @routes.get(prefix + "/images/{ref:.+}")
    async def image_inspect(request: web.Request) -> web.Response:
        from shoal.image.views import inspect_object

        image = await asyncio.to_thread(images().resolve, request.match_info["ref"])
        return web.json_response(inspect_object(image))

    @routes.delete(prefix + "/images/{ref:.+}")
    async def image_remove(request: web.Request) -> web.Response:
        lines = await asyncio.to_thread(images().remove, request.match_info["ref"], _flag(request, "force"))
        return web.json_response({"lines": lines})

    # ---- build -----------------------------------------------------------------------------

    @routes.post(prefix + "/build")
    async def build(request: web.Request) -> web.StreamResponse:
        """Docker's POST /build: the context as a tar (.dockerignore applied by the client), the
        builder's output streamed back as newline-delimited JSON ({"stream"}, then {"aux":
        {"ID"}} or {"error"})."""
        from shoal.build.builder import BuildFailed, BuildOptions, Builder

        q = request.query
        dockerfile = _safe_rel(q.get("dockerfile") or "Dockerfile", "dockerfile")
        build_args = _json_query(request, "buildargs", dict, {})
        if not all(isinstance(k, str) and (v is None or isinstance(v, str)) for k, v in build_args.items()):
            raise InvalidArgument("buildargs: a mapping of strings is expected")
        work = Path(tempfile.mkdtemp(prefix="build-", dir=_upload_dir()))
        try:
            upload = await _spool(request, work, "build context")
            context = work / "context"
            await asyncio.to_thread(_unpack_context, upload, context)
            upload.unlink()
            # Its symlinks (`sub/Dockerfile` with `sub -> /etc`, or the last one) are followed
            # inside the context, as moby's remotecontext opens it: a file of this node outside
            # the context is never read (its lines would show in the builder's parse errors).
            scoped = await asyncio.to_thread(_scoped_dockerfile, context, dockerfile)
            dockerfile_path: Path | None = None if scoped == context / "Dockerfile" else scoped
            try:
                st = os.lstat(scoped)
            except OSError:
                st = None  # missing: the builder says so, in its words
            linked = scoped != context / dockerfile  # a symlink on the way: no file, a 400 too
            if (st is not None and not stat.S_ISREG(st.st_mode)) or (st is None and linked):
                raise InvalidArgument(f"dockerfile: {dockerfile[:80]!r} must be a regular file in the build context")
            if _flag(request, "dockerfile_outside"):
                # A Dockerfile from outside the client's context: taken out of it again, so that
                # `COPY .` does not see it (as in a local build).
                dockerfile_path = work / "Dockerfile.outside"
                try:
                    os.replace(scoped, dockerfile_path)
                except OSError:
                    raise InvalidArgument(f"dockerfile: {dockerfile[:80]!r} is not in the build context") from None
            opts = BuildOptions(
                context_dir=context,
                dockerfile=dockerfile_path,
                tags=q.getall("t", []), build_args=build_args, target=q.get("target", ""),
                no_cache=_flag(request, "nocache"), pull=_flag(request, "pull"), quiet=_flag(request, "q"),
                network=q.get("network") or "default")
            response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
            await response.prepare(request)
            sink = _Pipe(asyncio.get_running_loop())

            def run() -> str:
                try:
                    return Builder(images(), sink).build(opts).image_id  # type: ignore[arg-type]
                finally:
                    if not sink.aborted:
                        sink.close()

            # The context directory is removed only once the builder has stopped (below), even
            # when the client leaves in the middle: its next output line then ends the build.
            job = asyncio.ensure_future(asyncio.to_thread(run))
            if not await sink.relay(job, response, lambda chunk: (json.dumps(
                    {"stream": chunk.decode("utf-8", "replace")}) + "\n").encode()):
                return response  # the client went away: the build stopped at its next line
            try:
                await _ndjson(response, {"aux": {"ID": job.result()}})
            except BuildFailed as exc:
                await _ndjson(response, {"error": str(exc), "errorDetail": {"message": str(exc)}})
            except ShoalError as exc:
                await _ndjson(response, {"error": str(exc), "errorDetail": {"message": str(exc)},
                                         "exit_code": exc.exit_code, "setup": True})
            await response.write_eof()
            return response
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    # ---- containers ------------------------------------------------------------------------

    def containers() -> Any:
        from shoal.runtime.manager import ContainerManager

        return ContainerManager()

    # ---- networks ----------------------------------------------------------------------------

    @routes.get(prefix + "/node/networks")
    async def node_networks(_: web.Request) -> web.Response:
        """This node's own networks and its copies of the swarm's (network/store.py records),
        for `network ls|inspect` from a CLI whose context names this node."""
        from shoal.network.store import NetworkStore

        return web.json_response(await asyncio.to_thread(lambda: [n.to_dict() for n in NetworkStore().list()]))

    # ---- volumes ---------------------------------------------------------------------------

    @routes.get(prefix + "/node/volumes/{name}")
    async def node_volume(request: web.Request) -> web.Response:
        """One of this node's volumes as `volume inspect` shows it, for `inspect` from a CLI whose
        context names this node (docker's system inspect tries volumes too)."""
        from shoal.runtime import volumes

        return web.json_response(await asyncio.to_thread(lambda: volumes.get(request.match_info["name"]).to_api()))

    @routes.get(prefix + "/containers")
    async def container_list(request: web.Request) -> web.Response:
        from shoal.runtime.inspect import command_text, ports_text, rfc3339, status_text

        def run() -> list[dict[str, Any]]:
            now = time.time()
            return [{"Id": c.id, "Image": c.image, "ImageID": c.image_id, "Command": command_text(c), "Created": c.created,
                     "CreatedRFC3339": rfc3339(c.created),
                     "Status": status_text(c, now), "State": c.state.status, "Ports": ports_text(c),
                     "Names": c.name, "Labels": c.config.get("Labels") or {},
                     "Mounts": [m.get("Name") or m.get("Source", "") for m in c.mounts],
                     "Network": c.spec.network}
                    for c in containers().list(all=_flag(request, "all"))]

        return web.json_response(await asyncio.to_thread(run))

    def dns_hook(loop: asyncio.AbstractEventLoop) -> Callable[[Any], None]:
        """The runtime's before_start hook (run in a worker thread) for a container on a
        user-defined network: the embedded resolver opened in its namespace, as the CLI's local
        `run` asks for it (POST /containers/{id}/dns)."""
        from shoal.agent.netglue import container_networks, container_upstreams

        def hook(c: Any) -> None:
            network = getattr(c, "network", None) or {}
            if "127.0.0.11" not in (c.dir / "resolv.conf").read_text() or not network.get("netns"):
                return
            if c.spec.network.startswith("container:") or daemon.dns is None:
                return
            networks = container_networks(c.id)
            upstreams = container_upstreams(c.id)
            asyncio.run_coroutine_threadsafe(daemon.dns.serve(c.id, network["netns"], networks, upstreams),
                                             loop).result()
            asyncio.run_coroutine_threadsafe(daemon.refresh_dns(), loop).result()

        return hook

    @routes.post(prefix + "/containers/create")
    async def container_create(request: web.Request) -> web.Response:
        """`run`/`create` on this node: the ContainerSpec the CLI made from its flags (its
        --env-file read there, as docker's CLI does); bind mounts name this node's paths."""
        from shoal.runtime.spec import ContainerSpec

        from shoal.api import shape

        body = await read_body(request)
        if not isinstance(body.get("spec"), dict):
            raise InvalidArgument('the request body must be {"spec": <ContainerSpec>}')
        spec = shape.checked(ContainerSpec, body["spec"], "spec")
        try:
            c = await asyncio.to_thread(containers().create, spec)
        except ShoalError as exc:
            if exc.exit_code not in (126, 127):
                raise
            # The command cannot run: docker run exits 126 or 127; the CLI takes the code from here.
            return web.json_response({"message": str(exc), "exit_code": exc.exit_code}, status=400)
        return web.json_response({"Id": c.id}, status=201)

    @routes.post(prefix + "/containers/{id}/start")
    async def container_start(request: web.Request) -> web.StreamResponse:
        """Start; with attach=1 a foreground `run`: the output streamed as ndjson while it runs,
        then {"exit": code}; with the container's --rm it is removed after its exit is read.
        A client that leaves stops the stream, not the container."""
        mgr = containers()
        ref = request.match_info["id"]
        hook = dns_hook(asyncio.get_running_loop())
        if not _flag(request, "attach"):
            await asyncio.to_thread(mgr.start, ref, hook)
            return web.json_response({})
        from shoal.runtime import logs

        c = await asyncio.to_thread(mgr.get, ref)
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        sink = _Pipe(asyncio.get_running_loop())

        def line(obj: dict[str, Any]) -> None:
            sink.write((json.dumps(obj) + "\n").encode())

        def run() -> None:
            try:
                with mgr.attached(c):
                    try:
                        mgr.start(c.id, before_start=hook)
                    except ShoalError as exc:
                        if c.spec.auto_remove:
                            mgr.remove(c.id, force=True)
                        line({"error": str(exc)})
                        return
                    current = mgr.get(c.id)

                    def done() -> bool:
                        current.refresh()
                        return current.state.status != "running"

                    for entry in logs.follow(current.log_path, done):
                        line({"stream": entry.stream, "data": base64.b64encode(entry.data).decode()})
                    code = mgr.wait(c.id)
                    if c.spec.auto_remove:
                        mgr.remove(c.id, force=True, volumes_too=True)
                    line({"exit": code})
            finally:
                if not sink.aborted:
                    sink.close()

        job = asyncio.ensure_future(asyncio.to_thread(run))
        if await sink.relay(job, response):
            await response.write_eof()
        return response

    @routes.post(prefix + "/containers/{id}/exec")
    async def container_exec(request: web.Request) -> web.StreamResponse:
        """`exec` without a terminal or stdin: {"cmd", "env", "user", "workdir", "detach"}; the
        process's output streamed as ndjson as it comes, then {"exit": code}. A client that
        leaves ends the process (no one reads its output any more)."""
        import subprocess
        import threading

        from shoal.api.attachapi import exec_request

        try:
            body = await read_body(request)
            detach = bool(body.get("detach"))
        except (ValueError, AttributeError) as exc:
            raise InvalidArgument(f"exec: {exc}") from None
        cmd, env, user, workdir = exec_request(body)
        try:
            argv = await asyncio.to_thread(lambda: containers().exec_argv(
                request.match_info["id"], cmd, detach=detach, env=env, user=user, workdir=workdir))
        except ShoalError as exc:
            if exc.exit_code not in (126, 127):
                raise
            # The command cannot run: docker exits 126 or 127; the CLI takes the code from here.
            return web.json_response({"message": str(exc), "exit_code": exc.exit_code}, status=400)
        if detach:
            done = await asyncio.to_thread(subprocess.run, argv, stdin=subprocess.DEVNULL,
                                           capture_output=True)
            if done.returncode != 0:
                raise ShoalError(done.stderr.decode(errors="replace").strip() or f"exec failed ({done.returncode})")
            return web.json_response({"exit": 0})
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        sink = _Pipe(asyncio.get_running_loop())

        def run() -> None:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            lock = threading.Lock()

            def pump(stream: Any, name: str) -> None:
                try:
                    for chunk in iter(lambda: stream.read1(65536), b""):
                        with lock:
                            sink.write((json.dumps({"stream": name, "data": base64.b64encode(chunk).decode()})
                                        + "\n").encode())
                except BrokenPipeError:
                    proc.kill()  # the client left: nobody reads this output any more

            readers = [threading.Thread(target=pump, args=(proc.stderr, "stderr"), daemon=True)]
            readers[0].start()
            try:
                pump(proc.stdout, "stdout")
                readers[0].join()
                if not sink.aborted:
                    sink.write((json.dumps({"exit": proc.wait()}) + "\n").encode())
            finally:
                if proc.poll() is None:
                    proc.kill()
                proc.wait()
                if not sink.aborted:
                    sink.close()

        job = asyncio.ensure_future(asyncio.to_thread(run))
        if await sink.relay(job, response):
            await response.write_eof()
        return response

    @routes.post(prefix + "/containers/{id}/kill")
    async def container_kill(request: web.Request) -> web.Response:
        await asyncio.to_thread(containers().kill, request.match_info["id"], request.query.get("signal") or "KILL")
        return web.json_response({})

    @routes.post(prefix + "/containers/{id}/stop")
    async def container_stop(request: web.Request) -> web.Response:
        t = request.query.get("t")
        try:
            timeout = int(t) if t not in (None, "") else None
        except ValueError:
            raise InvalidArgument(f"t: an integer is expected, not {t[:40]!r}") from None
        await asyncio.to_thread(containers().stop, request.match_info["id"], timeout)
        return web.json_response({})

    @routes.delete(prefix + "/containers/{id}")
    async def container_remove(request: web.Request) -> web.Response:
        await asyncio.to_thread(lambda: containers().remove(request.match_info["id"], force=_flag(request, "force"),
                                                            volumes_too=_flag(request, "v")))
        return web.json_response({})

    @routes.post(prefix + "/containers/{id}/wait")
    async def container_wait(request: web.Request) -> web.Response:
        return web.json_response({"StatusCode": await asyncio.to_thread(containers().wait, request.match_info["id"])})

    @routes.get(prefix + "/containers/{id}/json")
    async def container_inspect(request: web.Request) -> web.Response:
        from shoal.network.endpointinfo import with_networks
        from shoal.runtime.inspect import inspect

        def run() -> dict[str, Any]:
            c = containers().get(request.match_info["id"])
            return with_networks(inspect(c), c)

        return web.json_response(await asyncio.to_thread(run))

    @routes.get(prefix + "/containers/{id}/logs")
    async def container_logs(request: web.Request) -> web.StreamResponse:
        """ndjson {"stream", "time", "data" (base64)} per line; with follow=1, new lines until
        the container stops or the client leaves."""
        from shoal.runtime import logs

        mgr = containers()
        c = await asyncio.to_thread(mgr.get, request.match_info["id"])
        tail = request.query.get("tail", "all")
        if tail != "all":
            try:
                count = int(tail)
            except ValueError:
                raise InvalidArgument(f'invalid value for "tail": "{tail[:40]}"') from None
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)

        async def emit(line: Any) -> None:
            await _ndjson(response, {"stream": line.stream, "time": line.docker_time(),
                                     "data": base64.b64encode(line.data).decode()})

        existing = await asyncio.to_thread(logs.read_lines, c.log_path)
        try:
            for line in existing if tail == "all" else (existing[-count:] if count > 0 else []):
                await emit(line)
            if _flag(request, "follow"):
                await _follow(c, mgr, logs, emit)
        except ConnectionResetError:
            return response  # the client went away (its `logs -f` interrupted)
        await response.write_eof()
        return response

    async def _follow(c: Any, mgr: Any, logs: Any, emit: Callable[[Any], Any]) -> None:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        gone = False

        def done() -> bool:
            if gone:
                return True
            try:
                return mgr.get(c.id).state.status != "running"
            except NotFound:
                return True

        def run() -> None:
            try:
                for line in logs.follow(c.log_path, done, skip_existing=True):
                    loop.call_soon_threadsafe(queue.put_nowait, line)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, None)

        job = asyncio.create_task(asyncio.to_thread(run))
        try:
            while (line := await queue.get()) is not None:
                await emit(line)
        finally:
            gone = True  # the client left (a cancelled handler): the reader thread ends too
            await asyncio.shield(job)

    app.add_routes(routes)
    from shoal.api import attachapi  # run -i/-t, attach and exec -i/-t: a WebSocket per session

    attachapi.add_routes(app, prefix, dns_hook)
    from shoal.api import nodeops  # volumes, restart, top, port, stats, network connect/disconnect

    nodeops.add_routes(app, prefix, read_body, dns_hook)
