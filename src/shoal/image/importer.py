"""`docker import`: a root filesystem tarball (plain, gzip, bzip2, xz or zstd) becomes a
one-layer image, with Dockerfile-style `--change` instructions applied to its config."""

from __future__ import annotations

import json
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

from shoal.errors import InvalidArgument, ShoalError
from shoal.image.store import Image, ImageStore, format_time

# The instructions `docker import --change` accepts (moby builder/dockerfile BuildFromConfig).
CHANGE_INSTRUCTIONS = ("CMD", "ENTRYPOINT", "ENV", "EXPOSE", "LABEL", "ONBUILD", "STOPSIGNAL",
                       "USER", "VOLUME", "WORKDIR")

_ARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "i686": "386", "ppc64le": "ppc64le",
         "s390x": "s390x", "riscv64": "riscv64"}


def host_architecture() -> str:
    machine = platform.machine()
    return _ARCH.get(machine, machine)


def _json_or_shell(rest: str, shell: bool = True) -> list[str]:
    """Exec form (a JSON array of strings) or shell form (`/bin/sh -c "..."`)."""
    text = rest.strip()
    if text.startswith("["):
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
    return ["/bin/sh", "-c", text] if shell else text.split()


def _key_values(instruction: str, rest: str) -> list[tuple[str, str]]:
    """`KEY=VALUE ...` (quotes allowed) or the legacy `KEY VALUE` form."""
    try:
        words = shlex.split(rest, posix=True)
    except ValueError as exc:
        raise InvalidArgument(f"{instruction}: {exc}") from None
    if not words:
        raise InvalidArgument(f"{instruction} requires at least one argument")
    if "=" not in words[0]:
        key, _, value = rest.strip().partition(" ")
        if not value.strip():
            raise InvalidArgument(f"{instruction} requires at least two arguments")
        return [(key, value.strip())]
    pairs = []
    for word in words:
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise InvalidArgument(f"{instruction} names can not be blank: {word!r}"
                                  if not key else f"{instruction}: syntax error - can't find = in {word!r}")
        pairs.append((key, value))
    return pairs


def apply_change(config: dict[str, Any], change: str) -> None:
    """Apply one `--change` line (e.g. `CMD ["/bin/sh"]`) to a container config dict."""
    instruction, _, rest = change.strip().partition(" ")
    name = instruction.upper()
    if name not in CHANGE_INSTRUCTIONS:
        raise InvalidArgument(f"{instruction} is not a valid change command")
    rest = rest.strip()
    if not rest and name != "ENTRYPOINT":
        raise InvalidArgument(f"{name} requires at least one argument")
    if name == "CMD":
        config["Cmd"] = _json_or_shell(rest)
    elif name == "ENTRYPOINT":
        config["Entrypoint"] = _json_or_shell(rest) if rest else None
    elif name == "ENV":
        env = [e for e in config.get("Env") or []]
        for key, value in _key_values(name, rest):
            env = [e for e in env if e.split("=", 1)[0] != key] + [f"{key}={value}"]
        config["Env"] = env
    elif name == "LABEL":
        labels = dict(config.get("Labels") or {})
        labels.update(_key_values(name, rest))
        config["Labels"] = labels
    elif name == "EXPOSE":
        ports = dict(config.get("ExposedPorts") or {})
        for port in rest.split():
            number, _, proto = port.partition("/")
            if not number or not all(p.isdigit() for p in number.split("-")):
                raise InvalidArgument(f"invalid containerPort: {number}")
            ports[f"{number}/{(proto or 'tcp').lower()}"] = {}
        config["ExposedPorts"] = ports
    elif name == "VOLUME":
        volumes = dict(config.get("Volumes") or {})
        for path in _json_or_shell(rest, shell=False):
            volumes[path] = {}
        config["Volumes"] = volumes
    elif name == "WORKDIR":
        config["WorkingDir"] = rest
    elif name == "USER":
        config["User"] = rest
    elif name == "STOPSIGNAL":
        config["StopSignal"] = rest
    elif name == "ONBUILD":
        config["OnBuild"] = (config.get("OnBuild") or []) + [rest]


def import_tarball(store: ImageStore, source: str, reference: str | None = None,
                   changes: Sequence[str] = (), message: str = "", stdin: BinaryIO | None = None,
                   platform_name: str | None = None) -> Image:
    """Import the rootfs tarball `source` (a path, or `-` for stdin) as a one-layer image.

    Everything that can be checked is checked before reading the tar (the reference, every
    change); a corrupt or truncated tar raises with nothing stored or tagged.
    """
    from shoal.image import reference as refs

    tags: list[str] = []
    if reference:
        ref = refs.parse(reference)
        if ref.digest:
            raise InvalidArgument(f"refusing to create a tag with a digest reference: {reference}")
        tags.append(str(ref))
    container_config: dict[str, Any] = {}
    for change in changes:
        apply_change(container_config, change)
    os_name, arch = "linux", host_architecture()
    if platform_name:
        parts = platform_name.split("/")
        os_name, arch = parts[0], parts[1] if len(parts) > 1 else arch
    if source == "-":
        layer = store.import_layer(stdin or sys.stdin.buffer, source="-")
    else:
        path = Path(source)
        try:
            f = open(path, "rb")
        except FileNotFoundError:
            raise ShoalError(f"open {source}: no such file or directory") from None
        except IsADirectoryError:
            raise ShoalError(f"{source}: is a directory, not a tar archive") from None
        except PermissionError:
            raise ShoalError(f"open {source}: permission denied") from None
        with f:
            layer = store.import_layer(f, source=source)  # type: ignore[arg-type]
    comment = message or "Imported from -"
    now = format_time(time.time())
    config: dict[str, Any] = {
        "architecture": arch,
        "comment": comment,
        "config": container_config,
        "created": now,
        "history": [{"created": now, "comment": comment}],
        "os": os_name,
    }
    return store.create_image(config, [layer], tags=tags)
