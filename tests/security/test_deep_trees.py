"""A container (or anything writing into a volume) may nest directories thousands deep: mkdir
and cd in a loop takes no privilege. shutil.rmtree recurses, one frame and one descriptor a
level, so removing such a container or volume died with a RecursionError and left it there
for good: `rm` failed every time and the container could never be removed."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import ROOT_ONLY

pytestmark = [pytest.mark.root, ROOT_ONLY]

NEST = "i=0; while [ $i -lt 1500 ]; do mkdir a; cd a; i=$((i+1)); done; echo deep > f"


def test_a_container_and_a_volume_nesting_1500_levels_are_removed(shoal, busybox_image: str) -> None:
    name = f"shoal-deep-{uuid.uuid4().hex[:8]}"
    volume = f"shoal-deep-vol-{uuid.uuid4().hex[:8]}"
    try:
        proc = shoal("run", "--name", name, "--network", "none", "-v", f"{volume}:/vol", busybox_image,
                     "sh", "-c", f"cd /tmp && {NEST} && cd /vol && {NEST}")
        assert proc.returncode == 0, proc.stderr
        removed = shoal("rm", name)
        assert removed.returncode == 0 and "Traceback" not in removed.stderr, removed.stderr[-2000:]
        assert shoal("inspect", name).returncode == 1
        dropped = shoal("volume", "rm", volume)
        assert dropped.returncode == 0 and "Traceback" not in dropped.stderr, dropped.stderr[-2000:]
        assert volume not in shoal("volume", "ls", "-q", check=True).stdout.split()
    finally:
        shoal("rm", "-f", name)
        shoal("volume", "rm", "-f", volume)


def test_committing_a_container_nested_past_a_layers_depth_is_one_line(shoal, busybox_image: str,
                                                                         shoal_root) -> None:
    """commit walks the container's changes to make the layer, recursively: a RecursionError
    traceback (and the commit's scratch copy, removed with shutil.rmtree, stayed in the
    container's directory). No layer may hold more than 512 levels (the unpacker's limit):
    one line naming the path, nothing left."""
    name = f"shoal-deep-{uuid.uuid4().hex[:8]}"
    try:
        shoal("run", "--name", name, "--network", "none", busybox_image, "sh", "-c", f"cd /tmp && {NEST}", check=True)
        proc = shoal("commit", name, f"localhost/shoal-deep:{uuid.uuid4().hex[:8]}")
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        line = proc.stderr.strip()
        assert "commit: the container's changes: tmp/a/a/a/" in line and line.endswith(
            "is more than 512 directories deep"), line
        cid = shoal("inspect", "-f", "{{.Id}}", name, check=True).stdout.strip()
        assert not list((shoal_root / "containers" / cid).glob("commit-*")), "the commit's scratch copy stayed"
    finally:
        shoal("rm", "-f", name)


def test_diff_and_export_of_a_container_nested_past_a_layers_depth_are_one_line(shoal, busybox_image: str) -> None:
    """diff and export walk the container's changes recursively: RecursionError tracebacks
    (export's after part of the tar was written). One line each now, before any output."""
    name = f"shoal-deep-{uuid.uuid4().hex[:8]}"
    try:
        shoal("run", "--name", name, "--network", "none", busybox_image, "sh", "-c", f"cd /tmp && {NEST}", check=True)
        for args in (("diff", name), ("export", name)):
            proc = shoal(*args)
            assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
            assert proc.stdout == "", "export wrote part of a tar"
            line = proc.stderr.strip()
            assert f"{args[0]}: the container's changes: tmp/a/a/a/" in line and line.endswith(
                "is more than 512 directories deep"), line
    finally:
        shoal("rm", "-f", name)


def test_cp_out_of_a_directory_nested_past_a_layers_depth_is_one_line(shoal, busybox_image: str, tmp_path) -> None:
    """cp out tars the source recursively (_tar_entry): to stdout a RecursionError traceback
    after part of the tar; to a host directory the unpacker's 'truncated tar' hid why. One
    line naming the path now, nothing written, nothing left next to the destination."""
    name = f"shoal-deep-{uuid.uuid4().hex[:8]}"
    try:
        shoal("run", "--name", name, "--network", "none", busybox_image, "sh", "-c", f"cd /tmp && {NEST}", check=True)
        for dest in ("-", str(tmp_path / "out")):
            proc = shoal("cp", f"{name}:/tmp", dest)
            assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
            assert proc.stdout == ""
            line = proc.stderr.strip()
            assert "tmp: a/a/a/" in line and line.endswith("is more than 512 directories deep"), line
        assert list(tmp_path.iterdir()) == []
    finally:
        shoal("rm", "-f", name)


def test_cp_in_of_a_host_directory_nested_past_a_layers_depth_is_one_line(shoal, busybox_image: str) -> None:
    """cp into a container walked the host directory with os.walk (recursive): 1,100 levels was a
    RecursionError traceback after part of the tree had been copied. One line naming the path
    now, and nothing copied."""
    import os
    import tempfile

    # Outside pytest's tmp_path: its end-of-session cleanup (shutil.rmtree) recurses too, and a
    # tree left there by a killed run would fail every later session.
    scratch = Path(tempfile.mkdtemp(prefix="shoal-deepin-"))
    src = scratch / "deep"
    name = f"shoal-deepin-{uuid.uuid4().hex[:8]}"
    try:
        fd = os.open(scratch, os.O_RDONLY)
        try:
            for part in ["deep"] + ["d"] * 1100:  # relative to a descriptor: no path past PATH_MAX
                os.mkdir(part, dir_fd=fd)
                nxt = os.open(part, os.O_RDONLY, dir_fd=fd)
                os.close(fd)
                fd = nxt
        finally:
            os.close(fd)
        shoal("run", "-d", "--name", name, "--network", "none", busybox_image, "sleep", "60", check=True)
        proc = shoal("cp", str(src), f"{name}:/tmp/")
        line = proc.stderr.strip()
        assert proc.returncode == 1 and "Traceback" not in proc.stderr and "\n" not in line, proc.stderr[-2000:]
        assert f"cannot copy {src}: d/d/d/" in line and line.endswith("is more than 512 directories deep"), line
        assert shoal("exec", name, "ls", "/tmp", check=True).stdout == ""
    finally:
        shoal("rm", "-f", name)
        subprocess.run(["rm", "-rf", "--one-file-system", str(scratch)], check=False)
