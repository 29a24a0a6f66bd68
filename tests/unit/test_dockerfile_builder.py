"""Pure pieces of the builder: destination rules, EXPOSE specs, build-arg scoping and the
Go formatting of history comments."""

from __future__ import annotations

import pytest

from shoal.build.buildargs import BuildArgs
from shoal.build.builder import (
    BuildFailed, _expose_ports, _go_duration, _go_q_list, _signal_ok, normalize_dest, normalize_workdir,
)


def test_normalize_dest() -> None:
    assert normalize_dest("/app", "x.txt") == "/app/x.txt"
    assert normalize_dest("/app", "./") == "/app/"
    assert normalize_dest("/app", ".") == "/app/"
    assert normalize_dest("", "sub/") == "/sub/"
    assert normalize_dest("/app", "/abs") == "/abs"


def test_normalize_workdir() -> None:
    assert normalize_workdir("", "app") == "/app"
    assert normalize_workdir("/app", "src/../lib/") == "/app/lib"
    assert normalize_workdir("/app", "/srv") == "/srv"


def test_expose() -> None:
    assert _expose_ports(["80", "53/UDP", "8000-8001"]) == ["80/tcp", "53/udp", "8000/tcp", "8001/tcp"]
    with pytest.raises(BuildFailed, match="invalid proto: icmp"):
        _expose_ports(["80/icmp"])
    with pytest.raises(BuildFailed, match="invalid containerPort: eighty"):
        _expose_ports(["eighty"])


def test_go_formatting() -> None:
    assert _go_q_list(["python", "app.py"]) == '["python" "app.py"]'
    assert _go_q_list(['say "hi"']) == '["say \\"hi\\""]'
    assert _go_duration(0) == "0s" and _go_duration(5_000_000_000) == "5s"
    assert _go_duration(90_000_000_000) == "1m30s" and _go_duration(500_000_000) == "500ms"
    assert _signal_ok("SIGTERM") and _signal_ok("term") and _signal_ok("9") and not _signal_ok("SIGNOPE")


def test_build_args_scoping() -> None:
    args = BuildArgs({"V": "cli", "UNUSED": "x", "HTTP_PROXY": "http://p"})
    args.add_arg("V", "default")
    args.add_meta_arg("V", "default")
    args.add_meta_arg("BASE", "busybox")
    stage = args.clone_for_stage()
    assert stage.all_allowed() == {"HTTP_PROXY": "http://p"}     # meta args need re-declaring
    stage.add_arg("BASE", None)                                   # ARG BASE: takes the meta value
    stage.add_arg("V", "stage-default")                           # --build-arg wins over defaults
    assert stage.all_allowed() == {"BASE": "busybox", "V": "cli", "HTTP_PROXY": "http://p"}
    assert stage.filter_allowed(["V=from-env"]) == ["BASE=busybox", "HTTP_PROXY=http://p"]
    args.merge_referenced(stage)
    assert args.unused() == ["UNUSED"]
