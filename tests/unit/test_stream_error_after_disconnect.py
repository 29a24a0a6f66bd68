"""A node's assignment or log-subscription stream ends with a line naming why, but a session
usually ends because its node went away: writing that line to the closed connection must end the
handler quietly, not with an ERROR traceback in the manager's log for every lost node."""

from __future__ import annotations

import asyncio

from aiohttp import web

from shoal.errors import ShoalError
from shoal.manager.dispatcher_http import _write_error


async def _serve_and_drop_client() -> list[str]:
    outcome: list[str] = []
    prepared = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        prepared.set()
        transport = request.transport
        for _ in range(200):  # until the client's close reaches us
            if transport is None or transport.is_closing():
                break
            await asyncio.sleep(0.01)
        try:
            await _write_error(response, ShoalError("the session ended"))
            outcome.append("ended quietly")
        except Exception as exc:  # noqa: BLE001 - what the test looks for
            outcome.append(f"raised {type(exc).__name__}")
        return response

    app = web.Application()
    app.router.add_get("/stream", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await asyncio.wait_for(prepared.wait(), 5)
        await reader.readuntil(b"\r\n\r\n")
        writer.close()
        await writer.wait_closed()
        for _ in range(300):
            if outcome:
                break
            await asyncio.sleep(0.01)
    finally:
        await runner.cleanup()
    return outcome


def test_the_last_line_to_a_node_that_went_away_ends_quietly() -> None:
    assert asyncio.run(_serve_and_drop_client()) == ["ended quietly"]
