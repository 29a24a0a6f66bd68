"""A pull that fails part-way keeps nothing it fetched (as moby's layer store releases the layers
of a failed pull): a later layer that 404s, or whose bytes are not its digest's, and the blobs and
layers already stored go again. What an image or another pull in progress holds stays: the base
layer an image in the store uses, or one a concurrent pull claimed. A real registry (Debian's
docker-registry), its blob taken away or its bytes changed on its disk."""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import ROOT_ONLY, tar_bytes
from registry_helpers import run_registry, sha256_digest
from shoal.errors import ShoalError
from shoal.image.registry import pull
from shoal.image.store import ImageStore

pytestmark = [ROOT_ONLY]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def _layer(name: str) -> tuple[bytes, str]:
    raw = tar_bytes({name: f"{name} content\n".encode() * 200})
    return gzip.compress(raw, mtime=0), sha256_digest(raw)


def _upload(registry: str, repo: str, data: bytes) -> str:
    digest = sha256_digest(data)
    start = httpx.post(f"http://{registry}/v2/{repo}/blobs/uploads/")
    assert start.status_code == 202, start.text
    location = httpx.URL(f"http://{registry}").join(start.headers["location"])
    put = httpx.put(location.copy_add_param("digest", digest), content=data,
                    headers={"Content-Type": "application/octet-stream"})
    assert put.status_code == 201, put.text
    return digest


def _put_image(registry: str, repo: str, layer_names: list[str]) -> list[str]:
    """`<repo>:v1` of these layers (bottom first); returns the layers' blob digests."""
    blobs, diff_ids = zip(*(_layer(n) for n in layer_names))
    digests = [_upload(registry, repo, b) for b in blobs]
    config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
                         "rootfs": {"type": "layers", "diff_ids": list(diff_ids)}}).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": _upload(registry, repo, config), "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": d,
                    "size": len(b)} for d, b in zip(digests, blobs)],
    }).encode()
    resp = httpx.put(f"http://{registry}/v2/{repo}/manifests/v1", content=manifest,
                     headers={"Content-Type": OCI_MANIFEST})
    assert resp.status_code == 201, resp.text
    return digests


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, list[str]]]]:
    """base:v1 = [base]; good:v1 = [base, good]; missing:v1 = [base, mid, gone] with gone's blob
    deleted after the manifest was put (it 404s); tampered:v1 = [base, mid, bad] with bad's
    bytes changed in the registry's storage (same size, another digest)."""
    workdir = tmp_path_factory.mktemp("registry")
    with run_registry(workdir) as address:
        images = {"base": _put_image(address, "base", ["base"]),
                  "good": _put_image(address, "good", ["base", "good"]),
                  "missing": _put_image(address, "missing", ["base", "mid", "gone"]),
                  "tampered": _put_image(address, "tampered", ["base", "mid", "bad"])}
        gone = images["missing"][-1]
        assert httpx.delete(f"http://{address}/v2/missing/blobs/{gone}").status_code == 202
        assert httpx.head(f"http://{address}/v2/missing/blobs/{gone}").status_code == 404
        bad = images["tampered"][-1][7:]
        data = workdir / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256" / bad[:2] / bad / "data"
        tampered = bytearray(data.read_bytes())
        tampered[len(tampered) // 2] ^= 0xFF
        data.write_bytes(bytes(tampered))
        yield address, images


def _contents(store: ImageStore) -> dict[str, list[str]]:
    """What the store's directories hold: blobs, layer snapshots, writes and claims in progress."""
    out = {}
    for name in ("blobs/sha256", "snapshots", "ingest", "claims"):
        directory = store.root / name
        out[name] = sorted(os.listdir(directory)) if directory.is_dir() else []
    return out


def _fails(store: ImageStore, ref: str, aiohttp: bool) -> str:
    with pytest.raises(ShoalError) as caught:
        pull(store, ref, quiet=True, aiohttp=aiohttp)
    return str(caught.value)


@pytest.mark.parametrize("aiohttp", [False, True], ids=["httpx", "aiohttp"])
def test_a_failed_pull_leaves_the_store_as_it_was(registry: tuple[str, dict[str, list[str]]],
                                                  tmp_path: Path, aiohttp: bool) -> None:
    address, images = registry
    store = ImageStore(tmp_path / "image")
    empty = _contents(store)
    assert "blob unknown" in _fails(store, f"{address}/missing:v1", aiohttp)
    assert _contents(store) == empty

    base = pull(store, f"{address}/base:v1", quiet=True, aiohttp=aiohttp)
    before = _contents(store)
    assert len(before["blobs/sha256"]) == 3 and len(before["snapshots"]) == 1  # layer, config, manifest
    _fails(store, f"{address}/missing:v1", aiohttp)
    assert _contents(store) == before
    bad = images["tampered"][-1]
    assert _fails(store, f"{address}/tampered:v1", aiohttp) == f"filesystem layer verification failed for digest {bad}"
    assert _contents(store) == before
    assert store.get(base.id).snapshot_dirs[0].is_dir()  # the base image's layer, which both shared

    out = tmp_path / "pull.out"
    with out.open("w") as text:
        good = pull(store, f"{address}/good:v1", text, aiohttp=aiohttp)
    assert f"{images['base'][0][7:19]}: Already exists" in out.read_text()
    assert [layer.digest for layer in good.layers] == images["good"]
    assert all(d.is_dir() for d in good.snapshot_dirs)
    assert [i.id for i in store.list()].count(base.id) == 1


def test_a_layer_another_pull_claimed_is_kept(registry: tuple[str, dict[str, list[str]]],
                                              tmp_path: Path) -> None:
    """A pull of good:v1 runs beside the one that fails (in this process, as a node daemon's
    two tasks pull two images): its claim holds the base layer the failing pull downloaded,
    which it then finds there ("Already exists") and uses."""
    address, images = registry
    store = ImageStore(tmp_path / "image")
    base_layer = images["good"][0]
    with store.claim(images["good"]):  # what good's pull claims before it looks at the store
        _fails(store, f"{address}/missing:v1", False)
        assert _contents(store)["blobs/sha256"] == [base_layer[7:]]
        assert len(_contents(store)["snapshots"]) == 1
        good = pull(store, f"{address}/good:v1", quiet=True)
    assert all(d.is_dir() for d in good.snapshot_dirs)
    assert _contents(store)["claims"] == []


def test_a_claim_left_by_a_killed_pull_holds_nothing(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "image")
    store.claims_dir.mkdir(parents=True)
    stale = store.claims_dir / "999999-dead"
    stale.write_text(json.dumps(["sha256:" + "a" * 64]))  # no process holds its lock
    with store.claim(["sha256:" + "b" * 64]) as live:
        with store.lock():
            assert store.claimed() == {"sha256:" + "b" * 64}
            assert store.claimed(besides=live.path) == set()
    assert not stale.exists() and list(store.claims_dir.iterdir()) == []
