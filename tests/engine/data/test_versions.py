"""Dataset versions: overlays that relabel, exclude and mark images, usable as `version:ID`, never touching the source."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

from engine.data import DatasetError, load_images, split_dataset
from engine.data import versions as dv

SETTINGS = {"val_fraction": 0.2, "test_fraction": 0.25, "seed": 3, "max_per_class": 0}


def _tree_digest(root) -> str:
    digest = hashlib.sha256()
    for folder, dirs, files in sorted(os.walk(root)):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(folder, name)
            digest.update(os.path.relpath(path, root).encode())
            with open(path, "rb") as handle:
                digest.update(handle.read())
            digest.update(str(os.stat(path).st_mtime_ns).encode())
    return digest.hexdigest()


def _load(source, workspace, **options):
    return load_images(str(source), 16, cache_dir=workspace.cache_dir, **options)


def test_a_version_relabels_and_excludes_with_the_split_pinned_and_the_source_untouched(workspace, image_folder):
    before = _tree_digest(image_folder)
    parent = _load(image_folder, workspace)
    parent_split = split_dataset(parent, SETTINGS["val_fraction"], SETTINGS["test_fraction"], SETTINGS["seed"])
    parent_test = {parent.ids[i] for i in parent_split.test}
    test_image, train_image = parent.ids[parent_split.test[0]], parent.ids[parent_split.train[0]]
    version = dv.create_version(workspace.root, str(image_folder), parent,
                                [(test_image, "relabel", "square"), (train_image, "exclude"),
                                 ("cross/cross_3.png", "checked")], settings=SETTINGS, note="first fixes")
    assert version.name == "version:1" and version.number == 1 and version.counts() == {
        "relabel": 1, "exclude": 1, "checked": 1}
    assert version.changes[0].old_label == parent.class_names[parent.labels[parent_split.test[0]]]

    child = _load(version.name, workspace)
    assert child.class_names == parent.class_names and len(child) == len(parent) - 1
    assert train_image not in child.ids and child.source == "version:1"
    assert child.labels[child.ids.index(test_image)] == child.class_names.index("square")
    assert child.fingerprint != parent.fingerprint
    # The same settings split the version like the parent: its test images are the parent's.
    child_split = split_dataset(child, SETTINGS["val_fraction"], SETTINGS["test_fraction"], SETTINGS["seed"])
    assert {child.ids[i] for i in child_split.test} == parent_test
    # A further version on top keeps the first one's changes; its diff is only its own.
    second = dv.create_version(workspace.root, version.name, child, [(test_image, "relabel", "circle")],
                               settings={})
    assert second.number == 2 and second.settings == version.settings
    assert [(c.file, c.new_label, c.old_label) for c in dv.diff(workspace.root, second)] == [
        (test_image, "circle", version.changes[0].old_label)]
    assert len(second.changes) == 3 and train_image not in _load(second.name, workspace).ids
    assert dv.changes_csv(dv.diff(workspace.root, second)).splitlines()[0] == "file,action,old_label,new_label"
    assert [v.id for v in dv.list_versions(workspace.root, str(image_folder))] == [1, 2]
    assert dv.list_versions(workspace.root, "digits") == []
    assert len(_load(second.name, workspace, max_per_class=SETTINGS["max_per_class"])) == len(parent) - 1
    capped = _load(second.name, workspace, max_per_class=2)
    assert np.bincount(capped.labels).tolist() == [2, 2, 2] and capped.splits is not None
    assert _tree_digest(image_folder) == before


@pytest.mark.parametrize("change, message", [
    (("nope/missing.png", "exclude"), "no image with that id"),
    (("circle/circle_0.png", "relabel", "triangle"), "'triangle' is not one of the classes"),
    (("circle/circle_0.png", "delete"), "unknown action 'delete'"),
])
def test_a_bad_change_is_refused_by_number_and_nothing_is_written(workspace, image_folder, change, message):
    parent = _load(image_folder, workspace)
    with pytest.raises(DatasetError, match=message) as error:
        dv.create_version(workspace.root, str(image_folder), parent, [("circle/circle_1.png", "checked"), change],
                          settings=SETTINGS)
    assert "change 2" in str(error.value)
    assert dv.list_versions(workspace.root) == [] and not any(dv.versions_dir(workspace.root).glob("*/*"))


def test_version_names_and_missing_versions_get_clear_errors(workspace):
    assert dv.version_id("digits") is None and dv.version_id("version:12") == 12
    with pytest.raises(DatasetError, match="positive whole number"):
        dv.version_id("version:../1")
    with pytest.raises(DatasetError, match="no dataset version 7"):
        _load("version:7", workspace)
    with pytest.raises(DatasetError, match="no changes"):
        dv.create_version(workspace.root, "digits", load_images("digits", 8, max_per_class=5), [], settings=SETTINGS)


def test_a_version_of_a_builtin_set_works_like_its_source(workspace):
    digits = load_images("digits", 8, max_per_class=10, seed=1)
    version = dv.create_version(workspace.root, "digits", digits, [(digits.ids[0], "exclude")],
                                settings={**SETTINGS, "max_per_class": 10, "seed": 1}, run_id="r1")
    child = load_images(version.name, 8, cache_dir=workspace.cache_dir)
    assert len(child) == len(digits) - 1 and child.ids == digits.ids[1:] and version.to_dict()["run_id"] == "r1"


def test_runs_on_two_versions_compare_on_their_shared_test_images_with_the_newer_labels():
    from engine.evaluation import Predictions, compare_runs, shared_test_images

    eye = np.eye(2, dtype=np.float32)
    # Parent: 4 test images, "c" labelled 0 (wrongly), predicts 0, 1, 0, 0. Child: "d" excluded, "c" relabelled
    # to 1; it predicts c 1, a 0, b 0: "b" broke, "c" is fixed (right under its fixed label, where the parent is wrong).
    parent = Predictions(eye[[0, 1, 0, 0]], np.array([0, 1, 0, 0]), np.array(list("abcd")), np.arange(4), ["x", "y"],
                         "f1", "p")
    child = Predictions(eye[[1, 0, 0]], np.array([1, 0, 1]), np.array(list("cab")), np.arange(3), ["x", "y"], "f2", "c")
    a, b, relabelled = shared_test_images(parent, child)
    assert a.ids.tolist() == ["a", "b", "c"] and b.ids.tolist() == ["a", "b", "c"] and relabelled == 1
    assert a.labels.tolist() == [0, 1, 1] and b.indices.tolist() == [1, 2, 0]
    comparison = compare_runs(a, b)
    assert comparison.a_only == [1] and comparison.b_only == [2] and comparison.disagreements == [1, 2]
    kept_parent_labels = shared_test_images(parent, child, labels_from="a")[0]
    assert kept_parent_labels.labels.tolist() == [0, 1, 0]
