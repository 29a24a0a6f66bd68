"""registry_client's HTTP transport over aiohttp's client, for the node daemons' pulls
(agent/imagefetch.py): every shoald has aiohttp loaded already (its API server, the cluster
session), while httpx, the CLI's transport, is 75 more modules and about 4 MiB of a worker's
memory once its first task's image is pulled.

RegistryClient is synchronous (registry.pull downloads layers from a thread pool), so this
transport runs its session on an event loop of its own, in one thread per client, and each call
waits for its coroutine there. It behaves as registry_client's httpx transport does: the same
timeouts (connect 15 s, each read `timeout`), redirects followed only when asked (Authorization
dropped when one leaves the origin, as httpx does), the TLS server name given (SNI and the
name checked), bodies streamed, never decoded unless read whole (iter_bytes)."""

from __future__ import annotations

import asyncio
import json
import ssl
import threading
import zlib
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

import aiohttp
from multidict import CIMultiDictProxy

from shoal.errors import ShoalError

T = TypeVar("T")

# A body read whole (a token, an error, a tag list, an upload's answer; manifests and blobs are
# streamed and bounded by their readers): a registry or token service sending more is refused
# rather than buffered (a hostile one could fill the node's memory).
MAX_BODY_BYTES = 16 << 20


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int = MAX_BODY_BYTES) -> bytes:
    length = resp.content_length
    if length is not None and length > limit:
        raise ShoalError(f"{resp.method} {resp.url}: the response body is over {limit >> 20} MiB")
    parts: list[bytes] = []
    got = 0
    while data := await resp.content.read(1 << 16):
        got += len(data)
        if got > limit:
            raise ShoalError(f"{resp.method} {resp.url}: the response body is over {limit >> 20} MiB")
        parts.append(data)
    return b"".join(parts)

# The errors of the transport itself (refused, DNS, TLS, timeouts, a connection cut short),
# registry_client's TransportError for this transport.
ERRORS: tuple[type[BaseException], ...] = (aiohttp.ClientError, asyncio.TimeoutError)


def is_timeout(exc: BaseException) -> bool:
    return isinstance(exc, asyncio.TimeoutError)


class Headers:
    """httpx.Headers' reading side: case-insensitive get, and get_list for repeated fields."""

    def __init__(self, headers: CIMultiDictProxy[str]) -> None:
        self._headers = headers

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._headers.get(name, default)

    def get_list(self, name: str) -> list[str]:
        return list(self._headers.getall(name, []))

    def __contains__(self, name: str) -> bool:
        return name in self._headers


class Response:
    """What registry_client reads of an httpx.Response, over an aiohttp one."""

    def __init__(self, transport: "AiohttpTransport", resp: aiohttp.ClientResponse, body: bytes | None) -> None:
        self._transport = transport
        self._resp = resp
        self._body = body
        self.status_code = resp.status
        self.reason_phrase = resp.reason or ""
        self.headers = Headers(resp.headers)
        self.url = str(resp.url)

    def read(self) -> bytes:
        if self._body is None:
            self._body = self._transport.call(self._read_all())
        return self._body

    async def _read_all(self) -> bytes:
        try:
            return await _read_bounded(self._resp)
        except BaseException:
            self._resp.close()  # its body left unread: the connection is not reused
            raise
        finally:
            self._resp.release()

    def json(self) -> Any:
        return json.loads(self.read())

    def iter_raw(self, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        """The body as sent (no content decoding), in chunks of chunk_size (the last shorter)."""
        if self._body is not None:
            for i in range(0, len(self._body), chunk_size):
                yield self._body[i:i + chunk_size]
            return
        while True:
            chunk = self._transport.call(self._read_up_to(chunk_size))
            if not chunk:
                return
            yield chunk

    def iter_bytes(self, chunk_size: int = 1 << 16) -> Iterator[bytes]:
        """The body decoded as httpx decodes it (gzip and deflate: what a registry sends)."""
        encoding = (self.headers.get("content-encoding") or "identity").strip().lower()
        if encoding in ("", "identity"):
            yield from self.iter_raw(chunk_size)
            return
        if encoding not in ("gzip", "deflate"):
            raise aiohttp.ClientPayloadError(f"unsupported content encoding {encoding!r}")
        decoder = zlib.decompressobj(zlib.MAX_WBITS | 16 if encoding == "gzip" else zlib.MAX_WBITS)
        try:
            for chunk in self.iter_raw(chunk_size):
                data = decoder.decompress(chunk)
                if data:
                    yield data
            tail = decoder.flush()
        except zlib.error as exc:
            raise aiohttp.ClientPayloadError(f"cannot decode the body: {exc}") from exc
        if tail:
            yield tail

    async def _read_up_to(self, n: int) -> bytes:
        parts: list[bytes] = []
        got = 0
        while got < n:
            data = await self._resp.content.read(n - got)
            if not data:
                break
            parts.append(data)
            got += len(data)
        return b"".join(parts)

    def close(self) -> None:
        """A body read to its end gives its connection back for the next request; one not read
        to its end closes it (as httpx's close does)."""
        if self._body is None:
            self._transport.call(self._close())

    async def _close(self) -> None:
        if self._resp.content.at_eof():
            self._resp.release()
        else:
            self._resp.close()


class AiohttpTransport:
    """One aiohttp session on a private event loop; `call` runs a coroutine there and waits."""

    def __init__(self, ssl_context: ssl.SSLContext, timeout: float, server_hostname: str | None,
                 headers: dict[str, str]) -> None:
        self._ssl = ssl_context
        self._server_hostname = server_hostname
        self.timeout = timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="registry-http", daemon=True)
        self._thread.start()
        self._session: aiohttp.ClientSession = self.call(self._open(headers))

    async def _open(self, headers: dict[str, str]) -> aiohttp.ClientSession:
        # The session must be made on the loop it runs on. 16 connections, as httpx's Limits.
        return aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=16, ssl=self._ssl),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=15.0, sock_read=self.timeout),
            headers=headers, auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar())

    def call(self, coro: Awaitable[T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()  # type: ignore[arg-type]

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None,
                content: bytes | Iterator[bytes] | None = None, params: Any = None, stream: bool = False,
                follow_redirects: bool = False, server_name: bool = True,
                verified_tls: ssl.SSLContext | None = None) -> Response:
        """One request; its body read whole unless `stream`. `server_name`: give the TLS server
        name this transport was made with (only to its own base, not to a token realm);
        `verified_tls`: another context for this request (an https token service of an http
        registry)."""
        return self.call(self._request(method, url, headers, content, params, stream, follow_redirects,
                                       server_name, verified_tls))

    async def _request(self, method: str, url: str, headers: dict[str, str] | None,
                       content: bytes | Iterator[bytes] | None, params: Any, stream: bool,
                       follow_redirects: bool, server_name: bool,
                       verified_tls: ssl.SSLContext | None) -> Response:
        data: Any = content
        if content is not None and not isinstance(content, bytes):
            source = content

            async def body() -> Any:  # a sync generator read on this loop: local file reads
                for piece in source:
                    yield piece

            data = body()
        kwargs: dict[str, Any] = {}
        if server_name and self._server_hostname:
            kwargs["server_hostname"] = self._server_hostname
        if verified_tls is not None:
            kwargs["ssl"] = verified_tls
        resp = await self._session.request(method, url, headers=headers, data=data, params=params,
                                           allow_redirects=follow_redirects, max_redirects=20, **kwargs)
        if stream:
            return Response(self, resp, None)
        try:
            body_bytes = await _read_bounded(resp)
        except BaseException:
            resp.close()
            raise
        finally:
            resp.release()
        return Response(self, resp, body_bytes)

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self.call(self._session.close())
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()
