"""Issue 10 item 4: a deployed secret never reaches the disk in a form anyone can read back.

A stack with a secret of a random value is deployed through the real shoald; the task reads it at
/run/secrets/NAME, from a tmpfs; then every file under the state root and the run root (shoald.db
with its WAL and SHM, the events in it, shoald.log, the containers' directories and logs, the
network files) is searched for the value: plain, base64 at each of the three alignments, and hex.
The API's answers are searched too, and the key that seals the secret is root's alone."""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT_ONLY, stop_daemon, teardown_root

pytestmark = ROOT_ONLY


class Shoal:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.run = root / "run"
        self.env = dict(os.environ, SHOAL_ROOT=str(root), SHOAL_RUN=str(self.run),
                        SHOAL_DEFAULT_ADDRESS_POOLS="10.217.0.0/16:24")
        self.env.pop("SHOAL_SOCKET", None)

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "shoal", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"shoal {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc


def wait_for(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def encodings(value: bytes) -> dict[str, bytes]:
    """Every form the value could be found in: plain, hex, and base64 of it at each of the three
    alignments it can have in a longer base64 stream (the groups wholly inside the value)."""
    found = {"plain": value, "hex": value.hex().encode(), "HEX": value.hex().upper().encode()}
    for offset in range(3):
        whole = value[offset:offset + 3 * ((len(value) - offset) // 3)]
        found[f"base64+{offset}"] = base64.b64encode(whole)
        found[f"base64url+{offset}"] = base64.urlsafe_b64encode(whole)
    return found


def tmpfs_mounts() -> dict[str, str]:
    out = {}
    for line in Path("/proc/mounts").read_text().splitlines():
        fields = line.split()
        out[fields[1]] = fields[2]
    return out


def scan(roots: list[Path], patterns: dict[str, bytes], skip: set[str]) -> list[str]:
    """Regular files under the roots holding any pattern, not descending into `skip` mounts."""
    hits = []
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in skip]
            for name in filenames:
                path = os.path.join(dirpath, name)
                try:
                    if not stat.S_ISREG(os.lstat(path).st_mode):
                        continue
                    with open(path, "rb") as f:
                        data = f.read()
                except OSError:
                    continue
                hits += [f"{path}: {kind}" for kind, p in patterns.items() if p in data]
    return hits


@pytest.fixture
def shoal(tmp_path: Path, busybox_tar: Path) -> Iterator[Shoal]:
    sh = Shoal(tmp_path / "root")
    sh("import", str(busybox_tar), "localhost/busybox:test")
    try:
        yield sh
    finally:
        sh("stack", "rm", "sec", check=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sh("ps", "-aq", check=False).stdout.strip():
            time.sleep(0.2)
        stop_daemon(sh.run)
        teardown_root(sh.root, sh.run)
        for target in reversed([m for m in tmpfs_mounts() if str(sh.root) in m]):
            subprocess.run(["umount", "-l", target], check=False)
        shutil.rmtree(sh.root, ignore_errors=True)


def test_a_deployed_secret_is_on_tmpfs_only_and_nowhere_on_disk(shoal: Shoal, tmp_path: Path) -> None:
    value = f"shoal-h2-secret-{secrets.token_hex(24)}".encode()
    (tmp_path / "db_password.txt").write_bytes(value)
    (tmp_path / "app.conf").write_text("color=blue\n")
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        "services:\n  app:\n    image: localhost/busybox:test\n"
        "    command: [sleep, '300']\n    stop_grace_period: 1s\n"
        "    secrets: [{source: db_password, uid: '1000', mode: 0400}]\n"
        "    configs: [{source: app_conf, target: /etc/app.conf}]\n"
        "secrets:\n  db_password:\n    file: ./db_password.txt\n"
        "configs:\n  app_conf:\n    file: ./app.conf\n")
    shoal("stack", "deploy", "-c", str(compose), "sec")

    def app() -> str | None:
        rows = shoal("ps", "--no-trunc", "--format", "{{.ID}} {{.Names}}").stdout.splitlines()
        return next((r.split()[0] for r in rows if r.split()[1].startswith("sec_app.")), None)

    cid = wait_for(app, 30, "the task's container")
    assert shoal("exec", cid, "cat", "/run/secrets/db_password").stdout.encode() == value
    assert shoal("exec", cid, "stat", "-c", "%u %a", "/run/secrets/db_password").stdout.split() == ["1000", "400"]
    assert shoal("exec", cid, "cat", "/etc/app.conf").stdout == "color=blue\n"

    # Nothing on disk holds it: the store, its WAL and events, logs, containers, networks (the
    # task's own tmpfs aside, checked below).
    mounts = tmpfs_mounts()
    host_tmpfs = {m for m, fs in mounts.items() if fs == "tmpfs" and m.startswith(str(shoal.root))}
    hits = scan([shoal.root, shoal.run], encodings(value), skip=host_tmpfs)
    assert not hits, hits
    db = list(shoal.root.glob("shoald.db*"))
    assert {p.name for p in db} >= {"shoald.db", "shoald.db-wal"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in db)

    # In the task, the secret is a tmpfs file; on the host, it sits in a root-only tmpfs.
    pid = shoal("inspect", "-f", "{{.State.Pid}}", cid).stdout.strip()
    inside = {line.split()[4]: line.split(" - ")[1].split()[0]
              for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()}
    assert inside["/run/secrets/db_password"] == "tmpfs"
    assert inside["/etc/app.conf"] == "tmpfs"
    assert host_tmpfs, "no tmpfs under the run root holds the task's files"
    for m in host_tmpfs:
        assert stat.S_IMODE(os.stat(m).st_mode) == 0o700, m

    # The key sealing secrets at rest is root's alone.
    keys = [p for p in shoal.root.rglob("*.key")]
    assert keys
    for key in keys:
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700

    # Nothing the API answers carries the secret.
    sock = shoal.run / "shoal.sock"
    for path in ("/v1/services", "/v1/tasks", "/v1/stacks", "/v1/events?since=0"):
        out = subprocess.run(["curl", "-s", "--max-time", "2", "--unix-socket", str(sock), f"http://shoal{path}"],
                             capture_output=True, timeout=10).stdout
        assert out, path
        assert not [k for k, p in encodings(value).items() if p in out], f"{path} carries the secret"

    # The task's files go with the task.
    shoal("stack", "rm", "sec")
    wait_for(lambda: app() is None, 30, "the task to go")
    wait_for(lambda: not {m for m in tmpfs_mounts() if m in host_tmpfs}, 15, "the task's tmpfs unmounted")
    hits = scan([shoal.root, shoal.run], encodings(value), skip=set())
    assert not hits, hits


def test_task_files_live_on_a_read_only_private_tmpfs_that_goes_with_the_task(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The agent's side alone: files owned and moded as the reference says, on a tmpfs mounted
    0700 nodev,nosuid,noexec and read-only once filled; a task the store has forgotten (its
    removal missed) loses its tmpfs when the next task's files are written."""
    from shoal.agent import taskfiles
    from shoal.manager.files import stored_content
    from shoal.store import SQLiteStore

    monkeypatch.setenv("SHOAL_ROOT", str(tmp_path / "root"))
    monkeypatch.setenv("SHOAL_RUN", str(tmp_path / "root" / "run"))
    store = SQLiteStore(tmp_path / "root" / "shoald.db")
    made: list[str] = []
    try:
        with store.transaction() as tx:
            tx.create("secret", {"id": "s1", "name": "st_pw", **stored_content("secret", "st_pw", b"pw-1")})
            tx.create("task", {"id": "t2", "name": "x"})
        spec = {"secrets": [{"source": "st_pw", "target": "/run/secrets/pw", "uid": "1000", "gid": "50",
                             "mode": 0o440}]}
        for task_id in ("t1", "t2"):
            made.append(task_id)
            mounts = taskfiles.materialize(store, task_id, spec)
            assert [m.target for m in mounts] == ["/run/secrets/pw"] and all(m.read_only for m in mounts)
            source = Path(mounts[0].source)
            assert source.read_bytes() == b"pw-1"
            st = source.stat()
            assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (1000, 50, 0o440)
            line = next(l.split() for l in Path("/proc/mounts").read_text().splitlines()
                        if l.split()[1] == str(taskfiles.task_dir(task_id)))
            assert line[2] == "tmpfs"
            assert {"ro", "nosuid", "nodev", "noexec", "mode=700"} <= set(line[3].split(","))
            with pytest.raises(OSError):
                (taskfiles.task_dir(task_id) / "more").write_text("x")
        # t1 is not in the store: writing t2's files took t1's away.
        assert not os.path.ismount(taskfiles.task_dir("t1")) and not taskfiles.task_dir("t1").exists()
        taskfiles.remove("t2")
        assert not taskfiles.task_dir("t2").exists()
    finally:
        for task_id in made:
            taskfiles.remove(task_id)
        store.close()
