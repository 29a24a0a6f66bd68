"""Two readers of `KEY=value` files.

`env_file:` is read as `docker stack deploy` reads it (docker/cli pkg/kvfile, parse_kv_file):
each line kept as written. The `.env` file (and --env-file), which docker stack never reads,
is read as docker compose reads it (compose-go dotenv/parser.go, parse_env):

`KEY=value`, `KEY: value`, `export KEY=value`; `#` comment lines and ` #` inline comments on
unquoted values; single quotes are literal; double quotes take `\\n`-style escapes and may span
lines; unquoted and double-quoted values are substituted (`${OTHER:-x}`) from the process
environment first, then from keys already read. A bare `KEY` line takes KEY from the lookup
(the process environment) and is skipped when it is not set there.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from pathlib import Path

from shoal.compose.errors import ComposeError
from shoal.compose.interpolate import InvalidTemplate, MissingRequired, substitute

_EXPORT = re.compile(r"^export\s+")
_ESCAPES = re.compile(r"\\(?:[abcfnrtv$\"\\]|0[0-7]{0,3})")
_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "c": "\\c", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    '"': '"', "\\": "\\",
}  # fmt: skip
_SPACE = "\t\v\f\r \x85\xa0"  # a space that is not a line break


class EnvFileError(Exception):
    pass


def _expand_escapes(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        seq = match.group(0)
        if seq == "\\$":
            return "$$"  # a literal $: kept away from substitution
        if seq.startswith("\\0"):
            digits = seq[2:]
            return chr(int(digits, 8)) if digits else "\0"
        return _SIMPLE_ESCAPES.get(seq[1], seq)

    return _ESCAPES.sub(one, text)


def parse_env(
    text: str, lookup: Callable[[str], str | None] | None = None
) -> dict[str, str]:
    """Parse .env text. `lookup` gives the process environment (bare keys, substitution)."""
    out: dict[str, str] = {}
    env_lookup = lookup or (lambda _k: None)

    def expand(value: str) -> str:
        def find(key: str) -> str | None:
            found = env_lookup(key)
            return found if found is not None else out.get(key)

        try:
            return substitute(value, find)
        except (InvalidTemplate, MissingRequired) as exc:
            raise EnvFileError(f"line {line}: {exc}") from None

    if text.startswith("\ufeff"):
        text = text[1:]
    line = 1
    pos = 0
    n = len(text)
    while True:
        # Skip blank space and comment lines.
        while pos < n and text[pos].isspace():
            if text[pos] == "\n":
                line += 1
            pos += 1
        if pos >= n:
            break
        if text[pos] == "#":
            nl = text.find("\n", pos)
            if nl < 0:
                break
            pos = nl
            continue
        rest = text[pos:]
        export = _EXPORT.match(rest)
        if export:
            pos += export.end()
        # The key runs to `=`, `:` or end of line.
        start = pos
        key_end = -1
        inherited = False
        while pos < n:
            ch = text[pos]
            if ch in "=:\n":
                key_end = pos
                inherited = ch == "\n"
                pos += 1
                break
            if ch in _SPACE or ch in "_.-[]" or ch.isalnum():
                pos += 1
                continue
            first_line = text[start:].split("\n", 1)[0]
            raise EnvFileError(
                f"line {line}: unexpected character {ch!r} in variable name {first_line!r}"
            )
        else:
            key_end = n
            inherited = True
        key = text[start:key_end].rstrip()
        if " " in key:
            raise EnvFileError(f"line {line}: key cannot contain a space")
        if not key:
            raise EnvFileError(f"line {line}: empty variable name")
        if inherited:
            line += 1
            found = env_lookup(key)
            if found is not None:
                out[key] = found
            continue
        while pos < n and text[pos] in _SPACE:
            pos += 1
        quote = text[pos] if pos < n and text[pos] in "'\"" else ""
        if not quote:
            nl = text.find("\n", pos)
            raw = text[pos:] if nl < 0 else text[pos:nl]
            pos = n if nl < 0 else nl + 1
            raw = raw.split(" #", 1)[0].rstrip()
            out[key] = expand(raw)
            line += 1
            continue
        chars: list[str] = []
        escaped = False
        i = pos + 1
        start_line = line
        while i < n:
            ch = text[i]
            if ch == "\n":
                line += 1
            if ch != quote:
                if not escaped and ch == "\\":
                    escaped = True
                    i += 1
                    continue
                if escaped:
                    escaped = False
                    chars.append("\\")
                chars.append(ch)
                i += 1
                continue
            if escaped:
                escaped = False
                chars.append(ch)
                i += 1
                continue
            break
        else:
            first_line = text[pos:].split("\n", 1)[0]
            raise EnvFileError(f"line {start_line}: unterminated quoted value {first_line}")
        value = "".join(chars)
        if quote == '"':
            value = expand(_expand_escapes(value))
        out[key] = value
        pos = i + 1
    return out


def read_env_file(path: Path, lookup: Callable[[str], str | None] | None = None) -> dict[str, str]:
    """Read one env file; errors name the file and the line."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ComposeError(f"couldn't find env file: {path}") from None
    except IsADirectoryError:
        raise ComposeError(f"{path} is a directory") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ComposeError(f"couldn't read env file: {path}: {exc}") from None
    try:
        return parse_env(text, lookup)
    except EnvFileError as exc:
        raise ComposeError(f"failed to read {path}: {exc}") from None


def project_environment(
    env_files: list[Path], environ: Mapping[str, str]
) -> dict[str, str]:
    """The variables interpolation sees: the env files in order (later wins), then the process
    environment over all of them, as docker compose merges them."""
    from_files: dict[str, str] = {}
    for path in env_files:

        def lookup(key: str) -> str | None:
            if key in environ:
                return environ[key]
            return from_files.get(key)

        from_files.update(read_env_file(path, lookup))
    merged = dict(from_files)
    merged.update(environ)
    return merged


# --- docker's kvfile (env_file) -----------------------------------------------------------


def parse_kv_file(path: Path, lookup: Callable[[str], str | None]) -> list[str]:
    """docker/cli pkg/kvfile.Parse: `KEY=value` kept as written (quotes and trailing spaces are
    part of the value), `#` comment lines, a bare KEY taken from the environment or skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise OSError(f"open {path}: no such file or directory") from None
    except IsADirectoryError:
        raise OSError(f"read {path}: is a directory") from None
    except OSError as exc:
        raise OSError(f"open {path}: {(exc.strerror or str(exc)).lower()}") from None
    out: list[str] = []
    raw_lines = data.split(b"\n")
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    for number, raw in enumerate(raw_lines, 1):
        if raw.endswith(b"\r"):
            raw = raw[:-1]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise OSError(f"invalid env file ({path}): invalid utf8 bytes at line {number}: "
                          f"[{' '.join(str(b) for b in raw)}]") from None
        if number == 1 and text.startswith("\ufeff"):
            text = text[1:]
        line = text.lstrip()
        if not line or line.startswith("#"):
            continue
        key, sep, _ = line.partition("=")
        if not key:
            raise OSError(f"invalid env file ({path}): no variable name on line '{line}'")
        if " " in key or "\t" in key:
            raise OSError(f"invalid env file ({path}): variable '{key}' contains whitespaces")
        if sep:
            out.append(line)
            continue
        found = lookup(line)
        if found is not None:
            out.append(f"{key}={found}")
    return out
