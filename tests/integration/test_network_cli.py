"""`shoal network ...` as a user types it (a subprocess each), with docker's columns and errors."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT_ONLY, run_shoal

from shoal.network import cleanup
from shoal.network.store import NetworkStore

pytestmark = [ROOT_ONLY, pytest.mark.root]


@pytest.fixture
def sh(tmp_path: Path) -> Iterator:
    env = {"SHOAL_ROOT": str(tmp_path / "root"), "SHOAL_RUN": str(tmp_path / "root" / "run"),
           "SHOAL_DEFAULT_ADDRESS_POOLS": "10.213.0.0/16:20"}

    def run(*args: str, input: str | None = None, check: bool = False):
        return run_shoal(*args, input=input, check=check, env=env)

    try:
        yield run
    finally:
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            cleanup.remove_everything(NetworkStore())
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def rows(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


def test_ls_lists_predefined_networks_like_docker(sh) -> None:
    out = sh("network", "ls", check=True).stdout
    table = rows(out)
    assert out.splitlines()[0].startswith("NETWORK ID     NAME      DRIVER    SCOPE")
    assert table[0] == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert [r[1:] for r in table[1:]] == [["bridge", "bridge", "local"], ["host", "host", "local"], ["none", "null", "local"]]
    assert all(len(r[0]) == 12 for r in table[1:])


def test_create_inspect_filter_rm_prune(sh) -> None:
    created = sh("network", "create", "-d", "overlay", "--attachable", "--label", "com.docker.stack.namespace=webapp",
                 "webapp_webnet", check=True).stdout.strip()
    assert len(created) == 64
    sh("network", "create", "--subnet", "10.213.128.0/20", "--gateway", "10.213.128.254", "--ip-range",
       "10.213.130.0/24", "--internal", "backend", check=True)
    table = rows(sh("network", "ls", check=True).stdout)
    assert ["webapp_webnet", "overlay", "swarm"] in [r[1:] for r in table]
    assert ["backend", "bridge", "local"] in [r[1:] for r in table]
    [info] = json.loads(sh("network", "inspect", "backend", check=True).stdout)
    assert info["IPAM"]["Config"] == [{"Subnet": "10.213.128.0/20", "Gateway": "10.213.128.254", "IPRange": "10.213.130.0/24"}]
    assert info["Internal"] is True and info["Driver"] == "bridge" and info["Scope"] == "local"
    [overlay] = json.loads(sh("network", "inspect", created[:12], check=True).stdout)
    assert overlay["Name"] == "webapp_webnet" and overlay["Attachable"] is True
    assert overlay["Options"]["com.docker.network.driver.mtu"] == "1450"
    assert sh("network", "inspect", "-f", "{{.Name}} {{.Driver}}", "webapp_webnet", check=True).stdout == "webapp_webnet overlay\n"
    assert sh("network", "ls", "-q", "--filter", "label=com.docker.stack.namespace=webapp", check=True).stdout == created[:12] + "\n"
    assert sh("network", "ls", "--format", "{{.Name}}", "-f", "driver=overlay", check=True).stdout == "webapp_webnet\n"
    assert sh("network", "ls", "-q", "-f", "type=custom", check=True).stdout.count("\n") == 2

    p = sh("network", "rm", "backend", "bridge", "nosuch")
    assert p.returncode == 1
    assert p.stdout == "backend\n"
    assert "Error: bridge is a pre-defined network and cannot be removed" in p.stderr
    assert "Error: network nosuch not found" in p.stderr

    sh("network", "create", "spare", "--label", "keep=no", check=True)
    p = sh("network", "prune", input="y\n", check=True)
    assert "Are you sure you want to continue? [y/N]" in p.stdout
    assert sorted(p.stdout.split("Deleted Networks:\n")[1].split()) == ["spare", "webapp_webnet"]
    assert [r[1] for r in rows(sh("network", "ls", check=True).stdout)[1:]] == ["bridge", "host", "none"]


def test_bad_input_is_one_clear_line_and_creates_nothing(sh) -> None:
    sh("network", "create", "--subnet", "10.213.64.0/20", "one", check=True)
    cases = [
        (["network", "create", "--subnet", "10.213.64.0/24", "two"], "subnet 10.213.64.0/24 overlaps with network one (10.213.64.0/20)"),
        (["network", "create", "--subnet", "10.213.96.1/24", "two"], "host bits are set (did you mean 10.213.96.0/24?)"),
        (["network", "create", "--subnet", "10.213.96.0/24", "--gateway", "10.213.97.1", "two"], "invalid gateway 10.213.97.1 for network two"),
        (["network", "create", "--subnet", "10.213.96.0/24", "--ip-range", "10.213.98.0/25", "two"], "invalid ip-range 10.213.98.0/25 for network two"),
        (["network", "create", "one"], "network with name one already exists"),
        (["network", "create", "-d", "macvlan", "two"], 'plugin "macvlan" not found'),
        (["network", "inspect", "two"], "network two not found"),
    ]
    for args, message in cases:
        p = sh(*args)
        assert p.returncode != 0, args
        assert p.stderr.startswith("Error: ") and message in p.stderr, (args, p.stderr)
        assert p.stderr.count("\n") == 1
    names = [r[1] for r in rows(sh("network", "ls", check=True).stdout)[1:]]
    assert names == ["bridge", "host", "none", "one"]


def test_full_pool_names_the_pool(sh, tmp_path: Path) -> None:
    p = run_shoal("network", "create", "x", env={"SHOAL_ROOT": str(tmp_path / "r2"),
                                                  "SHOAL_DEFAULT_ADDRESS_POOLS": "10.213.240.0/24:24"})
    assert p.returncode == 1
    assert "could not find an available, non-overlapping IPv4 address pool" in p.stderr
    assert "10.213.240.0/24:24" in p.stderr
