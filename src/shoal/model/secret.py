"""Secrets and configs as the manager stores them, and as Docker's API shows them.

One record type for both kinds (swarmkit's Secret and Config differ only in that a secret's data is
never shown and may come from a driver). The stored JSON keeps the shape manager/files.py has
always written, so existing stores load: {id, name, stack, labels, sealed | data, digest,
created_at, updated_at, version}. A secret's data is `sealed` (store/secretbox.py); a config's is
`data`, base64, as Swarm keeps it."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from shoal.model import _serde

KINDS = ("secret", "config")

# swarmkit api/validation MaxSecretSize and controlapi MaxConfigSize: data must be shorter.
MAX_SIZE = {"secret": 500 * 1024, "config": 1000 * 1024}
# swarmkit controlapi isValidConfigOrSecretName.
NAME_PATTERN = r"^[a-zA-Z0-9]+(?:[a-zA-Z0-9-_.]*[a-zA-Z0-9])?$"
TEMPLATE_DRIVERS = ("golang",)


def go_time(ts: float) -> str:
    """Go's time.Time as encoding/json writes it (RFC3339Nano: trailing zeros of the fraction
    dropped, no fraction at all when it is zero)."""
    if not ts:
        return "0001-01-01T00:00:00Z"
    whole = int(ts)
    nanos = round((ts - whole) * 1e9)
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, 0
    text = datetime.fromtimestamp(whole, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    fraction = f"{nanos:09d}".rstrip("0")
    return f"{text}.{fraction}Z" if fraction else f"{text}Z"


@dataclass
class FileObject:
    """A secret or a config. `kind` is not stored (the store's kind says it)."""

    id: str
    name: str
    digest: str
    labels: dict[str, str] = field(default_factory=dict)
    created_at: float = 0.0
    updated_at: float = 0.0
    stack: str = ""  # the stack that made it (removed with it); "" for `secret create`
    template_driver: str = ""  # "golang" for a templated config or secret
    sealed: dict[str, str] | None = None  # a secret's data, sealed
    data: str | None = None  # a config's data, base64
    version: int = 0

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> FileObject:
        return _serde.from_dict(cls, dict(raw))

    def to_dict(self) -> dict[str, Any]:
        out = _serde.to_dict(self)
        for key in ("sealed", "data"):
            if out[key] is None:
                del out[key]
        if not out["template_driver"]:
            del out["template_driver"]
        return out

    def to_api(self, kind: str) -> dict[str, Any]:
        """Docker's swarm.Secret / swarm.Config, keys in Go's field order. A secret's data is
        never in it; a config's is (base64, as encoding/json writes []byte)."""
        spec: dict[str, Any] = {"Name": self.name, "Labels": {k: self.labels[k] for k in sorted(self.labels)}}
        if kind == "config" and self.data is not None:
            spec["Data"] = self.data
        if self.template_driver:
            spec["Templating"] = {"Name": self.template_driver}
        return {"ID": self.id, "Version": {"Index": self.version}, "CreatedAt": go_time(self.created_at),
                "UpdatedAt": go_time(self.updated_at), "Spec": spec}

    def config_data(self) -> bytes:
        return base64.b64decode(self.data or "")
