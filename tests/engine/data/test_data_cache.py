"""The data cache: one place for the dashboard and every job, pruned least recently used first to a cap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from engine.data import cache, load_images
from tests.helpers.images import write_image_folder

ROOT = Path(__file__).resolve().parents[3]


def _zip(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(folder.rglob("*.png")):
            archive.write(file, file.relative_to(folder.parent))
    return path


def _age(entry: cache.CacheEntry, seconds_ago: float) -> None:
    stamp = entry.paths[0].stat().st_mtime - seconds_ago
    os.utime(entry.paths[0], (stamp, stamp))


def test_entries_cover_decoded_sets_and_extracted_uploads(tmp_path, workspace):
    folder = write_image_folder(tmp_path / "a")
    load_images(str(folder), 16, cache_dir=workspace.cache_dir)
    load_images(str(_zip(write_image_folder(tmp_path / "b", seed=1), tmp_path / "b.zip")), 16,
                cache_dir=workspace.cache_dir)
    kinds = sorted(e.kind for e in cache.entries(workspace.cache_dir))
    assert kinds == ["decoded", "decoded", "upload"]
    decoded = [e for e in cache.entries(workspace.cache_dir) if e.kind == "decoded"]
    assert all(e.size_bytes >= 36 * 16 * 16 * 3 for e in decoded)  # 36 images, uint8


def test_prune_drops_the_least_recently_used_first_and_a_reload_rebuilds(tmp_path, workspace):
    old, new = write_image_folder(tmp_path / "old"), write_image_folder(tmp_path / "new", seed=1)
    first = load_images(str(old), 16, cache_dir=workspace.cache_dir)
    load_images(str(new), 16, cache_dir=workspace.cache_dir)
    by_age = cache.entries(workspace.cache_dir)
    _age(by_age[0], 3600)
    _age(by_age[1], 60)
    oldest = cache.entries(workspace.cache_dir)[0]

    removed = cache.prune(workspace.cache_dir, max_bytes=by_age[1].size_bytes)
    assert [e.name for e in removed] == [oldest.name]
    assert not any(p.exists() for p in oldest.paths)
    assert len(cache.entries(workspace.cache_dir)) == 1
    again = load_images(str(old), 16, cache_dir=workspace.cache_dir)  # decoded again, same pixels
    assert np.array_equal(np.asarray(again.images), np.asarray(first.images))


def test_reading_a_set_marks_it_used_so_the_other_goes(tmp_path, workspace):
    a, b = write_image_folder(tmp_path / "a"), write_image_folder(tmp_path / "b", seed=1)
    load_images(str(a), 16, cache_dir=workspace.cache_dir)
    load_images(str(b), 16, cache_dir=workspace.cache_dir)
    for entry in cache.entries(workspace.cache_dir):
        _age(entry, 3600)
    reread = load_images(str(a), 16, cache_dir=workspace.cache_dir)  # a cache hit touches a's entry
    room_for_one = max(e.size_bytes for e in cache.entries(workspace.cache_dir))
    removed = cache.prune(workspace.cache_dir, max_bytes=room_for_one)
    survivors = cache.entries(workspace.cache_dir)
    assert len(removed) == 1 and len(survivors) == 1
    assert json.loads(survivors[0].paths[0].read_text())["fingerprint"] == reread.fingerprint


def test_loading_under_a_tiny_cap_keeps_the_set_in_use(tmp_path, workspace, monkeypatch):
    monkeypatch.setenv(cache.CACHE_LIMIT_ENV, "0.000001")  # 1 kB: smaller than any entry
    a, b = write_image_folder(tmp_path / "a"), write_image_folder(tmp_path / "b", seed=1)
    load_images(str(a), 16, cache_dir=workspace.cache_dir)
    for entry in cache.entries(workspace.cache_dir):
        _age(entry, 3600)
    images = load_images(str(b), 16, cache_dir=workspace.cache_dir)
    left = cache.entries(workspace.cache_dir)
    assert len(left) == 1 and json.loads(left[0].paths[0].read_text())["fingerprint"] == images.fingerprint
    assert np.asarray(images.images).shape == (36, 16, 16, 3)  # the memmap is still readable


def test_cli_reports_and_prunes(tmp_path, workspace):
    load_images(str(write_image_folder(tmp_path / "a")), 16, cache_dir=workspace.cache_dir)
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "engine", "cache", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=120)

    shown = json.loads(cli("--json").stdout)
    assert shown["entries"] == 1 and shown["size_bytes"] > 0 and shown["removed"] == 0
    bad = cli("--prune", "--max-gb", "nan")
    assert bad.returncode == 2 and "--max-gb=nan: must be 0 or more" in bad.stderr
    pruned = json.loads(cli("--prune", "--max-gb", "0", "--json").stdout)
    assert pruned["removed"] == 1 and pruned["entries"] == 0 and pruned["freed_bytes"] == shown["size_bytes"]
