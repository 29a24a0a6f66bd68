"""`--help` reads as docker/cli's: every flag has its help text, flags sorted and aligned as
pflag's FlagUsages, `Usage:  ...` lines, aliases, non-zero defaults shown."""

from __future__ import annotations

import argparse

import pytest

from shoal.cli import helptext
from shoal.cli.main import build_parser, main


@pytest.fixture(scope="module")
def tree() -> argparse.ArgumentParser:
    return build_parser(["__every_group__"])  # an unknown command loads every group


def test_every_option_of_every_command_has_help(tree):
    missing = [f"shoal {' '.join(path)} {action.option_strings[-1]}"
               for path, parser in helptext.walk(tree)
               for action in parser._actions
               if action.option_strings and not action.help]
    assert missing == []


def test_every_command_renders_a_usage_line_and_help(tree):
    count = 0
    for path, parser in helptext.walk(tree):
        text = parser.format_help()
        assert text.startswith(f"\nUsage:  shoal{''.join(' ' + p for p in path)}"), path
        count += 1
    assert count > 100  # the walk reached the leaves


# docker/cli 28's `docker ps --help` (docs/reference/commandline/container_ls.md), with shoal's
# name.
PS_HELP = """
Usage:  shoal ps [OPTIONS]

List containers

Aliases:
  shoal container ls, shoal container list, shoal container ps, shoal ps

Options:
  -a, --all             Show all containers (default shows just running)
  -f, --filter filter   Filter output based on conditions provided
      --format string   Format output using a custom template:
                        'table':            Print output in table format with column headers (default)
                        'table TEMPLATE':   Print output in table format using the given Go template
                        'json':             Print in JSON format
                        'TEMPLATE':         Print output using the given Go template.
                        Refer to https://docs.docker.com/go/formatting/ for more information about formatting output with templates
  -n, --last int        Show n last created containers (includes all states) (default -1)
  -l, --latest          Show the latest created container (includes all states)
      --no-trunc        Don't truncate output
  -q, --quiet           Only display container IDs
  -s, --size            Display total file sizes
"""


def test_ps_help_is_dockers(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["ps", "--help"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == PS_HELP


def test_group_help_lists_sorted_commands_and_points_at_help(capsys):
    with pytest.raises(SystemExit):
        main(["volume", "--help"])
    out = capsys.readouterr().out
    assert out.startswith("\nUsage:  shoal volume COMMAND\n\nManage volumes\n\nCommands:\n  create      Create a volume\n")
    lines = [line.split()[0] for line in out.split("Commands:\n")[1].split("\n\n")[0].splitlines()]
    assert lines == sorted(lines)
    assert out.endswith("\nRun 'shoal volume COMMAND --help' for more information on a command.\n")


def test_usage_lines_from_positionals_and_aliases(tree):
    stop = tree._subparsers._group_actions[0].choices["stop"]
    assert helptext.usage_line(stop) == "shoal stop [OPTIONS] CONTAINER [CONTAINER...]"
    run = tree._subparsers._group_actions[0].choices["run"]
    assert helptext.usage_line(run) == "shoal run [OPTIONS] IMAGE [COMMAND] [ARG...]"
    images = tree._subparsers._group_actions[0].choices["images"]
    assert helptext.aliases(images)[-1] == "shoal images"
    assert "shoal image ls" in helptext.aliases(images)


def test_pflag_alignment_and_defaults():
    p = helptext.DockerArgumentParser(prog="shoal x")
    p.add_argument("-s", "--signal", default="KILL", help="Signal to send to the container")
    p.add_argument("--replicas", type=int, default=1, help="Number of tasks")
    p.add_argument("--tty", action="store_true", help="Allocate a pseudo-TTY")
    p.add_argument("--env", action="append", default=[], help="Set environment variables")
    assert helptext.flag_usages(p).splitlines() == [
        "      --env list        Set environment variables",
        "      --replicas int    Number of tasks (default 1)",
        '  -s, --signal string   Signal to send to the container (default "KILL")',
        "      --tty             Allocate a pseudo-TTY",
    ]


@pytest.mark.parametrize("argv,code,text", [
    (["ps", "--nope"], 125, "unknown flag: --nope\n\nUsage:  shoal ps [OPTIONS]\n\nRun 'shoal ps --help' for more information\n"),
    (["ps", "-z"], 125, "unknown shorthand flag: 'z' in -z\n\nUsage:  shoal ps [OPTIONS]\n\n"
                        "Run 'shoal ps --help' for more information\n"),
    (["stop"], 1, "shoal: 'shoal stop' requires at least 1 argument\n\n"
                  "Usage:  shoal stop [OPTIONS] CONTAINER [CONTAINER...]\n\nSee 'shoal stop --help' for more information\n"),
    (["ps", "extra"], 1, "shoal: 'shoal ps' accepts no arguments\n\nUsage:  shoal ps [OPTIONS]\n\n"
                         "Run 'shoal ps --help' for more information\n"),
    # cli/required.go: ExactArgs, RequiresRangeArgs and RequiresMaxArgs (`Run`), by the command's arguments
    (["rename", "a"], 1, "shoal: 'shoal rename' requires 2 arguments\n\nUsage:  shoal rename CONTAINER NEW_NAME\n\n"
                         "Run 'shoal rename --help' for more information\n"),
    (["service", "update", "a", "b"], 1, "shoal: 'shoal service update' requires 1 argument\n\n"
                                         "Usage:  shoal service update [OPTIONS] SERVICE\n\n"
                                         "Run 'shoal service update --help' for more information\n"),
    (["secret", "create"], 1, "shoal: 'shoal secret create' requires at least 1 and at most 2 arguments\n\n"
                              "Usage:  shoal secret create [OPTIONS] SECRET [file|-]\n\n"
                              "Run 'shoal secret create --help' for more information\n"),
    (["volume", "create", "a", "b"], 1, "shoal: 'shoal volume create' requires at most 1 argument\n\n"
                                        "Usage:  shoal volume create [OPTIONS] [VOLUME]\n\n"
                                        "Run 'shoal volume create --help' for more information\n"),
    (["top"], 1, "shoal: 'shoal top' requires at least 1 argument\n\nUsage:  shoal top CONTAINER [ps OPTIONS]\n\n"
                 "See 'shoal top --help' for more information\n"),
    (["ps", "-n", "x"], 125, 'invalid argument "x" for "-n, --last" flag: strconv.ParseInt: parsing "x": invalid syntax'
                             "\n\nUsage:  shoal ps [OPTIONS]\n\nRun 'shoal ps --help' for more information\n"),
    (["attach", "--sig-proxy=x", "c"], 125, 'invalid argument "x" for "--sig-proxy" flag: strconv.ParseBool: parsing "x": '
                                            "invalid syntax\n\nUsage:  shoal attach [OPTIONS] CONTAINER\n\n"
                                            "Run 'shoal attach --help' for more information\n"),
    (["ps", "--format"], 125, "flag needs an argument: --format\n\nUsage:  shoal ps [OPTIONS]\n\n"
                              "Run 'shoal ps --help' for more information\n"),
    (["container", "nosuch"], 1, "shoal: unknown command: shoal container nosuch\n\n"
                                 "Run 'shoal container --help' for more information\n"),
])
def test_usage_errors_in_docker_cli_words(capsys, argv, code, text):
    """docker/cli's FlagErrorFunc (exit 125) and cli/required.go's argument counts (exit 1)."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == code
    assert capsys.readouterr().err == text


def test_flag_value_refused_by_its_command_reads_as_pflags(capsys, shoal_root) -> None:
    """A value the command itself refuses (a filter without `=`) is printed as docker/cli's
    FlagErrorFunc prints pflag's refusals: no `Error:` in front, the Usage line, exit 125."""
    assert main(["volume", "ls", "-f", "dangling"]) == 125
    assert capsys.readouterr().err == (
        'invalid argument "dangling" for "-f, --filter" flag: bad format of filter (expected name=value)\n\n'
        "Usage:  shoal volume ls [OPTIONS]\n\nRun 'shoal volume ls --help' for more information\n")


def test_pflag_bools_that_take_false_show_no_type(capsys) -> None:
    """--sig-proxy, commit's --pause and history's --human are pflag bools defaulting to true
    (docker's `--sig-proxy=false`): no type word after them; restart's flag is --timeout."""
    with pytest.raises(SystemExit):
        main(["attach", "--help"])
    assert "      --sig-proxy            Proxy all received signals to the process (default true)\n" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["restart", "--help"])
    assert "  -t, --timeout int     Seconds to wait before killing the container\n" in capsys.readouterr().out
