"""The container verbs beyond run/stop/rm, for real (crun under conmon, the cgroup freezer, the
overlay upper dir): pause/unpause, restart, rename, top, port, update, diff, commit, export,
cp both ways (a hostile container's symlinks never reach the host), attach, network
connect/disconnect and `run --network container:NAME`; Docker's errors and exit codes. Nothing
is left behind: every test removes what it made and checks the kernel and the state root."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from conftest import ROOT_ONLY
from runtime_helpers import assert_clean, container_ids, snapshot

pytestmark = [pytest.mark.root, ROOT_ONLY]

NONE = ("--network", "none")
CG = Path("/sys/fs/cgroup")
V2 = (CG / "cgroup.controllers").exists()


@pytest.fixture
def clean(shoal, shoal_root: Path, busybox_image: str):
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


def cgroup_file(cid: str, controller: str, v1: str, v2: str) -> Path:
    return CG / "shoal" / cid / v2 if V2 else CG / controller / "shoal" / cid / v1


def inspect(shoal, name: str) -> dict:
    return json.loads(shoal("inspect", name, check=True).stdout)[0]


def test_pause_unpause_exec_and_stop_of_a_paused_container(shoal, busybox_image, clean):
    clean.append("cc-pause")
    cid = shoal("run", "-d", "--name", "cc-pause", *NONE, busybox_image, "sleep", "600", check=True).stdout.strip()
    assert shoal("pause", "cc-pause", check=True).stdout == "cc-pause\n"
    state = cgroup_file(cid, "freezer", "freezer.state", "cgroup.freeze").read_text().strip()
    assert state == ("1" if V2 else "FROZEN")
    row = next(line for line in shoal("ps", check=True).stdout.splitlines() if line.endswith("cc-pause"))
    assert "(Paused)" in row and "Up " in row
    assert shoal("ps", "--format", "{{.Names}} {{.State}}", check=True).stdout.splitlines().count("cc-pause paused") == 1
    st = inspect(shoal, "cc-pause")["State"]
    assert (st["Status"], st["Paused"], st["Running"]) == ("paused", True, True)
    again = shoal("pause", "cc-pause")
    assert again.returncode == 1
    assert again.stderr == f"Error response from daemon: container {cid} is already paused\n"
    ex = shoal("exec", "cc-pause", "true")
    assert ex.returncode == 1
    assert ex.stderr == f"Error response from daemon: Container {cid} is paused, unpause the container before exec\n"
    assert shoal("container", "unpause", "cc-pause", check=True).stdout == "cc-pause\n"
    assert shoal("exec", "cc-pause", "true").returncode == 0
    shoal("pause", "cc-pause", check=True)
    rm = shoal("rm", "cc-pause")
    assert rm.returncode == 1 and rm.stderr == "Error response from daemon: container is paused and must be unpaused first\n"
    shoal("unpause", "cc-pause", check=True)
    nope = shoal("unpause", "cc-pause")
    assert nope.returncode == 1 and nope.stderr == f"Error response from daemon: Container {cid} is not paused\n"
    # A paused container still stops: the signal is delivered once it is thawed, as moby does.
    shoal("pause", "cc-pause", check=True)
    start = time.monotonic()
    shoal("stop", "-t", "1", "cc-pause", check=True)
    assert time.monotonic() - start < 60  # (a frozen process never dies: this would hang)
    assert inspect(shoal, "cc-pause")["State"]["Status"] == "exited"
    stopped = shoal("pause", "cc-pause")
    assert stopped.returncode == 1 and stopped.stderr == f"Error response from daemon: container {cid} is not running\n"


def test_restart_rename_top_and_update(shoal, busybox_image, clean):
    clean += ["cc-a", "cc-b", "cc-renamed"]
    cid = shoal("run", "-d", "--name", "cc-a", *NONE, busybox_image, "sh", "-c",
                "trap 'exit 0' TERM; while true; do sleep 0.1; done", check=True).stdout.strip()
    other = shoal("run", "-d", "--name", "cc-b", *NONE, busybox_image, "sleep", "600", check=True).stdout.strip()
    first = inspect(shoal, "cc-a")["State"]
    assert shoal("restart", "-t", "5", "cc-a", check=True).stdout == "cc-a\n"
    second = inspect(shoal, "cc-a")["State"]
    assert second["Running"] and second["Pid"] != first["Pid"] and second["StartedAt"] > first["StartedAt"]
    # -s: a signal the process ignores, so the grace period runs out and SIGKILL ends it
    start = time.monotonic()
    shoal("container", "restart", "-s", "SIGUSR2", "-t", "1", "cc-b", check=True)
    assert 1.0 <= time.monotonic() - start < 60  # the grace period ran out, then SIGKILL
    assert inspect(shoal, "cc-b")["State"]["Running"]

    clash = shoal("rename", "cc-a", "cc-b")
    assert clash.returncode == 1
    assert clash.stderr == ('failed to rename container: Error response from daemon: Conflict. The container '
                            f'name "/cc-b" is already in use by container "{other}". You have to remove (or '
                            'rename) that container to be able to reuse that name.\n')
    bad = shoal("rename", "cc-a", "bad name!")
    assert bad.returncode == 1 and "Invalid container name (bad name!)" in bad.stderr
    shoal("rename", "cc-a", "cc-renamed", check=True)
    assert inspect(shoal, "cc-renamed")["Id"] == cid
    assert shoal("inspect", "cc-a").returncode == 1

    top = shoal("top", "cc-renamed", check=True).stdout.splitlines()
    assert top[0].split() == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert top[0].startswith("UID" + " " * 17 + "PID")  # docker top's tabwriter: min width 20
    assert any(line.endswith("sh -c trap 'exit 0' TERM; while true; do sleep 0.1; done") for line in top[1:])
    custom = shoal("top", "cc-renamed", "-o", "pid,comm", check=True).stdout.splitlines()
    assert custom[0].split() == ["PID", "COMMAND"] and any(line.split()[-1] == "sh" for line in custom[1:])
    assert all(line.split()[-1] in ("sh", "sleep") for line in custom[1:])  # none of the host's

    shoal("update", "--memory", "64M", "--pids-limit", "40", "--cpus", "0.5", "--cpu-shares", "512",
          "cc-renamed", check=True)
    assert cgroup_file(cid, "memory", "memory.limit_in_bytes", "memory.max").read_text().strip() == str(64 << 20)
    assert cgroup_file(cid, "pids", "pids.max", "pids.max").read_text().strip() == "40"
    if V2:
        assert cgroup_file(cid, "cpu", "", "cpu.max").read_text().split() == ["50000", "100000"]
    else:
        assert cgroup_file(cid, "cpu", "cpu.cfs_quota_us", "").read_text().strip() == "50000"
        assert cgroup_file(cid, "cpu", "cpu.shares", "").read_text().strip() == "512"
    host = inspect(shoal, "cc-renamed")["HostConfig"]
    assert (host["Memory"], host["PidsLimit"], host["NanoCpus"], host["CpuShares"]) == (64 << 20, 40, 500_000_000, 512)
    none = shoal("update", "cc-renamed")
    assert none.returncode == 1 and none.stderr == "Error: you must provide one or more flags when using this command\n"
    small = shoal("update", "-m", "1M", "cc-renamed")
    assert small.returncode == 1 and small.stderr == "Error response from daemon: Minimum memory limit allowed is 6MB\n"
    swap = shoal("update", "-m", "64M", "--memory-swap", "32M", "cc-renamed")
    assert swap.returncode == 1 and "Minimum memoryswap limit should be larger than memory limit" in swap.stderr
    # the limits survive a restart (kept in the container's record)
    shoal("restart", "-t", "1", "cc-renamed", check=True)
    assert cgroup_file(cid, "memory", "memory.limit_in_bytes", "memory.max").read_text().strip() == str(64 << 20)

    for argv in (("restart", "nope"), ("pause", "nope"), ("top", "nope"), ("port", "nope"), ("diff", "nope"),
                 ("update", "-m", "64M", "nope"), ("commit", "nope"), ("export", "nope"), ("cp", "nope:/x", "-"),
                 ("attach", "nope"), ("logs", "nope"), ("exec", "nope", "true"), ("container", "inspect", "nope")):
        proc = shoal(*argv)
        assert proc.returncode == 1, argv
        assert proc.stderr == "Error response from daemon: No such container: nope\n", argv


def test_port_lines(shoal, busybox_image, clean):
    clean.append("cc-port")
    shoal("run", "-d", "--name", "cc-port", "-p", "127.0.0.1:18571:80", "-p", "18572:53/udp",
          busybox_image, "sleep", "600", check=True)
    assert shoal("port", "cc-port", check=True).stdout == "53/udp -> 0.0.0.0:18572\n80/tcp -> 127.0.0.1:18571\n"
    assert shoal("port", "cc-port", "80", check=True).stdout == "127.0.0.1:18571\n"
    assert shoal("container", "port", "cc-port", "53/udp", check=True).stdout == "0.0.0.0:18572\n"
    missing = shoal("port", "cc-port", "81")
    assert missing.returncode == 1 and missing.stderr == "no public port '81' published for cc-port\n"


def test_diff_commit_export(shoal, busybox_image, clean):
    clean += ["cc-fs", "cc-new"]
    shoal("run", "-d", "--name", "cc-fs", *NONE, busybox_image, "sleep", "600", check=True)
    shoal("exec", "cc-fs", "sh", "-c", "mkdir /newdir && echo hi > /newdir/f && rm /bin/wc && "
          "echo 'x:x:1:1::/:/bin/sh' >> /etc/passwd", check=True)
    assert shoal("diff", "cc-fs", check=True).stdout.splitlines() == [
        "C /bin", "D /bin/wc", "C /etc", "C /etc/passwd", "A /newdir", "A /newdir/f"]
    bad = shoal("commit", "-c", "RUN true", "cc-fs")
    assert bad.returncode == 1 and bad.stderr == "Error response from daemon: RUN is not a valid change command\n"
    image_id = shoal("commit", "-m", "a message", "-a", "me", "-c", 'CMD ["cat", "/newdir/f"]', "-c", "ENV A=1",
                     "cc-fs", "localhost/cc-committed:1", check=True).stdout.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    try:
        out = shoal("run", "--rm", *NONE, "localhost/cc-committed:1", check=True).stdout
        assert out == "hi\n"
        out = shoal("run", "--rm", *NONE, "localhost/cc-committed:1", "sh", "-c",
                    "echo $A; test -e /bin/wc || echo gone; grep -c ^x: /etc/passwd", check=True).stdout
        assert out.split() == ["1", "gone", "1"]
        [doc] = json.loads(shoal("image", "inspect", "localhost/cc-committed:1", check=True).stdout)
        assert doc["Comment"] == "a message" and doc["Author"] == "me"
        assert doc["Config"]["Cmd"] == ["cat", "/newdir/f"] and "A=1" in doc["Config"]["Env"]
        # A fresh container of the committed image has no changes of its own; the runtime's
        # files (/etc/hosts, resolv.conf, hostname) are never part of a diff or a layer.
        shoal("run", "-d", "--name", "cc-new", *NONE, "localhost/cc-committed:1", "sleep", "600", check=True)
        assert shoal("diff", "cc-new", check=True).stdout == ""
    finally:
        shoal("rm", "-f", "cc-new")
        shoal("rmi", "localhost/cc-committed:1")
    proc = subprocess.run([sys.executable, "-m", "shoal", "export", "cc-fs"], capture_output=True, timeout=60)
    assert proc.returncode == 0
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        names = set(tar.getnames())
        assert {"newdir/f", "bin/busybox", "etc/passwd"} <= names and "bin/wc" not in names
        assert tar.extractfile("newdir/f").read() == b"hi\n"  # type: ignore[union-attr]
    out = Path(f"/tmp/cc-export-{os.getpid()}.tar")
    try:
        shoal("container", "export", "-o", str(out), "cc-fs", check=True)
        assert out.stat().st_mode & 0o777 == 0o600  # docker's atomicwriter mode
        with tarfile.open(out) as tar:
            assert "newdir/f" in tar.getnames()
    finally:
        out.unlink(missing_ok=True)


def test_cp_both_ways_with_ownership_and_a_hostile_container(shoal, busybox_image, clean, tmp_path: Path):
    clean.append("cc-cp")
    shoal("run", "-d", "--name", "cc-cp", *NONE, busybox_image, "sleep", "600", check=True)
    secret_dir = tmp_path / "hostdir"
    secret_dir.mkdir()
    (secret_dir / "secret").write_text("host secret\n")
    # The container makes its root hostile: links to / and to the host's path, absolute and relative.
    shoal("exec", "cc-cp", "sh", "-c",
          f"ln -s / /evil && ln -s {secret_dir} /abs && ln -s ../../../../../..{secret_dir} /rel && "
          "mkdir -p /data/sub && echo d1 > /data/sub/f && chown -R 1000:50 /data", check=True)
    for src in ("cc-cp:/abs/secret", "cc-cp:/rel/secret", f"cc-cp:/evil{secret_dir}/secret"):
        proc = shoal("cp", src, str(tmp_path / "out"))
        assert proc.returncode == 1, src
        assert proc.stderr == f"Error response from daemon: Could not find the file {src.split(':', 1)[1]} in container cc-cp\n"
    assert not (tmp_path / "out").exists()
    (tmp_path / "pwn").write_text("pwn\n")
    for dest in ("cc-cp:/abs/pwned", "cc-cp:/rel/pwned", f"cc-cp:/evil{secret_dir}/pwned"):
        assert shoal("cp", str(tmp_path / "pwn"), dest).returncode == 1, dest
    evil_tar = io.BytesIO()
    with tarfile.open(fileobj=evil_tar, mode="w") as tar:
        link = tarfile.TarInfo("abs2")
        link.type, link.linkname = tarfile.SYMTYPE, str(secret_dir)
        tar.addfile(link)
        info = tarfile.TarInfo("abs2/pwned")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"pwn\n"))
    proc = subprocess.run([sys.executable, "-m", "shoal", "cp", "-", "cc-cp:/"], input=evil_tar.getvalue(),
                          capture_output=True, timeout=60)
    assert proc.returncode == 1 and b"unsafe path" in proc.stderr
    assert sorted(p.name for p in secret_dir.iterdir()) == ["secret"]  # the host is untouched
    # -L follows the link, but inside the container: no such directory there.
    assert shoal("cp", "-L", "cc-cp:/abs", str(tmp_path / "out")).returncode == 1

    # out: owned by the caller, or (-a) as in the container; `-` is a tar with the container's ids
    shoal("cp", "cc-cp:/data", str(tmp_path / "plain"), check=True)
    st = os.stat(tmp_path / "plain" / "sub" / "f")
    assert (st.st_uid, st.st_gid) == (0, 0) and (tmp_path / "plain/sub/f").read_text() == "d1\n"
    shoal("cp", "-a", "cc-cp:/data", str(tmp_path / "kept"), check=True)
    st = os.stat(tmp_path / "kept" / "sub" / "f")
    assert (st.st_uid, st.st_gid) == (1000, 50)
    proc = subprocess.run([sys.executable, "-m", "shoal", "cp", "cc-cp:/data/sub/f", "-"], capture_output=True, timeout=60)
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        [member] = tar.getmembers()
        assert (member.name, member.uid, member.gid) == ("f", 1000, 50)
    shoal("cp", "cc-cp:/data/.", str(tmp_path / "plain"), check=True)  # the contents, merged in
    # in: owned by the container's root, or (-a) as on the host; a tar from stdin keeps its ids
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "a").write_text("a\n")
    os.chown(src / "d" / "a", 1234, 1234)
    shoal("cp", str(src / "d"), "cc-cp:/data/", check=True)
    shoal("cp", "-a", str(src / "d"), "cc-cp:/data/d2", check=True)
    shoal("cp", str(src / "d" / "a"), "cc-cp:/data/renamed", check=True)
    tar_in = io.BytesIO()
    with tarfile.open(fileobj=tar_in, mode="w") as tar:
        info = tarfile.TarInfo("fromtar/t")
        info.size, info.uid, info.gid = 2, 77, 88
        tar.addfile(info, io.BytesIO(b"t\n"))
    proc = subprocess.run([sys.executable, "-m", "shoal", "cp", "-", "cc-cp:/data"], input=tar_in.getvalue(),
                          capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    listing = shoal("exec", "cc-cp", "sh", "-c", "stat -c '%n %u %g' /data/d/a /data/d2/a /data/renamed "
                    "/data/fromtar/t; cat /data/renamed", check=True).stdout.splitlines()
    assert listing == ["/data/d/a 0 0", "/data/d2/a 1234 1234", "/data/renamed 0 0", "/data/fromtar/t 77 88", "a"]
    notdir = subprocess.run([sys.executable, "-m", "shoal", "cp", "-", "cc-cp:/data/renamed"],
                            input=tar_in.getvalue(), capture_output=True, timeout=60)
    assert notdir.returncode == 1
    assert notdir.stderr == b'Error response from daemon: destination "cc-cp:/data/renamed" must be a directory\n'
    both = shoal("cp", "cc-cp:/a", "cc-cp:/b")
    assert both.returncode == 1 and both.stderr == "Error: copying between containers is not supported\n"
    # docker's summary: on stderr, only when stdout is a terminal and not -q; sizes as Go's tar
    # counts them (a 2-byte file: header + one data block + two end blocks = 2.05kB)
    assert shoal("cp", "cc-cp:/data/renamed", str(tmp_path / "quiet")).stderr == ""
    (tmp_path / "two").write_text("t\n")
    assert cp_on_terminal(str(tmp_path / "two"), "cc-cp:/data/") == "Successfully copied 2.05kB to cc-cp:/data/\n"
    assert cp_on_terminal("cc-cp:/data/sub/f", str(tmp_path / "tty")) == \
        f"Successfully copied 2.05kB to {tmp_path / 'tty'}\n"
    assert cp_on_terminal("cc-cp:/data/sub", str(tmp_path) + "/") == f"Successfully copied 2.56kB to {tmp_path}/\n"
    assert cp_on_terminal("-q", "cc-cp:/data/sub/f", str(tmp_path / "tty2")) == ""
    # a stopped container: its overlay is mounted for the copy and unmounted after
    shoal("stop", "-t", "0", "cc-cp", check=True)
    shoal("cp", str(tmp_path / "pwn"), "cc-cp:/data/", check=True)
    shoal("cp", "cc-cp:/data/pwn", str(tmp_path / "back"), check=True)
    assert (tmp_path / "back").read_text() == "pwn\n"


def cp_on_terminal(*args: str) -> str:
    """`shoal cp` with its stdout on a pseudo-terminal: what it writes on stderr."""
    import pty

    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([sys.executable, "-m", "shoal", "cp", *args], stdout=follower,
                              stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_attach_streams_and_exit_code(shoal, busybox_image, clean):
    clean.append("cc-attach")
    shoal("run", "-d", "--name", "cc-attach", *NONE, busybox_image, "sh", "-c",
          "sleep 1; echo out; echo err >&2; exit 7", check=True)
    proc = shoal("attach", "cc-attach", timeout=30)
    assert (proc.returncode, proc.stdout, proc.stderr) == (7, "out\n", "err\n")
    gone = shoal("attach", "cc-attach")
    assert gone.returncode == 1
    assert gone.stderr == "Error response from daemon: You cannot attach to a stopped container, start it first\n"


def test_logs_since_and_until(shoal, busybox_image, clean):
    """logs --since/--until (the client's timetypes.GetTimestamp, the daemon's Since/Until): an
    RFC 3339 time or a duration before now; a bad one is refused in the client's words."""
    clean.append("cc-logs")
    shoal("run", "--name", "cc-logs", *NONE, busybox_image, "sh", "-c", "echo a; sleep 1.2; echo b; sleep 1.2; echo c",
          check=True, timeout=30)
    stamps = [line.split()[0] for line in shoal("logs", "-t", "cc-logs", check=True).stdout.splitlines()]
    assert len(stamps) == 3
    assert shoal("logs", "--since", stamps[1], "cc-logs", check=True).stdout == "b\nc\n"
    assert shoal("logs", "--until", stamps[1], "cc-logs", check=True).stdout == "a\nb\n"
    assert shoal("logs", "--since", "1h", "--until", stamps[0], "cc-logs", check=True).stdout == "a\n"
    bad = shoal("logs", "--since", "later", "cc-logs")
    assert (bad.returncode, bad.stderr) == (
        1, 'Error: invalid value for "since": failed to parse value as time or duration: "later"\n')


def test_network_connect_disconnect_and_container_mode(shoal, busybox_image, clean):
    net = "cc_net"
    clean += ["cc-n1", "cc-n2", "cc-n3"]
    shoal("network", "create", "--subnet", "10.213.170.0/24", net, check=True)
    try:
        shoal("run", "-d", "--name", "cc-n1", *NONE, busybox_image, "sleep", "600", check=True)
        refused = shoal("network", "connect", net, "cc-n1")
        assert refused.returncode == 1 and refused.stderr == (
            "Error response from daemon: container sharing network namespace with another container or host "
            "cannot be connected to any other network\n")
        shoal("run", "-d", "--name", "cc-n2", busybox_image, "sleep", "600", check=True)
        for ip, why in (("10.213.171.5", "invalid address 10.213.171.5: It does not belong to any of this "
                                         "network's subnets"), ("bogus", "invalid IPv4 address: bogus")):
            bad = shoal("network", "connect", "--ip", ip, net, "cc-n2")
            assert bad.returncode == 1 and bad.stderr == f"Error response from daemon: {why}\n"
        bridge_ip = shoal("network", "connect", "--ip", "172.17.9.9", "bridge", "cc-n1")
        assert bridge_ip.returncode == 1
        shoal("network", "connect", "--alias", "extra", "--ip", "10.213.170.77", net, "cc-n2", check=True)
        addrs = shoal("exec", "cc-n2", "ip", "-4", "-o", "addr", check=True).stdout
        assert "eth1" in addrs and "10.213.170.77/" in addrs
        [info] = json.loads(shoal("network", "inspect", net, check=True).stdout)
        ip = next(iter(info["Containers"].values()))["IPv4Address"].split("/")[0]
        assert ip in shoal("exec", "cc-n2", "cat", "/etc/hosts", check=True).stdout
        # its name on the network follows a rename (the embedded DNS of a container there)
        shoal("run", "-d", "--name", "cc-n3", "--network", net, busybox_image, "sleep", "600", check=True)
        shoal("rename", "cc-n2", "cc-n2b", check=True)
        looked = shoal("exec", "cc-n3", "nslookup", "cc-n2b", "127.0.0.11", check=True).stdout
        assert ip in looked
        shoal("rename", "cc-n2b", "cc-n2", check=True)
        shoal("rm", "-f", "cc-n3", check=True)
        again = shoal("network", "connect", net, "cc-n2")
        assert again.returncode == 1
        assert again.stderr == f"Error response from daemon: endpoint with name cc-n2 already exists in network {net}\n"
        # another container shares cc-n2's namespace: same addresses
        shared = shoal("run", "--rm", "--network", "container:cc-n2", busybox_image, "ip", "-4", "-o", "addr",
                       check=True).stdout
        assert ip in shared
        # and its hostname (moby's initializeNetworking), in the process and in inspect
        clean.append("cc-n4")
        shoal("run", "-d", "--name", "cc-n4", "--network", "container:cc-n2", busybox_image, "sleep", "600", check=True)
        donor_name = shoal("exec", "cc-n2", "hostname", check=True).stdout
        assert shoal("exec", "cc-n4", "hostname", check=True).stdout == donor_name
        assert inspect(shoal, "cc-n4")["Config"]["Hostname"] == donor_name.strip()
        shoal("rm", "-f", "cc-n4", check=True)
        conflict = shoal("run", "--rm", "--network", "container:cc-n2", "-p", "80:80", busybox_image, "true")
        assert conflict.returncode == 125
        assert "conflicting options: port publishing and the container type network mode" in conflict.stderr
        shoal("create", "--name", "cc-n3", *NONE, busybox_image, "true", check=True)
        dead = shoal("run", "--rm", "--network", "container:cc-n3", busybox_image, "true")
        assert dead.returncode != 0
        assert "cannot join network namespace of a non running container: container cc-n3 is created" in dead.stderr
        shoal("network", "disconnect", net, "cc-n2", check=True)
        assert "10.213.170." not in shoal("exec", "cc-n2", "ip", "-4", "-o", "addr", check=True).stdout
        assert ip not in shoal("exec", "cc-n2", "cat", "/etc/hosts", check=True).stdout
        cid = inspect(shoal, "cc-n2")["Id"]
        twice = shoal("network", "disconnect", net, "cc-n2")
        assert twice.returncode == 1
        assert twice.stderr == f"Error response from daemon: container {cid} is not connected to network {net}\n"
        [info] = json.loads(shoal("network", "inspect", net, check=True).stdout)
        assert info["Containers"] == {}
        # a stopped container is connected at its next start
        shoal("stop", "-t", "0", "cc-n2", check=True)
        shoal("network", "connect", net, "cc-n2", check=True)
        shoal("start", "cc-n2", check=True)
        assert "10.213.170." in shoal("exec", "cc-n2", "ip", "-4", "-o", "addr", check=True).stdout
        # off its first network: gone now, and the other one is eth0 from its next start
        shoal("network", "disconnect", "bridge", "cc-n2", check=True)
        shoal("restart", "-t", "0", "cc-n2", check=True)
        eth = shoal("exec", "cc-n2", "ip", "-4", "-o", "addr", check=True).stdout
        assert "eth0" in eth and "10.213.170." in eth and "eth1" not in eth
        assert inspect(shoal, "cc-n2")["HostConfig"]["NetworkMode"] == net
    finally:
        shoal("rm", "-f", "cc-n1", "cc-n2", "cc-n3")
        shoal("network", "rm", net)
