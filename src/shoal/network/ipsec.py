"""Whether this kernel can encrypt an overlay network as Docker's overlay driver does: ESP in
transport mode between node addresses with AES-GCM (`rfc4106(gcm(aes))`), set up through
xfrm (libnetwork's drivers/overlay/encryption.go).

The question is asked of the kernel itself, not of a config file: `ip xfrm state add` of such
a state in a throw-away network namespace (`unshare -n`, gone with the process, so nothing is
left in any namespace that matters). A kernel built without CONFIG_INET_ESP answers "Requested
type not found", one without CONFIG_CRYPTO_GCM "Requested AEAD algorithm not found"; modules
that can be loaded are loaded by that very request, so a yes is a real yes.

Used by network/overlay.py's check_options: an encrypted network is refused, before anything
is made, rather than run in clear."""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

XFRM_STAT = Path("/proc/net/xfrm_stat")  # present when the kernel has xfrm at all
AEAD = "rfc4106(gcm(aes))"  # Docker's: AES-GCM, 16-byte key + 4-byte salt, 128-bit ICV
TIMEOUT = 10.0


def _probe_command(*algorithm: str) -> list[str]:
    # Test addresses (RFC 2544's 198.18.0.0/15) in a namespace of its own: the state dies with it.
    return ["unshare", "--net", "ip", "xfrm", "state", "add", "src", "198.18.0.1", "dst", "198.18.0.2",
            "proto", "esp", "spi", "0x100", "mode", "transport", *algorithm]


def _ask(*algorithm: str) -> str:
    """The kernel's answer to an ESP state with `algorithm`: "" (made) or its error line."""
    try:
        proc = subprocess.run(_probe_command(*algorithm), capture_output=True, text=True, timeout=TIMEOUT)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"could not ask the kernel: {exc}"
    if proc.returncode == 0:
        return ""
    detail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
    return detail.removeprefix("Error: ").rstrip(".")


@functools.cache
def unavailable() -> str:
    """Why this kernel cannot carry an encrypted overlay network ("" when it can). Asked once
    per process: the kernel's build does not change under a running daemon."""
    if not XFRM_STAT.exists():
        return "no xfrm (CONFIG_XFRM)"
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return "unshare(1) and ip(8) (iproute2), needed to ask the kernel for ESP, are not installed"
    # The algorithm is looked up before the protocol: ask for ESP with the null cipher first, so
    # that a kernel lacking both is told it lacks ESP ("Requested type not found"); any other
    # answer (no null cipher built) leaves the question to the real algorithm below.
    esp = _ask("enc", "ecb(cipher_null)", '""')
    if "type not found" in esp:
        return f"no ESP (CONFIG_INET_ESP): {esp}"
    aead = _ask("aead", AEAD, "0x" + os.urandom(20).hex(), "128")  # a random key, never used
    if aead:
        return f"no {AEAD} for ESP (CONFIG_CRYPTO_GCM): {aead}"
    return ""
