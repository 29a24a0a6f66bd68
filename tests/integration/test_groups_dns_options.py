"""Supplementary groups and resolv.conf options reach a real container: `run --group-add` and
`--dns-option`, and a service's Groups and DNSConfig.Options (`service create --group
--dns-option`) through the agent's taskspec to the task's container (crun's
process.user.additionalGids, the container's /etc/resolv.conf)."""

from __future__ import annotations

import pytest

from conftest import ROOT_ONLY, poll
from runtime_helpers import assert_clean, container_ids, snapshot

pytestmark = [pytest.mark.root, ROOT_ONLY]

NONE = ("--network", "none")
SHOW = "grep ^Groups: /proc/self/status; grep ^options /etc/resolv.conf; id -g"


def test_run_group_add_and_dns_option(shoal, shoal_root, busybox_image: str) -> None:
    before = snapshot(shoal_root)
    ids = container_ids(shoal_root)
    try:
        # app (1000) is in staff (50) by the image's /etc/group; --group-add adds a name and a
        # bare GID that no group has, as moby's GetAdditionalGroups.
        out = shoal("run", "--rm", *NONE, "--user", "app", "--group-add", "nogroup", "--group-add", "4242",
                    "--dns-option", "ndots:3", "--dns-option", "timeout:1", busybox_image, "sh", "-c", SHOW,
                    check=True).stdout.splitlines()
        assert out[0].split() == ["Groups:", "50", "4242", "65534"]
        assert out[1:] == ["options ndots:3 timeout:1", "1000"]  # the host's options replaced, one line
        # Without the flags: no extra group, no options line of ours.
        plain = shoal("run", "--rm", *NONE, "--user", "app", busybox_image, "sh", "-c", SHOW, check=True).stdout
        assert plain.splitlines()[0].split() == ["Groups:", "50"] and "ndots:3" not in plain

        # A group name the image lacks: refused before anything is made.
        bad = shoal("run", "--rm", *NONE, "--group-add", "nosuch", busybox_image, "true")
        assert bad.returncode != 0
        assert "Unable to find group nosuch: no matching entries in group file" in bad.stderr
        # Nothing made; a container of an earlier test still on its way out may have gone.
        assert container_ids(shoal_root) <= ids
    finally:
        assert_clean(shoal_root, before, ids)


def test_service_groups_and_dns_options_reach_the_task(shoal, busybox_image: str) -> None:
    try:
        shoal("service", "create", "--detach", "--name", "h10_opts", "--mode", "replicated-job", "--user", "app",
              "--group", "nogroup", "--group", "4242", "--dns-option", "ndots:4", "--dns-option", "attempts:2",
              busybox_image, "sh", "-c", SHOW, check=True, timeout=60)

        def logs() -> str:
            out = shoal("service", "logs", "--raw", "h10_opts").stdout
            return out if "1000" in out else ""

        lines = [line.split("|")[-1].strip() for line in poll(logs, 60, "the job's output").splitlines()]
        groups = next(line for line in lines if line.startswith("Groups:"))
        assert groups.split() == ["Groups:", "50", "4242", "65534"]
        assert "options ndots:4 attempts:2" in lines
    finally:
        shoal("service", "rm", "h10_opts")
