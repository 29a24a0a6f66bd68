"""`shoal login` / `logout` and authenticated push/pull against real registries: htpasswd
(Basic) and token auth (a token server in the test signing RS256 JWTs the registry verifies)."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import ROOT_ONLY, run_shoal
from registry_helpers import TokenServer, htpasswd_auth, run_registry

pytestmark = [ROOT_ONLY]

USER, PASSWORD = "shoaluser", "s3cret-pass"


class Shoal:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "config.json"
        self.env = {"SHOAL_ROOT": str(root), "SHOAL_RUN": str(root / "run"), "SHOAL_CONFIG": str(self.config)}

    def __call__(self, *args: str, input: str | None = None, check: bool = False):
        return run_shoal(*args, input=input, check=check, env=self.env)


@pytest.fixture(scope="module")
def store_root(tmp_path_factory: pytest.TempPathFactory, busybox_tar: Path) -> Path:
    """One store for the module (busybox imported once); each test has its own credentials."""
    root = tmp_path_factory.mktemp("auth-store")
    Shoal(root)("import", str(busybox_tar), "localhost/busybox:test", check=True)
    return root


@pytest.fixture
def user(tmp_path: Path, store_root: Path) -> Shoal:
    s = Shoal(store_root)
    s.config = tmp_path / "config.json"
    s.env["SHOAL_CONFIG"] = str(s.config)
    return s


@pytest.fixture(scope="module")
def basic_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("basic-registry")
    with run_registry(work, htpasswd_auth(work, USER, PASSWORD)) as address:
        yield address


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, TokenServer]]:
    work = tmp_path_factory.mktemp("token-registry")
    with TokenServer(work, USER, PASSWORD) as tokens, run_registry(work, tokens.registry_auth()) as address:
        yield address, tokens


def test_basic_auth_login_push_pull_logout(user: Shoal, basic_registry: str) -> None:
    ref = f"{basic_registry}/private/web:v1"
    user("tag", "localhost/busybox:test", ref, check=True)

    denied = user("push", ref)
    assert denied.returncode == 1
    assert re.search(r'Error: (Head|Get|Post) "http://127\.0\.0\.1:\d+/v2/private/web/.*": no basic auth credentials',
                     denied.stderr), denied.stderr

    wrong = user("login", "-u", USER, "--password-stdin", basic_registry, input="not-it\n")
    assert wrong.returncode == 1
    assert wrong.stderr.strip().endswith(
        f"Error: login attempt to http://{basic_registry}/v2/ failed with status: 401 Unauthorized")
    assert not user.config.exists()

    ok = user("login", "-u", USER, "--password-stdin", basic_registry, input=PASSWORD + "\n")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == "Login Succeeded"
    auths = json.loads(user.config.read_text())["auths"]
    assert base64.b64decode(auths[basic_registry]["auth"]).decode() == f"{USER}:{PASSWORD}"
    assert user.config.stat().st_mode & 0o077 == 0

    pushed = user("push", ref, check=True)
    assert re.search(r"^v1: digest: sha256:[0-9a-f]{64} size: \d+$", pushed.stdout, re.M)
    user("rmi", ref, check=True)
    pulled = user("pull", ref, check=True)
    # The image is still there under its other name: only the tag is new, nothing is downloaded.
    assert f"Status: Downloaded newer image for {ref}" in pulled.stdout
    assert "Pull complete" not in pulled.stdout

    out = user("logout", basic_registry, check=True)
    assert out.stdout.strip() == f"Removing login credentials for {basic_registry}"
    assert basic_registry not in json.loads(user.config.read_text())["auths"]
    again = user("logout", basic_registry, check=True)
    assert again.stdout.strip() == f"Not logged in to {basic_registry}"
    assert user("pull", ref).returncode == 1


def test_wrong_stored_credentials(user: Shoal, basic_registry: str) -> None:
    user.config.parent.mkdir(parents=True, exist_ok=True)
    bad = base64.b64encode(f"{USER}:wrong".encode()).decode()
    user.config.write_text(json.dumps({"auths": {basic_registry: {"auth": bad}}}))
    proc = user("pull", f"{basic_registry}/private/web:v1")
    assert proc.returncode == 1
    assert "unauthorized: authentication required" in proc.stderr


def test_password_flag_warns_and_stdin_needs_username(user: Shoal, basic_registry: str) -> None:
    proc = user("login", "-u", USER, "-p", PASSWORD, basic_registry)
    assert proc.returncode == 0
    assert "WARNING! Using --password via the CLI is insecure. Use --password-stdin." in proc.stderr
    proc = user("login", "--password-stdin", basic_registry, input=PASSWORD)
    assert proc.returncode == 125
    assert proc.stderr.strip() == "Error: Must provide --username with --password-stdin"


def test_token_auth(user: Shoal, token_registry: tuple[str, TokenServer]) -> None:
    address, tokens = token_registry
    ref = f"{address}/team/app:v1"
    user("tag", "localhost/busybox:test", ref, check=True)

    anonymous = user("push", ref)
    assert anonymous.returncode == 1  # the token server grants anonymous users nothing

    wrong = user("login", "-u", USER, "--password-stdin", address, input="nope\n")
    assert wrong.returncode == 1
    assert "unauthorized: incorrect username or password" in wrong.stderr

    user("login", "-u", USER, "--password-stdin", address, input=PASSWORD, check=True)
    pushed = user("push", ref, check=True)
    assert re.search(r"^[0-9a-f]{12}: Pushed$", pushed.stdout, re.M), pushed.stdout
    scopes = {s for r in tokens.requests for s in r["query"].get("scope", [])}
    assert "repository:team/app:pull,push" in scopes
    assert all(r["query"].get("service") == [TokenServer.SERVICE] for r in tokens.requests)

    # A second repository mounts the layer from the first: the token must cover both scopes.
    user("tag", ref, f"{address}/team/other:v1", check=True)
    mounted = user("push", f"{address}/team/other:v1", check=True)
    assert "repository:team/app:pull" in {s for r in tokens.requests for s in r["query"].get("scope", [])}
    assert re.search(r"^[0-9a-f]{12}: Mounted from team/app$", mounted.stdout, re.M), mounted.stdout

    fresh = Shoal(user.config.parent / "fresh")
    fresh.config.parent.mkdir(parents=True, exist_ok=True)
    fresh.config.write_text(user.config.read_text())
    pulled = fresh("pull", ref, check=True)
    assert "Pull complete" in pulled.stdout and f"Status: Downloaded newer image for {ref}" in pulled.stdout


def test_login_reuses_stored_credentials_and_prompts_without_flags(user: Shoal, basic_registry: str) -> None:
    prompted = user("login", basic_registry, input=f"{USER}\n{PASSWORD}\n")
    assert prompted.returncode == 0, prompted.stderr
    assert prompted.stdout.startswith("Username: ") and prompted.stdout.rstrip().endswith("Login Succeeded")
    again = user("login", basic_registry, input="")
    assert again.returncode == 0, again.stderr
    assert again.stdout.splitlines() == ["Authenticating with existing credentials...", "Login Succeeded"]
