"""engine.inspect.health: CleanVision (and our blur check) over planted dark and blurry files, per class, cached."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from engine.data import load_images, scan_source
from engine.inspect import HEALTH_ISSUES, check_health, read_health
from engine.inspect.health import save_health
from engine.store import Workspace
from tests.engine.inspect.planted import tree_digest, write_planted_folder

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("health") / "data"
    folder = write_planted_folder(root, classes=3, per_class=40, exact=2, dark=3, blurry=3, seed=5)
    return folder, load_images(str(root), 24)


def test_health_finds_the_planted_dark_blurry_and_exact_images(planted, tmp_path):
    folder, images = planted
    before = tree_digest(folder.root)
    health = check_health(images, files_root=scan_source(str(folder.root)).root)
    assert health.checked_files and health.engine.startswith("cleanvision")
    assert set(health.counts()) == set(HEALTH_ISSUES)
    assert set(folder.dark) <= set(health.ids["dark"]) and len(health.ids["dark"]) <= len(folder.dark) + 1
    assert set(health.ids["blurry"]) == set(folder.blurry)
    assert {i for pair in folder.exact for i in pair} <= set(health.ids["exact_duplicates"])
    assert health.per_class["dark"] == {"c0": 3}  # all planted in the first class
    assert [images.ids[i] for i in health.issues["dark"]] == health.ids["dark"]
    assert tree_digest(folder.root) == before

    workspace = Workspace(tmp_path / "ws")
    assert read_health(workspace, images.fingerprint) is None
    save_health(workspace.cache_dir, health)
    assert read_health(workspace, images.fingerprint) == health
    with pytest.raises(ValueError, match="expected a hex digest"):
        save_health(workspace.cache_dir, type(health)(**{**health.to_dict(), "fingerprint": "../x"}))


def test_decoded_images_are_checked_when_there_are_no_files(planted):
    folder, images = planted
    health = check_health(images)  # no files_root: the decoded 24 px images
    assert not health.checked_files and set(folder.dark) <= set(health.ids["dark"])
    assert health.counts()["odd_size"] == 0  # every decoded image is 24x24


def test_importing_engine_inspect_imports_no_tensorflow_umap_or_cleanvision():
    code = ("import sys, engine.inspect, engine.runfolder; "
            "bad = [m for m in ('tensorflow', 'umap', 'cleanvision', 'keras') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
