"""Registry credentials and authentication challenges.

Credentials live in a Docker-compatible config file (`{"auths": {server: {"auth": base64}}}`),
so a config written by `docker login` works here and the other way round. The challenge parser
and token request follow docker/distribution's registry/client/auth package: a 401 carries
`WWW-Authenticate: Basic realm=...` or `Bearer realm=...,service=...,scope=...`.
"""

from __future__ import annotations

import base64
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from shoal.errors import ShoalError

# Docker keeps Docker Hub credentials under this key, not under "docker.io".
DOCKER_HUB_AUTH_KEY = "https://index.docker.io/v1/"
DOCKER_HUB_DOMAIN = "docker.io"


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def config_path() -> Path:
    """$SHOAL_CONFIG, else ~/.shoal/config.json."""
    env = os.environ.get("SHOAL_CONFIG")
    if env:
        return Path(env)
    return Path.home() / ".shoal" / "config.json"


def server_key(domain: str) -> str:
    """The key a registry's credentials are stored under, as Docker chooses it."""
    if domain in (DOCKER_HUB_DOMAIN, "index.docker.io", "registry-1.docker.io", DOCKER_HUB_AUTH_KEY):
        return DOCKER_HUB_AUTH_KEY
    # `docker login http://host:5000/` is stored as host:5000.
    return re.sub(r"^https?://", "", domain).rstrip("/").split("/")[0]


def _read_config(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    try:
        data = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ShoalError(f"loading config file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ShoalError(f"loading config file {path}: not a JSON object")
    return data


def _write_config(path: Path, data: dict) -> None:
    """Atomic and private (0600): the file holds passwords."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".config-", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent="\t")
            f.write("\n")
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_credentials(domain: str, path: Path | None = None) -> Credentials | None:
    path = path or config_path()
    auths = _read_config(path).get("auths") or {}
    key = server_key(domain)
    entry = auths.get(key)
    if entry is None:
        # Docker also matches keys written with a scheme or path (https://host/v1/).
        for name, value in auths.items():
            if server_key(name) == key:
                entry = value
                break
    if not entry:
        return None
    if entry.get("username") and entry.get("password"):
        return Credentials(entry["username"], entry["password"])
    encoded = entry.get("auth")
    if not encoded:
        return None
    try:
        user, _, password = base64.b64decode(encoded).decode().partition(":")
    except (ValueError, UnicodeDecodeError) as exc:
        raise ShoalError(f"invalid auth configuration file {path}: bad auth for {key}") from exc
    return Credentials(user, password)


def store_credentials(domain: str, creds: Credentials, path: Path | None = None) -> Path:
    path = path or config_path()
    data = _read_config(path)
    auths = data.setdefault("auths", {})
    raw = f"{creds.username}:{creds.password}".encode()
    auths[server_key(domain)] = {"auth": base64.b64encode(raw).decode()}
    _write_config(path, data)
    return path


def erase_credentials(domain: str, path: Path | None = None) -> bool:
    """True when there was something to remove."""
    path = path or config_path()
    data = _read_config(path)
    auths = data.get("auths") or {}
    key = server_key(domain)
    names = [name for name in auths if server_key(name) == key]
    if not names:
        return False
    for name in names:
        del auths[name]
    _write_config(path, data)
    return True


@dataclass
class Challenge:
    scheme: str                      # lower case: "basic", "bearer"
    params: dict[str, str] = field(default_factory=dict)


# auth-param = token "=" ( token / quoted-string ), per RFC 7235.
_PARAM = re.compile(r'\s*([A-Za-z0-9_.\-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


def parse_challenges(header_values: list[str]) -> list[Challenge]:
    """Parse WWW-Authenticate values into challenges (several per header are allowed)."""
    challenges: list[Challenge] = []
    for value in header_values:
        rest = value.strip()
        while rest:
            m = re.match(r"([A-Za-z][A-Za-z0-9_\-]*)\s*", rest)
            if not m:
                break
            challenge = Challenge(m.group(1).lower())
            rest = rest[m.end():]
            while rest:
                pm = _PARAM.match(rest)
                if not pm:
                    break
                quoted, bare = pm.group(2), pm.group(3)
                challenge.params[pm.group(1).lower()] = (
                    re.sub(r"\\(.)", r"\1", quoted) if quoted is not None else bare
                )
                rest = rest[pm.end():]
            challenges.append(challenge)
            rest = rest.lstrip(", ")
    return challenges


def scope_for(repository: str, actions: tuple[str, ...]) -> str:
    """`repository:library/web:pull,push`, the token scope grammar of distribution."""
    return f"repository:{repository}:{','.join(actions)}"
