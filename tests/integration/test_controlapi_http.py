"""The control API through a real shoald and the real CLI: `POST /v1/services` (201, a name
taken is a 409 in Docker's words), update with the version read (a stale one is `update out of
sequence`), rollback to the previous spec, and a swarm network made with `shoal network create
-d overlay`, inspected, refused removal while a service uses it, then removed."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT_ONLY
from shoal.errors import Conflict, InvalidArgument
from shoal.manager.imagepin import digest_warning
from test_daemon_api import daemon  # noqa: F401 - the fixture: a shoald of the test's own

pytestmark = ROOT_ONLY


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shoal", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_service_create_update_and_rollback_over_http(daemon) -> None:  # noqa: F811
    client, _, _ = daemon
    created = client.post("/services", {"spec": {"name": "web", "image": "busybox:latest", "replicas": 0}})
    # An image in no store here: moby's CreateService answers the digest warning (docker/cli prints it).
    assert set(created) == {"ID", "Warnings"} and created["Warnings"] == [digest_warning("busybox:latest")]
    with pytest.raises(Conflict, match="name conflicts with an existing object: service web already exists"):
        client.post("/services", {"spec": {"name": "web", "image": "busybox:latest"}})
    with pytest.raises(InvalidArgument, match="spec.replicas: an integer is expected"):
        client.post("/services", {"spec": {"name": "api", "image": "busybox:latest", "replicas": "2"}})
    svc = client.get("/services/web")
    assert (svc["id"], svc["spec_version"], svc["previous_spec"], svc["update_status"]) == (created["ID"], 1, None, None)
    assert svc["spec"]["restart_policy"]["delay"] == 5.0  # Swarm's defaults, filled in once
    with pytest.raises(InvalidArgument, match="does not have a previous spec"):
        client.post("/services/web/update", {"version": 1, "rollback": "previous"})
    changed = dict(svc["spec"], env=["COLOR=blue"])
    # The image unchanged: not resolved again, no warning (docker/cli queries only for --image).
    assert client.post("/services/web/update", {"version": 1, "spec": changed}) == {"Warnings": []}
    # A new image in no store here: moby's digestWarning, as Docker, and the image as written.
    updated = client.post("/services/web/update", {"version": 2, "spec": dict(changed, image="busybox:1.36")})
    assert updated == {"Warnings": [digest_warning("busybox:1.36")]}
    changed = dict(changed, image="busybox:1.36")
    with pytest.raises(Conflict, match="update out of sequence"):
        client.post("/services/web/update", {"version": 2, "spec": dict(changed, replicas=3)})
    with pytest.raises(InvalidArgument, match="service mode change is not allowed"):
        client.post("/services/web/update", {"version": 3, "spec": dict(changed, mode="global")})
    client.post("/services/web/update", {"version": 3, "rollback": "previous"})
    svc = client.get("/services/web")
    assert svc["spec"]["image"] == "busybox:latest" and svc["previous_spec"]["image"] == "busybox:1.36"
    # The orchestrator may have finished it already (no replicas to roll back).
    assert svc["spec_version"] == 4 and svc["update_status"]["state"] in ("rollback_started", "rollback_completed")
    client.delete("/services/web")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_overlay_network_create_inspect_and_rm_from_the_cli(daemon) -> None:  # noqa: F811
    client, env, _ = daemon
    env = dict(env)
    # Outside swarm mode `-d overlay` is this node's own network, as before; in it, the swarm's.
    init = cli(env, "swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", f"127.0.0.1:{_free_port()}")
    assert init.returncode == 0, init.stderr
    made = cli(env, "network", "create", "-d", "overlay", "--subnet", "10.218.7.0/24", "--label", "tier=front", "appnet")
    assert made.returncode == 0, made.stderr
    network_id = made.stdout.strip()
    again = cli(env, "network", "create", "-d", "overlay", "appnet")
    assert again.returncode != 0 and "network with name appnet already exists" in again.stderr
    shown = cli(env, "network", "inspect", "appnet")
    assert shown.returncode == 0, shown.stderr
    (inspected,) = json.loads(shown.stdout)
    assert (inspected["Id"], inspected["Scope"], inspected["Driver"]) == (network_id, "swarm", "overlay")
    assert inspected["IPAM"]["Config"] == [{"Subnet": "10.218.7.0/24"}] and inspected["Labels"] == {"tier": "front"}
    listed = cli(env, "network", "ls", "--no-trunc", "--filter", "name=appnet")
    assert [line.split() for line in listed.stdout.splitlines()[1:]] == [[network_id, "appnet", "overlay", "swarm"]]
    svc = client.post("/services", {"spec": {"name": "front", "image": "busybox:latest", "replicas": 0,
                                             "networks": [{"target": "appnet"}]}})
    refused = cli(env, "network", "rm", "appnet")
    assert refused.returncode == 1
    assert f"network {network_id} is in use by service {svc['ID']}" in refused.stderr
    assert client.get(f"/networks/{network_id}")["name"] == "appnet"
    client.delete("/services/front")
    removed = cli(env, "network", "rm", "appnet")
    assert removed.returncode == 0, removed.stderr
    assert all(n["name"] != "appnet" for n in client.get("/networks"))
    gone = cli(env, "network", "inspect", "appnet")
    assert gone.returncode == 1
    assert not os.path.exists(f"/sys/class/net/{inspected['Options'].get('com.docker.network.bridge.name', 'x')}")
