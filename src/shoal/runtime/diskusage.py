"""This node's disk usage and what prunes reclaim, as dockerd's /system/df and its prune routes
count them: images (layers counted once, active = used by a container), containers (their
writable layer, active = running), local volumes (active = used by a container), and the build
cache (the builder's step images that no tag names: shoal's builder keeps its cache as images,
build/cache.py).

Every count here is read from the stores on disk; nothing is estimated."""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shoal.runtime import volumes


@dataclass
class Usage:
    """One row of `system df`."""

    type: str
    total: int = 0
    active: int = 0
    size: int = 0
    reclaimable: int = 0
    items: list[dict[str, Any]] = field(default_factory=list)


def _dir_size(path: Path) -> int:
    from shoal.image.layers import dir_size

    with contextlib.suppress(OSError):
        return dir_size(path)
    return 0


def cache_image_ids(store: Any) -> list[str]:
    """The image IDs the builder's layer cache names (build-cache.json under the image store)."""
    try:
        data = json.loads((Path(store.root) / "build-cache.json").read_text())
    except (OSError, ValueError):
        return []
    steps = data.get("steps") if isinstance(data, dict) else None
    return sorted({str(v) for v in (steps or {}).values()})


def container_size(c: Any) -> int:
    """SizeRw: the bytes of the container's writable layer."""
    return _dir_size(c.dir / "upper")


def usage(store: Any, containers: list[Any]) -> list[Usage]:
    """Images, Containers, Local Volumes, Build Cache: `docker system df`'s four rows."""
    images = store.list()
    users = store.container_users()
    cache = set(cache_image_ids(store))
    layer_size: dict[str, int] = {}
    cache_images, plain_images = [], []
    for im in images:
        for layer in im.layers:
            layer_size[layer.digest] = layer.unpacked_size
        is_cache = im.id in cache and not im.repo_tags and not im.repo_digests and not users.get(im.id)
        (cache_images if is_cache else plain_images).append(im)

    def unique(group: list[Any]) -> int:
        return sum(layer_size[d] for d in {layer.digest for im in group for layer in im.layers})

    active_images = [im for im in plain_images if users.get(im.id)]
    image_row = Usage("Images", total=len(plain_images), active=len(active_images), size=unique(plain_images))
    image_row.reclaimable = image_row.size - unique(active_images)
    shared = {layer.digest for im in plain_images for layer in im.layers}
    holders = Counter(d for im in plain_images for d in {layer.digest for layer in im.layers})
    # SharedSize: the bytes of the image's layers that another image has too.
    image_row.items = [{"image": im, "containers": len(users.get(im.id, [])),
                        "shared": sum(layer_size[d] for d in {layer.digest for layer in im.layers} if holders[d] > 1)}
                       for im in plain_images]

    container_row = Usage("Containers", total=len(containers))
    for c in containers:
        size = container_size(c)
        running = c.state.status == "running"
        container_row.active += running
        container_row.size += size
        container_row.reclaimable += 0 if running else size
        container_row.items.append({"container": c, "size": size})

    volume_row = Usage("Local Volumes")
    for vol in volumes.list_volumes():
        size = volumes.size(vol.name)
        links = len(volumes.users(vol.name, containers))
        volume_row.total += 1
        volume_row.active += links > 0
        volume_row.size += size
        volume_row.reclaimable += 0 if links else size
        volume_row.items.append({"volume": vol, "size": size, "links": links})

    cache_row = Usage("Build Cache", total=len(cache_images))
    for im in cache_images:
        own = sum(layer_size[layer.digest] for layer in im.layers if layer.digest not in shared)
        cache_row.items.append({"image": im, "size": own, "shared": own == 0})
    cache_row.size = sum(layer_size[d] for d in {layer.digest for im in cache_images for layer in im.layers} - shared)
    cache_row.reclaimable = cache_row.size
    return [image_row, container_row, volume_row, cache_row]


def _labels_match(labels: dict[str, str], conds: list[str], negate: bool = False) -> bool:
    def one(cond: str) -> bool:
        key, sep, value = cond.partition("=")
        return key in labels and (not sep or labels[key] == value)

    return all(not one(c) for c in conds) if negate else all(one(c) for c in conds)


def prune_containers(manager: Any, until: float | None = None, labels: list[str] | None = None,
                     not_labels: list[str] | None = None) -> tuple[list[str], int]:
    """`container prune`: every container not running (created before `until`, with the labels
    asked for); their IDs and the bytes of their writable layers."""
    removed, reclaimed = [], 0
    for c in manager.list(all=True):
        if c.state.status == "running":
            continue
        if until is not None and c.created >= until:
            continue
        have = dict(c.config.get("Labels") or {})
        if not _labels_match(have, labels or []) or not _labels_match(have, not_labels or [], negate=True):
            continue
        size = container_size(c)
        try:
            manager.remove(c.id)
        except Exception:  # noqa: BLE001 - one that started meanwhile, or is being removed: skip it
            continue
        removed.append(c.id)
        reclaimed += size
    return removed, reclaimed


def prune_build_cache(store: Any, all: bool = False, until: float | None = None,
                      keep_storage: int | None = None) -> tuple[list[str], int]:
    """`builder prune`: the step images of the layer cache (see ImageStore.prune_build_cache),
    then the cache's entries for them. With `keep_storage`, the oldest go first and only until
    the cache holds no more than that many bytes."""
    from shoal.build.cache import BuildCache

    candidates = cache_image_ids(store)
    if keep_storage:  # 0 is BuildKit's "no limit": everything that matches goes
        cache = usage_of_cache(store)
        excess = sum(size for _, size in cache) - keep_storage
        candidates = []
        for image, size in sorted(cache, key=lambda item: (item[0].created, item[0].id)):
            if excess <= 0:
                break
            candidates.append(image.id)
            excess -= size
    removed, reclaimed = store.prune_build_cache(candidates, all=all, until=until)
    if removed:
        BuildCache(Path(store.root) / "build-cache.json").forget(set(removed))
    return removed, reclaimed


def usage_of_cache(store: Any) -> list[tuple[Any, int]]:
    """Each build cache image with the bytes only it holds (as `system df -v` counts them)."""
    row = usage(store, [])[3]
    return [(item["image"], item["size"]) for item in row.items]
