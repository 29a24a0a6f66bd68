"""Benchmark: `shoal build` of a small multi-step app on the busybox test image, cold
(--no-cache) and cached (an unchanged rebuild), measured two ways: the whole CLI process as a
user runs it, and the build itself in-process (without Python start-up and CLI imports).

    sudo .venv/bin/python bench/bench_build.py [--runs 5]

Uses a private SHOAL_ROOT under /tmp, removed at the end."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

DOCKERFILE = """\
FROM localhost/busybox:test
ARG VERSION=1.0
ENV APP_HOME=/app VERSION=${VERSION}
WORKDIR /app
COPY requirements.txt ./
RUN echo "installing $(cat requirements.txt | wc -l) requirements" && mkdir -p /app/deps
COPY . /app
RUN sed -i 's/World/shoal/' app.py && chown -R app /app
EXPOSE 80
USER app
CMD ["sh", "/app/app.py"]
"""


def _median(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.0f} ms (min {min(values) * 1000:.0f}, max {max(values) * 1000:.0f})"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    opts = parser.parse_args()
    if os.geteuid() != 0:
        print("needs root (overlay mounts, containers)", file=sys.stderr)
        return 1
    from conftest import make_busybox_rootfs_tar

    work = Path(tempfile.mkdtemp(prefix="shoal-bench-build-"))
    env = dict(os.environ, SHOAL_ROOT=str(work / "root"), SHOAL_RUN=str(work / "root" / "run"))
    os.environ.update(SHOAL_ROOT=env["SHOAL_ROOT"], SHOAL_RUN=env["SHOAL_RUN"])
    cli = [sys.executable, "-m", "shoal"]
    try:
        tar = make_busybox_rootfs_tar(work / "busybox.tar")
        subprocess.run(cli + ["import", str(tar), "localhost/busybox:test"], env=env, check=True,
                       capture_output=True)
        ctx = work / "ctx"
        ctx.mkdir()
        (ctx / "Dockerfile").write_text(DOCKERFILE)
        (ctx / "app.py").write_text("print('Hello World')\n" * 20)
        (ctx / "requirements.txt").write_text("Flask\nRedis\n")
        (ctx / ".dockerignore").write_text("*.pyc\n")

        def run_cli(*extra: str) -> float:
            start = time.perf_counter()
            proc = subprocess.run(cli + ["build", *extra, "-t", "bench/app:v1", str(ctx)], env=env,
                                  capture_output=True, text=True)
            elapsed = time.perf_counter() - start
            if proc.returncode != 0:
                raise SystemExit(f"build failed:\n{proc.stdout}\n{proc.stderr}")
            return elapsed

        from shoal.build.builder import Builder, BuildOptions
        from shoal.image.store import ImageStore

        def run_inproc(no_cache: bool) -> float:
            with open(os.devnull, "wb") as sink:
                start = time.perf_counter()
                Builder(ImageStore(), sink).build(BuildOptions(ctx, tags=["bench/app:v1"], no_cache=no_cache))
                return time.perf_counter() - start

        run_cli()  # warm: page cache, first layer snapshots
        cold_cli = [run_cli("--no-cache") for _ in range(opts.runs)]
        cached_cli = [run_cli() for _ in range(opts.runs)]
        cold_in = [run_inproc(True) for _ in range(opts.runs)]
        cached_in = [run_inproc(False) for _ in range(opts.runs)]
        startup = []
        for _ in range(opts.runs):
            start = time.perf_counter()
            subprocess.run(cli + ["--version"], env=env, check=True, capture_output=True)
            startup.append(time.perf_counter() - start)

        print(f"shoal build, 10 steps (2 RUN, 2 COPY, WORKDIR, metadata) on busybox, {opts.runs} runs, median:")
        print(f"  cold   (--no-cache), CLI process : {_median(cold_cli)}")
        print(f"  cached (unchanged),  CLI process : {_median(cached_cli)}")
        print(f"  cold   (--no-cache), in-process  : {_median(cold_in)}")
        print(f"  cached (unchanged),  in-process  : {_median(cached_in)}")
        print(f"  `shoal --version` (start-up floor): {_median(startup)}")
        return 0
    finally:
        with open("/proc/self/mountinfo") as f:
            for target in reversed([line.split()[4] for line in f if str(work) in line]):
                subprocess.run(["umount", "-l", target], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
