"""Contexts, as the docker CLI keeps them (docker/cli cli/context/store): which node the CLI
talks to, and with which certificates.

Layout under the CLI's config dir (~/.shoal, or the directory of $SHOAL_CONFIG), Docker's own:

    config.json                          {"currentContext": NAME, ...}  (0600, shared with `login`)
    contexts/meta/<sha256(NAME)>/meta.json   {"Name", "Metadata": {"Description"}, "Endpoints":
                                              {"docker": {"Host", "SkipTLSVerify"}}}
    contexts/tls/<sha256(NAME)>/docker/{ca.pem,cert.pem,key.pem}

Directories are 0700 and key files 0600: a context's key is a node's key of the cluster.

A context made from a node's own certificates (`cluster create`'s, `context create` of a tcp://
host without --tls-*) stores no copy: its Metadata names the node's certificates directory
("NodeCertificates", one of docker/cli's DockerContext AdditionalFields, which `context inspect`
prints as Docker does) and endpoint() reads the node's files there at each use, so the context
follows the node through certificate renewal and root CA rotation (a copy is refused by the
manager once the rotation ends, or once the copied certificate expires). A context made from
explicit --tls-* files keeps its copy, as Docker's.

Which endpoint a command uses, in Docker's order (cli/command/cli.go resolveContextName):
--context, else -H (the default context on that host), else SHOAL_HOST (likewise), else
SHOAL_CONTEXT, else config.json's currentContext, else "default" (the local unix socket).

Kept cheap to import (json, hashlib, os): every command that talks to shoald reads it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from shoal import paths
from shoal.errors import InvalidArgument, NotFound, ShoalError

DEFAULT = "default"
ENDPOINT = "docker"  # the endpoint's key in meta.json, as Docker names it (tools read these files)
DEFAULT_TCP_PORT = 2377  # the manager's listener (swarm's port), when a tcp:// host names none
TLS_FILES = ("ca.pem", "cert.pem", "key.pem")
DEFAULT_DESCRIPTION = "Current SHOAL_HOST based configuration"
NODE_CERTS = "NodeCertificates"  # Metadata key: the node certificates directory a context follows
# A node's certificates directory (manager/ca.py's names, swarmkit's), as ca.pem/cert.pem/key.pem.
NODE_FILES = (("ca.pem", "swarm-root-ca.crt"), ("cert.pem", "swarm-node.crt"), ("key.pem", "swarm-node.key"))
# docker/cli store.ValidateContextName's pattern.
_NAME_RE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.+-]+$")

# Set by the CLI's global flags (cli/main.py) before any command runs.
flag_host: str | None = None
flag_context: str | None = None


class Endpoint:
    """Where a context points: a unix socket path, or a TCP address with the TLS material.
    (A plain class: dataclasses costs ~10 ms of import on every command.)"""

    def __init__(self, host: str, context: str = DEFAULT, ca: Path | None = None,
                 cert: Path | None = None, key: Path | None = None, follows: Path | None = None) -> None:
        self.host = host  # unix:///path or tcp://host:port, as written in meta.json
        self.context = context
        self.ca, self.cert, self.key = ca, cert, key
        self.follows = follows  # the node certificates directory these files live in, renewed in place

    def material_signature(self) -> tuple[tuple[int, int, int], ...]:
        """Changes whenever one of the TLS files is replaced (renewal and rotation rename new
        files into place): a client that keeps a TLS context builds it again when this differs."""
        out = []
        for p in (self.ca, self.cert, self.key):
            try:
                st = os.stat(p) if p is not None else None
            except OSError:
                st = None
            out.append((st.st_ino, st.st_mtime_ns, st.st_size) if st else (0, 0, 0))
        return tuple(out)

    @property
    def is_tcp(self) -> bool:
        return self.host.startswith("tcp://")

    @property
    def unix_path(self) -> Path:
        return Path(self.host[len("unix://"):])

    @property
    def address(self) -> tuple[str, int]:
        return parse_tcp(self.host)


class Context:
    def __init__(self, name: str, description: str = "", host: str = "",
                 tls: dict[str, bytes] | None = None, node_certs: str = "",
                 extra: dict[str, Any] | None = None) -> None:
        self.name, self.description, self.host = name, description, host
        self.tls: dict[str, bytes] = tls or {}  # file name -> content, only on write
        self.node_certs = node_certs  # a node's certificates directory, followed instead of a copy
        self.extra: dict[str, Any] = extra or {}  # other Metadata fields, kept as Docker keeps them


def config_dir() -> Path:
    env = os.environ.get("SHOAL_CONFIG")
    return Path(env).parent if env else Path.home() / ".shoal"


def config_path() -> Path:
    env = os.environ.get("SHOAL_CONFIG")
    return Path(env) if env else config_dir() / "config.json"


def _digest(name: str) -> str:
    # CPython's own SHA-256 (_sha256): hashlib would load OpenSSL first, ~4 ms of every command
    # on a named context (a tcp:// one loads it later for TLS anyway, ~2 ms less then).
    try:
        from _sha256 import sha256
    except ImportError:
        from hashlib import sha256
    return sha256(name.encode()).hexdigest()


def meta_dir(name: str) -> Path:
    return config_dir() / "contexts" / "meta" / _digest(name)


def tls_dir(name: str) -> Path:
    return config_dir() / "contexts" / "tls" / _digest(name)


def validate_name(name: str) -> None:
    if not name:
        raise InvalidArgument("context name cannot be empty")
    if name == DEFAULT:
        raise InvalidArgument(f'"{DEFAULT}" is a reserved context name')
    if not _NAME_RE.fullmatch(name):
        raise InvalidArgument(f'context name "{name}" is invalid, names are validated against regexp '
                              f'"{_NAME_RE.pattern}"')


def parse_tcp(host: str) -> tuple[str, int]:
    rest = host[len("tcp://"):]
    hostname, sep, port = rest.rpartition(":")
    if not sep:
        hostname, port = rest, str(DEFAULT_TCP_PORT)
    hostname = hostname.strip("[]")
    if not hostname or not port.isdigit() or not 0 < int(port) < 65536 or "/" in rest:
        raise InvalidArgument(f'invalid host "{host}": use tcp://HOST:PORT or unix:///PATH')
    return hostname, int(port)


def normalize_host(host: str) -> str:
    """unix:///abs/path or tcp://HOST:PORT (the port added when missing); anything else is an
    error naming the host."""
    host = host.strip()
    if host.startswith("unix://"):
        path = host[len("unix://"):]
        if not path.startswith("/"):
            raise InvalidArgument(f'invalid host "{host}": a unix socket path must be absolute (unix:///PATH)')
        return host
    if host.startswith("tcp://"):
        name, port = parse_tcp(host)
        return f"tcp://{'[' + name + ']' if ':' in name else name}:{port}"
    raise InvalidArgument(f'invalid host "{host}": use unix:///PATH or tcp://HOST:PORT')


def foreign_socket(ep: Endpoint) -> bool:
    """A unix endpoint other than this CLI's own socket (`-H unix:///<node run root>/shoal.sock`,
    a `cluster create --no-swarm` context): the shoald there keeps its containers and images under
    a state root this process does not open, so a command that works in-process must go through
    that shoald's API, as for a tcp:// endpoint (docker's -H always names the daemon that acts)."""
    return not ep.is_tcp and os.path.realpath(ep.unix_path) != os.path.realpath(paths.socket_path())


def default_host() -> str:
    from shoal.api.client import socket_path  # late: client imports this module

    return f"unix://{socket_path()}"


# ---- config.json (currentContext) -------------------------------------------------------------

def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ShoalError(f"reading {what} {path}: {exc.strerror}") from exc
    try:
        data = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise ShoalError(f"loading {what} {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ShoalError(f"loading {what} {path}: not a JSON object")
    return data


def _write_private(path: Path, data: bytes) -> None:
    """Atomic (temp file + rename) and 0600 whatever the umask. A missing parent is made 0700;
    an existing one is left as it is (SHOAL_CONFIG may name a file in a shared directory)."""
    import tempfile

    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def current_context_setting() -> str:
    return str(_read_json(config_path(), "config file").get("currentContext") or DEFAULT)


def set_current(name: str) -> None:
    if name != DEFAULT:
        load(name)  # it must exist
    path = config_path()
    data = _read_json(path, "config file")
    if name == DEFAULT:
        data.pop("currentContext", None)
    else:
        data["currentContext"] = name
    _write_private(path, (json.dumps(data, indent="\t") + "\n").encode())


def current_name() -> str:
    """The context a command uses (Docker's resolveContextName)."""
    if flag_context:
        return flag_context
    if flag_host or os.environ.get("SHOAL_HOST"):
        return DEFAULT
    env = os.environ.get("SHOAL_CONTEXT")
    if env:
        return env
    return current_context_setting()


# ---- the store --------------------------------------------------------------------------------

def exists(name: str) -> bool:
    return name == DEFAULT or (meta_dir(name) / "meta.json").is_file()


def load(name: str) -> Context:
    if name == DEFAULT:
        return Context(DEFAULT, DEFAULT_DESCRIPTION, _default_context_host())
    meta = meta_dir(name) / "meta.json"
    if not meta.is_file():
        raise NotFound(f'context "{name}": context not found: {meta}: no such file or directory')
    data = _read_json(meta, "context")
    endpoint = (data.get("Endpoints") or {}).get(ENDPOINT) or {}
    metadata = data.get("Metadata")
    metadata = dict(metadata) if isinstance(metadata, dict) else {}
    description = metadata.pop("Description", "")
    node_certs = metadata.pop(NODE_CERTS, "")
    if not isinstance(node_certs, str) or (node_certs and not os.path.isabs(node_certs)):
        raise ShoalError(f'context "{name}": {meta}: {NODE_CERTS} must be an absolute directory path')
    return Context(name=str(data.get("Name") or name), description=str(description or ""),
                   host=str(endpoint.get("Host") or ""), node_certs=node_certs, extra=metadata)


def _default_context_host() -> str:
    return normalize_host(flag_host or os.environ.get("SHOAL_HOST") or default_host())


def names() -> list[str]:
    base = config_dir() / "contexts" / "meta"
    out = [DEFAULT]
    try:
        entries = sorted(base.iterdir())
    except FileNotFoundError:
        return out
    for d in entries:
        try:
            name = json.loads((d / "meta.json").read_text()).get("Name")
        except (OSError, ValueError, AttributeError):
            continue
        if isinstance(name, str) and name != DEFAULT:
            out.append(name)
    return out


def tls_material(name: str) -> list[str]:
    """The TLS files the context's store holds (none for a context that follows a node's)."""
    d = tls_dir(name) / ENDPOINT
    return [f for f in TLS_FILES if (d / f).is_file()]


def save(ctx: Context, replace_tls: bool) -> None:
    """Write a context's meta.json (and, with replace_tls, exactly ctx.tls as its TLS files:
    none when it follows a node's certificates directory)."""
    import shutil

    if ctx.node_certs and ctx.tls:
        raise ValueError("a context follows a node's certificates or holds a copy, not both")
    metadata: dict[str, Any] = dict(ctx.extra)
    if ctx.description:
        metadata["Description"] = ctx.description
    if ctx.node_certs:
        metadata[NODE_CERTS] = ctx.node_certs
    meta = {"Name": ctx.name, "Metadata": metadata,
            "Endpoints": {ENDPOINT: {"Host": ctx.host, "SkipTLSVerify": False}}}
    base = config_dir()
    base.mkdir(parents=True, exist_ok=True, mode=0o700)
    for d in (base / "contexts", base / "contexts" / "meta", base / "contexts" / "tls", meta_dir(ctx.name)):
        paths.ensure_private_dir(d)
    if replace_tls:
        tdir = tls_dir(ctx.name)
        shutil.rmtree(tdir, ignore_errors=True)
        for fname, content in ctx.tls.items():
            paths.ensure_private_dir(tdir / ENDPOINT)
            _write_private(tdir / ENDPOINT / fname, content)
    _write_private(meta_dir(ctx.name) / "meta.json", json.dumps(meta).encode())


def remove(name: str) -> None:
    import shutil

    shutil.rmtree(meta_dir(name), ignore_errors=True)
    shutil.rmtree(tls_dir(name), ignore_errors=True)


def node_files(directory: Path) -> dict[str, Path]:
    """A node certificates directory's files under a context's names (ca.pem, cert.pem, key.pem)."""
    return {name: directory / node_name for name, node_name in NODE_FILES}


def node_certs_dir() -> str:
    """The local node's certificates directory (from `swarm init`/`join`), for a context to
    follow: the cluster's root CA, the node's certificate and key, renewed there in place."""
    certs = paths.state_root().absolute() / "certificates"
    missing = [str(p) for p in node_files(certs).values() if not p.is_file()]
    if missing:
        raise InvalidArgument(f"no TLS material given (--tls-ca, --tls-cert, --tls-key) and this node has "
                              f"no swarm certificates ({', '.join(missing)} missing): run `shoal swarm init` "
                              f"or `swarm join` first")
    return str(certs)


def read_tls_files(ca: str | None, cert: str | None, key: str | None) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for fname, given, flag in (("ca.pem", ca, "--tls-ca"), ("cert.pem", cert, "--tls-cert"),
                               ("key.pem", key, "--tls-key")):
        if not given:
            continue
        try:
            out[fname] = Path(given).expanduser().read_bytes()
        except OSError as exc:
            raise InvalidArgument(f"{flag} {given}: {exc.strerror}") from exc
    if ("cert.pem" in out) != ("key.pem" in out):
        raise InvalidArgument("--tls-cert and --tls-key go together")
    return out


def endpoint(name: str | None = None) -> Endpoint:
    """The endpoint of the context a command uses (or of `name`)."""
    name = name or current_name()
    ctx = load(name)
    host = normalize_host(ctx.host) if ctx.host else _default_context_host()
    ep = Endpoint(host=host, context=name)
    if not ep.is_tcp:
        return ep
    if name == DEFAULT:
        # -H/SHOAL_HOST tcp://: certificates from SHOAL_CERT_PATH, else this node's own.
        cert_path = os.environ.get("SHOAL_CERT_PATH")
        if cert_path:
            d = Path(cert_path)
            ep.ca, ep.cert, ep.key = d / "ca.pem", d / "cert.pem", d / "key.pem"
        else:
            certs = paths.state_root() / "certificates"
            files = node_files(certs)
            ep.ca, ep.cert, ep.key, ep.follows = files["ca.pem"], files["cert.pem"], files["key.pem"], certs
    elif ctx.node_certs:
        # The node's live files, read at each use: renewal and rotation replace them in place.
        d = Path(ctx.node_certs)
        files = node_files(d)
        missing = [p.name for p in files.values() if not p.is_file()]
        if missing:
            raise ShoalError(f'context "{name}": its TLS material is the node certificates in {d}, and '
                             f'{", ".join(missing)} {"is" if len(missing) == 1 else "are"} missing there '
                             f"(the node left the swarm or was removed): update the context with --tls-* "
                             f"files or remove it")
        ep.ca, ep.cert, ep.key, ep.follows = files["ca.pem"], files["cert.pem"], files["key.pem"], d
    else:
        d = tls_dir(name) / ENDPOINT
        ep.ca = d / "ca.pem" if (d / "ca.pem").is_file() else None
        if (d / "cert.pem").is_file():
            ep.cert, ep.key = d / "cert.pem", d / "key.pem"
    return ep
