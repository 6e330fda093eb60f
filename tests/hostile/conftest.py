"""Hostile-input tests: every test also checks that nothing outside the workspace changed.

Image, archive and folder cases already covered by tests/engine/data/ (zero-byte, truncated,
CMYK/YCCK, 16-bit and palette PNG, RGBA, animated GIF/WebP, EXIF rotation, decompression
bombs, 1x1, unicode names; zip-slip, absolute paths, symlinks, zip bombs, too many files,
__MACOSX/hidden files, a wrapping folder, empty archives; one class, tiny classes,
duplicates) are not repeated here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def tree(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
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
    before = tree(tmp_path, workspace.root)
    yield before
    after = tree(tmp_path, workspace.root)
    assert after == before, f"changed outside the workspace: {sorted(set(after.items()) ^ set(before.items()))[:5]}"
