"""A container (or anything writing into a volume) may nest directories thousands deep: mkdir
and cd in a loop takes no privilege. shutil.rmtree recurses, one frame and one descriptor a
level, so removing such a container or volume died with a RecursionError and left it there
for good: `rm` failed every time and the container could never be removed."""

from __future__ import annotations

import uuid

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
