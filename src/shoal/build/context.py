"""The build context: the directory the user named, minus what .dockerignore excludes.

Docker's CLI tars the context (go-archive TarWithOptions with the ignore patterns) and the
daemon copies from the extracted tar. Here the directory is read in place through the same
inclusion rules, and the tar's size is computed for the "Sending build context" line."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import posixpath
import stat
from dataclasses import dataclass, field
from pathlib import Path

from shoal.build.fs import CopyError, open_beneath
from shoal.build.scope import MISSING, Missing, TooManyLinks, follow_in_scope
from shoal.build.globmatch import CHAR, NOT_SLASH, STAR, Glob, Token
from shoal.build.dockerignore import PatternMatcher, load_patterns, read_context_ignore, read_ignore_file
from shoal.errors import ShoalError
from shoal.image.layers import MAX_DEPTH

_BLOCK = 512


class ContextError(ShoalError):
    pass


def _tar_entry_size(name: str, size: int, linkname: str = "") -> int:
    header = _BLOCK
    # Go's tar writer switches to a PAX header for names/links over 100 bytes.
    if len(name) > 100 or len(linkname) > 100:
        record = len(name) + len(linkname) + 40
        header += _BLOCK + (record + _BLOCK - 1) // _BLOCK * _BLOCK
    return header + (size + _BLOCK - 1) // _BLOCK * _BLOCK


@dataclass
class BuildContext:
    root: Path
    patterns: list[str] = field(default_factory=list)
    # relative path -> lstat result, for every entry the tar would hold (dirs included)
    entries: dict[str, os.stat_result] = field(default_factory=dict)
    _hashes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, root: Path, dockerfile_rel: str | None = "Dockerfile") -> BuildContext:
        root = Path(root)
        if not root.is_dir():
            raise ContextError(f'unable to prepare context: path "{root}" not found')
        try:
            patterns = load_patterns(root, dockerfile_rel)
            pm = PatternMatcher.new(patterns)
        except ValueError as exc:
            raise ContextError(f"error checking context: .dockerignore: {exc}") from None
        ctx = cls(root=root, patterns=patterns)
        ctx._walk(pm)
        # Directories left out but holding re-included files exist in the extracted context.
        for rel in list(ctx.entries):
            parent = posixpath.dirname(rel)
            while parent and parent not in ctx.entries:
                ctx.entries[parent] = os.lstat(root / parent)
                parent = posixpath.dirname(parent)
        return ctx

    def _walk(self, pm: PatternMatcher) -> None:
        """go-archive's walk: skip excluded dirs unless an exception pattern reaches inside."""
        parent_info: dict[str, list[bool]] = {}
        root = str(self.root)
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            rel_dir = os.path.relpath(dirpath, root)
            rel_dir = "" if rel_dir == "." else rel_dir
            if rel_dir and rel_dir.count("/") + 1 >= MAX_DEPTH and dirnames:
                # os.walk recurses (a RecursionError near 1000 levels), and a layer holds at
                # most MAX_DEPTH levels: the copy could never be stored
                shown = rel_dir if len(rel_dir) <= 80 else rel_dir[:77] + "..."
                raise ContextError(f"error checking context: '{shown}' has directories more than "
                                   f"{MAX_DEPTH} levels deep")
            keep_dirs = []
            for name in sorted(dirnames) + sorted(filenames):
                rel = posixpath.join(rel_dir, name) if rel_dir else name
                full = os.path.join(dirpath, name)
                try:
                    st = os.lstat(full)
                except OSError as exc:
                    raise ContextError(f"error checking context: '{exc}'.") from None
                is_dir = stat.S_ISDIR(st.st_mode)
                skip = False
                if pm.patterns:
                    skip, info = pm.matches_using_parent(rel, parent_info.get(rel_dir))
                    if is_dir:
                        parent_info[rel] = info
                if skip:
                    if is_dir and self._must_descend(pm, rel):
                        keep_dirs.append(name)
                    continue
                if stat.S_ISREG(st.st_mode) and not os.access(full, os.R_OK):
                    raise ContextError(f"error checking context: 'can't stat '{full}''.")
                self.entries[rel] = st
                if is_dir:
                    keep_dirs.append(name)
            dirnames[:] = [d for d in dirnames if d in keep_dirs]

    @staticmethod
    def _must_descend(pm: PatternMatcher, rel: str) -> bool:
        if not pm.exclusions:
            return False
        prefix = rel + "/"
        return any(p.exclusion and (p.cleaned + "/").startswith(prefix) for p in pm.patterns)

    def drop_build_files(self, dockerfile_rel: str | None) -> None:
        """After the context is "sent": the daemon deletes .dockerignore and the Dockerfile
        from it when the ignore file names them (moby remotecontext removeDockerfile), so
        `COPY . /app` does not pick them up."""
        text = read_context_ignore(self.root)
        if text is None:
            return
        try:
            pm = PatternMatcher.new(read_ignore_file(text))
        except ValueError:
            return
        for rel in (".dockerignore", dockerfile_rel):
            if rel and rel in self.entries and pm.matches_or_parent_matches(rel):
                del self.entries[rel]

    # --- what the CLI reports ------------------------------------------------------------------

    def tar_size(self) -> int:
        total = 0
        for rel, st in self.entries.items():
            if stat.S_ISREG(st.st_mode):
                total += _tar_entry_size(rel, st.st_size)
            elif stat.S_ISLNK(st.st_mode):
                total += _tar_entry_size(rel, 0, os.readlink(self.root / rel))
            else:
                total += _tar_entry_size(rel + "/" if stat.S_ISDIR(st.st_mode) else rel, 0)
        return total + 2 * _BLOCK

    # --- lookups for COPY/ADD ------------------------------------------------------------------

    def has(self, rel: str) -> bool:
        return rel in ("", ".") or rel in self.entries

    def resolve(self, rel: str) -> str | None:
        """A context-relative path with symlinks followed inside the context (as the daemon's
        FollowSymlinkInScope), or None when it is missing or excluded."""
        def lookup(cur: str) -> str | None | Missing:
            st = self.entries.get(cur)
            if st is None:
                return MISSING
            return os.readlink(self.root / cur) if stat.S_ISLNK(st.st_mode) else None

        try:
            return follow_in_scope(rel, lookup)
        except TooManyLinks:
            return None

    def stat(self, rel: str) -> os.stat_result | None:
        if rel in ("", "."):
            return os.lstat(self.root)
        return self.entries.get(rel)

    def glob(self, pattern: str) -> list[str]:
        """Every entry whose whole relative path matches (filepath.Match: `*` stops at `/`)."""
        rx = _go_match_regex(pattern)
        return [rel for rel in sorted(self.entries) if rx.match(rel)]

    def children(self, rel: str) -> list[str]:
        """All included entries below directory `rel`, sorted (parents before children)."""
        if rel in ("", "."):
            return sorted(self.entries)
        prefix = rel + "/"
        return sorted(r for r in self.entries if r.startswith(prefix))

    def file_hash(self, rel: str) -> str:
        """Content and metadata of one entry, for the layer cache key."""
        cached = self._hashes.get(rel)
        if cached:
            return cached
        st = self.stat(rel)
        assert st is not None
        h = hashlib.sha256()
        # a name that is not UTF-8 (a context is bytes, as Go's tar names are) hashed as its bytes
        h.update(f"{rel}\0{stat.S_IMODE(st.st_mode):o}\0{stat.S_IFMT(st.st_mode)}\0"
                 .encode(errors="surrogateescape"))
        if stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode):
            # by descriptor, as the copy reads it: the context may have changed since it was
            # walked (a file gone, a directory swapped for a link out of it)
            try:
                with open_beneath(self.root, rel) as (parent, name):
                    if stat.S_ISLNK(st.st_mode):
                        h.update(os.fsencode(os.readlink(name, dir_fd=parent)))
                    else:
                        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=parent)
                        with open(fd, "rb") as f:
                            for chunk in iter(lambda: f.read(1 << 20), b""):
                                h.update(chunk)
            except OSError as exc:
                raise CopyError(f"failed to copy files: {rel}: {exc.strerror}") from None
        digest = h.hexdigest()
        self._hashes[rel] = digest
        return digest

    def tree_hash(self, rel: str) -> str:
        """A directory's hash: its own entry plus everything included below it."""
        h = hashlib.sha256()
        for child in [rel] + self.children(rel) if rel not in ("", ".") else self.children(rel):
            h.update(self.file_hash(child).encode())
        return h.hexdigest()


def _go_match_regex(pattern: str) -> Glob:
    """Go's filepath.Match, whole path: `*`/`?` never match `/`, `[...]` classes, `\\` escapes
    (matched by globmatch, in linear time as Go does: Python's re backtracked for minutes on
    `COPY *a*a*a...y` against a long name)."""
    import re

    tokens: list[Token] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            tokens.append(Token(STAR))
        elif ch == "?":
            tokens.append(NOT_SLASH)
        elif ch == "\\" and i < len(pattern):
            tokens.append(Token(CHAR, literal=pattern[i]))
            i += 1
        elif ch == "[":
            j = pattern.find("]", i)
            if j < 0:
                raise ContextError(f"syntax error in pattern: {pattern}")
            body = pattern[i:j]
            if body.startswith("^"):
                body = "!" + body[1:]
            cls = fnmatch.translate("[" + body + "]")
            # fnmatch.translate wraps as (?s:...)\Z; keep only the class itself
            try:
                tokens.append(Token(CHAR, klass=re.compile(cls[4:-3], re.DOTALL)))
            except re.error:
                raise ContextError(f"syntax error in pattern: {pattern}") from None
            i = j + 1
        else:
            tokens.append(Token(CHAR, literal=ch))
    return Glob(tokens)


def contains_wildcards(path: str) -> bool:
    i = 0
    while i < len(path):
        ch = path[i]
        if ch == "\\":
            i += 2
            continue
        if ch in "*?[":
            return True
        i += 1
    return False
