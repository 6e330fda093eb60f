"""`train(config, folder, report=, should_stop=)`: one synchronous training run in this process (`model.fit`).

Also the parts that the run across workers (`engine.training_loop`) shares with it: data, plan, model, callbacks
and test. The train job (`engine.training_job`) picks the path from `train.workers`.
"""

from __future__ import annotations

import json
import logging
import math
import platform
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import keras
import numpy as np
import tensorflow as tf

from engine import store, zoo
from engine.config import RunConfig
from engine.data import ImageSet, Split, make_dataset
from engine.devices import DeviceSetup, configure_devices
from engine.evaluation import save_predictions
from engine.fine_tuning import fit_phases
from engine.jobs.context import JobCancelled
from engine.models import describe_model, make_model
from engine.runfolder import RunFolder
from engine.training_callbacks import BestCheckpoint, EpochSummaries, LastCheckpoint, ResumableEarlyStopping
from engine.training_callbacks import StoreProgress
from engine.training_callbacks import early_stopping_state as early_stopping_state  # importable from here, as it was
from engine.training_callbacks import seed_states as _seed_states

log = logging.getLogger(__name__)


class TrainingFailed(RuntimeError):
    """Training could not go on (e.g. the loss became NaN); the message says why."""


@dataclass(frozen=True)
class TrainResult:
    """What a finished run measured."""

    test_accuracy: float
    best_val_accuracy: float | None
    epochs: int
    train_seconds: float


def train(config: RunConfig, folder: RunFolder, *, report: Callable[[float, str], None] | None = None,
          should_stop: Callable[[], bool] | None = None) -> TrainResult:
    """Trains, checkpoints and tests one run in this process (`model.fit`), writing into its folder and the store.

    Args:
        config: the run's configuration.
        folder: the run's folder (its workspace holds the run's row, where epochs are recorded).
        report: `report(progress 0..1, message)`, called as training advances. Default: nothing.
        should_stop: returns True once training should stop (checked every batch; it should be cheap).
            Default: never.

    Returns:
        The `TrainResult`. Raises `JobCancelled` if stopped (the best checkpoint is kept)
        and `TrainingFailed` if the loss diverges.
    """
    report = report or (lambda progress, message: None)
    should_stop = should_stop or (lambda: False)
    devices = prepare_process(config, folder)
    images, split = load_run_data(folder, report)
    if should_stop():
        raise JobCancelled()

    plan = plan_run(config, folder, images, split, config.train.batch_size * devices.replicas)
    model = make_run_model(config, folder, devices.strategy, plan)
    parts = make_callbacks(config, folder, plan, report=report, should_stop=should_stop)
    progress, checkpoint = parts.progress, parts.checkpoint
    started = time.monotonic()
    if parts.stopped_early:  # killed after early stopping ended training: nothing left to train, only to test
        log.info("early stopping had already ended training after epoch %d", parts.initial_epoch)
    else:
        report(parts.initial_epoch / config.train.epochs, f"epoch {parts.initial_epoch + 1}/{config.train.epochs}")
        def recompile(net, rate_factor: float, epochs: int) -> None:
            with devices.strategy.scope():
                compile_model(net, config, plan.steps_per_epoch, rate_factor=rate_factor, epochs=epochs)

        fit_phases(model, config, initial_epoch=parts.initial_epoch, train_data=plan.train_data, recompile=recompile,
                   stopped=lambda: bool(progress.cancelled or progress.failure), validation_data=plan.val_data,
                   steps_per_epoch=plan.steps_per_epoch, callbacks=parts.callbacks, verbose=2,
                   class_weight=class_weights(config.train.class_weight, images.labels[split.train],
                                              plan.num_classes))
    train_seconds = time.monotonic() - started
    if progress.failure:
        raise TrainingFailed(progress.failure)
    if progress.cancelled:
        raise JobCancelled()

    if checkpoint.best_weights is not None:
        model.set_weights(checkpoint.best_weights)
    test_accuracy = test_and_record(model, folder, images, split, batch_size=plan.batch_size, report=report,
                                    train_seconds=train_seconds, epochs_done=progress.epochs_done)
    return TrainResult(test_accuracy, progress.best_val_accuracy, progress.epochs_done, train_seconds)


# -- the parts both training paths share (model.fit here, engine.training_loop across workers) ------------------


def prepare_process(config: RunConfig, folder: RunFolder, *, workers: int = 1) -> DeviceSetup:
    """Seeds, determinism and devices for a training process; the chief records the device and versions.

    Args:
        config: the run's configuration.
        folder: the run's folder.
        workers: more than 1 inside one of the run's worker processes (`MultiWorkerMirroredStrategy`).

    Returns:
        The `DeviceSetup`.
    """
    # Our datasets are shuffled in tf.data; Keras warns about its own shuffle flag every epoch.
    warnings.filterwarnings("ignore", message=r".*`shuffle=True` was passed.*")
    # MultiWorkerMirroredStrategy configures the collectives, which must come before TensorFlow's runtime starts.
    devices = configure_devices(config.train.mixed_precision, workers=workers) if workers > 1 else None
    keras.utils.set_random_seed(config.train.seed)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    devices = devices or configure_devices(config.train.mixed_precision)
    if devices.chief:
        folder.workspace.update_run(folder.run_id, device=devices.label, versions_json=_versions_json())
    return devices


def load_run_data(folder: RunFolder, report: Callable[[float, str], None], *, record: bool = True
                  ) -> tuple[ImageSet, Split]:
    """Loads the run's images and split; with `record` (the chief), writes the data report and fingerprint."""
    if record:
        report(0.0, "loading data")
    images = folder.dataset()  # a resumed run: checked against what the interrupted attempt recorded
    split = folder.split(images)
    if record:
        store.write_json_atomic(folder.data_report_file, data_report(images, split))
        log.info("data %s: %d images in %d classes (%d skipped); train/val/test %d/%d/%d", images.source,
                 len(images), len(images.class_names), len(images.skipped), len(split.train), len(split.val),
                 len(split.test))
        folder.workspace.update_run(folder.run_id, fingerprint=images.fingerprint,
                                    num_classes=len(images.class_names))
    return images, split


@dataclass(frozen=True)
class RunPlan:
    """What a run trains on: its datasets, steps and the last checkpoint it resumes from (None: a fresh run).

    `train_data(start, end)` yields the training batches of epochs start+1..end; each epoch's shuffle
    and augmentation depend on (seed, epoch) alone, so a resumed run sees the batches the
    uninterrupted run would have seen.
    """

    batch_size: int
    num_classes: int
    train_size: int
    steps_per_epoch: int
    train_data: Callable[[int, int], Any]
    val_data: Any
    resumed: dict | None


def plan_run(config: RunConfig, folder: RunFolder, images: ImageSet, split: Split, batch_size: int) -> RunPlan:
    """The run's datasets (batches of `batch_size`, the global batch), steps per epoch and last checkpoint."""
    if batch_size > len(split.train):  # not an error (the default 32 on a small folder): one partial batch per epoch
        log.warning("train.batch_size=%d is larger than the %d training images: each epoch is one batch of %d",
                    batch_size, len(split.train), len(split.train))
    num_classes = len(images.class_names)

    def train_data(start: int, end: int):
        return _labelled(make_dataset(images.images, images.labels, indices=split.train, batch_size=batch_size,
                                      training=True, augment=config.augment, seed=config.train.seed,
                                      first_epoch=start, epochs=end - start), num_classes)

    val_data = _labelled(make_dataset(images.images, images.labels, indices=split.val, batch_size=batch_size,
                                      training=False), num_classes)
    return RunPlan(batch_size=batch_size, num_classes=num_classes, train_size=len(split.train),
                   steps_per_epoch=math.ceil(len(split.train) / batch_size), train_data=train_data,
                   val_data=val_data, resumed=_read_last_checkpoint(folder))


def make_run_model(config: RunConfig, folder: RunFolder, strategy, plan: RunPlan, *, chief: bool = True):
    """The compiled model under `strategy`: fresh, or the last checkpoint (weights, optimizer, schedule) on resume.

    The chief records the parameter count (and a transfer run's base weights).
    """
    with strategy.scope():
        if plan.resumed is not None:
            model = keras.models.load_model(folder.last_checkpoint, safe_mode=True)
            _restore_seed_states(model, plan.resumed.get("seed_states"))
        else:
            decoupled = config.train.optimizer == "adamw"
            model = make_model(config.model, (config.data.image_size, config.data.image_size, 3), plan.num_classes,
                               weight_decay=0.0 if decoupled else config.train.weight_decay, seed=config.train.seed)
            compile_model(model, config, plan.steps_per_epoch)
    if chief:
        folder.workspace.update_run(folder.run_id, params=describe_model(model)["params"])
        if config.model.name == "transfer" and plan.resumed is None:
            _, record = zoo.resolve_weights(config.model.base, config.model.weights, config.data.image_size)
            store.write_json_atomic(folder.weights_record_file, {"base": config.model.base, **record})
    return model


@dataclass(frozen=True)
class RunCallbacks:
    """A run's callbacks in order, and the ones the training loop reads back."""

    callbacks: list
    progress: StoreProgress
    checkpoint: BestCheckpoint
    initial_epoch: int
    stopped_early: bool  # a resumed run whose early stopping had already ended training


def make_callbacks(config: RunConfig, folder: RunFolder, plan: RunPlan, *, report: Callable[[float, str], None],
                   should_stop: Callable[[], bool]) -> RunCallbacks:
    """Builds the run's callbacks; on resume it first lines the store and them up with the last checkpoint."""
    progress = StoreProgress(folder, config.train.epochs, plan.steps_per_epoch, plan.train_size, report=report,
                             should_stop=should_stop)
    checkpoint = BestCheckpoint(str(folder.model_file))
    initial_epoch = _continue_from(plan.resumed, folder, progress, checkpoint) if plan.resumed is not None else 0
    last = LastCheckpoint(folder, progress, best=checkpoint)
    # The checkpoints come first: once the store shows an epoch, its checkpoints are on disk.
    callbacks = [checkpoint, last, progress, EpochSummaries(folder.tensorboard_dir)]
    stopped_early = False
    if config.train.early_stopping:
        early_stopping = make_early_stopping(config, folder, initial_epoch, checkpoint.best_weights)
        callbacks.append(early_stopping)
        stopped_early = early_stopping.stopped_before_resume()
    return RunCallbacks(callbacks, progress, checkpoint, initial_epoch, stopped_early)


def make_early_stopping(config: RunConfig, folder: RunFolder, initial_epoch: int, best_weights
                        ) -> ResumableEarlyStopping:
    """`train.early_stopping` on val_loss; on resume it starts where the run was (best so far, epochs since)."""
    done = [m.val_loss for m in folder.workspace.epochs(folder.run_id) if m.epoch <= initial_epoch]
    return ResumableEarlyStopping(monitor="val_loss", patience=config.train.early_stopping, restore_best_weights=True,
                                  history=done if initial_epoch else [], best_weights=best_weights)


def test_and_record(model, folder: RunFolder, images: ImageSet, split: Split, *, batch_size: int,
                    report: Callable[[float, str], None], train_seconds: float, epochs_done: int) -> float:
    """Tests `model` on the run's test split, saves its predictions and records the result; returns the accuracy."""
    report(1.0, "testing")
    test_data = _labelled(make_dataset(images.images, images.labels, indices=split.test, batch_size=batch_size,
                                       training=False), len(images.class_names))
    probabilities = model.predict(test_data, verbose=0).astype(np.float32)
    test_labels = images.labels[split.test]
    test_accuracy = float(np.mean(probabilities.argmax(axis=1) == test_labels))
    save_predictions(folder.predictions_file, probabilities, test_labels,
                     [images.ids[i] for i in split.test], split.test, images.class_names)
    folder.workspace.update_run(folder.run_id, test_accuracy=test_accuracy, train_seconds=train_seconds)
    report(1.0, f"done: test accuracy {test_accuracy:.4f}")
    log.info("test accuracy %.4f after %d epochs in %.1f s", test_accuracy, epochs_done, train_seconds)
    return test_accuracy


def class_weights(mode: str, labels: np.ndarray, num_classes: int) -> dict[int, float] | None:
    """`train.class_weight`: None for `none`; for `balanced`, total / (classes x count) per class (as scikit-learn).

    A class without training images gets weight 1 (it never occurs in a batch).
    """
    if mode != "balanced":
        return None
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    present = max(int(np.count_nonzero(counts)), 1)
    return {c: float(counts.sum() / (present * n)) if n else 1.0 for c, n in enumerate(counts.tolist())}


def _read_last_checkpoint(folder: RunFolder) -> dict | None:
    """The saved `last.json` if this run has a last checkpoint to resume from, else None."""
    info_path, model_path = folder.last_checkpoint_info, folder.last_checkpoint
    if not (info_path.exists() and model_path.exists()):
        return None
    info = json.loads(info_path.read_text())
    return info if int(info.get("epoch", 0)) > 0 else None


def _continue_from(resumed: dict, folder: RunFolder, progress: StoreProgress, checkpoint: BestCheckpoint) -> int:
    """Lines the store and the callbacks up with the last checkpoint; returns the epochs it holds."""
    workspace, run_id = folder.workspace, folder.run_id
    epoch = int(resumed["epoch"])
    history = [m for m in workspace.epochs(run_id) if m.epoch <= epoch]
    if len(history) < epoch and resumed.get("metrics"):  # killed between the checkpoint and the store write
        workspace.add_epoch(run_id, store.EpochMetrics(**resumed["metrics"]))
    workspace.truncate_epochs(run_id, epoch)
    losses = [m.val_loss for m in workspace.epochs(run_id) if m.val_loss is not None and math.isfinite(m.val_loss)]
    checkpoint.best_loss = min(losses, default=math.inf)
    best_path = folder.model_file
    if best_path.exists():
        checkpoint.best_weights = keras.models.load_model(best_path, compile=False, safe_mode=True).get_weights()
    accuracies = [m.val_accuracy for m in workspace.epochs(run_id) if m.val_accuracy is not None]
    progress.best_val_accuracy = max(accuracies, default=None)
    progress.epochs_done = epoch
    log.info("resuming from the last checkpoint after epoch %d", epoch)
    return epoch


def _restore_seed_states(model, states: list | None) -> None:
    """Puts the seed generator states saved with the last checkpoint back, so dropout masks continue as they were."""
    variables = _seed_states(model)
    if states is None or len(states) != len(variables):
        if variables:
            log.warning("the last checkpoint has no seed states for the %d random layers: their draws restart",
                        len(variables))
        return
    for variable, state in zip(variables, states):
        variable.assign(np.asarray(state, dtype=keras.backend.standardize_dtype(variable.dtype)))


def _labelled(dataset, num_classes: int):
    """One-hot labels, so label smoothing works with the categorical loss."""
    def one_hot(images, labels):  # a named function: autograph warns about converting lambdas
        return images, tf.one_hot(tf.cast(labels, tf.int32), num_classes)

    return dataset.map(one_hot, num_parallel_calls=tf.data.AUTOTUNE)


def compile_model(model, config: RunConfig, steps_per_epoch: int, *, rate_factor: float = 1.0,
                  epochs: int | None = None) -> None:
    """Compiles with the run's optimizer and schedule, its label-smoothed loss and accuracy."""
    model.compile(optimizer=_make_optimizer(config, steps_per_epoch, rate_factor=rate_factor, epochs=epochs),
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.train.label_smoothing),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])


def _make_optimizer(config: RunConfig, steps_per_epoch: int, *, rate_factor: float = 1.0,
                    epochs: int | None = None) -> keras.optimizers.Optimizer:
    t = config.train
    rate = float(t.learning_rate) * rate_factor  # an int (10 in a JSON config) is not accepted by Keras
    if t.schedule == "cosine":
        rate = keras.optimizers.schedules.CosineDecay(rate, decay_steps=(epochs or t.epochs) * steps_per_epoch)
    if t.optimizer == "adamw":
        return keras.optimizers.AdamW(rate, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return keras.optimizers.SGD(rate, momentum=0.9)
    return keras.optimizers.Adam(rate)


def data_report(images: ImageSet, split: Split) -> dict:
    """Class names, per-split class counts and skipped files, as stored with the run."""
    def counts(indices):
        return np.bincount(images.labels[indices], minlength=len(images.class_names)).tolist()

    return {"source": images.source, "layout": images.layout, "notes": list(images.notes),
            "class_names": list(images.class_names), "fingerprint": images.fingerprint,
            "counts": {"train": counts(split.train), "val": counts(split.val), "test": counts(split.test)},
            "skipped": [{"path": s.path, "reason": s.reason} for s in images.skipped]}


def _versions_json() -> str:
    import json

    import sklearn

    return json.dumps({"python": platform.python_version(), "tensorflow": tf.__version__,
                       "keras": keras.__version__, "numpy": np.__version__, "scikit-learn": sklearn.__version__})
