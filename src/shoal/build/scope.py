"""Following symlinks inside a root as if it were `/` (moby's FollowSymlinkInScope), over any
tree: the build context's entries, an image's mounted root, a layer being written."""

from __future__ import annotations

from collections.abc import Callable

MAX_LINKS = 255


class Missing:
    """What a lookup returns for a path that does not exist."""


MISSING = Missing()

# rel path -> MISSING, None (exists, not a symlink), or the symlink's target
Lookup = Callable[[str], "str | None | Missing"]


class TooManyLinks(Exception):
    pass


def follow_in_scope(path: str, lookup: Lookup, keep_missing: bool = False) -> str | None:
    """The path with every symlink resolved inside the root, `..` never leaving it. A missing
    component ends the walk with None, or, with keep_missing, is kept as it is (for a
    destination that is about to be created)."""
    parts = [p for p in path.split("/") if p and p != "."]
    done: list[str] = []
    links = 0
    while parts:
        name = parts.pop(0)
        if name == "..":
            if done:
                done.pop()
            continue
        found = lookup("/".join(done + [name]))
        if isinstance(found, Missing):
            if not keep_missing:
                return None
            done.append(name)
            continue
        if found is not None:
            links += 1
            if links > MAX_LINKS:
                raise TooManyLinks(path)
            if found.startswith("/"):
                done = []
            parts = [p for p in found.split("/") if p and p != "."] + parts
            continue
        done.append(name)
    return "/".join(done)


def fs_lookup(root_join: Callable[[str], str]) -> Lookup:
    """A lookup over a real directory (root_join maps a relative path to a host path)."""
    import os
    import stat

    def lookup(rel: str) -> str | None | Missing:
        try:
            st = os.lstat(root_join(rel))
        except (FileNotFoundError, NotADirectoryError):
            return MISSING
        return os.readlink(root_join(rel)) if stat.S_ISLNK(st.st_mode) else None

    return lookup
