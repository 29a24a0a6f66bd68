"""The node's container runtime: OCI bundles run by crun (or runc) under conmon."""

from __future__ import annotations

from typing import Any


def run_build_step(*args: Any, **kwargs: Any) -> int:
    """See shoal.runtime.build_step.run_build_step (imported lazily: the package is light)."""
    from shoal.runtime.build_step import run_build_step as impl

    return impl(*args, **kwargs)


__all__ = ["run_build_step"]
