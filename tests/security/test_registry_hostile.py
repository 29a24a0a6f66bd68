"""Issue 10 item 12: the registry client against hostile registries.

Loopback means the address, not the text: only `localhost`, 127.0.0.0/8 and ::1 written as IP
literals are spoken to in plain http (a name such as 127.example.com goes https; it is never
resolved, so no real host is contacted here). Credentials go only to the registry they are for:
an upload `Location` or a redirect naming another host, port or scheme gets no Authorization
header, as with docker's per-origin challenge manager. Real http servers on 127.0.0.1: a fake
registry, and a second server on another port that records every header it is sent.
"""

from __future__ import annotations

import base64
import hashlib
import io
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from shoal.image.auth import Credentials
from shoal.image.registry_client import (
    RegistryClient,
    RegistryError,
    base_url,
    credentials_allowed,
    is_insecure,
    same_origin,
)

USER, PASSWORD = "shoaluser", "hunter2-secret"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
BLOB = b"a blob that is pushed\n" * 10
DIGEST = "sha256:" + hashlib.sha256(BLOB).hexdigest()


class _Recorder:
    """Every request a server saw: (method, path, headers lower-cased)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.lock = threading.Lock()

    def add(self, handler: BaseHTTPRequestHandler) -> None:
        with self.lock:
            self.requests.append((handler.command, handler.path,
                                  {k.lower(): v for k, v in handler.headers.items()}))

    def authorizations(self) -> list[str]:
        return [h["authorization"] for _, _, h in self.requests if "authorization" in h]


@contextmanager
def _serve(respond) -> Iterator[tuple[str, _Recorder]]:
    """A threaded http server on 127.0.0.1; `respond(handler, recorder)` answers each request."""
    rec = _Recorder()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                self.rfile.read(length)
            elif self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                while True:
                    size = int(self.rfile.readline().strip() or b"0", 16)
                    self.rfile.read(size + 2)
                    if size == 0:
                        break
            rec.add(self)
            respond(self, rec)

        do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _any

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{httpd.server_address[1]}", rec
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _reply(h: BaseHTTPRequestHandler, status: int, headers: dict[str, str] | None = None,
           body: bytes = b"") -> None:
    h.send_response(status)
    for k, v in (headers or {}).items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    if h.command != "HEAD":
        h.wfile.write(body)


def _sink(h: BaseHTTPRequestHandler, rec: _Recorder) -> None:
    """The server an attacker names: accepts anything, keeps the headers."""
    if h.command == "PATCH":
        _reply(h, 202, {"Location": h.path.split("?")[0], "Range": "0-0"})
    elif h.command in ("GET", "HEAD"):
        _reply(h, 200, {"Content-Type": "application/octet-stream"}, BLOB)
    else:
        _reply(h, 201, {"Docker-Content-Digest": DIGEST})


def _basic_registry(location_for):
    """A Basic-auth registry; POST blobs/uploads/ answers with `location_for()`; GET of a blob
    redirects there too."""

    def respond(h: BaseHTTPRequestHandler, rec: _Recorder) -> None:
        if h.headers.get("Authorization") != BASIC:
            _reply(h, 401, {"WWW-Authenticate": 'Basic realm="fake"'})
        elif h.command == "POST" and h.path.endswith("/blobs/uploads/"):
            _reply(h, 202, {"Location": location_for()})
        elif h.command in ("GET", "HEAD") and "/blobs/" in h.path:
            _reply(h, 307, {"Location": location_for() + "/blob"})
        elif h.command == "GET" and "/manifests/" in h.path:
            _reply(h, 307, {"Location": location_for() + "/manifest"})
        elif h.command in ("PUT", "PATCH"):
            _sink(h, rec)
        else:
            _reply(h, 200, {"Content-Type": "application/json"}, b"{}")

    return respond


@pytest.fixture
def elsewhere() -> Iterator[tuple[str, _Recorder]]:
    with _serve(_sink) as server:
        yield server


@pytest.fixture(params=["httpx", "aiohttp"])
def transport(request: pytest.FixtureRequest) -> str:
    """A client's tests run over both transports: httpx (the CLI's) and aiohttp (a node daemon's
    pulls); where credentials go must not depend on which."""
    return str(request.param)


def _client(address: str, transport: str) -> RegistryClient:
    return RegistryClient(address, "team/app", ("pull", "push"), Credentials(USER, PASSWORD), timeout=10,
                          aiohttp=transport == "aiohttp")


# --- which hosts get plain http ---------------------------------------------------------------

@pytest.mark.parametrize("domain", ["127.example.com", "127.example.com:5000", "127.0.0.1.nip.io:5000",
                                    "localhost.example.com", "127.1:5000", "[::2]:5000", "10.0.0.1:5000"])
def test_a_name_that_looks_local_is_spoken_to_over_https(domain: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_INSECURE_REGISTRIES", raising=False)
    assert not is_insecure(domain)
    assert base_url(domain) == f"https://{domain}"
    client = RegistryClient(domain, "team/app")  # builds no connection
    try:
        assert client.base.startswith("https://")
    finally:
        client.close()


@pytest.mark.parametrize("domain", ["127.0.0.1:5000", "127.255.3.4", "localhost", "localhost:5000",
                                    "LocalHost:5000", "[::1]:5000", "[::1]", "[::ffff:127.0.0.1]:5000"])
def test_loopback_addresses_are_insecure_as_in_docker(domain: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_INSECURE_REGISTRIES", raising=False)
    assert is_insecure(domain)
    assert base_url(domain) == f"http://{domain}"


def test_insecure_registries_may_be_cidrs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_INSECURE_REGISTRIES", "10.9.0.0/16, reg.lan:5000")
    assert is_insecure("10.9.3.4:5000") and is_insecure("reg.lan:5000")
    assert not is_insecure("10.8.3.4:5000") and not is_insecure("reg.lan:5001")
    assert not is_insecure("10.9.example.com")


# --- where credentials go ----------------------------------------------------------------------

def test_upload_location_on_another_port_gets_no_credentials(elsewhere: tuple[str, _Recorder], transport: str) -> None:
    other, seen = elsewhere
    with _serve(_basic_registry(lambda: f"http://{other}/upload/1")) as (registry, _):
        with _client(registry, transport) as client:
            mounted, location = client.start_upload()
            assert not mounted and location == f"http://{other}/upload/1"
            client.upload_blob(location, DIGEST, io.BytesIO(BLOB), len(BLOB))
    assert [m for m, _, _ in seen.requests] == ["PUT"]
    assert seen.authorizations() == []


def test_chunked_upload_to_another_port_gets_no_credentials(elsewhere: tuple[str, _Recorder], transport: str) -> None:
    other, seen = elsewhere
    with _serve(_basic_registry(lambda: f"http://{other}/upload/2")) as (registry, _):
        with _client(registry, transport) as client:
            _, location = client.start_upload()
            client.upload_blob(location, DIGEST, io.BytesIO(BLOB), len(BLOB), chunk_threshold=16, chunk_size=64)
    assert {m for m, _, _ in seen.requests} == {"PATCH", "PUT"}
    assert seen.authorizations() == []


def test_origin_is_scheme_host_and_port() -> None:
    """Another scheme on the same host and port is another origin too (an https upload on the
    recorder could not show its headers, so this part is the decision function alone)."""
    base = "http://127.0.0.1:5000"
    assert same_origin("http://127.0.0.1:5000/v2/x/blobs/uploads/1?_state=a", base)
    assert same_origin("HTTP://127.0.0.1:5000/v2/", base)
    assert not same_origin("https://127.0.0.1:5000/v2/x/blobs/uploads/1", base)
    assert not same_origin("http://127.0.0.1:5001/v2/x/blobs/uploads/1", base)
    assert not same_origin("http://localhost:5000/v2/", base)
    assert not same_origin("http://127.0.0.1:5000@evil.example/v2/", base)
    assert same_origin("https://reg.example.com/v2/", "https://reg.example.com:443")


def test_same_registry_location_keeps_credentials(transport: str) -> None:
    """The other half: an upload on the registry itself (relative or absolute) is authorised."""
    box: dict[str, str] = {}
    with _serve(_basic_registry(lambda: box["loc"])) as (registry, rec):
        for loc in ("/v2/team/app/blobs/uploads/u1", f"http://{registry}/v2/team/app/blobs/uploads/u2"):
            box["loc"] = loc
            with _client(registry, transport) as client:
                _, location = client.start_upload()
                client.upload_blob(location, DIGEST, io.BytesIO(BLOB), len(BLOB))
    puts = [h for m, _, h in rec.requests if m == "PUT"]
    assert len(puts) == 2 and all(h.get("authorization") == BASIC for h in puts)


def test_redirects_to_another_port_get_no_credentials(elsewhere: tuple[str, _Recorder], transport: str) -> None:
    other, seen = elsewhere
    with _serve(_basic_registry(lambda: f"http://{other}/storage")) as (registry, _):
        with _client(registry, transport) as client:
            with client.open_blob(DIGEST) as resp:
                assert resp.read() == BLOB
            client.blob_size(DIGEST)
            client.get_manifest("v1")
    assert len(seen.requests) == 3
    assert seen.authorizations() == []


def test_bearer_token_stays_off_a_foreign_location(elsewhere: tuple[str, _Recorder], transport: str) -> None:
    """Token auth: the token service is the one the registry named (another port here, which is
    what Docker Hub does), it gets the password; the upload elsewhere gets neither."""
    other, seen = elsewhere

    def tokens(h: BaseHTTPRequestHandler, rec: _Recorder) -> None:
        ok = h.headers.get("Authorization") == BASIC
        _reply(h, 200 if ok else 401, {"Content-Type": "application/json"},
               b'{"token": "tok-123", "expires_in": 300}' if ok else b"{}")

    with _serve(tokens) as (token_server, token_rec):
        def registry_respond(h: BaseHTTPRequestHandler, rec: _Recorder) -> None:
            if h.headers.get("Authorization") != "Bearer tok-123":
                _reply(h, 401, {"WWW-Authenticate":
                                f'Bearer realm="http://{token_server}/token",service="fake"'})
            elif h.command == "POST":
                _reply(h, 202, {"Location": f"http://{other}/upload/4"})
            else:
                _reply(h, 200, {}, b"{}")

        with _serve(registry_respond) as (registry, _):
            with _client(registry, transport) as client:
                _, location = client.start_upload()
                client.upload_blob(location, DIGEST, io.BytesIO(BLOB), len(BLOB))
    assert token_rec.authorizations() == [BASIC]
    assert seen.requests and seen.authorizations() == []


def test_password_never_goes_in_clear_to_a_realm_that_is_not_local() -> None:
    """A registry may name its token service anywhere (Docker sends the password there), but not
    over plain http to a host that is not itself loopback or listed insecure."""
    assert credentials_allowed("https://auth.example.com/token", "https://reg.example.com")
    assert credentials_allowed("http://127.0.0.1:5001/token", "http://127.0.0.1:5000")
    assert credentials_allowed("http://reg.lan:5001/token", "http://reg.lan:5000")
    assert not credentials_allowed("http://auth.example.com/token", "https://reg.example.com")
    assert not credentials_allowed("http://127.example.com/token", "http://127.0.0.1:5000")
    assert not credentials_allowed("ftp://127.0.0.1/token", "http://127.0.0.1:5000")


def test_a_registry_naming_a_clear_text_realm_gets_an_error_not_the_password(
        elsewhere: tuple[str, _Recorder], transport: str) -> None:
    """The realm is 0.0.0.0 on the recorder's port: not a loopback address by the rule above, but
    Linux connects it to this host, so the recorder would see a password sent anyway."""
    other, seen = elsewhere
    realm = f"http://0.0.0.0:{other.rsplit(':', 1)[1]}/token"

    def registry_respond(h: BaseHTTPRequestHandler, rec: _Recorder) -> None:
        _reply(h, 401, {"WWW-Authenticate": f'Bearer realm="{realm}",service="x"'})

    with _serve(registry_respond) as (registry, _):
        with _client(registry, transport) as client:
            with pytest.raises(RegistryError, match="refusing to send credentials over plain http"):
                client.start_upload()
    assert seen.authorizations() == []


# --- bodies read whole are bounded --------------------------------------------------------------

def _huge(h: BaseHTTPRequestHandler, status: int, headers: dict[str, str], declared: bool) -> None:
    """64 MiB of JSON-ish bytes, with a Content-Length or chunked without one."""
    piece = b"x" * (1 << 20)
    h.send_response(status)
    for k, v in headers.items():
        h.send_header(k, v)
    if declared:
        h.send_header("Content-Length", str(64 * len(piece)))
    else:
        h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    try:
        for _ in range(64):
            h.wfile.write(piece if declared else b"%x\r\n%s\r\n" % (len(piece), piece))
        if not declared:
            h.wfile.write(b"0\r\n\r\n")
    except OSError:
        pass  # the client gave up reading: what is tested


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
@pytest.mark.parametrize("where", ["token", "error"])
def test_a_huge_token_or_error_body_is_refused_not_buffered(transport: str, where: str, declared: bool) -> None:
    """A token service (or a registry's error answer) sending 64 MiB: the client stops at 16 MiB
    with a one-line error instead of holding it all (a node daemon's memory)."""
    def tokens(h: BaseHTTPRequestHandler, rec: _Recorder) -> None:
        _huge(h, 200, {"Content-Type": "application/json"}, declared)

    with _serve(tokens) as (token_server, _):
        def registry_respond(h: BaseHTTPRequestHandler, rec: _Recorder) -> None:
            if where == "token" and h.headers.get("Authorization") != "Bearer tok-123":
                _reply(h, 401, {"WWW-Authenticate": f'Bearer realm="http://{token_server}/token",service="fake"'})
            else:
                _huge(h, 500, {"Content-Type": "application/json"}, declared)

        with _serve(registry_respond) as (registry, _):
            with _client(registry, transport) as client:
                with pytest.raises(Exception) as caught:
                    client.list_tags()
    message = str(caught.value)
    assert "the response body is over 16 MiB" in message and "\n" not in message, message
