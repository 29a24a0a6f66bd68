"""Secrets at rest: sealed with AES-256-GCM before they reach the store, as Swarm encrypts its raft
log. A sealed record says which key sealed it:

    {"alg": "AES-256-GCM", "kid": "<key id>", "nonce": "<base64, 12 bytes>", "ct": "<base64>"}

so the key can later come from elsewhere (a store shared by several managers) or be rotated:
`KeySource` is that seam. On one node the key is a file only root reads, <state root>/keys/
secrets.key (0600 in a 0700 directory), made on first use. The associated data binds a record to
its object ("secret" and its name), so a record copied onto another secret does not open."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path
from typing import Any, Protocol

from shoal import paths
from shoal.errors import ShoalError

ALG = "AES-256-GCM"
KEY_FILE = "secrets.key"


class KeySource(Protocol):
    def current(self) -> tuple[str, bytes]:
        """(key id, 32-byte key) that new records are sealed with."""
        ...

    def get(self, key_id: str) -> bytes:
        """The key a record names; ShoalError when this node does not have it."""
        ...


class FileKeys:
    """One key in a root-only file: `<key id> <base64 key>`."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or paths.state_root() / "keys"
        self.path = self.directory / KEY_FILE
        self._cached: tuple[str, bytes] | None = None

    def _read(self) -> tuple[str, bytes] | None:
        if self._cached is None:
            try:
                with open(self.path, "rb") as f:
                    mode = stat.S_IMODE(os.fstat(f.fileno()).st_mode)
                    text = f.read().decode()
            except FileNotFoundError:
                return None
            if mode & 0o077:
                raise ShoalError(f"{self.path}: mode {mode:04o}, the secrets key must be 0600")
            try:
                key_id, encoded = text.split()
                key = base64.b64decode(encoded, validate=True)
            except ValueError:
                raise ShoalError(f"{self.path}: not a shoal secrets key") from None
            if len(key) != 32:
                raise ShoalError(f"{self.path}: the key must be 32 bytes, it is {len(key)}")
            self._cached = (key_id, key)
        return self._cached

    def _create(self) -> None:
        """A new key, written whole before it is linked into place: of two processes making one
        at once, the first link wins and both use it."""
        paths.ensure_private_dir(self.directory)
        tmp = self.directory / f".{KEY_FILE}.{os.getpid()}.{secrets.token_hex(4)}"
        line = f"{secrets.token_hex(8)} {base64.b64encode(secrets.token_bytes(32)).decode()}\n"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(tmp, self.path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
        dfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def current(self) -> tuple[str, bytes]:
        found = self._read()
        if found is None:
            self._create()
            found = self._read()
            assert found is not None
        return found

    def get(self, key_id: str) -> bytes:
        found = self._read()
        if found is None or found[0] != key_id:
            raise ShoalError(f"a secret is sealed with key {key_id}, which is not in {self.path}")
        return found[1]


_keys: dict[Path, FileKeys] = {}


def default_keys() -> FileKeys:
    """The node's key file under the current state root (one reader per root and process)."""
    directory = paths.state_root() / "keys"
    return _keys.setdefault(directory, FileKeys(directory))


def binding(kind: str, name: str) -> bytes:
    """The associated data tying a record to one object."""
    return f"shoal {kind} {name}".encode()


def seal(data: bytes, aad: bytes, keys: KeySource | None = None) -> dict[str, str]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM  # only where secrets are used

    key_id, key = (keys or default_keys()).current()
    nonce = secrets.token_bytes(12)  # random: at 2^32 records per key the collision odds stay negligible
    sealed = AESGCM(key).encrypt(nonce, data, aad)
    return {"alg": ALG, "kid": key_id, "nonce": base64.b64encode(nonce).decode(),
            "ct": base64.b64encode(sealed).decode()}


def unseal(record: Any, aad: bytes, keys: KeySource | None = None) -> bytes:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    if not isinstance(record, dict) or record.get("alg") != ALG:
        raise ShoalError(f"unknown sealed record (alg {record.get('alg') if isinstance(record, dict) else None!r})")
    key = (keys or default_keys()).get(str(record.get("kid")))
    try:
        return AESGCM(key).decrypt(base64.b64decode(record["nonce"]), base64.b64decode(record["ct"]), aad)
    except (InvalidTag, KeyError, ValueError):
        raise ShoalError("a sealed secret does not open with its key: it was altered or moved") from None


def fingerprint(data: bytes, aad: bytes, keys: KeySource | None = None) -> str:
    """What says a secret changed, without a plain hash of it (which would let anyone who reads a
    service spec try guesses at a short password): an HMAC under the current key."""
    _, key = (keys or default_keys()).current()
    return "hmac-sha256:" + hmac.new(key, aad + b"\0" + data, hashlib.sha256).hexdigest()


def content(kind: str, obj: dict[str, Any], keys: KeySource | None = None) -> bytes:
    """The data of a stored secret or config object (a secret stored before sealing, with its
    data in the clear, still opens until the store seals it)."""
    if "sealed" in obj:
        return unseal(obj["sealed"], binding(kind, obj["name"]), keys)
    return base64.b64decode(obj["data"])
