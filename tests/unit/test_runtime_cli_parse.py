"""Flag parsing of run/create with Docker's wording for bad values."""

from __future__ import annotations

import pytest

from shoal.cli import container as cli
from shoal.errors import InvalidArgument


def test_memory_and_cpus():
    assert cli.parse_memory("50M") == 52428800
    assert cli.parse_cpus("0.1") == 100_000_000 and cli.parse_cpus("1.5") == 1_500_000_000
    with pytest.raises(InvalidArgument, match=r'invalid argument "lots" for "-m, --memory" flag: invalid size'):
        cli.parse_memory("lots")
    with pytest.raises(InvalidArgument, match=r'"--cpus" flag: failed to parse abc as a rational number'):
        cli.parse_cpus("abc")


def test_volumes_tmpfs_ports_ulimits():
    m = cli.parse_volume("/host/dir:/data:ro")
    assert (m.type, m.source, m.target, m.read_only) == ("bind", "/host/dir", "/data", True)
    m = cli.parse_volume("cache:/var/cache")
    assert (m.type, m.source, m.read_only) == ("volume", "cache", False)
    assert cli.parse_volume("/anon").type == "volume" and cli.parse_volume("/anon").source == ""
    with pytest.raises(InvalidArgument):
        cli.parse_volume("cache:relative")
    t = cli.parse_tmpfs("/run:size=64m,mode=1777")
    assert (t.type, t.target, t.options) == ("tmpfs", "/run", ["size=64m", "mode=1777"])
    p = cli.parse_port("127.0.0.1:8080:80/udp")
    assert (p.host_ip, p.published, p.target, p.protocol) == ("127.0.0.1", 8080, 80, "udp")
    assert cli.parse_port("80").published == 0
    u = cli.parse_ulimit("nofile=100:200")
    assert (u.name, u.soft, u.hard) == ("nofile", 100, 200)
    with pytest.raises(InvalidArgument, match="soft limit must be less than or equal"):
        cli.parse_ulimit("nofile=300:200")


def test_env_file(tmp_path, monkeypatch):
    f = tmp_path / "env"
    f.write_text("# c\nA=1\nB\nC=x=y\n")
    monkeypatch.setenv("B", "from-host")
    assert cli.parse_env_file(str(f)) == ["A=1", "B=from-host", "C=x=y"]
    with pytest.raises(InvalidArgument, match="nosuch"):
        cli.parse_env_file(str(tmp_path / "nosuch"))


def test_command_column_is_truncated_with_an_ellipsis():
    assert cli._ellipsis("sh -c echo to-out; echo", 20) == "sh -c echo to-out; …"
    assert cli._ellipsis("short", 20) == "short"
