"""A service's registry credentials (`--with-registry-auth`), kept by the manager as Swarm keeps
TaskTemplate.ContainerSpec.PullOptions.RegistryAuth, but sealed (store/secretbox.py) like a
secret's data and apart from the service record: the record is what `service inspect`, `service
ls` and the store's events show, and the credentials must never be among them.

One object per service, kind "registry_auth", keyed by the service's ID:
    {"id": <service ID>, "current": <sealed value or null>, "previous": <sealed value or null>}
`previous` goes with the service's previous spec, so a rollback gets the credentials that spec
had (moby's registryAuthFrom "previous-spec"). The sealed value is the encoded auth config as
the client sent it (image/registryauth.py); the dispatcher unseals it into the assignments of
the nodes that run the service's tasks (manager/dispatcher.py)."""

from __future__ import annotations

from typing import Any

from shoal.image import registryauth
from shoal.store import secretbox
from shoal.store.base import Store, Transaction

KIND = "registry_auth"


def checked(value: Any) -> str | None:
    """The request's `registry_auth`: None when absent, "" when it carries no credentials (`{}`,
    or an explicit empty string: clear them), else the encoded value, its shape checked."""
    if value is None:
        return None
    if value == "":
        return ""
    return value if registryauth.decode(value) is not None else ""


def _aad(service_id: str) -> bytes:
    return secretbox.binding(KIND, service_id)


def _seal(service_id: str, encoded: str) -> dict[str, str] | None:
    return secretbox.seal(encoded.encode(), _aad(service_id)) if encoded else None


def put(tx: Transaction, service_id: str, encoded: str | None, rollback: bool = False) -> None:
    """After a create or update of the service in the same transaction. `encoded` None keeps
    the credentials (docker/cli sends them only when --with-registry-auth is given: moby keeps
    the current spec's, or on a rollback the previous spec's); "" clears them."""
    existing = tx.get(KIND, service_id)
    current = existing.get("current") if existing else None
    previous = existing.get("previous") if existing else None
    if rollback:
        new_current, new_previous = (previous, current) if encoded is None else (_seal(service_id, encoded), current)
    else:
        new_current = current if encoded is None else _seal(service_id, encoded)
        new_previous = current
    record = {"id": service_id, "current": new_current, "previous": new_previous}
    if existing is None:
        if new_current is None and new_previous is None:
            return
        tx.create(KIND, record)
    else:
        tx.update(KIND, dict(record, version=existing.get("version")), expect_version=None)


def remove(tx: Transaction, service_id: str) -> None:
    if tx.get(KIND, service_id) is not None:
        tx.delete(KIND, service_id)


def unsealed(obj: dict[str, Any]) -> bytes:
    """The encoded credentials of a stored object's current value (the caller checked it has one)."""
    return secretbox.unseal(obj["current"], _aad(obj["id"]))


def current(store: Store, service_id: str) -> str | None:
    """The encoded credentials the service's tasks pull with, unsealed; None when it has none."""
    obj = store.get(KIND, service_id)
    if not obj or not obj.get("current"):
        return None
    return unsealed(obj).decode()
