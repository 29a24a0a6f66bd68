"""What `images`, `history` and `image inspect` show of the image store, as data: the same rows
for the CLI's local commands and for shoald's node API (api/nodeapi.py), which the CLI renders
alike (docker/cli cli/command/image, moby's image list filters)."""

from __future__ import annotations

import re
from typing import Any

from shoal.errors import InvalidArgument
from shoal.image import reference as refs
from shoal.image.store import Image, ImageStore


def go_path_match(pattern: str, name: str) -> bool:
    """Go's path.Match: `*` and `?` never match `/`."""
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = pattern.find("]", i + 2)
            if end == -1:
                return False
            body = pattern[i + 1 : end]
            if body.startswith("^"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end
        elif c == "\\" and i + 1 < len(pattern):
            i += 1
            out.append(re.escape(pattern[i]))
        else:
            out.append(re.escape(c))
        i += 1
    return re.fullmatch("".join(out), name) is not None


def _familiar_match(pattern: str, ref: refs.Reference) -> bool:
    """distribution's FamiliarMatch: the familiar string, else the familiar name."""
    return go_path_match(pattern, ref.familiar()) or go_path_match(pattern, ref.familiar_name())


def parse_filters(raw: list[str]) -> dict[str, list[str]]:
    filters: dict[str, list[str]] = {}
    for item in raw:
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep:
            raise InvalidArgument(f"bad format of filter (expected name=value): {item}")
        if key not in ("dangling", "reference", "label", "label!", "before", "since", "until"):
            raise InvalidArgument(f"invalid filter '{key}'")
        if key == "dangling" and value.lower() not in ("true", "false", "1", "0"):
            raise InvalidArgument(f"invalid filter 'dangling={value}'")
        if key == "until":  # unix seconds here: the CLI turns `24h` or a date into them first
            try:
                float(value)
            except ValueError:
                raise InvalidArgument(f"invalid filter 'until={value}'") from None
        filters.setdefault(key, []).append(value)
    return filters


def _labels_match(image: Image, wanted: list[str]) -> bool:
    labels = (image.config.get("config") or {}).get("Labels") or {}
    for item in wanted:
        key, sep, value = item.partition("=")
        if key not in labels or (sep and labels[key] != value):
            return False
    return True


def list_rows(store: ImageStore, show_all: bool = False, filters: dict[str, list[str]] | None = None,
              digests: bool = False) -> list[tuple[Image, str, str, str]]:
    """(image, repository, tag, digest) rows, as moby filters and docker/cli expands them."""
    filters = filters or {}
    images = store.list()
    dangling_only: bool | None = None
    if "dangling" in filters:
        dangling_only = filters["dangling"][-1].lower() in ("true", "1")
    patterns = filters.get("reference", [])
    before = store.resolve(filters["before"][-1]).created if "before" in filters else None
    since = store.resolve(filters["since"][-1]).created if "since" in filters else None
    parents = {im.parent for im in images if im.parent}
    rows: list[tuple[Image, str, str, str]] = []
    for image in images:
        if before is not None and image.created >= before:
            continue
        if since is not None and image.created <= since:
            continue
        if "label" in filters and not _labels_match(image, filters["label"]):
            continue
        if any(_labels_match(image, [cond]) for cond in filters.get("label!", [])):
            continue  # moby's label!: none of these labels (or label=value)
        if "until" in filters and image.created >= min(float(v) for v in filters["until"]):
            continue
        tags = [refs.parse_normalized(t) for t in image.repo_tags]
        dgsts = [refs.parse_normalized(d) for d in image.repo_digests]
        if patterns:
            tags = [r for r in tags if any(_familiar_match(p, r) for p in patterns)]
            dgsts = [r for r in dgsts if any(_familiar_match(p, r) for p in patterns)]
        if not tags and not dgsts:
            if patterns or dangling_only is False:
                continue
            if not show_all and image.id in parents:
                continue  # an intermediate image (-a shows it)
            rows.append((image, "<none>", "<none>", "<none>"))
            continue
        if dangling_only and tags:
            continue
        by_repo: dict[str, list[str]] = {}
        for r in tags:
            by_repo.setdefault(r.familiar_name(), []).append(r.tag or "")
        digest_repo: dict[str, list[str]] = {}
        for r in dgsts:
            digest_repo.setdefault(r.familiar_name(), []).append(r.digest or "")
        for repo in sorted(by_repo):
            repo_digests = digest_repo.pop(repo, [])
            if not digests:
                repo_digests = []
            for tag in sorted(by_repo[repo]):
                if not repo_digests:
                    rows.append((image, repo, tag, "<none>"))
                for d in repo_digests:
                    rows.append((image, repo, tag, d))
        for repo in sorted(digest_repo):
            if digests:
                rows.extend((image, repo, "<none>", d) for d in digest_repo[repo])
            else:
                rows.append((image, repo, "<none>", ""))
    return rows


def image_records(store: ImageStore, show_all: bool = False, filters: dict[str, list[str]] | None = None,
                  digests: bool = False) -> list[dict[str, Any]]:
    """list_rows as JSON-able records (what GET /images answers; the CLI renders both alike)."""
    return [{"Id": image.id, "Repository": repo, "Tag": tag, "Digest": digest, "Created": image.created,
             "Size": image.size} for image, repo, tag, digest in list_rows(store, show_all, filters, digests)]


def history_rows(image: Image) -> list[dict[str, Any]]:
    """One row per history entry, newest first; layer sizes matched to non-empty entries."""
    history = image.config.get("history") or []
    if not history:
        history = [{"created": image.config.get("created")} for _ in image.layers]
    sizes = [layer.unpacked_size for layer in image.layers]
    rows: list[dict[str, Any]] = []
    layer_index = 0
    for entry in history:
        size = 0
        if not entry.get("empty_layer"):
            size = sizes[layer_index] if layer_index < len(sizes) else 0
            layer_index += 1
        from shoal.image.store import parse_time

        rows.append({"created": parse_time(entry.get("created")), "created_by": entry.get("created_by", ""),
                     "comment": entry.get("comment", ""), "size": size, "id": "<missing>"})
    rows.reverse()
    if rows:
        rows[0]["id"] = image.id
    return rows


_CONTAINER_CONFIG_DEFAULTS: tuple[tuple[str, Any], ...] = (
    ("Hostname", ""), ("Domainname", ""), ("User", ""), ("AttachStdin", False), ("AttachStdout", False),
    ("AttachStderr", False), ("Tty", False), ("OpenStdin", False), ("StdinOnce", False), ("Env", None),
    ("Cmd", None), ("Image", ""), ("Volumes", None), ("WorkingDir", ""), ("Entrypoint", None),
    ("OnBuild", None), ("Labels", None),
)


def _container_config(config: dict[str, Any]) -> dict[str, Any]:
    """The image's container config with the fields Docker always prints."""
    result: dict[str, Any] = {}
    for key, default in _CONTAINER_CONFIG_DEFAULTS:
        result[key] = config.get(key, default)
        if key == "Tty" and "ExposedPorts" in config:
            pass
    for key, value in config.items():
        if key not in result:
            result[key] = value
    if "ExposedPorts" in config:
        # Docker prints ExposedPorts right after StdinOnce.
        ordered: dict[str, Any] = {}
        for key, value in result.items():
            if key == "ExposedPorts":
                continue
            ordered[key] = value
            if key == "StdinOnce":
                ordered["ExposedPorts"] = config["ExposedPorts"]
        result = ordered
    return result


def inspect_object(image: Image) -> dict[str, Any]:
    """`docker image inspect` for one image."""
    config = image.config
    dirs = image.rootfs_dirs()
    return {
        "Id": image.id,
        "RepoTags": image.repo_tags,
        "RepoDigests": image.repo_digests,
        "Parent": image.parent,
        "Comment": config.get("comment", ""),
        "Created": config.get("created", ""),
        "DockerVersion": config.get("docker_version", ""),
        "Author": config.get("author", ""),
        "Config": _container_config(config.get("config") or {}),
        "Architecture": config.get("architecture", ""),
        **({"Variant": config["variant"]} if config.get("variant") else {}),
        "Os": config.get("os", ""),
        "Size": image.size,
        "GraphDriver": {
            "Data": {"LowerDir": ":".join(str(d) for d in dirs)} if dirs else {},
            "Name": "overlay",
        },
        "RootFS": {"Type": "layers", "Layers": [layer.diff_id for layer in image.layers]},
        "Metadata": {"LastTagTime": image.last_tag_time},
    }
