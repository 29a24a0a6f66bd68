"""Interpolation, .env parsing and the precedence of process env, .env and --env-file."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.compose.api import load_config, load_stack
from shoal.compose.envfile import EnvFileError, parse_env
from shoal.compose.interpolate import InvalidTemplate, MissingRequired, substitute
from shoal.compose.template import InvalidTemplateError
from shoal.compose.template import substitute as docker_substitute
from shoal.errors import ShoalError

FIXTURES = Path(__file__).parent / "fixtures" / "compose"
ENV = {"SET": "value", "EMPTY": "", "OTHER": "x"}


# --- compose files: docker/cli's template.go -----------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$SET", "value"),
        ("${SET}", "value"),
        ("pre-${SET}-post", "pre-value-post"),
        ("${UNSET}", ""),
        ("${UNSET:-default}", "default"),
        ("${EMPTY:-default}", "default"),
        ("${SET:-default}", "value"),
        ("${UNSET-default}", "default"),
        ("${EMPTY-default}", ""),
        ("${SET:?must be set}", "value"),
        ("${EMPTY?only unset fails}", ""),
        ("$$", "$"),
        ("$$SET", "$SET"),
        ("$${SET}", "${SET}"),
        # A default is used as written, never substituted again (a bcrypt hash in a label).
        ("${PASS:-$2y$05$oZcj4yQ1PqNQ}", "$2y$05$oZcj4yQ1PqNQ"),
        ("admin:${PASS:-$apr1$ruca84Hq$mbjdMZBAG.KWn7vfN/SNK/}",
         "admin:$apr1$ruca84Hq$mbjdMZBAG.KWn7vfN/SNK/"),
        ("${UNSET:-${OTHER}}", "${OTHER}"),  # no nesting: the default ends at the first }
        ("${UNSET:-$SET}", "$SET"),
        # Go's regexp takes the default form after an unbraced name too.
        ("$SET-dir", "value"),
        ("$UNSET:-fallback", "fallback"),
        ("${set}", "value"),  # the pattern is case-insensitive, the lookup is not: unset
        # The error is the last variable's: an earlier failure is forgotten (Go's shared err).
        ("${UNSET:?boom} $SET", " value"),
    ],
)
def test_docker_template_forms(template: str, expected: str) -> None:
    env = {**ENV, "set": "value"}
    assert docker_substitute(template, env.get) == expected


@pytest.mark.parametrize("template", ["${", "${SET", "${}", "${9X}", "${SET!}", "${SET:+alt}",
                                      "${SET+alt}", "$1", "a $ b", "${SET:=x}", "${ SET}"])
def test_docker_invalid_templates(template: str) -> None:
    with pytest.raises(InvalidTemplateError) as info:
        docker_substitute(template, ENV.get)
    assert info.value.template == template


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("${UNSET:?}", "required variable UNSET is missing a value: "),
        ("${UNSET?}", "required variable UNSET is missing a value: "),
        ("${EMPTY:?}", "required variable EMPTY is missing a value: "),
        ("${UNSET:?please set it}", "required variable UNSET is missing a value: please set it"),
    ],
)
def test_docker_required_errors(template: str, message: str) -> None:
    with pytest.raises(InvalidTemplateError) as info:
        docker_substitute(template, ENV.get)
    assert info.value.template == message


def test_bcrypt_default_survives_in_a_label(tmp_path: Path) -> None:
    compose = tmp_path / "c.yml"
    compose.write_text(
        "version: '3.8'\nservices:\n  web:\n    image: traefik\n    deploy:\n      labels:\n"
        "        - traefik.http.middlewares.auth.basicauth.users=admin:${HASHED_PASSWORD:-"
        "$$2y$$05$$oZcj4}\n"
        "        - plain=${HASHED_PASSWORD:-$2y$05$oZcj4yQ1PqNQ}\n")
    stack = load_stack([compose], "app", environ={}, warn=lambda m: None)
    labels = stack.services["app_web"].labels
    assert labels["traefik.http.middlewares.auth.basicauth.users"] == "admin:$$2y$$05$$oZcj4"
    assert labels["plain"] == "$2y$05$oZcj4yQ1PqNQ"


# --- .env files: compose-go's template (interpolate.substitute) -----------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$SET", "value"),
        ("${SET}", "value"),
        ("pre-${SET}-post", "pre-value-post"),
        ("$SET$OTHER", "valuex"),
        ("${UNSET}", ""),
        ("$UNSET", ""),
        ("${UNSET:-default}", "default"),
        ("${EMPTY:-default}", "default"),
        ("${SET:-default}", "value"),
        ("${UNSET-default}", "default"),
        ("${EMPTY-default}", ""),
        ("${SET:+alt}", "alt"),
        ("${EMPTY:+alt}", ""),
        ("${UNSET:+alt}", ""),
        ("${EMPTY+alt}", "alt"),
        ("${UNSET+alt}", ""),
        ("${SET:?must be set}", "value"),
        ("${EMPTY?only unset fails}", ""),
        ("$$", "$"),
        ("$$SET", "$SET"),
        ("$${SET}", "${SET}"),
        ("cost: $$5", "cost: $5"),
        ("${UNSET:-${OTHER}}", "x"),
        ("${UNSET:-${ALSO_UNSET:-deep}}", "deep"),
        ("${UNSET:-a ${SET} b}", "a value b"),
        ("${SET:+[${OTHER}]}", "[x]"),
        ("${UNSET:-{braces}}", "{braces}"),
        ("${UNSET:-}", ""),
        ("$1 and $ alone", "$1 and $ alone"),
        ("${set}", ""),  # names are case-sensitive
        ("${_under_score9:-u}", "u"),
    ],
)
def test_every_form(template: str, expected: str) -> None:
    assert substitute(template, ENV.get) == expected


@pytest.mark.parametrize("template", ["${", "${SET", "${}", "${9X}", "${SET!}", "${SET:}",
                                      "${SET:=x}", "${ SET}"])
def test_invalid_templates(template: str) -> None:
    with pytest.raises(InvalidTemplate):
        substitute(template, ENV.get)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("${UNSET:?}", "required variable UNSET is missing a value"),
        ("${UNSET?}", "required variable UNSET is missing a value"),
        ("${EMPTY:?}", "required variable EMPTY is missing a value"),
        ("${UNSET:?please set it}", "required variable UNSET is missing a value: please set it"),
        ("${UNSET:?need ${SET}}", "required variable UNSET is missing a value: need value"),
        ("${UNSET:-${UNSET2:?inner}}", "required variable UNSET2 is missing a value: inner"),
    ],
)
def test_required_errors(template: str, message: str) -> None:
    with pytest.raises(MissingRequired) as info:
        substitute(template, ENV.get)
    assert str(info.value) == message


def test_unset_variables_are_reported_once_each() -> None:
    seen: list[str] = []
    substitute("$A ${A} ${B:-x}", ENV.get, seen.append)
    assert seen == ["A", "A"]  # defaults are not "unset" uses


def test_interpolated_file_and_casts() -> None:
    warnings: list[str] = []
    config = load_config([FIXTURES / "interpolated.yml"],
                         environ={"TAG": "v2", "REPLICAS": "3", "MODE": ""},
                         warn=warnings.append)
    web = config["services"]["web"]
    assert web["image"] == "web:v2"
    assert web["deploy"]["replicas"] == 3  # cast to an integer, as compose-go does
    assert web["environment"] == {"GREETING": "", "PRICE": "$5", "MODE": "", "ALT": "v2"}
    # docker stack deploy says nothing of the unset GREETING (docker/cli's loader has no such
    # warning; docker 28.2.2 deploys swarmprom's weave-compose.yml without TOKEN silently)
    assert warnings == []


def test_missing_required_variable_names_file_line_and_key() -> None:
    with pytest.raises(ShoalError) as info:
        load_config([FIXTURES / "interpolated.yml"], environ={}, warn=lambda m: None)
    assert str(info.value) == (
        f"{FIXTURES / 'interpolated.yml'}:3: services.web.image: invalid interpolation format: "
        '"required variable TAG is missing a value: TAG must be set"; '
        "you may need to escape any $ with another $")


def test_bad_cast_names_the_key(tmp_path: Path) -> None:
    compose = tmp_path / "c.yml"
    compose.write_text("services:\n  web:\n    image: x\n    deploy:\n      replicas: ${N}\n")
    with pytest.raises(ShoalError) as info:
        load_config([compose], environ={"N": "many"}, warn=lambda m: None)
    assert "c.yml:5: services.web.deploy.replicas: failed to cast to expected type" in str(
        info.value)


def test_invalid_template_in_file(tmp_path: Path) -> None:
    compose = tmp_path / "c.yml"
    compose.write_text("services:\n  web:\n    image: 'x:${TAG'\n")
    with pytest.raises(ShoalError) as info:
        load_config([compose], environ={}, warn=lambda m: None)
    assert "c.yml:3: services.web.image: invalid interpolation format" in str(info.value)
    assert "escape any $ with another $" in str(info.value)


def test_keys_are_not_interpolated(tmp_path: Path) -> None:
    compose = tmp_path / "c.yml"
    compose.write_text("services:\n  web:\n    image: x\n    labels:\n      $KEY: $VAL\n")
    config = load_config([compose], environ={"KEY": "k", "VAL": "v"}, warn=lambda m: None)
    assert config["services"]["web"]["labels"] == {"$KEY": "v"}


def test_skip_interpolation_keeps_text(tmp_path: Path) -> None:
    config = load_config([FIXTURES / "interpolated.yml"], environ={}, warn=lambda m: None,
                         interpolation=False)
    assert config["services"]["web"]["image"] == "${IMAGE:-web}:${TAG:?TAG must be set}"


# --- .env files ---------------------------------------------------------------------------


def test_env_file_syntax() -> None:
    text = (
        "\ufeff# comment\n"
        "PLAIN=value\n"
        "SPACED = padded  \n"
        "export EXPORTED=1\n"
        "INLINE=abc # a comment\n"
        "HASH=abc#not-a-comment\n"
        "SINGLE='literal $PLAIN \\n'\n"
        'DOUBLE="line1\\nline2 \\"q\\" $PLAIN"\n'
        'MULTI="a\nb"\n'
        "EXPANDED=${PLAIN}-${MISSING:-dflt}\n"
        "DOLLAR=\\$PLAIN\n"
        "YAML_STYLE: yes\n"
        "EMPTY=\n"
        "INHERITED\n"
        "NOT_IN_ENV\n"
        "DOTTED.KEY-1=ok\n"
    )
    env = parse_env(text, {"INHERITED": "from-process"}.get)
    assert env == {
        "PLAIN": "value",
        "SPACED": "padded",
        "EXPORTED": "1",
        "INLINE": "abc",
        "HASH": "abc#not-a-comment",
        "SINGLE": "literal $PLAIN \\n",
        "DOUBLE": 'line1\nline2 "q" value',
        "MULTI": "a\nb",
        "EXPANDED": "value-dflt",
        "DOLLAR": "\\value",
        "YAML_STYLE": "yes",
        "EMPTY": "",
        "INHERITED": "from-process",
        "DOTTED.KEY-1": "ok",
    }


def test_env_process_value_wins_inside_expansion() -> None:
    env = parse_env("A=file\nB=${A}\n", {"A": "process"}.get)
    assert env == {"A": "file", "B": "process"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('A="unterminated\n', "line 1: unterminated quoted value"),
        ("OK=1\nBAD KEY=1\n", "line 2: key cannot contain a space"),
        ("A@B=1\n", "unexpected character '@'"),
        ("A=${B:?needed}\n", "required variable B is missing a value: needed"),
    ],
)
def test_env_file_errors(text: str, message: str) -> None:
    with pytest.raises(EnvFileError, match=message.replace("$", r"\$")):
        parse_env(text)


def test_dotenv_beside_first_file_is_read() -> None:
    stack = load_stack([FIXTURES / "envdir" / "docker-compose.yml"], "s", environ={},
                       warn=lambda m: None)
    web = stack.services["s_web"]
    assert web.image == "web:dotenv"
    assert web.env == ["FROM_DOTENV=yes", "WHO=dotenv-user"]


def test_process_env_overrides_dotenv() -> None:
    stack = load_stack([FIXTURES / "envdir" / "docker-compose.yml"], "s",
                       environ={"WHO": "shell"}, warn=lambda m: None)
    assert stack.services["s_web"].env == ["FROM_DOTENV=yes", "WHO=shell"]


def test_env_file_option_replaces_dotenv() -> None:
    # As `docker compose --env-file`: the given files are read instead of .env.
    stack = load_stack([FIXTURES / "envdir" / "docker-compose.yml"], "s",
                       env_files=[FIXTURES / "envdir" / "prod.env"], environ={},
                       warn=lambda m: None)
    web = stack.services["s_web"]
    assert web.image == "web:prod"
    assert web.env == ["FROM_DOTENV=missing", "WHO=nobody"]


def test_several_env_files_later_wins_and_process_over_all(tmp_path: Path) -> None:
    (tmp_path / "one.env").write_text("TAG=one\nWHO=one\n")
    (tmp_path / "two.env").write_text("TAG=two\n")
    stack = load_stack([FIXTURES / "envdir" / "docker-compose.yml"], "s",
                       env_files=[tmp_path / "one.env", tmp_path / "two.env"],
                       environ={"TAG": "shell"}, warn=lambda m: None)
    web = stack.services["s_web"]
    assert web.image == "web:shell"
    assert "WHO=one" in web.env


def test_missing_env_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ShoalError, match="couldn't find env file"):
        load_stack([FIXTURES / "seed.yml"], "s", env_files=[tmp_path / "nope.env"],
                   environ={}, warn=lambda m: None)


def test_compose_disable_env_file() -> None:
    stack = load_stack([FIXTURES / "envdir" / "docker-compose.yml"], "s",
                       environ={"COMPOSE_DISABLE_ENV_FILE": "1", "TAG": "t"},
                       warn=lambda m: None)
    assert stack.services["s_web"].env == ["FROM_DOTENV=missing", "WHO=nobody"]


# docker/cli cli/compose/template/template_test.go (v28.5.2), case by case.
GO_DEFAULTS = {"FOO": "first", "BAR": ""}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("$${foo}", "${foo}"),
        ("foo", "foo"),
        ("This ${missing} var", "This  var"),
        ("This ${BAR} var", "This  var"),
        ("This $FOO var", "This first var"),
        ("This ${FOO} var", "This first var"),
        ("ok ${missing:-def}", "ok def"),
        ("ok ${missing-def}", "ok def"),
        ("ok ${BAR:-def}", "ok def"),
        ("ok ${FOO:-def}", "ok first"),
        ("ok ${BAR-def}", "ok "),
        ("ok ${BAR:-/non:-alphanumeric}", "ok /non:-alphanumeric"),
        ("ok ${FOO:?err}", "ok first"),
        ("ok ${FOO?err}", "ok first"),
        ("ok ${BAR?err}", "ok "),
    ],
)
def test_docker_cli_template_cases(template: str, expected: str) -> None:
    assert docker_substitute(template, GO_DEFAULTS.get) == expected


@pytest.mark.parametrize("template", ["${", "$}", "${}", "${ }", "${ foo}", "${foo }", "${foo!}"])
def test_docker_cli_invalid_template_cases(template: str) -> None:
    with pytest.raises(InvalidTemplateError):
        docker_substitute(template, GO_DEFAULTS.get)


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("not ok ${UNSET_VAR:?Mandatory Variable Unset}",
         "required variable UNSET_VAR is missing a value: Mandatory Variable Unset"),
        ("not ok ${BAR:?Mandatory Variable Empty}",
         "required variable BAR is missing a value: Mandatory Variable Empty"),
        ("not ok ${UNSET_VAR:?}", "required variable UNSET_VAR is missing a value"),
        ("not ok ${UNSET_VAR?Mandatory Variable Unset}",
         "required variable UNSET_VAR is missing a value: Mandatory Variable Unset"),
        ("not ok ${UNSET_VAR?}", "required variable UNSET_VAR is missing a value"),
    ],
)
def test_docker_cli_mandatory_cases(template: str, message: str) -> None:
    with pytest.raises(InvalidTemplateError) as info:
        docker_substitute(template, GO_DEFAULTS.get)
    assert message in info.value.template


def test_casts_as_docker_clis_interpolate(tmp_path: Path) -> None:
    """docker/cli's interpolateTypeCastMapping casts a long port's `published` and a secret's or
    config's `mode` too (`published: "${PORT:-8080}"` is the port 8080 in its model, a
    dockerswarm.rocks pattern), and only a value the substitution changed."""
    compose = tmp_path / "c.yml"
    (tmp_path / "s.txt").write_text("s")
    compose.write_text('version: "3.8"\nservices:\n  a:\n    image: busybox\n'
                       '    secrets: [{source: s, mode: "${MODE:-0440}"}]\n'
                       '    ports: [{target: 80, published: "${PORT:-8080}"}]\n'
                       'secrets:\n  s: {file: ./s.txt}\n')
    service = load_config([compose], environ={}, warn=lambda m: None)["services"]["a"]
    assert (service["ports"][0]["published"], service["secrets"][0]["mode"]) == (8080, 440)
    with pytest.raises(ShoalError, match='published: failed to cast to expected type: strconv.Atoi: '
                                         'parsing "80a": invalid syntax'):
        load_config([compose], environ={"PORT": "80a"}, warn=lambda m: None)
    compose.write_text('version: "3.8"\nservices:\n  a:\n    image: busybox\n    deploy: {replicas: "3"}\n')
    assert load_config([compose], environ={}, warn=lambda m: None)["services"]["a"]["deploy"]["replicas"] == "3"
