"""The seed's stack made one command at a time, as a Swarm user fixes production at 3 a.m.:
`secret create`, `config create`, `volume create`, `network create -d overlay`, then `service
create`, `service update` and `service rollback`, beside the same stack from `stack deploy`. The two
must be the same: the same tasks running, the published ports answering from every replica with
the secret's content, and the same spec apart from the names and the stack's labels.

The image is the busybox test image (httpd serves the task's hostname and the secret)."""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import teardown_root
from test_stack_seed import Shoal, free_port, wait_replicas

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

POOL = "10.219.0.0/16:24"
IMAGE = "localhost/busybox:test"
WEB_CMD = ("mkdir -p /www && hostname > /www/index.html && cp /run/secrets/token /www/token "
           "&& cp /etc/app.conf /www/conf && exec httpd -f -p 80 -h /www")
REDIS_CMD = "echo kept > /data/mark && exec sleep 600"
COMPOSE = """\
services:
  web:
    image: {image}
    command: ["sh", "-c", "{web_cmd}"]
    deploy:
      replicas: 5
      resources:
        limits:
          cpus: "0.1"
          memory: 50M
      restart_policy:
        condition: on-failure
      update_config:
        monitor: 1s
    stop_grace_period: 1s
    ports:
      - "{port}:80"
    networks:
      - webnet
    secrets:
      - token
    configs:
      - source: conf
        target: /etc/app.conf
  redis:
    image: {image}
    command: ["sh", "-c", "{redis_cmd}"]
    stop_grace_period: 1s
    volumes:
      - redis-data:/data
    deploy:
      placement:
        constraints: [node.role == manager]
      update_config:
        monitor: 1s
    networks:
      - webnet
networks:
  webnet:
volumes:
  redis-data:
secrets:
  token:
    file: ./token.txt
configs:
  conf:
    file: ./app.conf
"""


@pytest.fixture(scope="module")
def shoal(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Shoal]:
    root = tmp_path_factory.mktemp("e2e-svc") / "root"
    sh = Shoal(root)
    sh.env["SHOAL_DEFAULT_ADDRESS_POOLS"] = POOL
    sh("import", str(busybox_tar), IMAGE)
    try:
        yield sh
    finally:
        sh("stack", "rm", "webapp", check=False)
        sh("service", "rm", "cli_web", "cli_redis", check=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sh("ps", "-aq", check=False).stdout.strip():
            time.sleep(0.2)
        pid = sh.daemon_pid()
        if pid:
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
            for _ in range(200):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        teardown_root(root, root / "run")


def _get(port: int, path: str = "/") -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return ""


def _hostnames(port: int, want: int, timeout: float = 30) -> set[str]:
    """Distinct hostnames the published port answers with (round robin over the replicas)."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while len(seen) < want and time.monotonic() < deadline:
        text = _get(port).strip()
        if text:
            seen.add(text)
        else:
            time.sleep(0.2)
    return seen


def _spec(sh: Shoal, name: str) -> dict[str, Any]:
    return json.loads(sh("service", "inspect", name).stdout)[0]


def _normalized(record: dict[str, Any], prefix: str, port: int) -> dict[str, Any]:
    """The spec (`service inspect`'s, Docker's shape) with what must differ taken out: the names
    (`webapp_` / `cli_`), the stack's labels (also on a volume mount: convert's VolumeOptions
    carry the stack's namespace label, a `--mount` none), the published port, the networks',
    secrets' and configs' IDs, and the short-name alias `stack deploy` adds on each network
    (docker/cli's convert does the same; `service create` adds none). Docker's two paths also differ where
    nothing is set: convert gives every service an empty Privileges and only the Resources
    blocks the file has, `service create` no Privileges and both blocks, empty or not."""
    spec = json.loads(json.dumps(record["Spec"]).replace(f'"{prefix}_', '"X_'))
    for key in ("Name", "Labels"):
        spec.pop(key)
    task = spec["TaskTemplate"]
    task["ContainerSpec"].pop("Labels", None)
    for mount in task["ContainerSpec"].get("Mounts", []):
        if mount.get("VolumeOptions") == {"Labels": {"com.docker.stack.namespace": prefix}}:
            mount.pop("VolumeOptions")
    if task["ContainerSpec"].get("Privileges") == {"CredentialSpec": None, "SELinuxContext": None,
                                                   "NoNewPrivileges": False}:
        task["ContainerSpec"].pop("Privileges")
    task["Resources"] = {k: v for k, v in task["Resources"].items() if v}
    for net in task.get("Networks", []):
        net.pop("Aliases", None)
        assert net.pop("Target")
    for kind in ("Secret", "Config"):
        for ref in task["ContainerSpec"].get(kind + "s", []):
            assert ref.pop(kind + "ID")
    for p in spec["EndpointSpec"].get("Ports", []):
        assert p.pop("PublishedPort") == port
    return spec


def _running(sh: Shoal, name: str) -> list[str]:
    rows = sh("service", "ps", "-f", "desired-state=running", "--format", "{{.Name}} {{.CurrentState}}", name).stdout
    return sorted(line.split()[0] for line in rows.splitlines() if line.split()[1] == "Running")


def test_one_command_at_a_time_equals_stack_deploy(shoal: Shoal, tmp_path: Path) -> None:
    sh = shoal
    (tmp_path / "token.txt").write_text("s3cr3t-t0ken\n")
    (tmp_path / "app.conf").write_text("color=green\n")
    stack_port, cli_port = free_port(), free_port()
    (tmp_path / "docker-compose.yml").write_text(COMPOSE.format(image=IMAGE, web_cmd=WEB_CMD, redis_cmd=REDIS_CMD,
                                                                port=stack_port))
    sh("stack", "deploy", "-c", str(tmp_path / "docker-compose.yml"), "webapp", timeout=180)
    # In the background (Docker's default): waited for as a user does, on `stack services`.
    assert wait_replicas(sh, "webapp", 120) == {"webapp_web": "5/5", "webapp_redis": "1/1"}

    # The same, one command at a time.
    sh("secret", "create", "cli_token", str(tmp_path / "token.txt"))
    sh("config", "create", "cli_conf", str(tmp_path / "app.conf"))
    assert sh("volume", "create", "cli_redis-data").stdout == "cli_redis-data\n"
    sh("network", "create", "-d", "overlay", "--scope", "swarm", "cli_webnet")
    redis = sh("service", "create", "--name", "cli_redis", "--mount", "type=volume,source=cli_redis-data,target=/data",
               "--constraint", "node.role == manager", "--network", "cli_webnet", "--stop-grace-period", "1s",
               "--update-monitor", "1s", IMAGE, "sh", "-c", REDIS_CMD, timeout=120)
    assert redis.stdout.splitlines()[-1].startswith("verify: Service ") and redis.stdout.endswith(" converged\n")
    # Created a little off (3 replicas, 64M), then put right by `service update`.
    sh("service", "create", "-q", "--name", "cli_web", "--replicas", "3", "--limit-cpu", "0.1",
       "--limit-memory", "64M", "--restart-condition", "on-failure", "--update-monitor", "1s",
       "--stop-grace-period", "1s", "-p", f"{cli_port}:80", "--network", "cli_webnet",
       "--secret", "source=cli_token,target=token", "--config", "source=cli_conf,target=/etc/app.conf",
       IMAGE, "sh", "-c", WEB_CMD, timeout=120)
    updated = sh("service", "update", "--replicas", "5", "--limit-memory", "50M", "cli_web", timeout=120)
    assert "overall progress: 5 out of 5 tasks" in updated.stdout.splitlines()
    # A bad change, and the rollback that undoes it (the spec and the tasks come back).
    sh("service", "update", "-d", "--env-add", "BROKEN=1", "cli_web")
    rolled = sh("service", "rollback", "cli_web", timeout=120)
    assert "rollback: manually requested rollback" in rolled.stdout

    services = {line.split()[1]: line.split()[3] for line in sh("service", "ls").stdout.splitlines()[1:]}
    assert services == {"webapp_web": "5/5", "webapp_redis": "1/1", "cli_web": "5/5", "cli_redis": "1/1"}
    for stack_name, cli_name in (("webapp_web", "cli_web"), ("webapp_redis", "cli_redis")):
        stack_svc, cli_svc = _spec(sh, stack_name), _spec(sh, cli_name)
        assert stack_svc["Spec"]["Labels"]["com.docker.stack.namespace"] == "webapp"
        assert "com.docker.stack.namespace" not in cli_svc["Spec"]["Labels"]
        web = stack_name == "webapp_web"
        stack_spec = _normalized(stack_svc, "webapp", stack_port if web else 0)
        cli_spec = _normalized(cli_svc, "cli", cli_port if web else 0)
        assert bool(stack_spec["EndpointSpec"].get("Ports")) == web
        assert cli_spec == stack_spec, cli_name
        assert [re.sub(r"^cli_", "webapp_", n) for n in _running(sh, cli_name)] == _running(sh, stack_name)
    # The rollback took BROKEN away again.
    assert "Env" not in _spec(sh, "cli_web")["Spec"]["TaskTemplate"]["ContainerSpec"]

    # Both published ports answer from every replica, with the secret and the config inside.
    for port in (stack_port, cli_port):
        assert len(_hostnames(port, 5)) == 5
        assert _get(port, "/token") == "s3cr3t-t0ken\n" and _get(port, "/conf") == "color=green\n"
    # The named volume holds what the redis stand-in wrote, in both.
    for volume in ("webapp_redis-data", "cli_redis-data"):
        mountpoint = json.loads(sh("volume", "inspect", volume).stdout)[0]["Mountpoint"]
        assert (Path(mountpoint) / "mark").read_text() == "kept\n"
    # In use: the secret and the volume cannot go while the service runs (Docker's refusals).
    refused = sh("secret", "rm", "cli_token", check=False)
    assert refused.returncode == 1 and "is in use by the following service: cli_web" in refused.stderr
