"""`--filter`, `--format` and completion against real containers (crun under conmon), networks
and images: the keys and words of docker ps / network ls / images, and bash completing a
container's name by asking shoal."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT_ONLY
from runtime_helpers import assert_clean, container_ids, snapshot

pytestmark = [pytest.mark.root, ROOT_ONLY]

NONE = ("--network", "none")


@pytest.fixture
def made(shoal, shoal_root: Path, busybox_image: str):
    """Three containers: fl-web (running, labelled, a volume), fl-job (exited 3), fl-new (created)."""
    before = snapshot(shoal_root)
    try:
        shoal("run", "-d", "--name", "fl-web", "-l", "tier=front", "-l", "app=shop", "-v", "fl-data:/data", *NONE,
              busybox_image, "sleep", "600", check=True)
        job = shoal("run", "--name", "fl-job", "-l", "tier=back", *NONE, busybox_image, "sh", "-c", "exit 3")
        assert job.returncode == 3, job.stderr
        shoal("create", "--name", "fl-new", *NONE, busybox_image, "true", check=True)
        yield busybox_image
    finally:
        ids = container_ids(shoal_root)
        shoal("rm", "-f", "fl-web", "fl-job", "fl-new")
        shoal("volume", "rm", "fl-data")
        assert_clean(shoal_root, before, ids)


def names(shoal, *args: str) -> list[str]:
    out = shoal("ps", *args, "--format", "{{.Names}}", check=True).stdout.split()
    return [n for n in out if n.startswith("fl-")]


def test_ps_filters_as_docker(shoal, made):
    assert names(shoal) == ["fl-web"]
    assert names(shoal, "-a", "--filter", "name=^fl-") == ["fl-new", "fl-job", "fl-web"]
    assert names(shoal, "-f", "status=exited") == ["fl-job"]  # status shows stopped ones without -a
    assert names(shoal, "-f", "status=exited", "-f", "status=created") == ["fl-new", "fl-job"]
    assert names(shoal, "-a", "-f", "exited=3") == ["fl-job"]
    assert names(shoal, "-a", "-f", "label=tier=front") == ["fl-web"]
    assert names(shoal, "-a", "-f", "label=tier", "-f", "label=app") == ["fl-web"]  # labels: all of them
    assert names(shoal, "-a", "-f", "name=fl-job", "-f", "name=fl-new") == ["fl-new", "fl-job"]
    assert names(shoal, "-a", "-f", "ancestor=" + made) == ["fl-new", "fl-job", "fl-web"]
    assert names(shoal, "-a", "-f", "ancestor=localhost/nosuch:1") == []
    assert names(shoal, "-a", "-f", "volume=fl-data") == names(shoal, "-a", "-f", "volume=/data") == ["fl-web"]
    assert names(shoal, "-a", "-f", "before=fl-job") == ["fl-web"]
    assert names(shoal, "-a", "-f", "since=fl-job") == ["fl-new"]
    assert names(shoal, "-a", "-f", "is-task=true") == []
    assert names(shoal, "-a", "-f", "health=none", "-f", "name=fl-web") == ["fl-web"]
    web_id = shoal("inspect", "--format", "{{.Id}}", "fl-web", check=True).stdout.strip()
    assert names(shoal, "-a", "-f", "id=" + web_id[:10]) == ["fl-web"]
    assert names(shoal, "-n", "2", "-f", "name=^fl-") == ["fl-new", "fl-job"]
    assert names(shoal, "-l", "-f", "name=^fl-") == ["fl-new"]
    # -s: the SIZE column, the writable layer and the image under it
    sized = shoal("ps", "-s", "-f", "name=fl-web", check=True).stdout.splitlines()
    assert sized[0].split()[-1] == "SIZE" and re.search(r"B \(virtual [\d.]+[kM]?B\)$", sized[1]), sized
    assert re.fullmatch(r"[\d.]+k?B \(virtual [\d.]+[kM]?B\)\n",
                        shoal("ps", "-f", "name=fl-web", "--format", "{{.Size}}", check=True).stdout)
    # json: one object per line, Docker's field names
    lines = shoal("ps", "-f", "name=fl-web", "--format", "json", check=True).stdout.splitlines()
    row = json.loads(lines[0])
    assert len(lines) == 1 and row["Names"] == "fl-web" and row["State"] == "running"
    assert "tier=front" in row["Labels"] and row["Image"] == made and row["LocalVolumes"] == "1"
    assert list(row) == sorted(row)  # docker marshals a row as a map: keys sorted
    # Go templates with docker's functions
    out = shoal("ps", "-f", "name=fl-web", "--format", '{{.Label "tier"}} {{.Names | upper}} {{json .Labels}}',
                check=True).stdout
    assert out == 'front FL-WEB "app=shop,tier=front"\n'
    table = shoal("ps", "-a", "-f", "name=^fl-", "--format", "table {{.Names}}\t{{.State}}", check=True).stdout
    assert table.splitlines() == ["NAMES     STATE", "fl-new    created", "fl-job    exited", "fl-web    running"]


@pytest.mark.parametrize("flag,code,message", [
    ("colour=red", 1, "Error response from daemon: invalid filter 'colour'"),
    ("status=sleeping", 1, "Error response from daemon: invalid filter 'status=sleeping'"),
    ("health=fine", 1, "Error response from daemon: Unrecognised filter value for health: fine"),
    ("name", 125, 'invalid argument "name" for "-f, --filter" flag: bad format of filter (expected name=value)\n\n'
                  "Usage:  shoal ps [OPTIONS]\n\nRun 'shoal ps --help' for more information"),
])
def test_ps_filter_errors(shoal, flag, code, message):
    result = shoal("ps", "-f", flag)
    assert (result.returncode, result.stderr.strip(), result.stdout) == (code, message, "")


def test_network_ls_filters(shoal, shoal_root: Path):
    before = snapshot(shoal_root)
    try:
        shoal("network", "create", "--label", "fl=1", "fl-net", check=True)
        listed = lambda *f: shoal("network", "ls", *f, "--format", "{{.Name}}", check=True).stdout.split()  # noqa: E731
        assert listed("-f", "label=fl=1") == ["fl-net"]
        assert "fl-net" in listed("-f", "dangling=true") and "bridge" not in listed("-f", "dangling=true")
        assert "fl-net" not in listed("-f", "dangling=false") and "bridge" in listed("-f", "dangling=false")
        assert listed("-f", "type=custom", "-f", "name=^fl-") == ["fl-net"]
        assert listed("-f", "type=builtin", "-f", "name=^fl-") == []
        bad = shoal("network", "ls", "-f", "dangling=maybe")
        assert (bad.returncode, bad.stderr) == (1, 'Error response from daemon: invalid value for filter \'dangling\', '
                                                   'must be "true" (or "1"), or "false" (or "0")\n')
        bad = shoal("network", "ls", "-f", "colour=red")
        assert (bad.returncode, bad.stderr) == (1, "Error response from daemon: invalid filter 'colour'\n")
    finally:
        shoal("network", "rm", "fl-net")
        assert_clean(shoal_root, before, set())


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completes_container_names_by_asking_shoal(shoal, made, tmp_path: Path):
    script = tmp_path / "shoal.bash"
    script.write_text(shoal("completion", "bash", check=True).stdout)
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "shoal").write_text(f"#!/bin/sh\nexec {sys.executable} -m shoal \"$@\"\n")
    (bindir / "shoal").chmod(0o755)
    program = (f"source {script}\nCOMP_WORDS=(shoal stop fl-)\nCOMP_CWORD=2\n_shoal\n"
               "printf '%s\\n' \"${COMPREPLY[@]}\"\n")
    env = dict(os.environ, PATH=f"{bindir}:{os.environ['PATH']}")
    out = subprocess.run(["bash", "--norc", "--noprofile", "-c", program], capture_output=True, text=True,
                         env=env, timeout=60, check=True).stdout.split()
    assert sorted(out) == ["fl-job", "fl-new", "fl-web"]


def test_info_and_version_format(shoal):
    """`info --format` and `version --format` as scripts use them (shoald started on first use, stopped by the session)."""
    assert shoal("info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}",
                 check=True).stdout == "active true\n"
    info = json.loads(shoal("system", "info", "--format", "json", check=True).stdout)
    assert info["Swarm"]["LocalNodeState"] == "active" and info["OSType"] == "linux" and info["ServerVersion"]
    version = shoal("version", "--format", "{{.Client.Version}} {{.Server.Version}} {{.Client.Os}}", check=True).stdout
    client, server, os_name = version.split()
    assert client == server and os_name == "linux"
    bad = shoal("info", "--format", "{{.Nope}}")
    assert bad.returncode == 1 and "can't evaluate field Nope" in bad.stderr


def test_info_reads_as_dockers(shoal):
    """prettyPrintInfo: the Client section, then the Server's containers by state, images,
    storage, cgroups, plugins, Swarm, runtime, kernel, OS, CPUs, memory, name, root dir; the
    same counts through --format (moby's Info fields)."""
    import os

    from shoal import __version__

    text = shoal("info", check=True).stdout
    containers = len(shoal("ps", "-aq", check=True).stdout.split())
    running = len(shoal("ps", "-q", check=True).stdout.split())
    assert text.startswith(f"Client:\n Version:    {__version__}\n Context:    default\n Debug Mode: false\n\n"
                           f"Server:\n Containers: {containers}\n  Running: {running}\n  Paused: 0\n"
                           f"  Stopped: {containers - running}\n Images: "), text
    for line in (" Cgroup Driver: cgroupfs\n", " Plugins:\n  Volume: local\n", " Swarm: active\n",
                 f" CPUs: {os.cpu_count()}\n", " OSType: linux\n", " Live Restore Enabled: false\n"):
        assert line in text, line
    counted = shoal("info", "--format", "{{.Containers}} {{.ContainersStopped}} {{.NCPU}}", check=True).stdout
    assert counted == f"{containers} {containers - running} {os.cpu_count()}\n"


def test_images_filters_label_not_and_until(shoal, made):
    shoal("commit", "--change", "LABEL fl=1", "fl-new", "fl-img:1", check=True)
    try:
        repos = lambda *f: shoal("images", *f, "--format", "{{.Repository}}:{{.Tag}}", check=True).stdout.split()  # noqa: E731
        assert repos("-f", "label=fl=1") == ["fl-img:1"]
        assert repos("-f", "reference=fl-img", "-f", "label!=fl") == []
        assert "fl-img:1" not in repos("-f", "label!=fl=1") and made in repos("-f", "label!=fl=1")
        assert repos("-f", "reference=fl-img", "-f", "until=1h") == []  # made just now: not before an hour ago
        assert repos("-f", "reference=fl-img", "-f", "until=2100-01-01T00:00:00Z") == ["fl-img:1"]
        row = json.loads(shoal("images", "-f", "reference=fl-img", "--format", "json", check=True).stdout)
        assert row["Repository"] == "fl-img" and list(row) == sorted(row)
        bad = shoal("images", "-f", "dangling=maybe")
        assert (bad.returncode, bad.stderr) == (1, "Error response from daemon: invalid filter 'dangling=[maybe]'\n")
        bad = shoal("images", "-f", "dangling=1")  # images.go takes only true or false
        assert (bad.returncode, bad.stderr) == (1, "Error response from daemon: invalid filter 'dangling=[1]'\n")
        # image prune: moby's ImagesPrune checks, before anything is removed
        for value, message in (("color=blue", "invalid filter 'color'"), ("dangling=maybe", "invalid filter 'dangling=[maybe]'")):
            bad = shoal("image", "prune", "-f", "--filter", value)
            assert (bad.returncode, bad.stdout, bad.stderr) == (1, "", f"Error response from daemon: {message}\n")
    finally:
        shoal("rmi", "fl-img:1")


def test_service_ls_and_ps_filters(shoal, busybox_image: str):
    """Against a real shoald (one node): service ls by label, mode, name and id prefix; service
    ps by desired state and by the node's name or ID; both keys' refusals in moby's words."""
    made = shoal("service", "create", "-d", "--name", "fl_svc", "--label", "tier=x", "--replicas", "1",
                 "--stop-grace-period", "1s", busybox_image, "sleep", "600", check=True, timeout=120)
    service_id = made.stdout.split()[0]
    try:
        listed = lambda *f: shoal("service", "ls", *f, "--format", "{{.Name}}", check=True).stdout.split()  # noqa: E731
        assert listed("-f", "label=tier=x") == ["fl_svc"] == listed("-f", "id=" + service_id[:6])
        assert listed("-f", "name=fl_", "-f", "mode=replicated") == ["fl_svc"]
        assert listed("-f", "name=fl_", "-f", "mode=global") == [] and listed("-f", "name=svc") == []
        bad = shoal("service", "ls", "-f", "colour=red")
        assert (bad.returncode, bad.stderr) == (1, "Error response from daemon: invalid filter 'colour'\n")
        node = json.loads(shoal("node", "inspect", "self", check=True).stdout)[0]
        tasks = lambda *f: shoal("service", "ps", "-q", *f, "fl_svc", check=True).stdout.split()  # noqa: E731
        running = tasks("-f", "desired-state=running")
        assert len(running) == 1 and tasks("-f", "desired-state=shutdown") == []
        assert tasks("-f", "node=" + node["Description"]["Hostname"]) == running == tasks("-f", "node=" + node["ID"])
        assert tasks("-f", "node=elsewhere") == []
        bad = shoal("service", "ps", "-f", "colour=red", "fl_svc")
        assert (bad.returncode, bad.stderr) == (1, "Error response from daemon: invalid filter 'colour'\n")
    finally:
        shoal("service", "rm", "fl_svc")
