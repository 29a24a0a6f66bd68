"""`shoal secret` / `shoal config` against a real shoald: made by the CLI, used as external objects
by a stack whose task reads them, refused removal while in use (swarmkit's words, exit 1), never
stored or answered in the clear."""

from __future__ import annotations

import json
import os

from pathlib import Path
from typing import Any

from tests.conftest import ROOT_ONLY, poll

pytestmark = ROOT_ONLY


def _err(result: Any) -> str:
    """stderr without the note that the first command started shoald."""
    return "".join(line for line in result.stderr.splitlines(keepends=True) if not line.startswith("Starting shoald"))


def test_secret_and_config_lifecycle_with_a_stack(shoal, busybox_image: str, shoal_root: Path, tmp_path: Path) -> None:
    made = shoal("secret", "create", "--label", "env=test", "h4_token", "-", input="pa55-w0rd-h4\n", check=True)
    secret_id = made.stdout.strip()
    assert len(secret_id) == 25
    (tmp_path / "app.conf").write_text("color=green\n")
    config_id = shoal("config", "create", "h4_conf", str(tmp_path / "app.conf"), check=True).stdout.strip()
    try:
        listing = shoal("secret", "ls", check=True).stdout.splitlines()
        assert listing[0].split() == ["ID", "NAME", "DRIVER", "CREATED", "UPDATED"]
        assert any(line.startswith(secret_id) and " h4_token " in line for line in listing)
        assert shoal("secret", "ls", "-q", "--filter", "label=env=test", check=True).stdout.split() == [secret_id]
        assert shoal("config", "ls", "--format", "{{.Name}}", "-f", "name=h4_", check=True).stdout == "h4_conf\n"
        inspected = json.loads(shoal("secret", "inspect", "h4_token", check=True).stdout)
        assert inspected[0]["ID"] == secret_id and inspected[0]["Spec"]["Labels"] == {"env": "test"}
        assert "pa55" not in json.dumps(inspected) and "Data" not in inspected[0]["Spec"]
        pretty = shoal("config", "inspect", "--pretty", config_id[:8], check=True).stdout
        assert pretty.startswith(f"ID:\t\t\t{config_id}\nName:\t\t\th4_conf\n") and pretty.endswith("Data:\ncolor=green\n\n")
        # Sealed at rest: the clear text is nowhere under the state root's database files.
        for db in shoal_root.glob("shoald.db*"):
            assert b"pa55-w0rd-h4" not in db.read_bytes()

        again = shoal("secret", "create", "h4_token", "-", input="x")
        assert (again.returncode, _err(again)) == (
            1, "Error response from daemon: rpc error: code = AlreadyExists desc = secret h4_token already exists\n")

        compose = tmp_path / "docker-compose.yml"
        compose.write_text(
            f"services:\n  app:\n    image: {busybox_image}\n"
            "    command: [sh, -c, 'cat /run/secrets/token /etc/app.conf; exec sleep 300']\n"
            "    stop_grace_period: 1s\n"
            "    secrets: [{source: token}]\n"
            "    configs: [{source: conf, target: /etc/app.conf}]\n"
            "secrets:\n  token:\n    external: true\n    name: h4_token\n"
            "configs:\n  conf:\n    external: true\n    name: h4_conf\n")
        deployed = shoal("stack", "deploy", "-c", str(compose), "h4s", check=True)
        assert "Creating secret" not in deployed.stdout
        poll(lambda: "color=green" in shoal("service", "logs", "--raw", "h4s_app").stdout, 30, "the task's output")
        assert "pa55-w0rd-h4" in shoal("service", "logs", "--raw", "h4s_app").stdout

        refused = shoal("secret", "rm", "h4_token")
        assert refused.returncode == 1 and refused.stdout == ""
        assert _err(refused) == ("Error response from daemon: rpc error: code = InvalidArgument desc = secret "
                                  "'h4_token' is in use by the following service: h4s_app\n")
        refused = shoal("config", "rm", "nosuch", "h4_conf")
        assert refused.returncode == 1
        assert _err(refused).splitlines() == [
            "Error response from daemon: config nosuch not found",
            "Error response from daemon: rpc error: code = InvalidArgument desc = config 'h4_conf' is in use by "
            "the following service: h4s_app"]
        assert shoal("secret", "ls", "-q", check=True).stdout.split().count(secret_id) == 1

        removed = shoal("stack", "rm", "h4s", check=True).stdout.splitlines()
        assert removed == ["Removing service h4s_app", "Removing network h4s_default"]  # external: kept
    finally:
        shoal("stack", "rm", "h4s")
    assert shoal("secret", "rm", "h4_token", check=True).stdout == "h4_token\n"
    assert shoal("config", "rm", config_id, check=True).stdout == f"{config_id}\n"
    assert _err(shoal("secret", "inspect", "h4_token")) == "Error response from daemon: secret h4_token not found\n"


def test_bad_input_is_one_line_and_nothing_is_made(shoal, tmp_path: Path) -> None:
    big = tmp_path / "big"
    big.write_bytes(os.urandom(500 * 1024))
    result = shoal("secret", "create", "h4_big", str(big))
    assert (result.returncode, _err(result)) == (1, "Error response from daemon: rpc error: code = InvalidArgument "
                                                     "desc = secret data must be larger than 0 and less than 512000 bytes\n")
    result = shoal("config", "create", "h4_missing", str(tmp_path / "nope"))
    assert result.returncode == 1
    assert _err(result) == (f'Error: error reading content from "{tmp_path}/nope": error reading from '
                             f"{tmp_path}/nope: open {tmp_path}/nope: no such file or directory\n")
    result = shoal("config", "create", "--template-driver", "jinja", "h4_tpl", "-", input="x")
    assert "template driver 'jinja' not supported" in result.stderr and result.returncode == 1
    result = shoal("secret", "ls", "--filter", "driver=x")
    assert (result.returncode, _err(result)) == (1, "Error response from daemon: invalid filter 'driver'\n")
    names = shoal("secret", "ls", "--format", "{{.Name}}", check=True).stdout.split()
    assert "h4_big" not in names
    assert "h4_missing" not in shoal("config", "ls", "--format", "{{.Name}}", check=True).stdout.split()


def test_a_golang_templated_config_is_expanded_for_each_task(shoal, busybox_image: str, tmp_path: Path) -> None:
    shoal("config", "create", "--template-driver", "golang", "h4_tpl", "-",
          input="svc={{.Service.Name}} slot={{ .Task.Slot }} node={{.Node.Hostname}}\n", check=True)
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        f"services:\n  app:\n    image: {busybox_image}\n"
        "    command: [sh, -c, 'cat /etc/app.conf; exec sleep 300']\n"
        "    stop_grace_period: 1s\n    deploy: {replicas: 2}\n"
        "    configs: [{source: tpl, target: /etc/app.conf}]\n"
        "configs:\n  tpl:\n    external: true\n    name: h4_tpl\n")
    try:
        shoal("stack", "deploy", "-c", str(compose), "h4t", check=True)
        logs = poll(lambda: (lambda out: out if out.count("svc=") == 2 else None)(
            shoal("service", "logs", "--raw", "h4t_app").stdout), 30, "both tasks' output")
        lines = sorted(line for line in logs.splitlines() if line.startswith("svc="))
        hostname = os.uname().nodename
        assert [line.split(" node=")[0] for line in lines] == ["svc=h4t_app slot=1", "svc=h4t_app slot=2"]
        assert all(line.split(" node=")[1] for line in lines) and "{{" not in logs, (lines, hostname)
        assert json.loads(shoal("config", "inspect", "h4_tpl", check=True).stdout)[0]["Spec"]["Templating"] == \
            {"Name": "golang"}
    finally:
        shoal("stack", "rm", "h4t")
    poll(lambda: shoal("config", "rm", "h4_tpl").returncode == 0, 30, "the config to be free")
