"""Registry pieces that need no registry: challenge parsing, the credentials file, platform
choice from an index, Docker's error wording, the progress display."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shoal.errors import NotFound
from shoal.image import auth
from shoal.image.registry import Platform, _pull_error, choose_platform, host_platform, parse_platform
from shoal.image.registry_client import (
    RegistryError,
    base_url,
    error_from_response,
    is_insecure,
    manifest_media_type,
)
from shoal.image.registry_progress import ProgressDisplay, progress_bar
from shoal.image.reference import parse


def test_parse_bearer_and_basic_challenges() -> None:
    [bearer] = auth.parse_challenges([
        'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
        'scope="repository:library/web:pull,push"'])
    assert bearer.scheme == "bearer"
    assert bearer.params == {"realm": "https://auth.docker.io/token", "service": "registry.docker.io",
                             "scope": "repository:library/web:pull,push"}
    [basic] = auth.parse_challenges(['Basic realm="my \\"quoted\\" realm"'])
    assert basic.scheme == "basic" and basic.params == {"realm": 'my "quoted" realm'}
    both = auth.parse_challenges(["Basic realm=x", "Bearer realm=https://a/t, service=s"])
    assert [c.scheme for c in both] == ["basic", "bearer"]
    assert both[1].params == {"realm": "https://a/t", "service": "s"}


def test_credentials_round_trip_in_a_docker_config(tmp_path: Path) -> None:
    path = tmp_path / "cfg" / "config.json"
    path.parent.mkdir()
    path.write_text(json.dumps({"auths": {}, "psFormat": "table {{.ID}}"}))
    auth.store_credentials("127.0.0.1:5000", auth.Credentials("me", "p:w"), path)
    auth.store_credentials("docker.io", auth.Credentials("hub", "pw"), path)
    data = json.loads(path.read_text())
    assert data["psFormat"] == "table {{.ID}}"  # other settings are kept
    assert base64.b64decode(data["auths"]["127.0.0.1:5000"]["auth"]) == b"me:p:w"
    assert "https://index.docker.io/v1/" in data["auths"]
    assert path.stat().st_mode & 0o777 == 0o600
    assert auth.load_credentials("127.0.0.1:5000", path) == auth.Credentials("me", "p:w")
    assert auth.load_credentials("docker.io", path) == auth.Credentials("hub", "pw")
    assert auth.load_credentials("other:1", path) is None
    assert auth.erase_credentials("127.0.0.1:5000", path)
    assert not auth.erase_credentials("127.0.0.1:5000", path)
    assert auth.load_credentials("127.0.0.1:5000", path) is None


def test_credentials_written_by_docker_with_a_scheme(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    encoded = base64.b64encode(b"u:p").decode()
    path.write_text(json.dumps({"auths": {"https://reg.example.com/v1/": {"auth": encoded}}}))
    assert auth.load_credentials("reg.example.com", path) == auth.Credentials("u", "p")


def test_server_key() -> None:
    assert auth.server_key("docker.io") == "https://index.docker.io/v1/"
    assert auth.server_key("http://localhost:5000/") == "localhost:5000"
    assert auth.server_key("reg.example.com") == "reg.example.com"


def test_insecure_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SHOAL_INSECURE_REGISTRIES", raising=False)
    assert is_insecure("127.0.0.1:5000") and is_insecure("localhost") and is_insecure("localhost:5000")
    assert not is_insecure("reg.example.com")
    assert base_url("reg.example.com:443") == "https://reg.example.com:443"
    assert base_url("docker.io") == "https://registry-1.docker.io"
    monkeypatch.setenv("SHOAL_INSECURE_REGISTRIES", "reg.example.com, other:5000")
    assert base_url("reg.example.com") == "http://reg.example.com"
    assert is_insecure("other:5000")


INDEX = {
    "manifests": [
        {"digest": "sha256:" + "1" * 64, "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
        {"digest": "sha256:" + "2" * 64, "platform": {"os": "linux", "architecture": "arm64", "variant": "v8"}},
        {"digest": "sha256:" + "3" * 64, "platform": {"os": "linux", "architecture": "amd64"}},
        {"digest": "sha256:" + "4" * 64, "platform": {"os": "unknown", "architecture": "unknown"},
         "annotations": {"vnd.docker.reference.type": "attestation-manifest"}},
        {"digest": "sha256:" + "5" * 64, "platform": {"os": "windows", "architecture": "amd64"}},
    ]
}


def test_choose_platform() -> None:
    assert choose_platform(INDEX, Platform("linux", "amd64"))["digest"] == "sha256:" + "3" * 64
    assert choose_platform(INDEX, parse_platform("linux/arm64"))["digest"] == "sha256:" + "2" * 64
    assert choose_platform(INDEX, parse_platform("linux/arm/v7"))["digest"] == "sha256:" + "1" * 64
    assert choose_platform(INDEX, parse_platform("windows/amd64"))["digest"] == "sha256:" + "5" * 64
    with pytest.raises(NotFound, match="no matching manifest for linux/arm/v6 in the manifest list entries"):
        choose_platform(INDEX, parse_platform("linux/arm/v6"))
    assert host_platform().os == "linux"


def _response(status: int, body: object, headers: dict[str, str] | None = None) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.Response(status, content=content, headers=headers or {},
                          request=httpx.Request("GET", "http://r/v2/x/manifests/y"))


def test_error_wording_as_docker() -> None:
    ref = parse("127.0.0.1:5000/web:nope")
    err = error_from_response(_response(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown",
                                                          "detail": {"Tag": "nope"}}]}))
    assert str(_pull_error(err, ref)) == "manifest for 127.0.0.1:5000/web:nope not found: manifest unknown: manifest unknown"
    err = error_from_response(_response(401, {"errors": [{"code": "DENIED",
                                                          "message": "requested access to the resource is denied"}]}))
    assert str(_pull_error(err, parse("private"))) == (
        "pull access denied for private, repository does not exist or may require 'docker login': "
        "denied: requested access to the resource is denied")
    err = error_from_response(_response(404, {"errors": [{"code": "NAME_UNKNOWN",
                                                          "message": "repository name not known to registry"}]}))
    assert str(_pull_error(err, parse("reg.io/a/b"))) == (
        "repository reg.io/a/b not found: name unknown: repository name not known to registry")
    assert str(error_from_response(_response(401, {"errors": [{"code": "UNAUTHORIZED"}]}))) == \
        "unauthorized: authentication required"
    plain = error_from_response(_response(502, b"<html>bad gateway</html>"))
    assert isinstance(plain, RegistryError) and str(plain) == "received unexpected HTTP status: 502 Bad Gateway"


def test_manifest_media_type() -> None:
    assert manifest_media_type(b'{"mediaType":"application/vnd.oci.image.index.v1+json"}', None) == \
        "application/vnd.oci.image.index.v1+json"
    assert manifest_media_type(b'{"schemaVersion":2,"config":{},"layers":[]}', "text/plain") == \
        "application/vnd.oci.image.manifest.v1+json"
    assert manifest_media_type(b'{"schemaVersion":2,"manifests":[]}', None) == "application/vnd.oci.image.index.v1+json"
    assert manifest_media_type(b"not json", "application/x; charset=utf-8") == "application/x"


def test_progress_bar_as_jsonmessage() -> None:
    assert progress_bar(0, 0, 0.0) == ""
    bar = progress_bar(1_378_626, 4_335_400, started=100.0, now=102.0)
    assert bar.startswith("[===============>" + " " * 35 + "]  1.379MB/4.335MB")
    assert bar.endswith(" 4s")
    assert progress_bar(4_335_400, 4_335_400, 0.0) == "[" + "=" * 50 + ">]  4.335MB/4.335MB"


def test_display_plain_lines_without_bars() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out, tty=False)
    display.message("v1: Pulling from web")
    display.status("0123456789ab", "Pulling fs layer")
    display.progress("0123456789ab", "Downloading", 10, 100)
    display.status("0123456789ab", "Pull complete")
    assert out.getvalue() == "v1: Pulling from web\n0123456789ab: Pulling fs layer\n0123456789ab: Pull complete\n"


def test_display_terminal_rewrites_the_layer_line() -> None:
    out = io.StringIO()
    display = ProgressDisplay(out, tty=True)
    display.status("aaaaaaaaaaaa", "Pulling fs layer")
    display.status("bbbbbbbbbbbb", "Pulling fs layer")
    display.status("aaaaaaaaaaaa", "Download complete")
    text = out.getvalue()
    # The first layer's line is two lines up when it changes.
    assert text.endswith("\x1b[2A\x1b[2K\raaaaaaaaaaaa: Download complete\r\x1b[2B")
    quiet = io.StringIO()
    ProgressDisplay(quiet, quiet=True).message("x")
    assert quiet.getvalue() == ""


def test_blob_sources_are_recorded_most_recent_first_and_pruned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shoal.image import registry
    from shoal.image.store import ImageStore

    store = ImageStore(tmp_path / "image")
    kept = store.put_bytes(b"kept")
    registry.record_blob_sources(store, "reg:5000/a", [kept])
    registry.record_blob_sources(store, "reg:5000/b", [kept])
    registry.record_blob_sources(store, "reg:5000/a", [kept])
    assert registry.blob_sources(store, kept) == ["reg:5000/a", "reg:5000/b"]
    monkeypatch.setattr(registry, "SOURCES_PRUNE_AT", 1)
    gone = "sha256:" + "e" * 64  # not in the store
    registry.record_blob_sources(store, "reg:5000/c", [gone])
    registry.record_blob_sources(store, "reg:5000/c", [kept])
    assert registry.blob_sources(store, gone) == []
    assert registry.blob_sources(store, kept)[0] == "reg:5000/c"


def test_platform_argument() -> None:
    from shoal.errors import InvalidArgument

    assert parse_platform("linux/amd64") == Platform("linux", "amd64")
    assert parse_platform("linux/aarch64") == Platform("linux", "arm64", "v8")
    assert str(parse_platform("linux/arm/v7")) == "linux/arm/v7"
    for bad in ("linux", "linux/", "a/b/c/d", ""):
        with pytest.raises(InvalidArgument, match="unknown operating system or architecture"):
            parse_platform(bad)


@given(st.text(max_size=200))
def test_challenge_parser_never_raises(header: str) -> None:
    for challenge in auth.parse_challenges([header]):
        assert challenge.scheme == challenge.scheme.lower()
        assert all(isinstance(v, str) for v in challenge.params.values())
