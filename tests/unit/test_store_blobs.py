"""Blobs are content-addressed and written atomically: a failed, mismatched or killed writer
never leaves anything under a valid digest, and prune collects what a dead writer left."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from shoal.errors import NotFound, ShoalError
from shoal.image.store import ImageStore


@pytest.fixture()
def store(tmp_path: Path) -> ImageStore:
    return ImageStore(tmp_path / "image")


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_put_and_read_back(store: ImageStore) -> None:
    digest = store.put_bytes(b"hello")
    assert digest == digest_of(b"hello")
    assert store.has_blob(digest)
    assert store.read_blob(digest) == b"hello"
    assert store.blob_path(digest) == store.root / "blobs" / "sha256" / digest.split(":")[1]
    assert store.put_bytes(b"hello") == digest  # idempotent


def test_expected_digest_mismatch_stores_nothing(store: ImageStore) -> None:
    wrong = digest_of(b"other")
    with pytest.raises(ShoalError, match="digest mismatch"):
        store.put_bytes(b"hello", expected=wrong)
    with pytest.raises(ShoalError, match="digest mismatch"):
        with store.ingest(expected=wrong) as writer:
            writer.write(b"hello")
            writer.commit()
    assert not store.has_blob(wrong) and not store.has_blob(digest_of(b"hello"))
    assert list(store.ingest_dir.iterdir()) == []


def test_writer_aborts_on_exception_and_without_commit(store: ImageStore) -> None:
    with pytest.raises(RuntimeError):
        with store.ingest() as writer:
            writer.write(b"partial")
            raise RuntimeError("network went away")
    with store.ingest() as writer:
        writer.write(b"never committed")
    assert list(store.ingest_dir.iterdir()) == []
    assert not store.blobs_dir.exists() or list(store.blobs_dir.iterdir()) == []


def test_streamed_writer_commits_digest(store: ImageStore) -> None:
    data = os.urandom(3 << 20)
    with store.ingest(expected=digest_of(data)) as writer:
        for i in range(0, len(data), 65536):
            writer.write(data[i : i + 65536])
        assert writer.commit() == digest_of(data)
    assert store.read_blob(digest_of(data)) == data


def test_missing_blob_is_not_found(store: ImageStore) -> None:
    with pytest.raises(NotFound):
        store.read_blob(digest_of(b"nothing"))


KILLED_WRITER = textwrap.dedent("""
    import os, signal, sys
    from pathlib import Path
    from shoal.image.store import ImageStore
    store = ImageStore(Path(sys.argv[1]))
    writer = store.ingest(expected=sys.argv[2])
    writer.write(b"x" * 100000)
    print(writer.path, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
""")


def test_killed_writer_leaves_no_blob_and_prune_collects_it(store: ImageStore) -> None:
    full = b"x" * 200000
    proc = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(store.root), digest_of(full)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL
    leftover = Path(proc.stdout.strip())
    assert leftover.exists() and leftover.parent == store.ingest_dir
    assert not store.has_blob(digest_of(full))
    assert not store.has_blob(digest_of(b"x" * 100000))
    _, reclaimed = store.prune()
    assert not leftover.exists()
    assert reclaimed >= 100000


def test_prune_leaves_a_live_writer_alone(store: ImageStore, tmp_path: Path) -> None:
    with store.ingest() as writer:
        writer.write(b"in progress")
        # Another process prunes while we write: our flock tells it the file is alive.
        code = textwrap.dedent(f"""
            from pathlib import Path
            from shoal.image.store import ImageStore
            ImageStore(Path({str(store.root)!r})).prune()
        """)
        subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
        assert writer.path.exists()
        digest = writer.commit()
    assert store.read_blob(digest) == b"in progress"


def test_index_survives_concurrent_writers(store: ImageStore, tmp_path: Path) -> None:
    """Eight processes tag the same image at once: the lock keeps every tag."""
    image = store.create_image({"architecture": "amd64", "os": "linux", "config": {}}, [], tags=["base:1"])
    code = textwrap.dedent(f"""
        import sys
        from pathlib import Path
        from shoal.image.store import ImageStore
        store = ImageStore(Path({str(store.root)!r}))
        for i in range(10):
            store.tag({image.id!r}, f"many/t{{sys.argv[1]}}:v{{i}}")
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(n)]) for n in range(8)]
    assert [p.wait(timeout=120) for p in procs] == [0] * 8
    tags = json.loads(store.index_path.read_text())["tags"]
    assert sum(1 for t in tags if t.startswith("docker.io/many/")) == 80
