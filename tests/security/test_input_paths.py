"""Names and fields that become paths (a volume's name, a cluster's, a container reference, a
volume mount's subpath, a secret's owner): each is checked before anything is made, and what it
names stays inside its root. Planted files outside the state root stand for what a local user
could leave in /tmp for root to be pointed at."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT_ONLY, poll, run_shoal, teardown_root

pytestmark = [pytest.mark.root, ROOT_ONLY]


def _one_line_error(proc, *words: str) -> None:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    for word in words:
        assert word in proc.stderr, proc.stderr
    if words:  # the names above print as given, newline and all (as moby's do)
        assert len([line for line in proc.stderr.splitlines() if line.strip()]) == 1, proc.stderr


@pytest.mark.parametrize("args", [
    ("volume", "create", "vol\n"),
    ("create", "--name", "ctr\n", "localhost/busybox:test", "true"),
    ("tag", "localhost/busybox:test", "localhost/tagged:t\n"),
])
def test_a_name_with_a_trailing_newline_is_refused(shoal, busybox_image: str, args: tuple[str, ...]) -> None:
    """Python's `$` matches before a final newline, Go's (moby's patterns) does not: `vol\\n`
    became a volume directory with a newline in its name, and a container named `ctr\\n` that no
    `rm ctr\\n` could find again (references are stripped)."""
    before = {e.name for e in os.scandir(Path(os.environ["SHOAL_ROOT"]) / "volumes")} \
        if (Path(os.environ["SHOAL_ROOT"]) / "volumes").is_dir() else set()
    proc = shoal(*args)
    _one_line_error(proc)
    after = {e.name for e in os.scandir(Path(os.environ["SHOAL_ROOT"]) / "volumes")} \
        if (Path(os.environ["SHOAL_ROOT"]) / "volumes").is_dir() else set()
    assert after == before
    assert "ctr\n" not in shoal("ps", "-a", "--format", "{{json .Names}}").stdout.replace('\\n', "\n")
    assert "tagged" not in shoal("images").stdout


def test_a_cluster_name_cannot_pick_a_record_outside_the_state_root(tmp_path: Path) -> None:
    """`cluster rm|start NAME` read clusters/NAME/cluster.json unchecked: `../../plant` read a
    record planted outside the state root and acted on it (its directory removed; its nodes'
    processes, cgroups and bridge are named by that record too)."""
    env = {"SHOAL_ROOT": str(tmp_path / "root"), "SHOAL_RUN": str(tmp_path / "run")}
    (tmp_path / "root" / "clusters").mkdir(parents=True)
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("must stay")
    plant = tmp_path / "plant"
    plant.mkdir()
    (plant / "cluster.json").write_text(json.dumps({
        "name": "../../victim", "subnet": "198.18.40.0/24", "bridge": "h4nosuchbridge",
        "bridge_address": "198.18.40.1", "created": 0.0, "nodes": [], "supervisor_pid": 0}))
    for verb in ("rm", "start"):
        proc = run_shoal("cluster", verb, "../../plant", env=env)
        _one_line_error(proc, "invalid cluster name")
        assert (victim / "keep").read_text() == "must stay"


def test_a_container_reference_of_64_characters_is_not_a_path(shoal, busybox_image: str, tmp_path: Path) -> None:
    """A reference 64 characters long was taken for an ID and joined to containers/ as it was:
    `../../<somewhere>/...` loaded a container.json planted there, and `rm -f` removed the
    directory it named."""
    root = Path(os.environ["SHOAL_ROOT"])
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep").write_text("must stay")
    plant = tmp_path / "plant"
    plant.mkdir()
    made = shoal("create", busybox_image, "true", check=True).stdout.strip()
    try:
        record = json.loads((root / "containers" / made / "container.json").read_text())
    finally:
        shoal("rm", "-f", made, check=True)
    record["dir"] = str(victim)
    record["name"] = "planted"
    (plant / "container.json").write_text(json.dumps(record))
    rel = os.path.relpath(plant, root / "containers")
    ref = rel.replace("/", "/" + "./" * ((64 - len(rel)) // 2), 1)
    ref = ref + "/" * (64 - len(ref))
    assert len(ref) == 64 and (root / "containers" / ref / "container.json").exists()
    proc = shoal("rm", "-f", ref)
    _one_line_error(proc, "No such container")
    assert (victim / "keep").read_text() == "must stay"


@pytest.mark.parametrize("owner", ['uid: "abc"', 'gid: "99999999999"', 'uid: "-5"'])
def test_a_secrets_bad_owner_rejects_the_task_naming_the_key(shoal, busybox_image: str, tmp_path: Path,
                                                             owner: str) -> None:
    """A secret's uid and gid are strings in a stack file (moby's strconv.Atoi reads them when
    the task starts). One Python's int() or chown() refused raised out of the task's prepare
    step: the task stayed Preparing for ever, prepared again in a tight loop (a traceback in
    shoald.log each time). It is Rejected, with moby's words and the key, and its tmpfs goes."""
    (tmp_path / "s.txt").write_text("value")
    stack = tmp_path / "stack.yml"
    stack.write_text(f"""\
services:
  app:
    image: {busybox_image}
    command: ["sleep", "1000"]
    secrets:
      - source: s
        target: x
        {owner}
secrets:
  s:
    file: ./s.txt
""")
    shoal("stack", "deploy", "-c", str(stack), "h4owner", check=True)
    try:
        def rejected() -> str:
            out = shoal("service", "ps", "h4owner_app", "--no-trunc", "--format",
                        "{{.CurrentState}}|{{.Error}}").stdout
            return next((line for line in out.splitlines() if line.startswith("Rejected")), "")

        line = poll(rejected, 60, "the task to be rejected")
        key = owner.split(":")[0]
        assert f"secret h4owner_s {key}: " in line, line
        assert ("invalid syntax" in line) or ("invalid argument" in line) or ("out of range" in line), line
        assert not [m for m in Path("/proc/mounts").read_text().splitlines()
                    if "shoal-taskfiles" in m and os.environ["SHOAL_RUN"] in m]
    finally:
        shoal("stack", "rm", "h4owner")
        poll(lambda: not shoal("ps", "-aq", "--filter", "label=com.docker.stack.namespace=h4owner").stdout.strip(),
              60, "the stack's containers to go")


@contextlib.contextmanager
def _subpath_service(shoal, name: str, volume: str, target: str, subpath: str, image: str) -> Iterator[None]:
    """A service (no restarts) that lists `target`, the volume's `subpath` mounted there, then
    sleeps; removed at the end, and waited for until its containers are gone."""
    shoal("service", "create", "-d", "--name", name, "--restart-condition", "none",
          "--mount", f"type=volume,src={volume},dst={target},volume-subpath={subpath}",
          image, "sh", "-c", f"ls {target}; sleep 1000", check=True)
    try:
        yield
    finally:
        shoal("service", "rm", name)
        poll(lambda: not shoal("ps", "-aq", "--filter", f"label=com.docker.swarm.service.name={name}").stdout.strip(),
             60, "the service's containers to go")


def test_a_volume_subpath_is_bound_alone_and_stays_in_the_volume(shoal, busybox_image: str) -> None:
    """`--mount volume-subpath=` (compose's `volume.subpath`) was ignored: the whole volume was
    mounted, the rest of it shown to a service meant to see one directory. It is resolved
    beneath the volume's data as moby's safepath.Join does: a link inside the volume is followed
    there, a link to / refused at start with moby's words, `..` or an absolute path refused
    before anything is made."""
    data = Path(shoal("volume", "create", "h4subvol", check=True) and
                shoal("volume", "inspect", "-f", "{{.Mountpoint}}", "h4subvol", check=True).stdout.strip())
    (data / "sub").mkdir()
    (data / "sub" / "inside").write_text("in the subpath")
    (data / "secret-elsewhere").write_text("not for this service")
    (data / "hack").mkdir()
    (data / "hack" / "good").symlink_to("../sub")
    (data / "hack" / "root").symlink_to("/")

    def service(subpath: str) -> list[str]:
        """The service's first task: its state line and its output."""
        def done() -> list[str]:
            state = shoal("service", "ps", "h4sub", "--no-trunc", "--format",
                          "{{.CurrentState}}|{{.Error}}").stdout.strip()
            logs = shoal("service", "logs", "--raw", "h4sub").stdout.split()
            return [state, *logs] if state.startswith("Failed") or logs else []

        with _subpath_service(shoal, "h4sub", "h4subvol", "/x", subpath, busybox_image):
            return poll(done, 60, f"the service with subpath {subpath}")

    for subpath in ("sub", "hack/good"):
        state, *seen = service(subpath)
        assert seen == ["inside"], (subpath, state, seen)
    state, *seen = service("hack/root")
    assert state.startswith("Failed") and "path concatenation escapes the base directory" in state, (state, seen)
    assert not [m for m in Path("/proc/mounts").read_text().splitlines() if "/subpaths/" in m]
    for subpath in ("../../..", "/etc"):
        proc = shoal("service", "create", "-d", "--name", "h4sub", "--mount",
                     f"type=volume,src=h4subvol,dst=/x,volume-subpath={subpath}", busybox_image)
        _one_line_error(proc)  # a flag's error, followed by the usage lines as docker's
        assert "subpath must be a relative path within the volume" in proc.stderr.splitlines()[0], proc.stderr
    assert "h4sub" not in shoal("service", "ls").stdout
    shoal("volume", "rm", "h4subvol", check=True)


def test_a_stack_volume_subpath_out_of_the_volume_is_refused_naming_the_key(shoal, tmp_path: Path) -> None:
    stack = tmp_path / "stack.yml"
    stack.write_text("""\
services:
  app:
    image: localhost/busybox:test
    volumes:
      - type: volume
        source: data
        target: /x
        volume:
          subpath: sub/../../..
volumes:
  data: {}
""")
    proc = shoal("stack", "deploy", "-c", str(stack), "h4subst")
    _one_line_error(proc, "services.app.volumes[0].volume.subpath: subpath must be a relative path within the volume")
    assert "h4subst" not in shoal("stack", "ls").stdout


def test_a_relative_bind_device_is_read_from_root_not_the_callers_directory(shoal, busybox_image: str,
                                                                            tmp_path: Path) -> None:
    """A local volume's `device` for a bind (`-o type=none -o o=bind -o device=data`, a stack's
    driver_opts) went to mount(2) as written, looked up from the working directory of whichever
    process mounted it first (the CLI's, or that of the shell that started shoald): the same
    volume named another directory from one command to the next. It is read from /, as
    dockerd (whose working directory is /) reads it."""
    name = f"h4reldev{os.getpid()}"
    (tmp_path / name).mkdir()
    (tmp_path / name / "callers-file").write_text("the caller's directory")
    shoal("volume", "create", "-o", "type=none", "-o", "o=bind", "-o", f"device={name}", name, check=True)
    try:
        proc = subprocess.run([sys.executable, "-m", "shoal", "run", "--rm", "-v", f"{name}:/x", busybox_image,
                               "ls", "/x"], cwd=tmp_path, capture_output=True, text=True, timeout=120)
        assert "callers-file" not in proc.stdout, proc.stdout
        assert proc.returncode != 0 and f"mount /{name}:" in proc.stderr, proc.stderr
    finally:
        shoal("volume", "rm", name, check=True)


@pytest.mark.parametrize("suffix", ["#x", "?x", " HTTP/1.1\r\nX-Injected: 1"])
def test_a_name_in_a_route_is_escaped_not_taken_for_another(shoal, suffix: str) -> None:
    """The CLI wrote names into the request line as typed: `secret rm 'h4keep#x'` (or `?x`)
    removed the secret h4keep, and a CR LF began a header of its own. Escaped as docker's Go
    client escapes them, the name is looked for whole and nothing else is touched."""
    shoal("secret", "create", "h4keep", "-", input="value", check=True)
    try:
        proc = shoal("secret", "rm", "h4keep" + suffix)
        assert proc.returncode != 0, proc.stdout
        assert "Traceback" not in proc.stderr, proc.stderr
        assert shoal("secret", "inspect", "--format", "{{.Spec.Name}}", "h4keep").stdout.strip() == "h4keep"
    finally:
        shoal("secret", "rm", "h4keep")


def test_a_state_root_reached_through_a_link_never_empties_a_bound_host_directory(busybox_tar: Path,
                                                                                 tmp_path: Path) -> None:
    """With the state root reached through a symlink (/var -> /data/var), mount points were
    looked for in /proc/self/mountinfo by the unresolved path and never found: `run --rm` failed
    with a traceback (its network namespace `busy`), and `volume rm` of a volume bound to a host
    directory removed that directory's files through the mount it had not seen. The roots are
    resolved, as dockerd resolves its own."""
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    root, run = tmp_path / "link" / "root", tmp_path / "link" / "run"
    env = {"SHOAL_ROOT": str(root), "SHOAL_RUN": str(run)}
    host = tmp_path / "host-directory"
    host.mkdir()
    (host / "precious").write_text("must stay")
    try:
        run_shoal("import", str(busybox_tar), "localhost/busybox:test", env=env, check=True)
        run_shoal("volume", "create", "-o", "type=none", "-o", "o=bind", "-o", f"device={host}", "h4bound",
                  env=env, check=True)
        proc = run_shoal("run", "--rm", "-v", "h4bound:/x", "localhost/busybox:test", "ls", "/x", env=env)
        assert proc.returncode == 0 and proc.stdout.split() == ["precious"], proc.stderr
        proc = run_shoal("volume", "rm", "h4bound", env=env)
        assert proc.returncode == 0, proc.stderr
        assert (host / "precious").read_text() == "must stay"
        assert not [m for m in Path("/proc/mounts").read_text().splitlines() if str(tmp_path) in m]
    finally:
        teardown_root(root, run)
        for target in reversed([m.split()[1] for m in Path("/proc/mounts").read_text().splitlines()
                                if str(tmp_path) in m]):
            subprocess.run(["umount", "-l", target], check=False)


@pytest.mark.parametrize("mode", [-5, 2**32])
def test_a_secret_mode_out_of_a_uint32_rejects_the_task(shoal, busybox_image: str, mode: int) -> None:
    """The API took any integer as a secret's mode (moby's is a uint32, its API refuses the
    rest): -5 was chmod'ed as it wrapped, 2**32 an OverflowError out of the prepare step (the
    task Preparing for ever, prepared again in a tight loop). The task is Rejected, naming it."""
    import socket

    shoal("secret", "create", "h4mode", "-", input="value", check=True)
    shoal("service", "ls", check=True)  # shoald up
    spec = {"name": "h4mode", "image": busybox_image, "entrypoint": ["sleep", "1000"],
            "secrets": [{"source": "h4mode", "target": "/run/secrets/h4mode", "uid": "0", "gid": "0", "mode": mode}]}
    body = json.dumps({"spec": spec}).encode()
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(str(Path(os.environ["SHOAL_RUN"]) / "shoal.sock"))
        sock.sendall(b"POST /v1/services HTTP/1.1\r\nHost: shoald\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    try:
        assert b" 201 " in answer.split(b"\r\n")[0], answer
        line = poll(lambda: next((line for line in shoal("service", "ps", "h4mode", "--no-trunc", "--format",
                                                                 "{{.CurrentState}}|{{.Error}}").stdout.splitlines()
                                   if line.startswith("Rejected")), ""), 60, "the task to be rejected")
        assert f"secret h4mode mode: {mode} is not a file mode" in line, line
    finally:
        shoal("service", "rm", "h4mode")
        poll(lambda: not shoal("ps", "-aq", "--filter", "label=com.docker.swarm.service.name=h4mode").stdout.strip(),
              60, "the service's containers to go")
        shoal("secret", "rm", "h4mode")


def test_a_mount_left_inside_a_volume_is_detached_not_emptied(shoal, tmp_path: Path) -> None:
    """A mount below a tree shoal removes (a host directory a privileged container's rshared
    mount propagated into a volume; a volume subpath's bind a teardown missed) was emptied:
    shutil.rmtree crosses mount points and rm -rf --one-file-system does not see a bind of the
    same file system. remove_tree detaches what is mounted below first."""
    host = tmp_path / "host-directory"
    host.mkdir()
    (host / "precious").write_text("must stay")
    shoal("volume", "create", "h4mounted", check=True)
    data = Path(shoal("volume", "inspect", "-f", "{{.Mountpoint}}", "h4mounted", check=True).stdout.strip())
    (data / "sub").mkdir()
    subprocess.run(["mount", "--bind", str(host), str(data / "sub")], check=True)
    try:
        proc = shoal("volume", "rm", "h4mounted")
        assert proc.returncode == 0, proc.stderr
        assert (host / "precious").read_text() == "must stay"
        assert not data.exists()
    finally:
        if str(data / "sub") in Path("/proc/self/mountinfo").read_text():
            subprocess.run(["umount", "-l", str(data / "sub")], check=False)


def test_a_volume_subpath_gets_the_images_files_when_empty_and_nocopy_none(shoal, busybox_image: str) -> None:
    """moby's populateVolume: the image's files at the mount point are copied into an empty
    subpath (through the mount resolved beneath the volume), never into one that holds files;
    `nocopy` (`-v NAME:PATH:nocopy`, `volume-nocopy`) copies nothing. Both were ignored: an empty
    subpath stayed empty, and a nocopy volume got the image's files."""
    data = Path(shoal("volume", "create", "h4cpvol", check=True) and
                shoal("volume", "inspect", "-f", "{{.Mountpoint}}", "h4cpvol", check=True).stdout.strip())
    (data / "empty").mkdir()
    (data / "kept").mkdir()
    (data / "kept" / "mine").write_text("mine")

    def listing(subpath: str) -> list[str]:
        with _subpath_service(shoal, "h4cp", "h4cpvol", "/etc", subpath, busybox_image):
            return poll(lambda: shoal("service", "logs", "--raw", "h4cp").stdout.split(), 60, "the task's listing")

    try:
        assert "passwd" in listing("empty") and (data / "empty" / "passwd").is_file()
        assert listing("kept") == ["mine"]
        assert sorted(p.name for p in data.iterdir()) == ["empty", "kept"]  # nothing beside the subpaths
        shoal("volume", "create", "h4ncvol", check=True)
        seen = shoal("run", "--rm", "-v", "h4ncvol:/etc:nocopy", busybox_image, "ls", "-A", "/etc", check=True)
        assert seen.stdout == ""
    finally:
        shoal("volume", "rm", "h4cpvol", "h4ncvol")
