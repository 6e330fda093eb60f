"""The `compress` job: make a child run's model by distilling or pruning its parent's, then test and report it.

The child's folder ends like a trained run's: `model.keras`, `data_report.json`, `predictions.npz`
(the same test split as its parent: same data and seed), its epochs in the store, and
`compress_report.json` comparing it with its parent (and, for distillation, with the same
student trained alone and with the teacher).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import Callable

import keras
import numpy as np

from engine import store
from engine.compress.distill import Distiller
from engine.compress.measure import ModelRunner, model_facts, tflite_sizes
from engine.compress.prune import MagnitudePruning, measure_sparsity, prunable_kernels, schedule_for, strip
from engine.compress.request import (COMPRESS_JOB, CompressError, CompressRequest, check_student_size,
                                     check_teacher, student_config)
from engine.data import make_dataset
from engine.devices import configure_devices
from engine.evaluation import save_predictions
from engine.export.runners import predict_batched
from engine.jobs.context import JobCancelled, JobContext
from engine.jobs.kinds import JobKind
from engine.models import load_run_model, make_model
from engine.runfolder import RunFolder
from engine.training import TrainingFailed, _labelled, _make_optimizer, _versions_json, data_report
from engine.training_callbacks import StoreProgress

log = logging.getLogger(__name__)
TRAIN_SHARE = 0.55  # of the progress bar: the compressed model's own training; the rest is the comparison


@dataclass
class _Data:
    images: object
    split: object
    num_classes: int
    train_ds: object
    val_ds: object
    test_x: np.ndarray
    test_labels: np.ndarray
    steps: int


class _Phase(keras.callbacks.Callback):
    """Progress over one part of the bar and a cooperative stop, for a fit that writes nothing to the store."""

    def __init__(self, report, should_stop, low: float, high: float, epochs: int, what: str):
        super().__init__()
        self.report, self.should_stop, self.low, self.high, self.epochs, self.what = (report, should_stop, low, high,
                                                                                      epochs, what)
        self.cancelled = False

    def on_train_batch_end(self, batch, logs=None):
        if self.should_stop():
            self.cancelled = self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        self.report(self.low + (self.high - self.low) * (epoch + 1) / self.epochs,
                    f"{self.what}: epoch {epoch + 1}/{self.epochs}")


def run_compress_job(context: JobContext, request: CompressRequest) -> dict:
    """The body of a `compress` job: compresses the child run's parent into the child's folder."""
    return compress_run(context.folder, request, report=context.report, should_stop=context.should_stop)


def compress_run(folder: RunFolder, request: CompressRequest, *, report: Callable[[float, str], None] | None = None,
                 should_stop: Callable[[], bool] | None = None) -> dict:
    """Distills or prunes the parent of the run `folder` belongs to; writes the child's model, predictions and report.

    Args:
        folder: the child run's folder (its row names the parent; its config the data and training).
        request: the validated request.
        report: `report(progress 0..1, message)`. Default: nothing.
        should_stop: returns True once the job should stop (checked every batch). Default: never.

    Returns:
        The compress report (also in `compress_report.json`). Raises `JobCancelled` when stopped,
        `CompressError` when the parent or teacher does not fit the request.
    """
    report = report or (lambda progress, message: None)
    should_stop = should_stop or (lambda: False)
    workspace, run_id = folder.workspace, folder.run_id
    child = workspace.get_run(run_id)
    if child.parent_id is None:
        raise CompressError(f"run {run_id} has no parent run to compress")
    parent = workspace.get_run(child.parent_id)
    config = folder.config()
    keras.utils.set_random_seed(config.train.seed)
    devices = configure_devices("off")
    workspace.update_run(run_id, device=devices.label, versions_json=_versions_json())
    report(0.0, "loading data")
    data = _load_data(folder, config)
    if should_stop():
        raise JobCancelled()
    started = time.monotonic()
    if request.method == "distill":
        model, details = _distill(folder, parent, request, config, data, report, should_stop)
    else:
        model, details = _prune(folder, parent, request, config, data, report, should_stop)
    train_seconds = time.monotonic() - started

    report(0.97, "testing")
    model.save(folder.model_file)
    probabilities = predict_batched(ModelRunner(model).predict, data.test_x)
    test_accuracy = float(np.mean(probabilities.argmax(1) == data.test_labels))
    images = data.images
    save_predictions(folder.predictions_file, probabilities, data.test_labels,
                     [images.ids[i] for i in data.split.test], data.split.test, images.class_names)
    workspace.update_run(run_id, test_accuracy=test_accuracy, train_seconds=train_seconds,
                         params=int(model.count_params()))
    parent_accuracy = parent.test_accuracy
    result = {"method": request.method, "run_id": run_id, "parent_id": parent.id, "created_at": time.time(),
              "request": request.to_dict(), "label": request.describe(), "test_accuracy": test_accuracy,
              "parent_test_accuracy": parent_accuracy, "params": int(model.count_params()),
              "accuracy_drop_points": None if parent_accuracy is None else 100 * (parent_accuracy - test_accuracy),
              "train_seconds": train_seconds, **details}
    store.write_json_atomic(folder.compress_report_file, result)
    report(1.0, f"done: test accuracy {test_accuracy:.4f}")
    log.info("compressed %s into %s (%s): test accuracy %.4f", parent.id, run_id, request.describe(), test_accuracy)
    return result


def _load_data(folder: RunFolder, config) -> _Data:
    images = folder.dataset()
    split = folder.split(images)
    store.write_json_atomic(folder.data_report_file, data_report(images, split))
    num_classes = len(images.class_names)
    folder.workspace.update_run(folder.run_id, fingerprint=images.fingerprint, num_classes=num_classes)
    batch = min(config.train.batch_size, len(split.train))
    epochs = config.train.epochs
    train_ds = _labelled(make_dataset(images.images, images.labels, indices=split.train, batch_size=batch,
                                      training=True, augment=config.augment, seed=config.train.seed, epochs=epochs),
                         num_classes)
    val_ds = _labelled(make_dataset(images.images, images.labels, indices=split.val, batch_size=batch,
                                    training=False), num_classes)
    test = np.asarray(split.test)
    return _Data(images, split, num_classes, train_ds, val_ds, np.asarray(images.images[test], dtype=np.float32),
                 np.asarray(images.labels)[test], math.ceil(len(split.train) / batch))


def _fit(model, folder: RunFolder, config, data: _Data, report, should_stop, extra: list | None = None):
    """Trains `model` (compiled) for the child's epochs, recording them in the store like training does."""
    epochs = config.train.epochs
    progress = StoreProgress(folder, epochs, data.steps, len(data.split.train),
                             report=lambda p, m: report(0.02 + (TRAIN_SHARE - 0.02) * p, m), should_stop=should_stop)
    history = model.fit(data.train_ds, validation_data=data.val_ds, epochs=epochs, steps_per_epoch=data.steps,
                        callbacks=[*(extra or []), progress], verbose=2)
    if progress.failure:
        raise TrainingFailed(progress.failure)
    if progress.cancelled:
        raise JobCancelled()
    return history.history.get("val_accuracy", [])


def _compile(model, optimizer, config) -> None:
    model.compile(optimizer=optimizer,
                  loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.train.label_smoothing),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])


def _distill(folder, parent, request: CompressRequest, config, data: _Data, report, should_stop):
    workspace = folder.workspace
    teacher_run = workspace.get_run(request.teacher) if request.teacher else parent
    check_teacher(workspace, parent, teacher_run)
    teacher = load_run_model(workspace, teacher_run.id)
    shape = (config.data.image_size, config.data.image_size, 3)
    weight_decay = 0.0 if config.train.optimizer == "adamw" else config.train.weight_decay
    student = make_model(student_config(request.student), shape, data.num_classes, weight_decay=weight_decay,
                         seed=config.train.seed)
    check_student_size(int(student.count_params()), teacher_run)
    workspace.update_run(folder.run_id, params=int(student.count_params()))
    distiller = Distiller(student, teacher)
    distiller.compile(optimizer=_make_optimizer(config, data.steps),
                      metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
                      alpha=request.alpha, temperature=request.temperature)
    report(0.02, f"distilling into {request.student}")
    distilled_curve = _fit(distiller, folder, config, data, report, should_stop)

    # The same student, data, epochs and seed without a teacher: what distillation is worth.
    report(TRAIN_SHARE, f"training {request.student} alone for comparison")
    alone = make_model(student_config(request.student), shape, data.num_classes, weight_decay=weight_decay,
                       seed=config.train.seed)
    _compile(alone, _make_optimizer(config, data.steps), config)
    phase = _Phase(report, should_stop, TRAIN_SHARE, 0.9, config.train.epochs, "the student alone, for comparison")
    history = alone.fit(data.train_ds, validation_data=data.val_ds, epochs=config.train.epochs,
                        steps_per_epoch=data.steps, callbacks=[phase], verbose=0)
    if phase.cancelled:
        raise JobCancelled()
    report(0.92, "measuring the student, the student alone and the teacher")
    models = {name: model_facts(m, data.test_x, data.test_labels)  # each saved afresh, without optimizer state
              for name, m in (("student", student), ("alone", alone), ("teacher", teacher))}
    curves = {"student": distilled_curve, "alone": history.history.get("val_accuracy", [])}
    gain = 100 * (models["student"]["accuracy"] - models["alone"]["accuracy"])
    return student, {"teacher_id": teacher_run.id, "student": request.student, "models": models,
                     "val_accuracy_curves": curves, "gain_points": gain,
                     "params_ratio": models["student"]["params"] / max(1, models["teacher"]["params"])}


def _prune(folder, parent, request: CompressRequest, config, data: _Data, report, should_stop):
    workspace = folder.workspace
    model = load_run_model(workspace, parent.id)
    kernels = prunable_kernels(model)
    if not kernels:
        raise CompressError(f"run {parent.id}'s model has no trainable Conv2D, DepthwiseConv2D or Dense kernel "
                            "to prune")
    rate = float(request.learning_rate) or float(config.train.learning_rate) / 10
    _compile(model, keras.optimizers.Adam(rate), config)
    schedule = schedule_for(request.sparsity, data.steps * config.train.epochs)
    pruning = MagnitudePruning(kernels, schedule)
    report(0.02, f"pruning to {request.sparsity:.0%} while fine-tuning")
    curve = _fit(model, folder, config, data, report, should_stop, extra=[pruning])
    pruning.finish()  # exactly the target, and the zeros in place, whatever the last step did
    model = strip(model)
    per_layer, overall = measure_sparsity(model)
    report(0.6, "measuring sizes: .keras and .tflite, gzip-compressed, against the parent's")
    parent_model = load_run_model(workspace, parent.id)
    # Both saved afresh without optimizer state (the parent's own file holds its Adam moments too).
    pruned, original = (model_facts(m, data.test_x, data.test_labels) for m in (model, parent_model))
    report(0.8, "converting both to .tflite for their sizes")
    sizes = {"keras": {"parent": original["gzip_bytes"], "child": pruned["gzip_bytes"]},
             "tflite": {"parent": tflite_sizes(parent_model)["gzip_bytes"], "child": tflite_sizes(model)["gzip_bytes"]}}
    for entry in sizes.values():
        entry["ratio"] = entry["child"] / max(1, entry["parent"])
    layers = {name: {"sparsity": value, "weights": int(np.prod(kernels[name].shape))}
              for name, value in per_layer.items()}
    return model, {"sparsity": overall, "target_sparsity": float(request.sparsity), "layers": layers,
                   "gzip_sizes": sizes, "schedule": {"name": request.schedule, "end_step": schedule.end_step,
                                                     "frequency": schedule.frequency, "power": schedule.power},
                   "models": {"pruned": pruned, "parent": original}, "val_accuracy_curves": {"pruned": curve}}


KIND = JobKind(COMPRESS_JOB, run=run_compress_job, request_type=CompressRequest, doing="being compressed")
