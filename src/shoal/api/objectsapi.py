"""Docker's /secrets and /configs routes on shoald: thin handlers over manager/controlapi/secrets.py,
added to the app api/server.py makes (the unix socket, and the cluster listener's manager door).

    POST   /secrets/create      {Name, Labels, Data (base64), Driver, Templating} -> 201 {ID}
    GET    /secrets             ?filters={"name": [...], "id": [...], "label": [...], "names": [...]}
    GET    /secrets/{ref}       one secret (full ID, name, or unique ID prefix)
    DELETE /secrets/{ref}       204; 400 while a service uses it
    (the same for /configs)

A secret's data is never in an answer; a config's is (Spec.Data, base64), as in Docker's API."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from typing import TYPE_CHECKING, Any

from aiohttp import web

from shoal.api import API_VERSION
from shoal.errors import InvalidArgument
from shoal.manager.controlapi import secrets as objects

if TYPE_CHECKING:
    from shoal.daemon import Daemon


def parse_filters(text: str | None) -> dict[str, list[str]]:
    """Docker's `filters` query: JSON, each key to a list of values or to {value: true}."""
    if not text:
        return {}
    try:
        raw = json.loads(text)
    except ValueError:
        raise InvalidArgument(f"invalid filter: {text[:40]!r} is not JSON") from None
    if not isinstance(raw, dict):
        raise InvalidArgument("invalid filter: a JSON object is expected")
    out: dict[str, list[str]] = {}
    for key, values in raw.items():
        if isinstance(values, dict):
            values = [v for v, on in values.items() if on]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise InvalidArgument(f"invalid filter '{key}': a list of strings is expected")
        out[key] = values
    return out


def _driver_name(body: dict[str, Any], key: str) -> str:
    value = body.get(key)
    if value is None:
        return ""
    if not isinstance(value, dict) or not isinstance(value.get("Name", ""), str):
        raise InvalidArgument(f'{key}: {{"Name": "<driver>"}} is expected')
    return str(value.get("Name", ""))


def add_routes(app: web.Application, daemon: Daemon, body: Any) -> None:
    """`body` is api/server.py's JSON body reader (its 400s and 413s)."""
    routes = web.RouteTableDef()
    prefix = f"/{API_VERSION}"
    store = daemon.store

    for kind in ("secret", "config"):
        def bind(kind: str) -> None:
            @routes.post(f"{prefix}/{kind}s/create")
            async def create(request: web.Request) -> web.Response:
                b = await body(request)
                name = b.get("Name")
                if not isinstance(name, str):
                    raise InvalidArgument("Name: a string is expected")
                encoded = b.get("Data") or ""
                if not isinstance(encoded, str):
                    raise InvalidArgument("Data: base64 is expected")
                try:
                    data = base64.b64decode(encoded, validate=True)
                except (binascii.Error, ValueError):
                    raise InvalidArgument("Data: base64 is expected") from None
                labels = objects.validate_labels(b.get("Labels"))
                made = await asyncio.to_thread(objects.create, store, kind, name, data, labels,
                                               _driver_name(b, "Templating"),
                                               _driver_name(b, "Driver") if kind == "secret" else "")
                return web.json_response({"ID": made.id}, status=201)

            @routes.get(f"{prefix}/{kind}s")
            async def list_(request: web.Request) -> web.Response:
                filters = parse_filters(request.query.get("filters"))
                found = objects.list_objects(store, kind, filters)
                return web.json_response([o.to_api(kind) for o in found])

            @routes.get(prefix + f"/{kind}s/{{ref}}")
            async def inspect(request: web.Request) -> web.Response:
                return web.json_response(objects.get(store, kind, request.match_info["ref"]).to_api(kind))

            @routes.delete(prefix + f"/{kind}s/{{ref}}")
            async def remove(request: web.Request) -> web.Response:
                await asyncio.to_thread(objects.remove, store, kind, request.match_info["ref"])
                daemon.kick()
                return web.Response(status=204)

        bind(kind)
    app.add_routes(routes)
