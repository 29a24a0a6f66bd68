"""A Dockerfile that asks the builder for more than a node has (session 8, H6): variables
that double at each line (`ENV A=${A}${A}` forty times is 2^40 bytes) grew the builder, a
daemon's included, until the OOM killer came. A build's substitutions now share a budget; past
it the step fails with a one-line error naming the word. The builder runs here under an
address-space limit, so the case fails (MemoryError) rather than exhausting the machine."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import ROOT_ONLY

pytestmark = [pytest.mark.root, ROOT_ONLY]

LIMIT = 3 << 30  # far above what a build of these Dockerfiles needs, far below 2^40 bytes


def _limited() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (LIMIT, LIMIT))


def _build(tmp_path: Path, dockerfile: str) -> subprocess.CompletedProcess[str]:
    ctx = tmp_path / f"ctx-{uuid.uuid4().hex[:8]}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(dockerfile)
    return subprocess.run([sys.executable, "-m", "shoal", "build", "-q", str(ctx)], capture_output=True,
                          text=True, timeout=300, preexec_fn=_limited, env=dict(os.environ))


@pytest.mark.parametrize("kind", ["ENV", "ARG"])
def test_doubling_variables_are_refused(shoal, busybox_image: str, tmp_path: Path, kind: str) -> None:
    grow = f"{kind} A=${{A}}${{A}}\n" * 40
    proc = _build(tmp_path, f"FROM {busybox_image}\n{kind} A=x\n{grow}RUN true\n")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert 'failed to process "${A}${A}": variable expansion exceeds 16MiB in this build' in proc.stderr, \
        proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr


def test_the_budget_is_the_builds_not_a_words(shoal, busybox_image: str, tmp_path: Path) -> None:
    """20 doublings (a 1MiB value, 2MiB substituted), then one LABEL of 64 references."""
    grow = "ENV A=${A}${A}\n" * 20
    labels = " ".join(f"l{i}=$A" for i in range(64))
    proc = _build(tmp_path, f"FROM {busybox_image}\nENV A=x\n{grow}LABEL {labels}\n")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert 'failed to process "$A": variable expansion exceeds 16MiB in this build' in proc.stderr, \
        proc.stderr[-2000:]


def test_heredocs_draw_on_the_same_budget(shoal, busybox_image: str, tmp_path: Path) -> None:
    """COPY heredocs expand with a lexer of their own: 20 doublings (1MiB), then heredocs of
    many references each, which together pass the budget."""
    grow = "ENV A=${A}${A}\n" * 20
    body = "$A " * 8
    copies = "".join(f"COPY <<EOT /f{i}\n{body}\nEOT\n" for i in range(4))
    proc = _build(tmp_path, f"FROM {busybox_image}\nENV A=x\n{grow}{copies}")
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "variable expansion exceeds 16MiB in this build" in proc.stderr, proc.stderr[-2000:]


@pytest.mark.parametrize("where", ["dockerignore", "dockerignore-class", "copy"])
def test_backtracking_patterns_end(shoal, busybox_image: str, tmp_path: Path, where: str) -> None:
    """`*a*a*a...y` against a name of sixty a's: Python's re tried every split (the build never
    ended, a daemon's thread spun with it); Go's matchers, and now shoal's, take linear time.
    With a `[...]` class around the stars, or one never closed, the pattern is moby's regex
    itself (build/regexnfa.py). The timeout only guards the run: the build takes about a second."""
    pattern = "*a" * 30 + "y"
    ctx = tmp_path / f"ctx-{uuid.uuid4().hex[:8]}"
    (ctx / "d").mkdir(parents=True)
    (ctx / "d" / ("a" * 60)).write_text("x\n")
    if where == "dockerignore-class":
        (ctx / ".dockerignore").write_text(f"d/[{pattern}]x\nd/[{pattern}\n")
        (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY . /c/\nRUN test -f /c/d/{'a' * 60}\n")
    elif where == "dockerignore":
        (ctx / ".dockerignore").write_text(f"{pattern}\n**/{pattern}\n" + "/".join(["**"] * 25) + "/y\n")
        (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY . /c/\nRUN test -f /c/d/{'a' * 60}\n")
    else:
        (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\nCOPY d/{pattern} /c/\n")
    proc = subprocess.run([sys.executable, "-m", "shoal", "build", "-q", str(ctx)], capture_output=True,
                          text=True, timeout=120)
    if where.startswith("dockerignore"):
        assert proc.returncode == 0, proc.stderr
    else:
        assert proc.returncode == 1 and "no source files were specified" in proc.stderr, proc.stderr


@pytest.mark.parametrize("depth,ok", [(128, True), (129, False), (5000, False)])
def test_nested_substitutions_end_in_one_line(shoal, busybox_image: str, tmp_path: Path, depth: int,
                                              ok: bool) -> None:
    """`${a:-${a:-...}}` 500 deep was a RecursionError traceback (buildkit recurses on Go's
    growing stack); far past any real Dockerfile, it is now a one-line error."""
    word = "${a:-" * depth + "y" + "}" * depth
    proc = _build(tmp_path, f"FROM {busybox_image}\nENV a=x\nENV b={word}\n")
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    if ok:
        assert proc.returncode == 0, proc.stderr[-2000:]
    else:
        assert proc.returncode == 1
        line = proc.stderr.strip().splitlines()[-1]
        assert line.startswith('failed to process "${a:-${a:-') and line.endswith(
            ": substitutions nested more than 128 deep"), line[-300:]


def test_many_large_labels_do_not_pile_up_in_the_builder(shoal, busybox_image: str, tmp_path: Path) -> None:
    """Each step's image carries every label so far; the store kept the last 256 configs
    decoded whatever their size: 100 LABELs of 60KB took 670MB (a MemoryError under 500MB)."""
    labels = "".join(f"LABEL l{i}={'y' * 60000}\n" for i in range(100))
    ctx = tmp_path / f"ctx-{uuid.uuid4().hex[:8]}"
    ctx.mkdir()
    (ctx / "Dockerfile").write_text(f"FROM {busybox_image}\n{labels}")
    limit = 500 << 20
    proc = subprocess.run([sys.executable, "-m", "shoal", "build", "-q", "--no-cache", str(ctx)], capture_output=True,
                          text=True, timeout=600, env=dict(os.environ),
                          preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit)))
    assert proc.returncode == 0 and "MemoryError" not in proc.stderr, proc.stderr[-2000:]
