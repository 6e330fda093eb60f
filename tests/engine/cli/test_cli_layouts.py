"""`train` on a split-folder dataset: its own splits, the data line, and `show --json`'s `data`."""

import json

import pytest
from tests.engine.cli.test_cli import cli
from tests.helpers.images import write_image_folder


@pytest.mark.slow
def test_a_split_folder_dataset_trains_with_its_own_splits(workspace, tmp_path):
    root = tmp_path / "clothes"
    write_image_folder(root / "train", classes=("coat", "shirt", "shoe"), per_class=10, size=16)
    write_image_folder(root / "coat_extra" / "coat", classes=("coat",), per_class=1, size=16)  # beside: skipped
    write_image_folder(root / "validation", classes=("coat", "shirt", "shoe"), per_class=3, size=16, seed=1)
    write_image_folder(root / "test", classes=("coat", "shirt", "shoe"), per_class=4, size=16, seed=2)
    result = cli("train", "--data", root, "--model", "lenet5", "--epochs", "2", "--image-size", "16",
                 "--set", "train.class_weight=balanced", "--wait", "--json")
    assert result.returncode == 0, result.stderr
    assert "data: split folders, 3 classes (train 30, validation 9, test 12; given)" in result.stderr
    run_id = json.loads(result.stdout.strip().splitlines()[-1])["run_id"]
    shown = json.loads(cli("show", run_id, "--json").stdout)
    assert shown["data"]["layout"] == "split_folders"
    assert shown["data"]["class_names"] == ["coat", "shirt", "shoe"]
    assert shown["data"]["splits"] == {"train": 30, "val": 9, "test": 12}
    assert shown["config"]["train"]["class_weight"] == "balanced"
    text = cli("show", run_id).stdout
    assert "split folders: 3 classes; train 30 / val 9 / test 12" in text


def test_a_folder_of_split_folders_without_classes_is_refused(workspace, tmp_path):
    for split in ("train", "test"):
        (tmp_path / "d" / split).mkdir(parents=True)
        (tmp_path / "d" / split / "x.png").write_bytes(b"")
    result = cli("train", "--data", tmp_path / "d")
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "no readable images in its class folders" in result.stderr
    assert workspace.list_runs() == []
