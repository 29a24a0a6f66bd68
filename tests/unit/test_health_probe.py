"""A task's healthcheck as dockerd's monitor reads it (daemon/health.go getProbe, cmdProbe)."""

from __future__ import annotations

from shoal.agent import health


def test_probe_kinds_as_mobys_get_probe() -> None:
    """CMD runs its arguments; CMD-SHELL its arguments after the image's SHELL, not joined; a
    test whose first word is not CMD, CMD-SHELL or NONE is no probe at all, as dockerd logs
    `Unknown healthcheck type` and never checks the container. Shoal ran `curl -f x` (a common
    compose slip for ["CMD", "curl", ...]) as a probe, and killed tasks docker leaves alone."""
    image = {"config": {"Healthcheck": {"Test": ["CMD", "true"], "Retries": 5}}}
    cmd = health.config_for({"healthcheck": {"test": ["CMD", "wget", "-q", "x"]}}, image)
    assert cmd is not None and (cmd.argv, cmd.retries) == (["wget", "-q", "x"], 5)
    shell = health.config_for({"healthcheck": {"test": ["CMD-SHELL", "curl -f x || exit 1"]}}, {})
    assert shell is not None and shell.argv == ["/bin/sh", "-c", "curl -f x || exit 1"]
    bash = health.config_for({"healthcheck": {"test": ["CMD-SHELL", "a", "b"]}},
                             {"config": {"Shell": ["/bin/bash", "-o", "pipefail", "-c"]}})
    assert bash is not None and bash.argv == ["/bin/bash", "-o", "pipefail", "-c", "a", "b"]
    assert health.config_for({"healthcheck": {"test": ["curl", "-f", "x"]}}, image) is None
    assert health.config_for({"healthcheck": {"test": ["NONE"]}}, image) is None
    inherited = health.config_for({}, image)
    assert inherited is not None and inherited.argv == ["true"]
