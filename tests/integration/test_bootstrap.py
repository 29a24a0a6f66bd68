"""`shoal image bootstrap`: a base image made offline from the Debian archive.

The first run of the python recipe takes a minute or more (debootstrap); the rootfs is cached
under SHOAL_CACHE, so later runs - and later test sessions - only import it. Tests that may run
debootstrap are marked `slow`."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT_ONLY
from shoal.errors import InvalidArgument
from shoal.image import bootstrap

pytestmark = [ROOT_ONLY]


def _store():  # type: ignore[no-untyped-def]
    from shoal.image.store import ImageStore

    return ImageStore()


# --- quick: names, apt sources, cache entries ------------------------------------------------

@pytest.mark.parametrize("tag", ["python:3.12-slim", "debian:bookworm", "docker.io/someone/base:1"])
def test_refuses_docker_hub_names_before_any_work(shoal, tag: str) -> None:
    proc = shoal("image", "bootstrap", "--python", "-t", tag)
    assert proc.returncode == 125
    assert proc.stderr.startswith(f"Error: refusing to tag a locally made image as {tag.removeprefix('docker.io/')}")
    assert proc.stdout == ""


def test_local_names_are_accepted() -> None:
    assert bootstrap.check_local_tag("localhost/python:3.12-slim") == "localhost/python:3.12-slim"
    assert bootstrap.check_local_tag("127.0.0.1:5000/base") == "127.0.0.1:5000/base:latest"
    with pytest.raises(InvalidArgument):
        bootstrap.check_local_tag("library/python")


def test_mirror_and_image_sources_follow_the_hosts_apt_configuration(tmp_path: Path) -> None:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    (apt / "sources.list").write_text("# nothing here\n")
    (apt / "sources.list.d" / "other.list").write_text("deb [arch=amd64] https://example.com/apt stable main\n")
    (apt / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main contrib\n\n"
        "Types: deb\nURIs: http://mirror.example/debian-security\nSuites: bookworm-security\nComponents: main\n\n"
        "Types: deb-src\nURIs: http://src.example/debian\nSuites: bookworm\nComponents: main\n")
    sources = bootstrap.host_apt_sources(apt)
    assert [(s.uri, s.suites) for s in sources] == [
        ("https://example.com/apt", ["stable"]),
        ("http://mirror.example/debian", ["bookworm", "bookworm-updates"]),
        ("http://mirror.example/debian-security", ["bookworm-security"]),
    ]
    assert bootstrap.host_mirror("bookworm", sources) == "http://mirror.example/debian"
    assert bootstrap.host_mirror("trixie", sources) == bootstrap.DEFAULT_MIRROR


def test_cache_key_depends_on_packages_not_on_order() -> None:
    a = bootstrap.Recipe(include=("curl", "less"))
    b = bootstrap.Recipe(include=("less", "curl"))
    assert a.cache_key() == b.cache_key()
    assert a.cache_key() != bootstrap.Recipe().cache_key()
    assert bootstrap.Recipe(python=True).cache_key() != bootstrap.Recipe().cache_key()
    assert bootstrap.Recipe(suite="trixie").cache_key() != bootstrap.Recipe().cache_key()


def test_an_incomplete_cache_entry_is_not_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_CACHE", str(tmp_path))
    recipe = bootstrap.Recipe(include=("hello",))
    blob, meta = bootstrap._cache_paths(recipe)
    blob.parent.mkdir(parents=True)
    blob.write_bytes(b"x" * 10)
    assert bootstrap.cached(recipe) is None          # no metadata: the build did not finish
    meta.write_text(json.dumps({"digest": "sha256:" + "0" * 64, "diff_id": "sha256:" + "1" * 64, "size": 99,
                                "created": "2026-01-01T00:00:00Z", "suite": "bookworm", "packages": []}))
    assert bootstrap.cached(recipe) is None          # truncated blob
    blob.write_bytes(b"x" * 99)
    assert bootstrap.cached(recipe) is not None


def test_failed_debootstrap_is_a_clear_error_and_leaves_nothing(shoal, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    # what a killed bootstrap leaves: its build directory, with a mount debootstrap made inside
    stale = cache / "bootstrap" / "build-killed" / "rootfs" / "proc"
    stale.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "shoal-test", str(stale)], check=True)
    try:
        proc = shoal("image", "bootstrap", "--suite", "no-such-suite", env={"SHOAL_CACHE": str(cache)})
    finally:
        if any(str(stale) in line for line in Path("/proc/mounts").read_text().splitlines()):
            subprocess.run(["umount", str(stale)], check=False)
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: debootstrap no-such-suite from ")
    assert "failed" in proc.stderr and proc.stderr.count("\n") == 1
    left = sorted(p.name for p in (cache / "bootstrap").iterdir())
    assert not (cache / "bootstrap" / "build-killed").exists()
    # the debootstrap log is kept for the user to read; no build directory, no cache entry
    assert [n for n in left if not n.endswith(".debootstrap.log") and n != ".lock"] == []
    assert not any(str(cache) in line for line in Path("/proc/mounts").read_text().splitlines())


# --- slow the first time: debootstrap, then the cache ----------------------------------------

@pytest.mark.slow
def test_python_base_image(shoal, shoal_root: Path) -> None:
    proc = shoal("image", "bootstrap", "--python", check=True, timeout=900)
    assert proc.stdout.splitlines()[-1] == "Successfully tagged localhost/shoal-python:3.11"
    image = _store().resolve("localhost/shoal-python:3.11")
    assert proc.stdout.splitlines()[-2] == image.id
    cfg = image.config["config"]
    assert cfg["Cmd"] == ["python3"]
    assert "LANG=C.UTF-8" in cfg["Env"] and any(e.startswith("PATH=/usr/local/sbin:") for e in cfg["Env"])
    assert image.config["os"] == "linux" and len(image.layers) == 1
    root = image.rootfs_dirs()[0]
    assert (root / "usr/bin/python").is_symlink() and (root / "usr/bin/pip").exists()
    assert list(root.glob("usr/lib/python3*/EXTERNALLY-MANAGED")) == []   # pip install works, as in python:*-slim
    assert [p.name for p in (root / "var/lib/apt/lists").iterdir() if p.is_file()] in ([], ["lock"])
    assert (root / "etc/resolv.conf").read_text() == ""
    bundle = (root / "etc/ssl/certs/ca-certificates.crt").read_text()
    for ca in bootstrap._host_ca_files():
        body = "".join(ca.read_text().split("-----")[2].split())
        assert body[:200] in "".join(bundle.split()), f"{ca} is not trusted in the image"

    again = shoal("image", "bootstrap", "--python", check=True, timeout=120)
    assert "Using the cached root filesystem" in again.stdout
    assert again.stdout.splitlines()[-2] == image.id           # the same image, not a new one


@pytest.mark.slow
def test_debian_base_image_with_explicit_tag(shoal) -> None:
    proc = shoal("image", "bootstrap", "-t", "localhost/base:test", check=True, timeout=900)
    assert proc.stdout.splitlines()[-1] == "Successfully tagged localhost/base:test"
    image = _store().resolve("localhost/base:test")
    assert image.config["config"]["Cmd"] == ["bash"]
    root = image.rootfs_dirs()[0]
    assert (root / "usr/bin/apt-get").exists() and not (root / "usr/bin/python3").exists()
    # copied in now, trusted by update-ca-certificates once a build installs ca-certificates
    for ca in bootstrap._host_ca_files():
        assert (root / "usr/local/share/ca-certificates" / ca.name).read_bytes() == ca.read_bytes()
