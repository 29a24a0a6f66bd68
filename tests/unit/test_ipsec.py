"""The kernel's answer to "can an overlay network be encrypted here" (network/ipsec.py) agrees
with what the kernel does when asked directly, and check_options refuses `encrypted` with that
answer in its one line. Asking leaves no xfrm state anywhere but in a namespace that is gone."""

from __future__ import annotations

import os
import subprocess
import uuid

import pytest

from shoal.errors import InvalidArgument
from shoal.network import ipsec, overlay

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (network namespaces)")


def _kernel_makes(*algorithm: str) -> tuple[bool, str]:
    """Ask the kernel ourselves, in a named namespace this test makes and removes."""
    name = f"h13-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        proc = subprocess.run(["ip", "-n", name, "xfrm", "state", "add", "src", "198.18.0.1", "dst", "198.18.0.2",
                               "proto", "esp", "spi", "0x200", "mode", "transport", *algorithm],
                              capture_output=True, text=True)
        return proc.returncode == 0, proc.stderr.strip()
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True)


def test_answer_matches_the_kernel() -> None:
    ipsec.unavailable.cache_clear()
    why = ipsec.unavailable()
    made, error = _kernel_makes("aead", ipsec.AEAD, "0x" + "11" * 20, "128")
    assert made == (why == ""), (why, error)
    if not made:
        # The reason is the kernel's own words and what to build in: ESP itself when it is
        # missing (the algorithm is looked up first, so the AEAD's error would hide that).
        _esp_made, esp_error = _kernel_makes("enc", "ecb(cipher_null)", '""')
        if "type not found" in esp_error:
            assert why == f"no ESP (CONFIG_INET_ESP): {esp_error.removeprefix('Error: ').rstrip('.')}", why
        else:
            assert why == f"no {ipsec.AEAD} for ESP (CONFIG_CRYPTO_GCM): {error.removeprefix('Error: ').rstrip('.')}"


def test_asking_leaves_no_state_in_this_namespace() -> None:
    ipsec.unavailable.cache_clear()
    ipsec.unavailable()
    states = subprocess.run(["ip", "xfrm", "state"], capture_output=True, text=True, check=True).stdout
    assert "198.18.0.1" not in states and "198.18.0.2" not in states


def test_encrypted_refused_with_the_reason() -> None:
    ipsec.unavailable.cache_clear()
    why = ipsec.unavailable()
    want = f"network s_net: {overlay.NO_IPSEC}: {why}" if why else f"network s_net: {overlay.NOT_ENCRYPTED}"
    with pytest.raises(InvalidArgument) as info:
        overlay.check_options("s_net", "overlay", {"encrypted": ""})
    assert str(info.value) == want and "\n" not in want
    overlay.check_options("b", "bridge", {"encrypted": ""})  # a bridge has no VXLAN to encrypt
