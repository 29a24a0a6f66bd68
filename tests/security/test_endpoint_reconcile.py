"""shoald killed (-9) between making a service's endpoints (VIP, published port, nft rules) and
storing the service: the next shoald removes what no stored service owns, and a stack
publishing the same port deploys."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT_ONLY, teardown_root, terminate

from shoal.api.client import Client

pytestmark = [ROOT_ONLY, pytest.mark.root]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = dict(os.environ, SHOAL_ROOT=str(tmp_path / "root"), SHOAL_RUN=str(tmp_path / "run"),
               SHOAL_DEFAULT_ADDRESS_POOLS="10.221.0.0/16:24")
    env.pop("SHOAL_SOCKET", None)
    try:
        yield env
    finally:
        teardown_root(tmp_path / "root", tmp_path / "run")


def stack(tmp: Path, port: int, name: str = "shop") -> dict:
    from shoal.compose import load_stack

    compose = tmp / f"{name}.yml"
    compose.write_text(textwrap.dedent(f"""
        services:
          web:
            image: web:v1
            ports: ["{port}:80"]
            networks: [front]
        networks:
          front:
        """))
    return load_stack([compose], name, environ={}).to_dict()


# What POST /v1/stacks/{name} does inside its store transaction (manager/controlapi/stacks.py):
# the allocation, then this node's networks and endpoints made from it, in a process killed as
# shoald would be before the commit.
HALF_DEPLOY = """
import json, os, signal, sys
from shoal import paths
from shoal.ids import new_swarm_id
from shoal.manager import allocator, endpoints
from shoal.model._serde import from_dict, to_dict
from shoal.model.stack import NetworkSpec
from shoal.store import SQLiteStore
store = SQLiteStore(paths.state_root() / "shoald.db")
with store.transaction() as tx:
    for stack in json.loads(sys.stdin.read()):
        allocs = {}
        for raw in stack["networks"].values():
            allocs[raw["name"]] = endpoints.allocate_network(tx, from_dict(NetworkSpec, raw), pending=allocs)
        new = {raw["name"]: {"id": new_swarm_id(), "name": raw["name"], "spec": raw,
                             "allocation": to_dict(allocs[raw["name"]])}
               for raw in stack["networks"].values()}
        records = {n: allocator.node_record(r) for n, r in new.items()}
        endpoints.adopt_networks(list(records.values()))
        for spec in stack["services"].values():
            service_id = new_swarm_id()
            made = allocator.allocate_endpoint(tx, service_id, spec, None, new)
            endpoints.apply_service(service_id, spec, made, records)
            print(service_id, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


def network_records(root: Path) -> list[dict]:
    """The node's network records; one the manager's pass removes meanwhile is not one."""
    records = []
    for path in (root / "networks").glob("*.json"):
        try:
            records.append(json.loads(path.read_text()))
        except FileNotFoundError:
            continue
    return records


def network_names(root: Path) -> set[str]:
    return {net["name"] for net in network_records(root)}


def addresses() -> str:
    return subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True, check=True).stdout


def vips_of(root: Path, service_id: str) -> list[str]:
    return [ip for net in network_records(root)
            for ip, owner in net.get("reserved", {}).items() if owner == f"vip:{service_id}"]


def test_endpoints_of_a_deploy_killed_before_commit_are_removed_at_start(env, tmp_path: Path) -> None:
    port = free_port()
    spec = stack(tmp_path, port)
    # A second stack caught in the same window is never deployed again: its network goes too.
    ghost = stack(tmp_path, free_port(), "ghost")
    half = subprocess.run([sys.executable, "-c", HALF_DEPLOY], input=json.dumps([spec, ghost]), env=env,
                          capture_output=True, text=True, timeout=60)
    assert half.returncode == -9, half.stderr
    orphan, ghost_id = half.stdout.split()
    root = Path(env["SHOAL_ROOT"])
    assert (root / "networks" / "services" / f"{orphan}.json").is_file()  # the window is real
    (vip,) = vips_of(root, orphan)
    assert f" {vip}/" in addresses()  # on the stack network's bridge

    log = tmp_path / "shoald.log"
    proc = subprocess.Popen([sys.executable, "-m", "shoal", "daemon"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)
    try:
        client = Client(Path(env["SHOAL_RUN"]) / "shoal.sock")
        deadline = time.monotonic() + 60
        while not client.ping():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        # The same stack, publishing the same port, deploys...
        lines = client.post("/stacks/shop", {"stack": spec})["lines"]
        assert "Creating service shop_web" in lines
        (svc,) = client.get("/services")
        assert svc["endpoint"]["ports"][0]["published"] == port
        assert vips_of(root, svc["id"])
        # ...and the orphan's port, VIP and rules are gone.
        assert not (root / "networks" / "services" / f"{orphan}.json").exists()
        assert vips_of(root, orphan) == []
        assert f" {vip}/" not in addresses() or vip in vips_of(root, svc["id"])  # free, so reusable
        assert f"removing the endpoints of service {orphan}" in log.read_text()
        assert not (root / "networks" / "services" / f"{ghost_id}.json").exists()
        deadline = time.monotonic() + 30  # the manager's next pass collects the unused network
        while time.monotonic() < deadline and "ghost_front" in network_names(root):
            time.sleep(0.2)
        assert "ghost_front" not in network_names(root)
        assert "shop_front" in network_names(root)
        client.delete("/stacks/shop")
    finally:
        assert terminate(proc, 15)
