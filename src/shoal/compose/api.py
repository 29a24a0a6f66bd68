"""The compose loader's two entry points.

    files -> read (YAML 1.2, lines kept) -> interpolate (env files + process env) -> schema
    check per file -> merge -> schema check of the result -> unsupported-key report
    -> load_config() returns that mapping; load_stack() converts it into a StackSpec.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shoal.compose import support
from shoal.compose.cycles import break_cycles
from shoal.compose.convert import Invalid, convert, validate_stack_name
from shoal.compose.envfile import project_environment
from shoal.compose.errors import ComposeError, dotted
from shoal.compose.interpolate import interpolate
from shoal.compose.load import ComposeFile, locate, read_compose_file
from shoal.compose.merge import merge_configs
from shoal.compose.validate import check_schema
from shoal.model import StackSpec

STDIN = Path("-")


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


@dataclass
class Loaded:
    files: list[ComposeFile]
    config: dict[str, Any]
    environment: dict[str, str]
    working_dir: Path


def default_env_files(working_dir: Path, environ: Mapping[str, str]) -> list[Path]:
    """`.env` in the project directory, unless COMPOSE_DISABLE_ENV_FILE is true (compose-go)."""
    if environ.get("COMPOSE_DISABLE_ENV_FILE", "").lower() in ("1", "true", "t", "yes"):
        return []
    candidate = working_dir / ".env"
    return [candidate] if candidate.is_file() else []


def _check_version(compose_file: ComposeFile) -> None:
    version = compose_file.data.get("version")
    if version is None:
        return
    text = str(version).strip()
    if text and not text.startswith("3"):
        raise ComposeError(
            f"unsupported Compose file version: {text} (shoal reads version 3 and the Compose "
            "Specification)",
            where=locate([compose_file], ("version",)),
            path="version",
        )


DEFAULT_VERSION = "3.13"  # docker/cli schema.defaultVersion (v28)


def docker_version(data: Mapping[str, Any]) -> str:
    """docker/cli's schema.Version: the `version` as Go's %v prints it, "3" and none being the
    newest v3 schema."""
    if "version" not in data:
        return DEFAULT_VERSION
    version = data["version"]
    if isinstance(version, float) and version.is_integer():
        text = str(int(version))
    elif isinstance(version, bool):
        text = "true" if version else "false"
    elif version is None:
        text = "<nil>"
    else:
        text = str(version)
    return DEFAULT_VERSION if text in ("", "3") else text


def _version_at_least(version: str, least: str) -> bool:
    """moby's versions.GreaterThanOrEqualTo: dot-separated numbers compared one by one."""
    def parts(text: str) -> list[int]:
        return [int(p) if p.isdigit() else 0 for p in text.split(".")]

    have, want = parts(version), parts(least)
    width = max(len(have), len(want))
    return have + [0] * (width - len(have)) >= want + [0] * (width - len(want))


def warn_external_names(data: Mapping[str, Any], version: str, warn: Callable[[str], None]) -> None:
    """docker/cli's loader warns (on stack config and deploy alike) of each `external: {name:}`
    from the version where `name:` replaced it: 3.4 for volumes, 3.5 for the others."""
    for section, kind, since in (("networks", "network", "3.5"), ("volumes", "volume", "3.4"),
                                 ("secrets", "secret", "3.5"), ("configs", "config", "3.5")):
        entries = data.get(section)
        if not isinstance(entries, dict) or not _version_at_least(version, since):
            continue
        for name, entry in entries.items():
            external = entry.get("external") if isinstance(entry, dict) else None
            if isinstance(external, dict) and external.get("name") and not entry.get("name"):
                warn(f"{kind} {name}: {kind}.external.name is deprecated in favor of {kind}.name")


def warn_host_ips(data: Mapping[str, Any], warn: Callable[[str], None]) -> None:
    """The loader's warnings of short ports' host IPs, per file as docker/cli loads it (before
    `Ignoring unsupported options`, on stack config and deploy alike)."""
    from shoal.compose.syntax import host_ip_warnings, parse_port

    services = data.get("services")
    for service in (services.values() if isinstance(services, dict) else ()):
        ports = service.get("ports") if isinstance(service, dict) else None
        for item in (ports if isinstance(ports, list) else ()):
            if isinstance(item, (str, int)) and not isinstance(item, bool):
                try:
                    shorts = parse_port(item)
                except ValueError:
                    continue  # the converter reports it
                for message in host_ip_warnings(shorts):
                    warn(message)


def resolve_environment(compose_file: ComposeFile, working_dir: Path,
                        environment: Mapping[str, str]) -> dict[str, Any]:
    """docker/cli resolveEnvironment, per file before merging: the `env_file` files are read
    (docker's kvfile rules) into `environment`, then the file's own `environment` over them; an
    entry with no value (or an empty one) takes the variable's value when the environment has
    it. Returns the file's data for merging, with `env_file` folded in (the file itself is left
    as written for `stack config`)."""
    from shoal.compose.envfile import parse_kv_file
    from shoal.compose.values import list_or_dict

    data = compose_file.data
    services = data.get("services")
    if not isinstance(services, dict):
        return data
    resolved: dict[str, Any] = {}
    for name, service in services.items():
        if not isinstance(service, dict) or ("environment" not in service
                                             and "env_file" not in service):
            resolved[name] = service
            continue
        values: dict[str, str | None] = {}
        files = service.get("env_file")
        entries = files if isinstance(files, list) else [] if files is None else [files]
        for index, entry in enumerate(entries):
            key_path: tuple[str | int, ...] = ("services", name, "env_file")
            if isinstance(files, list):
                key_path = (*key_path, index)
            required = True
            if isinstance(entry, dict):  # compose-spec's long form, a shoal extension
                required = entry.get("required", True) is not False
                entry = entry.get("path")
            file = Path(entry if str(entry).startswith("/") else working_dir / str(entry))
            if not required and not file.exists():
                continue
            try:
                lines = parse_kv_file(file, environment.get)
            except OSError as exc:
                raise ComposeError(str(exc), where=locate([compose_file], key_path),
                                   path=dotted(key_path)) from None
            for line in lines:
                key, found, value = line.partition("=")
                values[key] = value if found else None
        try:
            values.update(list_or_dict(service.get("environment"), ("services", name,
                                                                    "environment"), True))
        except Invalid as exc:
            raise ComposeError(exc.message, where=locate([compose_file], exc.path),
                               path=dotted(exc.path)) from None
        for key, value in values.items():
            if not value and key in environment:
                values[key] = environment[key]
        resolved[name] = {k: v for k, v in service.items() if k != "env_file"}
        resolved[name]["environment"] = values
    return {**data, "services": resolved}


def _locator(compose_file: ComposeFile) -> Callable[[tuple[str | int, ...]], str]:
    def where(path: tuple[str | int, ...]) -> str:
        return locate([compose_file], path)

    return where


def _load(
    files: list[Path],
    env_files: list[Path] | None,
    environ: Mapping[str, str] | None,
    warn: Callable[[str], None],
    interpolation: bool,
    deploying: bool = True,
) -> Loaded:
    if not files:
        raise ComposeError("specify a Compose file (with --compose-file)")
    env = dict(os.environ if environ is None else environ)
    first = files[0]
    working_dir = Path.cwd() if first == STDIN else first.absolute().parent
    if env_files is None:
        env_files = default_env_files(working_dir, env)
        for found in env_files:
            # docker stack never reads .env (moby#29133): where shoal differs, it says so.
            warn(f"Reading variables from {found} (docker stack deploy does not read .env files)")
    environment = project_environment(list(env_files), env)

    parsed: list[ComposeFile] = []
    version = ""
    for path in files:
        if path == STDIN:
            compose_file = read_compose_file(path, "-", sys.stdin.read())
        else:
            compose_file = read_compose_file(path, str(path))
        _check_version(compose_file)
        this_version = docker_version(compose_file.data)
        version = version or this_version
        if this_version != version:  # docker/cli loader.Load, before anything is merged
            raise ComposeError(f"version mismatched between two composefiles : {version} and "
                               f"{this_version}", where=compose_file.name)
        if interpolation:
            compose_file.data = interpolate(
                compose_file.data,
                environment.get,
                where=_locator(compose_file),
            )  # an unset variable is blank without a word: no docker stack command warns of it
        check_schema(compose_file.data, [compose_file])
        warn_host_ips(compose_file.data, warn)  # LoadServices, then the other sections
        warn_external_names(compose_file.data, this_version, warn)
        parsed.append(compose_file)
    to_merge = [resolve_environment(f, working_dir, environment) for f in parsed]
    try:
        merged = merge_configs(to_merge)
    except ComposeError as exc:
        raise ComposeError(exc.reason, where=", ".join(f.name for f in parsed)) from None
    # Each file was checked against the schema; the merge is not (docker/cli validates each
    # file only: appending cap_add of two files may repeat an entry, which is no error there).
    # docker/cli prints the unsupported and deprecated keys at deploy only (loadComposeFile);
    # `stack config` (outputConfig) says nothing of them, nor of unset variables (no warning
    # there at all). Forbidden keys fail both.
    support.report(merged, warn if deploying else (lambda message: None), lambda path: locate(parsed, path))
    return Loaded(parsed, merged, environment, working_dir)


def load_config(
    files: list[Path],
    env_files: list[Path] | None = None,
    environ: Mapping[str, str] | None = None,
    warn: Callable[[str], None] = _stderr,
    interpolation: bool = True,
) -> dict[str, Any]:
    """The merged, interpolated and validated mapping (what `stack config` prints)."""
    return _load(files, env_files, environ, warn, interpolation).config


def load_docker_model(
    files: list[Path],
    env_files: list[Path] | None = None,
    environ: Mapping[str, str] | None = None,
    warn: Callable[[str], None] = _stderr,
    interpolation: bool = True,
) -> dict[str, Any]:
    """docker/cli's typed model of the files, merged as its merge.go merges them: what
    `docker stack config` prints (see dockermodel.py). Errors as load_config's."""
    from shoal.compose import dockermodel

    loaded = _load(files, env_files, environ, warn, interpolation, deploying=False)
    version = docker_version(loaded.files[0].data)
    models = [dockermodel.load_file(f.data, version, loaded.working_dir,
                                    loaded.environment.get, _locator(f)) for f in loaded.files]
    return dockermodel.merge(models)


def load_stack(
    files: list[Path],
    stack_name: str,
    env_files: list[Path] | None = None,
    environ: Mapping[str, str] | None = None,
    warn: Callable[[str], None] = _stderr,
) -> StackSpec:
    """Compose files -> StackSpec, with Swarm's names, labels and defaults.
    Every failure is a ComposeError (a ShoalError) of one line naming file, line and key."""
    validate_stack_name(stack_name)
    loaded = _load(files, env_files, environ, warn, True)
    config = loaded.config
    services = config.get("services")
    if isinstance(services, dict):
        # Docker deploys a depends_on cycle (it never reads depends_on); shoal would wait on it
        # for ever, so the services of a cycle start without order among them.
        services, cycles = break_cycles(services)
        for cycle in cycles:
            warn(f"Ignoring depends_on cycle: {' -> '.join(cycle)}")
        config = {**config, "services": services}
    try:
        return convert(config, stack_name, loaded.working_dir, loaded.environment, warn)
    except Invalid as exc:
        raise ComposeError(
            exc.message, where=locate(loaded.files, exc.path), path=dotted(exc.path)
        ) from None
