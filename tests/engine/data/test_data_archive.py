"""Zip uploads: good ones extract and are reused, unsafe ones are refused without writing outside."""

from __future__ import annotations

import io
import stat
import zipfile

import pytest
from tests.helpers.images import write_image_folder

import engine.data as data
from engine.data.archive import EXTRACTED_DIR, UPLOADS_DIR


def png_bytes(tmp_path) -> bytes:
    write_image_folder(tmp_path / "src", classes=("one",), per_class=1)
    return (tmp_path / "src" / "one" / "one_0.png").read_bytes()


@pytest.fixture
def good_zip(tmp_path):
    """A zip as macOS makes it: a wrapper folder, __MACOSX and .DS_Store entries."""
    root = write_image_folder(tmp_path / "pets", classes=("cat", "dog"), per_class=4)
    path = tmp_path / "pets.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(root.rglob("*.png")):
            archive.write(file, f"pets/{file.relative_to(root).as_posix()}")
        archive.writestr("pets/.DS_Store", b"junk")
        archive.writestr("__MACOSX/pets/cat/._cat_0.png", b"resource fork")
    return path


def test_good_zip_is_extracted_into_the_cache_and_reused(good_zip, tmp_path):
    cache = tmp_path / "cache"
    images = data.load_images(str(good_zip), 12, cache_dir=cache)
    assert images.class_names == ["cat", "dog"] and len(images) == 8 and images.skipped == ()
    assert images.ids[0] == "cat/cat_0.png" and images.source == str(good_zip)
    (upload,) = (cache / UPLOADS_DIR).iterdir()
    assert len(upload.name) == 16 and sorted(p.name for p in upload.iterdir()) == [EXTRACTED_DIR]
    assert not (upload / EXTRACTED_DIR / "__MACOSX").exists()
    assert not (upload / EXTRACTED_DIR / "pets" / ".DS_Store").exists()
    marker = (upload / EXTRACTED_DIR / "pets" / "cat" / "cat_0.png").stat().st_mtime_ns
    again = data.load_images(str(good_zip), 12, cache_dir=cache)
    assert (upload / EXTRACTED_DIR / "pets" / "cat" / "cat_0.png").stat().st_mtime_ns == marker
    assert again.fingerprint == images.fingerprint


def test_zip_loads_without_a_cache_dir(good_zip):
    assert data.load_images(str(good_zip), 8).class_counts() == {"cat": 4, "dog": 4}


def test_extract_zip_returns_the_class_root(good_zip, tmp_path):
    root = data.extract_zip(good_zip, tmp_path / "out")
    assert root == tmp_path / "out" / EXTRACTED_DIR / "pets"
    assert sorted(p.name for p in root.iterdir()) == ["cat", "dog"]
    assert data.extract_zip(good_zip, tmp_path / "out") == root  # extracting again replaces cleanly


def make_zip(path, entries):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for entry in entries:
            if isinstance(entry, zipfile.ZipInfo):
                archive.writestr(entry, b"../../target")
            else:
                name, content = entry
                archive.writestr(name, content)
    return path


def symlink_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


@pytest.mark.parametrize("entries, message", [
    ([("a/x.png", b"x"), ("../x.png", b"x")], "leaves its folder"),
    ([("a/x.png", b"x"), ("a/../../x.png", b"x")], "leaves its folder"),
    ([("a/x.png", b"x"), ("/tmp/x.png", b"x")], "absolute path"),
    ([("a/x.png", b"x"), ("C:/x.png", b"x")], "absolute path"),
    ([("a/x.png", b"x"), symlink_entry("a/link.png")], "symbolic link"),
    ([("a/bomb.png", b"\0" * (8 * 1024**2))], "zip bomb"),
    ([], "empty"),
    ([("__MACOSX/a/._x.png", b"x"), (".hidden", b"x")], "empty"),
])
def test_unsafe_or_empty_zips_are_refused(tmp_path, entries, message):
    archive = make_zip(tmp_path / "upload.zip", entries)
    dest = tmp_path / "inside" / "dest"
    with pytest.raises(data.DatasetError, match=message):
        data.extract_zip(archive, dest)
    assert list(dest.iterdir()) == []  # the staging folder is gone, nothing half-extracted
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inside", "upload.zip"]
    with pytest.raises(data.DatasetError, match=message):
        data.load_images(str(archive), 8, cache_dir=tmp_path / "inside" / "cache")


def test_entry_count_and_size_limits(tmp_path, monkeypatch):
    from engine.data import archive as archive_module

    path = make_zip(tmp_path / "many.zip", [(f"a/{i}.png", b"x") for i in range(5)])
    monkeypatch.setattr(archive_module, "MAX_ENTRIES", 4)
    with pytest.raises(data.DatasetError, match="more than the 4 allowed"):
        data.extract_zip(path, tmp_path / "dest")
    monkeypatch.setattr(archive_module, "MAX_ENTRIES", 100)
    monkeypatch.setattr(archive_module, "MAX_TOTAL_BYTES", 3)
    with pytest.raises(data.DatasetError, match="expands to"):
        data.extract_zip(path, tmp_path / "dest")


def test_a_non_zip_upload_is_refused(tmp_path):
    fake = tmp_path / "photos.zip"
    fake.write_bytes(b"PK but not really a zip file at all" * 10)
    with pytest.raises(data.DatasetError, match="not a zip archive"):
        data.extract_zip(fake, tmp_path / "dest")
    with pytest.raises(data.DatasetError, match="neither a folder nor a zip"):
        data.load_images(str(fake), 8, cache_dir=tmp_path / "cache")


def test_a_lying_entry_size_is_caught(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("a/x.png", b"12345678")
    raw = buffer.getvalue()
    # Patch the central directory's uncompressed size (8 -> 4) so the header under-declares it.
    central = raw.rfind(b"PK\x01\x02")
    patched = raw[:central + 24] + (4).to_bytes(4, "little") + raw[central + 28:]
    (tmp_path / "liar.zip").write_bytes(patched)
    with pytest.raises(data.DatasetError):
        data.extract_zip(tmp_path / "liar.zip", tmp_path / "dest")
