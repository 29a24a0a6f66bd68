"""Benchmark: the image store as a user drives it (whole CLI processes):

- `shoal images` with 500 images (one shared layer, 500 configs and tags), against the bare
  start-up of the CLI (`shoal --version`) and the in-process listing alone;
- `shoal import` of a 100 MB root filesystem tarball, plain and gzip, against GNU tar
  extracting the same tarball (the floor for writing those files).

    sudo .venv/bin/python bench/bench_images.py [--runs 3] [--images 500] [--mb 100]

Uses private SHOAL_ROOTs under /tmp, removed at the end."""

from __future__ import annotations

import argparse
import gzip
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from _cli import timed_shoal  # bench/ is on sys.path when a bench runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from shoal.image.store import ImageStore  # noqa: E402



def median(samples: list[float]) -> str:
    return f"{statistics.median(samples) * 1000:8.0f} ms  (min {min(samples) * 1000:.0f}, n={len(samples)})"


def make_rootfs(path: Path, megabytes: int) -> None:
    """A rootfs-like tar: many small files and some large ones, half compressible."""
    rng = os.urandom
    with tarfile.open(path, "w") as tar:
        total, i = 0, 0
        for d in ("bin", "lib", "usr/share/doc", "etc"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        while total < megabytes * 1_000_000:
            size = 4096 if i % 10 else 1_000_000
            data = rng(size // 2) + bytes(size // 2)
            info = tarfile.TarInfo(f"{('bin', 'lib', 'usr/share/doc', 'etc')[i % 4]}/file{i}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
            total += size
            i += 1


def bench_images(runs: int, count: int, work: Path) -> None:
    root = work / "list"
    store = ImageStore(root / "image")
    base = store.import_layer(io.BytesIO(_small_tar()))
    started = time.perf_counter()
    for n in range(count):
        config = {"architecture": "amd64", "os": "linux", "created": f"2026-01-01T00:{n // 60 % 60:02d}:{n % 60:02d}Z",
                  "config": {"Labels": {"n": str(n)}}}
        store.create_image(config, [base], tags=[f"bench/app{n}:v1"])
    setup = time.perf_counter() - started
    print(f"setup: {count} images created through the store API in {setup:.1f} s "
          f"({setup / count * 1000:.1f} ms each)")
    startup = [timed_shoal(root, "--version") for _ in range(runs)]
    listing = [timed_shoal(root, "images") for _ in range(runs)]
    quiet = [timed_shoal(root, "images", "-q") for _ in range(runs)]
    from shoal.cli.image import list_rows

    inproc = []
    for _ in range(runs):
        t = time.perf_counter()
        rows = list_rows(ImageStore(root / "image"))
        inproc.append(time.perf_counter() - t)
    assert len(rows) == count
    print(f"shoal --version (CLI start-up)      {median(startup)}")
    print(f"shoal images ({count} images)         {median(listing)}")
    print(f"shoal images -q ({count} images)      {median(quiet)}")
    print(f"listing in-process ({count} images)   {median(inproc)}")


def _small_tar() -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("hello")
        info.size = 5
        tar.addfile(info, io.BytesIO(b"hello"))
    return buf.getvalue()


def bench_import(runs: int, megabytes: int, work: Path) -> None:
    tar_path = work / "rootfs.tar"
    make_rootfs(tar_path, megabytes)
    gz_path = work / "rootfs.tar.gz"
    with open(tar_path, "rb") as src, gzip.open(gz_path, "wb", compresslevel=6) as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    size = tar_path.stat().st_size
    print(f"rootfs tarball: {size / 1e6:.0f} MB plain, {gz_path.stat().st_size / 1e6:.0f} MB gzip")
    results: dict[str, list[float]] = {"plain": [], "gzip": [], "tar": [], "again": []}
    for n in range(runs):
        root = work / f"imp{n}"
        results["plain"].append(timed_shoal(root, "import", str(tar_path), f"big:{n}"))
        results["again"].append(timed_shoal(root, "import", str(tar_path), f"big:again{n}"))
        shutil.rmtree(root)
        root = work / f"impgz{n}"
        results["gzip"].append(timed_shoal(root, "import", str(gz_path), f"big:{n}"))
        shutil.rmtree(root)
        dest = work / f"tar{n}"
        dest.mkdir()
        t = time.perf_counter()
        subprocess.run(["tar", "-xf", str(tar_path), "-C", str(dest)], check=True)
        subprocess.run(["sync", "-f", str(dest)], check=True)
        results["tar"].append(time.perf_counter() - t)
        shutil.rmtree(dest)
    print(f"shoal import (plain tar)            {median(results['plain'])}  "
          f"{size / 1e6 / statistics.median(results['plain']):.0f} MB/s")
    print(f"shoal import (gzip)                 {median(results['gzip'])}")
    print(f"shoal import (same layer again)     {median(results['again'])}")
    print(f"GNU tar -xf + sync (floor)          {median(results['tar'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-images-"))
    try:
        bench_images(args.runs, args.images, work)
        bench_import(args.runs, args.mb, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
