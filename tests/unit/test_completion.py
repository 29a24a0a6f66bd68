"""`shoal completion bash|zsh|fish`: the scripts come from the argparse tree; bash parses the
bash one and its completion function, run in a real bash, completes commands, subcommands,
aliases and flags, and skips the values of flags that take one."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shoal.cli import completion, helptext
from shoal.cli.main import build_parser

BASH = shutil.which("bash")
pytestmark = pytest.mark.skipif(BASH is None, reason="needs bash")


@pytest.fixture(scope="module")
def script(tmp_path_factory) -> Path:
    out = subprocess.run([sys.executable, "-m", "shoal", "completion", "bash"], capture_output=True, text=True,
                         check=True).stdout
    path = tmp_path_factory.mktemp("completion") / "shoal.bash"
    path.write_text(out)
    return path


def complete(script: Path, *words: str) -> list[str]:
    """COMPREPLY for the command line `words` (the last one being the word under the cursor)."""
    quoted = " ".join("'" + w.replace("'", "'\\''") + "'" for w in words)
    program = (f"source {script}\nCOMP_WORDS=({quoted})\nCOMP_CWORD={len(words) - 1}\n"
               "_shoal\nprintf '%s\\n' \"${COMPREPLY[@]}\"\n")
    proc = subprocess.run([BASH, "--norc", "--noprofile", "-c", program], capture_output=True, text=True,
                          timeout=30, env={"PATH": "/nonexistent"})  # no shoal: names stay out of it
    assert proc.returncode == 0, proc.stderr
    return [line for line in proc.stdout.splitlines() if line]


def test_bash_parses_the_script(script):
    proc = subprocess.run([BASH, "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "complete -o default -F _shoal shoal" in script.read_text()


def test_completes_top_level_commands_and_subcommands(script):
    assert complete(script, "shoal", "cont") == ["container", "context"]
    assert complete(script, "shoal", "container", "l") == ["ls", "list", "logs"]
    assert sorted(complete(script, "shoal", "volume", "")) == ["create", "inspect", "list", "ls", "prune", "remove",
                                                              "rm"]
    assert complete(script, "shoal", "completion", "") == ["bash", "fish", "zsh"]


def test_completes_flags_of_the_command_path(script):
    assert complete(script, "shoal", "ps", "--fi") == ["--filter"]
    assert complete(script, "shoal", "container", "ls", "--no") == ["--no-trunc"]
    assert "--replicas" in complete(script, "shoal", "service", "create", "--rep")


def test_skips_the_values_of_flags_and_global_options(script):
    # -H's value is not a command; the command after it still completes
    assert complete(script, "shoal", "-H", "unix:///x", "netw") == ["network"]
    # after a flag that takes a value, nothing is offered for the value
    assert complete(script, "shoal", "ps", "--format", "") == []
    # a subcommand's name typed as a positional (a container called `ls`) does not move the path
    assert complete(script, "shoal", "container", "stop", "ls", "--ti") == ["--timeout", "--time"]


def test_every_command_of_the_tree_is_in_every_script():
    root = build_parser(["__completion__"])
    bash, fish, zsh = completion.bash_script(root), completion.fish_script(root), completion.zsh_script(root)
    assert zsh.startswith("#compdef shoal\n") and "bashcompinit" in zsh and "_shoal()" in zsh
    for path, parser in helptext.walk(root):
        if not path or not getattr(parser, "short_help", ""):
            continue
        assert f"__shoal_at {' '.join(path[:-1])}".strip() in fish
        assert path[-1] in bash
        for action in parser._actions:
            for option in action.option_strings:
                if option.startswith("--") and action.help and action.help != argparse.SUPPRESS:
                    assert option in bash, (path, option)
                    assert f"-l {option[2:]}" in fish, (path, option)


def test_swarm_names_are_asked_only_when_shoalds_socket_is_there(script, tmp_path):
    """A TAB must not start shoald: __shoal_up looks for its socket where the CLI would."""
    import socket

    def up(env: dict[str, str]) -> int:
        return subprocess.run([BASH, "--norc", "--noprofile", "-c", f"source {script}; __shoal_up"],
                              env={"PATH": "/usr/bin:/bin", **env}, timeout=30).returncode

    run = tmp_path / "run"
    run.mkdir()
    assert up({"SHOAL_RUN": str(run)}) == 1
    assert up({"SHOAL_ROOT": str(tmp_path)}) == 1
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        listener.bind(str(run / "shoal.sock"))
        assert up({"SHOAL_RUN": str(run)}) == 0
        assert up({"SHOAL_ROOT": str(tmp_path)}) == 0
        assert up({"SHOAL_SOCKET": str(tmp_path / "other.sock"), "SHOAL_RUN": str(run)}) == 1
    finally:
        listener.close()
    # `secret create NAME` names a new secret: nothing to complete; `secret rm` lists them
    kinds = {n.path: n.kind for n in completion.nodes(build_parser(["__completion__"]))}
    assert kinds[("secret", "create")] == "" and kinds[("secret", "rm")] == "secret"
    assert kinds[("service", "create")] == "image" and kinds[("service", "ps")] == "service"


@pytest.mark.skipif(shutil.which("zsh") is None, reason="needs zsh")
def test_zsh_parses_its_script_and_finds_the_command_path(tmp_path):
    """zsh runs the bash function through bashcompinit (1-based arrays, `path` tied to PATH);
    zsh's own matching filters the words by the prefix, so all of the path's words come back."""
    script = tmp_path / "_shoal"
    script.write_text(completion.zsh_script(build_parser(["__completion__"])))
    assert subprocess.run([str(shutil.which("zsh")), "-n", str(script)], capture_output=True).returncode == 0
    program = (f"source {script}; COMP_WORDS=(shoal -H unix:///x container l); COMP_CWORD=4; _shoal; "
               "print -l -- $COMPREPLY")
    out = subprocess.run([str(shutil.which("zsh")), "-f", "-c", program], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/bin:/bin"}).stdout.split()
    assert {"ls", "logs", "prune"} <= set(out) and "images" not in out


@pytest.mark.skipif(shutil.which("fish") is None, reason="needs fish")
def test_fish_completes_commands_subcommands_and_flags(tmp_path):
    script = tmp_path / "shoal.fish"
    script.write_text(completion.fish_script(build_parser(["__completion__"])))

    def complete_fish(line: str) -> list[str]:
        proc = subprocess.run([str(shutil.which("fish")), "--no-config", "-c", f"source {script}; complete -C '{line}'"],
                              capture_output=True, text=True, timeout=60, env={"PATH": "/nonexistent"})
        assert proc.returncode == 0, proc.stderr
        return [row.split("\t")[0] for row in proc.stdout.splitlines()]

    assert complete_fish("shoal cont") == ["container", "context"]
    assert complete_fish("shoal container l") == ["list", "logs", "ls"]
    assert complete_fish("shoal ps --fi") == ["--filter"]
    assert complete_fish("shoal volume ls --fo") == ["--format"]
