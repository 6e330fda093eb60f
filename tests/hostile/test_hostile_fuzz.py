"""Fuzz of the zip/folder importer: random member names, contents and raw bytes.

Bounded for CI (FUZZ_EXAMPLES examples each, about 10 s in all); the only allowed outcomes are a
loaded dataset or a DatasetError, and nothing may be written outside the destination folder.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as s
from PIL import Image

from engine.data import DatasetError, extract_zip, load_images

FUZZ_EXAMPLES = 200
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _png(seed: int, size: int = 4) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


PNG = _png(0)
segment = s.one_of(
    s.sampled_from(["..", ".", "", "__MACOSX", ".DS_Store", "~", "/", "\\", "C:", "cats", "dogs", "a b", "ü", "\n"]),
    s.text(s.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12))
member_name = s.builds(lambda parts, ext: "/".join(parts) + ext, s.lists(segment, min_size=1, max_size=4),
                       s.sampled_from(["", ".png", ".jpg", ".JPEG", ".gif", ".txt", "/"]))
content = s.one_of(s.just(PNG), s.binary(max_size=300), s.builds(lambda b, n: PNG[:n] + b, s.binary(max_size=20),
                                                                 s.integers(0, len(PNG))))
members = s.lists(s.tuples(member_name, content), max_size=12)


def _snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture(scope="module")
def sandbox():
    """A scratch root; each example extracts into sandbox/dest and nothing else under the root may change."""
    root = Path(tempfile.mkdtemp(prefix="aperture-fuzz-"))
    (root / "outside").mkdir()
    (root / "outside" / "keep.txt").write_text("keep")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def _write_zip(path: Path, entries, symlink: bool) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in entries:
            try:
                archive.writestr(name, data)
            except (ValueError, UnicodeEncodeError, IndexError):
                pass  # names zipfile itself refuses to write cannot reach an upload either
        if symlink:
            info = zipfile.ZipInfo("cats/link.png")
            info.external_attr = 0o120777 << 16
            archive.writestr(info, "../../outside/keep.txt")


@pytest.mark.filterwarnings("ignore:Duplicate name:UserWarning")  # duplicate members are part of the fuzz
@FUZZ
@given(entries=members, symlink=s.booleans())
def test_fuzz_zip_members_extract_or_refuse(sandbox, entries, symlink):
    before = _snapshot(sandbox / "outside")
    zip_path, dest = sandbox / "upload.zip", sandbox / "dest"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    _write_zip(zip_path, entries, symlink)
    try:
        folder = extract_zip(zip_path, dest)
        images = load_images(str(folder), 8)
        assert len(images) == len(images.labels) and len(images.class_names) >= 1
    except DatasetError as error:
        assert str(error)
    assert _snapshot(sandbox / "outside") == before
    assert {p.name for p in sandbox.iterdir()} <= {"upload.zip", "dest", "outside"}
    for path in dest.rglob("*"):
        assert os.path.realpath(path).startswith(str(dest.resolve()) + os.sep)


@FUZZ
@given(data=s.binary(max_size=2000), prefix=s.sampled_from([b"", b"PK\x03\x04", b"PK\x05\x06"]))
def test_fuzz_raw_bytes_as_a_zip(sandbox, data, prefix):
    zip_path, dest = sandbox / "upload.zip", sandbox / "dest"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir()
    zip_path.write_bytes(prefix + data)
    try:
        extract_zip(zip_path, dest)
    except DatasetError as error:
        assert str(error)


@FUZZ
@given(files=s.dictionaries(s.tuples(s.sampled_from(["cats", "dogs", "a b", "<b>x<i>", ".hidden"]),
                                     s.text(s.characters(codec="utf-8", exclude_characters="\x00/"), min_size=1,
                                            max_size=10).filter(lambda n: n not in (".", "..")),
                                     s.sampled_from([".png", ".jpg", ".gif", ".webp", ".bmp", ""])),
                           content, max_size=10))
def test_fuzz_image_folders_load_or_refuse(sandbox, files):
    folder = sandbox / "folder"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    for (cls, stem, ext), data in files.items():
        (folder / cls).mkdir(exist_ok=True)
        try:
            (folder / cls / (stem + ext)).write_bytes(data)
        except OSError:
            pass  # a name the filesystem refuses (too long in bytes)
    try:
        images = load_images(str(folder), 8)
        assert images.images.shape[1:] == (8, 8, 3)
    except DatasetError as error:
        assert str(error)
