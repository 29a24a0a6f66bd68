"""Templated configs and secrets (`template_driver: golang`) through a real shoald: each task's
file holds the text rendered for it (its environment, its slot, another secret it has), the
rendered secret reaches nothing but the task's tmpfs, and a template naming a secret the task was
not given fails the task with swarmkit's words."""

from __future__ import annotations

import json

from pathlib import Path

from tests.conftest import ROOT_ONLY, poll

pytestmark = ROOT_ONLY

PASSWORD = "tpl-pa55-9f3c71"


def test_templated_config_and_secret_are_rendered_per_task(shoal, busybox_image: str, shoal_root: Path,
                                                           tmp_path: Path) -> None:
    (tmp_path / "pw.txt").write_text(PASSWORD)
    (tmp_path / "app.conf.tmpl").write_text(
        'greeting={{env "GREETING"}} slot={{.Task.Slot}} svc={{.Service.Name}} pw={{secret "pw"}}\n')
    (tmp_path / "dsn.tmpl").write_text('dsn=app:{{secret "pw"}}@db/{{.Task.Slot}}\n')
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        f"services:\n  app:\n    image: {busybox_image}\n"
        "    command: [sh, -c, 'echo started; exec sleep 300']\n"
        "    environment: [GREETING=hello]\n"
        "    stop_grace_period: 1s\n    deploy: {replicas: 2}\n"
        "    secrets: [pw, dsn]\n"
        "    configs: [{source: conf, target: /etc/app.conf}]\n"
        "secrets:\n  pw: {file: ./pw.txt}\n  dsn: {file: ./dsn.tmpl, template_driver: golang}\n"
        "configs:\n  conf: {file: ./app.conf.tmpl, template_driver: golang}\n")
    try:
        shoal("stack", "deploy", "-c", str(compose), "h6t", check=True)
        poll(lambda: shoal("service", "logs", "--raw", "h6t_app").stdout.count("started") == 2, 30, "both tasks")
        names = shoal("ps", "--filter", "name=h6t_app", "--format", "{{.Names}}", check=True).stdout.split()
        # Read in the containers (not printed by them: a task's output is logged to disk).
        lines = sorted(shoal("exec", name, "cat", "/etc/app.conf", "/run/secrets/dsn", check=True).stdout
                       for name in names)
        assert lines == [f"greeting=hello slot=1 svc=h6t_app pw={PASSWORD}\ndsn=app:{PASSWORD}@db/1\n",
                         f"greeting=hello slot=2 svc=h6t_app pw={PASSWORD}\ndsn=app:{PASSWORD}@db/2\n"]
        # `inspect` finds a task by ID (and --type task by name), printed as moby's swarm.Task.
        task_ids = shoal("service", "ps", "-q", "--no-trunc", "h6t_app", check=True).stdout.split()
        states = sorted(shoal("inspect", "--format", "{{.Slot}} {{.Status.State}} {{.DesiredState}}", task_id,
                              check=True).stdout for task_id in task_ids)
        assert states == ["1 running running\n", "2 running running\n"]
        name = next(n for n in names if n.startswith("h6t_app.2."))  # a task's name is its container's
        task = json.loads(shoal("inspect", "--type", "task", name, check=True).stdout)[0]
        assert task["ID"] in task_ids and task["Slot"] == 2
        assert task["Spec"]["ContainerSpec"]["Env"] == ["GREETING=hello"]
        inspected = json.loads(shoal("secret", "inspect", "h6t_dsn", check=True).stdout)[0]
        assert inspected["Spec"]["Templating"] == {"Name": "golang"}
        # The rendered secret, like the secret it reads, is on no disk file of the node's roots.
        for path in shoal_root.rglob("*"):
            if path.is_file() and not path.is_symlink() and "taskfiles" not in path.parts:
                try:
                    assert PASSWORD.encode() not in path.read_bytes(), path
                except (PermissionError, OSError):
                    continue
    finally:
        shoal("stack", "rm", "h6t")


def test_a_template_reading_a_secret_the_task_lacks_fails_the_task(shoal, busybox_image: str) -> None:
    shoal("secret", "create", "h6_other", "-", input=PASSWORD, check=True)
    made = shoal("config", "create", "--template-driver", "golang", "h6_bad", "-",
                 input='x={{secret "h6_other"}}\n', check=True)
    config_id = made.stdout.strip()
    try:
        shoal("service", "create", "--detach", "--name", "h6_bad", "--stop-grace-period", "1s",
              "--config", "source=h6_bad,target=/etc/x", busybox_image, "sleep", "300", check=True)
        error = poll(lambda: shoal("service", "ps", "--no-trunc", "--format", "{{.Error}}", "h6_bad").stdout.strip(),
                      30, "the task's error")
        assert error.splitlines()[0] == '"%s"' % (  # the ERROR column quotes it, as docker/cli's
            f"unable to get config from config store: failed to expand templated config {config_id}: "
            'template: expansion:1:4: executing "expansion" at <secret "h6_other">: '
            "error calling secret: secret target h6_other not found")
    finally:
        shoal("service", "rm", "h6_bad")
        poll(lambda: shoal("config", "rm", "h6_bad").returncode == 0, 30, "the config to be free")
        shoal("secret", "rm", "h6_other")
