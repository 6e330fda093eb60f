"""Layouts: split folders used as given (missing ones carved), manifests detected or named, zips of either."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest
from tests.helpers.images import write_image_folder

import engine.data as data
from engine.data import DatasetError, ManifestColumns, scan_source, split_dataset


def _split_tree(root, splits=("train", "validation", "test"), classes=("cat", "dog", "owl"), per_class=(8, 3, 3)):
    for name, count in zip(splits, per_class):
        write_image_folder(root / name, classes=classes, per_class=count, size=12, seed=len(name))
    return root


def test_split_folders_are_never_classes_and_their_splits_are_kept(tmp_path):
    root = _split_tree(tmp_path / "clothes")
    scan = scan_source(str(root))
    assert scan.layout == "split_folders"
    assert scan.class_names == ["cat", "dog", "owl"]
    assert scan.given_splits == ("train", "val", "test")
    assert scan.counts()["val"] == {"cat": 3, "dog": 3, "owl": 3}
    assert scan.notes == ()
    images = data.load_images(str(root), 12, cache_dir=tmp_path / "cache")
    assert images.layout == "split_folders"
    split = split_dataset(images, 0.15, 0.15, seed=0)
    assert (len(split.train), len(split.val), len(split.test)) == (24, 9, 9)
    assert all(images.ids[i].startswith("validation/") for i in split.val)
    assert all(images.ids[i].startswith("test/") for i in split.test)
    again = data.load_images(str(root), 12, cache_dir=tmp_path / "cache")  # from the cache: splits kept
    assert np.array_equal(again.splits, images.splits) and again.layout == "split_folders"


def test_missing_splits_are_carved_from_train_and_said(tmp_path):
    root = tmp_path / "only_train"
    write_image_folder(root / "train", classes=("a", "b"), per_class=20, size=8)
    scan = scan_source(str(root))  # a single train/ folder is not a wrapper to look through
    assert scan.layout == "split_folders" and scan.class_names == ["a", "b"]
    assert any("validation split" in n and "carved" in n for n in scan.notes)
    assert any("test split" in n for n in scan.notes)
    images = data.load_images(str(root), 8)
    split = split_dataset(images, 0.2, 0.2, seed=1)
    parts = [set(split.train), set(split.val), set(split.test)]
    assert sum(map(len, parts)) == 40 and not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert len(split.val) > 0 and len(split.test) > 0

    write_image_folder(root / "eval", classes=("a", "b"), per_class=4, size=8)  # test given: only val carved
    images = data.load_images(str(root), 8)
    split = split_dataset(images, 0.25, 0.2, seed=1)
    assert len(split.test) == 8 and len(split.val) == 10 and len(split.train) == 30


def test_a_class_missing_from_a_split_or_in_only_one_is_named(tmp_path):
    root = _split_tree(tmp_path / "d", classes=("cat", "dog"), per_class=(6, 2, 2))
    write_image_folder(root / "test", classes=("emu",), per_class=2, size=12)
    (root / "README.txt").write_text("hi")
    scan = scan_source(str(root))
    text = " ".join(scan.notes)
    assert "'emu' (test)" in text and "only one split" in text
    assert "No training images for 'emu'" in text
    assert any(s.path == "README.txt" for s in scan.skipped)


def _manifest_tree(root, header="filepath,species,subset", sep=","):
    write_image_folder(root / "images", classes=("x", "y"), per_class=6, size=8)
    rows = [header]
    for name in ("x", "y"):
        for i in range(6):
            subset = "train" if i < 4 else ("val" if i == 4 else "test")
            rows.append(sep.join([f"images/{name}/{name}_{i}.png", name, subset]))
    return rows


def test_manifest_columns_are_detected_and_paths_are_relative_to_it(tmp_path):
    root = tmp_path / "kaggle"
    rows = _manifest_tree(root)
    rows += ["../outside.png,x,train", "images/x/missing.png,y,train", "images/x/x_0.png,y,train", ",x,train",
             "/etc/passwd.png,x,train", "images/y/y_0.png,,train"]
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    scan = scan_source(str(root))
    assert scan.layout == "manifest"
    assert scan.columns == ManifestColumns("filepath", "species", "subset")
    assert scan.class_names == ["x", "y"] and len(scan.files) == 12
    assert scan.given_splits == ("train", "val", "test")
    reasons = {s.path: s.reason for s in scan.skipped}
    assert reasons["../outside.png"] == "outside the manifest's folder"
    assert reasons["/etc/passwd.png"] == "outside the manifest's folder"
    assert reasons["images/x/missing.png"] == "listed in the manifest but missing"
    assert reasons["images/x/x_0.png"] == "listed twice in the manifest"
    images = data.load_images(str(root / "labels.csv"), 8)
    split = split_dataset(images, 0.1, 0.1, 0)
    assert (len(split.train), len(split.val), len(split.test)) == (8, 2, 2)


def test_manifest_tsv_with_named_columns_and_bad_names(tmp_path):
    root = tmp_path / "tsv"
    rows = _manifest_tree(root, header="a\tb\tc", sep="\t")
    (root / "m.tsv").write_text("\n".join(rows) + "\n")
    scan = scan_source(str(root / "m.tsv"), columns=ManifestColumns(path="a", label="b", split="none"))
    assert scan.splits is None and scan.class_names == ["x", "y"]
    with pytest.raises(DatasetError, match="no column 'label'.*a, b, c"):
        scan_source(str(root / "m.tsv"), columns=ManifestColumns(label="label"))
    (root / "bad.csv").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DatasetError, match="not UTF-8"):
        scan_source(str(root / "bad.csv"))
    (root / "nopaths.csv").write_text("id,label\n1,a\n2,b\n")
    with pytest.raises(DatasetError, match="no column holds image file names"):
        scan_source(str(root / "nopaths.csv"))


def test_a_zip_of_split_folders(tmp_path):
    root = _split_tree(tmp_path / "src" / "clothes", splits=("training", "valid"), per_class=(6, 2))
    archive = tmp_path / "clothes.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for path in sorted(root.rglob("*.png")):
            z.write(path, path.relative_to(root.parent).as_posix())
    scan = scan_source(str(archive), cache_dir=tmp_path / "cache")
    assert scan.layout == "split_folders" and scan.given_splits == ("train", "val")
    images = data.load_images(str(archive), 12, cache_dir=tmp_path / "cache")
    split = split_dataset(images, 0.2, 0.2, 0)
    assert len(split.val) == 6 and len(split.test) > 0 and len(split.train) + len(split.test) == 18


def test_decode_reports_progress_and_can_be_stopped(tmp_path):
    root = write_image_folder(tmp_path / "p", classes=("a", "b"), per_class=40, size=8)
    seen = []
    data.load_images(str(root), 8, progress=lambda done, total: seen.append((done, total)))
    assert seen[-1] == (80, 80) and all(t == 80 for _, t in seen)

    class Stop(Exception):
        pass

    def stop(done, total):
        raise Stop()

    with pytest.raises(Stop):
        data.load_images(str(root), 8, cache_dir=tmp_path / "cache", progress=stop)
    assert not list((tmp_path / "cache").rglob("*.npy")), "a stopped decode leaves no cache file"
