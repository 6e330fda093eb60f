"""Resume is exact: a run stopped after epoch k and resumed ends where the uninterrupted run ends.

What has to carry over besides weights and optimizer state (in `last.keras`): each epoch's
shuffle and augmentation draws (derived from (seed, epoch) in the pipeline), the dropout
seed state (in `last.json`), and early stopping's best value and patience count (replayed
from the per-epoch metrics in the store).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from engine import jobs
from engine import store
from engine.config import RunConfig
from engine.runfolder import RunFolder

ROOT = Path(__file__).resolve().parents[3]

# Deterministic, with every random part on (shuffle, all augmentations, dropout) and a cosine schedule; tiny
# enough that an epoch takes a fraction of a second; early stopping (patience 2) ends it after about 10 epochs.
EXACT = {"data": {"image_size": 16, "max_per_class": 16},
         "augment": {"rotation": 10, "shift": 0.1, "zoom": 0.1, "flip": True, "contrast": 0.2, "brightness": 0.1},
         "model": {"activation": "relu", "pooling": "max", "dropout": 0.3},
         "train": {"epochs": 40, "batch_size": 16, "learning_rate": 0.01, "early_stopping": 2, "deterministic": True}}

# Runs two jobs in one process (one TensorFlow import; op determinism stays out of the pytest process):
# A uninterrupted, then B, which crashes right after epoch best + 1 (early stopping is then mid-count).
WORKER = r"""
import json, sys
from engine import jobs, training
from engine.config import RunConfig
from engine.store import Workspace

workspace, config = Workspace(sys.argv[1]), RunConfig.from_json(sys.argv[2])
crash_after = None
finish_epoch = training.EpochSummaries.on_epoch_end

def on_epoch_end(self, epoch, logs=None):  # the last callback: the epoch is checkpointed and in the store
    finish_epoch(self, epoch, logs)
    if epoch + 1 == crash_after:
        raise RuntimeError(f"simulated crash after epoch {epoch + 1}")

training.EpochSummaries.on_epoch_end = on_epoch_end

def run(crash=None):
    global crash_after
    crash_after = crash
    run_id = workspace.create_run(config).id  # created one at a time: run_job starts any queued job when it ends
    job = workspace.claim_next_job(limit=1)
    jobs.run_job(job.id, workspace)
    return run_id

a = run()
losses = [m.val_loss for m in workspace.epochs(a)]
best = losses.index(min(losses)) + 1
print(json.dumps({"a": a, "b": run(crash=best + 1), "best": best, "stopped": len(losses)}))
"""


def _crashed_copy(workspace, run_id: str) -> str:
    """A new run in the state `run_id` had right after its last epoch (checkpoints and metrics), marked failed.

    What a kill between early stopping's last epoch and the test set leaves behind, without training again.
    """
    source = workspace.get_run(run_id)
    copy = workspace.create_run(source.config)
    workspace.finish_job(workspace.claim_next_job(limit=10).id, store.FAILED, error="killed before testing")
    source_folder, copy_folder = RunFolder(workspace, run_id), RunFolder(workspace, copy.id)
    for name in ("last_checkpoint", "last_checkpoint_info", "model_file"):
        shutil.copyfile(getattr(source_folder, name), getattr(copy_folder, name))
    for metrics in workspace.epochs(run_id):
        workspace.add_epoch(copy.id, metrics)
    return copy.id


def _history(workspace, run_id):
    return [(m.epoch, m.loss, m.accuracy, m.val_loss, m.val_accuracy, m.learning_rate)
            for m in workspace.epochs(run_id)]


def _probabilities(workspace, run_id):
    with np.load(RunFolder(workspace, run_id).predictions_file) as saved:
        return saved["probabilities"]


@pytest.mark.slow
def test_a_resumed_run_ends_exactly_where_the_uninterrupted_run_ends(workspace, monkeypatch):
    config = RunConfig.from_dict(EXACT)
    worker = subprocess.run([sys.executable, "-c", WORKER, str(workspace.root), config.to_json()], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert worker.returncode == 0, worker.stderr[-3000:]
    ids = json.loads(worker.stdout.strip().splitlines()[-1])
    a = workspace.get_run(ids["a"])
    assert a.status == store.COMPLETED, a.job.traceback
    assert ids["best"] + 1 < ids["stopped"] < config.train.epochs, f"early stopping must end run A mid-way: {ids}"
    crashed = workspace.get_run(ids["b"])
    assert crashed.status == store.FAILED and "simulated crash" in crashed.job.error
    assert crashed.epochs_done == ids["best"] + 1 and jobs.can_resume(crashed, workspace)
    after_stop = _crashed_copy(workspace, a.id)

    monkeypatch.setenv(jobs.MAX_JOBS_ENV, "2")
    for run_id in (crashed.id, after_stop):  # each in a fresh job process, as the Resume button does
        jobs.resume(run_id, workspace)
    resumed, after_stop = (jobs.wait(r, workspace, poll_seconds=0.3) for r in (crashed.id, after_stop))
    assert resumed.status == store.COMPLETED, resumed.job.traceback
    assert f"resuming from the last checkpoint after epoch {ids['best'] + 1}" in jobs.read_log_tail(
        workspace, resumed.id, lines=400)

    # Every number to the last digit: per-epoch metrics and learning rates, where early stopping
    # ended it, the test accuracy and the test-set probabilities of the restored best weights.
    assert _history(workspace, resumed.id) == _history(workspace, a.id)
    assert resumed.epochs_done == a.epochs_done == ids["stopped"]
    assert (resumed.test_accuracy, resumed.best_val_accuracy) == (a.test_accuracy, a.best_val_accuracy)
    assert np.array_equal(_probabilities(workspace, resumed.id), _probabilities(workspace, a.id))

    # Killed after early stopping's last epoch: the resumed job trains no more, it only tests.
    assert after_stop.status == store.COMPLETED, after_stop.job.traceback
    assert "early stopping had already ended training" in jobs.read_log_tail(workspace, after_stop.id, lines=400)
    assert after_stop.epochs_done == ids["stopped"] and after_stop.test_accuracy == a.test_accuracy
    assert np.array_equal(_probabilities(workspace, after_stop.id), _probabilities(workspace, a.id))


# -- early stopping's state, replayed from the stored metrics --------------------------------------


def _keras_early_stopping(values, patience, min_delta=0.0):
    """Feeds `values` to Keras' own EarlyStopping; returns it and the 0-based epoch it stopped at (or None)."""
    import keras

    callback = keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience, min_delta=min_delta)
    model = SimpleNamespace(stop_training=False)  # all the callback touches without restore_best_weights
    callback.set_model(model)
    callback.on_train_begin()
    for epoch, value in enumerate(values):
        callback.on_epoch_end(epoch, {"val_loss": value})
        if model.stop_training:
            return callback, epoch
    return callback, None


def _metrics(values):
    """As Keras logs them: float32 values as Python floats (Keras compares them in float32)."""
    return [float(np.float32(v)) for v in values]


SEQUENCES = [_metrics(values) for values in (
    [1.0, 0.9, 0.8, 0.85, 0.79, 0.8, 0.81],
    [0.5, 0.5, 0.5, 0.4],  # a tie is not an improvement
    [1.0, math.nan, 0.9, math.nan, math.nan],  # NaN never improves
    [math.nan, 1.0, 0.5],  # a first NaN is Keras' best, and nothing beats it
    [3.0, 2.0, 1.0],
    *(np.random.default_rng(i).choice([0.3, 0.4, 0.5, 0.6], 12) for i in range(30)),  # many ties
)]


@pytest.mark.parametrize("min_delta", [0.0, 0.05])
def test_early_stopping_state_replays_keras(min_delta):
    from engine.training import early_stopping_state

    for values in SEQUENCES:
        for k in range(1, len(values) + 1):
            keras_callback, _ = _keras_early_stopping(values[:k], patience=100, min_delta=min_delta)
            state = early_stopping_state([None if math.isnan(v) else v for v in values[:k]], min_delta)
            assert (state.wait, state.best_epoch) == (keras_callback.wait, keras_callback.best_epoch), values[:k]
            assert state.best == keras_callback.best or math.isnan(state.best) and math.isnan(keras_callback.best)


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_resumed_early_stopping_stops_at_the_epoch_keras_stops_at(patience):
    from engine.training import ResumableEarlyStopping

    for values in SEQUENCES:
        _, keras_stop = _keras_early_stopping(values, patience)
        last = len(values) - 1 if keras_stop is None else keras_stop
        for k in range(1, last + 2):  # resumed after k epochs, up to just after the one Keras stopped at
            callback = ResumableEarlyStopping(monitor="val_loss", patience=patience, history=values[:k])
            model = SimpleNamespace(stop_training=False)
            callback.set_model(model)
            callback.on_train_begin()
            stop = k - 1 if callback.stopped_before_resume() else None
            for epoch in range(k, len(values)):
                if stop is not None:
                    break
                callback.on_epoch_end(epoch, {"val_loss": values[epoch]})
                stop = epoch if model.stop_training else None
            assert stop == keras_stop, f"resumed after {k} epochs of {values}"


def test_resumable_early_stopping_refuses_what_it_cannot_replay():
    from engine.training import ResumableEarlyStopping

    for kwargs in ({"monitor": "val_accuracy"}, {"mode": "max"}, {"baseline": 0.5}, {"start_from_epoch": 2}):
        with pytest.raises(ValueError, match="ResumableEarlyStopping"):
            ResumableEarlyStopping(**kwargs)
