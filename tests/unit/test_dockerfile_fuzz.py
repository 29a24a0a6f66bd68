"""Thousands of mutated Dockerfiles: each parses, and its instructions pass or fail the
builder's own checks, with a one-line ShoalError, never a traceback. The seeds are buildkit's
parser test files (the cases test_dockerfile_buildkit_cases.py holds) and a file using every
instruction; the checks are the ones the builder makes before it touches anything."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shoal.build import builder as b
from shoal.build import dockerfile as dfmod
from shoal.build import fs
from shoal.build.shell import Lex, ShellError
from shoal.errors import ShoalError
from test_dockerfile_buildkit_cases import CASES

EVERYTHING = """\
# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM ${BASE} AS build
ENV A=1 B="two words"
LABEL x=y
ARG N=3
WORKDIR /app/../src
USER app:staff
EXPOSE 80 443/tcp 53/udp 8000-8010
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=1s --retries=3 CMD true
VOLUME ["/data"]
SHELL ["/bin/sh", "-c"]
COPY --chown=app:staff --chmod=755 a b /dst/
ADD --chown=1:1 x.tar /
COPY <<EOF /etc/motd
hello
EOF
RUN <<EOF
#!/bin/sh
echo hi
EOF
RUN echo $A && \\
    echo done
ONBUILD RUN true
CMD ["run"]
ENTRYPOINT /bin/sh
FROM build
COPY --from=build /a /b
MAINTAINER me
"""
SEEDS = [EVERYTHING] + [df for df, _ in CASES.values()]
# SHOAL_FUZZ_EXAMPLES=5000 for a longer run; the default keeps the suite fast.
EXAMPLES = int(os.environ.get("SHOAL_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

pieces = st.sampled_from([
    "", " ", "\n", "\\\n", "\t", "\\", "`", "$", "${", "${A:-x}", "${A:?boom}", "'", '"', "[", "]",
    "[\"a\",", "<<", "<<EOF", "<<-EOF\n", "<<'X'", "#", "# escape=`\n", "--", "--chmod=", "--chown=",
    "--from=", "--interval=", "=", ":", "/", "..", "-", "²", "٣", "\x00", "é", "9" * 5000, "1" * 30,
    "SIG", "RTMIN+", "0", "-1", "65536", "/udp", "/xyz", "1-", "-2", "FROM", "RUN", "COPY", "ADD",
    "EXPOSE", "STOPSIGNAL", "HEALTHCHECK", "ONBUILD", "WORKDIR", "ENV", "ARG", "USER", "CMD",
])


def _check(text: str) -> None:
    """What `shoal build` decides about a Dockerfile before running anything."""
    try:
        df = dfmod.parse(text)
        lex = Lex(df.escape)
        for stage in df.stages:
            for cmd in stage.commands:
                _check_command(lex, cmd)
    except ShoalError as exc:
        assert str(exc) and "\n" not in str(exc), repr(str(exc))


def _check_command(lex: Lex, cmd: dfmod.Command) -> None:
    env = {"A": "1"}
    try:
        if isinstance(cmd, dfmod.WordCommand) and cmd.name == "stopsignal":
            b.check_stop_signal(lex.process_word(cmd.value, env))
        elif isinstance(cmd, dfmod.WordCommand) and cmd.name == "workdir":
            b.normalize_workdir("/", lex.process_word(cmd.value, env))
        elif isinstance(cmd, dfmod.ListCommand) and cmd.name == "expose":
            words: list[str] = []
            for value in cmd.values:
                words += lex.process_words(value, env)
            b._expose_ports(words)
        elif isinstance(cmd, dfmod.CopyCommand):
            if cmd.chmod:
                fs.parse_chmod(lex.process_word(cmd.chmod, env))
            for src in cmd.sources:
                lex.process_word(src, env)
            b.normalize_dest("/", lex.process_word(cmd.dest, env))
        elif isinstance(cmd, dfmod.KeyValueCommand):
            for key, value in cmd.pairs:
                lex.process_word(key, env), lex.process_word(value, env)
    except (ShoalError, ShellError) as exc:   # the builder reports a ShellError as BuildFailed
        assert str(exc) and "\n" not in str(exc), repr(str(exc))


@FUZZ
@given(seed=st.sampled_from(SEEDS), data=st.data())
@example(seed="FROM a\nSTOPSIGNAL ²\n", data=None)
@example(seed="FROM a\nEXPOSE " + "9" * 5000 + "\n", data=None)
@example(seed="FROM a\nEXPOSE 1-" + "9" * 5000 + "/tcp\n", data=None)
@example(seed="FROM a\nCOPY <<../x /\nhi\n../x\n", data=None)
def test_mutated_dockerfiles(seed: str, data: st.DataObject | None) -> None:
    text = seed
    for _ in range(data.draw(st.integers(1, 6)) if data is not None else 0):
        pos = data.draw(st.integers(0, len(text)))
        kind = data.draw(st.integers(0, 2))
        piece = data.draw(st.one_of(pieces, st.text(max_size=4)))
        if kind == 0:
            text = text[:pos] + piece + text[pos:]
        elif kind == 1:
            text = text[:pos] + text[pos + len(piece) + 1:]
        else:
            text = text[:pos] + piece + text[pos + len(piece):]
    _check(text)


@settings(FUZZ, max_examples=max(EXAMPLES // 2, 1))
@given(lines=st.lists(st.tuples(st.sampled_from(sorted(dfmod.INSTRUCTIONS) + ["from"]),
                                st.lists(st.one_of(pieces, st.text(max_size=8)), max_size=4)),
                      max_size=6))
def test_random_instructions(lines: list[tuple[str, list[str]]]) -> None:
    _check("FROM scratch\n" + "\n".join(f"{name.upper()} {' '.join(words)}" for name, words in lines))


@pytest.mark.parametrize("signal", ["²", "٣", "9" * 5000, "SIG²", "RTMIN+²", "RTMIN+" + "9" * 5000])
def test_bad_stop_signals_are_errors(signal: str) -> None:
    with pytest.raises(ShoalError, match="Invalid signal"):
        b.check_stop_signal(signal)


@pytest.mark.parametrize("port", ["9" * 5000, "1-" + "9" * 5000, "٣", "²", "80-٣"])
def test_bad_exposed_ports_are_errors(port: str) -> None:
    with pytest.raises(ShoalError, match="invalid containerPort"):
        b._expose_ports([port])
