"""The runtime's once-per-process work done ahead (oci.warm): the default seccomp filter that
build_config hands crun is compiled by warm, in memory only when asked, and is the same program
a cold process compiles for its first container."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.runtime import hostsec, seccomp

pytestmark = pytest.mark.skipif(not hostsec.facts().seccomp or not seccomp._lib(),
                                reason="no seccomp or libseccomp on this host")

_SCRIPT = """
import json, sys
from shoal.runtime import oci, seccomp
from shoal.runtime.spec import ContainerSpec
if sys.argv[1] == "warm":
    oci.warm(persist=sys.argv[2] == "1")
# what build_config uses for a task with Docker's default capabilities; compile_bpf counted
compiled = []
original = seccomp.compile_bpf
seccomp.compile_bpf = lambda section: compiled.append(1) or original(section)
caps = oci.capabilities(ContainerSpec(image=""), oci.hostsec.facts())
print(json.dumps({"bpf": seccomp.default_bpf(caps), "compiled_after": len(compiled)}))
"""


def _run(tmp_path: Path, *args: str) -> dict[str, object]:
    import json

    env = dict(os.environ, SHOAL_RUN=str(tmp_path / "run"), SHOAL_ROOT=str(tmp_path / "root"))
    out = subprocess.run([sys.executable, "-c", _SCRIPT, *args], env=env, check=True, capture_output=True,
                         text=True, timeout=60).stdout
    return json.loads(out)


def test_warm_compiles_ahead_in_memory_only(tmp_path: Path) -> None:
    cold = _run(tmp_path / "cold", "cold")
    assert cold["compiled_after"] == 1 and cold["bpf"]  # a cold process compiles at its first container
    assert (tmp_path / "cold" / "run" / "seccomp").is_dir()  # ... and keeps it in its run root

    warm = _run(tmp_path / "warm", "warm", "0")
    assert warm["compiled_after"] == 0  # nothing left for the first container to compile
    assert warm["bpf"] == cold["bpf"]  # the same program crun gets
    assert not (tmp_path / "warm" / "run" / "seccomp").exists()  # the zygote's warm writes nothing

    persisted = _run(tmp_path / "warm1", "warm", "1")
    assert persisted["compiled_after"] == 0 and persisted["bpf"] == cold["bpf"]
    assert list((tmp_path / "warm1" / "run" / "seccomp").glob("*.bpf"))
