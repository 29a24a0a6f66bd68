"""shoal on a cgroup v2-only kernel, run inside the guest that tests/cgroupv2/guest.py boots (the
host's pytest runs this file there through test_cgroupv2_guest.py; it is not named test_*.py so
the host's own collection never picks it up). Limits written and read back from the unified
hierarchy (crun and runc), `stats`, an OOM kill, a build's RUN step, the seed's stack with its published port,
and every cgroup gone afterwards."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CG = Path("/sys/fs/cgroup")
NONE = ("--network", "none")

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not (CG / "cgroup.controllers").exists() or os.environ.get("SHOAL_CGROUPV2_GUEST") != "1",
    reason="runs only inside the cgroup v2 guest (tests/cgroupv2/test_cgroupv2_guest.py boots it)")


def cgroup_dir(pid: int | str) -> Path:
    """The unified hierarchy has one line, `0::/path`."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    assert len(lines) == 1 and lines[0].startswith("0::"), lines
    return CG / lines[0][3:].lstrip("/")


def inspect(shoal, name: str) -> dict:  # type: ignore[no-untyped-def]
    return json.loads(shoal("inspect", name, check=True).stdout)[0]


def shoal_cgroups() -> list[str]:
    parent = CG / "shoal"
    return sorted(p.name for p in parent.iterdir() if p.is_dir()) if parent.is_dir() else []


@pytest.fixture
def clean(shoal, busybox_image):  # type: ignore[no-untyped-def]
    names: list[str] = []
    yield names
    # One command each (every CLI start costs seconds under emulation).
    shoal("rm", "-f", *names)
    listed = shoal("ps", "-a", "--format", "{{.Names}}", check=True).stdout.split()
    left = [n for n in names if n in listed]
    assert not left, f"containers left: {left}"


def test_the_guest_is_cgroup_v2_only_with_every_controller() -> None:
    mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    assert [m[2] for m in mounts if m[1] == str(CG)] == ["cgroup2"]
    assert not [m for m in mounts if m[2] == "cgroup"], "no cgroup v1 hierarchy may be mounted"
    enabled = set((CG / "cgroup.subtree_control").read_text().split())
    assert {"cpu", "cpuset", "io", "memory", "pids"} <= enabled
    from shoal.runtime import cgroups
    assert cgroups.is_v2()


def test_limits_are_written_to_the_unified_hierarchy_and_read_back(shoal, busybox_image, clean) -> None:
    clean.append("v2-limits")
    cid = shoal("run", "-d", "--name", "v2-limits", *NONE, "--cpus", "0.1", "--memory", "50M",
                "--pids-limit", "20", busybox_image, "sleep", "300", check=True).stdout.strip()
    pid = inspect(shoal, "v2-limits")["State"]["Pid"]
    d = cgroup_dir(pid)
    assert d == CG / "shoal" / cid
    assert (d / "cpu.max").read_text().split() == ["10000", "100000"]
    assert (d / "memory.max").read_text().strip() == "52428800"
    assert (d / "pids.max").read_text().strip() == "20"
    # As Docker on cgroup v2: a private cgroup namespace, so the container sees its own cgroup
    # as / and its own limits at /sys/fs/cgroup (never the host's tree).
    seen = shoal("exec", "v2-limits", "cat", "/proc/self/cgroup", "/sys/fs/cgroup/memory.max",
                 "/sys/fs/cgroup/pids.max", check=True).stdout.split()
    assert seen == ["0::/", "52428800", "20"], seen
    from shoal.runtime import cgroups
    assert cgroups.read_limits(cid) == cgroups.Limits(cpu_quota=10000, cpu_period=100000,
                                                      memory=52428800, pids=20)
    # The pids limit is enforced, not only written: a fork bomb stops at 20 tasks.
    proc = shoal("exec", "v2-limits", "sh", "-c", "for i in $(seq 40); do sleep 5 & done; wait", timeout=120)
    assert "fork" in proc.stderr, (proc.returncode, proc.stdout, proc.stderr)
    events = dict(line.split() for line in (d / "pids.events").read_text().splitlines())
    assert int(events["max"]) > 0
    # --cgroupns host: the container sees where it really is, as with Docker.
    proc = shoal("run", "--rm", *NONE, "--cgroupns", "host", busybox_image, "cat", "/proc/self/cgroup", check=True)
    assert re.fullmatch(r"0::/shoal/[0-9a-f]{64}", proc.stdout.strip()), proc.stdout
    shoal("rm", "-f", "v2-limits", check=True)
    assert not d.exists(), "the container's cgroup is removed with it"
    assert cid not in shoal_cgroups()


def _stats_row(shoal, name: str) -> dict[str, str]:  # type: ignore[no-untyped-def]
    out = shoal("stats", "--no-stream", name, check=True).stdout.splitlines()
    header = re.split(r"\s{2,}", out[0].strip())
    assert header == ["CONTAINER ID", "NAME", "CPU %", "MEM USAGE / LIMIT", "MEM %", "NET I/O", "BLOCK I/O", "PIDS"]
    return dict(zip(header, re.split(r"\s{2,}", out[1].strip())))


def _mib(text: str) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([KMGT]?i?B)", text.strip()).groups()  # type: ignore[union-attr]
    return float(number) * {"B": 1 / 2**20, "KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "TiB": 2**20}[unit]


def test_stats_reads_cpu_memory_and_pids_from_cgroup_v2(shoal, busybox_image, clean) -> None:
    clean.append("v2-stats")
    # 16 MiB in /dev/shm is charged to the container's memory; the loop burns its half CPU.
    shoal("run", "-d", "--name", "v2-stats", *NONE, "--cpus", "0.5", "--memory", "64M", busybox_image, "sh", "-c",
          "head -c 16777216 /dev/zero > /dev/shm/fill; sleep 300 & while :; do :; done", check=True)
    time.sleep(2)
    row = _stats_row(shoal, "v2-stats")
    usage, limit = row["MEM USAGE / LIMIT"].split(" / ")
    assert limit == "64MiB"
    assert 16 <= _mib(usage) < 64, row
    assert 20 <= float(row["MEM %"].rstrip("%")) < 100, row
    assert float(row["CPU %"].rstrip("%")) > 5, row
    assert row["PIDS"] == "2", row  # sh (its loop is a builtin) and sleep
    shoal("rm", "-f", "v2-stats", check=True)


def test_oom_kill_is_reported_from_memory_events(shoal, busybox_image, clean) -> None:
    clean += ["v2-oom", "v2-kill9"]
    proc = shoal("run", "--name", "v2-oom", *NONE, "--memory", "20M", busybox_image, "sh", "-c",
                 "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done", timeout=180)
    assert proc.returncode == 137, (proc.stdout, proc.stderr)
    state = inspect(shoal, "v2-oom")["State"]
    assert state["OOMKilled"] is True and state["ExitCode"] == 137
    # A SIGKILL that is not the OOM killer's is exit 137 too, and not reported as an OOM.
    shoal("run", "-d", "--name", "v2-kill9", *NONE, "--memory", "20M", busybox_image, "sleep", "300", check=True)
    shoal("kill", "v2-kill9", check=True)
    assert shoal("wait", "v2-kill9", check=True).stdout.strip() == "137"
    state = inspect(shoal, "v2-kill9")["State"]
    assert state["OOMKilled"] is False and state["ExitCode"] == 137


def test_runc_engine_under_cgroup_v2(shoal, busybox_image) -> None:
    """runc, the fallback engine, sets the same unified files and the same private namespace."""
    proc = shoal("run", "--rm", *NONE, "--memory", "30M", "--pids-limit", "10", busybox_image, "cat",
                 "/proc/self/cgroup", "/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/pids.max",
                 env={"SHOAL_RUNTIME": "runc"}, check=True)
    assert proc.stdout.split() == ["0::/", "31457280", "10"], proc.stdout
    assert shoal_cgroups() == []


def test_build_run_step_under_cgroup_v2(shoal, busybox_image, tmp_path) -> None:
    (tmp_path / "Dockerfile").write_text(
        f"FROM {busybox_image}\nRUN cat /proc/self/cgroup > /cgroup-of-run && echo built > /built\n")
    shoal("build", "-q", "-t", "localhost/v2-build:test", str(tmp_path), check=True, timeout=300)
    try:
        proc = shoal("run", "--rm", *NONE, "localhost/v2-build:test", "cat", "/built", "/cgroup-of-run", check=True)
        lines = proc.stdout.splitlines()
        assert lines[0] == "built" and lines[1].startswith("0::"), lines
        assert shoal_cgroups() == [], "a build step's cgroup is removed with the step"
    finally:
        shoal("rmi", "localhost/v2-build:test")


STACK = """\
version: "3"
services:
  web:
    image: localhost/busybox:test
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
    deploy:
      replicas: 3
      resources:
        limits:
          cpus: "0.1"
          memory: 50M
        reservations:
          memory: 20M
    stop_grace_period: 1s
    ports:
      - "{port}:80"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def shoald_log(shoal, shoal_root: Path) -> Path:
    """shoald started here and waited for as long as emulation needs: the CLI starts it itself
    but gives up after 20 s, which an emulated guest on a loaded machine can take to import it.
    The session's fixture stops it at the end."""
    from shoal.api.client import Client

    log = shoal_root / "shoald.log"
    if Client().ping():
        return log
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "shoal", "daemon"], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, start_new_session=True)
    deadline = time.monotonic() + 300
    while not Client().ping():
        assert proc.poll() is None, f"shoald exited {proc.returncode}:\n{log.read_text()[-4000:]}"
        assert time.monotonic() < deadline, f"shoald did not answer in 300 s:\n{log.read_text()[-4000:]}"
        time.sleep(0.5)
    return log


def test_seed_stack_deploys_limited_tasks_and_answers_on_its_port(shoal, busybox_image, tmp_path, shoald_log) -> None:
    port = _free_port()
    (tmp_path / "docker-compose.yml").write_text(STACK.format(port=port))
    try:
        proc = shoal("stack", "deploy", "-c", str(tmp_path / "docker-compose.yml"), "v2seed", timeout=600)
        assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}\n--- shoald.log ---\n{shoald_log.read_text()[-4000:]}"
        # Made in the background (Docker's default): waited for as a user does, on `stack services`.
        deadline = time.monotonic() + 600  # emulated: as long as the deploy was given
        while shoal("stack", "services", "--format", "{{.Replicas}}", "v2seed").stdout != "3/3\n":
            assert time.monotonic() < deadline, f"the 3 tasks did not run\n{shoald_log.read_text()[-4000:]}"
            time.sleep(0.5)
        ids = shoal("ps", "-q", "--no-trunc", check=True).stdout.split()
        assert len(ids) == 3
        for cid in ids:
            d = cgroup_dir(inspect(shoal, cid)["State"]["Pid"])
            assert d == CG / "shoal" / cid
            assert (d / "cpu.max").read_text().split() == ["10000", "100000"]
            assert (d / "memory.max").read_text().strip() == "52428800"
            assert (d / "memory.low").read_text().strip() == "20971520", "a reservation is memory.low on v2"
        hostnames = set()
        deadline = time.monotonic() + 60
        while len(hostnames) < 3 and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
                    hostnames.add(r.read().decode().strip())
            except OSError:
                time.sleep(0.5)
        assert len(hostnames) == 3, hostnames
    finally:
        shoal("stack", "rm", "v2seed", timeout=300)
    deadline = time.monotonic() + 120
    while shoal("ps", "-aq").stdout.strip() and time.monotonic() < deadline:
        time.sleep(1)
    assert not shoal("ps", "-aq").stdout.strip()
    assert shoal_cgroups() == [], "stack rm leaves no task cgroup"
