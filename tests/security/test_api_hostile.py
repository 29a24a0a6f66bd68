"""shoald's API against hostile requests, over its real unix socket: malformed and wrongly shaped
JSON on every route is a 400 naming what is wrong (never a 500 and a traceback), a body over
the cap a 413, a stack carrying several Swarm-sized (500 KB) secrets deploys, and the daemon
answers throughout."""

from __future__ import annotations

import base64
import copy
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT_ONLY, run_shoal, teardown_root, terminate

from shoal.api.client import Client, _Response

pytestmark = [ROOT_ONLY, pytest.mark.root]

OK = {200, 400, 404, 405, 409, 503}  # 503: the node's role or swarm state refuses it (Docker's errdefs.Unavailable)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Path, dict[str, str]]]:
    env = dict(os.environ, SHOAL_ROOT=str(tmp_path / "root"), SHOAL_RUN=str(tmp_path / "run"),
               SHOAL_DEFAULT_ADDRESS_POOLS="10.219.0.0/16:24")
    env.pop("SHOAL_SOCKET", None)
    sock = tmp_path / "run" / "shoal.sock"
    log = tmp_path / "shoald.log"
    proc = subprocess.Popen([sys.executable, "-m", "shoal", "daemon"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not Client(sock).ping():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield sock, env
        assert proc.poll() is None, "shoald died:\n" + log.read_text()[-3000:]
    finally:
        terminate(proc, 10)
        teardown_root(tmp_path / "root", tmp_path / "run")


def raw(sock: Path, method: str, path: str, body: bytes = b"",
        headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """One request exactly as given (the client would refuse to send most of these)."""
    head = f"{method} {path} HTTP/1.1\r\nHost: shoald\r\nConnection: close\r\nContent-Length: {len(body)}\r\n"
    for k, v in (headers or {"Content-Type": "application/json"}).items():
        head += f"{k}: {v}\r\n"
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(60)
    s.connect(str(sock))
    try:
        s.sendall(head.encode() + b"\r\n" + body)
    except OSError:
        pass  # refused before the whole body was read: the answer is still there
    response = _Response(s)
    try:
        payload = response.read()
    finally:
        response.close()
    try:
        return response.status, json.loads(payload)
    except ValueError:
        return response.status, payload


def routes() -> list[tuple[str, str]]:
    """Every route shoald serves, from its own router (a new route is fuzzed without a change here)."""
    from shoal.api.server import make_app

    class _Nothing:
        store = None
        node_id = ""
        is_worker = False  # a manager: every route

    out = []
    for route in make_app(_Nothing()).router.routes():  # type: ignore[arg-type]
        if route.method != "HEAD" and route.resource is not None:
            out.append((route.method, route.resource.canonical))
    assert len(out) >= 15
    return out


def fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path)


def valid_stack(tmp: Path) -> dict[str, Any]:
    from shoal.compose import load_stack

    compose = tmp / "fuzz.yml"
    (tmp / "token").write_text("s3cret\n")
    compose.write_text("""
services:
  web:
    image: web:v1
    command: ["sleep", "1000"]
    environment: {A: "1"}
    deploy:
      replicas: 2
      update_config: {parallelism: 1, delay: 1s}
      resources: {limits: {memory: 64M}}
    ports: ["18467:80"]
    networks: [front]
    secrets: [token]
    healthcheck: {test: ["CMD", "true"], interval: 5s}
networks:
  front:
secrets:
  token:
    file: ./token
""")
    return load_stack([compose], "fuzz", environ={}).to_dict()


def leaves(obj: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from leaves(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from leaves(v, path + (i,))


def replaced(obj: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    out = copy.deepcopy(obj)
    cur = out
    for key in path[:-1]:
        cur = cur[key]
    cur[path[-1]] = value
    return out


WRONG = [None, "x", "", 10**30, -(10**30), -1, 1.5, True, [], {}, [1, "a"], {"k": None}, "\0", "9" * 400]

MALFORMED = [b"{", b"{\"stack\":", b"\xff\xfe\x00", b"[]", b"[1, 2]", b'"a string"', b"42", b"null",
             b"true", b"1e400", b"9" * 5000, b"[" * 100_000, b'{"a": ' * 50_000, b"{\"stack\": NaN}",
             b"\x00\x01\x02", "{\"stack\": \"\u00e9\"}".encode("latin-1"), b"{} {}"]


def test_every_route_answers_malformed_bodies_with_400(daemon) -> None:
    sock, _ = daemon
    for method, path in routes():
        for ref in ("nope", "fuzz_web", "%00", "..%2F..", "a" * 300):
            for body in MALFORMED:
                status, payload = raw(sock, method, "" + fill(path, ref) + ("?tail=x&since=y" if method == "GET" else ""),
                                      body)
                assert status in OK, (method, path, ref, body[:40], status, payload)
                if status == 400 and method != "GET":
                    message = payload["message"]
                    assert "\n" not in message and "Traceback" not in message
                # A prune reads no body (its filters are in the query, as Docker's): it prunes.
            if method in ("POST",) and ref == "nope" and body == b"[]" and not path.endswith("/prune"):
                    assert status in (400, 404, 503), (method, path, status, payload)  # 503: a route that reads no body (swarm leave) refused by the node's state
            if method == "GET":
                break  # a GET reads no body: one pass over the refs is enough
    # The query parameters are checked too: a word where a number belongs is a 400.
    assert raw(sock, "GET", "/v1/events?since=x&follow=0")[0] == 400
    assert raw(sock, "GET", "/v1/events?since=" + "9" * 40 + "&follow=0")[0] == 400
    status, payload = raw(sock, "POST", "/v1/stacks/fuzz", b"[]")
    assert status == 400 and payload["message"] == "the request body must be a JSON object, not a list"
    status, payload = raw(sock, "POST", "/v1/stacks/fuzz", b'{"stack": ')
    assert status == 400 and payload["message"].startswith("invalid JSON in the request body: ")
    assert Client(sock).ping()


def test_wrongly_shaped_stacks_are_400s_naming_the_field(daemon, tmp_path: Path) -> None:
    """Every value of a real stack replaced by values of every wrong type: a 400 naming the
    field, or (a value that happens to fit) a deploy; never a 500, and shoald keeps its loops."""
    sock, _ = daemon
    stack = valid_stack(tmp_path)
    files = {"secret": {"fuzz_token": base64.b64encode(b"s3cret\n").decode()}}
    client = Client(sock)
    assert client.post("/stacks/fuzz", {"stack": stack, "files": files})["lines"]
    rng = random.Random(10)
    cases = [(p, v) for p in leaves(stack) if p for v in WRONG]
    rng.shuffle(cases)
    statuses: dict[int, int] = {}
    for path, value in cases[:500]:
        body = {"stack": replaced(stack, path, value), "files": files}
        status, payload = raw(sock, "POST", "/v1/stacks/fuzz", json.dumps(body).encode())
        statuses[status] = statuses.get(status, 0) + 1
        assert status in OK, (path, value, status, payload)
        if status == 400:
            assert "\n" not in payload["message"], payload
    assert statuses.get(400, 0) > 200, statuses
    # The field is named in the reason, in the path the model gives it.
    bad = replaced(stack, ("services", "fuzz_web", "replicas"), "3")
    status, payload = raw(sock, "POST", "/v1/stacks/fuzz", json.dumps({"stack": bad, "files": files}).encode())
    assert (status, payload["message"]) == (400, "invalid stack fuzz: services.fuzz_web.replicas: "
                                                 "an integer is expected, not a string")
    bad = replaced(stack, ("services", "fuzz_web", "replicas"), 10**30)
    status, payload = raw(sock, "POST", "/v1/stacks/fuzz", json.dumps({"stack": bad, "files": files}).encode())
    assert status == 400 and "services.fuzz_web.replicas" in payload["message"] and "out of range" in payload["message"]
    bad = {k: v for k, v in stack["services"]["fuzz_web"].items() if k != "image"}
    status, payload = raw(sock, "POST", "/v1/stacks/fuzz",
                          json.dumps({"stack": dict(stack, services={"fuzz_web": bad}), "files": files}).encode())
    # swarmkit's validateContainerSpec, through the control API, naming the service.
    assert (status, payload["message"]) == (400, "failed to update service fuzz_web: rpc error: code = "
                                                 "InvalidArgument desc = ContainerSpec: image reference must be provided")
    for replicas, word in (("2", "string"), (True, "true"), (10**30, "1000"), (-1, "-1"), (None, "null")):
        status, payload = raw(sock, "POST", "/v1/services/fuzz_web/scale", json.dumps({"replicas": replicas}).encode())
        assert status == 400 and payload["message"].startswith("replicas: "), (replicas, payload)
    assert raw(sock, "POST", "/v1/services/nope/scale", b'{"replicas": 2}')[0] == 404
    assert raw(sock, "DELETE", "/v1/services/nope")[0] == 404
    # shoald still works: the manager made the stack's tasks, and the API answers.
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not client.get("/tasks", stack="fuzz"):
        time.sleep(0.1)
    assert client.get("/tasks", stack="fuzz")
    assert [s["name"] for s in client.get("/services")] == ["fuzz_web"]
    client.delete("/stacks/fuzz")


def test_big_secrets_deploy_and_oversized_bodies_are_413(daemon, tmp_path: Path) -> None:
    sock, env = daemon
    # Four secrets of Swarm's largest size (one byte under 500 KiB: swarmkit refuses 500 KiB
    # itself): 2.6 MB of base64, over aiohttp's 1 MiB default.
    compose = tmp_path / "docker-compose.yml"
    lines = ["services:", "  app:", "    image: app:v1", "    secrets: [s0, s1, s2, s3]", "secrets:"]
    for i in range(4):
        (tmp_path / f"s{i}").write_bytes(os.urandom(500 * 1024 - 1))
        lines += [f"  s{i}:", f"    file: ./s{i}"]
    compose.write_text("\n".join(lines) + "\n")
    deploy = run_shoal("stack", "deploy", "-d", "-c", str(compose), "big", env=env)
    assert deploy.returncode == 0, deploy.stderr
    assert "Creating secret big_s3" in deploy.stdout and "Creating service big_app" in deploy.stdout
    # Over the cap: refused on its Content-Length, with a message saying the limit.
    status, payload = raw(sock, "POST", "/v1/stacks/huge", b"{" + b" " * (65 * 2**20) + b"}")
    assert status == 413 and payload["message"] == (
        f"request body too large ({65 * 2**20 + 2} bytes): shoald accepts at most 64 MiB")
    # The CLI's client shows it as one line.
    from shoal.api.client import DaemonError

    with pytest.raises(DaemonError, match="^request body too large .*64 MiB$"):
        Client(sock).post("/stacks/huge", {"stack": {"pad": "x" * (65 * 2**20)}})
    assert Client(sock).ping()


def test_cli_prints_daemon_errors_as_docker_does(daemon) -> None:
    _, env = daemon
    # (`service inspect` and `ps` answer a missing service in docker/cli's own words; `rm` relays shoald's.)
    result = run_shoal("service", "rm", "nope", env=env)
    assert result.returncode != 0
    assert result.stderr == "Error response from daemon: service nope not found\n"
    # A number no uint64 holds: refused before shoald is asked, as scale.go's ParseUint, on one line.
    result = run_shoal("service", "scale", "nope=" + "9" * 30, env=env)
    assert result.returncode == 1 and result.stderr == (
        f'nope: invalid replicas value {"9" * 30}: strconv.ParseUint: parsing "{"9" * 30}": value out of range\n')
