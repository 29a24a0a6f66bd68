"""shoald as a real process: the root-only socket, the API, one daemon at a time, events, and
a restart that keeps the state."""

from __future__ import annotations

import os
import re
import select
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import teardown_root, terminate

from shoal.api.client import Client
from shoal.errors import InvalidArgument, NotFound


def _start(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "shoal", "daemon"], env=env,
                            stdout=log.open("ab"), stderr=subprocess.STDOUT)


def _wait_socket(sock: Path, proc: subprocess.Popen[bytes]) -> Client:
    client = Client(sock)
    deadline = time.monotonic() + 60  # a bound, not a speed target: CI machines can be busy
    while time.monotonic() < deadline:
        if client.ping():
            return client
        assert proc.poll() is None, "shoald exited"
        time.sleep(0.05)
    raise AssertionError("shoald did not listen")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[tuple[Client, dict[str, str], Path]]:
    env = dict(os.environ, SHOAL_ROOT=str(tmp_path / "root"), SHOAL_RUN=str(tmp_path / "run"),
               SHOAL_DEFAULT_ADDRESS_POOLS="10.217.0.0/16:20")
    env.pop("SHOAL_SOCKET", None)
    log = tmp_path / "shoald.log"
    proc = _start(env, log)
    try:
        client = _wait_socket(tmp_path / "run" / "shoal.sock", proc)
        yield client, env, log
        client.close()
    finally:
        terminate(proc, 10)
        teardown_root(tmp_path / "root", tmp_path / "run")


def stack(name: str, compose: str, tmp: Path) -> dict:
    """A stack as the CLI sends it: the compose file loaded by shoal's own loader."""
    from shoal.compose import load_stack

    path = tmp / f"{name}.yml"
    path.write_text(compose)
    return load_stack([path], name, environ={}).to_dict()


WEBAPP = """
services:
  web:
    image: web:v1
    deploy:
      replicas: 3
    networks: [webnet]
networks:
  webnet:
"""


def test_socket_is_root_only(daemon, tmp_path: Path) -> None:
    mode = stat.S_IMODE((tmp_path / "run" / "shoal.sock").stat().st_mode)
    assert mode & 0o077 == 0


def test_second_daemon_refuses_to_start(daemon, tmp_path: Path) -> None:
    _, env, _ = daemon
    second = subprocess.run([sys.executable, "-m", "shoal", "daemon"], env=env, capture_output=True,
                            text=True, timeout=30)
    assert second.returncode != 0
    assert "another shoald is running" in second.stderr


def test_daemon_start_imports_no_cli_module(daemon) -> None:
    """`shoal daemon` goes straight to shoald: the CLI's parser modules would stay in the
    daemon's memory for its whole life. Seen in a second start (refused, the first holds the
    lock), whose every import -X importtime lists."""
    _, env, _ = daemon
    second = subprocess.run([sys.executable, "-X", "importtime", "-m", "shoal", "daemon"], env=env,
                            capture_output=True, text=True, timeout=30)
    assert second.returncode != 0
    assert "Error: another shoald is running" in second.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in second.stderr.splitlines() if line.startswith("import time:")}
    assert "shoal.daemon" in imported
    assert not {m for m in imported if m.startswith("shoal.cli.") or m == "shoal.api.contexts"} - {"shoal.cli.main"}


def test_deploy_creates_tasks_and_stack_rm_removes_them(daemon, tmp_path: Path) -> None:
    client, _, _ = daemon
    spec = stack("webapp", WEBAPP, tmp_path)
    lines = client.post("/stacks/webapp", {"stack": spec})["lines"]
    assert lines == ["Creating network webapp_webnet", "Creating service webapp_web"]
    assert client.get("/stacks") == [{"Name": "webapp", "Services": 1}]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        # web:v1 is not in this root's store: the worker may reject the tasks (and the
        # orchestrator replace them) before a poll sees them assigned; their slots stay 1-3.
        tasks = client.get("/tasks", stack="webapp")
        if {t["slot"] for t in tasks} == {1, 2, 3}:
            break
        time.sleep(0.05)
    assert {t["slot"] for t in tasks} == {1, 2, 3}
    assert all(t["node_id"] for t in tasks)  # every one was scheduled
    again = client.post("/stacks/webapp", {"stack": spec})["lines"]
    assert again[0].startswith("Updating service webapp_web (id: ")
    assert client.delete("/stacks/webapp")["lines"] == ["Removing service webapp_web", "Removing network webapp_webnet"]
    assert client.get("/stacks") == []


def test_unknown_service_is_a_404_with_docker_wording(daemon) -> None:
    client, _, _ = daemon
    with pytest.raises(NotFound, match="^service nope not found$"):  # moby's getService
        client.get("/services/nope")


def test_malformed_stack_is_a_400_naming_the_stack(daemon) -> None:
    client, _, _ = daemon
    with pytest.raises(InvalidArgument, match="invalid stack broken"):
        client.post("/stacks/broken", {"stack": {"services": {"web": {"image": "x"}}}})
    assert client.get("/stacks") == []


def test_scale_rejects_global_services(daemon, tmp_path: Path) -> None:
    client, _, _ = daemon
    spec = stack("mon", "services:\n  agent:\n    image: x\n    deploy:\n      mode: global\n", tmp_path)
    client.post("/stacks/mon", {"stack": spec})
    with pytest.raises(Exception, match="scale can only be used with replicated"):
        client.post("/services/mon_agent/scale", {"replicas": 2})


def test_state_survives_a_daemon_restart(daemon, tmp_path: Path) -> None:
    client, env, log = daemon
    client.post("/stacks/webapp", {"stack": stack("webapp", WEBAPP, tmp_path)})
    services_before = client.get("/services")
    proc_pid = int((tmp_path / "run" / "shoald.lock").read_text())
    os.kill(proc_pid, 9)
    time.sleep(0.2)
    proc = _start(env, log)
    try:
        client2 = _wait_socket(tmp_path / "run" / "shoal.sock", proc)
        assert [s["id"] for s in client2.get("/services")] == [s["id"] for s in services_before]
        client2.close()
    finally:
        # Killed if it ignores SIGTERM: never left behind; the test fails all the same.
        assert terminate(proc, 10), "shoald did not stop on SIGTERM within 10 s"


def test_events_replay_from_a_revision(daemon, tmp_path: Path) -> None:
    client, _, _ = daemon
    client.post("/stacks/webapp", {"stack": stack("webapp", WEBAPP, tmp_path)})
    events = list(client.stream_lines("/events", since="0", follow="0"))
    assert any('"type": "service", "action": "create"' in e and "webapp_web" in e for e in events)


def test_deploys_of_one_stack_at_once_never_duplicate_anything(daemon, tmp_path: Path) -> None:
    """Several clients deploying the same stack together: each is applied whole or refused with
    Docker-like wording (409), and the stack ends with one of each service and network."""
    import threading

    from shoal.errors import Conflict

    client, _, _ = daemon
    body = {"stack": stack("webapp", WEBAPP, tmp_path)}
    start = threading.Barrier(6)
    outcomes: list[str] = []

    def deploy() -> None:
        start.wait()
        try:
            Client(client.sock).post("/stacks/webapp", body)
            outcomes.append("applied")
        except Conflict as exc:
            assert str(exc) == ("stack webapp is being deployed by another client; "
                                "try again when it has finished")
            outcomes.append("refused")

    threads = [threading.Thread(target=deploy) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(outcomes) == 6 and "applied" in outcomes, outcomes
    assert [s["name"] for s in client.get("/services")] == ["webapp_web"]
    assert [n["name"] for n in client.get("/networks") if n["name"].startswith("webapp")] == ["webapp_webnet"]
    deadline = time.monotonic() + 30  # the manager makes the tasks after the deploy returns
    while time.monotonic() < deadline and len(client.get("/tasks", stack="webapp")) < 3:
        time.sleep(0.1)
    time.sleep(0.5)  # a duplicate would show up by now
    assert {t["slot"] for t in client.get("/tasks", stack="webapp")} == {1, 2, 3}


def test_shoald_never_loads_the_clients_compose_files(daemon, tmp_path: Path) -> None:
    """The deploy goes one way: shoald has no route that reads a client's paths or environment
    (the CLI loads the files and sends the stack), so a file on shoald's machine stays unread."""
    from shoal.errors import NotFound

    client, _, _ = daemon
    compose = tmp_path / "c.yml"
    compose.write_text("services:\n  web:\n    image: busybox\n")
    with pytest.raises(NotFound):
        client.post("/stacks/fx/load", {"files": [str(compose)], "environ": {}})


def test_shoald_raises_its_open_files_limit(tmp_path: Path) -> None:
    """A shell's soft limit (1,024) is a few busy stacks' worth of resolver sockets: shoald takes
    the hard limit at start, as Go daemons do, and its systemd unit raises the hard limit."""
    import resource

    env = dict(os.environ, SHOAL_ROOT=str(tmp_path / "root"), SHOAL_RUN=str(tmp_path / "run"))
    env.pop("SHOAL_SOCKET", None)
    log = tmp_path / "shoald.log"
    proc = subprocess.Popen([sys.executable, "-m", "shoal", "daemon"], env=env, stdout=log.open("ab"),
                            stderr=subprocess.STDOUT,
                            preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 4096)))
    try:
        _wait_socket(tmp_path / "run" / "shoal.sock", proc)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        assert re.search(r"^Max open files\s+4096\s+4096\s", limits, re.M), limits
    finally:
        terminate(proc, 10)
        teardown_root(tmp_path / "root", tmp_path / "run")
    unit = (Path(__file__).parents[2] / "contrib" / "shoald.service").read_text()
    assert re.search(r"^LimitNOFILE=1048576$", unit, re.M)


def test_one_node_shoald_loads_no_cryptography(daemon) -> None:
    """A one-node shoald has no certificates to parse or sign and no WireGuard peer: nothing may
    pull in cryptography (~10 MiB of every node's memory), not even the agent's registration,
    which makes the node's WireGuard keypair (wg genkey, not X25519 in-process)."""
    client, _, log = daemon
    deadline = time.monotonic() + 60
    while "session " not in log.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "session " in log.read_text(), "the agent never registered"
    pid = next(int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and _is_shoald(p, log))
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "/cryptography/" not in maps, [line for line in maps.splitlines() if "/cryptography/" in line][:3]


def _is_shoald(proc_dir: Path, log: Path) -> bool:
    """The daemon fixture's process: `python -m shoal daemon` whose stdout is this test's log."""
    try:
        return (b"shoal\0daemon" in (proc_dir / "cmdline").read_bytes()
                and os.readlink(proc_dir / "fd" / "1") == str(log))
    except OSError:
        return False


def test_an_open_events_stream_does_not_hold_shoald_s_stop(tmp_path: Path) -> None:
    """`shoal events` and `logs -f` only end when their client goes: shoald ends them when it
    stops rather than wait for them (aiohttp's graceful stop waited 60 s, twice)."""
    env = dict(os.environ, SHOAL_ROOT=str(tmp_path / "root"), SHOAL_RUN=str(tmp_path / "run"))
    env.pop("SHOAL_SOCKET", None)
    proc = _start(env, tmp_path / "shoald.log")
    events = None
    try:
        _wait_socket(tmp_path / "run" / "shoal.sock", proc)
        events = subprocess.Popen([sys.executable, "-m", "shoal", "events"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # an event through the stream: it is open and being answered
        deadline = time.monotonic() + 30
        line = b""
        n = 0
        while time.monotonic() < deadline and b"secret create" not in line:
            n += 1
            subprocess.run([sys.executable, "-m", "shoal", "secret", "create", f"ev-open-{n}", "-"], env=env,
                           input=b"x", capture_output=True, check=True)
            ready = select.select([events.stdout], [], [], 2)[0]
            line = events.stdout.readline() if ready else b""
        assert b"secret create" in line, "the events stream never showed the secret"
        assert terminate(proc, 20), "shoald did not stop on SIGTERM while an events stream was open"
        _, err = events.communicate(timeout=10)
        assert events.returncode != 0 and err.decode().startswith("Error"), err
    finally:
        if events is not None and events.poll() is None:
            events.kill()
            events.wait()
        terminate(proc, 10)
        teardown_root(tmp_path / "root", tmp_path / "run")


@pytest.mark.parametrize("which", ["SHOAL_ROOT", "SHOAL_RUN"])
def test_a_root_that_cannot_be_made_is_one_line(tmp_path: Path, which: str) -> None:
    """A state or run root below a regular file: shoald says so in one line and exits 1 (it was a
    NotADirectoryError traceback)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    env = dict(os.environ, SHOAL_ROOT=str(tmp_path / "root"), SHOAL_RUN=str(tmp_path / "run"))
    env[which] = str(blocker / "sub")
    proc = subprocess.run([sys.executable, "-m", "shoal", "daemon"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 1 and proc.stderr == f"shoald: cannot use {blocker / 'sub'}: Not a directory\n", proc.stderr
