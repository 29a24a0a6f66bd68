"""The seed walkthrough's stack as a user types it, on a real shoald: 5 replicas with 10% of a CPU
and 50 MB each (read back from the cgroups), restart on failure, a load-balanced published port
answering from every replica's hostname, service discovery by name, `kill -9` of a task replaced
as its restart policy says, and `stack rm` leaving nothing behind.

The image is the busybox test image (httpd serves the task's hostname), so the test needs no
network and runs in seconds; tests/integration/test_seed_build.py builds the seed's own app."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import shoald_pid, teardown_root

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

TEST_POOL = "10.215.0.0/16:20"
COMPOSE = """\
version: "3"
services:
  web:
    image: localhost/busybox:test
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
    deploy:
      replicas: 5
      resources:
        limits:
          cpus: "0.1"
          memory: 50M
      restart_policy:
        condition: on-failure
        delay: 2s
    stop_grace_period: 1s
    ports:
      - "{port}:80"
    networks:
      - webnet
networks:
  webnet:
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Shoal:
    """The CLI against one private state root, the way a user runs it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = dict(os.environ, SHOAL_ROOT=str(root), SHOAL_RUN=str(root / "run"),
                        SHOAL_DEFAULT_ADDRESS_POOLS=TEST_POOL)
        self.env.pop("SHOAL_SOCKET", None)

    def __call__(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "shoal", *args], env=self.env, capture_output=True,
                              text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"shoal {' '.join(args)} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def daemon_pid(self) -> int | None:
        return shoald_pid(self.root / "run")  # the running one's, never a stale, reused pid


def kernel_leftovers(root: Path) -> list[str]:
    """Everything a state root can leave in the kernel: mounts, cgroups, namespaces, links."""
    found = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines() if str(root) in line]
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True).stdout
    found += [line for line in links.splitlines() if f"shoal:{root}" in line]
    netns_dir = root / "run" / "netns"
    if netns_dir.is_dir():
        found += [str(p) for p in netns_dir.iterdir()]
    return found


@pytest.fixture(scope="module")
def shoal(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Iterator[Shoal]:
    root = tmp_path_factory.mktemp("e2e") / "root"
    sh = Shoal(root)
    sh("import", str(busybox_tar), "localhost/busybox:test")
    try:
        yield sh
    finally:
        for stack in ("webapp", "other", "mon"):
            sh("stack", "rm", stack, check=False)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and sh("ps", "-aq", check=False).stdout.strip():
            time.sleep(0.2)
        for cid in sh("ps", "-aq", check=False).stdout.split():
            sh("rm", "-f", cid, check=False)
        pid = sh.daemon_pid()
        if pid:
            try:
                os.kill(pid, 15)
            except ProcessLookupError:
                pass
            for _ in range(100):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)
        sh("network", "reconcile", check=False)
        left = kernel_leftovers(root)
        teardown_root(root)  # whatever the assertion below reports is removed all the same
        for target in [x for x in kernel_leftovers(root) if x.startswith("/")]:
            subprocess.run(["umount", "-l", target], check=False)
        assert not left, f"left behind: {left}"


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


# What `stack deploy` prints to stderr when -d/--detach is left out (docker/cli >= 26 deploy.go).
DETACH_NOTICE = ("Since --detach=false was not specified, tasks will be created in the background.\n"
                 "In a future release, --detach=false will become the default.\n")


def wait_replicas(shoal: Shoal, stack: str, timeout: float = 60) -> dict[str, str]:
    """Service name -> REPLICAS once `stack services` shows every service with all its tasks
    running: how a user waits for a stack deployed in the background (the default)."""
    def converged() -> dict[str, str] | None:
        rows = dict(line.split(" ", 1) for line in shoal(
            "stack", "services", "--format", "{{.Name}} {{.Replicas}}", stack).stdout.splitlines())
        counts = [r.split()[0].split("/") for r in rows.values()]
        return rows if rows and all(run == want != "0" for run, want in counts) else None

    return wait_for(converged, timeout, f"the services of {stack} to run all their tasks")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.read().decode().strip()


@pytest.fixture(scope="module")
def webapp(shoal: Shoal, tmp_path_factory: pytest.TempPathFactory) -> int:
    port = free_port()
    app = tmp_path_factory.mktemp("app")
    (app / "docker-compose.yml").write_text(COMPOSE.format(port=port))
    shoal("stack", "ls")  # shoald started first: its `Starting shoald` line is not the deploy's
    deploy = shoal("stack", "deploy", "-c", str(app / "docker-compose.yml"), "webapp")
    # The seed's lines, and returned: the tasks are made in the background (Docker >= 26).
    assert deploy.stdout.splitlines() == ["Creating network webapp_webnet", "Creating service webapp_web"]
    assert deploy.stderr == DETACH_NOTICE
    assert wait_replicas(shoal, "webapp") == {"webapp_web": "5/5"}
    return port


def test_stack_ls_and_services_as_in_the_seed(shoal: Shoal, webapp: int) -> None:
    assert shoal("stack", "ls").stdout == (
        "NAME      SERVICES   ORCHESTRATOR\n"
        "webapp    1          Swarm\n")
    lines = shoal("stack", "services", "webapp").stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"]
    assert re.match(rf"^[a-z0-9]{{12}}   webapp_web   replicated   5/5        localhost/busybox:test   \*:{webapp}->80/tcp$",
                    lines[1]), lines[1]
    # --filter as docker's stack services (the stack's label beside the user's filters)
    named = shoal("stack", "services", "-f", "name=webapp_w", "-f", "mode=replicated", "--format", "{{.Name}}", "webapp")
    assert named.stdout == "webapp_web\n"
    none = shoal("stack", "services", "-f", "mode=global", "webapp")
    assert (none.stdout, none.stderr) == ("", "Nothing found in stack: webapp\n")


def test_network_ls_shows_the_overlay(shoal: Shoal, webapp: int) -> None:
    rows = [line.split() for line in shoal("network", "ls").stdout.splitlines()]
    assert rows[0] == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert any(r[1:] == ["webapp_webnet", "overlay", "swarm"] for r in rows[1:])


def test_every_task_is_limited_to_a_tenth_of_a_cpu_and_50mb(shoal: Shoal, webapp: int) -> None:
    ids = shoal("ps", "-q", "--no-trunc").stdout.split()
    assert len(ids) == 5
    for cid in ids:
        pid = shoal("inspect", "-f", "{{.State.Pid}}", cid).stdout.strip()
        cgroups = dict(line.split(":", 2)[1:] for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                       if line.split(":", 2)[1])
        cpu_dir = next(v for k, v in cgroups.items() if "cpu" in k.split(",") and "cpuacct" not in k.split(","))
        mem_dir = cgroups["memory"]
        assert Path(f"/sys/fs/cgroup/cpu{cpu_dir}/cpu.cfs_quota_us").read_text().strip() == "10000"
        assert Path(f"/sys/fs/cgroup/cpu{cpu_dir}/cpu.cfs_period_us").read_text().strip() == "100000"
        assert Path(f"/sys/fs/cgroup/memory{mem_dir}/memory.limit_in_bytes").read_text().strip() == "52428800"


def test_published_port_answers_from_all_five_hostnames(shoal: Shoal, webapp: int) -> None:
    hostnames = {get(f"http://127.0.0.1:{webapp}/") for _ in range(25)}
    assert len(hostnames) == 5, hostnames
    assert all(re.fullmatch(r"[0-9a-f]{12}", h) for h in hostnames)


def test_tasks_find_the_service_by_name(shoal: Shoal, webapp: int) -> None:
    cid = shoal("ps", "-q").stdout.split()[0]
    answers = {shoal("exec", cid, "wget", "-q", "-O", "-", "http://web/").stdout.strip() for _ in range(6)}
    assert len(answers) >= 2, "the VIP balances across tasks, the caller's own included (hairpin)"
    tasks = shoal("exec", cid, "nslookup", "tasks.webapp_web", "127.0.0.11").stdout
    assert len(re.findall(r"Address: 10\.215\.", tasks)) == 5


def test_service_ps_shows_history_after_kill_9(shoal: Shoal, webapp: int) -> None:
    rows = shoal("service", "ps", "webapp_web").stdout.splitlines()
    assert rows[0].split()[:4] == ["ID", "NAME", "IMAGE", "NODE"]
    victim = next(r for r in rows[1:] if " webapp_web.2 " in r)
    assert "Running" in victim and " ago" in victim
    cid = next(c for c in shoal("ps", "--format", "{{.ID}} {{.Names}}").stdout.splitlines() if ".2." in c).split()[0]
    pid = int(shoal("inspect", "-f", "{{.State.Pid}}", cid).stdout)
    os.kill(pid, 9)

    def replaced() -> list[str] | None:
        out = shoal("service", "ps", "webapp_web").stdout.splitlines()
        slot = [r for r in out if "webapp_web.2" in r]
        return slot if len(slot) == 2 and re.search(r"Running\s+Running", slot[0]) else None

    slot = wait_for(replaced, 30, "the killed task's replacement")
    assert " \\_ webapp_web.2" in slot[1]
    assert re.search(r"Shutdown\s+Failed .* ago\s+\"task: non-zero exit \(137\)\"", slot[1]), slot[1]
    assert shoal("stack", "services", "webapp").stdout.count("5/5") == 1


def test_tasks_outlive_a_killed_shoald_which_adopts_them(shoal: Shoal, webapp: int) -> None:
    tasks_before = shoal("service", "ps", "-q", "webapp_web").stdout
    containers_before = sorted(shoal("ps", "-q").stdout.split())
    pid = shoal.daemon_pid()
    assert pid
    os.kill(pid, 9)
    wait_for(lambda: not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text(),
             10, "shoald gone")
    # No shoal process runs now: the tasks keep serving on the published port.
    assert len({get(f"http://127.0.0.1:{webapp}/") for _ in range(15)}) == 5
    # The next command starts shoald again; it adopts the running tasks instead of replacing them.
    assert shoal("service", "ps", "-q", "webapp_web").stdout == tasks_before
    time.sleep(1.5)
    assert sorted(shoal("ps", "-q").stdout.split()) == containers_before
    assert "5/5" in shoal("stack", "services", "webapp").stdout
    cid = containers_before[0]
    assert shoal("exec", cid, "nslookup", "web", "127.0.0.11").returncode == 0, "the resolver is back too"


def test_scale_and_bad_input(shoal: Shoal, webapp: int, tmp_path: Path) -> None:
    assert shoal("service", "scale", "-d", "webapp_web=7").stdout.strip() == "webapp_web scaled to 7"
    wait_for(lambda: "7/7" in shoal("stack", "services", "webapp").stdout, 30, "7 replicas")
    # Without -d, scale waits for the service as Docker's does, with its progress.
    scaled = shoal("service", "scale", "webapp_web=5").stdout.splitlines()
    assert scaled[0] == "webapp_web scaled to 5" and scaled[-1] == "verify: Service webapp_web converged"
    wait_for(lambda: "5/5" in shoal("stack", "services", "webapp").stdout, 30, "5 replicas")
    bad = shoal("service", "scale", "webapp_web=x", check=False)
    assert (bad.returncode, bad.stderr) == (1, 'webapp_web: invalid replicas value x: strconv.ParseUint: parsing "x": '
                                               "invalid syntax\n")  # scale.go runScale
    compose = tmp_path / "global.yml"
    compose.write_text("services:\n  agent:\n    image: localhost/busybox:test\n    command: [sleep, '300']\n"
                       "    deploy:\n      mode: global\n")
    shoal("stack", "deploy", "-c", str(compose), "mon")
    bad = shoal("service", "scale", "mon_agent=3", check=False)
    assert bad.returncode != 0 and "scale can only be used with replicated" in bad.stderr
    bad = shoal("stack", "deploy", "-c", str(compose), "bad name!", check=False)
    assert bad.returncode != 0 and bad.stderr.count("\n") == 1
    shoal("stack", "rm", "mon")


def test_failed_deploy_leaves_the_running_stack_alone(shoal: Shoal, webapp: int, tmp_path: Path) -> None:
    before = shoal("service", "ps", "-q", "webapp_web").stdout
    clash = tmp_path / "clash.yml"
    clash.write_text(COMPOSE.format(port=webapp).replace("webnet", "othernet"))
    result = shoal("stack", "deploy", "-c", str(clash), "other", check=False)
    assert result.returncode != 0
    assert result.stderr.startswith(DETACH_NOTICE), result.stderr  # printed before anything is made
    error = result.stderr[len(DETACH_NOTICE):]
    assert str(webapp) in error and error.strip().count("\n") == 0, result.stderr
    assert "other" not in shoal("stack", "ls").stdout
    assert "other_othernet" not in shoal("network", "ls").stdout
    assert get(f"http://127.0.0.1:{webapp}/")
    assert shoal("service", "ps", "-q", "webapp_web").stdout == before


def test_missing_image_is_rejected_and_service_ps_says_why(shoal: Shoal, tmp_path: Path) -> None:
    compose = tmp_path / "missing.yml"
    compose.write_text("services:\n  app:\n    image: nosuch:v9\n    deploy:\n      restart_policy:\n"
                       "        delay: 0s\n")
    # Made in the background (Docker's default): the deploy succeeds, `service ps` says why no
    # task runs, as a user finds out.
    result = shoal("stack", "deploy", "-c", str(compose), "other", timeout=60)
    assert (result.stdout, result.stderr) == ("Creating network other_default\nCreating service other_app\n",
                                              DETACH_NOTICE)
    ps = wait_for(lambda: (lambda out: out if "Rejected" in out else None)(
        shoal("service", "ps", "other_app").stdout), 30, "the task rejected")
    assert '"No such image: nosuch:v9"' in ps
    shoal("stack", "rm", "other")


def test_deploy_detaches_unless_told_not_to_as_docker_28(shoal: Shoal, tmp_path: Path) -> None:
    """docker/cli >= 26 deploy.go: -d/--detach defaults to true; left out, the notice goes to
    stderr (stdout is Docker's lines alone); given in any form, no notice; --detach=false waits
    for each service with `service update`'s progress on stdout (waitOnServices)."""
    compose = tmp_path / "detach.yml"
    spec = ("services:\n  app:\n    image: localhost/busybox:test\n    command: [sleep, '300']\n"
            "    stop_grace_period: 1s\n    environment: [REV={rev}]\n"
            "    deploy:\n      replicas: 2\n      update_config: {{monitor: 1s, parallelism: 2}}\n")
    compose.write_text(spec.format(rev=1))
    first = shoal("stack", "up", "-c", str(compose), "other")
    assert (first.stdout, first.stderr) == ("Creating network other_default\nCreating service other_app\n",
                                            DETACH_NOTICE)
    service_id = shoal("service", "inspect", "-f", "{{.ID}}", "other_app").stdout.strip()
    updating = f"Updating service other_app (id: {service_id})\n"
    for flag in ("-d", "--detach", "--detach=true", "-d=1"):
        again = shoal("stack", "deploy", flag, "-c", str(compose), "other")
        assert (again.stdout, again.stderr) == (updating, ""), flag
    compose.write_text(spec.format(rev=2))
    waited = shoal("stack", "deploy", "--detach=false", "-c", str(compose), "other", timeout=120)
    lines = waited.stdout.splitlines()
    assert waited.stderr == "" and lines[0] == updating.strip(), waited.stdout
    assert "overall progress: 2 out of 2 tasks" in lines, waited.stdout
    assert lines[-1] == f"verify: Service {service_id} converged", waited.stdout
    # Returned once converged: both tasks of the new spec run, nothing of it is still on its way.
    current = shoal("service", "ps", "-f", "desired-state=running", "--format", "{{.CurrentState}}",
                    "other_app").stdout.split("\n")
    assert [c.split()[0] for c in current if c] == ["Running", "Running"], current
    assert shoal("stack", "services", "--format", "{{.Replicas}}", "other").stdout == "2/2\n"
    shoal("stack", "rm", "other")


def test_service_logs_name_each_task(shoal: Shoal, tmp_path: Path) -> None:
    compose = tmp_path / "logs.yml"
    compose.write_text("services:\n  app:\n    image: localhost/busybox:test\n"
                       "    command: [sh, -c, 'echo out-$$(hostname); echo oops >&2; exec sleep 300']\n"
                       "    stop_grace_period: 1s\n    deploy:\n      replicas: 2\n")
    shoal("stack", "deploy", "-c", str(compose), "other")
    node = shoal("service", "ps", "--format", "{{.Node}}", "other_app").stdout.split()[0]

    def both() -> subprocess.CompletedProcess[str] | None:
        out = shoal("service", "logs", "other_app")
        return out if out.stdout.count("out-") == 2 and out.stderr.count("oops") == 2 else None

    logs = wait_for(both, 20, "both tasks' output")
    for line in logs.stdout.splitlines():
        assert re.fullmatch(rf"other_app\.[12]\.[a-z0-9]{{12}}@{re.escape(node)}    \| out-[0-9a-f]{{12}}", line), line
    tail = shoal("service", "logs", "--tail", "0", "other_app")
    assert tail.stdout == "" and tail.returncode == 0
    bad = shoal("service", "logs", "--tail", "x", "other_app", check=False)
    assert bad.returncode != 0 and "--tail" in bad.stderr
    shoal("stack", "rm", "other")


def test_healthcheck_gates_running_and_kills_the_unhealthy(shoal: Shoal, tmp_path: Path) -> None:
    compose = tmp_path / "health.yml"
    compose.write_text(
        "services:\n"
        "  slow:\n    image: localhost/busybox:test\n"
        "    command: [sh, -c, 'sleep 2; touch /tmp/ready; exec sleep 300']\n"
        "    stop_grace_period: 1s\n"
        "    healthcheck: {test: [CMD, test, -f, /tmp/ready], interval: 300ms, retries: 100}\n"
        "  sick:\n    image: localhost/busybox:test\n    command: [sleep, '300']\n"
        "    healthcheck: {test: [CMD-SHELL, 'exit 1'], interval: 200ms, retries: 2}\n"
        "    deploy:\n      restart_policy: {condition: none}\n")
    shoal("stack", "deploy", "-d", "-c", str(compose), "other")
    seen = wait_for(lambda: (lambda ps: ps if "Starting" in ps else None)(shoal("service", "ps", "other_slow").stdout),
                    15, "the slow task in STARTING")
    assert re.search(r"Running\s+Starting [a-z0-9 ]+ ago", seen), seen
    wait_for(lambda: re.search(r"Running\s+Running", shoal("service", "ps", "other_slow").stdout), 20,
             "the slow task RUNNING once healthy")
    sick = wait_for(lambda: (lambda ps: ps if "Failed" in ps else None)(shoal("service", "ps", "--no-trunc", "other_sick").stdout),
                    20, "the unhealthy task killed")
    assert '"task: non-zero exit (137): dockerexec: unhealthy container"' in sick
    shoal("stack", "rm", "other")


def test_secrets_and_configs_reach_the_tasks_and_roll_when_changed(shoal: Shoal, tmp_path: Path) -> None:
    (tmp_path / "db_password.txt").write_text("s3cret-1\n")
    (tmp_path / "app.conf").write_text("color=blue\n")
    compose = tmp_path / "docker-compose.yml"
    compose.write_text(
        "services:\n  app:\n    image: localhost/busybox:test\n"
        "    command: [sh, -c, 'cat /run/secrets/db_password /etc/app.conf; ls -l /run/secrets/db_password; exec sleep 300']\n"
        "    stop_grace_period: 1s\n"
        "    secrets: [db_password]\n"
        "    configs: [{source: app_conf, target: /etc/app.conf, mode: 0440}]\n"
        "secrets:\n  db_password:\n    file: ./db_password.txt\n"
        "configs:\n  app_conf:\n    file: ./app.conf\n")
    first = shoal("stack", "deploy", "-c", str(compose), "other")
    assert first.stdout.splitlines() == ["Creating network other_default", "Creating secret other_db_password",
                                         "Creating config other_app_conf", "Creating service other_app"]
    logs = wait_for(lambda: (lambda o: o if "color=blue" in o else None)(shoal("service", "logs", "--raw", "other_app").stdout),
                    20, "the task's output")
    assert "s3cret-1" in logs and "-r--r--r--" in logs
    (tmp_path / "db_password.txt").write_text("s3cret-2\n")
    second = shoal("stack", "deploy", "-c", str(compose), "other")
    assert "Updating secret other_db_password" in second.stdout
    wait_for(lambda: "s3cret-2" in shoal("service", "logs", "--raw", "other_app").stdout, 30,
             "the task replaced with the new secret")
    removed = shoal("stack", "rm", "other").stdout.splitlines()
    assert removed == ["Removing service other_app", "Removing secret other_db_password",
                       "Removing config other_app_conf", "Removing network other_default"]


def test_dns_extra_hosts_and_tmpfs_reach_the_task_as_docker_deploys_them(shoal: Shoal, tmp_path: Path) -> None:
    """A service's `dns:` feeds the embedded resolver, which stays the nameserver (`peer` still
    resolves; shoal made 192.0.2.53 the nameserver and no name resolved); a mapping of
    extra_hosts lands sorted with an IPv6 address unbracketed; a tmpfs volume's `mode` is
    dropped as docker/cli drops it (1777)."""
    compose = tmp_path / "net.yml"
    compose.write_text(
        "services:\n"
        "  peer:\n    image: localhost/busybox:test\n    command: [sleep, '300']\n    stop_grace_period: 1s\n"
        "  probe:\n    image: localhost/busybox:test\n    stop_grace_period: 1s\n"
        "    command: [sh, -c, 'cat /etc/resolv.conf /etc/hosts; stat -c tmpfs=%a /scratch; "
        "nslookup peer >/dev/null && echo peer-resolves; exec sleep 300']\n"
        "    dns: [192.0.2.53]\n"
        "    extra_hosts: {zeta: 10.1.1.1, alpha: '[::1]'}\n"
        "    volumes: [{type: tmpfs, target: /scratch, tmpfs: {size: 1048576, mode: 0700}}]\n")
    shoal("stack", "deploy", "-d", "-c", str(compose), "other")
    try:
        out = wait_for(lambda: (lambda o: o if "tmpfs=" in o and ("peer-resolves" in o or "can't" in o) else None)(
            shoal("service", "logs", "--raw", "other_probe").stdout), 40, "the probe's output")
        assert "nameserver 127.0.0.11" in out and "# ExtServers: [192.0.2.53]" in out
        assert "nameserver 192.0.2.53" not in out
        assert "peer-resolves" in out
        hosts = [line.split() for line in out.splitlines() if line.endswith(("alpha", "zeta"))]
        assert hosts == [["::1", "alpha"], ["10.1.1.1", "zeta"]]
        assert "tmpfs=1777" in out
    finally:
        shoal("stack", "rm", "other")


def test_host_gateway_in_extra_hosts_reaches_the_host(shoal: Shoal, tmp_path: Path) -> None:
    """`host.docker.internal: host-gateway` (extra_hosts, --host, --add-host) is an address
    of the node's host, as moby's HostGatewayIP (docker0's; here the task network's gateway on
    this node): a task reaches a server on the host by it. Shoal wrote `host-gateway` into
    /etc/hosts, a line no resolver reads."""
    listener = socket.socket()
    listener.bind(("0.0.0.0", 0))
    listener.listen()
    listener.settimeout(40)
    port = listener.getsockname()[1]
    compose = tmp_path / "gw.yml"
    compose.write_text(
        "services:\n  probe:\n    image: localhost/busybox:test\n    stop_grace_period: 1s\n"
        f"    command: [sh, -c, 'grep host.docker.internal /etc/hosts; echo hi | nc host.docker.internal {port}; "
        "exec sleep 300']\n"
        "    extra_hosts: ['host.docker.internal:host-gateway']\n")
    shoal("stack", "deploy", "-d", "-c", str(compose), "other")
    try:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(5)
            assert conn.recv(16) == b"hi\n"
        out = shoal("service", "logs", "--raw", "other_probe").stdout
        [net] = json.loads(shoal("network", "inspect", "other_default").stdout)
        assert out.split()[:2] == [net["IPAM"]["Config"][0]["Gateway"], "host.docker.internal"]
    finally:
        listener.close()
        shoal("stack", "rm", "other")


def test_deploy_builds_a_missing_image_and_sends_its_secret(shoal: Shoal, tmp_path: Path) -> None:
    """`build:` honoured on deploy (Swarm ignores it), with shoald loading the compose file: the
    stack comes back from shoald as a dict, and the build and the secret's content are done on
    the client from it."""
    (tmp_path / "ctx").mkdir()
    (tmp_path / "ctx" / "Dockerfile").write_text(
        "FROM localhost/busybox:test\nRUN echo built-here > /built\nCMD [\"sleep\", \"300\"]\n")
    (tmp_path / "token.txt").write_text("s3cret\n")
    compose = tmp_path / "build.yml"
    compose.write_text("services:\n  app:\n    build: ./ctx\n    image: localhost/built:v1\n"
                       "    stop_grace_period: 1s\n    secrets: [token]\n"
                       "secrets:\n  token:\n    file: ./token.txt\n")
    assert shoal("stack", "ls").returncode == 0  # shoald runs: the file is loaded there
    result = shoal("stack", "deploy", "-c", str(compose), "other", timeout=180)
    assert "Building app (localhost/built:v1)" in result.stderr
    assert "localhost/built" in shoal("images").stdout
    def app_container() -> str | None:
        rows = shoal("ps", "--no-trunc", "--format", "{{.ID}} {{.Names}}").stdout.splitlines()
        return next((r.split()[0] for r in rows if r.split()[1].startswith("other_app.")), None)

    cid = wait_for(app_container, 30, "the app's container")
    assert shoal("exec", cid, "cat", "/built", "/run/secrets/token").stdout == "built-here\ns3cret\n"
    again = shoal("stack", "deploy", "-c", str(compose), "other", timeout=60)
    assert "Building" not in again.stderr  # in the store now: not built again
    shoal("stack", "rm", "other")
    wait_for(lambda: app_container() is None, 30, "the app to go")


def test_containers_on_a_user_network_resolve_each_other(shoal: Shoal) -> None:
    shoal("network", "create", "appnet")
    try:
        shoal("run", "-d", "--name", "api", "--network", "appnet", "localhost/busybox:test",
              "sh", "-c", "mkdir -p /www && echo hello-from-api > /www/index.html && exec httpd -f -p 80 -h /www")
        client = shoal("run", "--rm", "--network", "appnet", "localhost/busybox:test",
                       "wget", "-q", "-O", "-", "http://api/")
        assert client.stdout.strip() == "hello-from-api"
        lookup = shoal("run", "--rm", "--network", "appnet", "localhost/busybox:test", "cat", "/etc/resolv.conf")
        assert "nameserver 127.0.0.11" in lookup.stdout
    finally:
        shoal("rm", "-f", "api", check=False)
        shoal("network", "rm", "appnet", check=False)


def test_stack_rm_leaves_nothing_behind(shoal: Shoal, webapp: int) -> None:
    out = shoal("stack", "rm", "webapp").stdout
    assert out.splitlines() == ["Removing service webapp_web", "Removing network webapp_webnet"]
    wait_for(lambda: not shoal("ps", "-aq").stdout.strip(), 30, "every task container removed")
    wait_for(lambda: "webapp_webnet" not in shoal("network", "ls").stdout, 15, "the stack network removed")
    wait_for(lambda: not kernel_leftovers(shoal.root), 15, "kernel objects removed")
    nft = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    assert f"dport {webapp}" not in nft
