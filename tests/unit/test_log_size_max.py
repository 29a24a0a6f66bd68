"""A service's json-file or local log options as the bound on its task's log (agent/taskspec.py
log_size_max), parsed and refused as moby's drivers parse and refuse them."""

from __future__ import annotations

import pytest

from shoal.agent.taskspec import log_size_max
from shoal.errors import ShoalError


def test_sizes_as_moby_reads_them() -> None:
    assert log_size_max(None) == 0  # shoal's default
    assert log_size_max({"name": "json-file", "options": {}}) == 0
    assert log_size_max({"name": "json-file", "options": {"max-size": "1k"}}) == 1024
    assert log_size_max({"name": "json-file", "options": {"max-size": "10m", "max-file": "3"}}) == 30 * 2**20
    assert log_size_max({"name": "local", "options": {}}) == 100 * 2**20  # moby's local: 20m x 5
    assert log_size_max({"name": "syslog", "options": {"syslog-address": "udp://x:514"}}) == 0


@pytest.mark.parametrize(("options", "message"), [
    ({"max-size": "lots"}, "failed to initialize logging driver: invalid size: 'lots'"),
    ({"max-size": "0"}, "failed to initialize logging driver: max-size must be a positive number"),
    ({"max-size": "1m", "max-file": "0"}, "failed to initialize logging driver: max-file cannot be less than 1"),
    ({"max-file": "x"}, "failed to initialize logging driver: invalid max-file: 'x'"),
    ({"max-sise": "1m"}, "unknown log opt 'max-sise' for json-file log driver"),
])
def test_refused_in_mobys_words(options: dict[str, str], message: str) -> None:
    with pytest.raises(ShoalError) as caught:
        log_size_max({"name": "json-file", "options": options})
    assert str(caught.value) == message
