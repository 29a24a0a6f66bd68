"""Validation against the official compose-spec JSON schema (bundled in schema/, never
downloaded), with the first error turned into one line naming the file, line and key."""

from __future__ import annotations

import json
from contextvars import ContextVar
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from shoal.compose import fastcheck
from shoal.compose.errors import ComposeError, dotted
from shoal.compose.load import ComposeFile, locate

SCHEMA_FILE = "compose-spec.json"

# False in shoald: a file the fast check refuses is not explained there (jsonschema would stay in
# the daemon's memory for good); the CLI loads it again itself and reports jsonschema's finding.
EXPLAIN: ContextVar[bool] = ContextVar("explain_schema_errors", default=True)


class SchemaRefused(ComposeError):
    """The fast check refused the file and EXPLAIN is off: no message worth showing."""


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    from importlib import resources  # only when a file is refused, or for `stack config` checks: ~10 ms

    text = resources.files("shoal.compose").joinpath("schema").joinpath(SCHEMA_FILE).read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


if TYPE_CHECKING:
    import jsonschema
    from jsonschema.exceptions import ValidationError


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft7Validator:
    import jsonschema  # only for files the fast check refused (see fastcheck.py)

    return jsonschema.Draft7Validator(schema())


def _deepest(error: ValidationError) -> ValidationError:
    """For oneOf/anyOf, the branch error that got furthest into the value explains it best."""
    while error.context:
        candidates = [e for e in error.context if e.validator not in ("type",)] or list(
            error.context
        )
        deepest = max(candidates, key=lambda e: len(e.absolute_path))
        if len(deepest.absolute_path) <= len(error.absolute_path) and error.validator in (
            "oneOf",
            "anyOf",
        ):
            break
        error = deepest
    return error


def _describe(error: ValidationError) -> tuple[tuple[str | int, ...], str]:
    path: tuple[str | int, ...] = tuple(error.absolute_path)
    validator = error.validator
    instance = error.instance
    rule = error.validator_value
    if validator == "additionalProperties" and isinstance(instance, dict):
        allowed = set(error.schema.get("properties", {}))
        patterns = list(error.schema.get("patternProperties", {}))
        import re

        extra = sorted(
            k for k in instance
            if k not in allowed and not any(re.search(p, k) for p in patterns)
        )
        if extra:
            return (*path, extra[0]), f"additional property {extra[0]} is not allowed"
    if validator == "type":
        types = [rule] if isinstance(rule, str) else list(rule)
        return path, "must be " + _join([_TYPE_WORDS.get(t, t) for t in types])
    if validator == "enum":
        return path, "must be one of: " + ", ".join(str(v) for v in rule)
    if validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else error.message
        return path, f"{missing} is required"
    if validator in ("oneOf", "anyOf"):
        accepted = _branch_types({validator: rule})
        if accepted and _json_type(instance) not in accepted:
            return path, "must be " + _join([_TYPE_WORDS[t] for t in accepted])
        return path, f"{_short(instance)} is not valid here"
    if validator == "uniqueItems":
        return path, "must contain unique items"
    if validator == "pattern":
        return path, f"{_short(instance)} does not match {rule}"
    if validator in ("minimum", "maximum", "minItems", "maxItems", "minProperties"):
        return path, error.message
    return path, error.message


_TYPE_WORDS = {
    "string": "a string", "number": "a number", "integer": "an integer", "boolean": "a boolean",
    "object": "a mapping", "array": "a list", "null": "null",
}


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _branch_types(branch: Any, depth: int = 0) -> list[str]:
    """The JSON types a schema (with its oneOf/anyOf/$ref branches) accepts, in order."""
    if not isinstance(branch, dict) or depth > 8:
        return []
    if "type" in branch:
        kinds = branch["type"]
        found = [kinds] if isinstance(kinds, str) else list(kinds)
    elif "$ref" in branch and str(branch["$ref"]).startswith("#/definitions/"):
        found = _branch_types(schema()["definitions"].get(branch["$ref"].split("/")[-1]),
                              depth + 1)
    else:
        found = []
        for key in ("oneOf", "anyOf"):
            for sub in branch.get(key, []):
                found += _branch_types(sub, depth + 1)
    if "number" in found and "integer" not in found:
        found.append("integer")  # an integer is a number
    return list(dict.fromkeys(found))


def _join(words: list[str]) -> str:
    words = [w for w in dict.fromkeys(words)]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


# Service keys docker/cli's v3 schemas allow that the compose-spec has dropped (it has `cgroup`
# for cgroupns_mode, from 3.9): checked here and kept out of the compose-spec check, so such a
# file loads as in docker stack deploy (which warns of cgroupns_mode and ignores it).
_DOCKER_ONLY_SERVICE_KEYS = {"cgroupns_mode": "string"}


def _without_docker_only_keys(config: dict[str, Any], files: list[ComposeFile]) -> dict[str, Any]:
    services = config.get("services")
    if not isinstance(services, dict) or not any(
            isinstance(s, dict) and not _DOCKER_ONLY_SERVICE_KEYS.keys().isdisjoint(s)
            for s in services.values()):
        return config
    kept: dict[str, Any] = {}
    for name, service in services.items():
        if isinstance(service, dict):
            for key in _DOCKER_ONLY_SERVICE_KEYS.keys() & service.keys():
                if not isinstance(service[key], str):
                    path = ("services", name, key)
                    raise ComposeError("must be a string", where=locate(files, path),
                                       path=dotted(path))
            service = {k: v for k, v in service.items() if k not in _DOCKER_ONLY_SERVICE_KEYS}
        kept[name] = service
    return {**config, "services": kept}


def check_schema(config: dict[str, Any], files: list[ComposeFile]) -> None:
    """Raise ComposeError for the most relevant schema violation in `config` (a single file's
    content, or the merged config); `files` are used to find the line of the bad key."""
    config = _without_docker_only_keys(config, files)
    if fastcheck.is_valid(config):
        return
    if not EXPLAIN.get():
        raise SchemaRefused("the compose-spec schema refuses this file")
    from jsonschema.exceptions import best_match

    errors = list(_validator().iter_errors(config))
    if not errors:
        return
    error = _deepest(best_match(errors))
    path, message = _describe(error)
    raise ComposeError(message, where=locate(files, path), path=dotted(path) or "(top level)")
