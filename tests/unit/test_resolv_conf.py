"""A container's resolv.conf as libnetwork writes it (runtime/files.py resolv_conf)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.runtime import files


@pytest.fixture
def host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    """The host's /etc/resolv.conf, as the test writes it."""
    conf = tmp_path / "resolv.conf"
    real = files.Path
    monkeypatch.setattr(files, "Path", lambda p: conf if p == "/etc/resolv.conf" else real(p))
    return conf


def test_the_embedded_resolver_gets_ndots_0_unless_one_is_set(host: Path) -> None:
    """libnetwork's ResolverOptions: a container the embedded resolver serves has ndots:0 (a
    short name goes to 127.0.0.11 as it is, before the host's search domains, where a wildcard
    record would answer for `db`), the host's other options kept; an ndots the user or the host
    set wins. Shoal wrote no ndots, so `db` was tried as db.corp.example first."""
    host.write_text("nameserver 10.0.0.53\nsearch corp.example\noptions timeout:2\n")
    internal = files.resolv_conf(["127.0.0.11"], [], False, [], internal=True)
    assert internal.splitlines() == ["search corp.example", "options timeout:2 ndots:0", "nameserver 127.0.0.11"]
    # The host's search domains stay unless some are given (shoal dropped them whenever it
    # wrote nameservers of its own, the embedded resolver's included).
    assert "search corp.example\n" in files.resolv_conf(["1.1.1.1"], [], False, [])
    assert "search mine.example\n" in files.resolv_conf(["1.1.1.1"], ["mine.example"], False, [])
    assert "corp.example" not in files.resolv_conf(["1.1.1.1"], ["mine.example"], False, [])
    mine = files.resolv_conf(["127.0.0.11"], [], False, ["ndots:3"], internal=True)
    assert [line for line in mine.splitlines() if line.startswith("options")] == ["options ndots:3"]
    host.write_text("nameserver 10.0.0.53\noptions ndots:2\n")
    assert "options ndots:2\n" in files.resolv_conf(["127.0.0.11"], [], False, [], internal=True)
    # Not the embedded resolver (the default bridge, --network none): as before.
    host.write_text("nameserver 10.0.0.53\n")
    assert "ndots" not in files.resolv_conf([], [], False, [])
