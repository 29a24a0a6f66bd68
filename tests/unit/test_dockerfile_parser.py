"""The Dockerfile grammar: continuations, escape directive, comments, JSON forms, heredocs,
flags, and errors that name file and line."""

from __future__ import annotations

import pytest

from shoal.build import dockerfile as df
from shoal.build.dockerfile import DockerfileError, parse


def cmds(text: str) -> list[df.Command]:
    return parse(text).stages[0].commands


def test_seed_dockerfile() -> None:
    text = (
        "# Use an official Python runtime as a parent image\nFROM python:2.7-slim\n\n"
        "WORKDIR /app\nCOPY . /app\nRUN pip install --trusted-host pypi.python.org -r requirements.txt\n"
        "EXPOSE 80\nENV NAME World\nCMD [\"python\", \"app.py\"]\n"
    )
    d = parse(text)
    assert len(d.stages) == 1
    s = d.stages[0]
    assert s.base == "python:2.7-slim" and s.code == "FROM python:2.7-slim" and s.line == 2
    names = [c.name for c in s.commands]
    assert names == ["workdir", "copy", "run", "expose", "env", "cmd"]
    env = s.commands[4]
    assert isinstance(env, df.KeyValueCommand) and env.pairs == [("NAME", "World")]
    cmd = s.commands[5]
    assert isinstance(cmd, df.ShellFormCommand) and cmd.cmdline == ["python", "app.py"] and not cmd.prepend_shell
    assert s.commands[2].code == "RUN pip install --trusted-host pypi.python.org -r requirements.txt"


def test_continuations_and_comments_inside() -> None:
    c = cmds("FROM x\nRUN echo a \\\n# a comment in the middle\n    && echo b\nUSER app\n")
    assert isinstance(c[0], df.ShellFormCommand)
    assert c[0].cmdline == ["echo a     && echo b"]
    assert c[1].line == 5


def test_escape_directive_backtick() -> None:
    d = parse("# escape=`\nFROM x\nRUN dir c:\\ `\n  && echo hi\n")
    assert d.escape == "`"
    assert d.stages[0].commands[0].cmdline == ["dir c:\\   && echo hi"]  # type: ignore[attr-defined]


def test_directive_after_instruction_is_a_comment() -> None:
    d = parse("FROM x\n# escape=`\nRUN a \\\n b\n")
    assert d.escape == "\\"
    assert d.stages[0].commands[0].cmdline == ["a  b"]  # type: ignore[attr-defined]


def test_meta_args_and_stages() -> None:
    d = parse("ARG V=1\nARG BASE\nFROM busybox AS Build\nRUN true\nFROM build\nCOPY --from=build /a /b\n")
    assert [a.args for a in d.meta_args] == [[("V", "1")], [("BASE", None)]]
    assert [s.name for s in d.stages] == ["build", ""]
    assert d.stage_index("BUILD") == 0
    copy = d.stages[1].commands[0]
    assert isinstance(copy, df.CopyCommand) and copy.from_stage == "build" and copy.sources == ["/a"]


def test_env_forms() -> None:
    c = cmds('FROM x\nENV A=1 B="two words" C=\\$x\nENV D some value here\n')
    assert c[0].pairs == [("A", "1"), ("B", '"two words"'), ("C", "\\$x")]  # type: ignore[attr-defined]
    assert c[1].pairs == [("D", "some value here")]  # type: ignore[attr-defined]


def test_heredoc_run_and_copy() -> None:
    text = "FROM x\nRUN <<EOF\necho one\necho two\nEOF\nCOPY <<-'END' /etc/x.conf\n\tkey=$HOME\nEND\nUSER app\n"
    c = cmds(text)
    run = c[0]
    assert isinstance(run, df.ShellFormCommand)
    assert run.cmdline == ["<<EOF"] and run.files[0].content == "echo one\necho two\n"
    copy = c[1]
    assert isinstance(copy, df.CopyCommand)
    assert copy.sources == [] and copy.dest == "/etc/x.conf"
    assert copy.contents == [df.SourceContent("END", "key=$HOME\n", False)]
    assert c[2].line == 9


def test_heredoc_unterminated() -> None:
    with pytest.raises(DockerfileError, match=r"^Dockerfile:2: unterminated heredoc$"):
        parse("FROM x\nRUN <<EOF\necho\n")


def test_unknown_instruction_names_line() -> None:
    with pytest.raises(DockerfileError, match=r"^Dockerfile:4: unknown instruction: RUNN$"):
        parse("FROM busybox\nRUN true\n\nRUNN echo\n")


def test_errors_name_the_given_file() -> None:
    with pytest.raises(DockerfileError, match=r"^build/Dockerfile.dev:2: COPY requires at least two arguments"):
        parse("FROM x\nCOPY onlyone\n", "build/Dockerfile.dev")
    with pytest.raises(DockerfileError, match="FROM requires either one or three arguments"):
        parse("FROM a b\n")
    with pytest.raises(DockerfileError, match=":1: no build stage in current context"):
        parse("RUN true\n")
    with pytest.raises(DockerfileError, match="file with no instructions"):
        parse("# nothing\n\n")
    with pytest.raises(DockerfileError, match=":2: unknown flag: form"):
        parse("FROM x\nCOPY --form=a b c\n")
    with pytest.raises(DockerfileError, match="SHELL requires the arguments to be in JSON form"):
        parse("FROM x\nSHELL /bin/bash -c\n")


def test_json_must_be_strings() -> None:
    with pytest.raises(DockerfileError, match="arrays must be comprised of strings only"):
        parse('FROM x\nCMD ["a", 1]\n')
    # Invalid JSON falls back to shell form, as Docker does.
    c = cmds("FROM x\nCMD [not json\n")
    assert c[0].cmdline == ["[not json"] and c[0].prepend_shell  # type: ignore[attr-defined]


def test_healthcheck_and_others() -> None:
    c = cmds(
        "FROM x\nHEALTHCHECK --interval=5s --retries=3 CMD wget -q localhost\nHEALTHCHECK NONE\n"
        "EXPOSE 8080/udp 80\nVOLUME [\"/data\", \"/logs\"]\nSTOPSIGNAL SIGTERM\nONBUILD RUN echo hi\n"
        "ENTRYPOINT []\nLABEL a=b \"c d\"=e\n"
    )
    hc = c[0]
    assert isinstance(hc, df.HealthcheckCommand)
    assert hc.test == ["CMD-SHELL", "wget -q localhost"] and hc.interval == 5_000_000_000 and hc.retries == 3
    assert c[1].test == ["NONE"]  # type: ignore[attr-defined]
    assert c[2].values == ["80", "8080/udp"]  # type: ignore[attr-defined]
    assert c[3].values == ["/data", "/logs"]  # type: ignore[attr-defined]
    assert c[5].expression == "RUN echo hi"  # type: ignore[attr-defined]
    assert c[6].cmdline is None  # type: ignore[attr-defined]
    assert c[7].pairs == [("a", "b"), ('"c d"', "e")]  # type: ignore[attr-defined]


def test_onbuild_rejects_from() -> None:
    with pytest.raises(DockerfileError, match="FROM isn't allowed as an ONBUILD trigger"):
        parse("FROM x\nONBUILD FROM y\n")


def test_go_duration() -> None:
    assert df.parse_go_duration("1m30s") == 90_000_000_000
    assert df.parse_go_duration("250ms") == 250_000_000
    with pytest.raises(ValueError):
        df.parse_go_duration("5 seconds")
