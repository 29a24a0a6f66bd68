"""Containers for real: crun under conmon, cgroup v1 limits, overlay mounts, the CLI as a user
runs it. After every test (failures included) nothing may be left: mount, cgroup, netns,
conmon or container process."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT_ONLY, poll
from runtime_helpers import assert_clean, container_ids, snapshot

pytestmark = [pytest.mark.root, ROOT_ONLY]

NONE = ("--network", "none")


@pytest.fixture
def clean(shoal, shoal_root: Path, busybox_image: str):
    """Yields a list to put container names in; removes them and checks for leftovers."""
    before = snapshot(shoal_root)
    names: list[str] = []
    try:
        yield names
    finally:
        ids = container_ids(shoal_root)
        if names:
            proc = shoal("rm", "-f", *names)
            # a name the test never got to create is "No such container"; anything else is a failed removal
            errors = [line for line in proc.stderr.splitlines() if "No such container" not in line]
            assert not errors, f"rm -f {names}: {proc.stderr}"
            left = set(shoal("ps", "-a", "--format", "{{.Names}}").stdout.split()) & set(names)
            assert not left, f"still listed after rm -f: {sorted(left)}"
        assert_clean(shoal_root, before, ids)


def inspect(shoal, name: str) -> dict:
    proc = shoal("inspect", name, check=True)
    return json.loads(proc.stdout)[0]


def test_exit_code_logs_both_streams_and_ps(shoal, busybox_image, clean):
    clean.append("t-logs")
    proc = shoal("run", "--name", "t-logs", *NONE, busybox_image, "sh", "-c",
                 "echo to-out; echo to-err >&2; printf 'no-newline'; exit 3")
    assert proc.returncode == 3
    assert "to-out" in proc.stdout and "to-err" not in proc.stdout
    assert "to-err" in proc.stderr
    logs = shoal("logs", "t-logs", check=True)
    assert logs.stdout == "to-out\nno-newline" and logs.stderr == "to-err\n"
    stamped = shoal("logs", "-t", "--tail", "1", "t-logs", check=True).stdout
    assert stamped.endswith("Z no-newline") and stamped[:4].isdigit() and "T" in stamped[:11]
    ps = shoal("ps", "-a", check=True).stdout.splitlines()
    assert ps[0].split() == ["CONTAINER", "ID", "IMAGE", "COMMAND", "CREATED", "STATUS", "PORTS", "NAMES"]
    row = next(line for line in ps if line.endswith("t-logs"))
    assert '"sh -c echo to-out; …"' in row and "Exited (3)" in row and "ago" in row
    doc = inspect(shoal, "t-logs")
    assert doc["Name"] == "/t-logs" and doc["State"]["ExitCode"] == 3
    assert doc["State"]["Status"] == "exited" and doc["Path"] == "sh"
    assert doc["State"]["FinishedAt"] > doc["State"]["StartedAt"]
    assert "t-logs" not in shoal("ps", check=True).stdout


def test_limits_read_back_from_cgroup(shoal, busybox_image, clean):
    clean.append("t-limits")
    cid = shoal("run", "-d", "--name", "t-limits", *NONE, "--cpus", "0.1", "--memory", "50M",
                "--pids-limit", "20", busybox_image, "sleep", "30", check=True).stdout.strip()
    assert len(cid) == 64
    cg = Path("/sys/fs/cgroup")
    assert (cg / "cpu/shoal" / cid / "cpu.cfs_quota_us").read_text().strip() == "10000"
    assert (cg / "cpu/shoal" / cid / "cpu.cfs_period_us").read_text().strip() == "100000"
    assert (cg / "memory/shoal" / cid / "memory.limit_in_bytes").read_text().strip() == "52428800"
    assert (cg / "pids/shoal" / cid / "pids.max").read_text().strip() == "20"
    host = inspect(shoal, "t-limits")["HostConfig"]
    assert (host["Memory"], host["NanoCpus"], host["PidsLimit"]) == (52428800, 100000000, 20)
    stats = shoal("stats", "--no-stream", "t-limits", check=True).stdout.splitlines()
    assert stats[0].split()[:4] == ["CONTAINER", "ID", "NAME", "CPU"] and "MEM USAGE / LIMIT" in stats[0]
    assert "/ 50MiB" in stats[1] and stats[1].rstrip().endswith("1")
    start = time.monotonic()
    shoal("stop", "-t", "1", "t-limits", check=True)
    assert time.monotonic() - start < 8


def test_oom_kill_reported(shoal, busybox_image, clean):
    clean.append("t-oom")
    proc = shoal("run", "--name", "t-oom", *NONE, "--memory", "20M", busybox_image, "sh", "-c",
                 "x=aaaaaaaaaaaaaaaa; while true; do x=$x$x; done", timeout=60)
    assert proc.returncode == 137
    state = inspect(shoal, "t-oom")["State"]
    assert state["OOMKilled"] is True and state["ExitCode"] == 137


def test_stop_grace_then_sigkill(shoal, busybox_image, clean):
    clean += ["t-stubborn", "t-polite"]
    # PID 1 without a handler never gets SIGTERM: only the SIGKILL after the grace period works.
    shoal("run", "-d", "--name", "t-stubborn", *NONE, busybox_image, "sleep", "60", check=True)
    shoal("run", "-d", "--name", "t-polite", *NONE, busybox_image, "sh", "-c",
          "trap 'exit 0' TERM; while true; do sleep 0.1; done", check=True)
    start = time.monotonic()
    shoal("stop", "-t", "2", "t-stubborn", check=True)
    took = time.monotonic() - start
    assert took >= 2.0, took
    assert inspect(shoal, "t-stubborn")["State"]["ExitCode"] == 137
    shoal("stop", "-t", "20", "t-polite", check=True)
    assert inspect(shoal, "t-polite")["State"]["ExitCode"] == 0


def test_user_group_hostname_env_workdir(shoal, busybox_image, clean):
    clean.append("t-user")
    proc = shoal("run", "--name", "t-user", *NONE, "-u", "app", "-w", "/srv/x", "-e", "GREETING=hi",
                 busybox_image, "sh", "-c",
                 'id; pwd; echo $GREETING $HOME; hostname; cat /etc/hostname; grep -c localhost /etc/hosts',
                 check=True)
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("uid=1000(app) gid=1000(app)") and "50(staff)" in lines[0]
    assert lines[1] == "/srv/x" and lines[2] == "hi /home/app"
    cid = inspect(shoal, "t-user")["Id"]
    assert lines[3] == cid[:12] == lines[4]
    group = shoal("run", "--rm", *NONE, "-u", "app:staff", busybox_image, "id", check=True).stdout
    assert group.startswith("uid=1000(app) gid=50(staff)")
    numeric = shoal("run", "--rm", *NONE, "-u", "4242:4343", busybox_image, "id", "-u", check=True).stdout
    assert numeric.strip() == "4242"


def test_unknown_user_fails_cleanly(shoal, busybox_image, clean):
    proc = shoal("run", "--rm", *NONE, "-u", "ghost", busybox_image, "id")
    assert proc.returncode != 0
    assert "unable to find user ghost" in proc.stderr


def test_rm_detached_removed_by_exit_command(shoal, shoal_root, busybox_image, clean):
    cid = shoal("run", "-d", "--rm", *NONE, busybox_image, "sh", "-c", "sleep 0.3", check=True).stdout.strip()
    # No shoal process runs now: conmon's exit command alone must remove it.
    poll(lambda: not (shoal_root / "containers" / cid).exists(), 15, "the container's removal", 0.05)
    assert cid[:12] not in shoal("ps", "-a").stdout
    fg = shoal("run", "--rm", *NONE, busybox_image, "sh", "-c", "echo bye; exit 9")
    assert fg.returncode == 9 and fg.stdout == "bye\n"
    assert "Exited (9)" not in shoal("ps", "-a").stdout


def test_read_only_rootfs_and_tmpfs(shoal, busybox_image, clean):
    proc = shoal("run", "--rm", *NONE, "--read-only", "--tmpfs", "/scratch:size=1m", busybox_image, "sh",
                 "-c", "echo x > /scratch/ok && cat /scratch/ok; touch /nope")
    assert proc.returncode == 1
    assert proc.stdout == "x\n" and "Read-only file system" in proc.stderr


def test_bind_mount_and_named_volume(shoal, shoal_root, busybox_image, clean, tmp_path):
    host_dir = tmp_path / "shared"
    host_dir.mkdir()
    (host_dir / "in.txt").write_text("from host\n")
    out = shoal("run", "--rm", *NONE, "-v", f"{host_dir}:/data", busybox_image, "sh", "-c",
                "cat /data/in.txt; echo from container > /data/out.txt", check=True).stdout
    assert out == "from host\n" and (host_dir / "out.txt").read_text() == "from container\n"
    ro = shoal("run", "--rm", *NONE, "-v", f"{host_dir}:/data:ro", busybox_image, "touch", "/data/x")
    assert ro.returncode != 0 and not (host_dir / "x").exists()
    volume = shoal_root / "volumes" / "shoal-test-vol"
    try:
        # First use copies the image's content at the mount point in (Docker's copy-up).
        shoal("run", "--rm", *NONE, "-v", "shoal-test-vol:/etc", busybox_image, "sh", "-c",
              "echo kept > /etc/note", check=True)
        assert (volume / "_data" / "passwd").exists()
        again = shoal("run", "--rm", *NONE, "-v", "shoal-test-vol:/etc", busybox_image, "cat", "/etc/note",
                      check=True)
        assert again.stdout == "kept\n"
    finally:
        subprocess.run(["rm", "-rf", str(volume)], check=False)


def test_volume_copy_up_whenever_empty_at_a_containers_first_start(shoal, shoal_root, busybox_image, clean):
    """moby's populateVolume: a new container's volume gets the image's files at its mount point
    whenever the volume is empty, not only at the volume's first use (a container that mounted
    it where its image has nothing kept them out for good); a restart copies nothing again."""
    volume = shoal_root / "volumes" / "shoal-test-cpvol"
    clean.append("t-cpvol")
    try:
        shoal("run", "--rm", *NONE, "-v", "shoal-test-cpvol:/nothere", busybox_image, "true", check=True)
        assert not any((volume / "_data").iterdir())
        seen = shoal("run", "--rm", *NONE, "-v", "shoal-test-cpvol:/etc", busybox_image, "ls", "/etc", check=True)
        assert "passwd" in seen.stdout.split() and (volume / "_data" / "passwd").is_file()
        for entry in (volume / "_data").iterdir():
            entry.unlink()
        shoal("run", "--name", "t-cpvol", *NONE, "-v", "shoal-test-cpvol:/etc", busybox_image, "true", check=True)
        for entry in (volume / "_data").iterdir():
            entry.unlink()
        shoal("start", "t-cpvol", check=True)
        assert shoal("wait", "t-cpvol", check=True).stdout.strip() == "0"
        assert not any((volume / "_data").iterdir())  # a restart: nothing copied again
    finally:
        shoal("rm", "-f", "t-cpvol")
        subprocess.run(["rm", "-rf", str(volume)], check=False)


def test_init_ulimit_sysctl_label_entrypoint(shoal, busybox_image, clean):
    clean.append("t-misc")
    out = shoal("run", "--name", "t-misc", *NONE, "--init", "--ulimit", "nofile=100:200",
                "--sysctl", "net.ipv4.ip_forward=1", "-l", "team=a", "--hostname", "box",
                "--entrypoint", "sh", busybox_image, "-c",
                "tr '\\0' ' ' < /proc/1/cmdline; echo; ulimit -n; ulimit -Hn; "
                "cat /proc/sys/net/ipv4/ip_forward; hostname", check=True).stdout.splitlines()
    assert out[0].startswith("/sbin/docker-init -- sh -c")
    assert out[1:] == ["100", "200", "1", "box"]
    cfg = inspect(shoal, "t-misc")["Config"]
    assert cfg["Labels"] == {"team": "a"} and cfg["Entrypoint"] == ["sh"] and cfg["Hostname"] == "box"


def test_failures_leave_nothing(shoal, busybox_image, clean):
    proc = shoal("run", *NONE, "shoal-nosuch-image")
    assert proc.returncode == 125
    assert "Unable to find image 'shoal-nosuch-image:latest' locally" in proc.stderr
    lines = proc.stderr.strip().splitlines()  # run.go withHelp: `shoal: <why>`, then where run's help is
    assert lines[-3].startswith("shoal: ") and lines[-2:] == ["", "Run 'shoal run --help' for more information"]

    proc = shoal("run", *NONE, "--memory", "lots", busybox_image, "true")
    assert proc.returncode == 125
    assert proc.stderr.strip() == ('invalid argument "lots" for "-m, --memory" flag: invalid size: \'lots\'\n\n'
                                   "Usage:  shoal run [OPTIONS] IMAGE [COMMAND] [ARG...]\n\n"
                                   "Run 'shoal run --help' for more information")
    proc = shoal("run", *NONE, "--cpus", "abc", busybox_image, "true")
    assert proc.returncode == 125 and '"--cpus"' in proc.stderr
    proc = shoal("run", *NONE, "--cpus", "64", busybox_image, "true")
    assert proc.returncode == 125 and "Range of CPUs is from 0.01" in proc.stderr

    proc = shoal("run", *NONE, busybox_image, "shoal-no-such-command")
    assert proc.returncode == 127
    assert 'exec: "shoal-no-such-command": executable file not found in $PATH' in proc.stderr
    assert proc.stderr.startswith("shoal: failed to create task") and proc.stderr.count("\n") == 3  # and withHelp's lines

    clean.append("t-taken")
    shoal("create", "--name", "t-taken", *NONE, busybox_image, "true", check=True)
    cid = inspect(shoal, "t-taken")["Id"]
    proc = shoal("run", "--name", "t-taken", *NONE, busybox_image, "true")
    assert proc.returncode != 0
    assert (f'Conflict. The container name "/t-taken" is already in use by container "{cid}"'
            in proc.stderr)
    assert [line.split()[-1] for line in shoal("ps", "-a").stdout.splitlines()[1:]] == ["t-taken"]


def test_survives_kill_9_of_shoal_and_exit_recorded_without_shoal(shoal, shoal_root, busybox_image, clean):
    clean.append("t-orphan")
    runner = subprocess.Popen([sys.executable, "-m", "shoal", "run", "--name", "t-orphan", *NONE,
                               busybox_image, "sh", "-c", "echo up; sleep 3; exit 7"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert runner.stdout is not None
        assert runner.stdout.readline() == b"up\n"
    finally:
        runner.kill()
        runner.wait()
    directory = poll(lambda: next((d for d in (shoal_root / "containers").iterdir()
                                   if json.loads((d / "container.json").read_text())["name"] == "t-orphan"), None),
                     10, "the container's record", 0.05)
    record = json.loads((directory / "container.json").read_text())
    os.kill(record["state"]["pid"], 0)  # still running with no shoal process
    # The exit is recorded by conmon and its exit command while no shoal process exists.
    poll(lambda: json.loads((directory / "container.json").read_text())["state"]["status"] == "exited",
         20, "the exit recorded", 0.05)
    record = json.loads((directory / "container.json").read_text())
    assert record["state"]["exit_code"] == 7
    assert "Exited (7)" in shoal("ps", "-a").stdout


def test_exec_interactive_tty_and_plain(shoal, busybox_image, clean):
    clean.append("t-exec")
    shoal("run", "-d", "--name", "t-exec", *NONE, busybox_image, "sleep", "60", check=True)
    plain = shoal("exec", "-e", "X=1", "-u", "app", "-w", "/tmp", "t-exec", "sh", "-c",
                  "echo $X; id -u; pwd; exit 4")
    assert plain.returncode == 4 and plain.stdout == "1\n1000\n/tmp\n"
    assert shoal("exec", "-i", "t-exec", "cat", input="piped\n").stdout == "piped\n"
    missing = shoal("exec", "t-exec", "shoal-nope")
    assert missing.returncode == 127 and "executable file not found" in missing.stderr

    pid, fd = pty.fork()
    if pid == 0:
        os.execv(sys.executable, [sys.executable, "-m", "shoal", "exec", "-it", "t-exec", "sh"])
    try:
        out = _read_until(fd, b"# ", 20)
        os.write(fd, b"tty; echo TERM=$TERM; exit 6\n")
        out = _read_until(fd, b"TERM=xterm", 10)
        assert b"/dev/pts/" in out
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 6
    finally:
        os.close(fd)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def test_exec_runs_under_the_containers_ulimits(shoal, busybox_image, clean):
    """moby's exec process is the container's process spec with another command: its rlimits
    too. `crun exec` alone gave the exec'd process the CLI's own limits."""
    clean.append("t-exec-ulimit")
    shoal("run", "-d", "--name", "t-exec-ulimit", *NONE, "--ulimit", "nofile=100:200", "--ulimit", "nproc=300:400",
          busybox_image, "sleep", "60", check=True)
    got = shoal("exec", "t-exec-ulimit", "sh", "-c", "ulimit -n; ulimit -Hn; ulimit -u; ulimit -Hu", check=True)
    assert got.stdout.split() == ["100", "200", "300", "400"], got


def _read_until(fd: int, marker: bytes, timeout: float) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out:
        left = deadline - time.monotonic()
        assert left > 0, f"no {marker!r} in {out!r}"
        if select.select([fd], [], [], left)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
    return out


def test_create_start_wait_kill_and_restart(shoal, busybox_image, clean):
    clean.append("t-life")
    shoal("create", "--name", "t-life", *NONE, busybox_image, "sh", "-c", "echo run; sleep 30", check=True)
    assert "Created" in shoal("ps", "-a", "--format", "{{.Names}} {{.Status}}").stdout
    shoal("start", "t-life", check=True)
    status = shoal("container", "ls", "--format", "{{.Names}}|{{.Status}}", check=True).stdout
    assert status.startswith("t-life|Up ")
    waiter = subprocess.Popen([sys.executable, "-m", "shoal", "wait", "t-life"], stdout=subprocess.PIPE, text=True)
    shoal("kill", "-s", "KILL", "t-life", check=True)
    assert waiter.communicate(timeout=30)[0].strip() == "137"
    shoal("start", "t-life", check=True)
    assert inspect(shoal, "t-life")["State"]["Running"] is True
    assert shoal("logs", "t-life", check=True).stdout.count("run\n") == 2
    rm = shoal("rm", "t-life")
    assert rm.returncode != 0 and "You cannot remove a running container" in rm.stderr
    shoal("container", "rm", "-f", "t-life", check=True)
    clean.remove("t-life")
    assert "t-life" not in shoal("ps", "-a").stdout


def test_foreground_run_forwards_sigterm_and_logs_follow(shoal, busybox_image, clean):
    clean.append("t-fg")
    runner = subprocess.Popen([sys.executable, "-m", "shoal", "run", "--name", "t-fg", *NONE, busybox_image,
                               "sh", "-c", "trap 'echo got-term; exit 3' TERM; echo ready; "
                               "while true; do sleep 0.1; done"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert runner.stdout is not None
        assert runner.stdout.readline() == b"ready\n"
        follower = subprocess.Popen([sys.executable, "-m", "shoal", "logs", "-f", "t-fg"],
                                    stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)  # the follower is attached before the container ends
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(timeout=30) == 3
        assert runner.stdout.read() == b"got-term\n"
        followed, _ = follower.communicate(timeout=30)
        assert followed == "ready\ngot-term\n"
    finally:
        runner.kill()


def test_runc_fallback_and_container_prune(shoal, busybox_image, clean):
    clean.append("t-runc")
    env = {"SHOAL_RUNTIME": "runc"}
    proc = shoal("run", "--name", "t-runc", *NONE, "--memory", "30M", busybox_image, "sh", "-c",
                 "grep -c shoal /proc/self/cgroup; exit 2", env=env)
    assert proc.returncode == 2 and int(proc.stdout) >= 1
    assert inspect(shoal, "t-runc")["HostConfig"]["Runtime"] == "runc"
    pruned = shoal("container", "prune", "-f", check=True).stdout
    assert pruned.startswith("Deleted Containers:\n") and pruned.rstrip().endswith("Total reclaimed space: 0B")
    assert "t-runc" not in shoal("ps", "-a").stdout
    clean.remove("t-runc")


def test_log_is_size_capped_and_keeps_the_end(shoal, shoal_root, busybox_image, clean):
    clean.append("t-cap")
    env = {"SHOAL_LOG_SIZE_MAX": "20000"}
    shoal("run", "-d", "--name", "t-cap", *NONE, busybox_image, "sh", "-c",
          "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done", env=env, check=True)
    assert shoal("wait", "t-cap", check=True).stdout.strip() == "0"
    log = Path(inspect(shoal, "t-cap")["LogPath"])
    assert log.stat().st_size <= 20000
    lines = shoal("logs", "t-cap", check=True).stdout.splitlines()
    assert lines[-1] == "line 2999" and 0 < len(lines) < 3000


def test_start_releases_the_created_process_without_a_runtime_process(shoal, shoal_root, busybox_image, clean):
    """crun's start done in shoal's process (runtime/engine.py Runtime.start): the container's
    init, waiting on the exec fifo after `crun create`, runs, and crun sees it running (its
    fifo gone) as after `crun start`; with nothing to start, crun's own message."""
    from shoal.errors import ShoalError
    from shoal.runtime import engine

    clean.append("t-fifo")
    shoal("run", "-d", "--name", "t-fifo", *NONE, busybox_image, "sh", "-c", "echo released; sleep 30", check=True)
    cid = inspect(shoal, "t-fifo")["Id"]
    runtime = engine.select()
    if runtime.name != "crun":
        pytest.skip("crun is not this host's runtime")
    state = json.loads(runtime.run("state", cid).stdout)
    assert state["status"] == "running"
    assert not (runtime.root / cid / "exec.fifo").exists()
    poll(lambda: "released" in shoal("logs", "t-fifo").stdout, 10, "the container's output", 0.05)
    with pytest.raises(ShoalError, match="nothere"):
        runtime.start("nothere")


def test_bind_propagation_reaches_the_container(shoal, busybox_image, clean, tmp_path):
    """`-v SRC:DST:rslave` as moby sets it up: the bind rslave, the container's root at least
    slave, so a mount made later under a shared SRC on the host appears inside; `Propagation`
    in inspect says so. (Before, every bind was rprivate whatever was asked.)"""
    src = tmp_path / "prop"
    src.mkdir()
    subprocess.run(["mount", "--bind", str(src), str(src)], check=True)
    subprocess.run(["mount", "--make-shared", str(src)], check=True)
    try:
        clean.append("t-prop")
        shoal("run", "-d", "--name", "t-prop", *NONE, "-v", f"{src}:/m:rslave", busybox_image, "sleep", "60", check=True)
        (src / "sub").mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "proptest", str(src / "sub")], check=True)
        seen = shoal("exec", "t-prop", "sh", "-c", "grep -c ' /m/sub tmpfs ' /proc/self/mounts", check=False)
        assert seen.stdout.strip() == "1", seen
        mounts = json.loads(shoal("inspect", "t-prop", check=True).stdout)[0]["Mounts"]
        assert [m["Propagation"] for m in mounts if m["Destination"] == "/m"] == ["rslave"], mounts
        bad = shoal("run", "--rm", *NONE, "-v", "somevol:/m:rslave", busybox_image, "true")
        assert bad.returncode == 125 and "field BindOptions must not be specified" in bad.stderr, bad.stderr
    finally:
        shoal("rm", "-f", "t-prop")
        subprocess.run(["umount", "-R", str(src)], check=False)
