"""The seed's get-started app builds with `shoal build` on the bootstrapped base images, with
`pip install` from PyPI over HTTPS (the image trusts the host's extra CA certificates) and apt
from the Debian archive. Slow the first time (debootstrap), then the base comes from the cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import REPO, ROOT_ONLY

pytestmark = [ROOT_ONLY, pytest.mark.slow]
GETSTARTED = REPO / "examples" / "getstarted"


def _image(ref: str):  # type: ignore[no-untyped-def]
    from shoal.image.store import ImageStore

    return ImageStore().resolve(ref)


def _find(image, rel: str) -> Path | None:  # type: ignore[no-untyped-def]
    """The file as the container sees it: the topmost layer that has it."""
    for layer_dir in image.rootfs_dirs():
        if (layer_dir / rel).exists():
            return layer_dir / rel
    return None


def test_seed_web_image_builds_on_the_bootstrapped_python(shoal) -> None:
    shoal("image", "bootstrap", "--python", check=True, timeout=900)
    proc = shoal("build", "-t", "web:v1", str(GETSTARTED), check=True, timeout=900)
    assert "Successfully tagged web:v1" in proc.stdout
    image = _image("web:v1")
    cfg = image.config["config"]
    assert cfg["Cmd"] == ["python", "app.py"]
    assert cfg["WorkingDir"] == "/app"
    assert "NAME=World" in cfg["Env"]
    assert cfg["ExposedPorts"] == {"80/tcp": {}}
    app = _find(image, "app/app.py")
    assert app is not None and app.read_bytes() == (GETSTARTED / "app.py").read_bytes()
    assert _find(image, "usr/local/lib/python3.11/dist-packages/flask/__init__.py") is not None
    assert _find(image, "usr/local/lib/python3.11/dist-packages/redis/__init__.py") is not None


def test_seed_redis_image_builds_on_the_bootstrapped_debian(shoal) -> None:
    shoal("image", "bootstrap", check=True, timeout=900)
    proc = shoal("build", "-t", "localhost/shoal-redis:bookworm", str(GETSTARTED / "redis"), check=True, timeout=900)
    assert "Successfully tagged localhost/shoal-redis:bookworm" in proc.stdout
    image = _image("localhost/shoal-redis:bookworm")
    assert image.config["config"]["Cmd"][0] == "redis-server"
    assert _find(image, "usr/bin/redis-server") is not None
