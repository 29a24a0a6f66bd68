"""Read files of an image's merged root filesystem straight from its overlay lowerdirs, without
mounting anything: used before a container exists (command look-up, /etc/passwd), so a bad
request fails with nothing to clean up."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from shoal.errors import ShoalError

_MAX_SYMLINKS = 40
MAX_TEXT = 16 << 20  # /etc/passwd and /etc/group; moby's scanner refuses a line past 64KiB


class LayeredView:
    """The union of overlay lowerdirs, top layer first, with overlay whiteouts and opaque dirs."""

    def __init__(self, layers: list[Path]) -> None:
        self.layers = [Path(p) for p in layers]

    def _lookup_component(self, parents: list[Path], name: str) -> tuple[list[Path], os.stat_result | None]:
        """Look `name` up in each layer's copy of the directory; returns the layer copies of the
        entry that are visible (a dir can be merged from several layers) and the top one's stat."""
        found: list[Path] = []
        top: os.stat_result | None = None
        for parent in parents:
            candidate = parent / name
            try:
                st = os.lstat(candidate)
            except (FileNotFoundError, NotADirectoryError):
                continue
            if stat.S_ISCHR(st.st_mode) and st.st_rdev == 0:
                break  # whiteout: hides this name in every lower layer
            if top is None:
                top = st
            elif not stat.S_ISDIR(top.st_mode):
                break
            if not stat.S_ISDIR(st.st_mode):
                if not found:
                    found.append(candidate)
                break
            found.append(candidate)
            if _is_opaque(candidate):
                break
        return found, top

    def resolve(self, path: str) -> tuple[Path, os.stat_result] | None:
        """The host path of the file `path` resolves to inside the rootfs (following symlinks
        as the kernel would, relative to the rootfs), or None."""
        return self._resolve(path, 0)

    def _resolve(self, path: str, depth: int) -> tuple[Path, os.stat_result] | None:
        parts = [p for p in path.split("/") if p and p != "."]
        dirs = list(self.layers)
        done: list[str] = []
        top: os.stat_result | None = os.stat(self.layers[0]) if self.layers else None
        hit: Path | None = self.layers[0] if self.layers else None
        for i, name in enumerate(parts):
            if name == "..":
                done = done[:-1]
                return self._resolve("/".join(done + parts[i + 1 :]), depth)
            found, st = self._lookup_component(dirs, name)
            if st is None:
                return None
            if stat.S_ISLNK(st.st_mode):
                if depth >= _MAX_SYMLINKS:
                    return None
                target = os.readlink(found[0])
                rest = parts[i + 1 :]
                base = [] if target.startswith("/") else done
                return self._resolve("/".join(base + [target] + rest), depth + 1)
            done.append(name)
            dirs, top, hit = found, st, found[0]
        if hit is None or top is None:
            return None
        return hit, top

    def read_text(self, path: str, limit: int = MAX_TEXT) -> str | None:
        """A small text file of the image (/etc/passwd, /etc/group), or None. Past `limit`
        bytes it is an error: read whole, a sparse 6GiB /etc/passwd (a 10KiB layer) took all
        the memory of the CLI or shoald that started a container from the image."""
        found = self.resolve(path)
        if found is None or not stat.S_ISREG(found[1].st_mode):
            return None
        fd = os.open(found[0], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as f:
            data = f.read(limit + 1)
        if len(data) > limit:
            raise ShoalError(f"{path} of the image is larger than {limit >> 20}MiB")
        return data.decode(errors="replace")

    def is_nonempty_dir(self, path: str) -> bool:
        found = self.resolve(path)
        return found is not None and stat.S_ISDIR(found[1].st_mode) and any(found[0].iterdir())


def _is_opaque(path: Path) -> bool:
    for attr in ("trusted.overlay.opaque", "user.overlay.opaque"):
        try:
            if os.getxattr(path, attr, follow_symlinks=False) == b"y":
                return True
        except OSError:
            continue
    return False


def find_executable(view: LayeredView, name: str, path_env: str) -> tuple[str, bool] | None:
    """Look argv[0] up the way runc does (PATH search unless it has a slash).
    Returns (path inside the rootfs, is executable) or None when nothing is there."""
    candidates = [name] if "/" in name else [f"{d or '.'}/{name}" for d in path_env.split(":")]
    fallback: tuple[str, bool] | None = None
    for candidate in candidates:
        found = view.resolve(candidate)
        if found is None or stat.S_ISDIR(found[1].st_mode):
            continue
        executable = bool(found[1].st_mode & 0o111)
        if executable:
            return candidate, True
        fallback = fallback or (candidate, False)
    return fallback
