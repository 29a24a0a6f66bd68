"""Benchmark: the bootstrapped Python base image (about 160 MB unpacked) through the archive
commands, each as a user runs it (a whole CLI process):

- `shoal image bootstrap --python` from the cache into an empty store (first-ever run is a
  debootstrap of a minute or more and is not what this measures: run it once before);
- `shoal save -o` of that image;
- `shoal load -i` of the archive into an empty store, and again when the image is already there;
- `skopeo copy docker-archive: -> docker-archive:` (the reference reader/writer) for scale.

    sudo .venv/bin/python bench/bench_archive.py [--runs 3]

Uses private SHOAL_ROOTs under /tmp, removed at the end; the bootstrap cache is shared."""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from _cli import timed_shoal  # bench/ is on sys.path when a bench runs

IMAGE = "localhost/shoal-python:3.11"



def timed(argv: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    runs = parser.parse_args().runs
    figures: dict[str, list[float]] = {}
    size = 0
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-archive-"))
    try:
        for i in range(runs):
            source = work / f"source-{i}"
            figures.setdefault("bootstrap --python (cached rootfs, empty store)", []).append(
                timed_shoal(source, "image", "bootstrap", "--python"))
            archive = work / f"py-{i}.tar"
            figures.setdefault("save -o", []).append(timed_shoal(source, "save", "-o", str(archive), IMAGE))
            size = archive.stat().st_size
            target = work / f"target-{i}"
            figures.setdefault("load -i, empty store", []).append(timed_shoal(target, "load", "-i", str(archive)))
            figures.setdefault("load -i, image already there", []).append(timed_shoal(target, "load", "-i", str(archive)))
            if shutil.which("skopeo"):
                figures.setdefault("skopeo copy docker-archive -> docker-archive", []).append(timed(
                    ["skopeo", "--insecure-policy", "copy", "-q", f"docker-archive:{archive}",
                     f"docker-archive:{work / f'sk-{i}.tar'}:localhost/sk:1"]))
            for path in (source, target):
                shutil.rmtree(path)
            archive.unlink()
            (work / f"sk-{i}.tar").unlink(missing_ok=True)
        print(f"archive commands on {IMAGE} (archive {size / 1e6:.0f}MB), median of {runs}:")
        for name, values in figures.items():
            print(f"  {name:48s} {statistics.median(values):6.2f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
