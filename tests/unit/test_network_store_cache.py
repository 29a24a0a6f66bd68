"""The network store's cache of decoded network files forgets a network whose file is gone: a
stack's network is new on every deploy, and each cached file held the network with all its
endpoints, piling up in a long-lived shoald (issue 10, found with bench/bench_soak.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shoal.network import store as netstore


def test_cached_network_files_go_with_their_networks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(netstore, "host_routes", lambda: [])  # no need of the host's routes here
    s = netstore.NetworkStore(tmp_path / "networks")
    a = s.create("shoaltest-a", subnet="10.231.1.0/24")
    b = s.create("shoaltest-b", subnet="10.231.2.0/24")
    s.list()
    mine = lambda: {p for p in netstore._files if p.startswith(str(tmp_path))}  # noqa: E731
    assert {str(s._path(a.id)), str(s._path(b.id))} <= mine()
    s.delete(a)                      # removed by shoald itself
    assert str(s._path(a.id)) not in mine()
    os.unlink(s._path(b.id))         # removed by another process (the CLI)
    s.list()
    assert str(s._path(b.id)) not in mine()
    assert all(os.path.exists(p) for p in mine())
