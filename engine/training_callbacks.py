"""The Keras callbacks of a training run: store progress and epoch timing, TensorBoard scalars, checkpoints, and
early stopping that a resumed run continues.

`engine.training` builds them in this order: `BestCheckpoint`, `LastCheckpoint`, `StoreProgress`,
`EpochSummaries` (and `ResumableEarlyStopping`), so once the store shows an epoch its checkpoints are on disk.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import keras
import tensorflow as tf

from engine import store

if TYPE_CHECKING:
    from engine.runfolder import RunFolder

log = logging.getLogger("engine.training")
PROGRESS_SECONDS = 1.0  # how often batch-level progress reaches the store


class StoreProgress(keras.callbacks.Callback):
    """Writes epoch metrics and batch progress to the store; stops on cancel or NaN loss; logs each epoch's timing.

    Its batch hook never reads the batch logs, so Keras may dispatch it asynchronously
    (`async_safe`): otherwise every batch would wait for its loss to reach Python.

    The timing line (`epoch 3 timing: ...` in the job log) splits an epoch into training (epoch
    begin to the last training batch's end: what `images_per_second` counts) and the fixed cost
    after it until the next epoch begins: validation, the callbacks that run before this one
    (the checkpoints), and the rest (the store, TensorBoard, early stopping, Keras).
    """

    async_safe = True

    def __init__(self, folder: RunFolder, epochs: int, steps_per_epoch: int, train_size: int, *,
                 report: Callable[[float, str], None], should_stop: Callable[[], bool]):
        super().__init__()
        self.folder = folder
        self.report = report
        self.should_stop = should_stop
        self.epochs = epochs
        self.steps = steps_per_epoch
        self.train_size = train_size
        self.epochs_done = 0
        self.cancelled = False
        self.failure: str | None = None
        self.best_val_accuracy: float | None = None
        self._epoch_started = 0.0
        self._reported_at = 0.0
        self._timing: dict | None = None  # the finished epoch's phases, logged when the next one begins

    def on_epoch_begin(self, epoch, logs=None):
        self._log_timing()
        self._epoch = epoch
        self._epoch_started = self._last_batch_end = time.monotonic()
        self._test_began = self._test_ended = None
        self._epoch_learning_rate = _current_learning_rate(self.model)  # what this epoch starts with

    def on_train_batch_end(self, batch, logs=None):
        self._last_batch_end = time.monotonic()
        if self.should_stop():
            self.cancelled = True
            self.model.stop_training = True
            return
        now = time.monotonic()
        if now - self._reported_at >= PROGRESS_SECONDS:
            self._reported_at = now
            done = (self._epoch + (batch + 1) / self.steps) / self.epochs
            self.report(done, f"epoch {self._epoch + 1}/{self.epochs}, batch {batch + 1}/{self.steps}")

    def on_test_begin(self, logs=None):  # fit's validation, between the last training batch and on_epoch_end
        self._test_began = time.monotonic()

    def on_test_end(self, logs=None):
        self._test_ended = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        now = time.monotonic()
        seconds = now - self._epoch_started
        train_seconds = self._last_batch_end - self._epoch_started  # without validation
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(loss):
            self.failure = (f"the training loss became {loss} in epoch {epoch + 1}: lower the learning rate "
                            f"(now {self.folder.config().train.learning_rate})"
                            " or check the data")
            self.model.stop_training = True
            return
        if self.cancelled:
            return  # a partial epoch is not an epoch
        validated = self._test_began is not None and self._test_ended is not None
        self._timing = {"epoch": epoch + 1, "training": train_seconds, "last_batch_end": self._last_batch_end,
                        "validation": self._test_ended - self._test_began if validated else 0.0,
                        "checkpoints": now - (self._test_ended if validated else self._last_batch_end)}
        self.epochs_done = epoch + 1
        self.folder.workspace.add_epoch(self.folder.run_id, store.EpochMetrics(
            epoch=epoch + 1, loss=_float(loss), accuracy=_float(logs.get("accuracy")),
            val_loss=_float(logs.get("val_loss")), val_accuracy=_float(logs.get("val_accuracy")),
            learning_rate=self._epoch_learning_rate, seconds=seconds,
            images_per_second=self.train_size / train_seconds if train_seconds > 0 else None))
        val_accuracy = _float(logs.get("val_accuracy"))
        if val_accuracy is not None and val_accuracy > (self.best_val_accuracy or -1.0):
            self.best_val_accuracy = val_accuracy
            self.folder.workspace.update_run(self.folder.run_id, best_val_accuracy=val_accuracy)
        # As often as the batch reports (a store write costs 10-20 ms: most of a short epoch's fixed cost), and last.
        if now - self._reported_at >= PROGRESS_SECONDS or epoch + 1 == self.epochs:
            self._reported_at = now
            self.report((epoch + 1) / self.epochs, f"epoch {epoch + 1}/{self.epochs} done")

    def on_train_end(self, logs=None):
        self._log_timing()

    def _log_timing(self) -> None:
        """Logs the last finished epoch's phases (once), now that what follows its store write is over too."""
        timing, self._timing = self._timing, None
        if timing is not None:
            after = time.monotonic() - timing["last_batch_end"]
            log.info("epoch %d timing: %.3f s training, then %.3f s until the next epoch: %.3f s validation, "
                     "%.3f s checkpoints, %.3f s store, TensorBoard and the rest", timing["epoch"],
                     timing["training"], after, timing["validation"], timing["checkpoints"],
                     max(0.0, after - timing["validation"] - timing["checkpoints"]))


class EpochSummaries(keras.callbacks.Callback):
    """Writes epoch-level TensorBoard scalars (`train/` and `validation/`, as Keras names them).

    Keras's own TensorBoard callback has a batch hook, which turns off asynchronous
    callback dispatch and costs throughput; these summaries are written once per epoch.
    """

    def __init__(self, log_dir):
        super().__init__()
        self.writers = {part: tf.summary.create_file_writer(str(log_dir / part)) for part in ("train", "validation")}

    def on_epoch_end(self, epoch, logs=None):
        for name, value in (logs or {}).items():
            part, metric = ("validation", name[4:]) if name.startswith("val_") else ("train", name)
            with self.writers[part].as_default():
                tf.summary.scalar(f"epoch_{metric}", value, step=epoch)
        with self.writers["train"].as_default():
            tf.summary.scalar("epoch_learning_rate", _current_learning_rate(self.model), step=epoch)

    def on_train_end(self, logs=None):
        for writer in self.writers.values():
            writer.flush()


class BestCheckpoint(keras.callbacks.Callback):
    """Saves the model with the lowest validation loss, atomically, and keeps its weights.

    Nothing is written in an epoch whose validation loss did not improve. The file is written
    to a temporary name and renamed, so a crash or a full disk never leaves a half-written
    checkpoint in place of the previous one. `saved_epoch` is the (0-based) epoch it last saved.
    """

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.best_loss = math.inf
        self.best_weights = None
        self.saved_epoch: int | None = None

    def on_epoch_end(self, epoch, logs=None):
        val_loss = (logs or {}).get("val_loss")
        if val_loss is None or not math.isfinite(val_loss) or val_loss >= self.best_loss:
            return
        self.best_loss = val_loss
        self.best_weights = self.model.get_weights()
        self.saved_epoch = None
        save_atomic(self.model, Path(self.path))
        self.saved_epoch = epoch


class LastCheckpoint(keras.callbacks.Callback):
    """Saves every finished epoch's model with its optimizer state to `last.keras` (for Resume).

    Written to a temporary name and renamed, then `last.json` names the epoch it holds, so a
    kill or a full disk at any moment leaves the previous pair usable. Skips a cancelled
    (partial) epoch and a diverged one. When `best` (the run's `BestCheckpoint`, which runs
    first) has just saved this same epoch, its file is copied instead: the same bytes for a
    fraction of the cost of a second save.
    """

    def __init__(self, folder: RunFolder, progress: StoreProgress, best: BestCheckpoint | None = None):
        super().__init__()
        self.folder = folder
        self.progress = progress
        self.best = best

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if self.progress.cancelled or (loss is not None and not math.isfinite(loss)):
            return
        path = self.folder.last_checkpoint
        if self.best is not None and self.best.saved_epoch == epoch:
            copy_atomic(Path(self.best.path), path)
        else:
            save_atomic(self.model, path)
        metrics = {k: _float(v) for k, v in (logs or {}).items()
                   if k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        states = [keras.ops.convert_to_numpy(v).tolist() for v in seed_states(self.model)]
        store.write_json_atomic(self.folder.last_checkpoint_info,
                             {"epoch": epoch + 1, "metrics": {"epoch": epoch + 1, **metrics},
                              "seed_states": states})


@dataclass(frozen=True)
class EarlyStoppingState:
    """Where Keras' `EarlyStopping` stands after some epochs: the best value, its epoch, epochs since."""

    best: float | None
    best_epoch: int
    wait: int


def early_stopping_state(values, min_delta: float = 0.0) -> EarlyStoppingState:
    """Replays Keras' `EarlyStopping` (mode min, no baseline) over the monitored values of epochs 1..k.

    Args:
        values: the monitored value (e.g. val_loss) of each epoch done, in order; None for NaN
            (SQLite stores NaN as NULL), which never counts as an improvement after the first epoch.
        min_delta: as `EarlyStopping(min_delta=...)`: an improvement must be below the best by more.

    Returns:
        The `EarlyStoppingState`; `best_epoch` is 0-based, as Keras keeps it.
    """
    best, best_epoch, wait = None, 0, 0
    for epoch, value in enumerate(values):
        value = math.nan if value is None else float(value)
        wait += 1
        if best is None or value + min_delta < best:  # Keras: any first value, then strictly below
            best, best_epoch, wait = value, epoch, 0
    return EarlyStoppingState(best, best_epoch, wait)


class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
    """`keras.callbacks.EarlyStopping` on a minimised metric that can continue a resumed run.

    Keras resets its state when training begins, so a resumed run would count patience from
    zero and forget the best value. Given the monitored values of the epochs already done
    (from the store), this one starts where the interrupted run was.

    Args:
        history: the monitored values of epochs 1..k (None for NaN); empty for a fresh run.
        best_weights: the weights of the best of those epochs (the best checkpoint), restored
            at the end as `restore_best_weights` does.
        **kwargs: as `EarlyStopping`; `mode` must be `min` or `auto` on a loss.
    """

    def __init__(self, *, history=(), best_weights=None, **kwargs):
        super().__init__(**kwargs)
        minimised = self.mode == "min" or (self.mode == "auto" and self.monitor.endswith("loss"))
        if not minimised or self.baseline is not None or self.start_from_epoch:
            raise ValueError(f"ResumableEarlyStopping replays a minimised metric without baseline or "
                             f"start_from_epoch, got monitor={self.monitor!r}, mode={self.mode!r}, "
                             f"baseline={self.baseline}, start_from_epoch={self.start_from_epoch}")
        self.history = list(history)
        self.state = early_stopping_state(self.history, abs(self.min_delta))
        self.resumed_best_weights = best_weights

    def stopped_before_resume(self) -> bool:
        """True if the epochs done already ended training (Keras stops when `wait >= patience` after epoch 2+)."""
        return len(self.history) > 1 and self.state.wait >= self.patience

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        if self.history:
            self.best, self.best_epoch, self.wait = self.state.best, self.state.best_epoch, self.state.wait
            if self.restore_best_weights:
                self.best_weights = self.resumed_best_weights


def seed_states(model) -> list:
    """The model's random layers' seed generator states (e.g. Dropout's): variables a `.keras` file does not keep."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights and v.path.endswith("seed_generator_state")]


def save_atomic(model, path: Path) -> None:
    """Saves to `<name>.tmp.keras`, then renames over `path`; a failed write (disk full) leaves `path` as it was."""
    _cache_keras_skipsets()
    tmp = _tmp_path(path)
    try:
        model.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def copy_atomic(source: Path, path: Path) -> None:
    """Copies a checkpoint to `<name>.tmp.keras`, then renames it over `path`, as `save_atomic` writes one."""
    tmp = _tmp_path(path)
    try:
        shutil.copyfile(source, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _tmp_path(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(".keras") + ".tmp.keras")


# The kinds of object Keras' saver walks in a model with its optimizer, loss and metrics.
_SKIPSET_TYPES = ("Operation", "Layer", "Functional", "Sequential", "Metric", "Optimizer", "Loss")


def _cache_keras_skipsets() -> None:
    """Makes Keras' saver reuse its attribute skip sets instead of rebuilding them on every save.

    Keras 3 (`saving_lib.get_attr_skipset`, up to 3.15 at least) stores each set under
    `saving_attr_skipset_<type>` but looks it up under `saving_attr_skiplist_<type>`, so every
    `model.save` constructs a throwaway Layer, Operation, Metric, Optimizer and Loss: about a
    third of a small model's save (32 -> 22 ms for LeNet-5 with Adam). This stores each set
    under the name that is looked up, with the value Keras computes itself. `clear_session()`
    clears both, and the next save caches them again. Without those internals it does nothing.
    """
    try:
        from keras.src.backend.common import global_state
        from keras.src.saving import saving_lib

        for obj_type in _SKIPSET_TYPES:
            key = f"saving_attr_skiplist_{obj_type}"
            if global_state.get_global_attribute(key, None) is None:
                global_state.set_global_attribute(key, saving_lib.get_attr_skipset(obj_type))
    except Exception:  # noqa: BLE001 - a speed-up only: Keras saves correctly without it
        log.debug("cannot cache Keras' saving skip sets", exc_info=True)


def _current_learning_rate(model) -> float:
    rate = model.optimizer.learning_rate
    return float(keras.ops.convert_to_numpy(rate))


def _float(value) -> float | None:
    return None if value is None else float(value)
