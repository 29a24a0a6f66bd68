"""A task that stops leaves every node's rotation before its signal (issue 12 item 4): on a
two-node local cluster, a published service with one task per node, and a client on the other
node opening a new connection per request through its own node's published port while the
service is scaled down (the removed task on the far node) and then updated with --force: not one
request fails or is reset. Real shoalds over TLS and VXLAN in network namespaces, as
test_ingress_mesh.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

from cluster.test_local_cluster import cluster_with_web_image  # noqa: E402

PORT = 4200

# One new connection per request until the stop file appears; every failure counted by kind.
CLIENT = r"""
import json, os, socket, sys, time
addr, port, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ok, failed, hosts = 0, {}, {}
while not os.path.exists(stop):
    try:
        with socket.create_connection((addr, port), timeout=3) as s:
            s.sendall(b"GET /hostname HTTP/1.0\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := s.recv(4096):
                data += chunk
        if not data.startswith(b"HTTP/1.") or b" 200 " not in data.split(b"\r\n", 1)[0]:
            raise OSError("bad answer " + repr(data[:40]))
        ok += 1
        host = data.rsplit(b"\r\n\r\n", 1)[-1].strip().decode()
        hosts[host] = hosts.get(host, 0) + 1
    except OSError as exc:
        kind = type(exc).__name__ + ": " + str(exc)[:60]
        failed[kind] = failed.get(kind, 0) + 1
print(json.dumps({"ok": ok, "failed": failed, "hosts": hosts}))
"""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Any]:
    name = f"shoaldrn{os.getpid() % 10000}"
    with cluster_with_web_image(tmp_path_factory.mktemp("meshdrain"), name, 2, busybox_tar) as c:
        yield c


def tasks(c: Any) -> list[dict[str, Any]]:
    out = c.shoal("service", "ps", "web", "--filter", "desired-state=running", "--format", "{{json .}}").stdout
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def hammer(c: Any, client: int, entry: int, tmp: Path) -> tuple[subprocess.Popen[str], Path]:
    stop = tmp / f"stop-{time.monotonic_ns()}"
    proc = subprocess.Popen(["nsenter", f"--net=/run/netns/{c.node(client)['hostname']}", sys.executable, "-c",
                             CLIENT, c.node(entry)["address"], str(PORT), str(stop)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc, stop


def finish(proc: subprocess.Popen[str], stop: Path) -> dict[str, Any]:
    stop.touch()
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return json.loads(out)


def settle(c: Any, want: int, entry_client: int, tmp: Path) -> None:
    """Until the service runs `want` tasks at its spec and the client's node reaches them all."""
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        running = [t for t in tasks(c) if t["CurrentState"].startswith("Running")]
        if len(running) == want:
            proc, stop = hammer(c, entry_client, entry_client, tmp)
            time.sleep(1.0)
            got = finish(proc, stop)
            if not got["failed"] and len(got["hosts"]) == want:
                return
        time.sleep(0.5)
    raise AssertionError(c.shoal("service", "ps", "web").stdout)


def test_no_request_fails_while_a_task_on_another_node_stops(cluster: Any, tmp_path: Path) -> None:
    cluster.shoal("service", "create", "--detach", "--name", "web", "-p", f"{PORT}:80", "--replicas", "2",
                  "--replicas-max-per-node", "1", "--stop-grace-period", "1s",
                  # In the rotation only once httpd answers: this test is about tasks leaving it.
                  "--health-cmd", "wget -q -O /dev/null http://127.0.0.1/passwd", "--health-interval", "500ms",
                  "--health-retries", "1",
                  "web:v1", "httpd", "-f", "-p", "80", "-h", "/etc")
    settle(cluster, 2, 1, tmp_path)
    # Scaling to one removes slot 2: the client enters through the node that keeps its task.
    nodes = {t["Name"].rsplit(".", 1)[-1]: t["Node"] for t in tasks(cluster)}
    leaving = nodes["2"]
    client = next(k for k in (1, 2) if cluster.node(k)["hostname"] != leaving)
    proc, stop = hammer(cluster, client, client, tmp_path)
    try:
        time.sleep(1.0)
        cluster.shoal("service", "scale", "--detach", "web=1")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(tasks(cluster)) != 1:
            time.sleep(0.3)
        time.sleep(2.0)  # its stop grace and the records after it
    finally:
        got = finish(proc, stop)
    assert len(tasks(cluster)) == 1
    print("requests:", got)
    assert got["failed"] == {}, got
    assert got["ok"] > 50 and len(got["hosts"]) == 2, got  # both tasks answered before the scale

    # `service update --force`: every task replaced, one at a time, on both nodes.
    cluster.shoal("service", "scale", "--detach", "web=2")
    settle(cluster, 2, 1, tmp_path)
    before = {t["ID"] for t in tasks(cluster)}
    proc, stop = hammer(cluster, 1, 1, tmp_path)
    try:
        time.sleep(1.0)
        cluster.shoal("service", "update", "--force", "web", timeout=180)
        time.sleep(1.0)
    finally:
        got = finish(proc, stop)
    assert not before & {t["ID"] for t in tasks(cluster)}
    print("requests:", got)
    assert got["failed"] == {}, got
    assert got["ok"] > 50, got
