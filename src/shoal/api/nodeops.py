"""shoald's routes for the node commands beyond nodeapi.py's: volumes (create, ls, rm, prune),
container restart, top, port and stats, and network connect/disconnect, for a CLI whose context
names this node (as `docker` reaches dockerd with DOCKER_HOST=tcp://...).

Each route calls the same function the CLI calls for a local context (cli/volume.py,
cli/containerops.py, cli/netconnect.py, cli/container.py stats_rows), so the work and its
errors are the same; the CLI prints the answer with its own formatting code. Behind the same
doors as nodeapi.py's routes (api/tcp.py's manager door; a worker's own /containers, /node/)."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from shoal.api.nodeapi import _Pipe, _flag, _json_query, _spool, _upload_dir
from shoal.errors import InvalidArgument, ShoalError

log = logging.getLogger("shoald.nodeops")


def _int(request: web.Request, name: str) -> int | None:
    raw = request.query.get(name)
    if raw in (None, ""):
        return None
    try:
        return int(raw)
    except ValueError:
        raise InvalidArgument(f"{name}: an integer is expected, not {raw[:40]!r}") from None


def _strings(body: dict[str, Any], key: str) -> list[str]:
    value = body.get(key) or []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidArgument(f"{key}: a list of strings is expected")
    return value


def _string(body: dict[str, Any], key: str) -> str:
    value = body.get(key) or ""
    if not isinstance(value, str):
        raise InvalidArgument(f"{key}: a string is expected")
    return value


def _pairs(body: dict[str, Any], key: str) -> dict[str, str]:
    value = body.get(key) or {}
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise InvalidArgument(f"{key}: an object of strings is expected")
    return value


class _TextSink:
    """A text stream over nodeapi's _Pipe: each write framed as {"stream": text} (not a terminal:
    the progress is written as lines, as a local pull piped to a file)."""

    def __init__(self, sink: Any) -> None:
        self.sink = sink

    def write(self, text: str) -> int:
        if text:
            self.sink.write((json.dumps({"stream": text}) + "\n").encode())
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


async def _end(request: web.Request, response: web.StreamResponse, job: asyncio.Future[Any]) -> None:
    """An archive's end: complete when its maker finished, else the connection cut, so that
    the CLI reports a cut archive instead of keeping a short one that looks whole."""
    if job.exception() is None:
        await response.write_eof()
        return
    log.warning("%s %s: the archive failed: %s", request.method, request.path, job.exception())
    if request.transport is not None:
        request.transport.close()


def add_routes(app: web.Application, prefix: str, read_body: Callable[[web.Request], Awaitable[dict[str, Any]]],
               dns_hook: Callable[[asyncio.AbstractEventLoop], Callable[[Any], None]]) -> None:
    routes = web.RouteTableDef()

    # ---- volumes ---------------------------------------------------------------------------

    @routes.get(prefix + "/node/volumes")
    async def volume_list(request: web.Request) -> web.Response:
        from shoal.cli import volume

        filters = _json_query(request, "filters", dict, {})
        return web.json_response(await asyncio.to_thread(volume.listed, filters))

    @routes.post(prefix + "/node/volumes")
    async def volume_create(request: web.Request) -> web.Response:
        from shoal.cli import volume

        body = await read_body(request)
        doc = await asyncio.to_thread(volume.create, _string(body, "name"), _string(body, "driver") or "local",
                                      _pairs(body, "opts"), _pairs(body, "labels"))
        return web.json_response(doc, status=201)

    @routes.post(prefix + "/node/volumes/prune")
    async def volume_prune(request: web.Request) -> web.Response:
        from shoal.cli import volume

        filters = _json_query(request, "filters", list, [])
        if not all(isinstance(f, str) for f in filters):
            raise InvalidArgument("filters: a list of strings is expected")
        reclaimed, output = await asyncio.to_thread(volume.prune, _flag(request, "all"), filters)
        return web.json_response({"reclaimed": reclaimed, "output": output})

    @routes.delete(prefix + "/node/volumes/{name}")
    async def volume_remove(request: web.Request) -> web.Response:
        from shoal.cli.volume import _containers
        from shoal.runtime import volumes

        name = request.match_info["name"]
        await asyncio.to_thread(lambda: volumes.remove_checked(name, _containers(), force=_flag(request, "force")))
        return web.json_response({})

    # ---- pull / push -------------------------------------------------------------------------

    async def registry_job(request: web.Request, verb: str) -> web.StreamResponse:
        """`pull`/`push` by this node with the CLI's credentials for the registry (docker's
        X-Registry-Auth; none: anonymous, never this node's own), its output streamed as ndjson
        ({"stream"} as it comes, then {"done"} or {"error", "from_daemon", "exit_code"})."""
        from shoal.cli import registry
        from shoal.image import registryauth
        from shoal.image.store import ImageStore

        body = await read_body(request)
        name = _string(body, "name")
        if not name:
            raise InvalidArgument("name: an image reference is expected")
        decoded = registryauth.decode(body["registry_auth"]) if body.get("registry_auth") else None
        platform = _string(body, "platform") or None
        response = web.StreamResponse(headers={"Content-Type": "application/x-ndjson"})
        await response.prepare(request)
        sink = _Pipe(asyncio.get_running_loop())
        out = _TextSink(sink)

        def run() -> None:
            try:
                kwargs: dict[str, Any] = {"all_tags": bool(body.get("all_tags")), "quiet": bool(body.get("quiet")),
                                          "aiohttp": True, "credentials": decoded[0] if decoded else None}
                if verb == "pull":
                    registry.pull_images(ImageStore(), name, out, platform=platform, **kwargs)
                else:
                    registry.push_images(ImageStore(), name, out, **kwargs)
                line: dict[str, Any] = {"done": True}
            except ShoalError as exc:
                line = {"error": str(exc), "from_daemon": bool(getattr(exc, "from_daemon", False)),
                        "exit_code": exc.exit_code}
            except OSError as exc:  # a registry's connection, this node's disk: as locally, one line
                line = {"error": str(exc), "from_daemon": False, "exit_code": 1}
            try:
                sink.write((json.dumps(line) + "\n").encode())
            finally:
                if not sink.aborted:
                    sink.close()

        job = asyncio.ensure_future(asyncio.to_thread(run))
        if await sink.relay(job, response):
            await response.write_eof()
        return response

    @routes.post(prefix + "/images/pull")
    async def image_pull(request: web.Request) -> web.StreamResponse:
        return await registry_job(request, "pull")

    @routes.post(prefix + "/images/push")
    async def image_push(request: web.Request) -> web.StreamResponse:
        return await registry_job(request, "push")

    # ---- containers ------------------------------------------------------------------------

    @routes.post(prefix + "/containers/{id}/restart")
    async def container_restart(request: web.Request) -> web.Response:
        from shoal.runtime import control
        from shoal.runtime.manager import ContainerManager

        hook = dns_hook(asyncio.get_running_loop())
        timeout, signal = _int(request, "t"), request.query.get("signal") or None
        await asyncio.to_thread(control.restart, ContainerManager(), request.match_info["id"], timeout, signal,
                                before_start=hook)
        return web.json_response({})

    @routes.get(prefix + "/containers/{id}/top")
    async def container_top(request: web.Request) -> web.Response:
        from shoal.runtime import control
        from shoal.runtime.manager import ContainerManager

        titles, rows = await asyncio.to_thread(control.top, ContainerManager(), request.match_info["id"],
                                               request.query.get("ps_args", ""))
        return web.json_response({"Titles": titles, "Processes": rows})  # moby's ContainerTopOKBody

    @routes.get(prefix + "/containers/{id}/port")
    async def container_port(request: web.Request) -> web.Response:
        from shoal.cli.containerops import port_lines

        return web.json_response(await asyncio.to_thread(port_lines, request.match_info["id"],
                                                         request.query.get("private") or None))

    @routes.get(prefix + "/node/stats")
    async def container_stats(request: web.Request) -> web.Response:
        """`stats` rows of this node's containers (all running ones, or those named), each
        sampled over one second."""
        from shoal.cli.container import stats_rows
        from shoal.runtime.manager import ContainerManager

        refs = request.query.getall("containers", [])
        return web.json_response(await asyncio.to_thread(stats_rows, ContainerManager(), refs, 1.0))

    @routes.post(prefix + "/containers/{id}/pause")
    async def container_pause(request: web.Request) -> web.Response:
        from shoal.runtime import control
        from shoal.runtime.manager import ContainerManager

        await asyncio.to_thread(control.pause, ContainerManager(), request.match_info["id"])
        return web.json_response({})

    @routes.post(prefix + "/containers/{id}/unpause")
    async def container_unpause(request: web.Request) -> web.Response:
        from shoal.runtime import control
        from shoal.runtime.manager import ContainerManager

        await asyncio.to_thread(control.unpause, ContainerManager(), request.match_info["id"])
        return web.json_response({})

    @routes.post(prefix + "/containers/{id}/rename")
    async def container_rename(request: web.Request) -> web.Response:
        from shoal.cli.containerops import rename

        await asyncio.to_thread(rename, request.match_info["id"], request.query.get("name", ""))
        return web.json_response({})

    @routes.post(prefix + "/containers/{id}/update")
    async def container_update(request: web.Request) -> web.Response:
        """docker update's resources (control.Resources' fields, integers), checked there."""
        from shoal.runtime import control
        from shoal.runtime.manager import ContainerManager

        body = await read_body(request)
        fields = {f: body.get(f, 0) for f in control.Resources.__dataclass_fields__}
        if set(body) - set(fields) or any(isinstance(v, bool) or not isinstance(v, int) for v in fields.values()):
            raise InvalidArgument(f"the body must be an object of integers among {sorted(fields)}")
        await asyncio.to_thread(control.update, ContainerManager(), request.match_info["id"],
                                control.Resources(**fields))
        return web.json_response({})

    @routes.get(prefix + "/containers/{id}/changes")
    async def container_changes(request: web.Request) -> web.Response:
        from shoal.runtime import rootfs
        from shoal.runtime.manager import ContainerManager

        return web.json_response(await asyncio.to_thread(
            lambda: rootfs.changes(ContainerManager().get(request.match_info["id"]))))

    @routes.post(prefix + "/containers/{id}/commit")
    async def container_commit(request: web.Request) -> web.Response:
        from shoal.cli.containerops import commit

        body = await read_body(request)
        pause = body.get("pause", True)
        if not isinstance(pause, bool):
            raise InvalidArgument("pause: a boolean is expected")
        image_id = await asyncio.to_thread(commit, request.match_info["id"], _string(body, "reference"),
                                           _string(body, "message"), _string(body, "author"),
                                           _strings(body, "changes"), pause)
        return web.json_response({"Id": image_id}, status=201)

    @routes.get(prefix + "/containers/{id}/export")
    async def container_export(request: web.Request) -> web.StreamResponse:
        """The container's filesystem as a tar (runtime/rootfs.py export), streamed as made."""
        from shoal.runtime import rootfs
        from shoal.runtime.manager import ContainerManager

        c = await asyncio.to_thread(ContainerManager().get, request.match_info["id"])
        response = web.StreamResponse(headers={"Content-Type": "application/x-tar"})
        await response.prepare(request)
        sink = _Pipe(asyncio.get_running_loop())

        def run() -> None:
            try:
                rootfs.export(c, sink)
            finally:
                if not sink.aborted:
                    sink.close()

        job = asyncio.ensure_future(asyncio.to_thread(run))
        if await sink.relay(job, response):
            await _end(request, response, job)
        return response

    # ---- cp: Docker's archive endpoints ------------------------------------------------------

    @routes.get(prefix + "/containers/{id}/archive")
    async def archive_get(request: web.Request) -> web.StreamResponse:
        """A container's file or directory as a tar (cli/containercp.py archive_out), its name
        and kind first in a header; host=1: the whole source, for the CLI to unpack as a local
        `cp` does, else as `cp CONTAINER:SRC -` writes it."""
        from shoal.cli import containercp
        from shoal.cli.remotecp import PATH_STAT
        from shoal.runtime.manager import ContainerManager

        ref, src = request.match_info["id"], request.query.get("path", "")
        loop = asyncio.get_running_loop()
        found: asyncio.Future[tuple[str, bool]] = loop.create_future()
        sink = _Pipe(loop)
        streaming: list[bool] = []  # the thread's own record: `found` is only set on the loop

        def opened(name: str, is_dir: bool) -> None:
            streaming.append(True)
            loop.call_soon_threadsafe(found.set_result, (name, is_dir))

        def run() -> None:
            try:
                c = ContainerManager().get(ref)
                containercp.archive_out(c, ref, src, follow_link=_flag(request, "follow"),
                                        for_host=_flag(request, "host"), opened=opened, out=sink)
            finally:
                if streaming and not sink.aborted:
                    sink.close()  # a failure mid-archive: the CLI sees it cut (unpack_layer says so)

        job = asyncio.ensure_future(asyncio.to_thread(run))
        await asyncio.wait([job, found], return_when=asyncio.FIRST_COMPLETED)
        if not found.done():
            await job  # not found (or no such container): its error, as an error status
        name, is_dir = found.result()
        stat_header = base64.b64encode(json.dumps({"name": name, "dir": is_dir}).encode()).decode()
        response = web.StreamResponse(headers={"Content-Type": "application/x-tar", PATH_STAT: stat_header})
        await response.prepare(request)
        if await sink.relay(job, response):
            await _end(request, response, job)
        return response

    @routes.put(prefix + "/containers/{id}/archive")
    async def archive_put(request: web.Request) -> web.Response:
        """A tar into a container: as `cp - CONTAINER:DEST` (no name), or a host source the CLI
        tarred under its name, copied in from an unpacked copy here as a local `cp SRC` does
        (cli/containercp.py copy_in: its rules, ownership and errors)."""
        import shutil
        import tempfile
        from pathlib import Path

        from shoal.cli import containercp
        from shoal.image.layers import unpack_layer
        from shoal.runtime.manager import ContainerManager

        ref, dest, name = request.match_info["id"], request.query.get("path", ""), request.query.get("name")
        if name is not None and (not name or "/" in name or name in (".", "..")):
            raise InvalidArgument(f"name: one path component is expected, not {name[:80]!r}")
        c = await asyncio.to_thread(ContainerManager().get, ref)
        work = Path(tempfile.mkdtemp(prefix="cp-", dir=_upload_dir()))
        try:
            upload = await _spool(request, work, "archive")

            def run() -> None:
                if name is None:
                    with open(upload, "rb") as tar_in:
                        containercp.copy_in(c, ref, dest, tar_in=tar_in)
                    return
                staging = work / "source"
                staging.mkdir()
                with open(upload, "rb") as tar_in:
                    unpack_layer(tar_in, staging, source="archive", hash=False)
                source = staging / name
                if not os.path.lexists(source):
                    raise InvalidArgument(f"the archive has no entry {name!r}")
                contents = _flag(request, "contents")
                containercp.copy_in(c, ref, dest, host_src=str(source) + ("/." if contents else ""),
                                    archive=_flag(request, "archive"))

            await asyncio.to_thread(run)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)
        return web.json_response({})

    # ---- system df, prunes --------------------------------------------------------------------

    @routes.get(prefix + "/node/df")
    async def disk_usage(request: web.Request) -> web.Response:
        from shoal.cli.system import disk_usage

        return web.json_response(await asyncio.to_thread(disk_usage, _flag(request, "verbose")))

    @routes.post(prefix + "/node/prune")
    async def prune(request: web.Request) -> web.Response:
        """One pruner of this node (cli/system.py prune_kind): containers, networks, volumes,
        images or builder, with prune_filters' filters."""
        from shoal.cli.system import prune_kind

        body = await read_body(request)
        filters = body.get("filters") or {}
        if not isinstance(filters, dict) or not all(
                isinstance(v, list) and all(isinstance(x, str) for x in v) for v in filters.values()):
            raise InvalidArgument("filters: an object of lists of strings is expected")
        keep = body.get("keep_storage")
        if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int)):
            raise InvalidArgument("keep_storage: an integer is expected")
        reclaimed, output = await asyncio.to_thread(prune_kind, _string(body, "kind"), bool(body.get("all")),
                                                    filters, keep)
        return web.json_response({"reclaimed": reclaimed, "output": output})

    # ---- networks --------------------------------------------------------------------------

    @routes.post(prefix + "/node/networks/{network}/connect")
    async def network_connect(request: web.Request) -> web.Response:
        from shoal.cli.netconnect import connect

        body = await read_body(request)
        await asyncio.to_thread(connect, request.match_info["network"], _string(body, "container"),
                                _strings(body, "aliases"), _string(body, "ip"))
        return web.json_response({})

    @routes.post(prefix + "/node/networks/{network}/disconnect")
    async def network_disconnect(request: web.Request) -> web.Response:
        from shoal.cli.netconnect import disconnect

        body = await read_body(request)
        await asyncio.to_thread(disconnect, request.match_info["network"], _string(body, "container"))
        return web.json_response({})

    app.add_routes(routes)
