"""A worker's shoald killed (kill -9) while it pulls a task's image from the manager, as a Swarm
user meets it (a node rebooted or its daemon crashing in the middle of a deploy), on a
three-node local cluster (`shoal cluster create --nodes 3`): the supervisor restarts it, the
pull is made again and the task runs on that node, no task rejected, exactly one copy. (The
task stayed Preparing for good: nothing took up a task its dead shoald had left mid-prepare.)

The image is busybox with a 120 MB layer of random bytes, on the manager only; the kill comes
once the node's image store has begun writing a blob. Real processes over real TLS."""

from __future__ import annotations

import os
import shutil
import signal
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

from cluster.test_local_cluster import cluster_with_web_image  # noqa: E402
from cluster.test_node_failure import process_copies, wait_for  # noqa: E402

NODES = 3
WORKER = 3


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Any]:
    base = tmp_path_factory.mktemp("failpull")
    big = base / "big.tar"
    shutil.copy(busybox_tar, big)
    blob = base / "blob"
    with blob.open("wb") as f:
        f.write(os.urandom(120 * 1024 * 1024))
    with tarfile.open(big, "a") as tar:
        tar.add(blob, arcname="blob")
    blob.unlink()
    with cluster_with_web_image(base, f"shoalfp{os.getpid() % 10000}", NODES, busybox_tar) as c:
        c.on_node(1, "import", str(big), "big:v1")
        big.unlink()
        yield c


def test_worker_kill9_during_pull_retries(cluster: Any) -> None:
    ingest = Path(cluster.node(WORKER)["root"]) / "image" / "ingest"
    cluster.shoal("service", "create", "--detach", "--name", "big", "--constraint",
                  f"node.hostname=={cluster.name}-{WORKER}", "--stop-grace-period", "1s", "big:v1",
                  "sh", "-c", "exec tail -f /dev/null")
    wait_for("the worker pulling", lambda: ingest.is_dir() and any(ingest.iterdir()), 30, every=0.01)
    pid = cluster.pid(WORKER)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_for("a new shoald on the worker", lambda: (p := cluster.pid(WORKER)) is not None and p != pid, 30)

    def task() -> Any:
        out = cluster.shoal("service", "ps", "big", "--format", "{{.Node}}\t{{.CurrentState}}\t{{.Error}}",
                            timeout=60).stdout.splitlines()
        return out if out and out[0].split("\t")[1].startswith("Running") else None

    rows = wait_for("the task running after the pull was made again", task, 45, every=0.5)
    assert rows[0].split("\t")[0] == f"{cluster.name}-{WORKER}", rows
    assert not [r for r in rows if "Rejected" in r], rows
    assert len(process_copies(cluster.name, "tail")) == 1
    assert cluster.shoal("service", "ls", "--format", "{{.Replicas}}").stdout.strip() == "1/1"
