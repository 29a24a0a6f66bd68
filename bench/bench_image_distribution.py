"""Benchmark: a node pulling an image from its manager's image store (image/distserver.py) over
mutual TLS, as a task's prepare step does (agent/imagefetch.ensure_image).

Makes a cluster PKI (manager/ca.py), an image of N layers of random (incompressible) data,
--size-mb in all, in a "manager" store, serves it with tests/cluster/distserver_proc.py on
127.0.0.1, and times:

- raw: the blobs streamed over TLS and hashed, nothing written (the server and TLS alone);
- ensure_image into an empty store: every blob downloaded, verified, written, unpacked, indexed;
- ensure_image again: the node has it (no request at all).

    sudo .venv/bin/python bench/bench_image_distribution.py [--size-mb 100] [--layers 4] [--runs 3]

Figures are MB/s of blob bytes (decimal MB). Everything is removed at the end."""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import select
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import httpx

from shoal.agent.imagefetch import ensure_image
from shoal.image.store import ImageStore
from shoal.manager.ca import MANAGER_ROLE, WORKER_ROLE, CertStore, RootCA, init_cluster, new_node_id
from shoal.tlsconfig import client_context

PROC = Path(__file__).resolve().parents[1] / "tests" / "cluster" / "distserver_proc.py"
REF = "localhost/bench/dist:v1"


def random_layer(size: int, index: int) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(f"data/layer{index}.bin")
        info.size = size
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return buf.getvalue()


def make_image(store: ImageStore, total: int, layers: int) -> int:
    made = [store.import_layer(io.BytesIO(random_layer(total // layers, i))) for i in range(layers)]
    store.create_image({"architecture": "amd64", "os": "linux", "config": {}}, made, tags=[REF])
    return sum(layer.size for layer in made)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mb", type=int, default=100)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    opts = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="shoal-bench-dist-"))
    proc: subprocess.Popen[str] | None = None
    try:
        manager = CertStore(work / "manager-certs")
        root_ca, _, ident = init_cluster(manager)
        worker = CertStore(work / "worker-certs")
        worker.save_root_ca(RootCA(root_ca.cert_pem))
        worker.save_node(*root_ca.issue(new_node_id(), WORKER_ROLE, ident.cluster_id))
        ctx = client_context(root_ca.cert_pem, worker.cert_path, worker.key_path)

        served = ImageStore(work / "manager" / "image")
        blob_bytes = make_image(served, opts.size_mb * 1_000_000, opts.layers)
        image = served.resolve(REF)
        proc = subprocess.Popen([sys.executable, str(PROC), "--certs", str(manager.directory),
                                 "--store", str(served.root)], stdout=subprocess.PIPE, text=True)
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""  # type: ignore[union-attr]
        if not line.startswith("PORT "):
            print(f"server did not start: {line!r}")
            return 1
        url = f"https://127.0.0.1:{int(line.split()[1])}"
        mb = blob_bytes / 1e6
        print(f"image: {opts.layers} layers, {mb:.1f} MB of blobs, served from {url}")

        raw, pulls, again = [], [], []
        for run in range(opts.runs):
            t0 = time.perf_counter()
            with httpx.Client(verify=ctx, timeout=60) as client:
                for layer in image.layers:
                    sha = hashlib.sha256()
                    with client.stream("GET", f"{url}/v2/localhost/bench/dist/blobs/{layer.digest}",
                                       extensions={"sni_hostname": MANAGER_ROLE}) as resp:
                        resp.raise_for_status()
                        for chunk in resp.iter_raw(1 << 20):
                            sha.update(chunk)
                    assert "sha256:" + sha.hexdigest() == layer.digest
            raw.append(time.perf_counter() - t0)

            node = ImageStore(work / f"node{run}" / "image")
            t0 = time.perf_counter()
            pulled = ensure_image(node, REF, None, url, ctx, registry_fallback=False)
            pulls.append(time.perf_counter() - t0)
            assert pulled.id == image.id
            t0 = time.perf_counter()
            ensure_image(node, REF, None, url, ctx, registry_fallback=False)
            again.append(time.perf_counter() - t0)
            shutil.rmtree(work / f"node{run}", ignore_errors=True)

        def show(label: str, times: list[float], rate: bool = True) -> None:
            med = statistics.median(times)
            extra = f"  {mb / med:7.1f} MB/s" if rate else ""
            print(f"{label:<44} median {med * 1000:8.1f} ms{extra}  (runs: "
                  + ", ".join(f"{t * 1000:.0f}" for t in times) + ")")

        show("raw blob stream over TLS (hash only)", raw)
        show("ensure_image, empty node store", pulls)
        show("ensure_image, node has it", again, rate=False)
        return 0
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
