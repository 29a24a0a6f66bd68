"""`shoal build` end to end on the busybox test image: real overlay mounts, real RUN
containers, the real image store. Each test builds in its own context directory."""

from __future__ import annotations

import os
import stat
import textwrap
from pathlib import Path

import pytest

from conftest import ROOT_ONLY

pytestmark = [pytest.mark.root, ROOT_ONLY]


def _context(tmp_path: Path, dockerfile: str, files: dict[str, str] | None = None) -> Path:
    ctx = tmp_path / "ctx"
    ctx.mkdir(parents=True, exist_ok=True)
    (ctx / "Dockerfile").write_text(textwrap.dedent(dockerfile).lstrip())
    for rel, content in (files or {}).items():
        p = ctx / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
    return ctx


def _store():  # type: ignore[no-untyped-def]
    from shoal.image.store import ImageStore

    return ImageStore()


def _lookup(image_ref: str, path: str) -> Path | None:
    """A file of an image, looked up through its layers top first (no whiteouts in these tests)."""
    for layer in _store().resolve(image_ref).rootfs_dirs():
        candidate = layer / path.lstrip("/")
        if os.path.lexists(candidate):
            return candidate
    return None


def _no_build_leftovers(shoal_root: Path) -> None:
    tmp = shoal_root / "image" / "build-tmp"
    assert not tmp.exists() or not any(tmp.iterdir()), list(tmp.iterdir())
    with open("/proc/self/mountinfo") as f:
        assert not [line for line in f if "build-tmp" in line]


def test_multistage_copy_from_chown_and_heredoc(shoal, busybox_image: str, shoal_root: Path, tmp_path: Path) -> None:
    ctx = _context(tmp_path, f"""
        ARG BASE={busybox_image}
        FROM ${{BASE}} AS builder
        ARG GREETING=hello
        ENV OUT=/out
        RUN mkdir -p $OUT && echo "$GREETING from builder" > $OUT/msg.txt
        RUN <<EOF
        echo one > /out/heredoc.txt
        echo two >> /out/heredoc.txt
        EOF

        FROM ${{BASE}}
        ARG BASE
        WORKDIR /app
        COPY --from=builder --chown=app:staff /out/ ./
        COPY --chmod=755 run.sh ./
        COPY <<EOF /etc/motd
        motd for ${{BASE}}
        EOF
        RUN test "$(stat -c %u:%g /app/msg.txt)" = "1000:50" && test -x /app/run.sh \\
            && test "$(cat /app/heredoc.txt | wc -l)" = 2 && grep -q "hello from builder" /app/msg.txt
        USER app
        EXPOSE 8080
        CMD ["/app/run.sh"]
        """, {"run.sh": "#!/bin/sh\necho run\n"})
    proc = shoal("build", "--build-arg", "GREETING=hello", "-t", "bt/multi:v1", str(ctx))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert out.startswith("Sending build context to Docker daemon  ")
    assert "Step 1/16 : ARG BASE=" in out and "Step 16/16 : CMD [\"/app/run.sh\"]" in out
    assert " ---> Running in " in out and "Removing intermediate container " in out
    assert "Successfully tagged bt/multi:v1" in out
    image = _store().resolve("bt/multi:v1")
    cfg = image.config["config"]
    assert cfg["User"] == "app" and cfg["WorkingDir"] == "/app" and cfg["Cmd"] == ["/app/run.sh"]
    assert cfg["ExposedPorts"] == {"8080/tcp": {}}
    msg = _lookup("bt/multi:v1", "/app/msg.txt")
    assert msg is not None and msg.read_text() == "hello from builder\n"
    st = os.lstat(msg)
    assert (st.st_uid, st.st_gid) == (1000, 50)
    run_sh = _lookup("bt/multi:v1", "/app/run.sh")
    assert run_sh is not None and stat.S_IMODE(os.lstat(run_sh).st_mode) == 0o755
    motd = _lookup("bt/multi:v1", "/etc/motd")
    assert motd is not None and motd.read_text() == f"motd for {busybox_image}\n"
    history = image.config["history"]
    assert history[-1]["created_by"] == '/bin/sh -c #(nop)  CMD ["/app/run.sh"]' and history[-1]["empty_layer"]
    assert len(image.config["rootfs"]["diff_ids"]) == len([h for h in history if not h.get("empty_layer")])
    _no_build_leftovers(shoal_root)


def test_failing_run_tags_nothing(shoal, busybox_image: str, shoal_root: Path, tmp_path: Path) -> None:
    from shoal.errors import NotFound

    ctx = _context(tmp_path, f"""
        FROM {busybox_image}
        RUN echo partial > /partial
        RUN false
        """)
    proc = shoal("build", "-t", "bt/fail:v1", str(ctx))
    assert proc.returncode == 1
    assert "The command '/bin/sh -c false' returned a non-zero code: 1" in proc.stderr
    assert "Successfully" not in proc.stdout
    with pytest.raises(NotFound):
        _store().resolve("bt/fail:v1")
    _no_build_leftovers(shoal_root)


def test_rebuild_uses_cache_and_gives_the_same_id(shoal, busybox_image: str, tmp_path: Path) -> None:
    ctx = _context(tmp_path, f"""
        FROM {busybox_image}
        COPY app.txt /app/
        RUN cat /app/app.txt > /app/copy.txt
        ENV MODE=prod
        """, {"app.txt": "v1\n"})
    first = shoal("build", "-q", str(ctx))
    assert first.returncode == 0, first.stderr
    image_id = first.stdout.strip()
    assert image_id.startswith("sha256:") and len(image_id) == 71
    again = shoal("build", "-t", "bt/cache:v1", str(ctx))
    assert again.returncode == 0, again.stderr
    assert again.stdout.count(" ---> Using cache") == 3
    assert " ---> Running in" not in again.stdout
    assert f"Successfully built {image_id[7:19]}" in again.stdout
    # A changed file invalidates its COPY and everything after it.
    (ctx / "app.txt").write_text("v2\n")
    changed = shoal("build", "-q", str(ctx))
    assert changed.returncode == 0 and changed.stdout.strip() != image_id
    nocache = shoal("build", "--no-cache", str(ctx))
    assert nocache.returncode == 0 and " ---> Using cache" not in nocache.stdout


def test_dockerignore_is_honoured(shoal, busybox_image: str, tmp_path: Path) -> None:
    ctx = _context(tmp_path, f"""
        FROM {busybox_image}
        COPY . /ctx
        """, {".dockerignore": "*.secret\nlogs\n!logs/keep.log\n", "a.txt": "a", "key.secret": "s",
              "logs/x.log": "x", "logs/keep.log": "k", "sub/b.txt": "b"})
    proc = shoal("build", "-t", "bt/ignore:v1", str(ctx))
    assert proc.returncode == 0, proc.stderr
    assert _lookup("bt/ignore:v1", "/ctx/a.txt") is not None
    assert _lookup("bt/ignore:v1", "/ctx/sub/b.txt") is not None
    assert _lookup("bt/ignore:v1", "/ctx/logs/keep.log") is not None
    assert _lookup("bt/ignore:v1", "/ctx/key.secret") is None
    assert _lookup("bt/ignore:v1", "/ctx/logs/x.log") is None
    missing = _context(tmp_path, f"FROM {busybox_image}\nCOPY key.secret /\n")
    proc = shoal("build", str(missing))
    assert proc.returncode == 1
    assert ("COPY failed: file not found in build context or excluded by .dockerignore: "
            "stat key.secret: file does not exist") in proc.stderr


def test_target_stage(shoal, busybox_image: str, tmp_path: Path) -> None:
    ctx = _context(tmp_path, f"""
        FROM {busybox_image} AS first
        LABEL stage=first
        FROM {busybox_image} AS second
        LABEL stage=second
        """)
    proc = shoal("build", "--target", "first", "-t", "bt/target:v1", str(ctx))
    assert proc.returncode == 0, proc.stderr
    assert "Step 2/2 : LABEL stage=first" in proc.stdout and "second" not in proc.stdout
    assert _store().resolve("bt/target:v1").config["config"]["Labels"] == {"stage": "first"}
    bad = shoal("build", "--target", "nope", "-t", "bt/target:v2", str(ctx))
    assert bad.returncode == 1 and 'target stage "nope" could not be found' in bad.stderr


def test_bad_input(shoal, busybox_image: str, tmp_path: Path) -> None:
    from shoal.errors import NotFound

    ctx = _context(tmp_path, f"FROM {busybox_image}\nRUN true\n\nRUNN echo\n")
    proc = shoal("build", "-t", "bt/bad:v1", str(ctx))
    assert proc.returncode == 1 and "Dockerfile:4: unknown instruction: RUNN" in proc.stderr
    proc = shoal("build", "-t", "Bad:Tag", str(ctx))
    assert proc.returncode == 125 and "invalid reference format" in proc.stderr
    ctx = _context(tmp_path, "FROM localhost/shoal-no-such-image:v9\nRUN true\n")
    proc = shoal("build", "-t", "bt/bad:v1", str(ctx))
    # Without a registry module: "pull access denied for ..."; with one, the pull's own error.
    assert proc.returncode == 1 and proc.stderr.strip() and "Successfully" not in proc.stdout
    with pytest.raises(NotFound):
        _store().resolve("bt/bad:v1")


def test_add_extracts_local_tars_and_fails_clearly_on_urls(shoal, busybox_image: str, tmp_path: Path) -> None:
    import io
    import tarfile

    ctx = _context(tmp_path, f"""
        FROM {busybox_image}
        ADD bundle.tar.gz /opt/
        ADD plain.txt /opt/plain.txt
        """, {"plain.txt": "plain\n"})
    with tarfile.open(ctx / "bundle.tar.gz", "w:gz") as tar:
        data = b"from the tar\n"
        info = tarfile.TarInfo("pkg/inside.txt")
        info.size = len(data)
        info.uid, info.gid = 1000, 1000
        tar.addfile(info, io.BytesIO(data))
    proc = shoal("build", "-t", "bt/add:v1", str(ctx))
    assert proc.returncode == 0, proc.stderr
    inside = _lookup("bt/add:v1", "/opt/pkg/inside.txt")
    assert inside is not None and inside.read_text() == "from the tar\n" and os.lstat(inside).st_uid == 1000
    assert _lookup("bt/add:v1", "/opt/bundle.tar.gz") is None
    assert _lookup("bt/add:v1", "/opt/plain.txt") is not None
    # Nothing listens on port 9 (discard): the download fails at once, with the URL named.
    url_ctx = _context(tmp_path / "url", f"FROM {busybox_image}\nADD http://127.0.0.1:9/file.txt /file.txt\n")
    proc = shoal("build", str(url_ctx))
    assert proc.returncode == 1 and 'ADD failed: Get "http://127.0.0.1:9/file.txt"' in proc.stderr
    copy_ctx = _context(tmp_path / "copyurl", f"FROM {busybox_image}\nCOPY http://127.0.0.1:9/f /f\n")
    proc = shoal("build", str(copy_ctx))
    assert proc.returncode == 1 and "COPY failed: source can't be a URL for COPY" in proc.stderr


def test_scratch_globs_metadata_and_onbuild(shoal, busybox_image: str, tmp_path: Path) -> None:
    ctx = _context(tmp_path / "parent", f"""
        FROM scratch AS files
        COPY *.txt /docs/
        COPY ["conf/app.conf", "/etc/"]

        FROM {busybox_image}
        COPY --from=files / /
        ONBUILD COPY trigger.txt /from-trigger.txt
        SHELL ["/bin/sh", "-e", "-c"]
        STOPSIGNAL SIGQUIT
        VOLUME /data
        HEALTHCHECK --interval=30s --retries=2 CMD test -f /docs/a.txt
        CMD ["ignored"]
        ENTRYPOINT ["/bin/echo"]
        """, {"a.txt": "a", "b.txt": "b", "c.md": "c", "conf/app.conf": "x=1\n"})
    proc = shoal("build", "-t", "bt/parent:v1", str(ctx))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Step 2/12 : COPY *.txt /docs/" in proc.stdout
    assert _lookup("bt/parent:v1", "/docs/a.txt") is not None and _lookup("bt/parent:v1", "/docs/b.txt") is not None
    assert _lookup("bt/parent:v1", "/docs/c.md") is None
    assert _lookup("bt/parent:v1", "/etc/app.conf") is not None
    cfg = _store().resolve("bt/parent:v1").config["config"]
    assert cfg["OnBuild"] == ["COPY trigger.txt /from-trigger.txt"]
    assert cfg["Shell"] == ["/bin/sh", "-e", "-c"] and cfg["StopSignal"] == "SIGQUIT"
    assert cfg["Volumes"] == {"/data": {}}
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "test -f /docs/a.txt"], "Interval": 30_000_000_000, "Retries": 2}
    # ENTRYPOINT resets only an inherited CMD, not one set earlier in the same stage.
    assert cfg["Entrypoint"] == ["/bin/echo"] and cfg["Cmd"] == ["ignored"]

    child = _context(tmp_path / "child", "FROM bt/parent:v1\nLABEL child=yes\nENTRYPOINT [\"/bin/cat\"]\n",
                     {"trigger.txt": "triggered\n"})
    proc = shoal("build", "-t", "bt/child:v1", str(child))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "# Executing 1 build trigger" in proc.stdout
    trig = _lookup("bt/child:v1", "/from-trigger.txt")
    assert trig is not None and trig.read_text() == "triggered\n"
    child_cfg = _store().resolve("bt/child:v1").config["config"]
    assert child_cfg["OnBuild"] is None and child_cfg["Cmd"] is None
