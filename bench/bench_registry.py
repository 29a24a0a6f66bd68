"""Benchmark: `shoal push` and `shoal pull` throughput against a local registry.

Starts Debian's docker-registry on 127.0.0.1 (a random port, a temp storage dir), makes an image
of N gzip layers of incompressible data (total --size-mb of blobs) in a private store, then times,
each as a user runs it (a whole CLI process):

- `shoal push` to an empty repository (every blob uploaded);
- `shoal push` of the same image to another repository (cross-repository mounts, no upload);
- `shoal pull` into an empty store (every blob downloaded, verified and unpacked);
- `shoal pull` again (nothing to do: manifest round trip only);
- `skopeo copy docker:// -> dir:` of the same image, the reference client, for scale.

    sudo .venv/bin/python bench/bench_registry.py [--size-mb 256] [--layers 4] [--runs 3]

Figures are MB/s of blob bytes (decimal MB). Everything is removed at the end."""

from __future__ import annotations

import argparse
import gzip
import io
import os
import shutil
import socket
import statistics
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

from _cli import timed_shoal  # bench/ is on sys.path when a bench runs

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_registry(work: Path) -> tuple[subprocess.Popen[bytes], str]:
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    config = work / "config.yml"
    config.write_text(
        "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {work / 'data'}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
    )
    proc = subprocess.Popen(["/usr/bin/docker-registry", "serve", str(config)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    address = f"127.0.0.1:{port}"
    for _ in range(200):
        try:
            httpx.get(f"http://{address}/v2/", timeout=1)
            return proc, address
        except httpx.TransportError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("docker-registry did not start")


def make_image(root: Path, ref: str, size_mb: int, layers: int) -> int:
    """An image of `layers` gzip layers of random bytes; returns the total blob size."""
    from shoal.image.store import ImageStore

    store = ImageStore(root / "image")
    made = []
    per_layer = size_mb * 1_000_000 // layers
    for i in range(layers):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            data = os.urandom(per_layer)
            info = tarfile.TarInfo(f"data/layer{i}.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        blob = gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)
        made.append(store.import_layer(io.BytesIO(blob), source=f"layer{i}"))
    config = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
              "created": "2026-01-01T00:00:00Z", "history": []}
    store.create_image(config, made, tags=[ref])
    return sum(layer.size for layer in made)


def shoal(root: Path, *args: str) -> float:
    return timed_shoal(root, *args, SHOAL_CONFIG=str(root / "config.json"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="shoal-bench-registry-"))
    proc, address = start_registry(work / "registry")
    try:
        source = work / "source"
        ref = f"{address}/bench/web:v1"
        total = make_image(source, ref, args.size_mb, args.layers)
        mb = total / 1e6
        push_times, mount_times, pull_times, noop_times, skopeo_times = [], [], [], [], []
        sources = source / "image" / "registry-sources.json"
        for run in range(args.runs):
            target = f"{address}/bench/run{run}:v1"
            shoal(source, "tag", ref, target)
            # Forget where the blobs were pushed before, so every blob is uploaded, not mounted.
            sources.unlink(missing_ok=True)
            push_times.append(shoal(source, "push", target))
            mounted = f"{address}/bench/mount{run}:v1"
            shoal(source, "tag", ref, mounted)
            mount_times.append(shoal(source, "push", mounted))
            fresh = work / f"pull{run}"
            pull_times.append(shoal(fresh, "pull", target))
            noop_times.append(shoal(fresh, "pull", target))
            shutil.rmtree(fresh, ignore_errors=True)
            if shutil.which("skopeo"):
                dest = work / f"skopeo{run}"
                started = time.perf_counter()
                subprocess.run(["skopeo", "copy", "--quiet", "--src-tls-verify=false", f"docker://{target}",
                                f"dir:{dest}"], check=True)
                skopeo_times.append(time.perf_counter() - started)
                shutil.rmtree(dest, ignore_errors=True)

        def line(name: str, times: list[float], size: float | None = mb) -> None:
            best, median = min(times), statistics.median(times)
            rate = f"  {size / median:7.1f} MB/s (best {size / best:.1f})" if size else ""
            print(f"{name:<34} median {median:6.2f} s{rate}")

        print(f"image: {args.layers} gzip layers, {mb:.1f} MB of blobs, {args.runs} runs, registry {address}")
        line("shoal push (every blob uploaded)", push_times)
        line("shoal push (blobs mounted)", mount_times, None)
        line("shoal pull (empty store, unpack)", pull_times)
        line("shoal pull (up to date)", noop_times, None)
        if skopeo_times:
            line("skopeo copy docker:// -> dir:", skopeo_times)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
