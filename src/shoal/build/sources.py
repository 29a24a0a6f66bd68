"""Where COPY/ADD read from: the build context (with .dockerignore applied) or the merged
root filesystem of another stage or image (`--from`). Both answer the same questions: resolve
a path (symlinks followed inside the tree), glob, list a directory, hash content."""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
from collections.abc import Callable
from pathlib import Path

from shoal.build.context import BuildContext, _go_match_regex
from shoal.build.scope import TooManyLinks, fs_lookup, follow_in_scope


class ContextSource:
    def __init__(self, ctx: BuildContext) -> None:
        self.ctx = ctx
        self.root = ctx.root
        self.is_context = True

    def resolve(self, rel: str) -> str | None:
        return self.ctx.resolve(rel)

    def stat(self, rel: str) -> os.stat_result | None:
        return self.ctx.stat(rel)

    def glob(self, pattern: str) -> list[str]:
        return self.ctx.glob(pattern)

    def hash(self, rel: str) -> str:
        st = self.stat(rel)
        if st is not None and stat.S_ISDIR(st.st_mode):
            return "dir:" + self.ctx.tree_hash(rel)
        return "file:" + self.ctx.file_hash(rel)

    def include(self, rel: str) -> Callable[[str], bool]:
        prefix = rel + "/" if rel not in ("", ".") else ""
        entries = self.ctx.entries
        return lambda child: (prefix + child) in entries


class DirSource:
    """A real directory: an image's merged root mounted read-only."""

    def __init__(self, root: Path, identity: str) -> None:
        self.root = root
        self.identity = identity   # the image ID: its content never changes
        self.is_context = False

    def resolve(self, rel: str) -> str | None:
        try:
            return follow_in_scope(rel, fs_lookup(lambda r: str(self.root / r)))
        except TooManyLinks:
            return None

    def stat(self, rel: str) -> os.stat_result | None:
        try:
            return os.lstat(self.root / rel) if rel else os.lstat(self.root)
        except OSError:
            return None

    def glob(self, pattern: str) -> list[str]:
        rx = _go_match_regex(pattern)
        depth = pattern.count("/")
        out = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            rel_dir = os.path.relpath(dirpath, self.root)
            level = 0 if rel_dir == "." else rel_dir.count("/") + 1
            for name in dirnames + filenames:
                rel = name if rel_dir == "." else posixpath.join(rel_dir, name)
                if rx.match(rel):
                    out.append(rel)
            if level >= depth:
                dirnames[:] = []   # deeper entries have more slashes than the pattern can match
        return sorted(out)

    def hash(self, rel: str) -> str:
        return "file:" + hashlib.sha256(f"{self.identity}:{rel}".encode(errors="surrogateescape")).hexdigest()

    def include(self, rel: str) -> Callable[[str], bool] | None:
        return None
