"""The registry HTTP API v2 (OCI distribution spec) for one repository, with its authentication.

One RegistryClient talks to one repository of one registry. It pings `/v2/` once to learn the
registry's challenge (none, Basic, or Bearer with a token service), then sends every request with
the right Authorization header, fetching and caching a token per scope set as docker/distribution's
token handler does. Errors are turned into the messages Docker prints.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import ipaddress
import json
import os
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, BinaryIO, Callable
from urllib.parse import quote, urljoin, urlsplit

from shoal.errors import ShoalError
from shoal.image.mediatypes import DOCKER_CONFIG, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST, OCI_INDEX, OCI_MANIFEST
from shoal.image.auth import DOCKER_HUB_DOMAIN, Challenge, Credentials, parse_challenges, scope_for
# Also what the manager's distribution API answers with (it serves, never pulls): there,
# without this module's httpx.
from shoal.image.distspec import DOCKER_SCHEMA1_SIGNED, ERROR_CODE_MESSAGES, manifest_media_type  # noqa: F401

# Media types only the registry protocol needs (the rest: shoal.image.mediatypes).
DOCKER_LIST = DOCKER_MANIFEST_LIST
DOCKER_SCHEMA1 = "application/vnd.docker.distribution.manifest.v1+json"
INDEX_TYPES = (OCI_INDEX, DOCKER_LIST)
IMAGE_MANIFEST_TYPES = (OCI_MANIFEST, DOCKER_MANIFEST)
ACCEPT_MANIFESTS = ", ".join((OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST))

# A manifest is small; refuse anything bigger than containerd's limit rather than buffer it.
MAX_MANIFEST_BYTES = 4 << 20
# Blobs above this are sent as a series of PATCH chunks, below it as one PUT.
CHUNKED_UPLOAD_THRESHOLD = 64 << 20
UPLOAD_CHUNK_BYTES = 32 << 20
READ_CHUNK = 1 << 20
# The token spec: a token without expires_in lasts 60 s; renew one this close to its end.
DEFAULT_TOKEN_LIFETIME = 60.0
TOKEN_RENEW_MARGIN = 15.0

if TYPE_CHECKING:
    import httpx

    from shoal.image.aiohttp_transport import AiohttpTransport, Response as AiohttpResponse

    Response = httpx.Response | AiohttpResponse


class RegistryError(ShoalError):
    """An error response of the registry: `code` as in the distribution spec, or None."""

    def __init__(self, text: str, status: int = 0, code: str | None = None, message: str = ""):
        super().__init__(text)
        self.status = status
        self.code = code
        self.message = message


class RegistryUnreachable(ShoalError):
    """The registry did not answer at the transport level (refused, DNS, TLS, timeout)."""


def _split_host(domain: str) -> str:
    """The host of `host`, `host:port`, `[v6]` or `[v6]:port`, brackets removed, lower case."""
    if domain.startswith("["):
        return domain[1:].split("]", 1)[0].lower()
    return domain.rsplit(":", 1)[0].lower() if domain.count(":") == 1 else domain.lower()


def _ip_literal(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address `host` spells, IPv4-mapped IPv6 unwrapped; None for a name."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def is_insecure(domain: str) -> bool:
    """Plain http for loopback registries and SHOAL_INSECURE_REGISTRIES, as Docker's default
    (127.0.0.0/8 and ::1/128 insecure). Loopback means the address: `localhost`, or an IP literal
    in those ranges. Docker also resolves names to test them against the ranges; shoal does not,
    because the name could resolve elsewhere by the time the connection is made (and
    127.example.com is anybody's). Entries of SHOAL_INSECURE_REGISTRIES are host, host:port or
    CIDRs (matched against IP literals only, for the same reason)."""
    host = _split_host(domain)
    ip = _ip_literal(host)
    if host == "localhost" or (ip is not None and ip.is_loopback):
        return True
    for entry in (d.strip() for d in os.environ.get("SHOAL_INSECURE_REGISTRIES", "").split(",")):
        if not entry:
            continue
        if "/" in entry:
            try:
                net = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            if ip is not None and ip.version == net.version and ip in net:
                return True
        elif entry.lower() in (domain.lower(), host):
            return True
    return False


def _origin(url: str) -> tuple[str, str, int | None]:
    u = urlsplit(str(url))
    scheme = u.scheme.lower()
    port = u.port or {"http": 80, "https": 443}.get(scheme)
    return scheme, (u.hostname or "").lower(), port


def same_origin(url: str, base: str) -> bool:
    """Same scheme, host and port: the unit docker's challenge manager keeps credentials per."""
    return _origin(url) == _origin(base)


def credentials_allowed(realm: str, base: str) -> bool:
    """May the password go to this token realm? Docker sends it to whatever realm the registry
    names (Docker Hub's is another host); shoal does the same over https, but over plain http only
    to a realm on the registry's own (plain http) host or one that is itself insecure."""
    scheme, host, port = _origin(realm)
    if scheme == "https":
        return True
    if scheme != "http":
        return False
    base_scheme, base_host, _ = _origin(base)
    if base_scheme == "http" and host == base_host:
        return True
    return is_insecure(f"[{host}]:{port}" if ":" in host else f"{host}:{port}")


def base_url(domain: str) -> str:
    if domain == DOCKER_HUB_DOMAIN:
        return "https://registry-1.docker.io"
    return f"{'http' if is_insecure(domain) else 'https'}://{domain}"


@functools.lru_cache(maxsize=2)
def _tls_context(verified: bool) -> ssl.SSLContext:
    """The system trust store (so locally added CAs count) for https registries. Loading it
    costs ~0.2 s, so a plain-http registry gets a bare context it never uses."""
    if verified:
        return ssl.create_default_context()
    return ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _transport_error(method: str, url: str, exc: BaseException, timeout: bool) -> RegistryUnreachable:
    """Word a transport failure as Go's net/http does in Docker's messages (`timeout`: the
    transport says the failure was one of its timeouts)."""
    text = str(exc)
    host = urlsplit(url).netloc
    cause: BaseException | None = exc  # aiohttp's connection errors are OSErrors themselves
    errnos = set()
    while cause is not None:
        if isinstance(cause, OSError) and cause.errno is not None:
            errnos.add(cause.errno)
        cause = cause.__cause__ or cause.__context__
    if errno.ECONNREFUSED in errnos or "Connection refused" in text:
        detail = f"dial tcp {host}: connect: connection refused"
    elif "Name or service not known" in text or "nodename nor servname" in text or "-2]" in text or "-3]" in text:
        detail = f"dial tcp: lookup {host.rsplit(':', 1)[0]}: no such host"
    elif timeout:
        detail = "net/http: request canceled (Client.Timeout exceeded while awaiting headers)"
    elif "WRONG_VERSION_NUMBER" in text or "wrong version number" in text:
        detail = "http: server gave HTTP response to HTTPS client"
    else:
        detail = text or type(exc).__name__
    return RegistryUnreachable(f'{method.title()} "{url}": {detail}')


def error_from_response(resp: Response) -> RegistryError:
    """The first error of the spec's `{"errors": [...]}` body, as `code text: message`."""
    status = resp.status_code
    try:
        body = json.loads(resp.read() or b"{}")
        errors = body.get("errors") if isinstance(body, dict) else None
    except Exception:  # noqa: BLE001 - a body not JSON, or cut short (either transport's errors)
        errors = None
    if errors and isinstance(errors[0], dict):
        first = errors[0]
        code = str(first.get("code") or "UNKNOWN").upper()
        # errcode.Error.Error(): the code lower-cased with spaces, then the message (the
        # descriptor's when the registry sent none).
        message = str(first.get("message") or ERROR_CODE_MESSAGES.get(code, ""))
        code_text = code.lower().replace("_", " ")
        text = f"{code_text}: {message}" if message else code_text
        return RegistryError(text, status, code, message)
    if status == 401:
        return RegistryError("unauthorized: authentication required", status, "UNAUTHORIZED", "authentication required")
    if status == 404:
        return RegistryError(f"received unexpected HTTP status: {status} Not Found", status)
    return RegistryError(f"received unexpected HTTP status: {status} {resp.reason_phrase}", status)


def _add_digest(location: str, digest: str) -> str:
    """The upload location with the spec's `digest` query parameter added (an upload session's
    own parameters, _state and the like, kept)."""
    u = urlsplit(location)
    query = f"{u.query}&" if u.query else ""
    return u._replace(query=f"{query}digest={quote(digest, safe='')}").geturl()


@dataclass
class FetchedManifest:
    body: bytes
    media_type: str
    digest: str

    def json(self) -> dict:
        try:
            data = json.loads(self.body)
        except ValueError as exc:
            raise ShoalError(f"invalid manifest {self.digest}: {exc}") from exc
        if not isinstance(data, dict):
            raise ShoalError(f"invalid manifest {self.digest}: not a JSON object")
        return data


# A body read whole (a token, an error, a tag list, an upload's answer; manifests and blobs are
# streamed and bounded by their readers): a registry or token service sending more is refused
# rather than buffered (aiohttp_transport.py bounds a node daemon's the same).
MAX_BODY_BYTES = 16 << 20


def _read_bounded(resp: "httpx.Response", method: str, url: str, limit: int = MAX_BODY_BYTES) -> None:
    """Read the streamed response's body into it (httpx's read, with a bound)."""
    too_big = ShoalError(f"{method} {url}: the response body is over {limit >> 20} MiB")
    try:
        if int(resp.headers.get("content-length") or 0) > limit:
            raise too_big
        parts: list[bytes] = []
        got = 0
        for chunk in resp.iter_bytes():
            got += len(chunk)
            if got > limit:
                raise too_big
            parts.append(chunk)
        resp._content = b"".join(parts)  # what httpx's own read() sets: .content and .json() use it
    except ValueError:
        resp.close()
        raise too_big from None
    except BaseException:
        resp.close()
        raise
    resp.close()


class HttpxTransport:
    """httpx's client: the CLI's pulls, pushes and logins (a node daemon's pulls use
    aiohttp_transport, which does the same over the aiohttp every shoald has loaded)."""

    def __init__(self, ssl_context: ssl.SSLContext, timeout: float, server_hostname: str | None,
                 headers: dict[str, str]) -> None:
        import httpx

        self._httpx = httpx
        self.errors: tuple[type[BaseException], ...] = (httpx.TransportError,)
        # Sent with the requests to the client's base: httpcore uses it as the TLS server name
        # (SNI and the name the certificate is checked against) instead of the URL's host.
        self._extensions = {"sni_hostname": server_hostname} if server_hostname else {}
        self.http = httpx.Client(verify=ssl_context, timeout=httpx.Timeout(timeout, connect=15.0),
                                 limits=httpx.Limits(max_connections=16, max_keepalive_connections=16),
                                 headers=headers)

    def is_timeout(self, exc: BaseException) -> bool:
        return isinstance(exc, self._httpx.TimeoutException)

    def request(self, method: str, url: str, *, headers: dict[str, str] | None = None,
                content: bytes | Iterator[bytes] | None = None, params: Any = None, stream: bool = False,
                follow_redirects: bool = False, server_name: bool = True,
                verified_tls: ssl.SSLContext | None = None) -> "httpx.Response":
        if verified_tls is not None:
            with self._httpx.Client(verify=verified_tls, timeout=self.http.timeout) as tls:
                resp = tls.send(tls.build_request(method, url, params=params, headers=headers, content=content),
                                stream=True)
                _read_bounded(resp, method, url)
                return resp
        request = self.http.build_request(method, url, headers=headers, content=content, params=params,
                                          extensions=self._extensions if server_name else {})
        resp = self.http.send(request, stream=True, follow_redirects=follow_redirects)
        if not stream:
            _read_bounded(resp, method, url)
        return resp

    def close(self) -> None:
        self.http.close()


class RegistryClient:
    """HTTP API v2 calls for `repository` (a path such as library/web) on `domain`."""

    def __init__(self, domain: str, repository: str, actions: tuple[str, ...] = ("pull",),
                 credentials: Credentials | None = None, timeout: float = 60.0, *,
                 base: str | None = None, ssl_context: ssl.SSLContext | None = None,
                 server_hostname: str | None = None, aiohttp: bool = False):
        """`base` (https://host:port) replaces the registry's own address, as when a node pulls
        from its manager's image store; `ssl_context` then carries the trust and the client
        certificate, and `server_hostname` the name the server's certificate must have when it
        is not the host connected to (a manager's certificate names `swarm-manager`).
        `aiohttp`: over aiohttp's client instead of httpx (a node daemon's pulls, see
        aiohttp_transport)."""
        self.domain = domain
        self.repository = repository
        self.actions = actions
        self.credentials = credentials
        self.base = base.rstrip("/") if base else base_url(domain)
        verify = ssl_context if ssl_context is not None else _tls_context(self.base.startswith("https:"))
        headers = {"User-Agent": "shoal/0.1 (docker-compatible)"}
        self.http: HttpxTransport | AiohttpTransport
        if aiohttp:
            from shoal.image import aiohttp_transport

            self.http = aiohttp_transport.AiohttpTransport(verify, timeout, server_hostname, headers)
            self._errors, self._is_timeout = aiohttp_transport.ERRORS, aiohttp_transport.is_timeout
        else:
            self.http = HttpxTransport(verify, timeout, server_hostname, headers)
            self._errors, self._is_timeout = self.http.errors, self.http.is_timeout
        self._lock = threading.Lock()
        self._challenge: Challenge | None = None
        self._pinged = False
        self._tokens: dict[tuple[str, ...], tuple[str, float]] = {}   # scopes -> (token, expiry)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "RegistryClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- authentication -------------------------------------------------------------------
    def url(self, path: str) -> str:
        return f"{self.base}/v2/{self.repository}/{path}"

    def ping(self) -> None:
        """GET /v2/: learn the auth challenge (distribution's challenge manager does the same)."""
        if self._pinged:
            return
        url = f"{self.base}/v2/"
        try:
            resp = self.http.request("GET", url)
        except self._errors as exc:
            raise self._unreachable("GET", url, exc) from exc
        if resp.status_code == 401:
            self._challenge = self._pick_challenge(resp)
        elif resp.status_code >= 400 and resp.status_code != 404:
            raise error_from_response(resp)
        self._pinged = True

    @staticmethod
    def _pick_challenge(resp: Response) -> Challenge | None:
        challenges = parse_challenges(resp.headers.get_list("www-authenticate"))
        for scheme in ("bearer", "basic"):
            for ch in challenges:
                if ch.scheme == scheme:
                    return ch
        return None

    def default_scopes(self) -> tuple[str, ...]:
        return (scope_for(self.repository, self.actions),)

    def _authorization(self, scopes: tuple[str, ...]) -> str | None:
        ch = self._challenge
        if ch is None:
            return None
        if ch.scheme == "basic":
            if self.credentials is None:
                raise RegistryError("no basic auth credentials", 401, "UNAUTHORIZED")
            return self.credentials.basic_header()
        if ch.scheme == "bearer":
            key = tuple(sorted(scopes))
            with self._lock:
                cached = self._tokens.get(key)
                # Renew a little before expiry so a long upload does not start with a dying token.
                if cached is None or cached[1] - time.monotonic() < TOKEN_RENEW_MARGIN:
                    token, lifetime = self._fetch_token_with_lifetime(ch, key)
                    cached = (token, time.monotonic() + lifetime)
                    self._tokens[key] = cached
            return f"Bearer {cached[0]}"
        return None

    def fetch_token(self, ch: Challenge, scopes: Iterable[str], login: bool = False) -> str:
        return self._fetch_token_with_lifetime(ch, scopes, login)[0]

    def _fetch_token_with_lifetime(self, ch: Challenge, scopes: Iterable[str],
                                   login: bool = False) -> tuple[str, float]:
        """Ask the challenge's realm for a token (Basic auth to the token service when we have
        credentials), as in distribution's token spec."""
        realm = ch.params.get("realm")
        if not realm:
            raise RegistryError("bearer challenge without a realm", 401)
        params: list[tuple[str, str]] = []
        if ch.params.get("service"):
            params.append(("service", ch.params["service"]))
        for scope in scopes:
            params.append(("scope", scope))
        headers = {}
        if self.credentials is not None:
            if not credentials_allowed(realm, self.base):
                raise RegistryError(f'Get "{realm}": refusing to send credentials over plain http '
                                    f"to a token service that is not local", 401)
            params.append(("account", self.credentials.username))
            headers["Authorization"] = self.credentials.basic_header()
        if login:
            params += [("client_id", "shoal"), ("offline_token", "true")]
        try:
            # An http registry with an https token service: that one needs real verification.
            verified = _tls_context(True) if realm.startswith("https:") and not self.base.startswith("https:") else None
            resp = self.http.request("GET", realm, params=params, headers=headers, server_name=False,
                                     verified_tls=verified)
        except self._errors as exc:
            raise self._unreachable("GET", realm, exc) from exc
        if resp.status_code in (401, 403):
            err = error_from_response(resp)
            detail = err.message if err.code else "incorrect username or password"
            raise RegistryError(f'Get "{realm}": unauthorized: {detail}', resp.status_code, "UNAUTHORIZED", detail)
        if resp.status_code != 200:
            raise RegistryError(f'Get "{realm}": token service answered {resp.status_code}', resp.status_code)
        try:
            data = resp.json()
        except ValueError as exc:
            raise RegistryError(f'Get "{realm}": invalid token response: {exc}') from exc
        token = data.get("token") or data.get("access_token")
        if not token:
            raise RegistryError(f'Get "{realm}": the token service returned no token')
        try:
            lifetime = float(data.get("expires_in") or DEFAULT_TOKEN_LIFETIME)
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME
        return str(token), max(lifetime, DEFAULT_TOKEN_LIFETIME)

    def login(self) -> None:
        """Check the credentials against /v2/ as `docker login` does; raise with Docker's words."""
        url = f"{self.base}/v2/"
        try:
            resp = self.http.request("GET", url, server_name=False)
        except self._errors as exc:
            raise self._unreachable("GET", url, exc) from exc
        if resp.status_code == 200:
            return
        if resp.status_code != 401:
            raise RegistryError(f"login attempt to {url} failed with status: {resp.status_code} {resp.reason_phrase}",
                                resp.status_code)
        ch = self._pick_challenge(resp)
        if ch is not None and ch.scheme == "bearer":
            self.fetch_token(ch, (), login=True)
            return
        if self.credentials is None:
            raise RegistryError(f"login attempt to {url} failed with status: 401 Unauthorized", 401)
        try:
            resp = self.http.request("GET", url, headers={"Authorization": self.credentials.basic_header()},
                                     server_name=False)
        except self._errors as exc:
            raise self._unreachable("GET", url, exc) from exc
        if resp.status_code != 200:
            raise RegistryError(f"login attempt to {url} failed with status: {resp.status_code} {resp.reason_phrase}",
                                resp.status_code)

    # --- requests --------------------------------------------------------------------------
    def send(self, method: str, url: str, *, scopes: tuple[str, ...] | None = None,
             headers: dict[str, str] | None = None, content: bytes | Iterator[bytes] | None = None,
             params: dict[str, str] | None = None, stream: bool = False,
             follow_redirects: bool = False) -> Response:
        """One authenticated request. A 401 on a repeatable request re-reads the challenge and
        retries once (a token may have expired or the registry may want a wider scope)."""
        self.ping()
        scopes = scopes or self.default_scopes()
        # Credentials are for this registry only: an upload Location on another host, port or
        # scheme is sent without them, as docker's per-origin challenge manager does (both transports drop
        # the header itself on a redirect that leaves the origin).
        ours = same_origin(url, self.base)
        for attempt in (0, 1):
            hdrs = dict(headers or {})
            if not ours:
                try:
                    return self.http.request(method, url, headers=hdrs, content=content, params=params,
                                             stream=stream, follow_redirects=follow_redirects)
                except self._errors as exc:
                    raise self._unreachable(method, url, exc) from exc
            try:
                auth = self._authorization(scopes)
            except RegistryError as exc:
                if exc.status == 401 and "://" not in str(exc):
                    raise RegistryError(f'{method.title()} "{url}": {exc}', 401, exc.code, exc.message) from exc
                raise
            if auth:
                hdrs["Authorization"] = auth
            try:
                resp = self.http.request(method, url, headers=hdrs, content=content, params=params,
                                         stream=stream, follow_redirects=follow_redirects)
            except self._errors as exc:
                raise self._unreachable(method, url, exc) from exc
            if resp.status_code != 401 or attempt == 1 or not isinstance(content, (bytes, type(None))):
                return resp
            challenge = self._pick_challenge(resp)
            if challenge is None or (challenge.scheme == "basic" and self._challenge is not None
                                     and self._challenge.scheme == "basic"):
                return resp  # the credentials themselves are wrong: no point retrying
            resp.close()
            with self._lock:
                self._challenge = challenge
                self._tokens.pop(tuple(sorted(scopes)), None)
        raise AssertionError("unreachable")

    def _unreachable(self, method: str, url: str, exc: BaseException) -> RegistryUnreachable:
        return _transport_error(method, url, exc, self._is_timeout(exc))

    def is_transport_error(self, exc: BaseException) -> bool:
        """Whether `exc` is this client's transport failing (a blob's download cut short)."""
        return isinstance(exc, self._errors)

    def _check(self, resp: Response, *ok: int) -> Response:
        if resp.status_code not in ok:
            try:
                raise error_from_response(resp)
            finally:
                resp.close()
        return resp

    # --- manifests -------------------------------------------------------------------------
    def get_manifest(self, reference: str) -> FetchedManifest:
        """GET a manifest by tag or digest. The digest is computed from the bytes; a digest
        reference that does not match them is refused."""
        url = self.url(f"manifests/{reference}")
        resp = self.send("GET", url, headers={"Accept": ACCEPT_MANIFESTS}, stream=True, follow_redirects=True)
        try:
            self._check(resp, 200)
            length = int(resp.headers.get("content-length") or 0)
            if length > MAX_MANIFEST_BYTES:
                raise ShoalError(f"manifest {reference} is too big ({length} bytes)")
            chunks: list[bytes] = []
            total = 0
            for chunk in resp.iter_bytes():
                total += len(chunk)
                if total > MAX_MANIFEST_BYTES:
                    raise ShoalError(f"manifest {reference} is too big (over {MAX_MANIFEST_BYTES} bytes)")
                chunks.append(chunk)
            body = b"".join(chunks)
        finally:
            resp.close()
        digest = sha256_digest(body)
        if reference.startswith("sha256:") and reference != digest:
            raise ShoalError(f"manifest verification failed for digest {reference}")
        served = resp.headers.get("docker-content-digest")
        if served and served.startswith("sha256:") and served != digest:
            raise ShoalError(f"manifest verification failed for digest {served}")
        return FetchedManifest(body, manifest_media_type(body, resp.headers.get("content-type")), digest)

    def put_manifest(self, reference: str, body: bytes, media_type: str) -> str:
        resp = self.send("PUT", self.url(f"manifests/{reference}"), content=body,
                         headers={"Content-Type": media_type})
        self._check(resp, 200, 201, 202)
        return resp.headers.get("docker-content-digest") or sha256_digest(body)

    # --- blobs -----------------------------------------------------------------------------
    def blob_size(self, digest: str) -> int | None:
        """HEAD the blob: its size when the repository has it, None when it does not."""
        resp = self.send("HEAD", self.url(f"blobs/{digest}"), follow_redirects=True)
        if resp.status_code == 404:
            return None
        self._check(resp, 200)
        return int(resp.headers.get("content-length") or 0)

    @contextmanager
    def open_blob(self, digest: str) -> Iterator[Response]:
        """A streaming GET of a blob (following the registry's redirect to its storage; the
        transport drops the Authorization header when the redirect leaves the registry's origin)."""
        # identity: the digest is of the blob's bytes, not of an HTTP-level re-encoding of them.
        resp = self.send("GET", self.url(f"blobs/{digest}"), stream=True, follow_redirects=True,
                         headers={"Accept-Encoding": "identity"})
        try:
            self._check(resp, 200)
            yield resp
        finally:
            resp.close()

    def start_upload(self, mount: str | None = None, source: str | None = None) -> tuple[bool, str | None]:
        """POST an upload session. With mount/source it asks for a cross-repository mount:
        (True, None) when mounted, else (False, location) of a fresh session."""
        params = {"mount": mount, "from": source} if mount and source else None
        scopes = self.default_scopes()
        if source:
            scopes = scopes + (scope_for(source, ("pull",)),)
        resp = self.send("POST", self.url("blobs/uploads/"), params=params, scopes=scopes,
                         content=b"", headers={"Content-Length": "0"})
        if resp.status_code == 201 and mount:
            return True, None
        self._check(resp, 202)
        location = resp.headers.get("location")
        if not location:
            raise RegistryError("registry returned no upload location", resp.status_code)
        return False, urljoin(self.base, location)

    def cancel_upload(self, location: str) -> None:
        try:
            self.send("DELETE", location).close()
        except ShoalError:
            pass  # best effort: the registry expires stale sessions itself

    def upload_blob(self, location: str, digest: str, source: BinaryIO, size: int,
                    on_progress: Callable[[int], None] | None = None,
                    chunk_threshold: int = CHUNKED_UPLOAD_THRESHOLD,
                    chunk_size: int = UPLOAD_CHUNK_BYTES) -> None:
        """Send the blob: one streaming PUT (monolithic) below chunk_threshold, else PATCH
        chunks with Content-Range then a closing PUT, as in the distribution spec."""
        sent = 0

        def pieces(limit: int) -> Iterator[bytes]:
            nonlocal sent
            left = limit
            while left > 0:
                data = source.read(min(READ_CHUNK, left))
                if not data:
                    raise ShoalError(f"blob {digest} ended early at {sent} of {size} bytes")
                left -= len(data)
                sent += len(data)
                if on_progress:
                    on_progress(sent)
                yield data

        if size <= chunk_threshold:
            url = _add_digest(location, digest)
            resp = self.send("PUT", url, content=pieces(size),
                             headers={"Content-Type": "application/octet-stream", "Content-Length": str(size)})
            self._check(resp, 201, 204)
            return
        while sent < size:
            start = sent
            length = min(chunk_size, size - start)
            resp = self.send("PATCH", location, content=pieces(length), headers={
                "Content-Type": "application/octet-stream",
                "Content-Length": str(length),
                "Content-Range": f"{start}-{start + length - 1}",
            })
            self._check(resp, 202)
            # A relative Location is relative to the URL it answered, which need not be the registry's.
            location = urljoin(location, resp.headers.get("location") or location)
        url = _add_digest(location, digest)
        resp = self.send("PUT", url, content=b"", headers={"Content-Length": "0"})
        self._check(resp, 201, 204)

    def list_tags(self) -> list[str]:
        resp = self.send("GET", self.url("tags/list"))
        self._check(resp, 200)
        return list(resp.json().get("tags") or [])
