"""The CLI's side of the API: a small synchronous client over the unix socket, or over TCP and
mutual TLS to a node the context names (api/contexts.py), and starting the local shoald on first
use (as `docker` would need dockerd, but without a service manager)."""

from __future__ import annotations

import json
import os
import socket
import urllib.parse
from collections.abc import Callable, Iterator
import sys
import time
from pathlib import Path
from typing import Any


from shoal import paths
from shoal.api import API_VERSION, contexts
from shoal.errors import Conflict, InvalidArgument, NotFound, ShoalError
# Defined with the roots: shoald needs it too, but not this module (the CLI's client) nor
# contexts.py, which would stay in every node's memory.
from shoal.paths import socket_path  # noqa: F401


class DaemonError(ShoalError):
    """An error shoald answered with; the CLI prints it as Docker prints the daemon's errors,
    `Error response from daemon: <message>` on one line, exit 1 whatever its kind (docker's
    main: only the CLI's own flag errors and `run`/`create` exit 125)."""

    from_daemon = True
    exit_code = 1


class DaemonInvalidArgument(DaemonError, InvalidArgument):
    exit_code = 1  # InvalidArgument's 125 is for the CLI's own flag errors


class DaemonNotFound(DaemonError, NotFound):
    pass


class DaemonConflict(DaemonError, Conflict):
    pass


_ERRORS: dict[int, type[ShoalError]] = {400: DaemonInvalidArgument, 404: DaemonNotFound, 409: DaemonConflict}


class _Response:
    """One HTTP/1.1 response read off the socket: status, headers, and a body framed by
    Content-Length, chunked encoding (aiohttp's streams) or the end of the connection."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._file = sock.makefile("rb")
        parts = self._file.readline().split(None, 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/"):
            raise OSError("shoald sent no HTTP response")
        self.status = int(parts[1])
        self.headers: dict[str, str] = {}
        while True:
            line = self._file.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            self.headers[name.strip().lower()] = value.strip()

    def chunks(self) -> Iterator[bytes]:
        if "chunked" in self.headers.get("transfer-encoding", "").lower():
            while True:
                line = self._file.readline()
                if not line:  # the sender went away before the last chunk: a cut, not an end
                    raise ShoalError("shoald closed the connection in the middle of its response")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    return
                data = self._file.read(size)
                if len(data) < size:
                    raise ShoalError("shoald closed the connection in the middle of its response")
                yield data
                self._file.readline()  # the CRLF after each chunk
        elif "content-length" in self.headers:
            yield self._file.read(int(self.headers["content-length"]))
        else:
            while chunk := self._file.read1(65536):
                yield chunk

    def read(self) -> bytes:
        return b"".join(self.chunks())

    def lines(self) -> Iterator[bytes]:
        pending = b""
        for chunk in self.chunks():
            pending += chunk
            *complete, pending = pending.split(b"\n")
            yield from complete
        if pending:
            yield pending

    def settimeout(self, timeout: float | None) -> None:
        self._sock.settimeout(timeout)

    def close(self) -> None:
        self._file.close()
        self._sock.close()


class _ChunkedWriter:
    """A file-like writer of an HTTP/1.1 chunked request body straight onto the socket (tarfile
    writes its 10 KiB records here: they are gathered to 1 MiB chunks)."""

    LIMIT = 1 << 20

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()

    def write(self, data: bytes) -> int:
        self._buf += data
        if len(self._buf) >= self.LIMIT:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if self._buf:
            self._sock.sendall(b"%x\r\n" % len(self._buf) + bytes(self._buf) + b"\r\n")
            self._buf.clear()

    def finish(self) -> None:
        self.flush()
        self._sock.sendall(b"0\r\n\r\n")


def quote_ref(ref: str) -> str:
    """An image reference in a route's path (names have slashes, digests '@' and ':')."""
    return urllib.parse.quote(ref, safe="/:@")


def request_target(path: str) -> str:
    """A route's path as it goes on the request line: what a path segment cannot hold
    escaped, as Go's url.URL escapes docker's. Names went in as typed, so `secret rm 'db#x'`
    or `'db?x'` removed the secret db, and a CR LF in one began a header of its own. A `%` is
    left as it is: refs escaped by quote_ref come through here too."""
    return f"/{API_VERSION}" + urllib.parse.quote(path, safe="/:@%!$&'()*+,;=")


class Client:
    """HTTP/1.1 over shoald's unix socket, written out here: every `shoal stack`/`service`
    command pays its client's import, and http.client's (with the email package) was ~60 ms."""

    def __init__(self, sock: Path | None = None, timeout: float = 60.0,
                 endpoint: contexts.Endpoint | None = None) -> None:
        if sock is not None:
            endpoint = contexts.Endpoint(host=f"unix://{sock}")
        self.endpoint = endpoint or contexts.endpoint()
        self.sock = self.endpoint.unix_path if not self.endpoint.is_tcp else None
        self.where = self.endpoint.host  # for messages: unix:///run/shoal/shoal.sock, tcp://h:p
        self.timeout = timeout
        self._ssl: Any = None
        self._ssl_signature: tuple[tuple[int, int, int], ...] = ()

    @property
    def remote(self) -> bool:
        return self.endpoint.is_tcp

    def _connect(self, timeout: float | None) -> socket.socket:
        if not self.endpoint.is_tcp:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(str(self.sock))
            except OSError as exc:
                sock.close()
                raise ShoalError(f"Cannot connect to shoald at {self.where}. Is the daemon running?") from exc
            return sock
        return self._connect_tls(timeout)

    def _connect_tls(self, timeout: float | None) -> socket.socket:
        """TCP, then TLS that trusts only the cluster's CA and accepts only a server whose
        certificate names the manager role (tlsconfig: server name "swarm-manager", never the
        address), presenting the context's client certificate."""
        import ssl

        ep = self.endpoint
        # Built again when the files change: a context that follows a node's certificates sees
        # them renewed in place, during a root rotation too (a long `swarm ca --rotate` poll).
        signature = ep.material_signature()
        if self._ssl is None or signature != self._ssl_signature:
            from shoal import tlscontext  # the standard library's ssl alone (not tlsconfig's aiohttp)

            if ep.ca is None or not ep.ca.is_file():
                raise ShoalError(f"context {ep.context!r} names {ep.host} but has no CA certificate "
                                 f"({ep.ca or 'ca.pem'}): a remote node is trusted only through its cluster's CA")
            for attempt in (1, 2):
                try:
                    self._ssl = tlscontext.client_context(ep.ca.read_bytes(), ep.cert, ep.key)
                    break
                except (OSError, ssl.SSLError) as exc:
                    # The node renames a new key into place just before its certificate: read
                    # between the two renames, the pair does not match; once more after them.
                    if attempt == 1 and ep.follows is not None:
                        time.sleep(0.05)
                        continue
                    raise ShoalError(f"context {ep.context!r}: cannot load its TLS material "
                                     f"({ep.ca}, {ep.cert}, {ep.key}): {exc}") from exc
            self._ssl_signature = signature
        try:
            raw = socket.create_connection(ep.address, timeout=timeout)
        except OSError as exc:
            raise ShoalError(f"Cannot connect to shoald at {self.where}: {exc.strerror or exc}") from exc
        try:
            return self._ssl.wrap_socket(raw, server_hostname="swarm-manager")
        except ssl.SSLCertVerificationError as exc:
            raw.close()
            raise ShoalError(f"TLS to {self.where} refused: the server is not a manager of the cluster "
                             f"whose CA context {ep.context!r} trusts ({exc.verify_message})") from exc
        except (ssl.SSLError, OSError) as exc:
            raw.close()
            raise ShoalError(f"TLS to {self.where} failed: {exc}") from exc

    def close(self) -> None:
        pass

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, params: dict[str, Any] | None, body: Any,
              timeout: float | None, upload: Callable[[Any], None] | None = None,
              content_type: str = "application/x-tar") -> _Response:
        """One request. `upload(writer)` streams a body of unknown length (a build context, an
        image archive) with chunked encoding as it is produced."""
        url = request_target(path)
        if params:
            url += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None}, doseq=True)
        data = b"" if body is None else json.dumps(body).encode()
        head = f"{method} {url} HTTP/1.1\r\nHost: shoald\r\nConnection: close\r\n"
        if upload is not None:
            head += f"Transfer-Encoding: chunked\r\nContent-Type: {content_type}\r\n"
        else:
            head += f"Content-Length: {len(data)}\r\n"
        if body is not None:
            head += "Content-Type: application/json\r\n"
        sock = self._connect(timeout)
        try:
            sock.sendall(head.encode() + b"\r\n" + data)
            if upload is not None:
                writer = _ChunkedWriter(sock)
                upload(writer)
                writer.finish()
        except OSError as exc:
            # shoald may answer before reading the whole body (413, too large) and close: its
            # answer is still there to read.
            try:
                return _Response(sock)
            except OSError:
                sock.close()
                raise ShoalError(f"shoald at {self.where} closed the connection during {method} {path}: {exc}") from exc
        try:
            return _Response(sock)
        except OSError as exc:
            sock.close()
            if self.remote:
                # TLS 1.3: a client certificate the node refuses is known only after the handshake,
                # and reads here as the close of a node that stopped (or died) under the request.
                raise ShoalError(f"TLS to {self.where}: the node closed the connection without answering "
                                 f"{method} {path} (it stopped, or it refuses context "
                                 f"{self.endpoint.context!r}'s client certificate): {exc}") from exc
            raise ShoalError(f"shoald at {self.where} did not answer {method} {path}: {exc}") from exc

    @staticmethod
    def _raise(status: int, payload: bytes) -> None:
        exit_code = None
        try:
            decoded = json.loads(payload)
            message = decoded.get("message") if isinstance(decoded, dict) else None
            exit_code = decoded.get("exit_code") if isinstance(decoded, dict) else None
        except ValueError:
            message = None
        if not isinstance(message, str) or not message.strip():
            message = payload.decode(errors="replace").strip() or f"status {status}"
        # One line, as Docker prints it, however the message was written.
        message = " ".join(message.split())
        error = _ERRORS.get(status, DaemonError)(message)
        if isinstance(exit_code, int) and not isinstance(exit_code, bool) and 0 < exit_code < 256:
            error.exit_code = exit_code  # the node's own (exec: 126, 127 as docker exits)
        raise error

    def request(self, method: str, path: str, params: dict[str, Any] | None = None, json_body: Any = None) -> Any:
        response = self._send(method, path, params, json_body, self.timeout)
        try:
            payload = response.read()
        except OSError as exc:
            raise ShoalError(f"shoald at {self.where} did not answer {method} {path}: {exc}") from exc
        finally:
            response.close()
        if response.status >= 400:
            self._raise(response.status, payload)
        return json.loads(payload) if payload else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, None, body)

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, params)

    def stream(self, method: str, path: str, params: dict[str, Any] | None = None,
               upload: Callable[[Any], None] | None = None, content_type: str = "application/x-tar",
               timeout: float | None = None, json_body: Any = None) -> _Response:
        """A request whose response is read as it arrives (the caller closes it); an error
        status raises here with shoald's message."""
        response = self._send(method, path, params, json_body, timeout or self.timeout, upload, content_type)
        if response.status >= 400:
            try:
                payload = response.read()
            finally:
                response.close()
            self._raise(response.status, payload)
        response.settimeout(timeout)
        return response

    def stream_lines(self, path: str, **params: Any) -> Iterator[str]:
        """A streamed (newline-delimited) response, line by line, as it arrives."""
        response = self._send("GET", path, params, None, None)
        try:
            if response.status >= 400:
                self._raise(response.status, response.read())
            for raw in response.lines():
                line = raw.decode("utf-8", "replace").rstrip("\r")
                if line:
                    yield line
        finally:
            response.close()

    def ping(self) -> bool:
        try:
            response = self._send("GET", "/version", None, None, 2.0)
        except ShoalError:
            return False
        response.close()
        return response.status == 200


def connect(autostart: bool = True) -> Client:
    """A client to a running shoald, starting one in the background when there is none."""
    client = Client()
    if client.ping():
        return client
    if client.remote:
        client._send("GET", "/version", None, None, 5.0).close()  # raises the reason (refused, TLS)
        raise ShoalError(f"shoald at {client.where} did not answer GET /version")
    if not autostart or client.sock != socket_path():
        # Only the local default shoald is started on demand; another socket is someone else's.
        raise ShoalError(f"Cannot connect to shoald at {client.where}. Is the daemon running?")
    print("Starting shoald (logs in " + str(paths.state_root() / "shoald.log") + ")", file=sys.stderr)
    log_path = paths.state_root() / "shoald.log"
    paths.ensure_private_dir(log_path.parent)
    with open(os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600), "ab") as log:
        os.fchmod(log.fileno(), 0o600)  # a log an older shoal made with the umask's 0644
        import subprocess  # only to start shoald: most commands find it running

        from shoal.daemonenv import daemon_env

        subprocess.Popen(
            [sys.executable, "-m", "shoal", "daemon"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True,
            env=daemon_env(os.environ),
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if client.ping():
            return client
        time.sleep(0.05)
    raise ShoalError(f"shoald did not start: see {log_path}")
