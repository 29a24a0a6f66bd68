"""Secrets and configs: stored by the manager with their content, versioned by digest.

Swarm refuses to change a secret's data (`only updates to Labels are allowed`), so a changed file
needs a new name and a manual roll. shoal keeps the name and records the content's digest in
every service reference: a changed secret or config makes the tasks that use it dirty, and the
service rolls as for any other change (users have asked for this for years).

A secret's data is sealed (store/secretbox.py) before it is stored, and its digest is an HMAC under
the node's key, never a plain hash; a config's data is stored as sent (base64), as Swarm does."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

from shoal.errors import NotFound
from shoal.ids import new_swarm_id
from shoal.manager.controlapi import secrets as objects
from shoal.store import secretbox
from shoal.store.base import Transaction

KINDS = ("secret", "config")


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def stored_content(kind: str, name: str, data: bytes) -> dict[str, Any]:
    """The fields that keep an object's data in the store: sealed for a secret."""
    if kind == "secret":
        aad = secretbox.binding(kind, name)
        return {"sealed": secretbox.seal(data, aad), "digest": secretbox.fingerprint(data, aad)}
    return {"data": base64.b64encode(data).decode(), "digest": digest(data)}


def apply_files(tx: Transaction, stack: dict[str, Any], contents: dict[str, dict[str, str]]) -> list[str]:
    """Create or update the stack's secrets and configs (contents: kind -> name -> base64) and
    stamp each service reference with the digest of what it will mount. Docker's lines."""
    lines: list[str] = []
    digests: dict[tuple[str, str], str] = {}
    for kind in KINDS:
        for spec in sorted(stack.get(f"{kind}s", {}).values(), key=lambda s: s["name"]):
            existing = next((o for o in tx.list(kind) if o["name"] == spec["name"]), None)
            if spec.get("external"):
                # One no service uses need not exist (docker/cli looks up only references).
                if existing is not None:
                    digests[(kind, spec["name"])] = existing["digest"]
                continue
            encoded = contents.get(kind, {}).get(spec["name"])
            if encoded is None:
                raise NotFound(f"{kind} {spec['name']}: no content was sent for it")
            data = base64.b64decode(encoded)
            # The same rules as `secret create` (one kind of object, whoever makes it).
            objects.validate_name(spec["name"])
            objects.validate_data(kind, data)
            objects.validate_template_driver(spec.get("template_driver") or "")
            # A secret made by `secret create` stays the user's: `stack rm` does not remove it.
            owner = stack["name"] if existing is None or existing.get("stack") else ""
            record = {"name": spec["name"], "stack": owner, "labels": spec.get("labels") or {},
                      **stored_content(kind, spec["name"], data), "updated_at": time.time()}
            if spec.get("template_driver"):
                record["template_driver"] = spec["template_driver"]
            if existing is None:
                lines.append(f"Creating {kind} {spec['name']}")
                tx.create(kind, dict(record, id=new_swarm_id(), created_at=record["updated_at"]))
            elif (existing["digest"] != record["digest"] or existing.get("labels") != record["labels"]
                  or existing.get("template_driver", "") != record.get("template_driver", "")):
                lines.append(f"Updating {kind} {spec['name']}")
                tx.update(kind, {k: v for k, v in dict(existing, **record).items() if k != "data" or kind != "secret"})
            digests[(kind, spec["name"])] = record["digest"]
    for svc in stack.get("services", {}).values():
        for kind in KINDS:
            for ref in svc.get(f"{kind}s") or []:
                if (kind, ref["source"]) not in digests:
                    found = next((o for o in tx.list(kind) if o["name"] == ref["source"]), None)
                    if found is None:
                        raise NotFound(f"service {svc.get('compose_name') or svc['name']}: "
                                       f"{kind} not found: {ref['source']}")
                    digests[(kind, ref["source"])] = found["digest"]
                ref["digest"] = digests[(kind, ref["source"])]
    return lines


def remove_files(tx: Transaction, stack: str) -> list[str]:
    lines = []
    for kind in KINDS:
        for obj in sorted((o for o in tx.list(kind) if o.get("stack") == stack), key=lambda o: o["name"]):
            lines.append(f"Removing {kind} {obj['name']}")
            tx.delete(kind, obj["id"])
    return lines
