"""`network create -d overlay --opt encrypted` and a stack network with `driver_opts:
encrypted: ""` (issue 12 item 2) on a single node, as a user types them: on a kernel that
cannot encrypt (network/ipsec.py asks it), a one-line error naming the network and what the
kernel lacks, a non-zero exit, and nothing made (no network, no bridge or VXLAN device, no
service, no xfrm state). Never plain when encryption was asked for."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT_ONLY

from shoal.network import ipsec, overlay

pytestmark = [ROOT_ONLY, pytest.mark.root]


def _refusal(name: str) -> str:
    why = ipsec.unavailable()
    return f"network {name}: {overlay.NO_IPSEC}: {why}" if why else f"network {name}: {overlay.NOT_ENCRYPTED}"


def _err(result: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr's lines without the note that the first command started shoald."""
    return [line for line in result.stderr.splitlines() if not line.startswith("Starting shoald")]


def _links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {link["ifname"] for link in json.loads(out)}


def _xfrm() -> str:
    return subprocess.run(["ip", "xfrm", "state"], capture_output=True, text=True, check=True).stdout + \
        subprocess.run(["ip", "xfrm", "policy"], capture_output=True, text=True, check=True).stdout


def test_encrypted_overlay_is_refused_with_nothing_made(shoal, tmp_path: Path) -> None:
    links, xfrm = _links(), _xfrm()
    before = shoal("network", "ls", "--format", "{{.Name}}", check=True).stdout

    made = shoal("network", "create", "-d", "overlay", "--opt", "encrypted", "h13_secure")
    assert made.returncode != 0 and made.stdout == "", made.stdout
    [line] = _err(made)  # one line: shoal's `Error: ` and the refusal
    assert line == f"Error: {_refusal('h13_secure')}", made.stderr

    compose = tmp_path / "docker-compose.yml"
    compose.write_text(yaml.safe_dump({
        "version": "3.8",
        "services": {"web": {"image": "busybox", "command": ["sleep", "60"], "networks": ["plain", "secure"]}},
        "networks": {"plain": {}, "secure": {"driver": "overlay", "driver_opts": {"encrypted": ""}}}}))
    deployed = shoal("stack", "deploy", "--detach", "-c", str(compose), "h13s")
    assert deployed.returncode != 0, deployed.stdout
    assert _err(deployed) == [f"Error response from daemon: {_refusal('h13s_secure')}"], deployed.stderr

    # Nothing half-made: not the refused network, not the plain one beside it, no service.
    assert shoal("network", "ls", "--format", "{{.Name}}", check=True).stdout == before
    assert "h13s_web" not in shoal("service", "ls", "--format", "{{.Name}}", check=True).stdout.split()
    assert not {n for n in _links() - links if n.startswith(("vx-", "shoal"))}
    assert _xfrm() == xfrm
