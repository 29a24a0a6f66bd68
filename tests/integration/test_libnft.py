"""nft through libnftables in shoald's process (network/libnft.py) against the `nft` binary it
replaces, in network namespaces of the test's own: the same rule set in the kernel, the same
error text, and each thread's commands in its own namespace."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from conftest import ROOT_ONLY
from shoal.network import libnft, netns

pytestmark = [pytest.mark.root, ROOT_ONLY]

TABLE = """table ip shoal-libnft-test {
\tchain lb {
\t\tip daddr 10.0.0.1 dnat to numgen inc mod 2 map { 0 : 10.0.0.2, 1 : 10.0.0.3 } comment "service a"
\t}
\tchain prerouting {
\t\ttype nat hook prerouting priority dstnat; policy accept;
\t\tjump lb
\t}
}
"""
BAD = "table ip shoal-libnft-test {\n\tchain lb {\n\t\tip daddr 10.0.0.999 accept\n\t}\n}\n"


def _binary(command: str) -> tuple[int, str, str]:
    proc = subprocess.run(["nft", "-f", "-"], input=command, capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture
def namespaces(tmp_path: Path):
    made = [netns.create(tmp_path / "a"), netns.create(tmp_path / "b")]
    try:
        yield made
    finally:
        for path in made:
            netns.remove(path)


def test_library_and_binary_agree(namespaces: list[Path]) -> None:
    a, _ = namespaces

    def inside() -> dict[str, tuple[int, str, str]]:
        out = {"apply": libnft.run(TABLE), "listed": _binary("list table ip shoal-libnft-test"),
               "bad_lib": libnft.run(BAD), "bad_bin": _binary(BAD),
               "missing_lib": libnft.run("list chain ip filter DOCKER-USER"),
               "missing_bin": _binary("list chain ip filter DOCKER-USER")}
        out["own_list"] = libnft.run("list table ip shoal-libnft-test")
        return out

    got = netns.run_in(a, inside)
    assert got["apply"] == (0, "", "")
    assert got["listed"][0] == 0 and "numgen inc mod 2" in got["listed"][1]
    assert got["own_list"] == (0, got["listed"][1], "")
    assert got["bad_lib"][0] == 1 and got["bad_lib"][1:] == got["bad_bin"][1:]
    assert "10.0.0.999" in got["bad_lib"][2]
    assert got["missing_lib"][0] != 0 and got["missing_lib"][2] == got["missing_bin"][2]


def test_each_thread_acts_in_its_own_namespace(namespaces: list[Path]) -> None:
    """A context's socket stays in the namespace it was made in: a thread that entered another
    namespace (netns.run_in) gets a context there, never the first one's."""
    a, b = namespaces
    assert netns.run_in(a, lambda: libnft.run("add table ip shoal-libnft-a"))[0] == 0
    assert netns.run_in(b, lambda: libnft.run("add table ip shoal-libnft-b"))[0] == 0
    assert netns.run_in(a, lambda: libnft.run("list tables"))[1] == "table ip shoal-libnft-a\n"
    assert netns.run_in(b, lambda: _binary("list tables"))[1] == "table ip shoal-libnft-b\n"
    assert "shoal-libnft" not in libnft.run("list tables")[1]  # the host's, untouched


def test_without_the_library_the_binary_runs(namespaces: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    a, _ = namespaces
    monkeypatch.setattr(libnft, "_unavailable", True)
    monkeypatch.setattr(libnft, "_lib", None)
    assert netns.run_in(a, lambda: libnft.run(TABLE)) == (0, "", "")
    listed = netns.run_in(a, lambda: libnft.run("list table ip shoal-libnft-test"))
    assert listed == netns.run_in(a, lambda: _binary("list table ip shoal-libnft-test"))
    assert "numgen inc mod 2" in listed[1]
    assert netns.run_in(a, lambda: libnft.run(BAD))[0] == 1
