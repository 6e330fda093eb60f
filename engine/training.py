"""`train(config, folder, report=, should_stop=)`: one synchronous training run (inside a job process: `KIND`)."""

from __future__ import annotations

import json
import logging
import math
import platform
import time
import warnings
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from engine import store, zoo
from engine.config import RunConfig
from engine.data import ImageSet, Split, make_dataset
from engine.devices import configure_devices
from engine.evaluation import save_predictions
from engine.fine_tuning import fit_phases
from engine.jobs.context import JobCancelled, JobContext
from engine.jobs.kinds import JobKind
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
    """Trains, checkpoints and tests one run, writing everything into its run folder and the store.

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
    workspace, run_id = folder.workspace, folder.run_id
    # Our datasets are shuffled in tf.data; Keras warns about its own shuffle flag every epoch.
    warnings.filterwarnings("ignore", message=r".*`shuffle=True` was passed.*")
    keras.utils.set_random_seed(config.train.seed)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()
    devices = configure_devices(config.train.mixed_precision)
    workspace.update_run(run_id, device=devices.label, versions_json=_versions_json())

    report(0.0, "loading data")
    images = folder.dataset()  # a resumed run: checked against what the interrupted attempt recorded
    split = folder.split(images)
    store.write_json_atomic(folder.data_report_file, data_report(images, split))
    num_classes = len(images.class_names)
    log.info("data %s: %d images in %d classes (%d skipped); train/val/test %d/%d/%d", images.source, len(images),
             num_classes, len(images.skipped), len(split.train), len(split.val), len(split.test))
    workspace.update_run(run_id, fingerprint=images.fingerprint, num_classes=num_classes)
    if should_stop():
        raise JobCancelled()

    batch_size = config.train.batch_size * devices.replicas
    if batch_size > len(split.train):  # not an error (the default 32 on a small folder): one partial batch per epoch
        log.warning("train.batch_size=%d is larger than the %d training images: each epoch is one batch of %d",
                    batch_size, len(split.train), len(split.train))
    resumed = _read_last_checkpoint(folder)
    # The training batches of epochs start+1..end; each epoch's shuffle and augmentation depend on
    # (seed, epoch) alone, so a resumed run sees the batches the uninterrupted run would have seen.
    def train_data(start: int, end: int):
        return _labelled(make_dataset(images.images, images.labels, indices=split.train, batch_size=batch_size,
                                      training=True, augment=config.augment, seed=config.train.seed,
                                      first_epoch=start, epochs=end - start), num_classes)

    val_ds, test_ds = (_labelled(make_dataset(images.images, images.labels, indices=idx, batch_size=batch_size,
                                              training=False), num_classes) for idx in (split.val, split.test))
    steps_per_epoch = math.ceil(len(split.train) / batch_size)

    with devices.strategy.scope():
        if resumed is not None:  # Resume: weights, optimizer state and schedule position as saved
            model = keras.models.load_model(folder.last_checkpoint, safe_mode=True)
            _restore_seed_states(model, resumed.get("seed_states"))
        else:
            decoupled = config.train.optimizer == "adamw"
            model = make_model(config.model, (config.data.image_size, config.data.image_size, 3), num_classes,
                               weight_decay=0.0 if decoupled else config.train.weight_decay, seed=config.train.seed)
            _compile(model, config, steps_per_epoch)
    workspace.update_run(run_id, params=describe_model(model)["params"])
    if config.model.name == "transfer" and resumed is None:
        _, record = zoo.resolve_weights(config.model.base, config.model.weights, config.data.image_size)
        store.write_json_atomic(folder.weights_record_file, {"base": config.model.base, **record})

    progress = StoreProgress(folder, config.train.epochs, steps_per_epoch, len(split.train), report=report,
                             should_stop=should_stop)
    checkpoint = BestCheckpoint(str(folder.model_file))
    initial_epoch = _continue_from(resumed, folder, progress, checkpoint) if resumed is not None else 0
    last = LastCheckpoint(folder, progress, best=checkpoint)
    # The checkpoints come first: once the store shows an epoch, its checkpoints are on disk.
    callbacks = [checkpoint, last, progress, EpochSummaries(folder.tensorboard_dir)]
    stopped_early = False
    if config.train.early_stopping:
        # On resume it starts where the run was: best val_loss so far and epochs since it improved.
        done = [m.val_loss for m in workspace.epochs(run_id)] if initial_epoch else []
        early_stopping = ResumableEarlyStopping(monitor="val_loss", patience=config.train.early_stopping,
                                                restore_best_weights=True, history=done,
                                                best_weights=checkpoint.best_weights)
        callbacks.append(early_stopping)
        stopped_early = early_stopping.stopped_before_resume()
    started = time.monotonic()
    if stopped_early:  # killed after early stopping ended training: nothing left to train, only to test
        log.info("early stopping had already ended training after epoch %d", initial_epoch)
    else:
        report(initial_epoch / config.train.epochs, f"epoch {initial_epoch + 1}/{config.train.epochs}")
        def recompile(net, rate_factor: float, epochs: int) -> None:
            with devices.strategy.scope():
                _compile(net, config, steps_per_epoch, rate_factor=rate_factor, epochs=epochs)

        fit_phases(model, config, initial_epoch=initial_epoch, train_data=train_data, recompile=recompile,
                   stopped=lambda: bool(progress.cancelled or progress.failure), validation_data=val_ds,
                   steps_per_epoch=steps_per_epoch, callbacks=callbacks, verbose=2,
                   class_weight=class_weights(config.train.class_weight, images.labels[split.train], num_classes))
    train_seconds = time.monotonic() - started
    if progress.failure:
        raise TrainingFailed(progress.failure)
    if progress.cancelled:
        raise JobCancelled()

    if checkpoint.best_weights is not None:
        model.set_weights(checkpoint.best_weights)
    report(1.0, "testing")
    probabilities = model.predict(test_ds, verbose=0).astype(np.float32)
    test_labels = images.labels[split.test]
    test_accuracy = float(np.mean(probabilities.argmax(axis=1) == test_labels))
    save_predictions(folder.predictions_file, probabilities, test_labels,
                     [images.ids[i] for i in split.test], split.test, images.class_names)
    best_val = progress.best_val_accuracy
    workspace.update_run(run_id, test_accuracy=test_accuracy, train_seconds=train_seconds)
    report(1.0, f"done: test accuracy {test_accuracy:.4f}")
    log.info("test accuracy %.4f after %d epochs in %.1f s", test_accuracy, progress.epochs_done, train_seconds)
    return TrainResult(test_accuracy, best_val, progress.epochs_done, train_seconds)


def run_train_job(context: JobContext, request: None) -> TrainResult:
    """The body of a `train` job: trains the run from its `config.json` (resuming from `last.keras` if there)."""
    return train(context.folder.config(), context.folder, report=context.report, should_stop=context.should_stop)


KIND = JobKind(store.TRAIN_JOB, run=run_train_job, doing="training")


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


def _compile(model, config: RunConfig, steps_per_epoch: int, *, rate_factor: float = 1.0,
             epochs: int | None = None) -> None:
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
