"""Where shoal keeps its state. Everything lives under one root so a crash can be cleaned up."""

from __future__ import annotations

import os
from pathlib import Path


def state_root() -> Path:
    """Persistent state (images, containers); SHOAL_ROOT moves it (tests use a temp dir)."""
    return Path(os.environ.get("SHOAL_ROOT", "/var/lib/shoal"))


def run_root() -> Path:
    """Volatile state (runtime state dirs, sockets); cleared by a reboot like /run itself."""
    env = os.environ.get("SHOAL_RUN")
    if env:
        return Path(env)
    return state_root() / "run" if "SHOAL_ROOT" in os.environ else Path("/run/shoal")


def cache_root() -> Path:
    """Build caches that survive `rm -rf $SHOAL_ROOT` (the offline base image rootfs)."""
    return Path(os.environ.get("SHOAL_CACHE", "/var/cache/shoal"))
