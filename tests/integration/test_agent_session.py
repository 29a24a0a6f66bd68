"""The agent's session with the manager, in a real shoald: its own store of assignments (0600,
no secret in it), and a session cut while tasks run: they keep running, an exit during the cut
is recorded by the node and reaches the manager once the session is back, and the manager then
replaces the task.

shoald here is the real Daemon, started as its own process, with the in-process session wrapped
so that the test can cut it (a file's existence makes every call raise Unreachable, as a
manager that does not answer) and with a long heartbeat period so the cut node is not marked
down meanwhile (a node marked down has its tasks replaced: tests/unit/test_dispatcher.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT_ONLY, run_shoal, teardown_root, terminate

from shoal.api.client import Client

pytestmark = ROOT_ONLY

LAUNCH = r'''
import asyncio, logging, sys
from pathlib import Path
from shoal.daemon import Daemon
from shoal.agent.inprocess import InProcessSession
from shoal.agent.session import Unreachable

CUT = Path(sys.argv[1])

class Severable(InProcessSession):
    def _check(self):
        if CUT.exists():
            raise Unreachable("session cut by the test")
    async def register(self, description):
        self._check()
        return await super().register(description)
    async def assignments(self):
        async for found in super().assignments():
            self._check()
            yield found
    async def update_status(self, updates):
        self._check()
        await super().update_status(updates)
    async def heartbeat(self):
        self._check()
        return await super().heartbeat()

logging.basicConfig(level=logging.INFO, format="%(asctime)s shoald %(levelname)s %(message)s")
daemon = Daemon(session_factory=lambda d: Severable(d.dispatcher))
daemon.dispatcher.set_heartbeat_period(30.0)
asyncio.run(daemon.serve())
'''

COMPOSE = """
services:
  app:
    image: localhost/busybox:test
    command: ["sleep", "3600"]
    secrets: [token]
    deploy:
      replicas: 2
      restart_policy: {condition: any, delay: 1s}
secrets:
  token:
    file: ./token.txt
"""
SECRET = b"s3ssion-secret-value-7781"


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout  # a bound, not a speed target
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def node(tmp_path: Path, busybox_tar: Path) -> Iterator[dict[str, Any]]:
    root, run = tmp_path / "root", tmp_path / "run"
    env = dict(os.environ, SHOAL_ROOT=str(root), SHOAL_RUN=str(run),
               SHOAL_DEFAULT_ADDRESS_POOLS="10.218.0.0/16:24")
    env.pop("SHOAL_SOCKET", None)
    cut = tmp_path / "cut"
    log = tmp_path / "shoald.log"
    run_shoal("import", str(busybox_tar), "localhost/busybox:test", check=True, env=env)
    proc = subprocess.Popen([sys.executable, "-c", LAUNCH, str(cut)], env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT)
    try:
        client = Client(run / "shoal.sock")
        wait_for(lambda: proc.poll() is not None or client.ping(), 60, "shoald to listen")
        assert proc.poll() is None, log.read_text()
        yield {"env": env, "root": root, "cut": cut, "client": client, "log": log, "dir": tmp_path}
    finally:
        cut.unlink(missing_ok=True)
        try:
            # Removed by this shoald, so its worker takes the tasks' secret tmpfs down with them.
            if proc.poll() is None and client.ping():
                client.delete("/stacks/sess")
                wait_for(lambda: not manager_tasks(client), 60, "the stack's tasks to go")
        finally:
            client.close()
            terminate(proc, 20)
            _unmount_taskfiles(run)
            teardown_root(root, run)


def _unmount_taskfiles(run: Path) -> None:
    """Whatever a failed run left of the tasks' secret tmpfs mounts."""
    from shoal.agent import taskfiles

    old = os.environ.get("SHOAL_RUN")
    os.environ["SHOAL_RUN"] = str(run)
    try:
        for name in os.listdir(run / "taskfiles") if (run / "taskfiles").is_dir() else []:
            taskfiles.remove(name)
    finally:
        if old is None:
            os.environ.pop("SHOAL_RUN", None)
        else:
            os.environ["SHOAL_RUN"] = old


def manager_tasks(client: Client) -> list[dict[str, Any]]:
    return [t for t in client.get("/tasks") if t["service_name"] == "sess_app"]


def local_tasks(root: Path) -> dict[str, dict[str, Any]]:
    """The agent's own store, read as another process may read a SQLite file."""
    from shoal.store import SQLiteStore

    store = SQLiteStore(root / "worker" / "tasks.db")
    try:
        return {t["id"]: t for t in store.list("task")}
    finally:
        store.close()


def test_tasks_keep_running_while_the_session_is_cut_and_their_states_arrive_after(node: dict[str, Any]) -> None:
    env, root, client = node["env"], node["root"], node["client"]
    (node["dir"] / "token.txt").write_bytes(SECRET)
    (node["dir"] / "stack.yml").write_text(COMPOSE)
    deployed = subprocess.run([sys.executable, "-m", "shoal", "stack", "deploy", "-c", "stack.yml", "sess"],
                              cwd=node["dir"], env=env, capture_output=True, text=True, timeout=120)
    assert deployed.returncode == 0, deployed.stderr

    def running_in_manager() -> list[dict[str, Any]]:
        tasks = [t for t in manager_tasks(client) if t["desired_state"] == "running"
                 and t["status"]["state"] == "running"]
        return tasks if len(tasks) == 2 else []

    first = wait_for(running_in_manager, 60, "2 tasks running")
    # The agent's store has them too, running, with their containers; it is root's alone and
    # holds no secret (that is in memory and on the task's tmpfs only).
    local = local_tasks(root)
    assert {t["id"] for t in first} <= set(local)
    assert all(local[t["id"]]["status"]["state"] == "running" for t in first)
    db = root / "worker" / "tasks.db"
    assert db.stat().st_mode & 0o777 == 0o600
    for path in db.parent.iterdir():
        assert SECRET not in path.read_bytes()

    # Cut the session: the agent loses the manager.
    node["cut"].touch()
    wait_for(lambda: "session with the manager ended" in node["log"].read_text(), 30, "the agent to see the cut")
    victim, survivor = sorted(first, key=lambda t: t["id"])
    pid = local[victim["id"]]["status"]["pid"]
    survivor_pid = local[survivor["id"]]["status"]["pid"]
    assert pid > 0 and survivor_pid > 0
    os.kill(pid, signal.SIGKILL)
    # The node records the exit in its own store; the manager cannot hear of it yet.
    wait_for(lambda: local_tasks(root)[victim["id"]]["status"]["state"] == "failed", 30,
             "the node to record the exit")
    time.sleep(1.0)
    still = {t["id"]: t for t in manager_tasks(client)}
    assert still[victim["id"]]["status"]["state"] == "running"
    # The other task keeps running, the same process, throughout.
    assert os.path.exists(f"/proc/{survivor_pid}")

    # The session comes back: the state the node kept reaches the manager, which replaces the
    # task; the survivor was never touched.
    node["cut"].unlink()
    wait_for(lambda: {t["id"]: t for t in manager_tasks(client)}[victim["id"]]["status"]["state"] == "failed",
             60, "the failure to reach the manager")
    after = wait_for(running_in_manager, 60, "the replacement to run")
    assert survivor["id"] in {t["id"] for t in after} and victim["id"] not in {t["id"] for t in after}
    assert local_tasks(root)[survivor["id"]]["status"]["pid"] == survivor_pid
    assert os.path.exists(f"/proc/{survivor_pid}")
