"""Image folders: odd files skipped and reported, clutter ignored, wrappers found, decoded cache reused."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from tests.helpers.images import write_image_folder
from PIL import Image

import engine.data as data


@pytest.fixture
def messy_folder(tmp_path):
    """Two good classes plus every kind of junk a real upload holds."""
    root = write_image_folder(tmp_path / "messy", classes=("cat", "dog"), per_class=6)
    (root / "cat" / "zero.png").write_bytes(b"")
    (root / "cat" / "text.jpg").write_text("not a picture")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(root / "dog" / "whole.jpg")
    whole = (root / "dog" / "whole.jpg").read_bytes()
    (root / "dog" / "cut.JPG").write_bytes(whole[: len(whole) // 2])
    (root / "dog" / "notes.txt").write_text("labels by Ann")
    (root / "cat" / "deeper" / "more").mkdir(parents=True)
    Image.new("RGB", (30, 20), "red").save(root / "cat" / "deeper" / "more" / "deep.PNG")
    Image.new("RGB", (8, 8), "blue").save(root / "dog" / "café au lait 1.png")
    Image.new("RGB", (8, 8)).save(root / "stray.png")
    for junk in (root / ".DS_Store", root / "cat" / "Thumbs.db", root / "dog" / ".hidden.png"):
        junk.write_bytes(b"junk")
    (root / "__MACOSX" / "cat").mkdir(parents=True)
    (root / "__MACOSX" / "cat" / "._cat_0.png").write_bytes(b"resource fork")
    (root / ".git").mkdir()
    (root / ".git" / "x.png").write_bytes(b"x")
    return root


def test_messy_folder_skips_and_reports_bad_files(messy_folder):
    images = data.load_images(str(messy_folder), 16)
    assert images.class_names == ["cat", "dog"]
    assert images.class_counts() == {"cat": 7, "dog": 8}
    assert images.images.shape == (15, 16, 16, 3) and images.images.dtype == np.uint8
    assert "cat/deeper/more/deep.PNG" in images.ids and "dog/café au lait 1.png" in images.ids
    reasons = {s.path: s.reason for s in images.skipped}
    assert set(reasons) == {"cat/zero.png", "cat/text.jpg", "dog/cut.JPG", "dog/notes.txt", "stray.png"}
    assert "empty" in reasons["cat/zero.png"] and "not an image" in reasons["cat/text.jpg"]
    assert "truncated" in reasons["dog/cut.JPG"] or "corrupt" in reasons["dog/cut.JPG"]
    assert ".txt" in reasons["dog/notes.txt"] and "class folder" in reasons["stray.png"]
    deep = images.images[images.ids.index("cat/deeper/more/deep.PNG")]
    assert (deep[..., 0] > 200).all() and (deep[..., 2] < 50).all()
    for image_id, label in zip(images.ids, images.labels):
        assert image_id.split("/")[0] == images.class_names[label]


def test_wrapper_folder_is_looked_through(tmp_path):
    write_image_folder(tmp_path / "upload" / "pets", classes=("a", "b"), per_class=3)
    (tmp_path / "upload" / ".DS_Store").write_bytes(b"x")
    images = data.load_images(str(tmp_path / "upload"), 8)
    assert images.class_names == ["a", "b"] and images.ids[0] == "a/a_0.png"


def test_max_per_class_limits_decoding(image_folder):
    images = data.load_images(str(image_folder), 8, max_per_class=5, seed=1)
    assert images.class_counts() == {"circle": 5, "square": 5, "cross": 5}
    assert images.class_names == ["circle", "cross", "square"]  # sorted folder names


@pytest.mark.parametrize("layout, message", [
    ({"only.png": None}, "no class folders"),
    ({"cats/a.png": None, "cats/b.png": None}, "only one class with images ('cats')"),
    ({"cats/a.png": b"", "dogs/b.png": b"junk"}, "no readable images"),
    ({"cats/a.png": None, "dogs/b.png": b""}, "only one class with images ('cats')"),
])
def test_unusable_folders_raise_clear_errors(tmp_path, layout, message):
    for relative, content in layout.items():
        path = tmp_path / "ds" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is None:
            Image.new("RGB", (4, 4)).save(path)
        else:
            path.write_bytes(content)
    with pytest.raises(data.DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        data.load_images(str(tmp_path / "ds"), 8)


def test_a_file_that_is_neither_folder_nor_zip(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(data.DatasetError, match="neither a folder nor a zip"):
        data.load_images(str(tmp_path / "notes.txt"), 8)


def test_decoded_images_are_cached_and_reused(messy_folder, tmp_path, caplog):
    cache = tmp_path / "cache"
    first = data.load_images(str(messy_folder), 16, cache_dir=cache)
    assert isinstance(first.images, np.memmap)
    assert len(list((cache / "decoded").glob("*.npy"))) == 1 and len(list((cache / "decoded").glob("*.json"))) == 1
    assert not list((cache / "decoded").glob(".*"))  # no temporary files left behind
    with caplog.at_level(logging.INFO, logger="engine.data.folders"):
        second = data.load_images(str(messy_folder), 16, cache_dir=cache)
    assert "from the cache" in caplog.text
    assert np.array_equal(first.images, second.images) and np.array_equal(first.labels, second.labels)
    assert (first.ids, first.class_names, first.skipped, first.fingerprint) == (
        second.ids, second.class_names, second.skipped, second.fingerprint)
    in_memory = data.load_images(str(messy_folder), 16)
    assert not isinstance(in_memory.images, np.memmap) and np.array_equal(in_memory.images, first.images)
    assert in_memory.fingerprint == first.fingerprint

    Image.new("RGB", (8, 8), "green").save(messy_folder / "dog" / "new.png")  # a changed folder is re-decoded
    third = data.load_images(str(messy_folder), 16, cache_dir=cache)
    assert third.class_counts()["dog"] == 9 and len(list((cache / "decoded").glob("*.npy"))) == 2
    assert third.fingerprint != first.fingerprint
