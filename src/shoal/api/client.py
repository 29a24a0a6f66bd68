"""The CLI's side of the API: a small synchronous client over the unix socket, and starting
shoald on first use (as `docker` would need dockerd, but without a service manager)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from shoal import paths
from shoal.api import API_VERSION
from shoal.errors import Conflict, InvalidArgument, NotFound, ShoalError


def socket_path() -> Path:
    return Path(os.environ.get("SHOAL_SOCKET", str(paths.run_root() / "shoal.sock")))


_ERRORS: dict[int, type[ShoalError]] = {400: InvalidArgument, 404: NotFound, 409: Conflict}


class Client:
    def __init__(self, sock: Path | None = None, timeout: float = 60.0) -> None:
        self.sock = sock or socket_path()
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.sock)),
            base_url=f"http://shoald/{API_VERSION}",
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise ShoalError(f"Cannot connect to shoald at unix://{self.sock}. Is the daemon running?") from exc
        if response.status_code >= 400:
            try:
                message = response.json().get("message", response.text)
            except ValueError:
                message = response.text
            raise _ERRORS.get(response.status_code, ShoalError)(message)
        if not response.content:
            return None
        return response.json()

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, json=body)

    def delete(self, path: str, **params: Any) -> Any:
        return self.request("DELETE", path, params={k: v for k, v in params.items() if v is not None})

    def ping(self) -> bool:
        try:
            self._http.get("/version", timeout=2)
            return True
        except httpx.TransportError:
            return False


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
