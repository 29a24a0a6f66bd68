"""Every route shoald serves is in docs/api/openapi.yaml, and the document lists no route the
daemon does not serve: the description cannot drift from the code."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from shoal.api.server import make_app

DOC = Path(__file__).resolve().parents[2] / "docs" / "api" / "openapi.yaml"


class _FakeDaemon:
    """make_app only reads attributes when a request arrives; routing needs none."""

    store = None
    node_id = ""
    is_worker = False  # a manager: every route


def test_openapi_lists_exactly_the_served_routes() -> None:
    app = make_app(_FakeDaemon())  # type: ignore[arg-type]
    served = set()
    for route in app.router.routes():
        if route.method == "HEAD":
            continue
        path = route.resource.canonical if route.resource else ""
        served.add((route.method.lower(), re.sub(r"^/v1", "", path)))
    doc = yaml.safe_load(DOC.read_text())
    documented = {(method, path) for path, ops in doc["paths"].items()
                  for method in ops if method in ("get", "post", "delete", "put", "patch")}
    assert served == documented
