"""The pure parts of the container verbs, against docker/cli's and moby's own cases: `docker top`'s
ps parsing (moby daemon/top_unix_test.go), `docker port`'s lines and order, `docker cp`'s
CONTAINER:PATH split (cli/command/container/cp_test.go), `docker commit --change`, the
tabwriter `docker top` prints with. No root, no containers."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.cli.containerops import _go_tabwriter, _split_cp_arg, apply_changes
from shoal.errors import InvalidArgument, NotFound, ShoalError
from shoal.runtime.control import parse_ps, port_lines, top
from shoal.runtime.spec import ContainerSpec
from shoal.runtime.state import Container, ContainerState


def test_parse_ps_keeps_the_container_s_processes_and_their_threads() -> None:
    # moby's TestContainerTopParsePSOutput cases: a PID column anywhere, thread lines ("-") kept
    # after a process of the container, the command's spaces kept.
    out = ("UID   PID  PPID C STIME TTY TIME CMD\n"
           "root  1    0    0 10:00 ?   00:00:00 sh -c sleep 1000\n"
           "root  2    1    0 10:00 ?   00:00:00 sleep 1000\n"
           "root  99   1    0 10:00 ?   00:00:00 sshd: not ours\n")
    titles, rows = parse_ps(out, [1, 2])
    assert titles == ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    assert rows == [["root", "1", "0", "0", "10:00", "?", "00:00:00", "sh -c sleep 1000"],
                    ["root", "2", "1", "0", "10:00", "?", "00:00:00", "sleep 1000"]]
    titles, rows = parse_ps("PID COMMAND\n1 sh\n- -\n7 other\n- -\n", [1])
    assert rows == [["1", "sh"], ["-", "-"]]
    with pytest.raises(ShoalError, match="Couldn't find PID field in ps output"):
        parse_ps("UID CMD\nroot sh\n", [1])
    with pytest.raises(ShoalError, match="Unexpected pid 'x'"):
        parse_ps("PID CMD\nx sh\n", [1])


def test_top_refuses_ps_options_that_rename_the_pid_column() -> None:
    with pytest.raises(InvalidArgument, match='specifying "pid=PID" is not allowed'):
        top(None, "whatever", "-o pid=PID")  # type: ignore[arg-type] - refused before any lookup


def test_tabwriter_as_docker_top_prints() -> None:
    assert _go_tabwriter([["UID", "PID", "CMD"], ["root", "12345", "sleep 10"]]) == (
        "UID" + " " * 17 + "PID" + " " * 17 + "CMD\n"
        "root" + " " * 16 + "12345" + " " * 15 + "sleep 10\n")


def _container(ports: list[dict], status: str = "running") -> Container:
    return Container(id="c" * 64, name="web", created=0.0, image="img", image_id="sha256:x",
                     spec=ContainerSpec(image="img"), path="sh", args=[], config={}, runtime="crun",
                     dir=Path("/nonexistent"), state=ContainerState(status=status), network={"ports": ports})


def test_port_lines_in_natural_order_and_one_port() -> None:
    c = _container([
        {"target": 8080, "published": 18080, "protocol": "tcp", "host_ip": ""},
        {"target": 80, "published": 8000, "protocol": "tcp", "host_ip": "127.0.0.1"},
        {"target": 53, "published": 5353, "protocol": "udp", "host_ip": "::1"},
        {"target": 9, "published": 0, "protocol": "tcp", "host_ip": ""},  # exposed, not published
    ])
    assert port_lines(c) == ["53/udp -> [::1]:5353", "80/tcp -> 127.0.0.1:8000", "8080/tcp -> 0.0.0.0:18080"]
    assert port_lines(c, "80") == ["127.0.0.1:8000"]
    assert port_lines(c, "53/udp") == ["[::1]:5353"]
    with pytest.raises(NotFound, match="^no public port '9' published for web$"):
        port_lines(c, "9")
    assert port_lines(_container(c.network["ports"], status="exited")) == []


@pytest.mark.parametrize("arg,expected", [
    ("ctr:/etc/hosts", ("ctr", "/etc/hosts")),
    ("/abs/with:colon", ("", "/abs/with:colon")),
    ("./rel:colon", ("", "./rel:colon")),
    ("file", ("", "file")),
    ("ctr:", ("ctr", "")),
    ("-", ("", "-")),
])
def test_split_cp_arg_as_docker(arg: str, expected: tuple[str, str]) -> None:
    assert _split_cp_arg(arg) == expected


def test_commit_changes_as_docker_commit() -> None:
    base = {"Cmd": ["sh"], "Env": ["PATH=/bin", "A=0"], "WorkingDir": "/srv", "Labels": {"x": "1"}}
    cfg = apply_changes(base, ['CMD ["cat", "/f"]', "ENV A=1 B=2", "ENTRYPOINT echo hi", "EXPOSE 80 53/udp",
                               "LABEL y=2", "USER app", "WORKDIR sub", "VOLUME /data", "STOPSIGNAL SIGINT"])
    assert cfg["Cmd"] == ["cat", "/f"]
    assert cfg["Env"] == ["PATH=/bin", "A=1", "B=2"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c", "echo hi"]
    assert cfg["ExposedPorts"] == {"80/tcp": {}, "53/udp": {}}
    assert cfg["Labels"] == {"x": "1", "y": "2"}
    assert (cfg["User"], cfg["WorkingDir"], cfg["StopSignal"]) == ("app", "/srv/sub", "SIGINT")
    assert cfg["Volumes"] == {"/data": {}}
    assert base["Env"] == ["PATH=/bin", "A=0"]  # the container's own config is not changed
    for bad, word in (("RUN true", "RUN"), ("COPY a b", "COPY"), ("FROM x", "FROM")):
        with pytest.raises(InvalidArgument, match=f"^{word} is not a valid change command$"):
            apply_changes(base, [bad])
