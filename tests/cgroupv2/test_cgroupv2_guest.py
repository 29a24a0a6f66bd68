"""shoal on cgroup v2, tested for real although this machine is cgroup v1: Debian's kernel boots in
qemu (tests/cgroupv2/guest.py: the host's root shared read-only, cgroup v1 switched off, every
controller enabled), runs tests/cgroupv2/guest_checks.py there once per session, and each check
the guest ran is reported here as a test of its own.

Skipped only when the guest cannot be had at all (not root, or qemu / the kernel package cannot be
installed), with the reason; a guest that boots but fails, hangs or reports nothing is a failure."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import guest  # noqa: E402

HERE = Path(__file__).parent
REPO = HERE.parents[1]
CHECKS = HERE / "guest_checks.py"
# The checks' names, read from the file (not imported: pytest must not collect them on the host).
NAMES = [node.name for node in ast.parse(CHECKS.read_text()).body
         if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="booting the cgroup v2 guest needs root")


@dataclass
class GuestRun:
    result: guest.Result
    cases: dict[str, tuple[str, str]]  # test name -> (passed/failed/error/skipped, message)

    def tail(self) -> str:
        return (f"guest rc={self.result.returncode}, ready after {self.result.boot_seconds}s of guest "
                f"uptime, {self.result.wall_seconds:.0f}s wall\n--- pytest in the guest ---\n"
                f"{self.result.output[-6000:]}\n--- console ---\n{self.result.console[-3000:]}")


def _cases(junit: Path) -> dict[str, tuple[str, str]]:
    out: dict[str, tuple[str, str]] = {}
    if not junit.exists():
        return out
    for case in ET.parse(junit).getroot().iter("testcase"):
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error", "skipped"):
                outcome = {"failure": "failed"}.get(child.tag, child.tag)
                message = (child.get("message") or "") + "\n" + (child.text or "")
        out[case.get("name", "")] = (outcome, message)
    return out


@pytest.fixture(scope="module")
def guest_run(tmp_path_factory: pytest.TempPathFactory) -> GuestRun:
    io_dir = tmp_path_factory.mktemp("cgroupv2-guest")
    junit = "/run/shoal-guest/io/junit.xml"  # the io share, as the guest sees it
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rA", "--durations=10",
               f"--junitxml={junit}", str(CHECKS.relative_to(REPO))]
    # The guest runs under plain emulation and its root is a read-only share with a tmpfs on
    # top: every module it imports without a .pyc is compiled there, each run (a fresh clone
    # has none yet, and this module runs first: 320 s instead of 160 s). Compiled here once.
    subprocess.run([sys.executable, "-m", "compileall", "-q", "-j0", str(REPO / "src"), str(HERE)],
                   check=True, capture_output=True)
    try:
        result = guest.run(command, io_dir, cwd=str(REPO), env={"SHOAL_CGROUPV2_GUEST": "1"}, timeout=1200)
    except guest.GuestUnavailable as e:
        pytest.skip(f"cgroup v2 guest unavailable: {e}")
    print(f"cgroup v2 guest: ready after {result.boot_seconds}s guest uptime, {result.wall_seconds:.0f}s wall")
    print(result.output[-3000:])  # the guest's pytest summary and slowest checks (shown with -rA)
    return GuestRun(result, _cases(io_dir / "junit.xml"))


@pytest.mark.parametrize("name", NAMES)
def test_under_cgroup_v2(guest_run: GuestRun, name: str) -> None:
    assert name in guest_run.cases, f"the guest reported nothing for {name}\n{guest_run.tail()}"
    outcome, message = guest_run.cases[name]
    assert outcome == "passed", f"{name} {outcome} in the cgroup v2 guest:\n{message[-4000:]}"


def test_the_guest_run_finished(guest_run: GuestRun) -> None:
    """The whole run: the command finished (no hang, no crash of the guest) and pytest's exit
    status agrees with the checks."""
    assert guest_run.result.returncode == 0, guest_run.tail()
    assert set(guest_run.cases) == set(NAMES), guest_run.tail()
