"""`--with-registry-auth`: the client's credentials for an image's registry, encoded as Docker's
X-Registry-Auth value (docker/cli registry.EncodeAuthConfig: base64url of the JSON AuthConfig
`{"username", "password", "serveraddress"}`), so the manager can hand them to the nodes that pull
the service's image. The same value travels in the create/update/deploy request body, never on a
command line; the manager keeps it sealed (manager/registryauth.py)."""

from __future__ import annotations

import base64
import binascii
import json

from shoal.errors import InvalidArgument
from shoal.image import reference as refs
from shoal.image.auth import Credentials, load_credentials, server_key

# A generous bound: a username, a password or token and a server name.
MAX_ENCODED = 16 * 1024


def encode(creds: Credentials | None, server: str) -> str:
    """Docker's encoding; no credentials give `{}`'s encoding, as docker/cli sends for a registry
    it has no login for (the manager then keeps no credentials for the service)."""
    config: dict[str, str] = {}
    if creds is not None:
        config = {"username": creds.username, "password": creds.password, "serveraddress": server}
    return base64.urlsafe_b64encode(json.dumps(config, separators=(",", ":")).encode()).decode()


def for_image(image: str) -> str:
    """docker/cli command.RetrieveAuthTokenFromImage: the stored credentials of the registry the
    image reference names (Docker Hub for a bare name)."""
    try:
        ref = refs.parse_normalized(image)
    except Exception:  # noqa: BLE001 - the manager names a bad image; here, no credentials
        return encode(None, "")
    return encode(load_credentials(ref.domain), server_key(ref.domain))


def decode(value: object, what: str = "registry_auth") -> tuple[Credentials, str] | None:
    """(credentials, server) from an encoded value; None for `{}` (no credentials). A value that
    is not Docker's shape is the client's error, naming `what`."""
    if not isinstance(value, str) or len(value) > MAX_ENCODED:
        raise InvalidArgument(f"{what}: must be a base64-encoded JSON auth config")
    try:
        padded = value + "=" * (-len(value) % 4)
        raw = base64.urlsafe_b64decode(padded.replace("+", "-").replace("/", "_"))
        config = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise InvalidArgument(f"{what}: must be a base64-encoded JSON auth config") from None
    if not isinstance(config, dict) or any(not isinstance(v, str) for v in config.values()):
        raise InvalidArgument(f"{what}: the auth config must be a JSON object of strings")
    username, password = config.get("username", ""), config.get("password", "")
    if not username and not password:
        return None
    if not username or not password:
        raise InvalidArgument(f"{what}: the auth config needs both username and password")
    return Credentials(username, password), config.get("serveraddress", "")
