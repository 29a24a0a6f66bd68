"""Streams end when shoald stops.

`events`, `logs -f`, `service logs -f`, a build's output, an archive being saved and a
node's assignment and log-subscription streams are responses that only end when their client
goes away. aiohttp's graceful stop waits for every
handler (60 s, then again for the connection): a `shoal events` left open in a terminal made
`systemctl stop shoald` take two minutes. A response that streams is remembered once it is
prepared and cancelled when the application shuts down; a plain request (a deploy half way
through its transaction) is still waited for."""

from __future__ import annotations

import asyncio

from aiohttp import web

STREAMS_KEY = web.AppKey("shoal_open_streams", set)


async def _end(app: web.Application) -> None:
    for task in list(app[STREAMS_KEY]):
        task.cancel()


def end_streams_on_shutdown(app: web.Application) -> None:
    streams: set[asyncio.Task[object]] = set()
    app[STREAMS_KEY] = streams

    # the signal also fires for a sub-application's requests, whose request.app is the sub-app
    async def remember(_request: web.Request, response: web.StreamResponse) -> None:
        if isinstance(response, web.Response):  # a body known in full: it ends by itself
            return
        task = asyncio.current_task()
        if task is not None:
            streams.add(task)
            task.add_done_callback(streams.discard)

    app.on_response_prepare.append(remember)
    app.on_shutdown.append(_end)
