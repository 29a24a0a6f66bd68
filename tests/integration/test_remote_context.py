"""Every node command acts on the node the context names (issue 11 item 3): a real shoald of its
own (its own SHOAL_ROOT) that ran `swarm init` on 127.0.0.1, reached by the real `shoal` CLI
over TCP and mutual TLS through a context; the CLI's own machine has another SHOAL_ROOT, which
must stay untouched. Also: a hostile build context tar is refused, nothing written outside its
temporary directory, and a worker's certificate gets none of the node routes."""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT_ONLY, make_busybox_rootfs_tar, stop_daemon, teardown_root  # tests/conftest.py

pytestmark = ROOT_ONLY


def cli(env: dict[str, str], *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([sys.executable, "-m", "shoal", *args], capture_output=True, env=env,
                          input=input, timeout=120)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Node:
    def __init__(self, env: dict[str, str], client_env: dict[str, str], port: int, base: Path) -> None:
        self.env, self.client_env, self.port, self.base = env, client_env, port, base

    def shoal(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        """The CLI on the client machine, through the context `far`."""
        return cli(self.client_env, "-c", "far", *args, input=input)


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    base = tmp_path_factory.mktemp("remote")
    root, run = base / "node", base / "node" / "run"
    env = dict(os.environ, SHOAL_ROOT=str(root), SHOAL_RUN=str(run), SHOAL_CONFIG=str(base / "node-cfg.json"),
               SHOAL_DEFAULT_ADDRESS_POOLS="10.219.0.0/16:24")
    for k in ("SHOAL_HOST", "SHOAL_CONTEXT", "SHOAL_CERT_PATH", "SHOAL_SOCKET"):
        env.pop(k, None)
    client_root = base / "client"
    client_env = dict(env, SHOAL_ROOT=str(client_root), SHOAL_RUN=str(client_root / "run"),
                      SHOAL_CONFIG=str(base / "client-cfg" / "config.json"))
    root.mkdir()
    log = open(base / "shoald.log", "ab")
    # Uploads capped at 20 MB on this node (test_hostile_build_context_is_refused sends more).
    daemon = subprocess.Popen([sys.executable, "-m", "shoal", "daemon"], env=dict(env, SHOAL_UPLOAD_MAX="20000000"),
                              stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        from shoal.api.client import Client

        # Waited for without the CLI: a command finding no shoald yet would start a second one.
        deadline = time.monotonic() + 60
        while not Client(run / "shoal.sock").ping():
            assert daemon.poll() is None and time.monotonic() < deadline, (base / "shoald.log").read_text()[-2000:]
            time.sleep(0.1)
        port = _free_port()
        init = cli(env, "swarm", "init", "--advertise-addr", "127.0.0.1", "--listen-addr", f"127.0.0.1:{port}")
        assert init.returncode == 0, init.stderr
        # The node's own busybox (an import on the node, as its admin would do).
        tar = make_busybox_rootfs_tar(base / "busybox.tar")
        assert cli(env, "import", str(tar), "localhost/busybox:test").returncode == 0
        # The client holds the node's CA and a manager certificate of the cluster (as `context
        # create` copies them); its own state root is elsewhere.
        certs = root / "certificates"
        made = cli(client_env, "context", "create", "far", "--host", f"tcp://127.0.0.1:{port}",
                   "--tls-ca", str(certs / "swarm-root-ca.crt"), "--tls-cert", str(certs / "swarm-node.crt"),
                   "--tls-key", str(certs / "swarm-node.key"))
        assert made.returncode == 0, made.stderr
        yield Node(env, client_env, port, base)
    finally:
        stop_daemon(run)
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        teardown_root(root, run)
        teardown_root(client_root, client_root / "run")


def _client_root_untouched(node: Node) -> None:
    client_root = Path(node.client_env["SHOAL_ROOT"])
    assert not (client_root / "image").exists() and not (client_root / "containers").exists(), \
        sorted(p.name for p in client_root.iterdir()) if client_root.exists() else None


def test_build_images_save_load_on_the_node(node: Node, tmp_path: Path) -> None:
    app = tmp_path / "app"
    app.mkdir()
    (app / "Dockerfile").write_text("FROM localhost/busybox:test\nCOPY . /app\nRUN ls /app && echo built-on-node\n"
                                    'CMD ["cat", "/app/hello"]\n')
    (app / "hello").write_text("hello from the context\n")
    (app / "private.key").write_text("never sent\n")
    (app / ".dockerignore").write_text("private.key\n")
    built = node.shoal("build", "-t", "web:v1", str(app))
    assert built.returncode == 0, built.stderr
    out = built.stdout.decode()
    # The builder's own lines, streamed back as a local build prints them.
    assert out.startswith("Sending build context to Docker daemon")
    assert "Step 3/4 : RUN ls /app && echo built-on-node" in out and "built-on-node\n" in out
    assert "hello" in out and "private.key" not in out  # .dockerignore applied before sending
    assert out.rstrip().endswith("Successfully tagged web:v1")

    remote = node.shoal("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert remote.returncode == 0, remote.stderr
    assert sorted(remote.stdout.decode().split()) == ["localhost/busybox:test", "web:v1"]
    # The node's own store has it; the table is the local command's.
    assert b"web:v1" in cli(node.env, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout
    assert node.shoal("images").stdout.decode().split("\n")[0].split() == \
        ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    history = node.shoal("history", "--format", "{{.CreatedBy}}", "web:v1")
    assert history.returncode == 0 and "echo built-on-node" in history.stdout.decode()
    inspect = json.loads(node.shoal("image", "inspect", "web:v1").stdout)
    assert inspect[0]["RepoTags"] == ["web:v1"]

    # -q: only the ID, as a local build -q prints it.
    quiet = node.shoal("build", "-q", "-t", "web:q", str(app))
    assert quiet.returncode == 0 and quiet.stdout.decode().strip() == inspect[0]["Id"]

    # save | load through the node: the archive is streamed both ways.
    archive = node.shoal("save", "web:v1")
    assert archive.returncode == 0 and len(archive.stdout) > 100_000, archive.stderr
    assert node.shoal("rmi", "web:v1", "web:q").returncode == 0
    gone = node.shoal("image", "inspect", "web:v1")
    assert gone.returncode != 0 and b"No such image: web:v1" in gone.stderr
    loaded = node.shoal("load", input=archive.stdout)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.decode().strip() == "Loaded image: web:v1"
    tagged = node.shoal("tag", "web:v1", "web:v2")
    assert tagged.returncode == 0, tagged.stderr
    assert b"web                 v2" in cli(node.env, "images").stdout

    # import: the root filesystem tarball streamed to the node, the reference checked here first.
    rootfs = make_busybox_rootfs_tar(tmp_path / "rootfs.tar")
    imported = node.shoal("import", "-c", "CMD [\"sh\"]", str(rootfs), "imported:1")
    assert imported.returncode == 0 and imported.stdout.decode().startswith("sha256:"), imported.stderr
    assert json.loads(cli(node.env, "image", "inspect", "imported:1").stdout)[0]["Config"]["Cmd"] == ["sh"]
    bad = node.shoal("import", "-c", "BOGUS x", str(rootfs), "imported:2")
    assert bad.returncode != 0 and b"imported:2" not in cli(node.env, "images").stdout

    # -f naming a Dockerfile outside the context: sent, but not part of what COPY . copies.
    outside = tmp_path / "Dockerfile.outside"
    outside.write_text("FROM localhost/busybox:test\nCOPY . /ctx\nRUN ls -a /ctx\n")
    listed = node.shoal("build", "-f", str(outside), str(app))
    assert listed.returncode == 0, listed.stderr
    step = listed.stdout.decode().split("RUN ls -a /ctx", 1)[1]
    assert "hello" in step and ".dockerfile." not in step and "Dockerfile.outside" not in step

    # A failing step: the builder's error bare on stderr, exit 1, as locally.
    (app / "Dockerfile").write_text("FROM localhost/busybox:test\nRUN exit 3\n")
    failed = node.shoal("build", str(app))
    assert failed.returncode == 1
    assert b"The command '/bin/sh -c exit 3' returned a non-zero code: 3" in failed.stderr
    missing = node.shoal("save", "nosuch:1")
    assert missing.returncode != 0 and b"No such image: nosuch:1" in missing.stderr
    _client_root_untouched(node)


def test_ps_logs_inspect_on_the_node(node: Node) -> None:
    run = cli(node.env, "run", "-d", "--name", "remote-logs", "localhost/busybox:test",
              "sh", "-c", "echo out-line; echo err-line >&2; sleep 3; echo late-line")
    assert run.returncode == 0, run.stderr
    cid = run.stdout.decode().strip()
    try:
        ps = node.shoal("ps", "--format", "{{.Names}} {{.Image}}")
        assert ps.returncode == 0 and ps.stdout.decode().split() == ["remote-logs", "localhost/busybox:test"]
        followed = node.shoal("logs", "-f", "remote-logs")  # until the container exits
        assert followed.returncode == 0, followed.stderr
        assert followed.stdout == b"out-line\nlate-line\n" and followed.stderr == b"err-line\n"
        # --details: the log driver's attributes (none without log options) and a space, as dockerd
        details = node.shoal("logs", "--details", "remote-logs")
        assert (details.stdout, details.stderr) == (b" out-line\n late-line\n", b" err-line\n")
        assert cli(node.env, "logs", "--details", "remote-logs").stdout == b" out-line\n late-line\n"
        tail = node.shoal("logs", "--tail", "1", "-t", cid[:12])
        assert tail.stdout.decode().endswith(" late-line\n") and tail.stdout.decode()[:4].isdigit()
        assert node.shoal("ps", "-q").stdout == b""  # exited: not listed without -a
        assert node.shoal("ps", "-aq").stdout.decode().strip() == cid[:12]
        doc = json.loads(node.shoal("inspect", "remote-logs").stdout)
        assert doc[0]["Id"] == cid and doc[0]["State"]["Status"] == "exited"
        assert cli(node.client_env, "ps", "-a", "-q").stdout == b""  # this machine has none
        nosuch = node.shoal("logs", "nosuch")
        assert nosuch.returncode != 0 and b"nosuch" in nosuch.stderr
    finally:
        cli(node.env, "rm", "-f", cid)
    _client_root_untouched(node)


def test_inspect_finds_every_kind_through_the_context(node: Node) -> None:
    """`inspect NAME|ID...` through the context tries each kind as docker's system inspect does:
    the node's containers, images, networks and volumes, then the swarm's services, tasks,
    nodes, secrets and configs (before, only containers and images: a task was "No such
    object"). `--type` asks one kind, with that kind's refusal."""
    made = node.shoal("service", "create", "--name", "far-web", "--detach", "localhost/busybox:test", "sleep", "300")
    assert made.returncode == 0, made.stderr
    assert cli(node.env, "network", "create", "-d", "overlay", "far-net").returncode == 0
    assert cli(node.env, "volume", "create", "far-vol").returncode == 0
    assert node.shoal("secret", "create", "far-secret", "-", input=b"s3").returncode == 0
    try:
        deadline = time.monotonic() + 60
        while not (task := node.shoal("service", "ps", "-q", "--no-trunc", "far-web").stdout.decode().split()):
            assert time.monotonic() < deadline, "far-web has no task"
            time.sleep(0.2)
        node_id = node.shoal("node", "ls", "-q").stdout.decode().split()[0]
        found = node.shoal("inspect", "far-web", task[0], node_id, "far-net", "far-vol", "far-secret",
                           "localhost/busybox:test")
        assert found.returncode == 0, found.stderr
        docs = json.loads(found.stdout)
        assert docs[0]["Spec"]["Name"] == "far-web"
        assert docs[1]["ID"] == task[0] and docs[1]["ServiceID"] == docs[0]["ID"]
        assert docs[2]["ID"].startswith(node_id) and docs[2]["Spec"]["Role"] == "manager"
        assert (docs[3]["Name"], docs[3]["Driver"], docs[3]["Scope"]) == ("far-net", "overlay", "swarm")
        assert (docs[4]["Name"], docs[4]["Driver"]) == ("far-vol", "local")
        assert docs[4]["Mountpoint"].startswith(node.env["SHOAL_ROOT"])  # the node's, not this machine's
        assert docs[5]["Spec"]["Name"] == "far-secret"
        assert docs[6]["RepoTags"] == ["localhost/busybox:test"]
        typed = node.shoal("inspect", "--type", "task", "-f", "{{.ID}} {{.Status.State}}", task[0][:8])
        assert typed.returncode == 0 and typed.stdout.decode().split()[0] == task[0], typed.stderr
        assert node.shoal("inspect", "--type", "network", "-f", "{{.Name}}", "bridge").stdout == b"bridge\n"
        nosuch = node.shoal("inspect", "-f", "{{.ID}}", "nosuch", "far-web")
        assert (nosuch.returncode, nosuch.stderr) == (1, b"Error: No such object: nosuch\n")
        assert nosuch.stdout == docs[0]["ID"].encode() + b"\n"
        assert node.shoal("inspect", "--type", "task", "nosuch").stderr == \
            b"Error response from daemon: task nosuch not found\n"
        assert node.shoal("inspect", "--type", "volume", "nosuch").stderr == b"Error: No such volume: nosuch\n"
        container = node.shoal("container", "inspect", "far-web")
        assert (container.returncode, container.stderr) == (1, b"Error response from daemon: No such container: far-web\n")
    finally:
        node.shoal("service", "rm", "far-web")
        deadline = time.monotonic() + 30  # its task's container goes after the command returns
        while cli(node.env, "ps", "-aq").stdout and time.monotonic() < deadline:
            time.sleep(0.2)
        node.shoal("secret", "rm", "far-secret")
        cli(node.env, "network", "rm", "far-net")
        cli(node.env, "volume", "rm", "far-vol")
    assert cli(node.env, "ps", "-aq").stdout == b""
    _client_root_untouched(node)


def test_run_create_start_stop_wait_rm_on_the_node(node: Node) -> None:
    """`run` through the context: the container is the node's; attached, its output comes back
    on the right streams and its exit code is the command's (--rm removes it); signals reach it;
    -d, create/start, stop, wait and rm act on the node."""
    import signal

    attached = node.shoal("run", "--rm", "localhost/busybox:test", "sh", "-c", "echo to-out; echo to-err >&2; exit 7")
    assert (attached.returncode, attached.stdout, attached.stderr) == (7, b"to-out\n", b"to-err\n")
    assert cli(node.env, "ps", "-aq").stdout == b""  # --rm: gone from the node
    detached = node.shoal("run", "-d", "--name", "far-sleeper", "localhost/busybox:test", "sleep", "300")
    assert detached.returncode == 0, detached.stderr
    cid = detached.stdout.decode().strip()
    try:
        assert cli(node.env, "ps", "-q", "--no-trunc").stdout.decode().split() == [cid]
        # exec without a terminal: output on both streams, the environment given, the exit code.
        ran = node.shoal("exec", "-e", "WHO=far", "far-sleeper", "sh", "-c", 'echo "$WHO"; echo oops >&2; exit 5')
        assert (ran.returncode, ran.stdout, ran.stderr) == (5, b"far\n", b"oops\n")
        assert node.shoal("exec", "-d", "far-sleeper", "touch", "/tmp/from-far").returncode == 0
        assert cli(node.env, "exec", "far-sleeper", "ls", "/tmp/from-far").returncode == 0
        missing_cmd = node.shoal("exec", "far-sleeper", "nosuchcmd")
        assert missing_cmd.returncode == 127 and b'exec: "nosuchcmd": executable file not found' in missing_cmd.stderr
        tty = node.shoal("exec", "-it", "far-sleeper", "sh", input=b"")  # on a terminal: test_interactive.py
        assert tty.returncode == 1 and b"the input device is not a TTY" in tty.stderr
        assert node.shoal("stop", "-t", "1", "far-sleeper").stdout == b"far-sleeper\n"
        assert node.shoal("wait", "far-sleeper").stdout == b"137\n"  # sleep ignores SIGTERM as PID 1
        made = node.shoal("create", "--name", "far-once", "localhost/busybox:test", "echo", "once")
        assert made.returncode == 0, made.stderr
        assert node.shoal("start", "far-once").returncode == 0
        assert node.shoal("wait", "far-once").stdout == b"0\n"
        assert node.shoal("logs", "far-once").stdout == b"once\n"
        removed = node.shoal("rm", "far-sleeper", "far-once", "nosuch")
        assert removed.returncode == 1 and removed.stdout == b"far-sleeper\nfar-once\n"
        assert b"No such container: nosuch" in removed.stderr
        assert cli(node.env, "ps", "-aq").stdout == b""
        missing = node.shoal("run", "localhost/nosuch:1")
        assert missing.returncode != 0 and b"No such image: localhost/nosuch:1" in missing.stderr

        # An attached run forwards the client's SIGINT to the container (docker's --sig-proxy).
        proc = subprocess.Popen([sys.executable, "-m", "shoal", "-c", "far", "run", "--rm", "localhost/busybox:test",
                                 "sh", "-c", 'trap "echo got-int; exit 3" INT; echo ready; sleep 300 & wait'],
                                env=node.client_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
            proc.send_signal(signal.SIGINT)
            out, _ = proc.communicate(timeout=30)
            assert (proc.returncode, out) == (3, b"got-int\n")
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    finally:
        cli(node.env, "rm", "-f", cid, "far-once")
    assert cli(node.env, "ps", "-aq").stdout == b""
    _client_root_untouched(node)


def test_volumes_on_the_node(node: Node) -> None:
    """`volume create|ls|inspect|rm|prune` through the context act on the node's volumes, and a
    `run -v` there uses them; the client's own machine gets none."""
    made = node.shoal("volume", "create", "--label", "kind=far", "far-data")
    assert (made.returncode, made.stdout) == (0, b"far-data\n"), made.stderr
    listed = node.shoal("volume", "ls", "--format", "{{.Name}} {{.Labels}}", "--filter", "label=kind")
    assert listed.stdout == b"far-data kind=far\n", listed.stderr
    assert cli(node.env, "volume", "ls", "-q").stdout == b"far-data\n"  # the node's own view
    assert cli(node.client_env, "volume", "ls", "-q").stdout == b""  # this machine has none
    # Another shoald's unix socket (-H, as a `cluster create --no-swarm` context) takes the same path.
    via_socket = cli(node.client_env, "-H", f"unix://{node.env['SHOAL_RUN']}/shoal.sock", "volume", "ls", "-q")
    assert (via_socket.returncode, via_socket.stdout) == (0, b"far-data\n"), via_socket.stderr
    bad = node.shoal("volume", "ls", "--filter", "colour=red")
    assert (bad.returncode, bad.stderr) == (1, b"Error response from daemon: invalid filter 'colour'\n")
    wrote = node.shoal("run", "--name", "far-writer", "-v", "far-data:/data", "localhost/busybox:test",
                       "sh", "-c", "echo kept > /data/f")
    assert wrote.returncode == 0, wrote.stderr
    mountpoint = node.shoal("volume", "inspect", "--format", "{{.Mountpoint}}", "far-data").stdout.decode().strip()
    assert mountpoint.startswith(node.env["SHOAL_ROOT"]) and (Path(mountpoint) / "f").read_text() == "kept\n"
    doc = json.loads(node.shoal("volume", "inspect", "far-data").stdout)
    assert doc[0]["Name"] == "far-data" and doc[0]["Labels"] == {"kind": "far"}
    busy = node.shoal("volume", "rm", "far-data")
    cid = cli(node.env, "ps", "-aq", "--no-trunc").stdout.decode().strip()
    assert (busy.returncode, busy.stderr.decode()) == (
        1, f"Error response from daemon: remove far-data: volume is in use - [{cid}]\n")
    assert cli(node.env, "rm", "far-writer").returncode == 0
    read = node.shoal("run", "--rm", "-v", "far-data:/data", "localhost/busybox:test", "cat", "/data/f")
    assert read.stdout == b"kept\n", read.stderr
    removed = node.shoal("volume", "rm", "far-data", "nosuch")
    assert (removed.returncode, removed.stdout) == (1, b"far-data\n")
    assert removed.stderr == b"Error response from daemon: get nosuch: no such volume\n"
    gone = node.shoal("volume", "inspect", "far-data")
    assert (gone.returncode, gone.stderr) == (1, b"Error response from daemon: get far-data: no such volume\n")
    assert node.shoal("volume", "create", "far-spare").returncode == 0
    pruned = node.shoal("volume", "prune", "-a", "-f")
    assert pruned.returncode == 0 and pruned.stdout.startswith(b"Deleted Volumes:\nfar-spare\n\n"), pruned.stdout
    assert b"Total reclaimed space:" in pruned.stdout
    assert cli(node.env, "volume", "ls", "-q").stdout == b""
    _client_root_untouched(node)


def test_network_connect_restart_top_port_stats_on_the_node(node: Node) -> None:
    """network connect/disconnect, restart, top, port and stats --no-stream through the context
    act on the node's container, printed as the local commands print them."""
    assert cli(node.env, "network", "create", "far-net").returncode == 0  # the node's admin made it
    run = node.shoal("run", "-d", "--name", "far-web", "-p", "18321:80", "localhost/busybox:test", "sleep", "300")
    assert run.returncode == 0, run.stderr
    cid = run.stdout.decode().strip()
    try:
        def networks() -> list[str]:
            out = cli(node.env, "inspect", "--format", "{{json .NetworkSettings.Networks}}", "far-web").stdout
            return sorted(json.loads(out))

        joined = node.shoal("network", "connect", "--alias", "far-alias", "far-net", "far-web")
        assert (joined.returncode, joined.stdout, joined.stderr) == (0, b"", b"")
        assert networks() == ["bridge", "far-net"]
        # The node's container has its address on far-net in its own namespace.
        addrs = cli(node.env, "exec", "far-web", "ip", "-4", "-o", "addr").stdout.decode()
        assert addrs.count("inet ") == 3, addrs  # lo, eth0, eth1
        again = node.shoal("network", "connect", "far-net", "far-web")
        assert (again.returncode, again.stderr) == (
            1, b"Error response from daemon: endpoint with name far-web already exists in network far-net\n")
        left = node.shoal("network", "disconnect", "far-net", "far-web")
        assert left.returncode == 0, left.stderr
        assert networks() == ["bridge"]
        # An attachable swarm network: the address from the manager, through shoald's own provider.
        made = cli(node.env, "network", "create", "-d", "overlay", "--attachable", "far-ov")
        assert made.returncode == 0, made.stderr
        on_ov = node.shoal("network", "connect", "far-ov", "far-web")
        assert on_ov.returncode == 0, on_ov.stderr
        assert networks() == ["bridge", "far-ov"]
        assert node.shoal("network", "disconnect", "far-ov", "far-web").returncode == 0
        assert networks() == ["bridge"]
        not_on = node.shoal("network", "disconnect", "far-net", "far-web")
        assert (not_on.returncode, not_on.stderr.decode()) == (
            1, f"Error response from daemon: container {cid} is not connected to network far-net\n")

        top = node.shoal("top", "far-web")
        assert top.returncode == 0, top.stderr
        lines = top.stdout.decode().splitlines()
        assert lines[0].split()[:2] == ["UID", "PID"] and lines[1].endswith("sleep 300"), lines
        assert node.shoal("port", "far-web").stdout == b"80/tcp -> 0.0.0.0:18321\n"
        assert node.shoal("port", "far-web", "80").stdout == b"0.0.0.0:18321\n"
        unpublished = node.shoal("port", "far-web", "81")  # docker/cli's own words, bare
        assert (unpublished.returncode, unpublished.stderr) == (1, b"no public port '81' published for far-web\n")
        local = cli(node.env, "port", "far-web", "81")
        assert (local.returncode, local.stdout, local.stderr) == (1, unpublished.stdout, unpublished.stderr)
        stats = node.shoal("stats", "--no-stream", "--format", "{{.Name}} {{.PIDs}}", "far-web")
        assert (stats.returncode, stats.stdout) == (0, b"far-web 1\n"), stats.stderr
        # Streaming: a new frame (the screen cleared, the row again) each round, until interrupted.
        proc = subprocess.Popen([sys.executable, "-m", "shoal", "-c", "far", "stats", "--format", "{{.Name}}",
                                 "far-web"], env=node.client_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        import threading

        guard = threading.Timer(60, proc.kill)  # a stuck stream fails the test, never hangs it
        guard.start()
        try:
            assert proc.stdout is not None
            frames = [proc.stdout.readline() for _ in range(2)]
            assert frames == [b"\x1b[2J\x1b[Hfar-web\n"] * 2, frames
        finally:
            guard.cancel()
            proc.kill()
            proc.communicate(timeout=30)
        missing = node.shoal("stats", "--no-stream", "nosuch")
        assert (missing.returncode, missing.stderr) == (1, b"Error response from daemon: No such container: nosuch\n")
        assert cli(node.env, "stats", "--no-stream", "nosuch").stderr == missing.stderr

        started = cli(node.env, "inspect", "--format", "{{.State.StartedAt}}", "far-web").stdout
        restarted = node.shoal("restart", "-t", "1", "far-web", "nosuch")
        assert (restarted.returncode, restarted.stdout) == (1, b"far-web\n")
        assert restarted.stderr == b"Error response from daemon: No such container: nosuch\n"
        state = cli(node.env, "inspect", "--format", "{{.State.Status}} {{.State.StartedAt}}", "far-web").stdout
        assert state.split()[0] == b"running" and state.split()[1] != started.strip()
    finally:
        cli(node.env, "rm", "-f", cid)
        # The attachable network's attachment is released after the container goes: its rm may
        # be refused for a moment, and a network left here is pruned by a later test of the node.
        deadline = time.monotonic() + 30
        while cli(node.env, "network", "rm", "far-net", "far-ov").returncode != 0 and time.monotonic() < deadline:
            if not {b"far-net", b"far-ov"} & set(cli(node.env, "network", "ls", "--format", "{{.Name}}").stdout.split()):
                break
            time.sleep(0.3)
    assert cli(node.client_env, "ps", "-aq").stdout == b""
    _client_root_untouched(node)


def test_pull_push_on_the_node_with_the_clients_credentials(node: Node, tmp_path: Path) -> None:
    """`push` and `pull` through the context: the node talks to the registry, with the
    credentials the CLI's machine stored (`login` there), never the node's own."""
    import re

    from registry_helpers import htpasswd_auth, run_registry

    with run_registry(tmp_path / "reg", htpasswd_auth(tmp_path / "reg", "far-user", "far-pass")) as registry:
        ref = f"{registry}/far/web:v1"
        assert node.shoal("tag", "localhost/busybox:test", ref).returncode == 0
        # The node itself is logged in: a CLI without a login must still be refused.
        assert cli(node.env, "login", "-u", "far-user", "--password-stdin", registry,
                   input=b"far-pass\n").returncode == 0
        denied = node.shoal("push", ref)
        assert denied.returncode == 1
        assert re.search(rb'^Error: (Head|Get|Post) "http://127\.0\.0\.1:\d+/v2/far/web/.*": no basic auth '
                         rb'credentials\n\Z', denied.stderr), denied.stderr
        logged_in = cli(node.client_env, "login", "-u", "far-user", "--password-stdin", registry, input=b"far-pass\n")
        assert logged_in.returncode == 0, logged_in.stderr
        pushed = node.shoal("push", ref)
        assert pushed.returncode == 0, pushed.stderr
        out = pushed.stdout.decode()
        assert out.startswith(f"The push refers to repository [{registry}/far/web]\n")
        assert re.search(r"^v1: digest: sha256:[0-9a-f]{64} size: \d+$", out, re.M), out
        assert node.shoal("rmi", ref).returncode == 0
        pulled = node.shoal("pull", ref)
        assert pulled.returncode == 0, pulled.stderr
        assert f"Status: Downloaded newer image for {ref}\n" in pulled.stdout.decode()
        assert pulled.stdout.decode().endswith(f"\n{ref}\n")
        assert node.shoal("pull", "-q", ref).stdout.decode() == f"{ref}\n"
        assert ref in cli(node.env, "images", "--format", "{{.Repository}}:{{.Tag}}").stdout.decode()
        missing = node.shoal("pull", f"{registry}/far/web:nosuch")  # the local command's words
        assert (missing.returncode, missing.stderr) == (
            1, f"Error: manifest for {registry}/far/web:nosuch not found: manifest unknown: manifest unknown\n".encode())
        local = cli(node.env, "pull", f"{registry}/far/web:nosuch")
        assert (local.returncode, local.stdout, local.stderr) == (1, missing.stdout, missing.stderr)
        cli(node.env, "rmi", ref)
    _client_root_untouched(node)


def test_cp_both_ways_on_the_node(node: Node, tmp_path: Path) -> None:
    """`cp` through the context: this machine's files into the node's container and back (a
    directory, a file under a new name, a directory's contents, a tar on stdin and stdout), with
    the local command's ownership, links and errors."""
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha\n")
    (src / "sub" / "b.txt").write_text("beta\n")
    (src / "link").symlink_to("a.txt")
    os.chown(src / "a.txt", 1234, 1234)
    run = node.shoal("run", "-d", "--name", "far-cp", "localhost/busybox:test", "sleep", "300")
    assert run.returncode == 0, run.stderr

    def inside(*cmd: str) -> bytes:
        done = cli(node.env, "exec", "far-cp", *cmd)
        assert done.returncode == 0, done.stderr
        return done.stdout

    try:
        copied = node.shoal("cp", str(src), "far-cp:/tmp/")
        assert (copied.returncode, copied.stdout, copied.stderr) == (0, b"", b"")
        assert inside("cat", "/tmp/src/a.txt", "/tmp/src/sub/b.txt") == b"alpha\nbeta\n"
        assert inside("readlink", "/tmp/src/link") == b"a.txt\n"
        assert inside("stat", "-c", "%u", "/tmp/src/a.txt") == b"0\n"  # the container's root, as locally
        assert node.shoal("cp", "-a", str(src / "a.txt"), "far-cp:/tmp/kept.txt").returncode == 0
        assert inside("stat", "-c", "%u %s", "/tmp/kept.txt") == b"1234 6\n"  # -a: the host's owner
        assert node.shoal("cp", str(src) + "/.", "far-cp:/tmp").returncode == 0  # the contents
        assert inside("cat", "/tmp/a.txt", "/tmp/sub/b.txt") == b"alpha\nbeta\n"
        tar = io.BytesIO()
        with tarfile.open(fileobj=tar, mode="w") as t:
            info = tarfile.TarInfo("from-stdin.txt")
            info.size = 6
            t.addfile(info, io.BytesIO(b"stdin\n"))
        assert node.shoal("cp", "-", "far-cp:/tmp", input=tar.getvalue()).returncode == 0
        assert inside("cat", "/tmp/from-stdin.txt") == b"stdin\n"

        out = tmp_path / "out"
        out.mkdir()
        back = node.shoal("cp", "far-cp:/tmp/src", str(out))
        assert (back.returncode, back.stdout, back.stderr) == (0, b"", b"")
        assert (out / "src" / "a.txt").read_text() == "alpha\n" and (out / "src" / "sub" / "b.txt").read_text() == "beta\n"
        assert os.readlink(out / "src" / "link") == "a.txt"
        assert (out / "src" / "a.txt").stat().st_uid == os.getuid()  # the caller's, without -a
        assert node.shoal("cp", "far-cp:/tmp/kept.txt", str(out / "renamed.txt")).returncode == 0
        assert (out / "renamed.txt").read_text() == "alpha\n"
        assert node.shoal("cp", "far-cp:/tmp/sub/.", str(out / "src")).returncode == 0
        assert (out / "src" / "b.txt").read_text() == "beta\n"
        streamed = node.shoal("cp", "far-cp:/tmp/src", "-")
        assert streamed.returncode == 0
        with tarfile.open(fileobj=io.BytesIO(streamed.stdout)) as t:
            assert sorted(t.getnames()) == ["src", "src/a.txt", "src/link", "src/sub", "src/sub/b.txt"]
        assert streamed.stdout == cli(node.env, "cp", "far-cp:/tmp/src", "-").stdout  # as the local one

        for args in (("far-cp:/nosuch", str(out)), ("far-cp:/tmp/src", str(out / "a.txt" / "x")),
                     (str(src / "a.txt"), "far-cp:/nosuchdir/x"), (str(tmp_path / "nosuch"), "far-cp:/tmp"),
                     ("nosuch:/tmp", str(out)), ("far-cp:/tmp/src", str(out / "renamed.txt"))):
            remote, local = node.shoal("cp", *args), cli(node.env, "cp", *args)
            assert remote.returncode == 1 and remote.stderr, args
            assert (remote.returncode, remote.stdout, remote.stderr) == (local.returncode, local.stdout, local.stderr)
    finally:
        cli(node.env, "rm", "-f", "far-cp")
    _client_root_untouched(node)


def test_pause_rename_update_diff_export_commit_on_the_node(node: Node, tmp_path: Path) -> None:
    """pause/unpause, rename, update, diff, export and commit through the context act on the
    node's container (and its image store), printed as the local commands print them."""
    run = node.shoal("run", "-d", "--name", "far-ops", "localhost/busybox:test", "sh", "-c",
                     "echo changed > /etc/far-file; sleep 300")
    assert run.returncode == 0, run.stderr

    def state(fmt: str, name: str = "far-ops") -> str:
        return cli(node.env, "inspect", "--format", fmt, name).stdout.decode().strip()

    try:
        assert node.shoal("pause", "far-ops").stdout == b"far-ops\n"
        assert state("{{.State.Status}}") == "paused"
        again = node.shoal("pause", "far-ops")
        local = cli(node.env, "pause", "far-ops")
        assert again.returncode == 1 and (again.stdout, again.stderr) == (local.stdout, local.stderr)
        assert node.shoal("unpause", "far-ops").stdout == b"far-ops\n"
        assert state("{{.State.Status}}") == "running"

        assert node.shoal("rename", "far-ops", "far-renamed").returncode == 0
        assert state("{{.Name}}", "far-renamed") == "/far-renamed"
        taken = node.shoal("rename", "far-renamed", "far-renamed")
        local = cli(node.env, "rename", "far-renamed", "far-renamed")
        assert taken.returncode == 1 and (taken.stdout, taken.stderr) == (local.stdout, local.stderr)

        updated = node.shoal("update", "--memory", "64m", "--pids-limit", "50", "far-renamed")
        assert (updated.returncode, updated.stdout) == (0, b"far-renamed\n"), updated.stderr
        assert state("{{.HostConfig.Memory}} {{.HostConfig.PidsLimit}}", "far-renamed") == "67108864 50"

        diff = node.shoal("diff", "far-renamed")
        assert diff.returncode == 0 and b"A /etc/far-file\n" in diff.stdout
        assert diff.stdout == cli(node.env, "diff", "far-renamed").stdout

        exported = node.shoal("export", "far-renamed")
        assert exported.returncode == 0, exported.stderr
        with tarfile.open(fileobj=io.BytesIO(exported.stdout)) as t:
            member = t.extractfile("etc/far-file")
            assert member is not None and member.read() == b"changed\n"
        out = tmp_path / "far.tar"
        assert node.shoal("export", "-o", str(out), "far-renamed").returncode == 0
        assert out.read_bytes()[:512] == exported.stdout[:512] and tarfile.is_tarfile(out)

        committed = node.shoal("commit", "-c", "CMD [\"cat\", \"/etc/far-file\"]", "far-renamed", "far-committed:v1")
        assert committed.returncode == 0, committed.stderr
        image_id = committed.stdout.decode().strip()
        assert image_id.startswith("sha256:")
        assert state("{{.Id}}", "far-committed:v1") == image_id  # the node's store has it
        ran = node.shoal("run", "--rm", "far-committed:v1")
        assert ran.stdout == b"changed\n", ran.stderr
        missing = node.shoal("commit", "nosuch")
        assert (missing.returncode, missing.stderr) == (1, b"Error response from daemon: No such container: nosuch\n")
    finally:
        cli(node.env, "rm", "-f", "far-ops", "far-renamed")
        cli(node.env, "rmi", "far-committed:v1")
    _client_root_untouched(node)


def test_df_and_prunes_on_the_node(node: Node) -> None:
    """system df, container/image/network/builder/volume prune and system prune through the
    context act on the node's objects, printed as the local commands print them."""
    assert node.shoal("create", "--name", "far-stopped", "--label", "far=1", "localhost/busybox:test", "true").returncode == 0
    cid = cli(node.env, "ps", "-aq", "--no-trunc", "--filter", "name=far-stopped").stdout.decode().strip()
    assert cli(node.env, "network", "create", "far-unused").returncode == 0
    df = node.shoal("system", "df", "--format", "{{.Type}} {{.TotalCount}} {{.Active}}")
    assert df.returncode == 0, df.stderr
    assert df.stdout == cli(node.env, "system", "df", "--format", "{{.Type}} {{.TotalCount}} {{.Active}}").stdout
    assert df.stdout.splitlines()[1] == b"Containers 1 0"
    verbose = node.shoal("system", "df", "-v")
    assert verbose.returncode == 0 and b"far-stopped" in verbose.stdout and b"Images space usage:" in verbose.stdout
    assert cli(node.client_env, "system", "df", "--format", "{{.Type}} {{.TotalCount}}").stdout.splitlines()[1] \
        == b"Containers 0"  # this machine's own

    bad = node.shoal("container", "prune", "-f", "--filter", "colour=red")
    assert (bad.returncode, bad.stderr) == (1, b"Error response from daemon: invalid filter 'colour'\n")
    kept = node.shoal("container", "prune", "-f", "--filter", "label!=far")
    assert kept.stdout == b"Total reclaimed space: 0B\n", kept.stdout
    pruned = node.shoal("container", "prune", "-f", "--filter", "label=far")
    assert pruned.returncode == 0 and pruned.stdout.startswith(f"Deleted Containers:\n{cid}\n\n".encode()), pruned.stdout
    assert cli(node.env, "ps", "-aq").stdout == b""
    nets = node.shoal("network", "prune", "-f")
    assert (nets.returncode, nets.stdout) == (0, b"Deleted Networks:\nfar-unused\n\n"), nets.stderr
    assert b"far-unused" not in cli(node.env, "network", "ls").stdout
    images = node.shoal("image", "prune", "-f")
    assert images.returncode == 0 and images.stdout.endswith(b"\n") and b"Total reclaimed space:" in images.stdout
    assert b"busybox" in cli(node.env, "images").stdout  # tagged: not dangling
    builder = node.shoal("builder", "prune", "-f")
    assert builder.returncode == 0 and b"Total reclaimed space:" in builder.stdout, builder.stderr
    assert node.shoal("volume", "create", "far-anon-like").returncode == 0
    system = node.shoal("system", "prune", "-f", "--volumes")
    assert system.returncode == 0 and system.stdout.endswith(b"\n") and b"Total reclaimed space:" in system.stdout
    assert cli(node.env, "volume", "ls", "-q").stdout == b"far-anon-like\n"  # named: only anonymous ones go
    assert node.shoal("volume", "rm", "far-anon-like").returncode == 0
    completion = node.shoal("completion", "bash")  # the CLI's own: printed whatever the context
    assert completion.returncode == 0 and completion.stdout == cli(node.client_env, "completion", "bash").stdout
    _client_root_untouched(node)


def _tar(entries: list[tarfile.TarInfo], data: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info in entries:
            payload = data.get(info.name)
            if payload is not None:
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
            else:
                tar.addfile(info)
    return buf.getvalue()


def _file(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.mode = 0o644
    return info


def _link(name: str, target: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


def test_hostile_build_context_is_refused(node: Node) -> None:
    """A context tar written by hand (not by the CLI): `..` names and writes through a symlink
    that leaves the context are refused with a 400 before any build output, and nothing lands
    outside the node's private temporary directory."""
    from shoal.api import contexts
    from shoal.api.client import Client, DaemonInvalidArgument

    victim = node.base / "victim"
    victim.mkdir()
    dockerfile = b"FROM localhost/busybox:test\n"
    hostile = {
        "dot-dot": _tar([_file("Dockerfile"), _file("../../../../escaped")],
                        {"Dockerfile": dockerfile, "../../../../escaped": b"x"}),
        "symlink": _tar([_file("Dockerfile"), _link("out", str(victim)), _file("out/planted")],
                        {"Dockerfile": dockerfile, "out/planted": b"x"}),
        "absolute": _tar([_file("Dockerfile"), _file(str(victim / "abs"))],
                         {"Dockerfile": dockerfile, str(victim / "abs"): b"x"}),
    }
    old = os.environ.get("SHOAL_CONFIG")
    os.environ["SHOAL_CONFIG"] = node.client_env["SHOAL_CONFIG"]
    try:
        contexts.flag_context = "far"
        client = Client(endpoint=contexts.endpoint())
        for name, body in hostile.items():
            with pytest.raises(DaemonInvalidArgument, match="unsafe path") as caught:
                client.stream("POST", "/build", {"t": "evil:1"}, upload=lambda w, b=body: w.write(b)).close()
            assert "build context" in str(caught.value), name
        with pytest.raises(DaemonInvalidArgument, match="dockerfile"):
            client.stream("POST", "/build", {"dockerfile": "../etc/passwd"},
                          upload=lambda w: w.write(hostile["dot-dot"])).close()
        # A Dockerfile that is a symlink to a file of the node is never read (its lines would
        # show in the parse errors).
        linked = _tar([_link("Dockerfile", "/etc/shadow")], {})
        with pytest.raises(DaemonInvalidArgument, match="must be a regular file"):
            client.stream("POST", "/build", {}, upload=lambda w: w.write(linked)).close()
    finally:
        contexts.flag_context = None
        if old is None:
            os.environ.pop("SHOAL_CONFIG", None)
        else:
            os.environ["SHOAL_CONFIG"] = old
    # Past the node's cap (SHOAL_UPLOAD_MAX, 20 MB here): 413 with the cap named, nothing kept.
    big = node.base / "bigctx"
    big.mkdir()
    (big / "Dockerfile").write_text("FROM localhost/busybox:test\n")
    (big / "blob").write_bytes(os.urandom(21_000_000))
    refused = node.shoal("build", "-t", "evil:big", str(big))
    assert refused.returncode != 0
    assert b"build context too large: shoald accepts at most 20000000 bytes (SHOAL_UPLOAD_MAX)" in refused.stderr
    assert list(victim.iterdir()) == []
    assert not list(node.base.rglob("escaped")) and not list(Path("/").glob("escaped"))
    uploads = Path(node.env["SHOAL_ROOT"]) / "uploads"
    assert list(uploads.iterdir()) == []  # every temporary directory removed
    assert oct(uploads.stat().st_mode & 0o777) == "0o700"
    assert b"evil" not in cli(node.env, "images").stdout


def test_a_worker_certificate_gets_no_node_route(node: Node, tmp_path: Path) -> None:
    """The node routes are behind the manager door: a worker's certificate of the same cluster
    is refused with swarmkit's words, and nothing runs."""
    from shoal.manager.ca import WORKER_ROLE, CertStore, identity_of, load_certificates, new_node_id

    from shoal.store.secretbox import FileKeys

    root = Path(node.env["SHOAL_ROOT"])
    store = CertStore(root / "certificates", FileKeys(root / "keys"))
    root_ca = store.load_root_ca()
    cluster_id = identity_of(load_certificates(store.cert_path.read_bytes())[0]).cluster_id
    cert, key = root_ca.issue(new_node_id(), WORKER_ROLE, cluster_id)
    (tmp_path / "cert.pem").write_bytes(cert)
    (tmp_path / "key.pem").write_bytes(key)
    os.chmod(tmp_path / "key.pem", 0o600)
    made = cli(node.client_env, "context", "create", "asworker", "--host", f"tcp://127.0.0.1:{node.port}",
               "--tls-ca", str(store.root_cert_path), "--tls-cert", str(tmp_path / "cert.pem"),
               "--tls-key", str(tmp_path / "key.pem"))
    assert made.returncode == 0, made.stderr
    for args in (["images"], ["ps"], ["save", "localhost/busybox:test"]):
        proc = cli(node.client_env, "-c", "asworker", *args)
        assert proc.returncode != 0 and b"remote certificate not part of OUs: [swarm-manager]" in proc.stderr, \
            (args, proc.stderr)


def test_a_client_that_leaves_mid_build_stops_it(node: Node, tmp_path: Path) -> None:
    """Interrupted `build` (the client's connection gone): the node's build stops at its next
    output line, nothing is tagged, and its temporary context directory is removed."""
    (tmp_path / "Dockerfile").write_text("FROM localhost/busybox:test\nRUN echo first; sleep 2; echo second\n"
                                         "RUN echo never\n")
    proc = subprocess.Popen([sys.executable, "-m", "shoal", "-c", "far", "build", "--no-cache", "-t", "left:1",
                             str(tmp_path)], env=node.client_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            if raw == b"first\n":
                break
        else:
            raise AssertionError(proc.stderr.read() if proc.stderr else "no output")
    finally:
        proc.kill()
        proc.wait()
    uploads = Path(node.env["SHOAL_ROOT"]) / "uploads"
    deadline = time.monotonic() + 20
    while list(uploads.iterdir()):
        assert time.monotonic() < deadline, list(uploads.iterdir())
        time.sleep(0.1)
    assert b"left" not in cli(node.env, "images").stdout
    assert cli(node.env, "ps", "-aq").stdout == b""  # no build step container left behind
