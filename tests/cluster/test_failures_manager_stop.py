"""The manager's shoald stopped (SIGTERM, as `systemctl stop shoald`) while a `stack deploy` is
under way, then started again (`shoal cluster start`, as `systemctl start shoald`), on a
three-node local cluster with the seed-like stack running (busybox httpd, 5 replicas, image on
the manager only):

- a clean stop is not restarted by the cluster's supervisor (contrib/shoald.service's
  Restart=on-failure), and nothing else could start that node's shoald again: `cluster start`
  does; the workers' copies run on meanwhile, the same processes;
- the deploy under way either finished or left nothing half-made (its service without its
  network, say); deployed again, the second stack converges: exactly 10 copies run, and no task
  of the first was restarted anywhere (the same task IDs, the same processes).

Copies are counted from /proc. Real processes over real TLS, as test_node_failure.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

from cluster.test_node_failure import app_copies, running, seed_app_cluster, tasks, wait_for  # noqa: E402
from cluster.test_seed_cluster import seed_compose  # noqa: E402

NODES = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Any]:
    name = f"shoalms{os.getpid() % 10000}"
    with seed_app_cluster(tmp_path_factory.mktemp("failstop"), name, NODES, busybox_tar) as c:
        yield c


def second_stack(c: Any) -> Path:
    path = seed_compose(c.base, name="other.yml")
    path.write_text(path.read_text().replace("4000:80", "4001:80").replace("- 4000", "- 4001"))
    return path


def services(c: Any) -> dict[str, str]:
    out = c.shoal("service", "ls", "--format", "{{.Name}}\t{{.Replicas}}", timeout=60).stdout
    return dict(ln.split("\t") for ln in out.splitlines() if "\t" in ln)


def test_manager_stopped_during_a_deploy_then_started(cluster: Any) -> None:
    before = {r["id"] for r in running(tasks(cluster))}
    on_workers = {x for x in app_copies(cluster.name) if x[0] != 1}
    assert len(before) == 5 and on_workers
    compose = second_stack(cluster)
    assert "4001" in compose.read_text()
    deploy = subprocess.Popen([sys.executable, "-m", "shoal", "stack", "deploy", "--detach", "-c", str(compose), "app2"],
                              env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # Stopped once the deploy's request is on its way (the CLI has loaded the files by then).
    time.sleep(1.0)
    pid = cluster.pid(1)
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    out, err = deploy.communicate(timeout=60)
    wait_for("the manager's shoald gone", lambda: not Path(f"/proc/{pid}").exists(), 30)
    time.sleep(3)  # longer than RestartSec: a clean stop is not restarted
    assert cluster.pid(1) is None and not cluster.answers(1)
    assert {x for x in app_copies(cluster.name) if x[0] != 1} >= on_workers  # the workers carry on

    assert cluster.shoal("cluster", "start", cluster.name).stdout == f"{cluster.name}\n"
    assert cluster.answers(1)
    status = cluster.shoal("cluster", "ls").stdout
    assert f"Running ({NODES}/{NODES})" in status, status
    # Whatever the stop cut short, no half of it: app2 is there whole (service and its
    # network) or not at all.
    found = services(cluster)
    networks = cluster.on_node(1, "network", "ls", "--format", "{{.Name}}").stdout.split()
    assert ("app2_web" in found) == ("app2_webnet" in networks), (deploy.returncode, out, err, found, networks)
    cluster.shoal("stack", "deploy", "--detach", "-c", str(compose), "app2")
    wait_for("app2 5/5", lambda: services(cluster).get("app2_web") == "5/5", 60)
    wait_for("exactly 10 copies", lambda: len(app_copies(cluster.name)) == 10, 30)
    # The first stack was left alone: the same tasks, the same processes on the workers.
    assert {r["id"] for r in running(tasks(cluster))} == before
    assert on_workers <= set(app_copies(cluster.name))
    assert services(cluster)["webapp_web"] == "5/5"
    # Nothing to start: it says so by naming the cluster, and starts nothing.
    assert cluster.shoal("cluster", "start", cluster.name).stdout == f"{cluster.name}\n"
