"""RunFolder: the run directory's layout (the contract with existing workspaces), its readers and its checks."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from engine.config import RunConfig
from engine.data import DatasetError, load_images
from engine.evaluation import NoPredictions, save_predictions
from engine.runfolder import RunFolder
from engine.store import write_json_atomic

DATA = {"source": "digits", "image_size": 8, "max_per_class": 12}


@pytest.fixture
def folder(workspace) -> RunFolder:
    return RunFolder(workspace, workspace.create_run(RunConfig.from_dict({"data": DATA})).id)


def after_training(folder: RunFolder) -> RunFolder:
    """The folder as a completed training job leaves it: data report and test predictions (all correct)."""
    images = folder.dataset()
    split = folder.split(images)
    write_json_atomic(folder.data_report_file, {"class_names": images.class_names, "fingerprint": "abc"})
    labels = images.labels[split.test]
    save_predictions(folder.predictions_file, np.eye(10)[labels], labels, [images.ids[i] for i in split.test],
                     split.test, images.class_names)
    return folder


def test_the_layout_is_the_one_existing_workspaces_have(folder):
    names = {
        "config.json": folder.config_file, "model.keras": folder.model_file, "last.keras": folder.last_checkpoint,
        "last.json": folder.last_checkpoint_info, "job.log": folder.log_file, "tensorboard": folder.tensorboard_dir,
        "data_report.json": folder.data_report_file, "predictions.npz": folder.predictions_file,
        "exports": folder.exports_dir, "exports/report.json": folder.export_report_file,
        "exports/metadata.json": folder.export_metadata_file, "exports/model_int8.tflite": folder.export_artifact("int8"),
        "exports/saved_model": folder.export_artifact("saved_model"), "evaluations": folder.evaluations_dir,
        "evaluations/val-split.npz": folder.evaluation_file("val-split"),
        "evaluations/val-split.json": folder.evaluation_file("val-split", ".json"),
        "explanations": folder.explanations_dir, "explanations/mistakes.json": folder.explanations_record,
        "model_card.md": folder.model_card_file, "model_card.html": folder.model_card_html_file,
    }
    assert folder.path == folder.workspace.root / "runs" / folder.run_id
    assert {folder.relative(path): name for name, path in names.items()} == {n: n for n in names}
    assert folder.config() == RunConfig.from_dict({"data": DATA})


def test_names_from_records_stay_inside_the_folder(folder):
    assert folder.resolve("exports/model.onnx") == (folder.exports_dir / "model.onnx").resolve()
    for bad in ("../other/model.keras", "/etc/passwd"):
        with pytest.raises(ValueError, match="outside the run folder"):
            folder.resolve(bad)
    for bad in ("", ".hidden", "../x", "a/b"):
        with pytest.raises(ValueError, match="not a file name"):
            folder.evaluation_file(bad)
    with pytest.raises(ValueError, match="expected one of"):
        folder.export_artifact("tar")


def test_class_names_come_from_training_first(folder):
    assert folder.class_names() == []
    folder.exports_dir.mkdir()
    write_json_atomic(folder.export_metadata_file, {"class_names": ["from", "export"]})
    assert folder.class_names() == ["from", "export"]  # a folder whose training records are gone
    save_predictions(folder.predictions_file, np.eye(2), [0, 1], ["a/0", "b/0"], [0, 1], ["a", "b"])
    assert folder.class_names() == ["a", "b"]
    write_json_atomic(folder.data_report_file, {"class_names": ["cat", "dog"]})
    assert folder.class_names() == ["cat", "dog"]  # what training saw, whatever a later copy says


def test_predictions_and_saved_evaluations(folder):
    with pytest.raises(NoPredictions, match="has no test predictions"):
        folder.predictions()
    after_training(folder)
    test = folder.predictions()
    assert test.fingerprint == "abc" and test.run_id == folder.run_id and len(test) > 0
    assert folder.evaluations() == []
    folder.evaluations_dir.mkdir()
    for name, source in (("old", "split:val"), ("new", "/data/new")):
        save_predictions(folder.evaluation_file(name), test.probabilities, test.labels, test.ids, test.indices,
                         test.class_names)
        write_json_atomic(folder.evaluation_file(name, ".json"), {"source": source, "fingerprint": name})
        time.sleep(0.01)
    (folder.evaluations_dir / "half.tmp.npz").write_bytes(b"")  # a save in progress is not an evaluation
    assert folder.evaluations() == ["new", "old"]
    assert folder.evaluation_source("old") == "split:val" and folder.evaluation_source("gone") is None
    assert folder.predictions("new").fingerprint == "new"
    with pytest.raises(NoPredictions, match="no evaluation named 'gone'"):
        folder.predictions("gone")


def test_dataset_is_checked_against_what_the_run_recorded(folder, monkeypatch):
    images = after_training(folder).dataset()
    assert len(images) == 120 and folder.split(images).test.size == folder.predictions().indices.size

    def renamed(source, size, **kwargs):  # the same images under other ids
        loaded = load_images(source, size, **kwargs)
        return type(loaded)(loaded.images, loaded.labels, loaded.class_names, [f"x/{i}" for i in loaded.ids],
                            loaded.source, loaded.fingerprint)

    with pytest.raises(DatasetError, match="cannot be found by id"):
        folder.dataset(load=renamed)
    write_json_atomic(folder.data_report_file, {"class_names": ["cat", "dog"]})
    with pytest.raises(DatasetError, match="it was trained on cat, dog"):
        folder.dataset()


def test_damage_and_publishing(folder, workspace):
    assert folder.damage() is None and not folder.published
    folder.set_published()
    assert folder.published and RunFolder(workspace, folder.run_id).published
    folder.set_published(False)
    assert not folder.published
    (workspace.root / "published").write_text("x")  # `..` from a hand-made link is not a run
    assert not RunFolder(workspace, "..").published
    folder.config_file.unlink()
    assert "config.json is missing" in folder.damage()
    assert "folder" in RunFolder(workspace, "20260101-000000-abcd").damage()


def test_reading_an_unexported_run(folder):
    assert folder.exports() == {} and folder.export_report() is None and folder.explanations() is None
    assert folder.model_card() is None and not folder.has_model
    folder.exports_dir.mkdir()
    folder.export_artifact("onnx").write_bytes(b"onnx")
    (folder.export_artifact("saved_model")).mkdir()
    assert list(folder.exports()) == ["saved_model", "onnx"]
    folder.export_report_file.write_text("{half")
    assert folder.export_report() is None
    folder.explanations_dir.mkdir()
    folder.explanations_record.write_text(json.dumps({"rows": []}))
    assert folder.explanations() == {"rows": []}
