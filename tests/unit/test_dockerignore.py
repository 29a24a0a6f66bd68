""".dockerignore rules (moby/patternmatcher) and the build context they shape."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.build.cache import BuildCache, step_key
from shoal.build.context import BuildContext, contains_wildcards
from shoal.build.dockerignore import PatternMatcher, read_ignore_file


def matches(patterns: list[str], path: str) -> bool:
    return PatternMatcher.new(patterns).matches_or_parent_matches(path)


@pytest.mark.parametrize(
    ("patterns", "path", "expected"),
    [
        (["*.go"], "file.go", True),
        (["*.go"], "dir/file.go", False),            # * does not cross directories
        (["**/*.go"], "dir/sub/file.go", True),
        (["**/*.go"], "file.go", True),
        (["docs"], "docs/a/b.md", True),              # a dir pattern covers its contents
        (["docs/**"], "docs/a", True),
        (["*.md", "!README.md"], "README.md", False),
        (["*.md", "!README.md"], "CHANGES.md", True),
        (["!README.md", "*.md"], "README.md", True),  # the last match wins
        (["a?c"], "abc", True),
        (["a?c"], "a/c", False),
        (["[a-c]x"], "bx", True),
        (["**"], "anything/at/all", True),
        ([".git"], ".gitignore", False),
        (["dir/**/x"], "dir/x", True),
        (["dir/**/x"], "dir/a/b/x", True),
        (["\\*star"], "*star", True),
    ],
)
def test_patterns(patterns: list[str], path: str, expected: bool) -> None:
    assert matches(patterns, path) is expected


def test_read_ignore_file() -> None:
    text = "\ufeff# comment\n\n  /node_modules/  \n!  keep.txt\n./a/../b\n"
    assert read_ignore_file(text) == ["node_modules", "!keep.txt", "b"]


def test_illegal_exclusion() -> None:
    with pytest.raises(ValueError, match="illegal exclusion pattern"):
        PatternMatcher.new(["!"])


def _tree(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(content)
    return root


def test_context_honours_dockerignore(tmp_path: Path) -> None:
    _tree(tmp_path, {
        "Dockerfile": "FROM x\n", ".dockerignore": "*.log\nsecret/\nbuild\n!build/keep.txt\nDockerfile\n",
        "app.py": "print(1)\n", "debug.log": "x", "secret/key": "k",
        "build/out.o": "o", "build/keep.txt": "k", "sub/nested.log": "n",
    })
    ctx = BuildContext.load(tmp_path, "Dockerfile")
    assert "app.py" in ctx.entries and "sub/nested.log" in ctx.entries
    assert "debug.log" not in ctx.entries
    assert "secret" not in ctx.entries and "secret/key" not in ctx.entries
    assert "build/out.o" not in ctx.entries and "build/keep.txt" in ctx.entries
    # The CLI always sends the Dockerfile and .dockerignore, whatever the patterns say.
    assert "Dockerfile" in ctx.entries and ".dockerignore" in ctx.entries
    assert ctx.resolve("build/keep.txt") == "build/keep.txt"
    assert ctx.resolve("debug.log") is None


def test_context_size_is_the_tar_size(tmp_path: Path) -> None:
    import io
    import tarfile

    _tree(tmp_path, {"Dockerfile": "FROM x\n" * 100, "app.py": "a" * 700, "requirements.txt": "Flask\nRedis\n",
                     "d/e/f.txt": "z" * 513})
    ctx = BuildContext.load(tmp_path)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for rel in sorted(ctx.entries):
            tar.add(tmp_path / rel, arcname=rel, recursive=False)
        written = tar.offset
    # Python pads the archive to 10 KiB records; Go's writer (Docker's CLI) ends after two
    # zero blocks.
    assert ctx.tar_size() == written + 1024


def test_context_glob_and_hash(tmp_path: Path) -> None:
    _tree(tmp_path, {"a.txt": "1", "b.txt": "2", "dir/c.txt": "3"})
    ctx = BuildContext.load(tmp_path)
    assert ctx.glob("*.txt") == ["a.txt", "b.txt"]
    assert ctx.glob("*/*.txt") == ["dir/c.txt"]
    assert contains_wildcards("*.txt") and not contains_wildcards("a\\*b")
    before = ctx.tree_hash("")
    (tmp_path / "dir/c.txt").write_text("changed")
    assert BuildContext.load(tmp_path).tree_hash("") != before
    assert BuildContext.load(tmp_path).file_hash("a.txt") == ctx.file_hash("a.txt")


def test_cache_roundtrip(tmp_path: Path) -> None:
    cache = BuildCache(tmp_path / "build-cache.json")
    k1 = step_key("sha256:aa", {"cmd": "RUN true"})
    assert k1 == step_key("sha256:aa", {"cmd": "RUN true"})
    assert k1 != step_key("sha256:ab", {"cmd": "RUN true"})
    assert cache.get(k1) is None
    cache.put(k1, "sha256:bb")
    assert BuildCache(tmp_path / "build-cache.json").get(k1) == "sha256:bb"
    cache.forget({"sha256:bb"})
    assert BuildCache(tmp_path / "build-cache.json").get(k1) is None


def test_ignored_build_files_are_sent_then_dropped(tmp_path: Path) -> None:
    _tree(tmp_path, {"Dockerfile": "FROM x\n", ".dockerignore": "Dockerfile\n.dockerignore\n", "a": "a"})
    ctx = BuildContext.load(tmp_path, "Dockerfile")
    assert {"Dockerfile", ".dockerignore", "a"} <= set(ctx.entries)
    ctx.drop_build_files("Dockerfile")
    assert set(ctx.entries) == {"a"}
