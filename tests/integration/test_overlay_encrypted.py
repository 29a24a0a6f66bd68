"""`network create -d overlay --opt encrypted` (issue 12 item 2) on a single node, as a user types
it. A node that cannot encrypt (no WireGuard in the kernel, no wireguard-go: here pointed at a
missing one through SHOAL_WIREGUARD_GO) refuses with one line naming the network and what it
lacks, a non-zero exit, and nothing made (no network, no bridge, VXLAN device or WireGuard
interface). A node that can makes it, with the MTU that leaves room for WireGuard and VXLAN.
Never plain when encryption was asked for. Across nodes: tests/cluster/test_overlay_encrypted.py;
a stack deploy refused: tests/unit/test_overlay_vni.py."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import ROOT_ONLY

from shoal.network import overlay, wireguard

pytestmark = [ROOT_ONLY, pytest.mark.root]


def _err(result: subprocess.CompletedProcess[str]) -> list[str]:
    """stderr's lines without the note that the first command started shoald."""
    return [line for line in result.stderr.splitlines() if not line.startswith("Starting shoald")]


def _links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
    return {link["ifname"] for link in json.loads(out)}


def test_refused_without_wireguard_with_nothing_made(shoal) -> None:
    if wireguard.kernel_has_wireguard():
        pytest.skip("this kernel has WireGuard: an encrypted network is never refused here")
    links = _links()
    before = shoal("network", "ls", "--format", "{{.Name}}", check=True).stdout
    made = shoal("network", "create", "-d", "overlay", "--opt", "encrypted", "h13_secure",
                 env={"SHOAL_WIREGUARD_GO": "/nonexistent/wireguard-go"})
    assert made.returncode != 0 and made.stdout == "", made.stdout
    [line] = _err(made)  # one line: shoal's `Error: ` and the refusal
    assert line == (f"Error: network h13_secure: {overlay.NO_ENCRYPTION}: the kernel has no WireGuard "
                    "(CONFIG_WIREGUARD) and wireguard-go is not installed"), made.stderr
    assert shoal("network", "ls", "--format", "{{.Name}}", check=True).stdout == before
    assert not {n for n in _links() - links if n.startswith(("vx-", "shoal", "swg-"))}


@pytest.mark.skipif(bool(wireguard.unavailable()), reason="no WireGuard here")
def test_made_where_wireguard_is(shoal) -> None:
    from shoal.network.store import NetworkStore

    made = shoal("network", "create", "-d", "overlay", "--opt", "encrypted", "h13_made")
    try:
        assert made.returncode == 0, made.stderr
        [info] = json.loads(shoal("network", "inspect", "h13_made", check=True).stdout)
        assert info["Driver"] == "overlay" and "encrypted" in info["Options"], info
        assert NetworkStore().get("h13_made").mtu == wireguard.ENCRYPTED_MTU  # 1420 - VXLAN's 50
    finally:
        shoal("network", "rm", "h13_made")
    assert NetworkStore().find("h13_made") is None
