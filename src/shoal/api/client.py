"""The CLI's side of the API: a small synchronous client over the unix socket, and starting
shoald on first use (as `docker` would need dockerd, but without a service manager)."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import urllib.parse
from collections.abc import Iterator
import sys
import time
from pathlib import Path
from typing import Any


from shoal import paths
from shoal.api import API_VERSION
from shoal.errors import Conflict, InvalidArgument, NotFound, ShoalError


def socket_path() -> Path:
    return Path(os.environ.get("SHOAL_SOCKET", str(paths.run_root() / "shoal.sock")))


_ERRORS: dict[int, type[ShoalError]] = {400: InvalidArgument, 404: NotFound, 409: Conflict}


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over shoald's unix socket."""

    def __init__(self, path: str, timeout: float | None) -> None:
        super().__init__("shoald", timeout=timeout)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Client:
    """Plain http.client over the socket: the CLI starts in a fraction of the time httpx's
    import takes, and every `shoal stack`/`service` command pays that start-up."""

    def __init__(self, sock: Path | None = None, timeout: float = 60.0) -> None:
        self.sock = sock or socket_path()
        self.timeout = timeout

    def close(self) -> None:
        pass

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, params: dict[str, Any] | None, body: Any,
              timeout: float | None) -> tuple[_UnixConnection, http.client.HTTPResponse]:
        url = f"/{API_VERSION}{path}"
        if params:
            url += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        conn = _UnixConnection(str(self.sock), timeout)
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"} if data is not None else {}
        try:
            conn.request(method, url, body=data, headers=headers)
            return conn, conn.getresponse()
        except OSError as exc:
            conn.close()
            raise ShoalError(f"Cannot connect to shoald at unix://{self.sock}. Is the daemon running?") from exc

    @staticmethod
    def _raise(status: int, payload: bytes) -> None:
        try:
            message = json.loads(payload).get("message", payload.decode())
        except ValueError:
            message = payload.decode(errors="replace")
        raise _ERRORS.get(status, ShoalError)(message)

    def request(self, method: str, path: str, params: dict[str, Any] | None = None, json_body: Any = None) -> Any:
        conn, response = self._send(method, path, params, json_body, self.timeout)
        try:
            payload = response.read()
        finally:
            conn.close()
        if response.status >= 400:
            self._raise(response.status, payload)
        return json.loads(payload) if payload else None

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params)

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, None, body)

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, params)

    def stream_lines(self, path: str, **params: Any) -> Iterator[str]:
        """A streamed (newline-delimited) response, line by line, as it arrives."""
        conn, response = self._send("GET", path, params, None, None)
        try:
            if response.status >= 400:
                self._raise(response.status, response.read())
            for raw in response:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                if line:
                    yield line
        finally:
            conn.close()

    def ping(self) -> bool:
        try:
            conn, response = self._send("GET", "/version", None, None, 2.0)
        except ShoalError:
            return False
        conn.close()
        return response.status == 200


def connect(autostart: bool = True) -> Client:
    """A client to a running shoald, starting one in the background when there is none."""
    client = Client()
    if client.ping():
        return client
    if not autostart:
        raise ShoalError(f"Cannot connect to shoald at unix://{client.sock}. Is the daemon running?")
    print("Starting shoald (logs in " + str(paths.state_root() / "shoald.log") + ")", file=sys.stderr)
    log_path = paths.state_root() / "shoald.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        subprocess.Popen(
            [sys.executable, "-m", "shoal", "daemon"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, close_fds=True,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if client.ping():
            return client
        time.sleep(0.05)
    raise ShoalError(f"shoald did not start: see {log_path}")
