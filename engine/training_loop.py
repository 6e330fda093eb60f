"""One worker's part of a run trained across workers: a custom loop under `MultiWorkerMirroredStrategy`.

Keras 3's `model.fit` fails under `MultiWorkerMirroredStrategy` (keras-team/keras#20585), so each
worker steps the model itself with `strategy.run`, as TensorFlow's custom-training guide does, and
drives the run's own Keras callbacks (`engine.training.make_callbacks`) by hand: on the chief
(worker 0) the store progress and metrics, the best and last checkpoints and the TensorBoard
scalars, exactly as a single-process run writes them; on every worker the early stopping, which
sees the same all-reduced validation loss everywhere and so stops every worker after the same epoch.

Every worker builds the same global batches (`train.batch_size`, the single-process pipeline with
its shuffle and augmentation) and keeps its own slice of each, so one step of N workers trains on
the batch one process would. A cancel is all-reduced with each step: every worker stops after the
same step, whichever of them read the store's cancel flag first (a collective that some workers
leave would hang the others). `TF_CONFIG` names the workers (Ray Train sets it; so can a test).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable

import keras
import numpy as np
import tensorflow as tf

from engine.config import RunConfig
from engine.runfolder import RunFolder
from engine.training import (TrainingFailed, class_weights, load_run_data, make_callbacks, make_early_stopping,
                             make_run_model, plan_run, prepare_process)

log = logging.getLogger(__name__)
SUM = tf.distribute.ReduceOp.SUM


def train_worker(config: RunConfig, folder: RunFolder, *, workers: int, should_stop: Callable[[], bool],
                 report: Callable[[float, str], None]) -> dict:
    """Trains the run as one of `workers` worker processes; returns what it did.

    Args:
        config: the run's configuration (`train.batch_size` is the global batch of all workers).
        folder: the run's folder, on a filesystem every worker sees.
        workers: how many workers train together (as `TF_CONFIG` lists them).
        should_stop: True once the run should stop (each worker reads the store's cancel flag).
        report: `report(progress, message)`; only the chief calls it.

    Returns:
        `{"chief", "epochs_done", "cancelled", "weights_digest"}`; raises `TrainingFailed` on every worker
        when the loss diverges.
    """
    devices = prepare_process(config, folder, workers=workers)
    strategy, chief = devices.strategy, devices.chief
    images, split = load_run_data(folder, report, record=False)  # the train job recorded the data report
    plan = plan_run(config, folder, images, split, config.train.batch_size)
    model = make_run_model(config, folder, strategy, plan, chief=chief)
    stop = {"requested": False}
    parts = None
    if chief:
        parts = make_callbacks(config, folder, plan, report=report, should_stop=lambda: stop["requested"])
    _barrier(strategy)  # on resume, the chief has lined the store up with the last checkpoint
    if chief:
        callbacks, initial_epoch, stopped_early = parts.callbacks, parts.initial_epoch, parts.stopped_early
    else:
        callbacks, initial_epoch, stopped_early = _worker_callbacks(config, folder, plan)
    if not model.optimizer.built:  # its slots, as fit builds them, before the first (traced) step
        with strategy.scope():
            model.optimizer.build(model.trainable_variables)
    weights = class_weights(config.train.class_weight, images.labels[split.train], plan.num_classes)
    steps = _Steps(model, strategy, config, weights, plan.num_classes)
    callback_list = keras.callbacks.CallbackList(callbacks, model=model)
    epochs = config.train.epochs
    epochs_done = initial_epoch
    failure = None
    started = time.monotonic()
    if stopped_early:
        log.info("early stopping had already ended training after epoch %d", initial_epoch)
    else:
        if chief:
            report(initial_epoch / epochs, f"epoch {initial_epoch + 1}/{epochs}")
        train_batches = iter(_distribute(strategy, lambda: plan.train_data(initial_epoch, epochs)))
        val_steps = math.ceil(len(split.val) / plan.batch_size)
        model.stop_training = False
        callback_list.on_train_begin()
        for epoch in range(initial_epoch, epochs):
            callback_list.on_epoch_begin(epoch)
            totals = np.zeros(3)  # loss x images, correct (class-weighted), weight
            for step in range(plan.steps_per_epoch):
                loss, correct, weight, count, stopping = steps.train(train_batches, float(should_stop()))
                totals += (loss * count, correct, weight)
                stop["requested"] = stop["requested"] or stopping > 0
                callback_list.on_train_batch_end(step)
                if stop["requested"]:
                    break
            if stop["requested"]:
                log.info("cancelled in epoch %d: every worker stops after the same step", epoch + 1)
                break
            logs = {"loss": totals[0] / max(plan.train_size, 1), "accuracy": totals[1] / max(totals[2], 1e-12)}
            callback_list.on_test_begin()
            logs.update(steps.evaluate(_distribute(strategy, lambda: plan.val_data), val_steps))
            callback_list.on_test_end()
            callback_list.on_epoch_end(epoch, logs)
            if not math.isfinite(logs["loss"]):
                failure = parts.progress.failure if chief else f"the training loss became {logs['loss']}"
                break
            epochs_done = epoch + 1
            if model.stop_training:  # early stopping, seen alike on every worker
                break
        callback_list.on_train_end()
    if failure:
        raise TrainingFailed(failure)
    if chief:
        folder.workspace.update_run(folder.run_id, train_seconds=time.monotonic() - started)
    return {"chief": chief, "epochs_done": epochs_done, "cancelled": stop["requested"],
            "weights_digest": weights_digest(model)}


def weights_digest(model) -> list[float]:
    """Per-variable sums of the model's weights: equal on every worker after each step."""
    return [float(np.sum(np.asarray(w, dtype=np.float64))) for w in model.get_weights()]


def _worker_callbacks(config: RunConfig, folder: RunFolder, plan) -> tuple[list, int, bool]:
    """What a worker other than the chief runs: early stopping only (it writes nothing)."""
    initial_epoch = int(plan.resumed["epoch"]) if plan.resumed is not None else 0
    if not config.train.early_stopping:
        return [], initial_epoch, False
    best_weights = None
    if initial_epoch and folder.model_file.exists():
        best_weights = keras.models.load_model(folder.model_file, compile=False, safe_mode=True).get_weights()
    early_stopping = make_early_stopping(config, folder, initial_epoch, best_weights)
    return [early_stopping], initial_epoch, early_stopping.stopped_before_resume()


def _barrier(strategy) -> None:
    """Returns once every worker has reached it (an all-reduce of nothing much)."""
    @tf.autograph.experimental.do_not_convert
    def one():
        return tf.constant(1.0)

    @tf.function(autograph=False)
    def reduce_ones():
        return strategy.reduce(SUM, strategy.run(one), axis=None)

    reduce_ones()


def _distribute(strategy, make_dataset: Callable[[], tf.data.Dataset]):
    """Every worker builds the same global batches and keeps its replicas' slices of each, in replica order.

    The batches are the single-process ones (same order, same augmentation draws), so N workers
    step on exactly what one process would; the last, partial batch is split as evenly as it goes.
    Each element is `(images, labels, mask)`: a replica whose slice would be empty (a last batch
    smaller than the replicas; an empty batch breaks the convolutions) gets one image with mask 0.
    """
    def dataset_fn(context: tf.distribute.InputContext) -> tf.data.Dataset:
        local = context.num_replicas_in_sync // context.num_input_pipelines
        first, parts = context.input_pipeline_id * local, context.num_replicas_in_sync

        def part(images, labels, index):
            size = tf.shape(labels)[0]
            low, high = size * (first + index) // parts, size * (first + index + 1) // parts
            empty = tf.equal(low, high)
            low = tf.where(empty, tf.minimum(low, size - 1), low)
            high = tf.where(empty, low + 1, high)
            mask = tf.fill([high - low], tf.where(empty, 0.0, 1.0))
            return images[low:high], labels[low:high], mask

        dataset = make_dataset()
        if local == 1:
            return dataset.map(lambda images, labels: part(images, labels, tf.constant(0)))
        return dataset.flat_map(lambda images, labels: tf.data.Dataset.range(local).map(
            lambda index: part(images, labels, tf.cast(index, tf.int32))))

    return strategy.distribute_datasets_from_function(dataset_fn)


class _Steps:
    """The traced training and validation steps (one `strategy.run` each) and what they all-reduce."""

    def __init__(self, model, strategy, config: RunConfig, class_weight: dict | None, num_classes: int):
        self.model, self.strategy = model, strategy
        # Per image, as fit's loss: label smoothing included, averaged over the global batch below.
        self.loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.train.label_smoothing,
                                                         reduction=None)
        self.class_weight = None if class_weight is None else tf.constant(
            [class_weight[c] for c in range(num_classes)], tf.float32)
        self._train = tf.function(self._train_step)
        self._evaluate = tf.function(self._evaluate_step)

    def train(self, iterator, stop: float) -> tuple[float, float, float, float, float]:
        """One step on the next global batch; returns (mean loss, weighted correct, weight, images, stop votes)."""
        return tuple(float(v) for v in self._train(iterator, tf.constant(stop, tf.float32)).numpy())

    def evaluate(self, dataset, steps: int) -> dict[str, float]:
        """`val_loss` and `val_accuracy` over `steps` global batches of `dataset`."""
        totals = np.zeros(4)
        iterator = iter(dataset)
        for _ in range(steps):
            totals += self._evaluate(iterator).numpy()
        count = max(totals[2], 1.0)
        return {"val_loss": totals[0] / count + totals[3] / max(steps, 1), "val_accuracy": totals[1] / count}

    def _regularization(self):
        losses = [tf.cast(loss, tf.float32) for loss in self.model.losses]
        return tf.add_n(losses) if losses else tf.constant(0.0)

    def _train_step(self, iterator, stop):
        def step(images, labels, mask):
            context = tf.distribute.get_replica_context()
            count = tf.reduce_sum(mask)
            # One all-reduce carries the global batch size (the last batch is partial) and the cancel votes.
            total = context.all_reduce(SUM, tf.stack([count, stop]))
            true = tf.argmax(labels, axis=1)
            weight = mask if self.class_weight is None else tf.gather(self.class_weight, true) * mask
            with tf.GradientTape() as tape:
                probabilities = self.model(images, training=True)
                per_image = tf.cast(self.loss(labels, probabilities), tf.float32) * weight
                loss = tf.nn.compute_average_loss(per_image, global_batch_size=tf.cast(total[0], tf.int64))
                loss += tf.nn.scale_regularization_loss(self._regularization())
                scaled = self.model.optimizer.scale_loss(loss)  # mixed precision: a LossScaleOptimizer scales
            variables = self.model.trainable_variables
            gradients = tape.gradient(scaled, variables)
            self.model.optimizer.apply_gradients(zip(gradients, variables))  # all-reduced (summed) across replicas
            hits = tf.cast(tf.equal(tf.argmax(probabilities, axis=1), true), tf.float32)
            replicas = tf.cast(context.num_replicas_in_sync, tf.float32)
            # Summed over replicas below: the global mean loss, correct and weight, the global batch, the votes.
            return tf.stack([loss, tf.reduce_sum(hits * weight), tf.reduce_sum(weight), total[0] / replicas,
                             total[1] / replicas])

        return self.strategy.reduce(SUM, self.strategy.run(step, args=next(iterator)), axis=None)

    def _evaluate_step(self, iterator):
        def step(images, labels, mask):
            probabilities = self.model(images, training=False)
            per_image = tf.cast(self.loss(labels, probabilities), tf.float32) * mask
            hits = tf.cast(tf.equal(tf.argmax(probabilities, axis=1), tf.argmax(labels, axis=1)), tf.float32) * mask
            replicas = tf.cast(tf.distribute.get_replica_context().num_replicas_in_sync, tf.float32)
            return tf.stack([tf.reduce_sum(per_image), tf.reduce_sum(hits), tf.reduce_sum(mask),
                             self._regularization() / replicas])

        return self.strategy.reduce(SUM, self.strategy.run(step, args=next(iterator)), axis=None)
