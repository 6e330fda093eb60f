"""The training callbacks on their own: one save per epoch, atomic copies, Keras' skip-set cache, the timing line."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest

from engine import training_callbacks as tc
from engine.config import RunConfig
from engine.runfolder import RunFolder
from tests.benchmarks.bench_training import TIMING_LINE


@pytest.fixture
def folder(workspace):
    """A real run's folder in a fresh workspace (the callbacks write its files and its store rows)."""
    return RunFolder(workspace, workspace.create_run(RunConfig()).id)


@pytest.fixture(scope="module")
def model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    model.fit(np.ones((8, 4)), np.eye(3)[np.arange(8) % 3], epochs=1, verbose=0)
    return model


def test_an_improving_epoch_saves_once_and_copies_the_file(model, folder, monkeypatch):
    saves = []
    real_save = keras.Model.save
    monkeypatch.setattr(keras.Model, "save", lambda self, path, *a, **k: (saves.append(Path(path).name),
                                                                          real_save(self, path, *a, **k)))
    best = tc.BestCheckpoint(str(folder.model_file))
    last = tc.LastCheckpoint(folder, SimpleNamespace(cancelled=False), best=best)
    for callback in (best, last):
        callback.set_model(model)
    for epoch, val_loss in enumerate((1.0, 2.0, 0.5)):
        logs = {"loss": 1.0, "val_loss": val_loss}
        best.on_epoch_end(epoch, logs)
        last.on_epoch_end(epoch, logs)
        if epoch == 0:
            assert folder.last_checkpoint.read_bytes() == folder.model_file.read_bytes()
            first_best = folder.model_file.read_bytes()
        if epoch == 1:  # no improvement: the best checkpoint is left as it was, the last one saved
            assert folder.model_file.read_bytes() == first_best
        assert json.loads(folder.last_checkpoint_info.read_text())["epoch"] == epoch + 1
    assert saves == ["model.tmp.keras", "last.tmp.keras", "model.tmp.keras"]
    assert not list(folder.path.glob("*.tmp.keras"))
    restored = keras.models.load_model(folder.last_checkpoint)
    assert all(np.array_equal(a, b) for a, b in zip(restored.get_weights(), model.get_weights()))
    assert [v.numpy().tolist() for v in restored.optimizer.variables] == \
           [v.numpy().tolist() for v in model.optimizer.variables]


def test_a_failed_copy_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    (tmp_path / "best.keras").write_bytes(b"new")
    (tmp_path / "last.keras").write_bytes(b"previous")

    def full_disk(source, target):
        Path(target).write_bytes(b"ne")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tc.shutil, "copyfile", full_disk)
    with pytest.raises(OSError, match="No space"):
        tc.copy_atomic(tmp_path / "best.keras", tmp_path / "last.keras")
    assert (tmp_path / "last.keras").read_bytes() == b"previous" and not list(tmp_path.glob("*.tmp.keras"))


def test_saving_reuses_keras_skip_sets(model, tmp_path):
    from keras.src.backend.common import global_state
    from keras.src.saving import saving_lib

    keras.backend.clear_session()  # clears the cache: the next save fills it again
    tc.save_atomic(model, tmp_path / "a.keras")
    for kind in tc._SKIPSET_TYPES:
        assert global_state.get_global_attribute(f"saving_attr_skiplist_{kind}") == saving_lib.get_attr_skipset(kind)
    tc.save_atomic(model, tmp_path / "b.keras")
    for path in (tmp_path / "a.keras", tmp_path / "b.keras"):
        loaded = keras.models.load_model(path)
        assert all(np.array_equal(a, b) for a, b in zip(loaded.get_weights(), model.get_weights()))


def test_each_epoch_logs_its_timing_and_reports_progress_at_most_every_second(model, folder, caplog):
    reports = []
    progress = tc.StoreProgress(folder, epochs=3, steps_per_epoch=1, train_size=8,
                                report=lambda progress, message: reports.append(message), should_stop=lambda: False)
    progress.set_model(model)
    with caplog.at_level(logging.INFO, logger="engine.training"):
        for epoch in range(3):
            progress.on_epoch_begin(epoch)
            progress.on_train_batch_end(0)
            progress.on_test_begin()
            progress.on_test_end()
            progress.on_epoch_end(epoch, {"loss": 1.0, "accuracy": 0.5, "val_loss": 1.0, "val_accuracy": 0.5})
        progress.on_train_end()
    timings = [m for m in caplog.messages if "timing" in m]
    assert len(timings) == 3 and all(TIMING_LINE.search(m) for m in timings), timings
    assert [m.epoch for m in folder.workspace.epochs(folder.run_id)] == [1, 2, 3]
    assert reports[0] == "epoch 1/3, batch 1/1" and reports[-1] == "epoch 3/3 done"
    assert "epoch 2/3 done" not in reports  # less than a second after the last report
