"""`service create --with-registry-auth` against a real authenticated registry (Debian's
docker-registry with htpasswd): the image is only in that registry; the client's credentials
(`shoal login`) reach the node through the manager and its assignment, and the task runs; without
the flag the task is REJECTED with the registry's auth error. The password is nowhere in the
manager's store (shoald.db and its WAL), in the node's (worker/tasks.db), or in what `service
inspect` and GET /services answer."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT_ONLY, poll
from tests.integration.registry_helpers import htpasswd_auth, run_registry

pytestmark = ROOT_ONLY

USER, PASSWORD = "h12user", "h12-Pass-4f1c9e"


def _tasks(service: str) -> list[dict[str, Any]]:
    from shoal.api.client import connect

    with connect() as client:
        return list(client.get("/tasks", service=service))


def _state(service: str, wanted: str) -> dict[str, Any] | None:
    return next((t for t in _tasks(service) if t["status"]["state"] == wanted), None)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    work = tmp_path / "registry"
    with run_registry(work, htpasswd_auth(work, USER, PASSWORD)) as address:
        yield address


def test_with_registry_auth_reaches_the_node(shoal, busybox_image: str, registry: str, tmp_path: Path) -> None:
    shoal("service", "ls", check=True)  # shoald runs (with no credentials of its own) before the login
    client_env = {"SHOAL_CONFIG": str(tmp_path / "client-config.json")}
    ref = f"{registry}/private/h12:v1"
    shoal("login", "-u", USER, "--password-stdin", registry, input=PASSWORD + "\n", env=client_env, check=True)
    shoal("tag", busybox_image, ref, check=True)
    shoal("push", ref, env=client_env, check=True)
    stack_ref = f"{registry}/private/h12stack:v1"
    shoal("tag", busybox_image, stack_ref, check=True)
    shoal("push", stack_ref, env=client_env, check=True)
    shoal("rmi", ref, stack_ref, check=True)  # now only the authenticated registry has them by these names
    compose = tmp_path / "compose.yaml"
    compose.write_text(f"services:\n  web:\n    image: {stack_ref}\n    command: [sleep, '300']\n")
    try:
        made = shoal("service", "create", "-d", "--name", "h12_noauth", ref, "sleep", "300", env=client_env)
        assert made.returncode == 0, made.stderr
        rejected = poll(lambda: _state("h12_noauth", "rejected"), 60, "the task without credentials rejected")
        err = rejected["status"]["err"]
        assert err.startswith(f"No such image: {ref}"), err
        assert "no basic auth credentials" in err, err

        made = shoal("service", "create", "-d", "--with-registry-auth", "--name", "h12_auth", ref, "sleep", "300",
                     env=client_env)
        assert made.returncode == 0, made.stderr
        poll(lambda: _state("h12_auth", "running"), 90, "the task with the client's credentials running")

        # An update without the flag keeps the credentials (docker/cli sends none, moby keeps them).
        shoal("service", "update", "-d", "--env-add", "X=1", "h12_auth", env=client_env, check=True)
        from shoal.manager.registryauth import KIND

        with_auth = json.loads(shoal("service", "inspect", "h12_auth", check=True).stdout)[0]["ID"]
        shown = shoal("service", "inspect", "h12_auth", check=True).stdout
        from shoal.api.client import connect

        with connect() as client:
            listed = json.dumps(client.get("/services")) + json.dumps(client.get(f"/services/{with_auth}"))
        for text in (shown, listed):
            assert PASSWORD not in text and "registry_auth" not in text and USER not in text

        root = Path(os.environ["SHOAL_ROOT"])
        stores = [p for p in root.rglob("*") if p.is_file() and (p.name.startswith("shoald.db") or
                                                                   p.name.startswith("tasks.db"))]
        assert any(p.name == "shoald.db" for p in stores) and any(p.name == "tasks.db" for p in stores), stores
        from shoal.image.registryauth import for_image

        os.environ["SHOAL_CONFIG"], saved = client_env["SHOAL_CONFIG"], os.environ.get("SHOAL_CONFIG")
        try:
            encoded = for_image(ref)
        finally:
            if saved is None:
                os.environ.pop("SHOAL_CONFIG")
            else:
                os.environ["SHOAL_CONFIG"] = saved
        for path in stores:
            data = path.read_bytes()
            assert PASSWORD.encode() not in data and encoded.encode() not in data, path
        # ... and yet it is there, sealed, for the service, and kept by the update.
        manager_db = next(p for p in stores if p.name == "shoald.db")
        with sqlite3.connect(f"file:{manager_db}?mode=ro", uri=True) as db:
            rows = [json.loads(r[0]) for r in db.execute("SELECT data FROM objects WHERE kind=? AND id=?",
                                                           (KIND, with_auth))]
        assert rows and rows[0]["current"]["alg"] == "AES-256-GCM" and rows[0]["previous"], rows

        # stack deploy --with-registry-auth: each service's image's credentials, the same road.
        deployed = shoal("stack", "deploy", "-d", "--with-registry-auth", "-c", str(compose), "h12s", env=client_env)
        assert deployed.returncode == 0, deployed.stderr
        poll(lambda: _state("h12s_web", "running"), 90, "the stack's task with the client's credentials running")
    finally:
        shoal("stack", "rm", "h12s")
        for name in ("h12_noauth", "h12_auth"):
            shoal("service", "rm", name)
        shoal("rmi", "-f", ref, stack_ref)
        shoal("logout", registry, env=client_env)
