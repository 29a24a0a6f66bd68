"""Variable expansion and word splitting, checked against cases from buildkit's lexer tests."""

from __future__ import annotations

import pytest

from shoal.build.shell import Lex, ShellError

ENV = {"PWD": "/home", "SHELL": "bash", "KOREAN": "한국어", "EMPTY": "", "NESTED": "${PWD}"}


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("hello", "hello"),
        ("he'll'o", "hello"),
        ('he"ll"o', "hello"),
        ("'$PWD'", "$PWD"),
        ('"$PWD"', "/home"),
        ("\\$PWD", "$PWD"),
        ("${PWD}x", "/homex"),
        ("$PWD/x", "/home/x"),
        ("${EMPTY:-def}", "def"),
        ("${EMPTY-def}", ""),
        ("${UNSET-def}", "def"),
        ("${UNSET:-${PWD}/d}", "/home/d"),
        ("${PWD:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET:+alt}", ""),
        ("${SHELL:+${PWD:-x}y}", "/homey"),
        ("${KOREAN}", "한국어"),
        ("${NESTED}", "${PWD}"),        # values are not expanded twice
        ("${PWD#/}", "home"),
        ("${PWD%me}", "/ho"),
        ("${SHELL/a/A}", "bAsh"),
        ("$", "$"),
        ("a$", "a$"),
        ("$1x", "x"),
    ],
)
def test_process_word(word: str, expected: str) -> None:
    assert Lex().process_word(word, ENV) == expected


def test_process_words_splits_after_expansion() -> None:
    env = {"L": "a b  c"}
    assert Lex().process_words('x $L "$L" y', env) == ["x", "a", "b", "c", "a b  c", "y"]


def test_errors() -> None:
    with pytest.raises(ShellError, match="matching double-quote"):
        Lex().process_word('"open', {})
    with pytest.raises(ShellError, match="missing '}'"):
        Lex().process_word("${A", {})
    with pytest.raises(ShellError, match="bad substitution"):
        Lex().process_word("${}", {})
    with pytest.raises(ShellError, match="A: is not allowed to be unset"):
        Lex().process_word("${A?}", {})
    with pytest.raises(ShellError, match="A: must be set"):
        Lex().process_word("${A:?must be set}", {"A": ""})


def test_backtick_escape() -> None:
    assert Lex("`").process_word("a`$b", {"b": "x"}) == "a$b"
    assert Lex("`").process_word("c:\\dir", {}) == "c:\\dir"
