"""Interactive sessions for a remote CLI (`run -i/-t`, `attach`, `exec -i/-t` on a tcp://
context): a WebSocket per session, docker's hijacked connection in a form aiohttp serves.
Binary messages carry the streams (to the client: docker's stdcopy frames without a terminal,
raw bytes with one; from it: stdin), text messages JSON control (from the client
{"resize": [rows, cols]}, {"close_stdin": true}; to it, last, {"exit": code} or {"error":
message, "exit_code": n}). cli/hijack.py is the other end.

GET /containers/{id}/attach/ws?stdin=1&start=1&h=&w=: conmon's attach socket bridged to the
WebSocket; with start=1 (a foreground `run`) the socket is connected before the process
starts, so no output is missed, and --rm is done here after the exit is read.
GET /containers/{id}/exec/ws?config={cmd, env, user, workdir, tty, stdin}&h=&w=: the runtime's
exec with pipes, or a terminal of its own whose size the client sets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType, web

from shoal.errors import InvalidArgument, ShoalError


def exec_request(config: Any) -> tuple[list[str], list[str], str, str]:
    """An exec request's command, environment, user and working directory, checked: the same
    for the WebSocket session here and the node API's detached or plain exec."""
    try:
        cmd, env = config["cmd"], config.get("env") or []
        user, workdir = config.get("user") or "", config.get("workdir") or ""
        if not (isinstance(cmd, list) and cmd and all(isinstance(a, str) for a in cmd)
                and isinstance(env, list) and all(isinstance(e, str) for e in env)
                and isinstance(user, str) and isinstance(workdir, str)):
            raise TypeError("cmd: a list of strings; env: a list of K=V; user, workdir: strings")
    except (TypeError, KeyError, AttributeError) as exc:
        raise InvalidArgument(f"exec: {exc}") from None
    return cmd, env, user, workdir


def _frame(stream: int, data: bytes) -> bytes:
    """docker's stdcopy header: stream (1 stdout, 2 stderr), three zero bytes, size BE32."""
    return struct.pack(">BxxxI", stream, len(data)) + data


def _size(request: web.Request) -> tuple[int, int]:
    try:
        return int(request.query.get("h", "0")), int(request.query.get("w", "0"))
    except ValueError:
        raise InvalidArgument("h and w: the terminal's rows and columns, integers") from None


async def _controls(ws: web.WebSocketResponse, stdin: Callable[[bytes], Any], close_stdin: Callable[[], Any],
                    resize: Callable[[int, int], Any]) -> None:
    """The client's messages until it leaves (a detach, or the session's end)."""
    async for msg in ws:
        if msg.type == WSMsgType.BINARY:
            await stdin(msg.data)
        elif msg.type == WSMsgType.TEXT:
            try:
                control = json.loads(msg.data)
            except ValueError:
                continue
            if control.get("close_stdin"):
                await close_stdin()
            rows_cols = control.get("resize")
            if isinstance(rows_cols, list) and len(rows_cols) == 2 and all(isinstance(v, int) for v in rows_cols):
                await resize(*rows_cols)


async def _end(ws: web.WebSocketResponse, result: dict[str, Any]) -> None:
    with contextlib.suppress(ConnectionResetError, RuntimeError):
        await ws.send_str(json.dumps(result))
        await ws.close()


class _Waited:
    """A subprocess.Popen with asyncio.subprocess.Process's returncode, wait() and kill()."""

    def __init__(self, proc: Any) -> None:
        self._proc = proc

    @property
    def returncode(self) -> int | None:
        return self._proc.poll()

    async def wait(self) -> int:
        return int(await asyncio.to_thread(self._proc.wait))

    def kill(self) -> None:
        self._proc.kill()


def add_routes(app: web.Application, prefix: str, before_start: Callable[[asyncio.AbstractEventLoop], Any]) -> None:
    """`before_start(loop)` gives the runtime's hook a started container needs here (the
    embedded resolver on a user-defined network: api/nodeapi.py's)."""
    routes = web.RouteTableDef()

    def containers() -> Any:
        from shoal.runtime.manager import ContainerManager

        return ContainerManager()

    @routes.get(prefix + "/containers/{id}/attach/ws")
    async def attach_ws(request: web.Request) -> web.StreamResponse:
        from shoal.runtime import attach

        loop = asyncio.get_running_loop()
        mgr = containers()
        ref = request.match_info["id"]
        start = request.query.get("start") == "1"
        want_stdin = request.query.get("stdin") == "1"
        rows, cols = _size(request)
        c = await asyncio.to_thread(mgr.get, ref)
        if not start:
            await asyncio.to_thread(attach.check_attachable, c, ref)
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        lock = mgr.attached(c) if start else contextlib.nullcontext()
        await asyncio.to_thread(lock.__enter__)  # a foreground run: its --rm is done here
        try:
            held: list[socket.socket] = []
            if start:
                hook = before_start(loop)

                def connect(created: Any) -> None:
                    held.append(attach.open_socket(created))
                    attach.resize(created, rows, cols)  # before the process runs: it may read it at once
                    hook(created)

                try:
                    await asyncio.to_thread(mgr.start, c.id, connect)
                    if not held:  # it was running already (`start -a` of a running container)
                        held.append(await asyncio.to_thread(attach.open_socket, c))
                except ShoalError as exc:
                    for s in held:
                        s.close()
                    if c.spec.auto_remove:
                        await asyncio.to_thread(mgr.remove, c.id, True)
                    await _end(ws, {"error": str(exc), "exit_code": 125 if exc.exit_code == 1 else exc.exit_code})
                    return ws
                sock = held[0]
            else:
                sock = await asyncio.to_thread(attach.open_socket, c)
            current = await asyncio.to_thread(mgr.get, c.id)
            tty = current.spec.tty
            await asyncio.to_thread(attach.resize, current, rows, cols)
            sock.setblocking(False)

            async def pump_out() -> None:
                while data := await loop.sock_recv(sock, attach.MAX_MESSAGE + 1):
                    payload = data[1:]
                    await ws.send_bytes(payload if tty else _frame(2 if data[0] == attach.STDERR else 1, payload))

            async def stdin(data: bytes) -> None:
                if want_stdin:
                    for at in range(0, len(data), attach.MAX_MESSAGE):
                        await loop.sock_sendall(sock, data[at:at + attach.MAX_MESSAGE])

            async def close_stdin() -> None:
                if want_stdin:
                    attach.close_stdin(sock)

            async def resize(r: int, w: int) -> None:
                await asyncio.to_thread(attach.resize, current, r, w)

            out = asyncio.ensure_future(pump_out())
            inp = asyncio.ensure_future(_controls(ws, stdin, close_stdin, resize))
            try:
                done, _ = await asyncio.wait({out, inp}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                inp.cancel()
                out.cancel()
                await asyncio.gather(out, inp, return_exceptions=True)
                sock.close()
            if out not in done or ws.closed:
                return ws  # the client left (detached): the container runs on
            code = await asyncio.to_thread(mgr.wait, c.id)
            if start and c.spec.auto_remove:
                await asyncio.to_thread(lambda: mgr.remove(c.id, force=True, volumes_too=True))
            await _end(ws, {"exit": code})
        finally:
            await asyncio.to_thread(lock.__exit__, None, None, None)
        return ws

    @routes.get(prefix + "/containers/{id}/exec/ws")
    async def exec_ws(request: web.Request) -> web.StreamResponse:
        import subprocess

        try:
            config = json.loads(request.query.get("config", ""))
            tty, want_stdin = bool(config.get("tty")), bool(config.get("stdin"))
        except (ValueError, AttributeError) as exc:
            raise InvalidArgument(f"exec: {exc}") from None
        cmd, env, user, workdir = exec_request(config)
        rows, cols = _size(request)
        try:
            argv = await asyncio.to_thread(lambda: containers().exec_argv(
                request.match_info["id"], cmd, tty=tty, env=env, user=user, workdir=workdir))
        except ShoalError as exc:
            if exc.exit_code not in (126, 127):
                raise
            return web.json_response({"message": str(exc), "exit_code": exc.exit_code}, status=400)
        loop = asyncio.get_running_loop()
        ws = web.WebSocketResponse(max_msg_size=1 << 20)
        await ws.prepare(request)
        master = -1
        if tty:
            # The runtime's exec with a console socket: the master end of the terminal it made
            # is the session, sized as the client's terminal, resized as it is.
            from shoal.runtime import attach

            try:
                runtime, master = await asyncio.to_thread(attach.exec_with_console, argv, rows, cols,
                                                          subprocess.DEVNULL)
            except ShoalError as exc:
                await _end(ws, {"error": str(exc), "exit_code": 126})
                return ws
            proc: Any = _Waited(runtime)
            os.set_blocking(master, False)
            reader = asyncio.StreamReader()
            transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader),
                                                        os.fdopen(master, "rb", buffering=0, closefd=False))
            streams = [(reader, 1)]

            async def stdin(data: bytes) -> None:
                if want_stdin:
                    await loop.run_in_executor(None, os.write, master, data)

            async def close_stdin() -> None:
                if want_stdin:
                    await stdin(b"\x04")  # end of input on a terminal

            async def resize(r: int, w: int) -> None:
                attach.set_size(master, r, w)
        else:
            transport = None
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=subprocess.PIPE if want_stdin else subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            assert proc.stdout is not None and proc.stderr is not None
            streams = [(proc.stdout, 1), (proc.stderr, 2)]

            async def stdin(data: bytes) -> None:
                if proc.stdin is not None and not proc.stdin.is_closing():
                    proc.stdin.write(data)
                    with contextlib.suppress(ConnectionResetError, BrokenPipeError):
                        await proc.stdin.drain()

            async def close_stdin() -> None:
                if proc.stdin is not None:
                    proc.stdin.close()

            async def resize(r: int, w: int) -> None:
                pass

        async def pump(stream: asyncio.StreamReader, number: int) -> None:
            with contextlib.suppress(OSError):  # a terminal's master reads EIO once the process is gone
                while data := await stream.read(65536):
                    await ws.send_bytes(data if tty else _frame(number, data))

        pumps = asyncio.gather(*(pump(s, n) for s, n in streams))
        inp = asyncio.ensure_future(_controls(ws, stdin, close_stdin, resize))
        try:
            done, _ = await asyncio.wait({pumps, inp}, return_when=asyncio.FIRST_COMPLETED)
            if pumps in done:
                code = await proc.wait()
                await _end(ws, {"exit": code})
        finally:
            inp.cancel()
            if proc.returncode is None:  # the client left: nobody reads this process any more
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            pumps.cancel()
            await asyncio.gather(pumps, inp, return_exceptions=True)
            if transport is not None:
                transport.close()
            if master >= 0:
                os.close(master)
        return ws

    app.add_routes(routes)
