"""A client that goes away while shoald writes its answer (a node killed -9 while the manager
streams its assignments) is no error of shoald's: nothing is logged at ERROR. It logged 'API GET
/swarm/dispatcher/assignments failed' with aiohttp's ClientConnectionResetError traceback."""

from __future__ import annotations

import asyncio
import logging
import socket

import pytest
from aiohttp import web

from shoal.api.server import _errors


async def _serve_and_vanish() -> None:
    wrote = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        wrote.set()
        while True:  # as the dispatcher's stream: written to until the peer is gone
            await response.write(b"x" * 65536)
            await asyncio.sleep(0.01)

    app = web.Application(middlewares=[_errors])
    app.router.add_get("/stream", stream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
    await asyncio.wait_for(wrote.wait(), 10)
    sock.recv(1024)
    # A reset, as a killed process's socket: SO_LINGER 0.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()
    await asyncio.sleep(0.5)
    await runner.cleanup()


def test_client_gone_mid_answer_is_not_an_error(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        asyncio.run(_serve_and_vanish())
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
