"""Shared fixtures: an isolated workspace and tiny image folders made on the fly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from engine.jobs import STANDBY_ENV
from engine.store import HOME_ENV, Workspace
from tests.helpers.images import write_image_folder

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ[STANDBY_ENV] = "0"  # tests that want the warm standby turn it on themselves


@pytest.fixture
def workspace(tmp_path, monkeypatch) -> Workspace:
    """A fresh workspace, also exported as APERTURE_HOME for child processes."""
    root = tmp_path / "workspace"
    monkeypatch.setenv(HOME_ENV, str(root))
    return Workspace(root)


@pytest.fixture
def image_folder(tmp_path):
    """A folder of three classes of twelve 16x16 PNGs each."""
    return write_image_folder(tmp_path / "images")


# -- tests/hostile: nothing outside the workspace may change -----------------------------


def _tree(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    """Every file and folder under `root` except `skip`, with its size and mtime."""
    found = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if Path(folder, d) != skip]
        for name in dirs + files:
            path = Path(folder, name)
            info = path.lstat()
            found[str(path.relative_to(root))] = (info.st_size if path.is_file() else 0, info.st_mtime_ns)
    return found


@pytest.fixture
def untouched_outside(tmp_path, workspace):
    """Fails the test if anything under tmp_path but outside the workspace was created or changed."""
    before = _tree(tmp_path, workspace.root)
    yield before
    after = _tree(tmp_path, workspace.root)
    assert after == before, f"changed outside the workspace: {sorted(set(after.items()) ^ set(before.items()))[:5]}"
