"""Directories a runtime makes under a controller directory of /sys/fs/cgroup's tmpfs that has no
hierarchy mounted on it are plain files, not cgroups: found by stray_dirs, removed whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from shoal.runtime import cgroups


def test_stray_trees_under_an_unmounted_controller_are_found_and_removed(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cgroups, "CGROUP_ROOT", tmp_path)  # nothing mounted there: every controller stray
    node = tmp_path / "hugetlb" / "shoal-c-1"
    (node / "shoal" / "abc").mkdir(parents=True)
    (node / "shoal" / "abc" / "cgroup.procs").write_text("")
    (tmp_path / "hugetlb" / "shoal-c-2").mkdir()
    assert cgroups.stray_dirs("shoal-c-1") == [node]
    assert cgroups.stray_dirs("/shoal-c-1/shoal/abc") == [node / "shoal" / "abc"]
    cgroups.remove_stray(node)
    assert not node.exists() and (tmp_path / "hugetlb" / "shoal-c-2").is_dir()
