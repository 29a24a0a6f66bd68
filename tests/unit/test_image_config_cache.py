"""shoald's image store lives for days and never hears of an `rmi` the CLI makes: its cache of
decoded image configs is bounded (least recently used entries go), so a day of builds does not
pile one config per image into shoald's memory (issue 10, found with bench/bench_soak.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.image import store as store_mod
from shoal.image.store import ImageStore
from test_store_images import import_image


def test_the_config_cache_keeps_the_most_recently_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_mod, "CONFIG_CACHE_MAX", 3)
    store = ImageStore(tmp_path / "image")
    ids = [import_image(store, {f"f{i}": str(i).encode()}, [f"img{i}:v"]) for i in range(5)]
    for image_id in ids:
        store.resolve(image_id)
    assert len(store._config_cache) == 3
    store.resolve(ids[2])        # used again: it stays while two others come in
    store.resolve(ids[0])
    store.resolve(ids[1])
    assert set(store._config_cache) == {ids[2], ids[0], ids[1]}
    assert store.resolve(ids[4]).id == ids[4]  # evicted ones are read again from disk
