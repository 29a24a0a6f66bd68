"""`shoal import`, `images`, `tag`, `rmi`, `image prune|inspect|history` as a user runs them,
checked against Docker's output formats. Each test has its own SHOAL_ROOT (prune must not touch
the session's images), except the check of the shared busybox fixture."""

from __future__ import annotations

import gzip
import json
import lzma
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT_ONLY, make_busybox_rootfs_tar, run_shoal

pytestmark = [ROOT_ONLY]

ID = re.compile(r"^sha256:[0-9a-f]{64}$")
SHORT = r"[0-9a-f]{12}"


@pytest.fixture(scope="module")
def rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_busybox_rootfs_tar(tmp_path_factory.mktemp("rootfs") / "rootfs.tar")


class Shoal:
    """The CLI against a private state root. Calls run `shoal.cli.main.main` in this process
    (the same argument parsing, handlers and error printing, without a Python start-up per
    call); `proc` runs a real subprocess for what needs one (stdin streams, exit paths)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.env = {"SHOAL_ROOT": str(root), "SHOAL_RUN": str(root / "run")}

    def __call__(self, *args: str, input: str | None = None, check: bool = False,
                 ) -> subprocess.CompletedProcess[str]:
        import contextlib
        import io
        import os
        import sys

        from shoal.cli.main import main

        saved = {k: os.environ.get(k) for k in self.env}
        out, err = io.StringIO(), io.StringIO()
        old_stdin = sys.stdin
        os.environ.update(self.env)
        sys.stdin = io.StringIO(input or "")
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                try:
                    code = main(list(args))
                except SystemExit as exc:  # argparse errors
                    code = int(exc.code or 0)
        finally:
            sys.stdin = old_stdin
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        proc = subprocess.CompletedProcess(["shoal", *args], code, out.getvalue(), err.getvalue())
        if check and code != 0:
            raise AssertionError(f"shoal {' '.join(args)} exited {code}:\n{proc.stdout}\n{proc.stderr}")
        return proc

    def proc(self, *args: str, input: str | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
        return run_shoal(*args, input=input, check=check, env=self.env)

    def run_bytes(self, *args: str, stdin: bytes) -> subprocess.CompletedProcess[bytes]:
        import os
        import sys

        return subprocess.run([sys.executable, "-m", "shoal", *args], input=stdin, capture_output=True,
                              env={**os.environ, **self.env}, timeout=120)

    def blobs(self) -> list[str]:
        d = self.root / "image" / "blobs" / "sha256"
        return sorted(p.name for p in d.iterdir()) if d.exists() else []

    def snapshots(self) -> list[str]:
        d = self.root / "image" / "snapshots"
        return sorted(p.name for p in d.iterdir()) if d.exists() else []


@pytest.fixture()
def cli(tmp_path: Path) -> Shoal:
    return Shoal(tmp_path / "root")


def rows(output: str) -> list[list[str]]:
    """Table rows split on Docker's 3+ space column gaps."""
    return [re.split(r"\s{3,}", line.strip()) for line in output.splitlines()[1:] if line.strip()]


def test_busybox_fixture_is_listed(shoal, busybox_image: str) -> None:
    out = shoal("images", "localhost/busybox", check=True).stdout
    header = out.splitlines()[0]
    assert re.match(r"^REPOSITORY\s+TAG\s+IMAGE ID\s+CREATED\s+SIZE$", header)
    assert header.index("TAG") > header.index("REPOSITORY") + len("localhost/busybox")
    (row,) = rows(out)
    assert row[:2] == ["localhost/busybox", "test"]
    assert re.fullmatch(SHORT, row[2]) and row[3].endswith("ago") and re.fullmatch(r"[\d.]+MB", row[4])


@pytest.mark.parametrize("compression", ["plain", "gzip", "xz", "zstd", "stdin-gzip"])
def test_import_compressed_tarballs(cli: Shoal, rootfs: Path, tmp_path: Path, compression: str) -> None:
    data = rootfs.read_bytes()
    if compression == "zstd" and shutil.which("zstd") is None:
        pytest.skip("zstd is not installed")
    packed = {"plain": lambda d: d, "gzip": gzip.compress, "stdin-gzip": gzip.compress, "xz": lzma.compress,
              "zstd": lambda d: subprocess.run(["zstd", "-q", "-c"], input=d, capture_output=True,
                                               check=True).stdout}[compression](data)
    if compression.startswith("stdin"):
        proc = cli.run_bytes("import", "-", "rootfs:" + compression, stdin=packed)
        out, code = proc.stdout.decode(), proc.returncode
    else:
        path = tmp_path / f"rootfs.{compression}"
        path.write_bytes(packed)
        proc2 = cli("import", str(path), "rootfs:" + compression)
        out, code = proc2.stdout, proc2.returncode
    assert code == 0, proc.stderr if compression.startswith("stdin") else proc2.stderr
    assert ID.match(out.strip())
    inspect = json.loads(cli("image", "inspect", "rootfs:" + compression, check=True).stdout)[0]
    assert inspect["Id"] == out.strip()
    assert inspect["RepoTags"] == ["rootfs:" + compression]
    assert inspect["Comment"] == "Imported from -"
    import hashlib

    assert inspect["RootFS"] == {"Type": "layers", "Layers": ["sha256:" + hashlib.sha256(data).hexdigest()]}
    lower = Path(inspect["GraphDriver"]["Data"]["LowerDir"])
    assert (lower / "bin" / "busybox").stat().st_size == Path("/bin/busybox").stat().st_size
    assert (lower / "etc" / "passwd").read_text().startswith("root:x:0:0")


def test_import_changes_set_the_config(cli: Shoal, rootfs: Path) -> None:
    out = cli("import", "-c", 'CMD ["/bin/sh", "-c", "echo hi"]', "-c", "ENTRYPOINT /bin/env",
              "-c", "ENV A=1 B='two words'", "-c", "WORKDIR /app", "-c", "USER app",
              "-c", "EXPOSE 8080 53/udp", "-c", 'LABEL org.x=y "z z"=w', "-m", "from a test",
              str(rootfs), "changed:1", check=True).stdout
    config = json.loads(cli("image", "inspect", out.strip(), check=True).stdout)[0]
    c = config["Config"]
    assert c["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert c["Entrypoint"] == ["/bin/sh", "-c", "/bin/env"]
    assert c["Env"] == ["A=1", "B=two words"]
    assert (c["WorkingDir"], c["User"]) == ("/app", "app")
    assert c["ExposedPorts"] == {"8080/tcp": {}, "53/udp": {}}
    assert c["Labels"] == {"org.x": "y", "z z": "w"}
    assert config["Comment"] == "from a test"
    bad = cli("import", "-c", "RUN echo no", str(rootfs), "changed:2")
    assert bad.returncode != 0 and "RUN is not a valid change command" in bad.stderr
    assert cli("images", "-q", "changed").stdout.split() == [out.strip()[7:19]]


@pytest.mark.parametrize("damage", ["truncated", "corrupt", "truncated-gzip", "empty", "not-a-tar"])
def test_bad_tarballs_are_rejected_with_nothing_left(cli: Shoal, rootfs: Path, tmp_path: Path,
                                                     damage: str) -> None:
    data = rootfs.read_bytes()
    bad = {
        "truncated": data[: len(data) // 2],
        "corrupt": data[:1024] + b"\x13" * 512 + data[1536:],
        "truncated-gzip": gzip.compress(data)[: len(data) // 3],
        "empty": b"",
        "not-a-tar": b"this is not a tarball\n" * 100,
    }[damage]
    path = tmp_path / f"{damage}.tar"
    path.write_bytes(bad)
    proc = cli.proc("import", str(path), "broken:1") if damage == "truncated" else cli("import", str(path), "broken:1")
    assert proc.returncode == 1
    assert proc.stderr.startswith("Error: ") and str(path) in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert rows(cli("images", "-a", check=True).stdout) == []
    assert cli.blobs() == [] and cli.snapshots() == []


def test_malformed_reference_and_missing_file(cli: Shoal, rootfs: Path) -> None:
    proc = cli.proc("import", str(rootfs), "Bad:Name")
    assert proc.returncode == 125
    assert proc.stderr.strip() == "Error: invalid reference format: repository name (library/Bad) must be lowercase"
    assert cli.blobs() == []  # checked before the tarball is read
    proc = cli("import", "/nonexistent.tar", "x:1")
    assert proc.returncode == 1 and "/nonexistent.tar" in proc.stderr


def test_images_table_tags_and_dangling(cli: Shoal, rootfs: Path) -> None:
    first = cli("import", str(rootfs), "web:v1", check=True).stdout.strip()
    cli("tag", "web:v1", "localhost:5000/team/web:prod", check=True)
    cli("tag", first[7:15], "web:latest", check=True)
    second = cli("import", str(rootfs), "web:v1", check=True).stdout.strip()  # moves web:v1
    table = rows(cli("images", check=True).stdout)
    assert table[0][:3] == ["web", "v1", second[7:19]]  # newest first
    assert [r[:3] for r in table[1:]] == [["localhost:5000/team/web", "prod", first[7:19]],
                                           ["web", "latest", first[7:19]]]
    cli("rmi", "web:v1", check=True)
    cli("import", str(rootfs), check=True)  # no name: dangling
    table = rows(cli("images", check=True).stdout)
    assert table[0][:2] == ["<none>", "<none>"]
    assert [r[:2] for r in rows(cli("images", "web").stdout)] == [["web", "latest"]]
    assert [r[:2] for r in rows(cli("images", "*/*/web").stdout)] == [["localhost:5000/team/web", "prod"]]
    assert [r[:2] for r in rows(cli("images", "web:lat*").stdout)] == [["web", "latest"]]
    assert rows(cli("images", "nothing").stdout) == []
    quiet = cli("images", "-q", check=True).stdout.split()
    assert all(re.fullmatch(SHORT, q) for q in quiet) and len(quiet) == 3
    full = cli("images", "--no-trunc", "web", check=True).stdout
    assert first in full
    fmt = cli("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}", "web", check=True).stdout
    assert fmt == f"web:latest {first[7:19]}\n"
    digests = cli("images", "--digests", "web", check=True).stdout
    assert re.match(r"^REPOSITORY\s+TAG\s+DIGEST\s+IMAGE ID\s+CREATED\s+SIZE$", digests.splitlines()[0])
    assert rows(digests)[0][:3] == ["web", "latest", "<none>"]
    table_fmt = cli("images", "--format", "table {{.Repository}}\\t{{.Size}}", "web", check=True).stdout
    assert re.match(r"^REPOSITORY\s+SIZE\nweb\s+[\d.]+MB\n$", table_fmt)
    dangling = cli("images", "-f", "dangling=true", "-q", check=True).stdout.split()
    assert len(dangling) == 1
    bad = cli("images", "-f", "colour=red")
    assert (bad.returncode, bad.stderr) == (1, "Error response from daemon: invalid filter 'colour'\n")


def test_rmi_tag_and_their_errors(cli: Shoal, rootfs: Path) -> None:
    image_id = cli("import", str(rootfs), "app:1", check=True).stdout.strip()
    cli("tag", "app:1", "app:2", check=True)
    assert cli("rmi", "app:1", check=True).stdout == "Untagged: app:1\n"
    proc = cli("rmi", "app:2", "nope:1")
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert lines[:2] == ["Untagged: app:2", f"Deleted: {image_id}"]
    assert re.fullmatch(r"Deleted: sha256:[0-9a-f]{64}", lines[2])
    assert proc.stderr.strip() == "Error: No such image: nope:1"
    assert cli.snapshots() == []
    proc = cli("tag", "missing:1", "x:1")
    assert proc.returncode == 1 and proc.stderr.strip() == "Error: No such image: missing:1"
    cli("import", str(rootfs), "app:3", check=True)
    proc = cli("tag", "app:3", "UPPER:1")
    assert proc.returncode == 125 and "is not a valid repository/tag" in proc.stderr
    assert cli("image", "rm", "app:3", check=True).stdout.startswith("Untagged: app:3\n")


def test_rmi_of_an_image_a_container_uses(cli: Shoal, rootfs: Path) -> None:
    image_id = cli("import", str(rootfs), "used:1", check=True).stdout.strip()
    cid = "5ea1ed" + "0" * 58
    record = cli.root / "containers" / cid
    record.mkdir(parents=True)
    (record / "config.json").write_text(json.dumps({"id": cid, "image_id": image_id, "state": "exited"}))
    proc = cli("rmi", "used:1")
    assert proc.returncode == 1
    assert proc.stderr.strip() == (f'Error: conflict: unable to remove repository reference "used:1" (must force) - '
                                   f"container 5ea1ed000000 is using its referenced image {image_id[7:19]}")
    assert rows(cli("images", "used").stdout)[0][:2] == ["used", "1"]
    assert cli("rmi", "-f", "used:1", check=True).stdout == f"Untagged: used:1\nDeleted: {image_id}\n"
    assert rows(cli("images", "-a").stdout) == []
    assert cli.snapshots() != []  # the container's layers stay


def test_image_prune_output(cli: Shoal, rootfs: Path) -> None:
    dangling = cli("import", str(rootfs), check=True).stdout.strip()
    tagged = cli("import", str(rootfs), "kept:1", check=True).stdout.strip()
    proc = cli("image", "prune", input="n\n")
    assert proc.stdout == "WARNING! This will remove all dangling images.\nAre you sure you want to continue? [y/N] "
    assert len(rows(cli("images", "-a").stdout)) == 2
    out = cli("image", "prune", "-f", check=True).stdout
    assert out.startswith(f"Deleted Images:\ndeleted: {dangling}\n\nTotal reclaimed space: ")
    assert re.fullmatch(r"Total reclaimed space: [\d.]+[kM]?B", out.splitlines()[-1])
    out = cli("image", "prune", "-f", check=True).stdout
    assert out == "Total reclaimed space: 0B\n"
    out = cli("image", "prune", "-a", input="y\n", check=True).stdout
    assert out.startswith("WARNING! This will remove all images without at least one container associated to "
                          "them.\nAre you sure you want to continue? [y/N] Deleted Images:\nuntagged: kept:1\n"
                          f"deleted: {tagged}\n")
    assert cli.blobs() == [] and cli.snapshots() == []


def test_history_and_inspect(cli: Shoal, rootfs: Path) -> None:
    image_id = cli("import", "-c", "CMD /bin/sh", str(rootfs), "hist:1", check=True).stdout.strip()
    out = cli("history", "hist:1", check=True).stdout
    assert re.match(r"^IMAGE\s+CREATED\s+CREATED BY\s+SIZE\s+COMMENT$", out.splitlines()[0])
    (row,) = rows(out)
    assert row[0] == image_id[7:19] and row[1].endswith("ago") and row[-1] == "Imported from -"
    assert cli("image", "history", "-q", "--no-trunc", "hist:1", check=True).stdout == image_id + "\n"
    raw = cli("history", "--human", "false", "hist:1", check=True).stdout
    assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", raw) and re.search(r"\s\d{6,}\s", raw)
    data = json.loads(cli("image", "inspect", "hist:1", check=True).stdout)
    assert list(data[0])[:6] == ["Id", "RepoTags", "RepoDigests", "Parent", "Comment", "Created"]
    for key in ("Config", "Architecture", "Os", "Size", "RootFS", "Metadata"):
        assert key in data[0]
    assert data[0]["Config"]["Cmd"] == ["/bin/sh", "-c", "/bin/sh"]
    assert cli("image", "inspect", "-f", "{{.Id}}", "hist:1", check=True).stdout == image_id + "\n"
    proc = cli("image", "inspect", "nope")
    assert proc.returncode == 1 and proc.stdout.strip() == "[]"
    assert proc.stderr.strip() == "Error: No such image: nope"


def test_full_disk_gives_a_clear_error_and_a_consistent_store(tmp_path: Path, rootfs: Path) -> None:
    """A real small filesystem (tmpfs of 6 MB) as the state root: the 2 MB rootfs fits (blob + snapshot),
    a 4 MB one runs out of space mid-way."""
    root = tmp_path / "small"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "shoal-test-full", str(root)], check=True)
    try:
        cli = Shoal(root)
        first = cli("import", str(rootfs), "fits:1", check=True).stdout.strip()
        blobs, snapshots = cli.blobs(), cli.snapshots()
        big = tmp_path / "big.tar"
        import io
        import os
        import tarfile

        with tarfile.open(big, "w") as tar:
            info = tarfile.TarInfo("huge")
            info.size = 4_000_000
            tar.addfile(info, io.BytesIO(os.urandom(info.size)))
        proc = cli.proc("import", str(big), "toobig:1")
        assert proc.returncode == 1
        assert "no space left on device" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert cli.blobs() == blobs and cli.snapshots() == snapshots  # nothing half-made kept
        assert [r[:2] for r in rows(cli("images", "-a", check=True).stdout)] == [["fits", "1"]]
        assert json.loads(cli("image", "inspect", "fits:1", check=True).stdout)[0]["Id"] == first
        leftovers = [p for p in (root / "image" / "ingest").iterdir()] + \
            [p for p in (root / "image" / "snapshots").iterdir() if p.name.startswith(".")]
        assert leftovers == []
    finally:
        subprocess.run(["umount", str(root)], check=True)


def test_rmi_with_a_real_running_container(shoal, busybox_tar: Path) -> None:
    """The runtime's own container record, from a real `shoal run -d`."""
    shoal("import", str(busybox_tar), "localhost/rmi-running:1", check=True)
    name = "shoal-rmi-running-test"
    try:
        cid = shoal("run", "-d", "--name", name, "localhost/rmi-running:1", "sleep", "60", check=True).stdout.strip()
        image_id = json.loads(shoal("image", "inspect", "localhost/rmi-running:1", check=True).stdout)[0]["Id"]
        proc = shoal("rmi", "localhost/rmi-running:1")
        assert proc.returncode == 1
        assert proc.stderr.strip() == ('Error: conflict: unable to remove repository reference '
                                       f'"localhost/rmi-running:1" (must force) - container {cid[:12]} '
                                       f"is using its referenced image {image_id[7:19]}")
        proc = shoal("rmi", "-f", image_id[7:19])
        assert proc.returncode == 1
        assert proc.stderr.strip() == (f"Error: conflict: unable to delete {image_id[7:19]} (cannot be forced) - "
                                       f"image is being used by running container {cid[:12]}")
        assert shoal("rmi", "-f", "localhost/rmi-running:1", check=True).stdout == \
            "Untagged: localhost/rmi-running:1\n"
        assert image_id[7:19] in shoal("images", "-q", check=True).stdout  # kept, dangling
    finally:
        shoal("rm", "-f", name)
    assert shoal("rmi", image_id, check=True).stdout.startswith(f"Deleted: {image_id}\n")
